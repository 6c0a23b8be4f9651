"""DCASE Task 2 benchmark mode: every machine type, source and target domains.

``run(settings)`` trains one autoencoder per machine type (the baselines'
convention; one per section with ``per="section"``) and per loss (RE, SNP,
BU, from the same initial parameters) on all of that type's normal training
clips with the data-parallel step of ``bu_jax.train``, checkpoints and resumes
each model in ``<workdir>/<loss>/models/<machine_type>[/section_XX]``, scores
every test clip (eq. 11: max of the interior frame scores), and writes:

- ``<workdir>/<loss>/anomaly_score_<machine_type>_section_<XX>_test.csv``
  (rows ``wavname,score``, no header) and
  ``decision_result_<machine_type>_section_<XX>_test.csv`` (``wavname,0|1``):
  the challenge's submission files (DCASE 2021: ``..._section_<XX>_source_test.csv``
  and ``..._target_test.csv``; 2020: ``..._id_<XX>.csv``); the evaluation set's
  (``eval_root``) go to ``<workdir>/<loss>/eval/``;
- ``<workdir>/<loss>/result.csv``: the baselines' result layout (per machine
  type: one row per section, arithmetic and harmonic means; the official
  score);
- ``<workdir>/summary.csv`` (every loss, machine type and section in one
  table) and ``<workdir>/results.json``;
- ``<workdir>/score_histogram_<machine_type>.png``: clip scores by domain and
  label, one panel per loss.

A machine type with several ``test*/`` folders (one per condition, e.g.
``test_anr-10dB``, ``test_anr-20dB``; a ``test/`` beside them is one of them) is evaluated on
each of them as its own test set: the files above go to
``<workdir>/<loss>/<folder>/`` and the metrics to ``results[loss][<folder>]``
(``results["test_folders"]`` lists them), one table per folder; the histogram
shows the first folder.

The decision threshold is the 0.9 quantile of a gamma distribution (location
0, ``evaluate.fit_threshold``) fitted to the clip scores of the model's own
training clips, as the baselines do (they fit the location too); it is
stored with the model's final checkpoint (``artifact.Calibration``), so
``experiments.score`` on a model folder decides as the run did.

With ``score_normalization`` ("knn" or "knn_z", ``bu_jax.score_norm``) every
frame score is first normalized by the scores of its nearest training frames in
code space. The bank is fitted on the training clips but every tenth
(``<model dir>/score_normalizer.npz``), and the threshold on the normalized
scores of those held-out tenth, since a clip in the bank would find its own
frames as neighbours.

With ``heldout_fraction`` > 0 that fraction of each model's training clips is
held out of its training (``heldout.split``): φ is fitted to them, the bank
holds the clips trained on, and ``score_normalization="auto"`` and
``score_window=0`` choose raw or knn_z scores and the clip-score window per
model by the AUC of the held-out clips with something-else sounds mixed in
(``heldout.choose_scoring``, as ``experiments.toycar``: the longest window within
one standard error of the best), recorded under
``results[loss]["scoring"][tag]``. ``normalization_bank="heldout"`` (which needs
them) fills the bank with the held-out clips instead, each normalized for φ and
the choice by the bank of the others (``score_norm.fit_heldout_banks``).
With ``rare_clips`` (``data.read_rare_clips``; evaluation only) each test set's
``results[loss][<set>]["rare_normal"]`` holds, per machine type and section,
``dcase_metrics.rare_normal_metrics`` (the anomalies against the rare-normal
and the frequent-normal clips apart, rare vs frequent, the FPRs at phi) and
their mean over sections, printed as rows of the comparison.
Metrics and the official score: ``bu_jax.dcase_metrics``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import time
from typing import Any, NamedTuple, Optional, Sequence

from absl import logging
import jax
import numpy as np

from bu_jax import artifact
from bu_jax import audio
from bu_jax import checkpoint as checkpoint_lib
from bu_jax import cli
from bu_jax import crossfit
from bu_jax import data as data_lib
from bu_jax import dcase
from bu_jax import dcase_metrics
from bu_jax import evaluate
from bu_jax import features as features_lib
from bu_jax import fileio
from bu_jax import fit_check
from bu_jax import parallel
from bu_jax import plots
from bu_jax import reference as reference_lib
from bu_jax import frame_scores
from bu_jax import heldout
from bu_jax import runner
from bu_jax import score_norm
from bu_jax import synthetic_dcase
from bu_jax import train as train_lib

# Presets: values of Settings fields; what a preset leaves out is
# TrainConfig's default, the paper's (section 4.2.2, per machine type).
PRESETS = {
    "paper": {},
    # The embedded set on a 2-core CPU: 3 machine types x 3 losses in about 2.5 min; the AE's
    # input standardized, as in experiments.toycar's demo preset.
    "demo": dict(model="fcn40-small", epochs=4, steps_per_epoch=100, decay_start_epoch=2,
                 learning_rate=1e-3, steps_per_call=10, standardize_input=True),
    # Real recordings on a 2-core CPU: experiments.toycar's cpu preset (standardized
    # input, 9,600 steps, auto scores, chosen window and knn bank), each model's
    # held-out tenth choosing its scoring.
    "cpu": {**cli.CPU_PRESET, "heldout_fraction": 0.1},
}
PER = ("machine_type", "section")
# The rows of --rare_clips in the comparison table (experiments.toycar's labels).
RARE_ROWS = (("AUC vs rare normals", "auc_vs_rare"), ("AUC vs frequent", "auc_vs_frequent"),
             ("rare vs frequent AUC", "rare_vs_frequent"), ("FPR frequent@phi", "fpr_frequent"),
             ("FPR rare@phi", "fpr_rare"))


# Raised by ``run`` (``runner.train_or_resume``, ``runner.check_resumable``).
Interrupted = runner.Interrupted
SettingsMismatchError = runner.SettingsMismatchError


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings(cli.ScoringSettings):
  """What ``run`` does, and the flags of ``experiments.dcase`` (``cli.define_flags``):
  the training and scoring settings of ``cli.ScoringSettings`` and these."""

  PRESETS = PRESETS

  preset: str = cli.setting("paper", choices=sorted(PRESETS),
                            help="paper: section 4.2.2 schedule; demo: embedded set, 2-core CPU; "
                            "cpu: real recordings on a 2-core CPU (standardized AE input, "
                            "longer schedule, scoring and knn bank chosen on a held-out "
                            "tenth, as experiments.toycar's cpu preset).")
  data_root: Optional[str] = cli.setting(
      None, help="Folder of machine types (<root>/<machine_type>/{train,test}); default: the "
      "embedded synthetic DCASE-style set.")
  machines: Optional[Sequence[str]] = cli.setting(
      None, help="Machine types (default: every folder).")
  year: str = cli.setting("auto", choices=("auto", *dcase.YEARS),
                          help="File-name grammar and metric convention (auto: from the names).")
  per: str = cli.setting("machine_type", choices=PER,
                         help="One model per machine type (baselines) or per section.")
  data_seed: int = cli.setting(0, minimum=0, help="Seed of the embedded data set.")
  ground_truth_dir: Optional[str] = cli.setting(
      None, help="Organisers' ground truth (ground_truth_data/, ground_truth_domain/; DCASE "
      "2021: ground_truth_data/ only; DCASE 2020: eval_data_list.csv) for unlabelled "
      "evaluation-set test clips.")
  eval_root: Optional[str] = cli.setting(
      None, help="Evaluation set (<root>/<machine_type>/test): scored with the trained "
      "models, files in <workdir>/<loss>/eval/.")
  heldout_fraction: Optional[float] = cli.setting(
      None, help="Fraction of each model's training clips held out of its training (at least "
      "one): phi (eq. 4) is fitted to their clip scores, and with --score_normalization=auto "
      "or --score_window=0 their pseudo-anomalies (something-else sounds mixed in) choose "
      "the scoring, as in experiments.toycar. 0: train on every clip (the baselines'). A "
      "training setting. Default: the preset's, else 0.")
  synthetic_kwargs: Optional[dict] = None  # sizes of the embedded set (tests)

  def __post_init__(self):
    super().__post_init__()
    if not 0 <= self.held_out() < 1:
      raise ValueError(f"--heldout_fraction must lie in [0, 1), got {self.held_out()}")
    if self.chooses_by_pseudo_anomalies() and not self.held_out():
      raise ValueError(f"{self.choosing_flags()[0]}: the scoring is chosen on clips held out "
                       "of training, so --heldout_fraction must be > 0 (e.g. 0.1)")
    if score_norm.needs_fold_models(self.bank()) and not self.held_out():
      raise ValueError(f"--normalization_bank={self.bank()}: the fold models' scores are put on "
                       "the main model's scale with the clips held out of training, so "
                       "--heldout_fraction must be > 0 (e.g. 0.1)")
    if self.bank() == score_norm.HELDOUT_BANK and not self.held_out():
      raise ValueError("--normalization_bank=heldout: the bank holds clips held out of "
                       "training, so --heldout_fraction must be > 0 (e.g. 0.1)")

  def held_out(self) -> float:
    """``--heldout_fraction``, else the preset's, else 0 (every clip trained on)."""
    value = self.resolved("heldout_fraction")
    return 0.0 if value is None else float(value)

  @property
  def neighbors(self) -> int:
    """k of the normalization (``score_norm.resolve_neighbors``)."""
    return self.normalization()[1]

  def train_config(self, loss: str, num_devices: int) -> train_lib.TrainConfig:
    return super().train_config(loss, mixtures_per_step=self.mixtures_per_step or num_devices)


