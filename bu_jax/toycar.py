"""The toy-car objective experiment (paper section 4.2), end to end.

``run(settings)`` loads the data (a real layout of ``bu_jax.data`` or the
embedded synthetic set), trains one autoencoder per loss (RE, SNP, BU) from the
same initial parameters with the data-parallel step of ``bu_jax.train``,
checkpoints and resumes each of them in ``<workdir>/<loss>/``, then scores the
test clips and writes, into the workdir:

- ``results.json``: for each loss L, ``results[L]["auc"][condition]``,
  ``["pauc"]``, ``["pauc_dcase"]``, the rare-normal metrics
  (``["rare_normal"]``: AUC of anomalous clips against the rare-normal clips
  only, and the false-positive rates on frequent- and rare-normal clips at the
  calibrated threshold), ``["threshold"]``; plus ``settings`` and ``data``;
- per loss, DCASE-style ``<loss>/anomaly_score_<condition>.csv`` and
  ``<loss>/decision_result_<condition>.csv``, ``<loss>/metrics.jsonl`` (per
  step) and ``<loss>/checkpoints/``;
- ``roc.png``, ``scores_over_time.png`` and ``score_histogram.png``.

Clip scores are the maximum of the frame scores (eq. 11; ``reduce="mean"`` as
an option). With ``score_normalization="knn"`` every frame score is first
divided by the mean score of its k nearest training frames in the model's code
space; with "knn_z" it is the local z-score of its log score among them, on
knn's scale (``bu_jax.score_norm``; the bank, fitted on the training clips that are
not held out, or with ``normalization_bank="heldout"`` on the held-out clips
(each of them normalized by the others' bank for phi and the pseudo-anomalies),
is saved as ``<loss>/score_normalizer.npz`` and named in the
calibration, so ``experiments.score`` applies it too); "auto" keeps raw or
knn_z scores, whichever gives the held-out clips' pseudo-anomalies
(``bu_jax.pseudo_anomaly``) the higher AUC. With ``score_window`` W > 1 the
clip score is the maximum of the means of W consecutive frame scores
(``evaluate.clip_score``); ``score_window=0`` chooses W among one frame and
0.25-2 s by the same AUC (jointly with "auto"; the longest window within one
standard error of the best, ``heldout.settle_window``). The threshold phi of
eq. (4) is the 0.9 quantile of a gamma distribution (location 0,
``evaluate.fit_threshold``) fitted to the clip scores of held-out normal
*training* clips (never seen in training, nor in the test set), as the DCASE
baselines do; it is stored with the final checkpoint for
``experiments.score``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Optional, Sequence

from absl import logging
import jax
import numpy as np

from bu_jax import artifact
from bu_jax import cli
from bu_jax import crossfit
from bu_jax import data as data_lib
from bu_jax import evaluate
from bu_jax import features as features_lib
from bu_jax import fit_check
from bu_jax import fileio
from bu_jax import losses as losses_lib
from bu_jax import reference as reference_lib
from bu_jax import parallel
from bu_jax import plots
from bu_jax import frame_scores
from bu_jax import heldout
from bu_jax import pseudo_anomaly
from bu_jax import runner
from bu_jax import score_norm
from bu_jax import synthetic
from bu_jax import train as train_lib

# Presets: values of Settings fields; what a preset leaves out is
# TrainConfig's default, the paper's (section 4.2.2: FCN64-large, 200 epochs
# of 500 mini-batches, AMSGrad 1e-4 constant for 100 epochs then linear decay
# to 1/100, 10 segments per mixture).
PRESETS = {
    "paper": {},
    # Small enough for a 2-core laptop CPU (all three losses and the PCA in about 1.5 min). The AE
    # standardizes its input with training statistics: on raw log-mel frames it
    # explained less of the held-out frames than a 16-component PCA
    # (benchmarks.ae_fit; README, "Measured on the embedded data").
    "demo": dict(model="fcn40-small", epochs=12, steps_per_epoch=100,
                 decay_start_epoch=6, learning_rate=1e-3, steps_per_call=10,
                 standardize_input=True),
    # Real recordings on a 2-core CPU (< 8 min per loss): cli.CPU_PRESET, whose knn
    # bank (chosen by pseudo-anomalies) trains RE's and SNP's fold models, half a
    # training more each, none for BU (README, "Real recordings").
    "cpu": dict(cli.CPU_PRESET),
}

PAPER_FIGURE4 = ("Figure 4 of the paper reports, for every AE and ANR, "
                 "AUC ordered BU > SNP > RE; its values are only given as a bar chart.")

@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings(cli.ScoringSettings):
  """What ``run`` does, and the flags of ``experiments.toycar`` (``cli.define_flags``):
  the training and scoring settings of ``cli.ScoringSettings`` and these."""

  PRESETS = PRESETS

  preset: str = cli.setting(
      "paper", choices=sorted(PRESETS),
      help="paper: section 4.2.2 schedule (GPU/TPU); demo: 1.2-3.5 min on a 2-core CPU "
      "(embedded set); cpu: real recordings on a 2-core CPU (standardized AE input, longer "
      "schedule, scores chosen by --score_normalization=auto, the knn bank by "
      "--normalization_bank=auto).")
  data_dir: Optional[str] = cli.setting(
      None, help="Data set root (DCASE 2020, DCASE 2021+ or the paper's mixing layout); "
      "default: embedded synthetic set.")
  anomaly_dir: Optional[str] = cli.setting(
      None, help="Anomalous sounds (WAV, FLAC, Ogg, Opus, MP3, AIFF, W64, RF64) mixed into normal test clips "
      "(mixing layout).")
  noise_dir: Optional[str] = cli.setting(
      None, help="Noise recordings (WAV, FLAC, Ogg, Opus, MP3, AIFF, W64, RF64) mixed at --snr_db "
      "(mixing layout).")
  layout: str = cli.setting("auto", choices=("auto", *data_lib.LAYOUTS),
                            help="Layout of --data_dir.")
  snr_db: float = cli.setting(0.0, help="SNR of the noise mixed into machine clips (mixing).")
  anrs_db: Sequence[float] = data_lib.PAPER_ANRS_DB
  data_seed: int = cli.setting(0, minimum=0, help="Seed of the synthetic set and data splits.")
  compute_dtype: str = cli.setting(
      train_lib.TrainConfig.compute_dtype, choices=train_lib.COMPUTE_DTYPES,
      help="The AE's matrix products in training (bfloat16: GPU/TPU); parameters, features, "
      "scores and the KDE stay float32.")
  bandwidth: Optional[str] = cli.setting(
      None, choices=train_lib.BANDWIDTHS,
      help="BU's KDE band-width: fixed (--sigma, the paper) or contrast (per batch, --sigma "
      "times the factor at which the batch's densities differ most). Default: the preset's.")
  kde_memory: Optional[int] = cli.setting(
      None, minimum=0, help="BU: also sum the KDE over the normal frames of this many recent "
      "steps (256 per step, at most 1024 steps; 0: the batch only, the paper). Default: the "
      "preset's.")
  kde_exclude: Optional[str] = cli.setting(
      None, choices=train_lib.KDE_EXCLUDE,
      help="BU: 'segment' leaves a frame's own 3-s normal segment out of its KDE sum (only "
      "recurrence in other recordings makes it common); 'none': eq. (15). Default: the "
      "preset's.")
  tilt: Optional[float] = cli.setting(
      None, minimum=0, help="BU: also weight each normal frame by exp(t (A - max A) / mean A) "
      "over its batch (losses.tilted_weights: towards the frames fitted worst, section 3.1's "
      "maximum smoothed); 0: eq. (16) alone, the paper. Default: the preset's.")
  segment_sampling: Optional[float] = cli.setting(
      None, minimum=0, help="Draw the normal segments of each mixture with probability "
      "proportional to K^-t, K eq. (15) over the segments' mean features (kde."
      "sampling_probabilities: rare-mode segments drawn more often; every loss); 0: uniformly, "
      "the paper. Default: the preset's.")
  heldout_fraction: float = cli.setting(
      0.1, help="Fraction of the training clips held out of training (at least one): phi "
      "(eq. 4) is fitted to their clip scores, and the pseudo-anomalies are made from them. "
      "A training setting (the model trains on the rest).")

  def __post_init__(self):
    super().__post_init__()
    if not 0 < self.heldout_fraction < 1:
      raise ValueError(f"--heldout_fraction must lie in (0, 1), got {self.heldout_fraction}")


@dataclasses.dataclass
class Data:
  dataset: data_lib.Dataset
  fit_waves: list
  fit_paths: list
  heldout_waves: list
  heldout_paths: list
  something_else: list
  description: dict
  # ANR (dB) -> pseudo_anomaly.mix of the held-out clips at that ANR
  pseudo_waves: dict = dataclasses.field(default_factory=dict)

  @property
  def held(self) -> heldout.HeldOut:
    """The clips the models train on, the held-out ones and their pseudo-anomalies."""
    return heldout.HeldOut(fit_waves=self.fit_waves, waves=self.heldout_waves,
                           names=self.heldout_paths, pseudo_waves=self.pseudo_waves)


def _input_dirs(settings: Settings) -> list[Optional[str]]:
  """--data_dir, --something_else_dir, --noise_dir, --anomaly_dir, each checked to exist."""
  return data_lib.flag_dirs(settings, ("data_dir", "something_else_dir", "noise_dir", "anomaly_dir"))


def load_data(settings: Settings) -> Data:
  """Loads (or generates) the data set and splits off held-out normal clips."""
  data_dir, something_else_dir, noise_dir, anomaly_dir = _input_dirs(settings)
  if data_dir is None:
    t0 = time.perf_counter()
    data_dir = synthetic.ensure(seed=settings.data_seed)
    print(f"Embedded synthetic data set (seed {settings.data_seed}): {data_dir} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    if something_else_dir is None:
      something_else_dir = os.path.join(data_dir, "something_else")
  needs_clips = any(l != "re" for l in settings.losses)
  if needs_clips and something_else_dir is None:
    raise data_lib.DataError(
        "--something_else_dir is required for --loss=snp/bu/all with --data_dir "
        "(a directory of something-else sounds < 5 s, e.g. DCASE 2018 task 2 clips)")
  if settings.chooses_by_pseudo_anomalies() and something_else_dir is None:
    flags, count = settings.choosing_flags()
    raise data_lib.DataError(f"{flags} need{'' if count > 1 else 's'} "
                             "--something_else_dir (its sounds make the pseudo-anomalies that "
                             "choose the scores)")
  # Read first, so a wrong path fails before minutes of loading.
  rare_labels = data_lib.read_rare_clips(settings.rare_clips) if settings.rare_clips else None
  dataset = data_lib.load_dataset(
      data_dir, layout=settings.layout, noise_dir=noise_dir, anomaly_dir=anomaly_dir,
      snr_db=settings.snr_db, anrs_db=tuple(settings.anrs_db), seed=settings.data_seed)
  data_lib.check_conditions(dataset.test)  # before training: each AUC needs both labels
  features_lib.warn_short_clips([c.path for c in dataset.test], [c.wave for c in dataset.test],
                                settings.model_preset().features)
  if rare_labels is not None:
    dataset = data_lib.mark_rare(dataset, rare_labels,
                                 source=f"--rare_clips={settings.rare_clips}")
  n = len(dataset.train)
  if n < 2:
    raise data_lib.DataError(f"{data_dir}: {n} training clip(s); need at least 2 "
                             "(some are held out to calibrate the threshold)")
  held, fit = heldout.split(n, fraction=settings.heldout_fraction, seed=settings.data_seed)
  n_held = len(held)
  something_else = (data_lib.load_something_else(something_else_dir)
                    if something_else_dir else [])
  if needs_clips and not something_else:
    raise data_lib.DataError(f"{something_else_dir}: no usable something-else clips (< 5 s)")
  heldout_waves = [dataset.train[i] for i in held]
  # Label-free: the held-out clips with something-else sounds mixed in.
  pseudo = heldout.make_pseudo(heldout_waves, something_else, anrs_db=settings.anrs_db,
                               seed=settings.data_seed)
  if settings.chooses_by_pseudo_anomalies() and not pseudo:
    raise data_lib.DataError(f"{something_else_dir}: no usable something-else clips (< 5 s) "
                             f"for the pseudo-anomalies of {settings.choosing_flags()[0]}")
  labels = [c.label for c in dataset.test]
  description = {
      "data_dir": os.path.abspath(data_dir), "layout": dataset.layout,
      "something_else_dir": something_else_dir and os.path.abspath(something_else_dir),
      "train_clips": len(fit), "heldout_clips": n_held,
      "test_clips": len(dataset.test), "test_anomalous": int(np.sum(labels)),
      "test_rare_normal": int(sum(1 for c in dataset.test if c.label == 0 and c.rare)),
      "conditions": sorted({c.condition for c in dataset.test}),
      "something_else_clips": len(something_else),
      "pseudo_anomalies": {"anrs_db": list(pseudo), "per_heldout_clip": pseudo_anomaly.PER_CLIP,
                           "clips_per_anr": n_held * pseudo_anomaly.PER_CLIP} if pseudo else None,
  }
  logging.info("data: %s", description)
  return Data(dataset=dataset, fit_waves=[dataset.train[i] for i in fit],
              fit_paths=[dataset.train_paths[i] for i in fit],
              heldout_waves=heldout_waves,
              heldout_paths=[os.path.abspath(dataset.train_paths[i]) for i in held],
              something_else=something_else, description=description, pseudo_waves=pseudo)


# Raised by ``train_one`` (``runner.train_or_resume``, ``runner.check_resumable``).
Interrupted = runner.Interrupted
SettingsMismatchError = runner.SettingsMismatchError


def _training_metadata(settings: Settings, loss: str, *,
                       train_clips: Optional[str] = None,
                       fold: Optional[str] = None) -> artifact.ModelMetadata:
  """What the checkpoints of ``loss`` record about how the model is trained.

  ``train_config`` and ``data`` hold every setting that changes the trained
  model, and ``train_clips`` (``data.clips_fingerprint`` of the training
  folder, when known) the clips; evaluation settings (``reduce``,
  ``rare_clips``, the threshold quantile, the reference detector, the score
  normalization, the test anomalies) are not among them.
  """
  path = lambda p: None if p is None else os.path.abspath(p)
  data = {"data_dir": path(settings.data_dir), "noise_dir": path(settings.noise_dir),
          "layout": settings.layout, "data_seed": settings.data_seed,
          "snr_db": settings.snr_db, "heldout_fraction": settings.heldout_fraction}
  if loss != "re":  # RE trains without the something-else clips
    data["something_else_dir"] = path(settings.something_else_dir)
  if train_clips is not None:
    data["train_clips"] = train_clips
  if fold is not None:  # a model of the cross-fitted bank: "fold k of n" (``train_folds``)
    data["crossfit_fold"] = fold
  return artifact.ModelMetadata.for_training(settings.train_config(loss), data=data)


_FLAG_NAMES = {f.name for f in dataclasses.fields(Settings)} | {"loss", "model"}
EVALUATION_FLAGS = ("reduce", "rare_clips", "reference_components", "score_normalization",
                    "normalization_neighbors", "normalization_bank", "score_window")


def _model_dir(settings: Settings, loss: str, fold: Optional[tuple[int, int]] = None) -> str:
  """<workdir>/<loss>, or <workdir>/<loss>/crossfit/fold<k> for fold (k, n) of the
  cross-fitted bank (``train_folds``)."""
  top = os.path.join(settings.workdir, loss)
  return top if fold is None else os.path.join(top, CROSSFIT_DIR, f"fold{fold[0]}")


def check_resumable(settings: Settings, loss: str, *, train_clips: Optional[str] = None,
                    fold: Optional[tuple[int, int]] = None) -> None:
  """Refuses to resume or re-evaluate a model trained with other settings.

  If ``<workdir>/<loss>`` holds a checkpoint, the training settings stored in
  its metadata (``_training_metadata``) must equal this run's: loss, model,
  seed, schedule, batch shape, sigma, band-width, lambda, eps, compute dtype
  and the training data. Settings that only change evaluation may differ.
  Checkpoints written before the data settings were stored are compared on
  what they hold (``runner.check_resumable``). With ``train_clips``
  (``data.clips_fingerprint``) the training folder must also hold the clips it
  held then: otherwise the held-out split would calibrate phi on clips the
  model trained on. ``fold`` (k, n): the fold model k of n of the cross-fitted
  bank instead (``_model_dir``).

  Raises:
    SettingsMismatchError: the differing settings, with both values and how
      to proceed.
    checkpoint.CheckpointError: the checkpoint's metadata cannot be read.
  """
  runner.check_resumable(_model_dir(settings, loss, fold),
                         _fold_metadata(settings, loss, train_clips, fold),
                         flag_names=_FLAG_NAMES,
                         evaluation_flags=EVALUATION_FLAGS)


def _fold_metadata(settings: Settings, loss: str, train_clips: Optional[str],
                   fold: Optional[tuple[int, int]]) -> artifact.ModelMetadata:
  """``_training_metadata``, with "fold k+1 of n" for fold model (k, n)."""
  return _training_metadata(settings, loss, train_clips=train_clips,
                            fold=None if fold is None else f"{fold[0] + 1} of {fold[1]}")


def train_one(settings: Settings, loss: str, corpus, *, mesh, input_stats=None,
              validate=None, train_clips: Optional[str] = None,
              fold: Optional[tuple[int, int]] = None
              ) -> tuple[Any, train_lib.TrainConfig, int]:
  """Trains (or resumes, or finds finished) the model of ``loss`` in <workdir>/<loss>.

  ``input_stats`` (mean, std of the training features) initialize the
  standardization of an AE with ``standardize_input``; a resumed run takes
  them from its checkpoint. ``validate(params)`` (the held-out clips' mean
  frame score, ``heldout.validation_error``) is recorded along the way
  (``<workdir>/<loss>/validation.jsonl``). Returns the final state, its config
  and the number of steps trained now (``runner.train_or_resume``).
  ``train_clips`` (``data.clips_fingerprint``) is stored and checked on a resume.
  ``fold`` (k, n): trains fold model k of n of the cross-fitted bank instead
  (``train_folds``), in ``<workdir>/<loss>/crossfit/fold<k>``.
  """
  config = settings.train_config(loss)
  check_resumable(settings, loss, train_clips=train_clips, fold=fold)
  init = runner.initial_state(config, mesh=mesh, input_stats=input_stats)
  state, trained = runner.train_or_resume(
      config, corpus, mesh=mesh, model_dir=_model_dir(settings, loss, fold),
      metadata=_fold_metadata(settings, loss, train_clips, fold), init_state=init,
      checkpoint_every=settings.checkpoint_every,
      tag=loss if fold is None else f"{loss} fold {fold[0] + 1}/{fold[1]}",
      validate=validate, progress=settings.progress)
  return state, config, trained


def _out_of_fold(scorer, params, fold_models, folds, data: Data) -> tuple[np.ndarray, dict]:
  """The bank scores of ``--normalization_bank=crossfit`` (``crossfit.bank_scores``)
  of the main model (``scorer``, ``params``) and the record for results.json."""
  return crossfit.bank_scores((scorer, params), fold_models, folds, fit_waves=data.fit_waves,
                              heldout_waves=data.heldout_waves, names=data.fit_paths)


def train_folds(settings: Settings, loss: str, data: Data, *, mesh, something_else
                ) -> tuple[list[Any], list[list[int]], int]:
  """The fold models of ``--normalization_bank=crossfit``: for each fold k of
  ``crossfit.split`` a model of ``loss`` (the run calls it with
  ``crossfit.fold_loss``: RE's serve BU) with the run's training settings, trained
  (or resumed, or found finished) on the other folds' clips in
  ``<workdir>/<loss>/crossfit/fold<k>``. ``something_else`` is the run's
  ``(clips, lengths)`` of ``data_lib.pad_clips`` (or ``(None, None)``).
  Their epochs are ``crossfit.fold_steps_per_epoch`` long (``--crossfit_schedule``).
  Returns their parameters, the folds and the steps trained now."""
  fold_settings = _fold_settings(settings)
  config = fold_settings.train_config(loss)
  folds = crossfit.split(len(data.fit_waves), seed=settings.data_seed)
  params, trained = [], 0
  for k in range(len(folds)):
    idx = crossfit.others(folds, k)
    waves, paths = [data.fit_waves[i] for i in idx], [data.fit_paths[i] for i in idx]
    corpus, stats = runner.training_inputs(config, waves, paths, mesh=mesh,
                                           something_else=something_else)
    with crossfit.schedule_hint():
      state, _, steps = train_one(fold_settings, loss, corpus, mesh=mesh, input_stats=stats,
                                  train_clips=data_lib.clips_fingerprint(paths),
                                  fold=(k, len(folds)))
    params.append(jax.device_get(state.params))
    trained += steps
  return params, folds, trained


CROSSFIT_DIR = "crossfit"  # <workdir>/<loss>/crossfit/fold<k>: the fold models


def _fold_settings(settings: Settings) -> Settings:
  """The settings of the fold models: epochs ``crossfit.fold_steps_per_epoch`` long."""
  return dataclasses.replace(settings, steps_per_epoch=crossfit.fold_steps_per_epoch(
      settings.resolved("steps_per_epoch"), schedule=settings.crossfit_schedule))


def check_fold_models(settings: Settings) -> None:
  """Refuses, before any training, fold models of the cross-fitted bank trained
  with other settings (``check_resumable`` on every ``<workdir>/<owner>/crossfit/fold<k>``
  that holds a checkpoint, ``owner`` the ``crossfit.fold_loss`` of each loss: a BU
  run borrows RE's). Their clips and fold numbers are checked when each is
  trained or loaded (``train_folds``); without this check a mismatch would stop
  the run only after its main models had trained.

  Raises:
    SettingsMismatchError: as ``check_resumable``, with the flag that
      re-evaluates fold models of another schedule (``crossfit.schedule_hint``).
  """
  if not score_norm.needs_fold_models(settings.bank()):
    return
  fold_settings = _fold_settings(settings)
  owners = sorted({crossfit.fold_loss(loss, bu_folds=settings.crossfit_bu_folds)
                   for loss in settings.losses})
  for owner in owners:
    metadata = _training_metadata(fold_settings, owner)
    top = os.path.join(settings.workdir, owner, CROSSFIT_DIR)
    names = sorted(os.listdir(top)) if os.path.isdir(top) else []
    for name in names:
      if name.startswith("fold"):
        with crossfit.schedule_hint():
          runner.check_resumable(os.path.join(top, name), metadata, flag_names=_FLAG_NAMES,
                                 evaluation_flags=EVALUATION_FLAGS)


def _check_bank(settings: Settings, data: Data) -> None:
  """Refuses a ``--normalization_bank`` the split cannot fill, before any training.

  Raises:
    data_lib.DataError: the held-out bank with fewer than 2 held-out clips, the
      cross-fitted one with fewer than 2 clips per fold, or a bank too small
      for the normalization or its k (naming the flags).
  """
  if settings.normalization()[0] == "none":
    return
  where = settings.data_dir or "the embedded set"
  if settings.bank() == score_norm.HELDOUT_BANK and len(data.heldout_waves) < 2:
    raise data_lib.DataError(f"{where}: --normalization_bank=heldout needs at least 2 held-out "
                             f"clips, got {len(data.heldout_waves)} (raise --heldout_fraction)")
  if score_norm.needs_fold_models(settings.bank()):
    crossfit.check_split(len(data.fit_waves), seed=settings.data_seed, where=where)
  heldout_bank = settings.bank() == score_norm.HELDOUT_BANK
  try:
    score_norm.check_bank_size(
        *settings.normalization(),
        [len(w) for w in (data.heldout_waves if heldout_bank else data.fit_waves)],
        settings.model_preset().features, leave_one_out=heldout_bank)
  except ValueError as e:
    raise data_lib.DataError(f"{where}: {e}") from None


def _read_results(path: str) -> dict[str, Any]:
  """The per-loss entries of an earlier ``results.json``; a damaged file (not
  JSON, not an object, or a loss entry that is not one) is moved aside to ``results.json.damaged`` with a warning, and results start afresh."""
  if not os.path.exists(path):
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      stored = json.load(f)
    if not isinstance(stored, dict):
      raise ValueError(f"a JSON {type(stored).__name__}, not an object")
    bad = [k for k in losses_lib.LOSSES if k in stored and not isinstance(stored[k], dict)]
    if bad:
      raise ValueError(f"its {bad[0]!r} entry is a JSON {type(stored[bad[0]]).__name__}, "
                       "not an object")
  except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    aside = path + ".damaged"
    logging.warning("%s cannot be read (%s: %s); moved to %s, starting fresh results.", path,
                    type(e).__name__, e, aside)
    try:
      os.replace(path, aside)
    except OSError as e2:
      logging.warning("could not move %s aside: %s", path, e2)
    return {}
  return {k: v for k, v in stored.items() if k in losses_lib.LOSSES}


# Settings that change nothing an entry of results.json holds (where it is, how
# fast it ran, which losses the run evaluated, the reference entry it rebuilds).
_NOT_IN_RESULTS = ("losses", "workdir", "num_devices", "checkpoint_every", "progress",
                   "steps_per_call", "reference_components")


def _as_stored(value) -> Any:
  """``value`` as it reads back from results.json (tuples as lists, NaN as null)."""
  return json.loads(json.dumps(fileio.to_json(value), allow_nan=False))


def _keep_comparable(path: str, entries: dict[str, Any], *, settings: dict, description: dict,
                     evaluating: Sequence[str]) -> dict[str, Any]:
  """The entries of an earlier ``results.json`` (``path``) that this run keeps.

  An entry of a loss this run evaluates is replaced as soon as its evaluation
  starts. An entry of another loss is kept only when the earlier run's settings
  and data equal this run's, but for those of ``_NOT_IN_RESULTS`` and those the
  loss does not read (``train.UNUSED_SETTINGS``: RE's entry stands whatever
  BU's ``--sigma``), so that every entry of the file is what this run would
  have written; the others are dropped with a warning (their model and files
  stay in ``<workdir>/<loss>/``).
  """
  others = [loss for loss in entries if loss not in evaluating and loss != REFERENCE]
  if not others:
    return entries
  try:
    with open(path, encoding="utf-8") as f:
      stored = json.load(f)
  except (OSError, ValueError):
    stored = {}
  now = {k: v for k, v in _as_stored(settings).items() if k not in _NOT_IN_RESULTS}
  before = stored.get("settings")
  before = ({k: v for k, v in before.items() if k not in _NOT_IN_RESULTS}
            if isinstance(before, dict) else None)
  changed = [] if before is None else sorted(
      k for k in set(now) | set(before) if now.get(k) != before.get(k))
  same_data = stored.get("data") == _as_stored(description)
  dropped = {}  # loss -> why
  for loss in others:
    differ = [k for k in changed if k not in train_lib.UNUSED_SETTINGS.get(loss, ())]
    if before is None:
      dropped[loss] = "its settings are not recorded"
    elif differ:
      dropped[loss] = ("evaluated with other settings: " + ", ".join(differ[:4])
                       + (", ..." if len(differ) > 4 else ""))
    elif not same_data:
      dropped[loss] = "evaluated on other data"
  for why in dict.fromkeys(dropped.values()):
    which = [l for l in dropped if dropped[l] == why]
    logging.warning("%s: dropped the entries of %s from an earlier run (%s); their models and "
                    "files stay in %s. Run with --loss=%s to evaluate them with these settings.",
                    path, ", ".join(l.upper() for l in which), why,
                    ", ".join(f"{l}/" for l in which), ",".join(which))
  return {k: v for k, v in entries.items() if k not in dropped}


def _write_results(workdir: str, results: dict[str, Any]) -> None:
  """Writes ``results.json`` and, from it, ``results.txt`` (the table of every
  method it holds), so the two agree after every write, a killed run's too."""
  fileio.write_json(os.path.join(workdir, "results.json"), results)
  methods = [m for m in (*losses_lib.LOSSES, REFERENCE) if m in results]
  text = os.path.join(workdir, "results.txt")
  if methods:
    fileio.atomic_write(text, format_table(results, methods) + "\n")
  elif os.path.exists(text):
    os.remove(text)


def _evaluate_scorer(settings: Settings, scorer, params, data: Data, out_dir: str,
                     feature_config, bank_scores: Optional[np.ndarray] = None
                     ) -> tuple[dict, dict]:
  """Held-out threshold (eq. 4), test clip scores (eq. 11), metrics and CSVs of one
  detector: an AE's ``FrameScorer`` or the PCA reference, evaluated the same way,
  on scores normalized as ``settings.normalization()`` says and the clip-score window ``settings.clip_window()`` (``heldout.choose_scoring``)."""
  os.makedirs(out_dir, exist_ok=True)
  kind, neighbors = settings.normalization()
  scorer, normalization, clip_record, held_scores, pseudo_auc = heldout.choose_scoring(
      scorer, params, data.held, out_dir, kind=kind, neighbors=neighbors,
      window=settings.clip_window(), reduce=settings.reduce, bank=settings.bank(),
      bank_scores=bank_scores)
  threshold = evaluate.fit_threshold(held_scores, quantile=settings.threshold_quantile)
  test = data.dataset.test
  window = clip_record["window_frames"]
  short, note = features_lib.short_window_note([len(c.wave) for c in test], feature_config,
                                               window=window)
  if note:
    logging.warning("%s: %s", out_dir, note)
    clip_record = {**clip_record, "clips_shorter_than_window": short}
  frames, clip_scores = heldout.score_clips(scorer, params, ((c.wave, c.path) for c in test),
                                     reduce=settings.reduce, windows=(window,))
  clip_scores = clip_scores[window]
  results = evaluate.evaluate_conditions(test, clip_scores, threshold=threshold)
  results["threshold"] = float(threshold)
  results["heldout_clip_scores"] = held_scores.tolist()
  results["heldout_max_over_median"] = evaluate.heldout_spread(held_scores)
  results["pseudo_anomaly_auc"] = None if pseudo_auc is None else pseudo_auc["mean"]
  results["pseudo_anomaly_auc_by_anr"] = pseudo_auc
  results["score_normalization"] = normalization
  results["clip_score"] = clip_record
  fileio.write_dcase_csvs(out_dir, test, clip_scores, threshold=threshold)
  material = {"labels": np.array([c.label for c in test]), "scores": clip_scores,
              "frames": frames, "threshold": threshold, "features": feature_config,
              "window": window}
  return results, material


def evaluate_one(settings: Settings, loss: str, state, config: train_lib.TrainConfig,
                 data: Data, *, scorer: Optional[frame_scores.FrameScorer] = None,
                 bank_scores: Optional[np.ndarray] = None) -> tuple[dict, dict]:
  """Scores held-out and test clips; returns (results, plot material).
  ``scorer``: the model's ``FrameScorer`` (default: built from ``config``; the
  run shares one between the losses, so that it compiles once). ``bank_scores``:
  the training frames' out-of-fold scores of ``--normalization_bank=crossfit``."""
  preset = config.model_preset
  scorer = scorer or frame_scores.FrameScorer(preset.build(), preset.features)
  return _evaluate_scorer(settings, scorer, jax.device_get(state.params), data,
                          os.path.join(settings.workdir, loss), preset.features,
                          bank_scores=bank_scores)


REFERENCE = "pca"


def evaluate_reference(settings: Settings, feature_config, data: Data) -> tuple[dict, dict]:
  """The PCA reference detector (``reference.PCADetector``) on the AEs' features.

  Fitted on the same training clips, scored, thresholded and evaluated exactly
  like an AE (interior frames, eq. 11, gamma threshold on held-out clips);
  writes ``<workdir>/pca/anomaly_score_*.csv`` and ``decision_result_*.csv``.
  """
  t0 = time.perf_counter()
  detector = reference_lib.PCADetector(feature_config,
                                       components=settings.reference_components)
  detector.fit(data.fit_waves)
  scorer = reference_lib.PCAScorer(detector)
  bank_scores, crossfit_record = None, None
  if score_norm.needs_fold_models(settings.bank()):  # PCAs of the other folds' clips
    folds = crossfit.split(len(data.fit_waves), seed=settings.data_seed)
    models = crossfit.pca_fold_models(feature_config, components=settings.reference_components,
                                      waves=data.fit_waves, folds=folds)
    bank_scores, crossfit_record = _out_of_fold(scorer, None, models, folds, data)
  fit_seconds = round(time.perf_counter() - t0, 1)  # as experiments.dcase: not the evaluation
  results, material = _evaluate_scorer(settings, scorer, None, data,
                                       os.path.join(settings.workdir, REFERENCE),
                                       feature_config, bank_scores=bank_scores)
  if crossfit_record is not None:
    results["crossfit"] = crossfit_record
  results["components"] = settings.reference_components
  results["explained_variance"] = detector.explained_variance
  results["train_seconds"] = fit_seconds
  return results, material


def _store_threshold(settings: Settings, loss: str, state, config, results: dict,
                     data: Data) -> None:
  """Attaches phi, the held-out scores and the score normalization they were
  computed with to the final checkpoint's metadata."""
  normalization = results["score_normalization"]
  calibration = artifact.Calibration(
      threshold=results["threshold"], reduce=settings.reduce,
      quantile=settings.threshold_quantile,
      heldout_clip_scores=tuple(results["heldout_clip_scores"]),
      heldout_paths=tuple(data.heldout_paths),
      window=results["clip_score"]["window_frames"], fit=artifact.GAMMA_LOC0,
      normalization=heldout.calibration_normalization(normalization))
  artifact.store_calibration(os.path.join(settings.workdir, loss), calibration,
                             step=config.total_steps, state=state)


def _plots(workdir: str, data: Data, material: dict) -> list[str]:
  test = data.dataset.test
  conds = sorted({c.condition for c in test})
  hardest = conds[-1] if conds else None  # e.g. "anr_-20dB" sorts last
  roc = {}
  for loss, m in material.items():
    sel = np.array([c.condition == hardest for c in test])
    roc[f"{loss} ({hardest})"] = (m["labels"][sel], m["scores"][sel])
  paths = [plots.plot_roc(os.path.join(workdir, "roc.png"), roc)]
  # A frequent-normal and a rare-normal clip, and an anomalous clip of the
  # easiest condition (where the anomaly is visible), interior frames only.
  easiest = conds[0] if conds else None
  picks = []
  for want, cond in (("frequent", hardest), ("rare", hardest), ("anomalous", easiest)):
    for i, c in enumerate(test):
      kind = "anomalous" if c.label else ("rare" if c.rare else "frequent")
      if kind == want and c.condition == cond:
        title = f"{want} normal" if want != "anomalous" else f"anomalous ({cond})"
        picks.append((i, title))
        break
  feat = next(iter(material.values()))["features"]
  hop = feat.hop_length / feat.sample_rate

  def curve(frames, i, window):
    """Interior frame scores, or their window means (the values phi applies to)
    at each window's centre."""
    inner = np.arange(len(frames))[feat.interior(len(test[i].wave))]
    means = evaluate.window_means(frames[inner], window=window)
    centres = inner[0] + (len(inner) - len(means)) / 2 + np.arange(len(means))
    return centres * hop, means

  def label(loss, m):  # a column of window means says so
    w = m.get("window", 1)
    return loss if w == 1 else f"{loss} ({w * hop:.2f}-s means)"

  over_time = {
      label(loss, m): [(f"{title}: {os.path.basename(test[i].path)}",
                        *curve(m["frames"][i], i, m.get("window", 1))) for i, title in picks]
      for loss, m in material.items()}
  paths.append(plots.plot_scores_over_time(
      os.path.join(workdir, "scores_over_time.png"), over_time,
      thresholds={label(loss, m): m["threshold"] for loss, m in material.items()}))
  thresholds = {loss: m["threshold"] for loss, m in material.items()}
  hist = {}
  for loss, m in material.items():
    groups = {"normal": [], "rare": [], "anomalous": []}
    for c, s in zip(test, m["scores"]):
      groups["anomalous" if c.label else ("rare" if c.rare else "normal")].append(s)
    hist[loss] = {k: np.array(v) for k, v in groups.items() if v}
  paths.append(plots.plot_score_histogram(
      os.path.join(workdir, "score_histogram.png"), hist, thresholds=thresholds))
  return paths


def format_table(results: dict, methods: Sequence[str]) -> str:
  """AUC / pAUC per condition and method (like the paper's Figure 4), then the
  rare-normal rows: AUC against rare / frequent normals, rare-vs-frequent AUC
  (0.5: no bias), the false-positive rates at phi, and the label-free
  held-out max / median (``evaluate.heldout_spread``), pseudo-anomaly AUC and
  the AEs' fit (``fit_check``: the share of the held-out frames' error they
  explain, and that of a PCA of their code size)."""
  conds = [c for c in results[methods[0]]["auc"] if c != "mean"] + ["mean"]
  width = max([22] + [len(c) + 2 for c in conds])
  head = f"{'condition':<{width}}" + "".join(
      f"{m.upper() + ' AUC':>10}{m.upper() + ' pAUC':>11}" for m in methods)
  lines = [head, "-" * len(head)]
  for cond in conds:
    lines.append(f"{cond:<{width}}" + "".join(
        f"{results[m]['auc'].get(cond, float('nan')):>10.3f}"
        f"{results[m]['pauc'].get(cond, float('nan')):>11.3f}" for m in methods))
  rare = [results[m].get("rare_normal", {}) for m in methods]
  for key, label in (("auc_vs_rare", "AUC vs rare normals"),
                     ("auc_vs_frequent", "AUC vs frequent"),
                     ("rare_vs_frequent", "rare vs frequent AUC")):
    if any(r.get(key) for r in rare):
      lines.append(f"{label:<{width}}" + "".join(
          f"{r.get(key, {}).get('mean', float('nan')):>10.3f}{'':>11}" for r in rare))
  lines.append(f"{'FPR frequent@phi':<{width}}" + "".join(
      f"{_num(r.get('fpr_frequent')):>10}{'':>11}" for r in rare))
  lines.append(f"{'FPR rare@phi':<{width}}" + "".join(
      f"{_num(r.get('fpr_rare')):>10}{'':>11}" for r in rare))
  lines.append(f"{'held-out max/median':<{width}}" + "".join(  # label-free, lower = more even
      f"{_num(results[m].get('heldout_max_over_median')):>10}{'':>11}" for m in methods))
  lines.append(f"{'pseudo-anomaly AUC':<{width}}" + "".join(  # label-free, higher = better
      f"{_num(results[m].get('pseudo_anomaly_auc')):>10}{'':>11}" for m in methods))
  fits = [results[m].get("fit") or {} for m in methods]
  if any(fits):  # label-free: the AE's reconstruction of held-out normal frames
    pct = lambda v: "" if v is None else f"{100 * v:.1f}%"
    lines.append(f"{'held-out explained':<{width}}" + "".join(
        f"{pct(f.get('explained_heldout')):>10}{'':>11}" for f in fits))
    sizes = {f["pca_components"] for f in fits if "pca_components" in f}
    label = f"  by PCA-{sizes.pop()}" if len(sizes) == 1 else "  by PCA, code size"
    lines.append(f"{label:<{width}}" + "".join(
        f"{pct(f.get('pca_explained_heldout')):>10}{'':>11}" for f in fits))
  change = [(results[m].get("validation") or {}).get("last_quarter_change") for m in methods]
  if any(c is not None for c in change):  # the AEs' validation curve: still falling?
    lines.append(f"{'held-out error trend':<{width}}" + "".join(
        f"{'' if c is None else f'{100 * c:+.1f}%':>10}{'':>11}" for c in change))
  lines.append(f"{'scores (window)':<{width}}" + "".join(
      f"{scores_label(results[m]):>21}" for m in methods))
  leads = [heldout.window_lead(results[m].get("clip_score", {})) for m in methods]
  if any(leads):  # a longer window kept within one SE of the best one (settle_window)
    lines.append(f"{'  best window, lead':<{width}}" + "".join(
        f"{'' if l is None else f'{l[0]:g}s {l[1]:+.4f}':>21}" for l in leads))
  banks = [results[m].get("score_normalization", {}) for m in methods]
  if any(b.get("bank") for b in banks):  # --normalization_bank other than training
    lines.append(f"{'knn bank':<{width}}" + "".join(
        f"{'' if b.get('kind', 'none') == 'none' else b.get('bank', 'training'):>21}"
        for b in banks))
    margins = [heldout.bank_margin(b) for b in banks]
    if any(m is not None for m in margins):  # auto: by how much the kept bank led
      lines.append(f"{'  by pseudo-anomaly AUC':<{width}}" + "".join(
          f"{'' if m is None else f'{m:+.4f}':>21}" for m in margins))
      needs = [None if m is None else (b.get("chosen_by") or {}).get("training_bank_needs_margin")
               for b, m in zip(banks, margins)]
      if any(n is not None for n in needs):  # what the training bank had to lead by
        lines.append(f"{'  training bank needs':<{width}}" + "".join(
            f"{'' if n is None else f'>{n:.4f}':>21}" for n in needs))
  raws = [heldout.raw_lead(b) for b in banks]
  if any(r is not None for r in raws):  # raw scores had the highest AUC: kept if beyond the margin
    lines.append(f"{'raw lead / needs':<{width}}" + "".join(
        f"{'' if r is None else f'{r[0]:+.4f} / >{r[1]:.4f}':>21}" for r in raws))
  return "\n".join(lines)


def scores_label(results: dict) -> str:
  """E.g. "knn_z 0.992s": the normalization and the clip-score window of a method
  (none shown for one frame, eq. 11)."""
  kind = results.get("score_normalization", {}).get("kind", "none")
  window = results.get("clip_score", {})
  how = "raw" if kind == "none" else kind
  return how if window.get("window_frames", 1) == 1 else f"{how} {window['window_s']:g}s"


def _normalization_note(results: dict) -> str:
  """The note ' on knn-normalized scores (k=10)' (', held-out bank' inside the
  brackets with ``--normalization_bank=heldout``) of a method evaluated so, else '';
  then ', 1-s windows' when the clip score averages windows (else eq. 11)."""
  how = results["score_normalization"]
  bank = f", {heldout.BANK_NAMES[how['bank']]}" if how.get("bank") in heldout.BANK_NAMES else ""
  note = "" if how["kind"] == "none" else (
      f" on {how['kind']}-normalized scores (k={how['neighbors']}{bank})")
  window = results.get("clip_score", {})
  if window.get("window_frames", 1) > 1:
    note += f", {window['window_s']:g}-s windows"
  return note


def _fold_note(record: Optional[dict], loss: str) -> str:
  """"; fold models 77 s" (their time, when recorded), "; RE's fold models" (BU's
  bank from RE's fold models) or "" (no cross-fitted bank) for the printed line."""
  if record is None:
    return ""
  if record["train_seconds"] is not None:
    return f"; fold models {record['train_seconds']:.0f} s"
  return f"; {record['fold_models'].upper()}'s fold models" if record["fold_models"] != loss else ""


def _num(v) -> str:
  return "n/a" if v is None else f"{v:.3f}"


def run(settings: Settings) -> dict:
  """Trains and evaluates every loss of ``settings``; returns the results dict."""
  _input_dirs(settings)  # before the workdir is made: a typo leaves no empty workdir
  cli.make_workdir(settings.workdir)
  devices = jax.devices()
  if settings.num_devices is not None:  # checked against the device count by Settings
    devices = devices[:settings.num_devices]
  mesh = parallel.data_mesh(devices)
  if settings.mixtures_per_step is None:
    settings = dataclasses.replace(settings, mixtures_per_step=len(devices))
  for loss in settings.losses:  # before the (slow) data loading
    check_resumable(settings, loss)
  check_fold_models(settings)
  info = parallel.log_devices(mesh)
  data = load_data(settings)
  _check_bank(settings, data)  # before any training
  cfg0 = settings.train_config(settings.losses[0])
  something_else = (data_lib.pad_clips(data.something_else) if data.something_else
                    else (None, None))
  t0 = time.perf_counter()
  corpus, input_stats = runner.training_inputs(cfg0, data.fit_waves, data.fit_paths,
                                               mesh=mesh, something_else=something_else)
  if input_stats is not None:
    print(f"Training corpus and input statistics of {len(data.fit_waves)} training clips "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
  results_path = os.path.join(settings.workdir, "results.json")
  results = _keep_comparable(results_path, _read_results(results_path),
                             settings=artifact.config_json(settings),
                             description=data.description, evaluating=settings.losses)
  results.pop(REFERENCE, None)
  results["settings"] = artifact.config_json(settings)
  results["data"] = data.description
  results["devices"] = info
  results["paper"] = PAPER_FIGURE4
  material = {}
  # One scorer for every loss (the same model preset): its jitted scoring compiles once,
  # for the validation curve and the evaluation alike.
  scorer = frame_scores.FrameScorer(cfg0.model_preset.build(), cfg0.model_preset.features)
  validate = lambda params: heldout.validation_error(scorer, params, data.heldout_waves,
                                                     names=data.heldout_paths)
  fits = None  # the frames of fit_check, taken once for every loss
  fold_models = {}  # crossfit.shared_fold_models: loss -> (params, folds)
  train_clips = data_lib.clips_fingerprint(data.dataset.train_paths)  # stored with each model
  for loss in settings.losses:
    t0 = time.perf_counter()
    state, config, trained_steps = train_one(
        settings, loss, corpus, mesh=mesh, input_stats=input_stats, validate=validate,
        train_clips=train_clips)
    t_train = time.perf_counter() - t0
    bank_scores, crossfit_record = None, None
    if score_norm.needs_fold_models(settings.bank()):
      t1 = time.perf_counter()
      fold_loss, fold_params, folds, fold_steps = crossfit.shared_fold_models(
          loss, bu_folds=settings.crossfit_bu_folds, cache=fold_models,
          train=lambda owner: train_folds(settings, owner, data, mesh=mesh,
                                          something_else=something_else))
      bank_scores, crossfit_record = _out_of_fold(
          scorer, jax.device_get(state.params), [(scorer, p) for p in fold_params], folds, data)
      crossfit_record["fold_models"] = fold_loss
      crossfit_record["train_seconds"] = crossfit.fold_train_seconds(
          time.perf_counter() - t1 if fold_steps else None, loss=loss, fold_loss=fold_loss,
          previous=crossfit.previous_fold_seconds(results.get(loss, {}).get("crossfit"),
                                                  fold_loss))
    if results.pop(loss, None) is not None:  # its files are rewritten now: no stale entry
      _write_results(settings.workdir, results)
    res, material[loss] = evaluate_one(settings, loss, state, config, data, scorer=scorer,
                                       bank_scores=bank_scores)
    if crossfit_record is not None:
      res["crossfit"] = crossfit_record
    fits = fits or fit_check.FitCheck(data.fit_waves, data.heldout_waves,
                                      cfg0.model_preset.features)
    res["fit"] = fit_check.model_fit(fits, config.model_preset, jax.device_get(state.params))
    # The model's own record, summed over resumes (None for a model trained before
    # it was recorded), so a model found finished never takes another's time.
    res["train_seconds"] = runner.train_seconds(os.path.join(settings.workdir, loss))
    res["train_config"] = runner.recorded_train_config(os.path.join(settings.workdir, loss),
                                                       config)
    res["validation"] = heldout.validation_summary(fileio.read_metrics(
        os.path.join(settings.workdir, loss, runner.VALIDATION_FILE)))
    results[loss] = res
    _store_threshold(settings, loss, state, config, res, data)
    _write_results(settings.workdir, results)
    print(f"[{loss}] AUC mean {res['auc']['mean']:.3f}, threshold {res['threshold']:.4g}"
          f"{_normalization_note(res)} "
          + (f"(train {t_train:.0f} s" if trained_steps else "(trained before")
          + _fold_note(crossfit_record, loss) + ")", flush=True)
  methods = list(settings.losses)
  if settings.reference_components and len(settings.losses) > 1:
    res, material[REFERENCE] = evaluate_reference(settings, cfg0.feature_config, data)
    results[REFERENCE] = res
    methods.append(REFERENCE)
    _write_results(settings.workdir, results)
    print(f"[{REFERENCE}] PCA, {settings.reference_components} components: AUC mean "
          f"{res['auc']['mean']:.3f}{_normalization_note(res)}", flush=True)
  figures = _plots(settings.workdir, data, material)
  training = plots.plot_training(
      os.path.join(settings.workdir, "training.png"),
      {loss: os.path.join(settings.workdir, loss, "metrics.jsonl") for loss in settings.losses},
      validation_files={loss: os.path.join(settings.workdir, loss, runner.VALIDATION_FILE)
                        for loss in settings.losses})
  if training:
    figures.append(training)
  results["plots"] = [os.path.basename(p) for p in figures]
  _write_results(settings.workdir, results)
  table = format_table(results, methods)
  print(table, flush=True)
  print(f"Results in {results_path} (the table: results.txt)", flush=True)
  return results
