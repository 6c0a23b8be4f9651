"""Command-line flags made from a settings dataclass, and the entry points' exits.

A setting is defined once, as a field of a frozen settings dataclass
(``toycar.Settings``, ``dcase_run.Settings``, ``detector.ScoreSettings``,
``ring.Settings``) made with ``setting(default, help=..., choices=...)``.
``define_flags(Settings)`` makes one absl flag per such field (same name,
default, help and choices; a field without a default is a required flag), and
``settings_from_flags(Settings)`` builds the dataclass from the parsed flags,
whose ``__post_init__`` validates every value once. Fields made without
``setting`` (library-only knobs such as ``progress``) get no flag.

  @dataclasses.dataclass(frozen=True)
  class Settings:
    workdir: str = cli.setting(help="Output folder.")
    epochs: int = cli.setting(10, help="Number of epochs.")

  cli.define_flags(Settings)          # at import time of the entry point
  settings = cli.settings_from_flags(Settings)   # in main()

``TrainingSettings`` holds the settings both training entry points share, the
presets, and the one mapping to ``train.TrainConfig``; ``ScoringSettings`` adds
the scoring settings of experiments.toycar and experiments.dcase (score
normalization, clip-score window, the choice by pseudo-anomalies), and
``CPU_PRESET`` is their common "cpu" preset. ``make_workdir`` checks
``--workdir`` before any work. ``exit_on_errors`` (and ``run_training``) gives
every entry point the same endings: one ``Error:`` line and status 1 for bad
input, one ``Interrupted:`` line and status 130 for Ctrl-C or SIGTERM
(``sigterm_as_interrupt``).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import errno
import logging
import math
import os
import re
import signal
import _thread
import sys
import tempfile
import threading
import types
import typing
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence, TypeVar

from absl import app
from absl import flags
import jax

from bu_jax import audio
from bu_jax import checkpoint
from bu_jax import crossfit
from bu_jax import data as data_lib
from bu_jax import heldout
from bu_jax import losses as losses_lib
from bu_jax import models as models_lib
from bu_jax import score_norm
from bu_jax import train as train_lib

T = TypeVar("T")


def setting(default: Any = dataclasses.MISSING, *, help: str,  # pylint: disable=redefined-builtin
            choices: Optional[Sequence[str]] = None, flag: Optional[str] = None,
            from_flag: Optional[Callable[[Any], Any]] = None,
            to_flag: Optional[Callable[[Any], Any]] = None,
            minimum: Optional[float] = None, positive: bool = False) -> Any:
  """A dataclass field that is also a command-line flag.

  Args:
    default: the default of the field and of the flag (none: a required flag).
    help: the flag's help text.
    choices: the allowed values (an enum flag); ``check_choices`` enforces them.
    flag: the flag's name when it differs from the field's.
    from_flag: converts the flag's value to the field's (e.g. "all" -> a tuple).
    to_flag: converts the field's default to the flag's.
    minimum: the smallest allowed value; ``positive``: the value must be > 0.
      A float setting must also be finite (``check``); ``None`` is not checked.

  Returns:
    A ``dataclasses.field`` carrying the above in its ``metadata``.
  """
  metadata = {"help": help, "choices": None if choices is None else tuple(choices),
              "flag": flag, "from_flag": from_flag, "to_flag": to_flag,
              "minimum": minimum, "positive": positive}
  return dataclasses.field(default=default, metadata=metadata)


def flag_fields(cls) -> list[dataclasses.Field]:
  """The fields of ``cls`` that are flags (made with ``setting``)."""
  return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def flag_name(field: dataclasses.Field) -> str:
  return field.metadata["flag"] or field.name


def flag_names(cls) -> list[str]:
  """The flag names of ``cls``'s settings."""
  return [flag_name(f) for f in flag_fields(cls)]


def _value_type(annotation) -> Any:
  """``Optional[X]`` -> X; ``Sequence[str]`` -> list."""
  args = [a for a in typing.get_args(annotation) if a is not type(None)]
  if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
    return _value_type(args[0])
  if typing.get_origin(annotation) in (list, tuple, collections.abc.Sequence):
    return list
  return annotation