# ------------------------------------------------------------------ training


def _model_dirs(workdir: str, loss: str, under: str = "models") -> list[str]:
  """The model directories with a checkpoint below ``<workdir>/<loss>/<under>``
  (``CROSSFIT_DIR``: the fold models)."""
  found = []
  for path, subdirs, _ in os.walk(os.path.join(workdir, loss, under)):
    if checkpoint_lib.CHECKPOINT_SUBDIR in subdirs:
      subdirs.remove(checkpoint_lib.CHECKPOINT_SUBDIR)
      if checkpoint_lib.committed_steps(path):
        found.append(path)
    subdirs.sort()
  return found


_FLAG_NAMES = {f.name for f in dataclasses.fields(Settings)} | {"loss", "model"}


EVALUATION_FLAGS = ("reduce", "eval_root", "ground_truth_dir", "reference_components",
                    "score_normalization", "normalization_neighbors", "normalization_bank",
                    "score_window")
REFERENCE = "pca"  # the PCA reference's name among the methods (results, files, tables)


def _check_model_dir(model_dir: str, metadata: artifact.ModelMetadata) -> None:
  runner.check_resumable(model_dir, metadata, flag_names=_FLAG_NAMES,
                         evaluation_flags=EVALUATION_FLAGS)


def _training_metadata(settings: Settings, config: train_lib.TrainConfig, *,
                       tag: Optional[str] = None, train_clips: Optional[str] = None,
                       fold: Optional[str] = None) -> artifact.ModelMetadata:
  """What a model's checkpoints record about how it is trained: ``config`` and
  the data settings (the data folder or the embedded set's seed and sizes, the
  model grouping, the file-name grammar and, for SNP and BU, the something-else
  clips; for a fold model of the cross-fitted bank, "k of n"). Evaluation
  settings (``EVALUATION_FLAGS``) are not among them."""
  path = lambda p: None if p is None else os.path.abspath(p)
  data = {"data_root": path(settings.data_root), "per": settings.per, "year": settings.year}
  # 0.0 too: absent (older checkpoints) reads as 0.0, every clip trained on
  # (artifact.MISSING_MEANS), so 0 <-> 0.25 on a resume is refused either way
  data["heldout_fraction"] = settings.held_out()
  # the held-out split and the fold models' halves follow it, for any data root
  data["data_seed"] = settings.data_seed
  if settings.data_root is None:  # the embedded set
    if settings.synthetic_kwargs:
      data["synthetic_kwargs"] = fileio.to_json(dict(settings.synthetic_kwargs), default=str)
  if config.loss != "re":  # RE trains without the something-else clips
    data["something_else_dir"] = path(settings.something_else_dir)
  if train_clips is not None:  # the model's clips (data.clips_fingerprint), when known
    data["train_clips"] = train_clips
  if fold is not None:  # a fold model of --normalization_bank=crossfit (_train_folds)
    data["crossfit_fold"] = fold
  return artifact.ModelMetadata.for_training(config, data=data, tag=tag)


def check_resumable(settings: Settings, configs: dict[str, train_lib.TrainConfig]) -> None:
  """Refuses a workdir whose models were trained with other training settings.

  Every model directory of every loss that holds a checkpoint must have been
  trained with this run's ``configs[loss]`` and data settings
  (``runner.check_resumable``: loss, model, seed, schedule, batch shape, sigma,
  lambda, eps, ..., ``_training_metadata``'s data); evaluation settings may
  differ. So must the fold models of the cross-fitted bank that the run will
  use (``crossfit.fold_loss``: a BU run borrows RE's), on the same settings with
  their schedule (``_train_folds``); their clips are checked when each is
  trained or loaded. All before any data is loaded or any model trained.

  Raises:
    SettingsMismatchError: the differing settings, with both values and how
      to proceed.
    checkpoint.CheckpointError: a checkpoint's metadata cannot be read.
  """
  for loss, config in configs.items():
    metadata = _training_metadata(settings, config)
    for model_dir in _model_dirs(settings.workdir, loss):
      _check_model_dir(model_dir, metadata)
  if not configs or not score_norm.needs_fold_models(settings.bank()):
    return
  any_config = next(iter(configs.values()))  # the configs differ in their loss only
  for owner in sorted({crossfit.fold_loss(loss, bu_folds=settings.crossfit_bu_folds)
                       for loss in configs}):
    config = _fold_config(settings, dataclasses.replace(any_config, loss=owner))
    metadata = _training_metadata(settings, config)
    for model_dir in _model_dirs(settings.workdir, owner, CROSSFIT_DIR):
      with crossfit.schedule_hint():
        _check_model_dir(model_dir, metadata)


def _fold_config(settings: Settings, config: train_lib.TrainConfig) -> train_lib.TrainConfig:
  """A fold model's config: ``config`` with epochs ``crossfit.fold_steps_per_epoch`` long."""
  return dataclasses.replace(config, steps_per_epoch=crossfit.fold_steps_per_epoch(
      config.steps_per_epoch, schedule=settings.crossfit_schedule))


def train_model(settings: Settings, config: train_lib.TrainConfig, corpus, *, mesh,
                model_dir: str, tag: str, input_stats=None,
                validate=None, train_clips: Optional[str] = None,
                fold: Optional[str] = None) -> tuple[Any, int]:
  """Trains (or resumes, or finds finished) one model in ``model_dir``.

  ``input_stats`` (mean, std of its training features) initialize the
  standardization of an AE with ``standardize_input`` (``runner.initial_state``).
  ``validate(params)`` (the held-out clips' mean frame score) gives the
  validation curve, ``<model_dir>/validation.jsonl``. Returns the final state
  and the number of steps trained now (``runner.train_or_resume``). ``fold``
  ("k of n"): a fold model of the cross-fitted bank (``_train_folds``).
  """
  metadata = _training_metadata(settings, config, tag=tag, train_clips=train_clips,
                                fold=fold)
  _check_model_dir(model_dir, metadata)
  return runner.train_or_resume(config, corpus, mesh=mesh, model_dir=model_dir,
                                metadata=metadata, checkpoint_every=settings.checkpoint_every,
                                tag=tag, progress=settings.progress, validate=validate,
                                init_state=runner.initial_state(config, mesh=mesh,
                                                                input_stats=input_stats))


