"""The trained-model artifact: what a checkpoint of an autoencoder holds, written and read here.

A model directory (``<workdir>/<loss>`` of ``bu_jax.toycar``,
``<workdir>/<loss>/models/<machine_type>`` of ``bu_jax.dcase_run``) holds the
checkpoints of ``bu_jax.checkpoint``: ``checkpoints/<step>/state`` is the whole
train state (``train.TrainState`` or ``train.MemoryTrainState``: step,
parameters, optimizer state, BU's KDE memory), and
``checkpoints/<step>/metadata/metadata.json`` is a ``ModelMetadata`` record:

=======================  ====================================================
JSON key                 meaning
=======================  ====================================================
``loss``                 "re", "snp" or "bu"
``model``                the ``models.ModelPreset`` name (AE size)
``features``             the ``features.FeatureConfig`` fields
``train_config``         ``train.TrainConfig`` as JSON (a custom preset's AE
                         size and ``standardize_input`` are in its ``model``)
``data``                 toycar: the training data settings (optional)
``tag``                  dcase: ``<machine_type>[/section_XX]`` (optional)
``threshold``            φ of eq. (4), after calibration (optional), with
``reduce``               the clip score it applies to (eq. 11: "max"/"mean"),
``threshold_quantile``   the gamma quantile it was fitted at, and the
``heldout_clip_scores``  held-out normal clip scores and their
``heldout_paths``        paths it was fitted to
``threshold_fit``        with a threshold: how, ``"gamma_loc0"`` (the gamma's
                         location fixed at 0, ``evaluate.fit_threshold``);
                         absent in checkpoints written before it, whose φ
                         came from a three-parameter gamma fit (optional:
                         φ applies the same either way)
``score_normalization``  with a threshold on normalized scores (optional):
                         ``{"kind": "knn", "neighbors": k, "file": name,
                         "fingerprint": hash}``, the
                         ``score_norm.LocalNormalizer`` bank ``file``
                         (relative to the model directory) that divides
                         every frame score before φ applies, and a hash of
                         its contents (optional)
``score_window``         with a threshold: the frames per mean of the clip
                         score (``evaluate.clip_score``); absent: 1 (eq. 11)
``version``              ``VERSION``; absent in checkpoints written before it
                         (read as version 1: the same keys, no
                         ``score_normalization``)
=======================  ====================================================

Version 2 added ``score_normalization``: a reader of version 1 would ignore it
and compare raw scores with a φ of normalized ones, so it refuses the newer
format instead. Version 3 added ``score_window`` for the same reason; earlier
versions are read as one frame (eq. 11).

Writing: ``open_for_training`` (the ``Checkpointer`` of a training run, whose
``restore_or_init`` restores the train state to resume) and
``store_calibration`` (φ, once evaluated). Reading: ``read_metadata`` (the
typed record, without the model) and ``load_for_scoring`` (parameters, model
and features, read only, on one device). A missing or malformed entry raises
``ArtifactError`` (a ``checkpoint.CheckpointError``) naming the file.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import re
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from bu_jax import checkpoint
from bu_jax import fileio
from bu_jax import features as features_lib
from bu_jax import losses as losses_lib
from bu_jax import models as models_lib

VERSION = 3
REDUCTIONS = ("max", "mean")
NORMALIZATIONS = ("knn", "knn_z")  # score_norm.KINDS
_METADATA_FILE = os.path.join("metadata", "metadata.json")  # below checkpoints/<step>/
_CALIBRATION_KEYS = ("threshold", "reduce", "threshold_quantile", "heldout_clip_scores",
                     "heldout_paths", "score_normalization", "score_window", "threshold_fit")
GAMMA_LOC0 = "gamma_loc0"  # ``threshold_fit``: evaluate.fit_threshold's default
THRESHOLD_FITS = (GAMMA_LOC0,)
_KNOWN_KEYS = ("loss", "model", "features", "train_config", "data", "tag", "version",
               *_CALIBRATION_KEYS)


class ArtifactError(checkpoint.CheckpointError):
  """No usable trained model: no checkpoint, an ambiguous choice, bad metadata or a mismatch."""


@dataclasses.dataclass(frozen=True)
class ScoreNormalization:
  """How frame scores are normalized before φ applies (``bu_jax.score_norm``).

  Attributes:
    kind: "knn": each frame score is divided by the mean score of its
      ``neighbors`` nearest training frames in code space; "knn_z": the local
      z-score of its log score among them, on knn's scale (``score_norm``).
    neighbors: k.
    file: the ``score_norm.LocalNormalizer`` bank, relative to the model
      directory.
    fingerprint: the bank's ``LocalNormalizer.fingerprint`` when it was
      calibrated (None in checkpoints written before it was stored): a bank
      file replaced by another model's is refused.
  """

  kind: str
  neighbors: int
  file: str
  fingerprint: Optional[str] = None

  def describe(self) -> str:
    """E.g. "knn-normalized scores (10 neighbours)"."""
    return f"{self.kind}-normalized scores ({self.neighbors} neighbours)"


@dataclasses.dataclass(frozen=True)
class Calibration:
  """The decision threshold φ of eq. (4) and how it was set.

  Attributes:
    threshold: φ; a clip is anomalous if its clip score is >= φ.
    reduce: the clip score φ applies to: "max" (eq. 11) or "mean" over the
      interior frame scores.
    quantile: φ is this quantile of a gamma distribution fitted to
      ``heldout_clip_scores`` (``evaluate.fit_threshold``); None if unknown.
    heldout_clip_scores: the normal clip scores φ was fitted to: held-out
      training clips (toycar; dcase with a score normalization) or every
      training clip (dcase on raw scores, as the DCASE baselines).
    heldout_paths: their files.
    normalization: how the frame scores were normalized before φ was fitted
      (and must be before it applies), or None for raw scores.
    window: frames per mean whose maximum is the clip score (1: eq. 11;
      ``evaluate.clip_score``).
    fit: how φ was fitted: ``GAMMA_LOC0``, or None for a checkpoint written
      before the key (a three-parameter gamma fit).
  """

  threshold: float
  reduce: str = "max"
  quantile: Optional[float] = None
  heldout_clip_scores: tuple[float, ...] = ()
  heldout_paths: tuple[str, ...] = ()
  normalization: Optional[ScoreNormalization] = None
  window: int = 1
  fit: Optional[str] = None

  def describe(self) -> str:
    """How φ was set, e.g. "0.9 gamma quantile (location 0) of 10 normal clip scores"."""
    if self.quantile is None:
      return ""
    how = ("location 0" if self.fit == GAMMA_LOC0 else
           "three-parameter fit of an older bu_jax")
    return (f"{self.quantile:g} gamma quantile ({how}) of {len(self.heldout_clip_scores)} "
            "normal clip scores")


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
  """The metadata of a trained model's checkpoints (the table of the module docstring).

  Attributes:
    loss: "re", "snp" or "bu".
    preset: features and AE size (``models.ModelPreset``); the JSON holds its
      name (``model``) and ``features``.
    train_config: ``train.TrainConfig`` as JSON values (``config_json``).
    data: toycar's training data settings, or None.
    tag: dcase's model tag, or None.
    calibration: φ and how it was set, or None before evaluation.
    version: ``VERSION`` of the format.
    extra: other JSON entries, kept as they are.
  """

  loss: str
  preset: models_lib.ModelPreset
  train_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  data: Optional[Mapping[str, Any]] = None
  tag: Optional[str] = None
  calibration: Optional[Calibration] = None
  version: int = VERSION
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def feature_config(self) -> features_lib.FeatureConfig:
    return self.preset.features

  @classmethod
  def for_training(cls, config, *, data: Optional[Mapping[str, Any]] = None,
                   tag: Optional[str] = None) -> "ModelMetadata":
    """The record of a model trained with ``config`` (a ``train.TrainConfig``)."""
    return cls(loss=config.loss, preset=config.model_preset, train_config=config_json(config),
               data=None if data is None else dict(data), tag=tag)

  def to_json(self) -> dict[str, Any]:
    """JSON values under the keys of the module docstring (``from_json`` reads them)."""
    out = dict(self.extra)
    out.update(loss=self.loss, model=self.preset.name,
               features=dataclasses.asdict(self.preset.features),
               train_config=dict(self.train_config))
    if self.data is not None:
      out["data"] = dict(self.data)
    if self.tag is not None:
      out["tag"] = self.tag
    if self.calibration is not None:
      c = self.calibration
      out.update(threshold=float(c.threshold), reduce=c.reduce, threshold_quantile=c.quantile,
                 heldout_clip_scores=[float(s) for s in c.heldout_clip_scores],
                 heldout_paths=list(c.heldout_paths))
      if c.window != 1:  # absent: one frame (eq. 11), as in every earlier version
        out["score_window"] = int(c.window)
      if c.fit is not None:
        out["threshold_fit"] = c.fit
      if c.normalization is not None:
        out["score_normalization"] = {k: v for k, v in dataclasses.asdict(c.normalization).items()
                                      if v is not None}  # no fingerprint: as before it
    out["version"] = self.version
    return out

  @classmethod
  def from_json(cls, entries: Any, *, where: str = "checkpoint metadata") -> "ModelMetadata":
    """Reads ``to_json``'s values (and those of checkpoints written before ``version``).

    Args:
      entries: the parsed JSON object.
      where: names the file in error messages.

    Raises:
      ArtifactError: a missing or malformed entry, naming ``where`` and the key.
    """
    if not isinstance(entries, Mapping):
      raise ArtifactError(f"{where}: not a JSON object but {type(entries).__name__}")
    field = _FieldReader(entries, where)
    version = field.get("version", int, default=1)  # written before the key
    if version < 1:
      raise field.error("version", f"must be >= 1, got {version}")
    if version > VERSION:
      raise field.error("version", f"is {version}: written by a newer bu_jax (this one reads "
                        f"up to {VERSION}); update bu_jax")
    loss = field.get("loss", str)
    if loss not in losses_lib.LOSSES:
      raise field.error("loss", f"must be one of {losses_lib.LOSSES}, got {loss!r}")
    train_config = field.get("train_config", Mapping, default={})
    calibration = None
    if "threshold" in entries:
      calibration = Calibration(
          threshold=field.number("threshold"),
          reduce=field.get("reduce", str, default="max"),
          quantile=field.number("threshold_quantile", default=None),
          heldout_clip_scores=tuple(field.numbers("heldout_clip_scores")),
          heldout_paths=tuple(field.strings("heldout_paths")),
          normalization=_normalization(field),
          window=field.get("score_window", int, default=1),
          fit=field.get("threshold_fit", str, default=None))
      if calibration.fit is not None and calibration.fit not in THRESHOLD_FITS:
        raise field.error("threshold_fit", f"must be one of {THRESHOLD_FITS}, got "
                          f"{calibration.fit!r}")
      if calibration.reduce not in REDUCTIONS:
        raise field.error("reduce", f"must be one of {REDUCTIONS}, got {calibration.reduce!r}")
      if calibration.window < 1 or (calibration.reduce == "mean" and calibration.window != 1):
        raise field.error("score_window", "must be >= 1 frames (1 with reduce 'mean'), got "
                          f"{calibration.window!r}")
    return cls(loss=loss, preset=_preset(field, train_config), train_config=dict(train_config),
               data=field.get("data", Mapping, default=None),
               tag=field.get("tag", str, default=None), calibration=calibration, version=version,
               extra={k: v for k, v in entries.items() if k not in _KNOWN_KEYS})

  def training_differences(self, wanted: "ModelMetadata", *,
                           ignore: Sequence[str] = ()) -> list[tuple[str, Any, Any]]:
    """The training settings in which ``wanted`` differs from this (stored) record.

    Compares the loss and every entry of ``wanted``'s ``train_config`` and
    ``data`` except those named in ``ignore``; entries that this record lacks
    (a checkpoint written before they were stored) are not compared, except
    those whose absence has a meaning (``MISSING_MEANS``).

    Returns:
      ``[(key, stored, wanted)]`` with keys "loss", "train_config.<name>" or
      "data.<name>". A model preset is shown by its name without the
      standardization (e.g. "fcn40-small"); whether its AE standardizes its
      input is the entry "train_config.standardize_input" (the flag of that
      name), so the two differences are told apart.
    """
    differ = [("loss", self.loss, wanted.loss)] if self.loss != wanted.loss else []
    for group in ("train_config", "data"):
      have, want = getattr(self, group) or {}, getattr(wanted, group) or {}
      have = {**MISSING_MEANS.get(group, {}), **have}
      for key, value in want.items():
        if key in ignore or key == "loss" or key not in have or have[key] == value:
          continue
        if key == "model":
          differ.extend(_preset_differences(f"{group}.", have[key], value))
        else:
          differ.append((f"{group}.{key}", have[key], value))
    return differ


# Entries an older record lacks because they had this value then: compared as it.
# (experiments.dcase stored heldout_fraction only when it was above 0.)
MISSING_MEANS = {"data": {"heldout_fraction": 0.0}}


def _preset_differences(prefix: str, have: Any, want: Any) -> list[tuple[str, Any, Any]]:
  """A stored model preset against the wanted one, each a preset name or a
  ``ModelPreset`` as JSON: the name (without ``models.STANDARDIZED_SUFFIX``) when
  anything but the input standardization differs, and the standardization on its own."""
  as_dict = lambda p: dict(p) if isinstance(p, Mapping) else {"name": str(p)}
  have, want = as_dict(have), as_dict(want)
  plain = lambda p: str(p.get("name", "")).removesuffix(models_lib.STANDARDIZED_SUFFIX)
  rest = lambda p: {k: v for k, v in p.items() if k not in ("name", "standardize_input")}
  both_full = len(rest(have)) > 0 and len(rest(want)) > 0  # a bare name: compare names only
  out = []
  if plain(have) != plain(want) or (both_full and rest(have) != rest(want)):
    out.append((f"{prefix}model", plain(have), plain(want)))
  std_have = bool(have.get("standardize_input", False))
  std_want = bool(want.get("standardize_input", False))
  if std_have != std_want:
    out.append((f"{prefix}standardize_input", std_have, std_want))
  return out


def config_json(config) -> dict[str, Any]:
  """A settings dataclass (e.g. ``train.TrainConfig``) as JSON values: tuples ->
  lists, nested dataclasses (the preset) -> dicts, other objects -> strings."""
  return fileio.to_json(config, default=str)


# ------------------------------------------------------------------ reading JSON


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               Mapping: "a JSON object", list: "a JSON list"}


class _FieldReader:
  """Typed access to the entries of a metadata object; errors name the file and key."""

  def __init__(self, entries: Mapping[str, Any], where: str):
    self.entries = entries
    self.where = where

  def error(self, key: str, problem: str) -> ArtifactError:
    return ArtifactError(f"{self.where}: entry {key!r} {problem}")

  def get(self, key: str, kind, *, default: Any = ...):
    if key not in self.entries or (self.entries[key] is None and default is not ...):
      if default is ...:
        raise self.error(key, "is missing (not a checkpoint of a bu_jax model, or damaged)")
      return default
    return _check_type(self.entries[key], kind, lambda p: self.error(key, p))

  def number(self, key: str, *, default: Any = ...) -> Optional[float]:
    value = self.get(key, float, default=default)
    return None if value is None else float(value)

  def numbers(self, key: str) -> list[float]:
    values = self.get(key, list, default=[])
    for value in values:
      _check_type(value, float, lambda p: self.error(key, f"holds a bad value: {p}"))
    return [float(v) for v in values]

  def strings(self, key: str) -> list[str]:
    values = self.get(key, list, default=[])
    for value in values:
      _check_type(value, str, lambda p: self.error(key, f"holds a bad value: {p}"))
    return list(values)


def _check_type(value: Any, kind, error):
  """``value`` if it is of ``kind`` (``float``: any finite number), else raises ``error(...)``."""
  if kind is float:
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))
  elif kind is int:
    ok = isinstance(value, int) and not isinstance(value, bool)
  else:
    ok = isinstance(value, kind)
  if not ok:
    raise error(f"must be {_TYPE_NAMES[kind]}, got {value!r}")
  return value


def _dataclass_from(cls, entries: Mapping[str, Any], error, *, skip=()):
  """``cls(**entries)`` with each field checked against its annotation."""
  kinds = {"int": int, "float": float, "bool": bool, "str": str}
  fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
  unknown = sorted(set(entries) - set(fields) - set(skip))
  if unknown:
    raise error(f"has unknown entries {unknown} (written by another version of bu_jax?)")
  values = {}
  for f in fields.values():
    if f.name not in entries:
      if f.default is dataclasses.MISSING:
        raise error(f"lacks {f.name!r}")
      continue
    kind = kinds.get(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", ""))
    values[f.name] = (entries[f.name] if kind is None else
                      _check_type(entries[f.name], kind, lambda p, n=f.name: error(f"{n!r} {p}")))
  return values


def _normalization(field: _FieldReader) -> Optional[ScoreNormalization]:
  """The ``score_normalization`` entry, or None."""
  entry = field.get("score_normalization", Mapping, default=None)
  if entry is None:
    return None
  error = lambda p: field.error("score_normalization", p)
  values = _dataclass_from(ScoreNormalization, entry, error)
  if values["kind"] not in NORMALIZATIONS:
    raise error(f"'kind' must be one of {NORMALIZATIONS}, got {values['kind']!r}")
  if values["neighbors"] < 1:
    raise error(f"'neighbors' must be >= 1, got {values['neighbors']}")
  if not isinstance(values.get("fingerprint", ""), str):  # absent: None
    raise error(f"'fingerprint' must be a string, got {values['fingerprint']!r}")
  file = values["file"]
  if not file or os.path.isabs(file) or ".." in file.replace("\\", "/").split("/"):
    raise error(f"'file' must be a path inside the model directory, got {file!r}")
  return ScoreNormalization(**values)


def _preset(field: _FieldReader, train_config: Mapping[str, Any]) -> models_lib.ModelPreset:
  """The preset named by ``model`` (a custom one from ``train_config["model"]``)."""
  name = field.get("model", str)
  features = _dataclass_from(features_lib.FeatureConfig, field.get("features", Mapping),
                             lambda p: field.error("features", p))
  try:
    feature_config = features_lib.FeatureConfig(**features)
  except (TypeError, ValueError) as e:
    raise field.error("features", f"is not a valid feature configuration: {e}") from e
  if name in models_lib.PRESETS:
    preset = models_lib.PRESETS[name]
    if preset.features != feature_config:
      raise field.error("features", f"is inconsistent with model {name!r}: the preset uses "
                        f"{preset.features}, the metadata {feature_config}")
    return preset
  custom = train_config.get("model")
  if not isinstance(custom, Mapping):
    raise field.error("model", f"names an unknown preset {name!r} and 'train_config' holds no "
                      f"custom model; known presets: {sorted(models_lib.PRESETS)}")
  size = _dataclass_from(models_lib.ModelPreset, custom,
                         lambda p: field.error("train_config.model", p),
                         skip=("name", "features"))
  return models_lib.ModelPreset(name=name, features=feature_config, **size)


# ------------------------------------------------------------------ model directories


def latest_step(model_dir: os.PathLike | str) -> int:
  """The newest committed checkpoint step of ``model_dir`` (reads the folder only).

  Raises:
    ArtifactError: no committed checkpoint.
  """
  steps = checkpoint.committed_steps(model_dir)
  if not steps:
    raise ArtifactError(f"No checkpoint in {checkpoint.checkpoint_dir(model_dir)} (no "
                        "committed step directory).")
  return steps[-1]


def metadata_path(model_dir: os.PathLike | str, step: int) -> str:
  """The metadata file of checkpoint ``step``."""
  return os.path.join(os.fspath(checkpoint.checkpoint_dir(model_dir)), str(step),
                      _METADATA_FILE)


def read_metadata(model_dir: os.PathLike | str, *, step: Optional[int] = None) -> ModelMetadata:
  """The typed metadata of checkpoint ``step`` (default: the latest); needs no model.

  Raises:
    ArtifactError: no checkpoint, or its metadata is missing or malformed
      (the message names the file).
  """
  step = latest_step(model_dir) if step is None else step
  try:
    entries = checkpoint.read_metadata(model_dir, step=step)
  except checkpoint.CheckpointError as e:
    raise ArtifactError(str(e)) from e
  return ModelMetadata.from_json(entries, where=metadata_path(model_dir, step))


def _is_fold_model(model_dir: str) -> bool:
  """A fold model of the cross-fitted bank: ``.../crossfit/[<machine>[/section_XX]/]fold<k>``
  (a folder above the workdir that happens to be named crossfit does not count)."""
  parts = os.path.normpath(os.path.abspath(model_dir)).split(os.sep)
  return bool(re.fullmatch(r"fold\d+", parts[-1])) and "crossfit" in parts[-4:-1]


def find_model_dir(workdir: os.PathLike | str, *, loss: Optional[str] = None) -> str:
  """The model directory (holding ``checkpoints/``) of ``workdir``.

  ``workdir`` is either a model directory itself or a ``bu_jax.toycar``
  workdir with one model directory per loss (``<workdir>/<loss>/checkpoints``);
  then ``loss`` picks one, and may be omitted if there is exactly one. A
  folder with model directories further down (``experiments.dcase``:
  ``<loss>/models/<machine>``) is refused with a list of them (those of
  ``loss``, if any), unless it holds just one, which is taken.

  Raises:
    ArtifactError: no such directory, no checkpoint, or an ambiguous/unknown
      ``loss``; the message says what exists.
  """
  workdir = os.fspath(workdir)
  if not workdir:
    raise ArtifactError("no workdir given (an empty path)")
  if not os.path.isdir(workdir):
    raise ArtifactError(f"{workdir}: " + ("a file, not a directory" if os.path.exists(workdir)
                                          else "no such directory"))
  if os.path.isdir(checkpoint.checkpoint_dir(workdir)):
    return workdir
  found = sorted(name for name in os.listdir(workdir)
                 if os.path.isdir(checkpoint.checkpoint_dir(os.path.join(workdir, name))))
  by_loss = bool(found) and set(found) <= set(losses_lib.LOSSES)  # toycar: <workdir>/<loss>
  if loss is not None and loss in found:
    return os.path.join(workdir, loss)
  if loss is None and len(found) == 1:
    return os.path.join(workdir, found[0])
  if by_loss:
    if loss is not None:
      raise ArtifactError(f"No checkpoint for loss {loss!r} in {workdir}: it holds models for "
                          f"{found}.")
    raise ArtifactError(f"{workdir} holds models for several losses {found}; choose one "
                        "with --loss.")
  # Model folders further down: experiments.dcase's <loss>/models/<machine>[/section_XX]
  deeper = sorted(os.path.dirname(os.path.dirname(p)) for p in glob.glob(
      os.path.join(glob.escape(workdir), "**", checkpoint.CHECKPOINT_SUBDIR, ""),
      recursive=True))
  # the fold models of --normalization_bank=crossfit (<loss>/crossfit/...) score a bank,
  # not recordings: listed only when nothing else is there
  main = [d for d in deeper if not _is_fold_model(d)]
  deeper = main or deeper
  if loss is not None and any(d.startswith(os.path.join(workdir, loss, "")) for d in deeper):
    deeper = [d for d in deeper if d.startswith(os.path.join(workdir, loss, ""))]
  if len(deeper) == 1 and not _is_fold_model(deeper[0]):
    return deeper[0]  # one model further down, and not a fold model: no choice to make
  if deeper:
    shown = ", ".join(deeper[:6]) + (f", ... ({len(deeper)} in all)" if len(deeper) > 6 else "")
    raise ArtifactError(f"{workdir} holds {len(deeper)} model folder{'s' * (len(deeper) > 1)} "
                        "below it (experiments.dcase: one per loss and machine type); give "
                        f"one of them as the workdir: {shown}")
  if os.path.basename(os.path.normpath(workdir)) == checkpoint.CHECKPOINT_SUBDIR:
    raise ArtifactError(f"{workdir} is a checkpoints folder: give the model folder that holds "
                        f"it, {os.path.dirname(os.path.normpath(workdir))}")
  parent = os.path.dirname(os.path.normpath(workdir))
  if os.path.basename(parent) == checkpoint.CHECKPOINT_SUBDIR:  # <model>/checkpoints/<step>
    raise ArtifactError(f"{workdir} is a checkpoint step folder: give the model folder that "
                        f"holds its checkpoints folder, {os.path.dirname(parent)} (its latest "
                        "step is scored)")
  if os.path.basename(os.path.normpath(workdir)) == "pca" and glob.glob(
      os.path.join(glob.escape(workdir), "anomaly_score_*.csv")):
    raise ArtifactError(f"{workdir} holds the PCA reference's scores, not a model to score "
                        "with: give the workdir above it and --loss=re, snp or bu")
  raise ArtifactError(
      f"No checkpoint in {workdir}: expected {checkpoint.checkpoint_dir(workdir)} "
      f"or <loss>/{checkpoint.CHECKPOINT_SUBDIR} below it (train a model with "
      f"`python -m experiments.toycar --workdir={workdir}`).")


# ------------------------------------------------------------------ training


def open_for_training(model_dir: os.PathLike | str, metadata: ModelMetadata, *,
                      save_interval_steps: int) -> checkpoint.Checkpointer:
  """The ``Checkpointer`` a training run saves its train state with.

  Its ``restore_or_init(init_state)`` restores the latest train state of
  ``model_dir`` (a ``train.TrainState`` or ``train.MemoryTrainState`` like
  ``init_state``) to resume; every checkpoint it saves carries ``metadata``.
  """
  return checkpoint.Checkpointer(model_dir, metadata=metadata.to_json(),
                                 save_interval_steps=save_interval_steps)


def store_calibration(model_dir: os.PathLike | str, calibration: Calibration, *, step: int,
                      state) -> ModelMetadata:
  """Attaches φ (``calibration``) to the metadata of checkpoint ``step``, the final one.

  ``state`` is that checkpoint's train state (saved again only if ``step`` is
  not yet a checkpoint). The record is rewritten in this ``VERSION``'s format.
  Returns the stored record.
  """
  metadata = dataclasses.replace(read_metadata(model_dir), calibration=calibration,
                                 version=VERSION)
  with checkpoint.Checkpointer(model_dir, metadata=metadata.to_json()) as ckpt:
    ckpt.maybe_save(step, state, force=True)
  return metadata


# ------------------------------------------------------------------ scoring


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """What scoring needs of a checkpoint: parameters, the record, where it came from."""

  params: Any
  metadata: ModelMetadata
  model_dir: str
  step: int

  @property
  def preset(self) -> models_lib.ModelPreset:
    return self.metadata.preset


def restore_params(model_dir: os.PathLike | str, step: int, preset: models_lib.ModelPreset,
                   *, device: Optional[jax.Device] = None) -> Any:
  """Restores only the parameters of checkpoint ``step``, read only, onto one device.

  The optimizer state is not read, nothing is created or cleaned (a training
  run may keep writing checkpoints next to it), and the arrays land on
  ``device`` (default: the first) whatever mesh they were saved from.

  Raises:
    ArtifactError: the stored parameters do not fit ``preset``'s model (names
      the first differing leaf and both shapes) or cannot be read.
  """
  model = preset.build()
  sharding = jax.sharding.SingleDeviceSharding(device or jax.devices()[0])
  expected = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, preset.features.dim), jnp.float32))["params"])
  target = jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), expected)
  with checkpoint.Checkpointer(model_dir, read_only=True) as ckpt:
    try:
      return ckpt.restore_part(step, target, key="params")
    except checkpoint.CheckpointMismatchError as e:
      raise ArtifactError(f"The checkpoint does not match the model in its metadata "
                          f"({preset.name}): {e}") from e
    except checkpoint.CheckpointError as e:
      raise ArtifactError(str(e)) from e


def load_for_scoring(model_dir: os.PathLike | str, *, loss: Optional[str] = None,
                     device: Optional[jax.Device] = None) -> TrainedModel:
  """The parameters and metadata of the latest checkpoint of ``model_dir``, read only.

  Args:
    model_dir: a model directory (holding ``checkpoints/``).
    loss: if given, the loss the model must have been trained with.
    device: where the parameters go (default: the first device).

  Raises:
    ArtifactError: no checkpoint, malformed metadata, another loss, or
      parameters that do not match the model of the metadata.
  """
  model_dir = os.fspath(model_dir)
  step = latest_step(model_dir)
  metadata = read_metadata(model_dir, step=step)
  if loss is not None and metadata.loss != loss:
    raise ArtifactError(f"{model_dir} holds a model trained with loss {metadata.loss!r}, "
                        f"not {loss!r}")
  params = restore_params(model_dir, step, metadata.preset, device=device)
  return TrainedModel(params=params, metadata=metadata, model_dir=model_dir, step=step)