def define_flags(cls, flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines an absl flag for every ``setting`` field of the dataclass ``cls``."""
  hints = typing.get_type_hints(cls)
  for field in flag_fields(cls):
    meta = field.metadata
    required = field.default is dataclasses.MISSING
    default = None if required else field.default
    if meta["to_flag"] is not None:
      default = meta["to_flag"](default)
    kind = _value_type(hints[field.name])
    common = dict(help=meta["help"], flag_values=flag_values, required=required)
    name = flag_name(field)
    if meta["choices"] is not None:
      flags.DEFINE_enum(name, default, list(meta["choices"]), **common)
    elif kind is bool:
      flags.DEFINE_bool(name, default, **common)
    elif kind is int:
      flags.DEFINE_integer(name, default, **common)
    elif kind is float:
      flags.DEFINE_float(name, default, **common)
    elif kind is str:
      flags.DEFINE_string(name, default, **common)
    elif kind is list:
      flags.DEFINE_list(name, None if default is None else list(default), **common)
    else:
      raise TypeError(f"{cls.__name__}.{field.name}: no flag type for {hints[field.name]}")


def settings_from_flags(cls: type[T], flag_values: flags.FlagValues = flags.FLAGS,
                        **values) -> T:
  """``cls`` from the parsed flags (plus ``values`` of fields that are not flags).

  Raises:
    ValueError: from ``cls.__post_init__``: a value out of range, naming the flag.
  """
  for field in flag_fields(cls):
    value = flag_values[flag_name(field)].value
    convert = field.metadata["from_flag"]
    values[field.name] = convert(value) if convert is not None and value is not None else value
  return cls(**values)


def check(settings, resolve: Optional[Callable[[str], Any]] = None) -> None:
  """Checks every flag field of ``settings`` against its choices and range.

  ``resolve(name)`` gives the value to check (e.g. the preset's for ``None``);
  ``None`` values are not checked.

  Raises:
    ValueError: naming the flag, the rule and the value.
  """
  hints = typing.get_type_hints(type(settings))
  for field in flag_fields(type(settings)):
    meta, flag = field.metadata, f"--{flag_name(field)}"
    value = resolve(field.name) if resolve else getattr(settings, field.name)
    if value is None or meta["from_flag"] is not None:
      continue
    if meta["choices"] is not None and value not in meta["choices"]:
      raise ValueError(f"{flag} must be one of {list(meta['choices'])}, got {value!r}")
    rules = []
    if _value_type(hints[field.name]) is float:
      rules.append(("finite", math.isfinite(value)))
    if meta["minimum"] is not None:
      rules.append((f">= {meta['minimum']}", value >= meta["minimum"]))
    if meta["positive"]:
      rules.append(("> 0", value > 0))
    if not all(ok for _, ok in rules):
      raise ValueError(f"{flag} must be {' and '.join(r for r, _ in rules)}, got {value}")


# ------------------------------------------------------------------ training settings

_TRAIN = train_lib.TrainConfig  # the library's defaults (the paper's)

# The "cpu" preset of experiments.toycar and experiments.dcase: real recordings on
# a 2-core CPU (< 8 min per loss): the AE on inputs standardized with training
# statistics, 9,600 steps (at 4,800 the held-out clips' error still fell by 3.6-7.2 %
# on every real draw; README, "Real recordings"), the paper's band-width, and raw
# or knn_z scores, the clip-score window and the knn bank (the training or the
# cross-fitted one: experiments.toycar's since the twenty-fifth session, when BU's
# bank came to take RE's fold models; experiments.dcase's since the twenty-seventh)
# chosen by the pseudo-anomaly AUC.
CPU_PRESET = dict(model="fcn40-small", epochs=96, steps_per_epoch=100, decay_start_epoch=48,
                  learning_rate=1e-3, steps_per_call=10, standardize_input=True,
                  score_normalization=score_norm.AUTO_KIND, score_window=heldout.CHOSEN_WINDOW,
                  normalization_bank=score_norm.AUTO_BANK)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingSettings:
  """The settings that the training entry points share (``toycar.Settings``,
  ``dcase_run.Settings`` add their own), presets and the ``TrainConfig``.

  A subclass has a ``preset`` field and a class attribute ``PRESETS`` (name
  -> {field: value}). ``None`` fields take the preset's value, else
  ``TrainConfig``'s default (the paper's): no default is stated twice.
  """

  PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

  workdir: str = setting(help="Output folder (checkpoints, results).")
  losses: Sequence[str] = setting(
      ("bu",), flag="loss", choices=(*losses_lib.LOSSES, "all"),
      help="Loss to train; 'all' trains RE, SNP and BU from the same initial parameters.",
      from_flag=lambda v: losses_lib.LOSSES if v == "all" else (v,),
      to_flag=lambda v: "all" if tuple(v) == losses_lib.LOSSES else v[0])
  model: Optional[str] = setting(
      None, choices=sorted(models_lib.PRESETS),
      help="Autoencoder (default: the preset's; paper: fcn64-large).")
  standardize_input: Optional[bool] = setting(
      None, help="Standardize the AE's input with training statistics (stored with the "
      "model). Default: the preset's.")
  something_else_dir: Optional[str] = setting(
      None, help="Something-else sounds (WAV, FLAC, Ogg, Opus, MP3, AIFF, W64, RF64; < 5 s) for the "
      "simulated anomalies of SNP and BU, eq. (8).")
  seed: int = setting(_TRAIN.seed, help="Training seed (initialization and mini-batches).")
  epochs: Optional[int] = setting(None, minimum=1,
                                  help="Override the preset's number of epochs.")
  steps_per_epoch: Optional[int] = setting(None, minimum=1,
                                           help="Override mini-batches per epoch.")
  decay_start_epoch: Optional[int] = setting(None,
                                             help="Override the epoch where decay starts.")
  learning_rate: Optional[float] = setting(None, positive=True,
                                           help="Override the initial learning rate.")
  segments_per_mixture: Optional[int] = setting(
      None, minimum=1, help=f"3-s segments per mixture ({_TRAIN.segments_per_mixture}).")
  mixtures_per_step: Optional[int] = setting(
      None, minimum=1, help="Mixtures per global mini-batch (paper: 1); a multiple of the "
      "device count. Default: one per device.")
  num_devices: Optional[int] = setting(None, minimum=1,
                                       help="Use the first N devices (default all).")
  steps_per_call: Optional[int] = setting(None, minimum=1,
                                          help="Steps scanned per device call.")
  sigma: Optional[float] = setting(None, positive=True,
                                   help="KDE band-width of eq. (15) (default 1/(2D)).")
  lam: Optional[float] = setting(None, positive=True,
                                 help="Clipping parameter lambda of eq. (10) (default 2M).")
  eps: float = setting(_TRAIN.eps, minimum=0, help="eps of the BU weight 1/(K + eps), eq. (16).")
  checkpoint_every: int = setting(500, minimum=1, help="Checkpoint interval in steps.")
  threshold_quantile: float = 0.9
  reduce: str = setting("max", choices=("max", "mean"), help="Clip score: max (eq. 11) or mean.")
  progress: bool = True

  def __post_init__(self):
    """Checks every setting once; a ``ValueError`` names the flag (the entry
    point turns it into a usage error)."""
    bad = [l for l in self.losses if l not in losses_lib.LOSSES]
    if bad or not self.losses:
      raise ValueError(f"--loss must be one of {losses_lib.LOSSES} or 'all', got {bad}")
    check(self, self.resolved)
    epochs, decay = self.resolved("epochs"), self.resolved("decay_start_epoch")
    if not 0 <= decay <= epochs:
      given = ("" if self.decay_start_epoch is not None else
               f" (the {self.preset} preset's value; set --decay_start_epoch too, "
               f"e.g. --decay_start_epoch={epochs // 2})")
      raise ValueError(f"--decay_start_epoch={decay} must lie in [0, --epochs={epochs}]"
                       + given)
    if not 0 < self.threshold_quantile < 1:
      raise ValueError(f"--threshold_quantile must lie in (0, 1), got "
                       f"{self.threshold_quantile}")
    if self.num_devices is not None and self.num_devices > jax.device_count():
      raise ValueError(f"--num_devices={self.num_devices}: this machine has "
                       f"{jax.device_count()} device(s)")
    if self.mixtures_per_step is not None:
      devices = self.num_devices or jax.device_count()
      if self.mixtures_per_step % devices:
        lower = max(devices, self.mixtures_per_step - self.mixtures_per_step % devices)
        raise ValueError(
            f"--mixtures_per_step={self.mixtures_per_step} is not divisible by the number "
            f"of devices ({devices}): each device must get the same number of mixtures. "
            f"Use a multiple of {devices} (e.g. --mixtures_per_step={lower}) or set "
            "--num_devices.")
    for loss in self.losses:  # TrainConfig's own rules (float32 range, step count, seed, ...)
      try:
        TrainingSettings.train_config(self, loss)
      except ValueError as e:
        message = str(e)
        named = re.match(r"\w*", message)[0] in {flag_name(f) for f in flag_fields(type(self))}
        raise ValueError(("--" if named else "") + message) from None

  def resolved(self, name: str) -> Any:
    """The setting ``name``: its value, else the preset's, else TrainConfig's default."""
    value = getattr(self, name)
    if value is None:
      value = self.PRESETS.get(self.preset, {}).get(name)
    if value is None and name in _TRAIN.__dataclass_fields__:
      value = _TRAIN.__dataclass_fields__[name].default
    return value

  def model_preset(self) -> models_lib.ModelPreset:
    """The AE preset (``--model``), with input standardization when configured."""
    preset = models_lib.preset(self.resolved("model"))
    if self.resolved("standardize_input"):
      preset = dataclasses.replace(preset, name=preset.name + models_lib.STANDARDIZED_SUFFIX,
                                   standardize_input=True)
    return preset

  def train_config(self, loss: str, **fixed) -> train_lib.TrainConfig:
    """The one mapping to ``TrainConfig``: each of its fields that the settings
    have takes ``resolved``'s value, the model is ``model_preset``; ``fixed``
    gives other values."""
    fixed = {"loss": loss, "mixtures_per_step": self.mixtures_per_step or jax.device_count(),
             "model": self.model_preset(), **fixed}
    shared = [name for name in _TRAIN.__dataclass_fields__
              if name not in fixed and hasattr(self, name)]
    return train_lib.TrainConfig(**{name: self.resolved(name) for name in shared}, **fixed)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScoringSettings(TrainingSettings):
  """``TrainingSettings`` plus the scoring settings both experiments share
  (evaluation only; ``None``: the preset's, else the default): the score
  normalization, its k and the clip-score window, and the rule that a choice by
  pseudo-anomalies (``bu_jax.heldout``) is asked for by "auto" or window 0."""

  reference_components: int = setting(
      16, minimum=0, help="Components of the PCA reference detector (bu_jax.reference) "
      "reported next to the AEs by --loss=all, scored like them (0: none).")
  score_normalization: Optional[str] = setting(
      None, choices=("none", score_norm.AUTO_KIND) + score_norm.KINDS,
      help="knn: divide each frame score by the mean score of its --normalization_neighbors "
      "nearest training frames in the model's code space; knn_z: the local z-score of the "
      "log score among them, on knn's scale (label-free; fitted on the training clips that "
      "are not held out, stored with the model, applied by experiments.score); auto: none or "
      "knn_z, whichever gives the higher pseudo-anomaly AUC (held-out clips with "
      "something-else sounds mixed in). Evaluation only. Default: the preset's, else none.")
  normalization_neighbors: Optional[int] = setting(
      None, minimum=0, help="k of --score_normalization (at least 2 for knn_z; 0 for knn_z "
      "and auto: the k of 5, 10, ..., 160 under which the held-out normal clips' frames are "
      "most likely). Evaluation only. Default: 0 for knn_z and auto, 10 for knn.")
  normalization_bank: Optional[str] = setting(
      None, choices=score_norm.BANKS, help="Whose frames the knn / knn_z bank holds: "
      "training (the clips the model trained on) or heldout (the held-out normal clips, "
      "which it never trained on, so their scores carry the generalization gap that test "
      "clips will show; each held-out clip is normalized by the other clips' bank for phi "
      "and the pseudo-anomaly AUC) or crossfit (the training clips' frames scored by two "
      "fold models, each trained with the same settings on the other half of the clips; "
      "two extra trainings per model, each a quarter as long (--crossfit_schedule; BU's are "
      "RE's, --crossfit_bu_folds); needs "
      "held-out clips) or auto (the training or the cross-fitted bank, whichever gives the higher "
      "pseudo-anomaly AUC, chosen with the normalization and window; trains the fold models "
      "too). Evaluation only (crossfit and auto train the fold models once). Default: the "
      "preset's, else training.")
  crossfit_schedule: str = setting(
      crossfit.DEFAULT_SCHEDULE, choices=crossfit.SCHEDULES, help="How long the fold models "
      "of --normalization_bank=crossfit or auto train: short (the default), half as many "
      "passes over their half of the clips as the main model over all of them (a quarter of "
      "its steps per epoch, the same epochs: both fold models together train half of one main "
      "model's steps); scaled, as many passes (half its steps per epoch; an earlier default, "
      "kept to re-evaluate fold models trained with it); full, as many steps as the main "
      "model (the first default, likewise).")
  crossfit_bu_folds: str = setting(
      crossfit.DEFAULT_BU_FOLDS, choices=crossfit.BU_FOLDS, help="Whose fold models give "
      "BU's cross-fitted bank (--normalization_bank=crossfit or auto): re (the default) RE's, "
      "trained without eq. (16)'s weights in <workdir>/re/crossfit and, with --loss=all, once "
      "for RE's bank and BU's; bu, BU's own in <workdir>/bu/crossfit (an earlier default, "
      "kept to re-evaluate fold models trained with it).")
  score_window: Optional[int] = setting(
      None, minimum=0, help="Clip score: the maximum over the mean scores of this many "
      "consecutive frames (1: eq. 11, the maximum frame score; 0: chosen among 1 frame and "
      "0.25, 0.5, 1, 2 s by the pseudo-anomaly AUC, with the normalization under auto). "
      "Evaluation only; applied by experiments.score. Default: the preset's, else 1.")

  rare_clips: Optional[str] = setting(
      None, help="CSV (file-name column and 0/1 'rare' column, e.g. realaudio-dev's "
      "metadata.csv) or list of rare-normal test clips, matched by the end of their path "
      "(test_anr-10dB/x.wav) or by file name: adds rare-normal metrics. Used for "
      "evaluation only.")

  def __post_init__(self):
    super().__post_init__()
    dim = self.model_preset().features.dim
    if self.reference_components > dim:
      raise ValueError(f"--reference_components={self.reference_components} exceeds the "
                       f"{dim} feature dimensions of --model={self.resolved('model')}")
    score_norm.check_setting(*self.normalization())
    if self.bank() != score_norm.TRAINING_BANK and self.normalization()[0] == "none":
      raise ValueError(f"--normalization_bank={self.bank()} applies to "
                       "--score_normalization=knn, knn_z or auto, got none"
                       + self._from_preset("score_normalization"))
    if self.reduce == "mean" and self.clip_window() != 1:
      raise ValueError(f"--reduce=mean averages the whole clip; it takes --score_window=1, "
                       f"got {self.clip_window()}" + self._from_preset("score_window"))

  def _from_preset(self, *names: str) -> str:
    """" (the preset's unless given)" if one of ``names`` takes the preset's value."""
    preset = self.PRESETS.get(self.preset, {})
    taken = any(getattr(self, n) is None and preset.get(n) is not None for n in names)
    return " (the preset's unless given)" if taken else ""

  def normalization(self) -> tuple[str, int]:
    """``(--score_normalization, --normalization_neighbors)``: the kind of the flag,
    else the preset's, else "none"; k as ``score_norm.resolve_neighbors`` says."""
    kind = self.resolved("score_normalization") or "none"
    return kind, score_norm.resolve_neighbors(kind, self.normalization_neighbors)

  def bank(self) -> str:
    """``--normalization_bank``, else the preset's, else "training". A preset's
    bank applies to normalized scores only: with ``--score_normalization=none``
    it is "training" (the flag itself with none is an error)."""
    if self.normalization_bank is None and self.normalization()[0] == "none":
      return score_norm.TRAINING_BANK
    return self.resolved("normalization_bank") or score_norm.TRAINING_BANK

  def clip_window(self) -> int:
    """``--score_window``, else the preset's, else 1; 0 = chosen (``heldout.CHOSEN_WINDOW``)."""
    window = self.resolved("score_window")
    return 1 if window is None else int(window)

  def chooses_by_pseudo_anomalies(self) -> bool:
    """Whether evaluation chooses the normalization or window by pseudo-anomalies."""
    return (self.normalization()[0] == score_norm.AUTO_KIND
            or self.clip_window() == heldout.CHOSEN_WINDOW
            or self.bank() == score_norm.AUTO_BANK)

  def choosing_flags(self) -> tuple[str, int]:
    """The flags (with their values) that ask for a choice by pseudo-anomalies, as
    text, and how many they are."""
    flags = []
    if self.normalization()[0] == score_norm.AUTO_KIND:
      flags.append(f"--score_normalization={score_norm.AUTO_KIND}")
    if self.clip_window() == heldout.CHOSEN_WINDOW:
      flags.append(f"--score_window={heldout.CHOSEN_WINDOW}")
    if self.bank() == score_norm.AUTO_BANK:
      flags.append(f"--normalization_bank={score_norm.AUTO_BANK}")
    return (" and ".join(flags) + self._from_preset("score_normalization", "score_window",
                                                    "normalization_bank"),
            len(flags))


# ------------------------------------------------------------------ run directories


class WorkdirError(data_lib.DataError):
  """--workdir cannot be used (a file, or not creatable / writable)."""


def make_workdir(workdir: str) -> None:
  """Creates ``workdir`` if missing and checks that files can be written there,
  before any work; a ``WorkdirError`` names the flag and the reason."""
  if "://" in workdir:  # os.makedirs would silently create a local "gs:" folder
    raise WorkdirError(
        f"--workdir={workdir}: a URL; results, metrics.jsonl and plots are written with "
        "local file I/O, so give a local or mounted path (e.g. a bucket mounted with "
        "gcsfuse, or NFS)")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"--workdir={workdir}: is a file, not a directory; give a directory "
                       "(it is created if missing)")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f"--workdir={workdir}: cannot be created ({e.strerror or e})") from e
  try:
    with tempfile.TemporaryFile(dir=workdir, prefix=".write-test-"):
      pass
  except OSError as e:
    raise WorkdirError(
        f"--workdir={workdir}: cannot be written ({e.strerror or e}); a run, even a finished "
        "one that is only re-evaluated, writes its results there: copy the folder to a "
        "writable place and run on the copy") from e