CROSSFIT_DIR = "crossfit"  # <workdir>/<loss>/crossfit/<machine_type>[/section_XX]/fold<k>


def _train_folds(settings: Settings, config: train_lib.TrainConfig, train_clips: Sequence[Any],
                 *, loss: str, group: Sequence[str], something_else, mesh
                 ) -> tuple[list[Any], list[list[int]], int]:
  """The fold models of ``--normalization_bank=crossfit`` of ``loss`` (the run
  calls it with ``crossfit.fold_loss``: RE's serve BU) of one ``group`` (``_group_parts``, e.g. ("SynthFan",)): for each fold k of
  ``crossfit.split`` a model with the same settings, trained (or resumed, or found finished) on the other folds'
  clips in ``<workdir>/<loss>/crossfit/<machine_type>[/section_XX]/fold<k>``
  (outside ``models/``: they score the bank, not the test clips).
  ``something_else``: ``(clips, lengths)`` of ``data_lib.pad_clips`` or
  ``(None, None)``. Their epochs are ``crossfit.fold_steps_per_epoch`` long
  (``--crossfit_schedule``). Returns their parameters, the folds and the steps trained now."""
  tag = "/".join((loss, *group))
  config = _fold_config(settings, config)
  folds = crossfit.split(len(train_clips), seed=settings.data_seed)
  params, trained = [], 0
  for k in range(len(folds)):
    clips_k = [train_clips[i] for i in crossfit.others(folds, k)]
    corpus, stats = runner.training_inputs(config, [c.wave for c in clips_k],
                                           [c.path for c in clips_k], mesh=mesh,
                                           something_else=something_else)
    with crossfit.schedule_hint():
      state, steps = train_model(
          settings, config, corpus, mesh=mesh, input_stats=stats,
          model_dir=os.path.join(settings.workdir, loss, CROSSFIT_DIR, *group, f"fold{k}"),
          tag=f"{tag} fold {k + 1}/{len(folds)}",
          train_clips=data_lib.clips_fingerprint([c.path for c in clips_k]),
          fold=f"{k + 1} of {len(folds)}")
    params.append(jax.device_get(state.params))
    trained += steps
  return params, folds, trained


def clip_scores(scorer: frame_scores.FrameScorer | score_norm.NormalizedScorer, params, clips,
                *, reduce: str, window: int = 1) -> np.ndarray:
  """Eq. (11) (or its ``window`` means, ``evaluate.clip_score``) over each clip's
  interior frames."""
  out = []
  for clip in clips:
    frames = scorer(params, clip.wave, name=clip.path)
    out.append(evaluate.interior_clip_score(frames, num_samples=len(clip.wave),
                                            feature_config=scorer.config, reduce=reduce,
                                            window=window))
  return np.asarray(out, dtype=np.float64)


def _bank_split(train_clips: Sequence[Any], kind: str, *, where: str) -> tuple[list, list]:
  """``(bank clips, left-out clips)`` of ``normalized_scorer``: every training
  clip but each tenth (the 10th, 20th, ...; the last when there are fewer than
  10) and those tenths; with ``kind`` "none", every clip and none.

  Raises:
    data_lib.DataError: fewer than 2 training clips to split (naming ``where``).
  """
  n = len(train_clips)
  if kind == "none":
    return list(train_clips), []
  if n < 2:
    raise data_lib.DataError(f"{where}: {n} training clip(s); --score_normalization="
                             f"{kind} needs at least 2")
  held = set(range(9, n, 10)) or {n - 1}
  return ([c for i, c in enumerate(train_clips) if i not in held],
          [c for i, c in enumerate(train_clips) if i in held])


def normalized_scorer(settings: Settings, scorer: frame_scores.FrameScorer, params,
                      train_clips: Sequence[Any], *, model_dir: str
                      ) -> tuple[Any, Optional[score_norm.LocalNormalizer], list]:
  """The scorer to evaluate a model with, its bank, and the training clips to fit φ to.

  Without a score normalization: ``scorer``, None and every training clip (the
  baselines' convention). With one (``score_norm.prepare``): a
  ``score_norm.NormalizedScorer`` whose bank holds the frames of every
  training clip but each tenth (the 10th, 20th, ...; the last when there are
  fewer than 10), saved to ``<model_dir>/score_normalizer.npz``, and those
  left-out clips (which also choose k with ``--normalization_neighbors=0``).

  Raises:
    data_lib.DataError: fewer than 2 training clips to split.
  """
  kind = settings.normalization()[0]
  bank, held_clips = _bank_split(train_clips, kind, where=model_dir)
  scorer, normalizer = score_norm.prepare(
      scorer, params, [c.wave for c in bank], kind=kind,
      neighbors=settings.neighbors, directory=model_dir,
      heldout_waves=[c.wave for c in held_clips], names=[c.path for c in bank])
  if normalizer is None:
    return scorer, None, list(train_clips)
  logging.info("%s: %s", model_dir, normalizer.describe())
  return scorer, normalizer, held_clips


def _model_place(workdir: str, method: str, machine: str,
                 section: Optional[str]) -> tuple[str, str]:
  """The tag ("bu/SynthFan[/section_00]") and the folder of one model."""
  group = _group_parts(machine, section)
  return "/".join((method, *group)), os.path.join(workdir, method, "models", *group)


def _group_parts(machine: str, section: Optional[str]) -> tuple[str, ...]:
  """``(<machine_type>[, section_XX])``: where a group's models lie under a method's folder."""
  return (machine,) if section is None else (machine, f"section_{section}")


class _Scored(NamedTuple):
  """How one model (an AE or the PCA reference) of one group is evaluated."""
  scorer: Any  # its (normalized) frame scorer
  phi: float  # the threshold of eq. (4)
  train_scores: np.ndarray  # the clip scores phi was fitted to
  phi_paths: list  # their clips
  window: int  # the clip-score window (frames)
  normalization: Optional[artifact.ScoreNormalization]
  record: Optional[dict]  # with held-out clips: what the scoring was chosen on
  neighbors_chosen: Optional[int]  # k, when it was chosen on the bank's left-out tenth


def _calibrate(settings: Settings, scorer, params, *, train_clips, held, model_dir: str,
               tag: str, bank_scores: Optional[np.ndarray] = None) -> _Scored:
  """The scoring and phi of one model: without held-out clips, on its training clips
  (``normalized_scorer``); with them, chosen on them (``heldout.choose_scoring``;
  ``bank_scores``: the training frames' out-of-fold scores of the cross-fitted bank)."""
  if held is None:  # every clip trained on: phi on them, or on the bank's left-out tenth
    eval_scorer, normalizer, phi_clips = normalized_scorer(
        settings, scorer, params, train_clips, model_dir=model_dir)
    window = settings.clip_window()
    train_scores = clip_scores(eval_scorer, params, phi_clips, reduce=settings.reduce,
                               window=window)
    normalization = None if normalizer is None else artifact.ScoreNormalization(
        kind=normalizer.kind, neighbors=normalizer.neighbors, file=score_norm.FILE_NAME,
        fingerprint=normalizer.fingerprint)
    chosen = (normalizer.neighbors if normalizer is not None and normalizer.choice is not None
              else None)
    return _Scored(eval_scorer, evaluate.fit_threshold(
        train_scores, quantile=settings.threshold_quantile), train_scores,
                   [c.path for c in phi_clips], window, normalization, None, chosen)
  choice = heldout.choose_scoring(  # phi, and any choice of the scoring, on the held-out clips
      scorer, params, held, model_dir, kind=settings.normalization()[0],
      neighbors=settings.neighbors, window=settings.clip_window(),
      reduce=settings.reduce, bank=settings.bank(), bank_scores=bank_scores)
  train_scores = choice.heldout_scores
  record = {
      "score_normalization": choice.normalization, "clip_score": choice.clip_score,
      "heldout_clips": len(held.names),
      "pseudo_anomaly_auc": choice.pseudo_auc,
      "heldout_max_over_median": evaluate.heldout_spread(train_scores),
      "validation": heldout.validation_summary(fileio.read_metrics(
          os.path.join(model_dir, runner.VALIDATION_FILE)))}
  print(f"[{tag}] scored on {heldout.describe(choice)}", flush=True)
  return _Scored(choice.scorer, evaluate.fit_threshold(
      train_scores, quantile=settings.threshold_quantile), train_scores, list(held.names),
                 choice.clip_score["window_frames"],
                 heldout.calibration_normalization(choice.normalization), record, None)