# ------------------------------------------------------------------ endings


def _raise_interrupt(signum, frame):
  del frame
  raise KeyboardInterrupt(signal.Signals(signum).name)


def sigterm_as_interrupt() -> None:
  """SIGTERM raises ``KeyboardInterrupt("SIGTERM")``, so it stops a job like Ctrl-C.

  Outside training (loading, evaluation, scoring); during training
  ``signals.GracefulStop`` (in ``runner.train_or_resume``) handles both
  signals and saves first.
  """
  signal.signal(signal.SIGTERM, _raise_interrupt)


def exit_on_errors(job: Callable[[], T], *, errors: tuple[type[BaseException], ...],
                   interrupted: tuple[type[BaseException], ...] = (),
                   on_interrupt: str = "") -> T:
  """Runs ``job``; bad input and interruptions end in one line and an exit status.

  Args:
    job: the work of the entry point.
    errors: exception types of bad input (their message names the path or the
      flag): ``Error: <message>``, status 1.
    interrupted: exception types of a training stopped after saving:
      ``Interrupted: <message>``, status 130.
    on_interrupt: what a ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM with
      ``sigterm_as_interrupt``) leaves behind, for ``Interrupted: stopped by
      SIGINT; <on_interrupt>``, status 130.

  Returns:
    What ``job`` returns.
  """
  try:
    return job()
  except interrupted as e:
    _forget_caught_interrupt()  # a first Ctrl-C may have passed through an exec and been caught
    print(f"Interrupted: {e}", file=sys.stderr)
    sys.exit(130)
  except KeyboardInterrupt as e:
    _forget_caught_interrupt()
    by = e.args[0] if e.args else "SIGINT"
    print(f"Interrupted: stopped by {by}" + (f"; {on_interrupt}" if on_interrupt else ""),
          file=sys.stderr)
    sys.exit(130)
  except errors as e:
    print(f"Error: {_describe(e)}", file=sys.stderr)
    sys.exit(1)