def _score_tests(settings: Settings, scored: _Scored, params, test_sets: dict,
                 section: Optional[str], *, out: dict) -> None:
  """Scores and decides the test clips of ``section`` (None: all) of every test set
  into ``out[set_name][path] = (score, decision)``."""
  for set_name, test_clips in test_sets.items():
    chosen = [c for c in test_clips if section is None or c.section == section]
    _, note = features_lib.short_window_note([len(c.wave) for c in chosen], scored.scorer.config,
                                             window=scored.window)
    if note:
      logging.warning("%s%s: %s", set_name, f" section {section}" if section else "", note)
    values = clip_scores(scored.scorer, params, chosen, reduce=settings.reduce,
                         window=scored.window)
    for clip, value in zip(chosen, values):
      out[set_name][clip.path] = (value, int(evaluate.decide(value, scored.phi)))


def _calibration(settings: Settings, phi: float, scores: Sequence[float],
                 paths: Sequence[str], *, window: int,
                 normalization: Optional[artifact.ScoreNormalization]) -> artifact.Calibration:
  """φ, the clip scores and files it was fitted to, the clip-score window and the
  score normalization (None for raw scores), for the model's final checkpoint
  (so ``experiments.score`` decides as this run)."""
  return artifact.Calibration(
      threshold=float(phi), reduce=settings.reduce, quantile=settings.threshold_quantile,
      heldout_clip_scores=tuple(float(v) for v in scores),
      heldout_paths=tuple(os.path.abspath(p) for p in paths),  # found again from anywhere
      window=window, normalization=normalization, fit=artifact.GAMMA_LOC0)


# ------------------------------------------------------------------ files


def write_submission(directory: str, machine_type: str, section: str, names: Sequence[str],
                     scores: Sequence[float], decisions: Sequence[int], *,
                     year: str = "2022", domain: Optional[str] = None) -> list[str]:
  """Writes the challenge's two files of one section (atomically).

  ``anomaly_score_<machine_type>_section_<XX>_test.csv``: ``wavname,score``;
  ``decision_result_<machine_type>_section_<XX>_test.csv``: ``wavname,0|1``;
  no header, ``\\n`` line ends, in the order given. For 2020 (machine ids):
  ``anomaly_score_<machine_type>_id_<XX>.csv`` and ``decision_result_...``.
  With a ``domain`` (DCASE 2021's files, one per section and domain, see
  ``submission_groups``): ``..._section_<XX>_<domain>_test.csv``.
  """
  stem = (f"{machine_type}_id_{section}.csv" if year == "2020"
          else f"{machine_type}_section_{section}_{domain + '_' if domain else ''}test.csv")
  score_path = os.path.join(directory, f"anomaly_score_{stem}")
  decision_path = os.path.join(directory, f"decision_result_{stem}")
  fileio.write_csv(score_path, [(n, repr(float(s))) for n, s in zip(names, scores)])
  fileio.write_csv(decision_path, [(n, int(d)) for n, d in zip(names, decisions)])
  return [score_path, decision_path]


def submission_groups(clips, year: str) -> list[tuple[str, Optional[str], list[int]]]:
  """(section, domain, indices of ``clips``) of each pair of submission files, by
  section: one per section, and for DCASE 2021, whose evaluator reads
  ``..._section_<XX>_source_test.csv`` and ``..._target_test.csv``, one per
  section and domain (domain None: clips without one, in ``..._test.csv``)."""
  groups: dict = {}
  for i, clip in enumerate(clips):
    groups.setdefault((clip.section, clip.domain if year == "2021" else None), []).append(i)
  return [(section, domain, idx) for (section, domain), idx in
          sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] or ""))]


class _EarlierResults:
  """The files an earlier run wrote about all of its models (``results.json``,
  ``results.txt``, ``summary.csv``). They describe the submission files, which
  this run rewrites machine type by machine type, so ``retire`` renames them
  to ``<name>.previous`` before this run's first one is written: a run stopped
  halfway leaves no results file that contradicts the files beside it. A
  finished run writes its own and removes the ``.previous`` ones."""

  NAMES = ("results.json", "results.txt", "summary.csv")

  def __init__(self, workdir: str):
    self.workdir = workdir
    self._retired = False
    # The earlier run's results.json, or the one a stopped run moved aside.
    path = os.path.join(workdir, "results.json")
    self.path = next((p for p in (path, path + ".previous") if os.path.exists(p)), None)

  def retire(self) -> None:
    if self._retired:
      return
    self._retired = True
    for name in self.NAMES:
      path = os.path.join(self.workdir, name)
      if os.path.exists(path):
        os.replace(path, path + ".previous")

  def remove(self) -> None:
    """After this run's files are written: the earlier ones describe nothing."""
    for name in self.NAMES:
      path = os.path.join(self.workdir, name + ".previous")
      if os.path.exists(path):
        os.remove(path)


def _other_submission_files(workdir: str, methods: Sequence[str], written: set[str]) -> list[str]:
  """The submission files under ``<workdir>/<method>/`` (and its test-set
  folders) that this run did not write: an earlier run's, of machine types or
  sections this run did not score."""
  found = []
  for method in methods:
    for pattern in ("anomaly_score_*.csv", "decision_result_*.csv"):
      for folder in (os.path.join(workdir, method), os.path.join(workdir, method, "*")):
        found.extend(p for p in glob.glob(os.path.join(folder, pattern)) if p not in written)
  return sorted(found)


def _set_dir(workdir: str, loss: str, set_name: str) -> str:
  """Where a test set's files go: ``<workdir>/<loss>`` for "dev" (test/), else
  ``<workdir>/<loss>/<set_name>`` ("eval", or a test*/ folder's name)."""
  return os.path.join(workdir, loss, *([] if set_name == "dev" else [set_name]))


def _group_name(clip) -> str:
  if clip.label is None:
    return "unlabelled"
  kind = "anomaly" if clip.label else ("rare normal" if clip.rare else "normal")
  return f"{clip.domain} {kind}" if clip.domain else kind


# ------------------------------------------------------------------ evaluation


def _warn_one_label_sections(clips) -> None:
  """A warning for each labelled section of a test set without normal clips or
  without anomalies: its AUC and pAUC are n/a, and the table alone would not say why."""
  for section in sorted({c.section for c in clips}):
    sel = [c for c in clips if c.section == section]
    missing = None if any(c.label is None for c in sel) else data_lib.missing_label(sel)
    if missing:
      logging.warning("%s: section %s has no %s test clips; its AUC and pAUC are n/a",
                      missing[1], section, missing[0])