def _forget_caught_interrupt() -> None:
  """Clears CPython's record of a ``KeyboardInterrupt`` that left an ``exec`` or
  ``eval`` of a string (``dataclasses``, ``namedtuple`` and Flax build classes
  that way): run as ``python -m``, the interpreter would otherwise end a process
  that caught the interrupt and exits with status 130 by SIGINT instead (a
  parent sees -2 rather than 130, bpo-1054041's exit). Every ``exec`` of a
  string resets that record when it starts."""
  exec("pass", {})  # pylint: disable=exec-used


def _describe(error: BaseException) -> str:
  """The message of an error; for an ``OSError`` the path, the reason and, for a
  full disk, that the work done so far is kept."""
  if not isinstance(error, OSError) or not error.filename:
    return str(error)
  message = f"{error.filename}: {error.strerror or error}"
  if error.errno == errno.ENOSPC:
    message += ("; the files written so far are kept: free some space and run the same "
                "command again")
  return message


# Bad input of a training run (each names the path or the flag) and what a stopped run keeps.
TRAINING_ERRORS = (data_lib.DataError, audio.AudioError, checkpoint.CheckpointError,
                   train_lib.NonFiniteLossError, OSError)
RESUME_HINT = "the checkpoints saved so far are kept: run the same command again to resume"