def _section_results(clips, scores, decisions, year: str) -> dict:
  """{section: metrics} for the sections whose clips are all labelled (and have
  domains, from 2021 on); other sections are left out (scored, not evaluated)."""
  out = {}
  for section in sorted({c.section for c in clips}):
    idx = [i for i, c in enumerate(clips) if c.section == section]
    sel = [clips[i] for i in idx]
    if any(c.label is None for c in sel) or (year != "2020" and any(c.domain is None
                                                                   for c in sel)):
      continue
    out[section] = dcase_metrics.section_metrics(
        [c.label for c in sel], scores[idx], decisions[idx], [c.domain for c in sel],
        year=year)
  return out


def _rare_results(clips, scores, decisions) -> dict:
  """{section: dcase_metrics.rare_normal_metrics} for the sections of a test set
  whose labelled clips include rare-normal clips (``--rare_clips``) and anomalies."""
  out = {}
  for section in sorted({c.section for c in clips}):
    idx = [i for i, c in enumerate(clips) if c.section == section and c.label is not None]
    metrics = idx and dcase_metrics.rare_normal_metrics(
        [clips[i].label for i in idx], scores[idx], decisions[idx], [clips[i].rare for i in idx])
    if metrics:
      out[section] = metrics
  return out


def _fmt(v) -> str:
  return "   n/a" if v is None or not np.isfinite(v) else f"{v:6.3f}"


def format_result(summary: dict, *, year: str, title: str) -> str:
  """The baselines' result summary as text: per machine type, sections and means."""
  cols = dcase_metrics.COLUMNS[year]
  short = [c.replace("precision", "prec").replace("recall", "rec").replace(" score", "")
           .replace("(source)", "(s)").replace("(target)", "(t)") for c in cols]
  head = f"{'':<18}" + "".join(f"{s:>10}" for s in short)
  lines = [title, head]
  for machine, m in summary["machine_types"].items():
    lines.append(machine)
    for section, v in m["sections"].items():
      lines.append(f"  section {section:<8}" + "".join(f"{_fmt(v[c]):>10}" for c in cols))
    for kind, label in (("arithmetic mean", "  a-mean"), ("harmonic mean", "  h-mean")):
      lines.append(f"{label:<18}" + "".join(f"{_fmt(m[kind][c]):>10}" for c in cols))
  if summary.get("overall"):
    for kind, label in (("arithmetic mean", "all: a-mean"), ("harmonic mean", "all: h-mean")):
      lines.append(f"{label:<18}" + "".join(f"{_fmt(summary['overall'][kind][c]):>10}"
                                             for c in cols))
  missing = summary.get("official_score_missing") or []
  used, expected = summary.get("official_score_terms") or (None, None)
  lines.append(f"official score: {_fmt(summary['official_score']).strip()}" + (
      f" (over {used} of its {expected} values; n/a: {', '.join(missing[:4])}"
      f"{f' and {len(missing) - 4} more' if len(missing) > 4 else ''}; not comparable "
      "with a score over all of them)" if missing else ""))
  return "\n".join(lines)


def format_comparison(results: dict, losses: Sequence[str], *, year: str,
                      set_name: str = "dev") -> str:
  """One line per headline number, one column per loss (the test set ``set_name``:
  "dev", or a test folder's name)."""
  rows = ([("h-mean AUC (source)", "hmean_auc_source"), ("h-mean AUC (target)", "hmean_auc_target"),
           ("h-mean pAUC", "hmean_pauc")] if year != "2020" else
          [("h-mean AUC", "hmean_auc"), ("h-mean pAUC", "hmean_pauc")])
  rows.append(("official score", "official_score"))
  head = f"{'':<22}" + "".join(f"{l.upper():>8}" for l in losses)
  lines = [head, "-" * len(head)]
  for label, key in rows:
    lines.append(f"{label:<22}" + "".join(
        f"{_fmt(results[l].get(set_name, {}).get(key)):>8}" for l in losses))
  rare = [results[l].get(set_name, {}).get("rare_normal", {}).get("mean", {}) for l in losses]
  if any(rare):  # --rare_clips: means over the sections with rare-normal clips
    for label, key in RARE_ROWS:
      lines.append(f"{label:<22}" + "".join(f"{_fmt(r.get(key)):>8}" for r in rare))
  return "\n".join(lines)


def _summary_rows(results: dict, losses: Sequence[str], year: str,
                  set_names: Sequence[str] = ("dev", "eval")) -> list[list[str]]:
  cols = dcase_metrics.COLUMNS[year]
  # --rare_clips: its metrics per section, and their mean over sections on the "all" rows
  rare = any(results[l].get(s, {}).get("rare_normal") for l in losses for s in set_names)
  rare_head = [label for label, _ in RARE_ROWS] if rare else []
  rows = [["loss", "set", "machine_type", "section", *cols, "official score", *rare_head]]
  num = lambda v: "" if v is None or not np.isfinite(v) else repr(float(v))
  rare_of = lambda values: [num(values.get(k)) for _, k in RARE_ROWS] if rare else []
  for loss in losses:
    for set_name in set_names:
      summary = results[loss].get(set_name)
      if not summary or not summary.get("machine_types"):
        continue
      rare_summary = summary.get("rare_normal") or {}
      by_section = rare_summary.get("machine_types", {})
      for machine, m in summary["machine_types"].items():
        for section, v in m["sections"].items():
          rows.append([loss, set_name, machine, section, *(num(v[c]) for c in cols), "",
                       *rare_of(by_section.get(machine, {}).get(section, {}))])
        for kind in ("arithmetic mean", "harmonic mean"):
          rows.append([loss, set_name, machine, kind, *(num(m[kind][c]) for c in cols), "",
                       *rare_of({})])
      for kind in ("arithmetic mean", "harmonic mean"):
        rows.append([loss, set_name, "all", kind,
                     *(num(summary["overall"][kind][c]) for c in cols),
                     num(summary["official_score"]) if kind == "harmonic mean" else "",
                     *rare_of(rare_summary.get("mean", {}) if kind == "arithmetic mean"
                              else {})])
  return rows


# ------------------------------------------------------------------ driver


def _check_bank(settings: Settings, fit_lengths: Sequence[int],
                held_lengths: Optional[Sequence[int]], features, *, where: str) -> None:
  """Refuses, before a group's models train, a knn bank it cannot fill:
  ``normalized_scorer``'s (fewer than 2 training clips, or too few frames for
  the normalization or its k), or with ``--heldout_fraction``
  ``heldout.normalize``'s. ``fit_lengths``: the samples of each clip trained
  on; ``held_lengths``: of each held-out clip (None without held-out clips).

  Raises:
    data_lib.DataError: naming the flags, the group and the bank's size.
  """
  kind, neighbors = settings.normalization()
  heldout_bank = settings.bank() == score_norm.HELDOUT_BANK
  if held_lengths is None:
    lengths = _bank_split(list(fit_lengths), kind, where=where)[0]
  else:
    lengths = list(held_lengths if heldout_bank else fit_lengths)
  try:
    score_norm.check_bank_size(kind, neighbors, lengths, features, leave_one_out=heldout_bank)
  except ValueError as e:
    raise data_lib.DataError(f"{where}: {e}") from None


def _groups(settings: Settings, md: dcase.MachineData) -> dict[str, tuple[list, Optional[str]]]:
  """The models of a machine type: group name -> (its training clips, its section)."""
  if settings.per == "machine_type":
    return {"all": (md.train, None)}
  return {f"section_{s}": ([c for c in md.train if c.section == s], s)
          for s in sorted({c.section for c in md.train})}