def run_training(run: Callable[[Any], T], settings_class: type, *,
                 interrupted: type[BaseException]) -> T:
  """The ``main`` of a training entry point (``experiments.toycar``, ``.dcase``).

  Builds ``settings_class`` from the flags (a bad value: one ``Usage error:``
  line naming the flag, status 1) and calls ``run(settings)``; bad input (data,
  audio, checkpoints, a non-finite loss, a file that cannot be written) ends in
  one ``Error:`` line and status 1; ``interrupted`` (training stopped after a
  checkpoint), Ctrl-C and SIGTERM in one ``Interrupted:`` line and status 130.
  """
  sigterm_as_interrupt()  # outside training; during it signals.GracefulStop saves first
  settings = usage_error(lambda: settings_from_flags(settings_class))
  return exit_on_errors(
      lambda: run(settings), interrupted=(interrupted,),
      errors=TRAINING_ERRORS, on_interrupt=RESUME_HINT)


def _entry_point_unraisable_hook(unraisable) -> None:
  """``sys.unraisablehook`` of the entry points.

  - A ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM made one by
    ``sigterm_as_interrupt``) that arrived while Python ran a garbage-collector
    callback (JAX registers one), a ``__del__`` or a weakref callback cannot
    propagate from there: Python would print "Exception ignored in ..." with a
    traceback and go on as if the key had never been pressed. The hook delivers
    the signal again 50 ms later (``_thread.interrupt_main`` from a timer
    thread), so its handler runs in the main thread, out of the callback, and
    the run stops as usual, in one ``Interrupted:`` line; should that land in
    such a callback again, the same happens again.
  - After a failed checkpoint read, TensorStore threads still call back into
    Orbax's event loop, closed by then, and each call would print an "Event
    loop is closed" traceback after the run's ``Error:`` line; and Orbax's
    reads of the other arrays, abandoned once one failed, are collected with
    their own "Encountered error while reading array index" (130-1,450 lines
    of TensorStore specs after a damaged data file). Both dropped: the
    ``Error:`` line has said what failed.
  - Anything else goes to the default hook.
  """
  error = unraisable.exc_value
  if (isinstance(error, KeyboardInterrupt)
      and threading.current_thread() is threading.main_thread()):  # where handlers run
    by = error.args[0] if error.args and error.args[0] in ("SIGINT", "SIGTERM") else "SIGINT"
    # From another thread, a moment later: delivered here, in the hook, it would be
    # ignored again.
    threading.Timer(0.05, _thread.interrupt_main, args=(signal.Signals[by],)).start()
    return
  if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
    return
  if type(error) is Exception and str(error).startswith(  # pylint: disable=unidiomatic-typecheck
      "Encountered error while reading array index"):
    return
  sys.__unraisablehook__(unraisable)