def _held_split(settings: Settings, train_clips: list, *, where: str) -> tuple[list, list]:
  """``(clips trained on, held-out clips)`` of a group (``--heldout_fraction``)."""
  if len(train_clips) < 2:
    raise data_lib.DataError(
        f"{where}: {len(train_clips)} training clip(s); --heldout_fraction="
        f"{settings.held_out():g} needs at least 2")
  held_idx, fit_idx = heldout.split(len(train_clips), fraction=settings.held_out(),
                                    seed=settings.data_seed)
  return [train_clips[i] for i in fit_idx], [train_clips[i] for i in held_idx]


def _list_all(settings: Settings, root: str, machine_types: Sequence[str],
              features) -> dict[str, tuple[dcase.MachineData, Optional[dcase.MachineData]]]:
  """Lists every machine type (and its ``--eval_root`` clips) and checks every
  file's header and every group's knn bank (and cross-fitting folds), before
  any model trains: a broken
  file or a too-small group of the last machine type is reported before the
  first one trains, not hours later. With ``--ground_truth_dir`` the unlabelled
  test clips take their labels (and domains) here too, so a missing or bad
  ground-truth file is reported as early. The waves are loaded per machine type
  (``dcase.load_audio_of``), as it trains.

  Raises:
    data_lib.DataError, audio.AudioError: naming the folder, file or group.
  """
  listed = {}
  conventions: dict[str, list[str]] = {}  # metric year -> machine types (--year=auto)
  for machine in machine_types:
    md = dcase.load_machine_type(root, machine, year=settings.year, load_audio=False)
    conventions.setdefault(_metric_year(settings, md), []).append(machine)
    if len(conventions) > 1:  # summarize() scores every machine type by one convention
      raise data_lib.DataError(
          f"{root}: the machine types' file names follow different DCASE metric conventions ("
          + "; ".join(f"{', '.join(ms)}: {'2022-2025' if y == '2022' else y}"
                      for y, ms in sorted(conventions.items()))
          + "); a run scores them all by one: pass --year, or run them apart with --machines")
    ev = None if not settings.eval_root else dcase.load_machine_type(
        settings.eval_root, machine, year=settings.year, need_train=False, load_audio=False)
    sizes = {c.path: audio.probe(c.path) for c in md.train + md.test + (ev.test if ev else [])}
    for group, (train_clips, _) in _groups(settings, md).items():
      where = f"{machine} {group}"
      if settings.held_out():
        fit, held_clips = _held_split(settings, train_clips, where=where)
        _check_bank(settings, [sizes[c.path] for c in fit],
                    [sizes[c.path] for c in held_clips], features, where=where)
        if score_norm.needs_fold_models(settings.bank()):
          crossfit.check_split(len(fit), seed=settings.data_seed, where=where)
      else:
        _check_bank(settings, [sizes[c.path] for c in train_clips], None, features,
                    where=where)
    if settings.ground_truth_dir:  # every label file read now, not after hours of training
      year = _metric_year(settings, md)
      for clips in (*(md.test_folders.values() if md.test_folders else [md.test]),
                    *([ev.test] if ev is not None else [])):
        if any(c.label is None for c in clips):
          dcase.apply_ground_truth(dcase.MachineData(machine, root, [], clips, []),
                                   settings.ground_truth_dir, need_domains=year != "2020",
                                   year=year)
    listed[machine] = (md, ev)
  return listed


def _metric_year(settings: Settings, md: dcase.MachineData) -> str:
  """The DCASE year whose metrics score ``md``: ``--year``; else 2021 for DCASE 2021's
  own layout (``source_test/``, ``target_test/``: only its sets hold them, and its
  free-form name suffixes, a valve's ``_pattern_00_no_pump``, can read as 2022+
  attribute pairs); else read from the names."""
  if settings.year != "auto":
    return dcase.metric_year(settings.year)
  if any(os.path.isdir(os.path.join(md.directory, f)) for f in dcase.DOMAIN_TEST_FOLDERS):
    return "2021"
  return dcase.detect_year([c.meta for c in md.train + md.test])


def _mark_rare(listed: dict, labels: dict, *, source: str) -> dict[str, int]:
  """Sets every listed test clip's ``rare`` flag (``data.rare_flags``; evaluation
  only) and returns, per machine type, how many normal test clips are rare.

  Raises:
    data_lib.DataError: no test clip of any machine type matches an entry.
  """
  matched, counts = 0, {}
  for machine, (md, ev) in listed.items():
    clips = md.test + (ev.test if ev is not None else [])
    flags, found = data_lib.rare_flags([c.path for c in clips], labels)
    for clip, flag in zip(clips, flags):
      clip.rare = flag
    matched += found
    data_lib.warn_unlisted(clips, source=source, where=f" of {machine}")
    counts[machine] = sum(1 for c in clips if c.label == 0 and c.rare)
  if not matched:
    example = next((os.path.basename(md.test[0].path) for md, _ in listed.values() if md.test),
                   "no test clips")
    raise data_lib.DataError(f"{source}: none of its {len(labels)} entries names a test clip "
                             f"of these machine types (e.g. {example})")
  return counts


def _input_dirs(settings: Settings) -> list[Optional[str]]:
  """--data_root, --something_else_dir, --ground_truth_dir, --eval_root, each checked
  to exist."""
  return data_lib.flag_dirs(settings, ("data_root", "something_else_dir", "ground_truth_dir", "eval_root"))