class _DropInterruptTracebacks(logging.Filter):
  """Drops library log records about a ``KeyboardInterrupt``: Ctrl-C pressed
  again while a checkpoint is written interrupts Orbax's wait for it, which
  logs "Save Finalize thread (save_finalize) failed" with a traceback, before
  the entry point's own ``Interrupted:`` line says what happened."""

  def filter(self, record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return not isinstance(error, KeyboardInterrupt)


DROP_INTERRUPT_TRACEBACKS = _DropInterruptTracebacks()


def run_app(main: Callable[[list[str]], Any]) -> None:
  """``absl.app.run(main)`` for an entry point, without the noise of
  ``_entry_point_unraisable_hook`` and ``_DropInterruptTracebacks``.

  Ctrl-C raises ``KeyboardInterrupt`` and SIGTERM stops the process while the
  main runs (the main makes SIGTERM an interrupt, ``sigterm_as_interrupt``,
  and training catches both to save first). Once the main has ended, with its
  last line printed and its files written, both are ignored: a signal during
  the interpreter's teardown would otherwise print a traceback after that line
  or change the exit status.
  """
  sys.unraisablehook = _entry_point_unraisable_hook
  logging.getLogger("absl").addFilter(DROP_INTERRUPT_TRACEBACKS)  # Orbax logs through absl
  signal.signal(signal.SIGINT, signal.default_int_handler)
  signal.signal(signal.SIGTERM, signal.SIG_DFL)
  try:
    app.run(main, flags_parser=_parse_flags)
  finally:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with its errors (an unknown flag, a value not among the
  choices, a required flag missing) as one ``Usage error:`` line, status 1, like
  the settings' own checks, instead of absl's "FATAL Flags parsing error"; and
  help asked for (``--help``, ``--helpshort``, ``--helpfull``, ``--helpxml``)
  printed with status 0, as command-line tools do, not absl's 1."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"Usage error: {e} (see --helpshort)", file=sys.stderr)
    sys.exit(1)
  except SystemExit as e:  # absl's help flags print the help, then exit with status 1
    sys.exit(0 if e.code == 1 else e.code)


def usage_error(build: Callable[[], T]) -> T:
  """``build()`` (the settings); a ``ValueError`` ends in one ``Usage error:`` line, status 1."""
  try:
    return build()
  except ValueError as e:  # a flag out of range or an invalid combination
    print(f"Usage error: {e} (see --helpshort)", file=sys.stderr)
    sys.exit(1)


# Flags defined by define_flags belong to the entry point that calls it
# (so that --helpshort lists them), not to this module.
flags.disclaim_key_flags()