def _resolve_data(settings: Settings) -> tuple[str, Optional[str]]:
  root, se_dir, _, _ = _input_dirs(settings)
  if root is None:
    t0 = time.perf_counter()
    kwargs = dict(settings.synthetic_kwargs or {})
    root = (synthetic_dcase.ensure(seed=settings.data_seed, **kwargs) if not kwargs else
            synthetic_dcase.ensure(seed=settings.data_seed,
                                   root=os.path.join(settings.workdir, "synthetic_data"),
                                   **kwargs))
    print(f"Embedded DCASE-style data set (seed {settings.data_seed}): {root} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    if se_dir is None:
      se_dir = os.path.join(root, "something_else")
  if any(l != "re" for l in settings.losses) and se_dir is None:
    raise data_lib.DataError(
        "--something_else_dir is required for --loss=snp/bu/all with --data_root "
        "(a directory of something-else WAVs < 5 s, e.g. DCASE 2018 task 2 clips)")
  if settings.chooses_by_pseudo_anomalies() and se_dir is None:
    raise data_lib.DataError(
        f"{settings.choosing_flags()[0]}: --something_else_dir is required (its sounds make "
        "the pseudo-anomalies that choose the scoring)")
  return root, se_dir


def run(settings: Settings) -> dict:
  """Trains and evaluates every loss on every machine type; returns the results."""
  _input_dirs(settings)  # before the workdir is made: a typo leaves no empty workdir
  cli.make_workdir(settings.workdir)
  devices = jax.devices()
  if settings.num_devices is not None:  # checked against the device count by Settings
    devices = devices[:settings.num_devices]
  mesh = parallel.data_mesh(devices)
  num_devices = len(devices)
  configs = {l: settings.train_config(l, num_devices) for l in settings.losses}
  check_resumable(settings, configs)  # before the (slow) data loading
  rare_labels = (data_lib.read_rare_clips(settings.rare_clips) if settings.rare_clips
                 else None)  # read first: a wrong path fails before any loading
  device_info = parallel.log_devices(mesh)
  root, se_dir = _resolve_data(settings)
  machine_types = list(settings.machines or dcase.discover_machine_types(root))
  needs_clips = any(l != "re" for l in settings.losses)
  clips = lengths = None
  something_else = []
  if needs_clips or settings.chooses_by_pseudo_anomalies():
    something_else = data_lib.load_something_else(se_dir)
  if needs_clips:
    clips, lengths = data_lib.pad_clips(something_else)
  cfg0 = configs[settings.losses[0]]
  preset = cfg0.model_preset
  # The AEs' losses, then the PCA reference (with --loss=all, as experiments.toycar).
  methods = list(settings.losses) + (
      [REFERENCE] if settings.reference_components and len(settings.losses) > 1 else [])
  scorer = frame_scores.FrameScorer(preset.build(), preset.features)

  # test set -> loss -> machine type -> sections; "dev" (test/), or one per test*/
  # folder (dcase.MachineData.test_folders), then "eval" (--eval_root)
  per_section: dict[str, dict] = {}
  thresholds = {l: {} for l in methods}
  chosen_neighbors = {l: {} for l in methods}  # --normalization_neighbors=0
  scoring = {l: {} for l in methods}  # with --heldout_fraction: what each model scores on
  fits = {l: {} for l in settings.losses}  # with --heldout_fraction: each AE's fit_check
  train_seconds = {l: {} for l in methods}  # this run's models only (runner.train_seconds)
  crossfits = {l: {} for l in methods}  # --normalization_bank=crossfit: each model's bank
  previous_crossfits = {l: {} for l in methods}  # an earlier run's: its fold models' times
  earlier = _EarlierResults(settings.workdir)
  if earlier.path is not None:
    try:
      with open(earlier.path, encoding="utf-8") as f:
        previous = json.load(f)
      for l in methods:
        previous_crossfits[l].update(previous.get(l, {}).get("crossfit", {}))
    except (OSError, ValueError, AttributeError, TypeError) as e:  # damaged: rewritten below
      logging.warning("%s cannot be read (%s: %s); its fold models' training times are not "
                      "kept", earlier.path, type(e).__name__, e)
  written: set[str] = set()  # the submission files of this run
  years = set()
  data_info = {"data_root": os.path.abspath(root), "something_else_dir": se_dir and
               os.path.abspath(se_dir), "machine_types": {}}
  listed = _list_all(settings, root, machine_types, preset.features)
  rare_counts = (_mark_rare(listed, rare_labels, source=f"--rare_clips={settings.rare_clips}")
                 if rare_labels is not None else None)
  if rare_counts is not None:
    data_info["rare_clips"] = os.path.abspath(settings.rare_clips)
  per_rare: dict[str, dict] = {}  # like per_section: --rare_clips' metrics
  for machine in machine_types:
    md, ev = listed[machine]
    dcase.load_audio_of(md)
    year = _metric_year(settings, md)
    years.add(year)
    test_sets = dict(md.test_folders) if md.test_folders else {"dev": md.test}
    if ev is not None:
      test_sets["eval"] = dcase.load_audio_of(ev).test
    for clips_ in test_sets.values():
      features_lib.warn_short_clips([c.path for c in clips_], [c.wave for c in clips_],
                                    preset.features)
    for clips_ in test_sets.values():
      _warn_one_label_sections(clips_)
    data_info["machine_types"][machine] = {
        "train_clips": len(md.train), "test_clips": len(md.test), "sections": md.sections,
        "train_target_clips": sum(c.domain == "target" for c in md.train),
        "skipped_files": md.skipped, "metric_year": year,
        **({"test_rare_normal": rare_counts[machine]} if rare_counts is not None else {}),
        **({"test_folders": {k: len(v) for k, v in md.test_folders.items()}}
           if md.test_folders else {})}
    groups = _groups(settings, md)
    if settings.per == "section":
      orphans = sorted({c.section for t in test_sets.values() for c in t} - {
          s for _, s in groups.values()})
      if orphans:
        logging.warning("%s: test sections %s have no training clips and no model "
                        "(--per=section); they are not scored", machine, orphans)
    scores = {l: {s: {} for s in test_sets} for l in methods}
    for group, (train_clips, section) in groups.items():
      held = None
      fingerprint = data_lib.clips_fingerprint([c.path for c in train_clips])
      if settings.held_out():
        train_clips, held_clips = _held_split(settings, train_clips,
                                              where=f"{machine} {group}")
        held = heldout.HeldOut(
            fit_waves=[c.wave for c in train_clips], fit_names=[c.path for c in train_clips],
            waves=[c.wave for c in held_clips], names=[c.path for c in held_clips],
            pseudo_waves=heldout.make_pseudo([c.wave for c in held_clips], something_else,
                                             anrs_db=data_lib.PAPER_ANRS_DB, seed=settings.data_seed))
      corpus, input_stats = runner.training_inputs(
          cfg0, [c.wave for c in train_clips], [c.path for c in train_clips], mesh=mesh,
          something_else=(clips, lengths))
      check = None  # fit_check's frames of this group, taken once for every loss

      def evaluate_model(method, tag, method_scorer, method_params, model_dir,
                         bank_scores=None):
        """Calibrates one model of this group (an AE or the reference), records its
        scoring and phi, and scores the test clips of every test set."""
        scored = _calibrate(settings, method_scorer, method_params, train_clips=train_clips,
                            held=held, model_dir=model_dir, tag=tag, bank_scores=bank_scores)
        if scored.neighbors_chosen is not None:
          chosen_neighbors[method][tag] = scored.neighbors_chosen
        if scored.record is not None:
          scoring[method][tag] = scored.record
        thresholds[method][tag] = scored.phi
        _score_tests(settings, scored, method_params, test_sets, section, out=scores[method])
        return scored

      fold_models = {}  # crossfit.shared_fold_models: loss -> (params, folds)
      for loss in settings.losses:
        tag, model_dir = _model_place(settings.workdir, loss, machine, section)
        validate = None if held is None else (
            lambda p: heldout.validation_error(scorer, p, held.waves, names=held.names))
        state, _ = train_model(settings, configs[loss], corpus, mesh=mesh,
                               model_dir=model_dir, tag=tag, input_stats=input_stats,
                               validate=validate, train_clips=fingerprint)
        params = jax.device_get(state.params)
        # The model's own record, summed over resumes; None if it was not recorded.
        train_seconds[loss][tag] = runner.train_seconds(model_dir)
        bank_scores = None
        if score_norm.needs_fold_models(settings.bank()):
          t1 = time.perf_counter()
          fold_loss, fold_params, folds, fold_steps = crossfit.shared_fold_models(
              loss, bu_folds=settings.crossfit_bu_folds, cache=fold_models,
              train=lambda owner: _train_folds(
                  settings, configs.get(owner) or settings.train_config(owner, num_devices),
                  train_clips, loss=owner, group=_group_parts(machine, section),
                  something_else=(clips, lengths), mesh=mesh))
          bank_scores, record = crossfit.bank_scores(
              (scorer, params), [(scorer, p) for p in fold_params], folds,
              fit_waves=[c.wave for c in train_clips], heldout_waves=held.waves,
              names=[c.path for c in train_clips])
          record["fold_models"] = fold_loss
          record["train_seconds"] = crossfit.fold_train_seconds(
              time.perf_counter() - t1 if fold_steps else None, loss=loss, fold_loss=fold_loss,
              previous=crossfit.previous_fold_seconds(previous_crossfits[loss].get(tag),
                                                  fold_loss))
          crossfits[loss][tag] = record
        scored = evaluate_model(loss, tag, scorer, params, model_dir, bank_scores)
        artifact.store_calibration(model_dir, _calibration(
            settings, scored.phi, scored.train_scores, scored.phi_paths, window=scored.window,
            normalization=scored.normalization), step=configs[loss].total_steps, state=state)
        if held is not None:  # the AE against a PCA of its code size (label-free)
          check = check or fit_check.FitCheck([c.wave for c in train_clips], held.waves,
                                              preset.features)
          fits[loss][tag] = fit_check.model_fit(check, preset, params)
          print(f"[{tag}] {fit_check.describe(fits[loss][tag])}", flush=True)
      if REFERENCE in methods:  # the PCA reference: fitted on the same clips, scored alike
        tag, ref_dir = _model_place(settings.workdir, REFERENCE, machine, section)
        os.makedirs(ref_dir, exist_ok=True)
        t0 = time.perf_counter()
        pca = reference_lib.PCADetector(preset.features,
                                        components=settings.reference_components)
        pca.fit([c.wave for c in train_clips], names=[c.path for c in train_clips])
        bank_scores = None
        if score_norm.needs_fold_models(settings.bank()):  # PCAs of the other folds' clips
          folds = crossfit.split(len(train_clips), seed=settings.data_seed)
          fold_models = crossfit.pca_fold_models(
              preset.features, components=settings.reference_components,
              waves=[c.wave for c in train_clips], folds=folds)
          bank_scores, crossfits[REFERENCE][tag] = crossfit.bank_scores(
              (reference_lib.PCAScorer(pca), None), fold_models, folds,
              fit_waves=[c.wave for c in train_clips], heldout_waves=held.waves,
              names=[c.path for c in train_clips])
        train_seconds[REFERENCE][tag] = round(time.perf_counter() - t0, 1)
        evaluate_model(REFERENCE, tag, reference_lib.PCAScorer(pca), None, ref_dir,
                       bank_scores)
    # Files and metrics of this machine type.
    hist, hist_thresholds = {}, {}
    for loss in methods:
      for set_name, test_clips in test_sets.items():
        out_dir = _set_dir(settings.workdir, loss, set_name)
        done = [c for c in test_clips if c.path in scores[loss][set_name]]
        values = np.array([scores[loss][set_name][c.path][0] for c in done])
        decisions = np.array([scores[loss][set_name][c.path][1] for c in done], dtype=int)
        for sec, domain, idx in submission_groups(done, year):
          earlier.retire()  # before the first file of this run is written
          written.update(write_submission(out_dir, machine, sec, [done[i].name for i in idx],
                                          values[idx], decisions[idx], year=year,
                                          domain=domain))
        sections = _section_results(done, values, decisions, year)
        if sections:
          per_section.setdefault(set_name, {l: {} for l in methods})[loss][
              machine] = sections
        rare = _rare_results(done, values, decisions) if rare_counts is not None else None
        if rare:
          per_rare.setdefault(set_name, {l: {} for l in methods})[loss][machine] = rare
        if set_name == next(iter(test_sets)):  # test/, or the first test*/ folder
          groups_ = {}
          for c, v in zip(done, values):
            groups_.setdefault(_group_name(c), []).append(v)
          hist[loss.upper()] = {k: np.array(v) for k, v in sorted(groups_.items())}
          phis = [v for k, v in thresholds[loss].items() if k.split("/")[1] == machine]
          if len(phis) == 1:
            hist_thresholds[loss.upper()] = phis[0]
    if any(len(h) for h in hist.values()):
      plots.plot_score_histogram(
          os.path.join(settings.workdir, f"score_histogram_{machine}.png"), hist,
          thresholds=hist_thresholds)
    print(f"[{machine}] done", flush=True)

  if len(years) > 1:
    logging.warning("machine types follow different metric conventions %s; using %s",
                    sorted(years), max(years))
  year = max(years)
  results: dict[str, Any] = {
      "settings": fileio.to_json(settings, default=str),
      "data": data_info, "devices": device_info, "metric_year": year,
      "official_score_formula": dcase_metrics.__doc__.split("Official score")[1].split(
          "References")[0].strip() if dcase_metrics.__doc__ else ""}
  tables = []  # what is printed, also written to results.txt
  dev_sets = [s for s in per_section if s != "eval"]  # "dev", or one per test*/ folder
  set_names = dev_sets + [s for s in per_section if s == "eval"]
  if len(dev_sets) > 1:
    results["test_folders"] = dev_sets
  for loss in methods:
    entry = {"thresholds": thresholds[loss], "train_seconds": train_seconds[loss],
             "score_normalization": {"kind": settings.normalization()[0]} if
             settings.normalization()[0] == "none" else {
                 "kind": settings.normalization()[0],
                 "neighbors": settings.neighbors, "file": score_norm.FILE_NAME}}
    if chosen_neighbors[loss]:
      entry["score_normalization"]["neighbors_chosen"] = chosen_neighbors[loss]
    if scoring[loss]:
      entry["scoring"] = scoring[loss]
    if fits.get(loss):
      entry["fit"] = fits[loss]
    if score_norm.needs_fold_models(settings.bank()):
      entry["crossfit"] = crossfits[loss]
    for set_name in set_names:
      if per_section[set_name][loss]:
        entry[set_name] = dcase_metrics.summarize(per_section[set_name][loss], year=year)
        if entry[set_name]["official_score_missing"]:
          logging.warning("%s, %s: the official score leaves out %d value(s) that are n/a (%s); "
                          "it is not comparable with a score over all of them", loss, set_name,
                          len(entry[set_name]["official_score_missing"]),
                          ", ".join(entry[set_name]["official_score_missing"][:4]))
        if per_rare.get(set_name, {}).get(loss):
          entry[set_name]["rare_normal"] = dcase_metrics.summarize_rare(
              per_rare[set_name][loss])
    if not any(s in entry for s in dev_sets):
      entry["dev"] = {"machine_types": {}, "official_score": None}
    results[loss] = entry
    for set_name in set_names:  # the evaluation set too, when its labels were given
      if entry.get(set_name, {}).get("machine_types"):
        fileio.write_csv(os.path.join(_set_dir(settings.workdir, loss, set_name), "result.csv"),
                         dcase_metrics.result_rows(entry[set_name], year=year))
        what = {"dev": "development test set", "eval": "evaluation set"}.get(
            set_name, f"test folder {set_name}")
        tables.append(format_result(entry[set_name], year=year, title=(
            f"== {loss.upper()} ({what}, DCASE {year}{'+' if year == '2022' else ''} "
            "metrics) ==")))
        if len(dev_sets) == 1:  # several folders: the comparisons below, these in results.txt
          print(tables[-1], flush=True)
  others = _other_submission_files(settings.workdir, methods, written)
  if others:
    logging.warning("%d submission file(s) under %s are an earlier run's, not this one's "
                    "(e.g. %s); results.json describes only the %d this run wrote. Move them "
                    "away before submitting the folder.", len(others), settings.workdir,
                    os.path.relpath(others[0], settings.workdir), len(written))
    results["earlier_files"] = [os.path.relpath(p, settings.workdir) for p in others]
  earlier.retire()  # a run that wrote no submission file still replaces the earlier results
  fileio.write_csv(os.path.join(settings.workdir, "summary.csv"),
                   _summary_rows(results, methods, year, set_names))
  fileio.write_json(os.path.join(settings.workdir, "results.json"), results)
  evaluated = [s for s in set_names
               if any(results[l].get(s, {}).get("machine_types") for l in methods)]
  for set_name in evaluated:
    tables.append({"dev": "", "eval": "-- evaluation set\n"}.get(
        set_name, f"-- test folder {set_name}\n")
                  + format_comparison(results, methods, year=year, set_name=set_name))
    print(tables[-1], flush=True)
  if len([s for s in evaluated if s != "eval"]) > 1:
    print("(per-section tables of every loss and test folder: results.txt)", flush=True)
  if not evaluated:
    print("No labelled test clips: scores and decisions written, nothing evaluated "
          "(pass --ground_truth_dir for an evaluation set).", flush=True)
  text_path = os.path.join(settings.workdir, "results.txt")
  if evaluated:
    fileio.atomic_write(text_path, "\n".join(tables) + "\n")
  elif os.path.exists(text_path):  # an earlier run's tables no longer hold
    os.remove(text_path)
  earlier.remove()
  print(f"Results in {os.path.join(settings.workdir, 'results.json')}"
        + (" (the tables: results.txt)" if evaluated else ""), flush=True)
  return results
