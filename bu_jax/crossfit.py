"""The cross-fitted knn bank: training frames scored by models that never trained on them.

``score_norm``'s "knn_z" judges a test frame against the scores of its nearest
bank frames in the model's code space. A model reconstructs the clips it trained
on better than new sound, and a loss that weights rare frames up (eq. 16) more
so for the rare ones: a bank of the training frames' own scores then expects
too little of a rare test frame, and the rare mode's clips keep outscoring the
frequent ones. The held-out clips' bank (``score_norm.fit_heldout_banks``) is
honest but small (ten clips, two to four with the rare mode).

Cross-fitting, as in out-of-fold prediction, gives every training frame an
honest score. The training clips are split into ``FOLDS`` folds; for fold k a
model with the same settings trains on the clips of the other folds and scores
the clips of fold k. The bank keeps the main model's codes (test frames are
looked up in its code space) and takes these out-of-fold scores, each fold
model's scaled by the median frame score of the held-out clips under the main
model over that under the fold model (a fold model trains on fewer clips; the
held-out clips are new to every model, so the ratio puts its scores on the
main model's scale without labels).

A fold model trains on (FOLDS - 1) / FOLDS of the clips. With the schedule
"scaled" (``fold_steps_per_epoch``; the default from the nineteenth to the
twenty-second session) its epochs are as much shorter: it passes over its clips
as often as the main model over its own, with the same epochs and
learning-rate schedule, at half the main model's steps. By default ("short",
since the twenty-third session) they are half as long again: both fold models
together train half of one main model's steps (on five real-recording runs
the bank chosen and its test metrics were as with "scaled", at half the
steps; README, "Real recordings").

BU's fold models are RE's (``fold_loss``; ``--crossfit_bu_folds``, since the
twenty-fifth session): the bank asks what error a model of this kind leaves on
frames it never trained on, and eq. (16)'s weights, a device of BU's
training, did not make that estimate better (on three real-recording runs the
bank of RE's fold models gave BU's main model the same AUC within 0.01 and a
lower rare-vs-frequent AUC than its own, README "Real recordings"), while they
make every fold step costlier (the KDE). With ``--loss=all`` RE's fold models train once and serve
both banks. SNP keeps its own (its L_a shapes its scores; on one of the runs
RE's fold models cost its main model 0.025 AUC).

``split`` and ``others`` say which clips each fold model trains on,
``heldout_scales`` gives the scales, ``out_of_fold_scores`` the bank's scores
and ``bank_scores`` both; ``bu_jax.toycar`` and ``bu_jax.dcase_run`` train the
fold models (``--normalization_bank=crossfit``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from bu_jax import data as data_lib
from bu_jax import reference as reference_lib
from bu_jax import runner
from bu_jax import score_norm

FOLDS = 2  # each fold model trains on half of the training clips
# How long a fold model trains (``fold_steps_per_epoch``): "scaled", as many
# passes over its clips as the main model's over its own; "short", half as many
# (all fold models together train half the main model's steps with 2 folds);
# "full", as many steps as the main model (before the nineteenth session).
SCHEDULES = ("scaled", "short", "full")
DEFAULT_SCHEDULE = "short"  # "scaled" from the nineteenth to the twenty-second session
# Whose fold models give BU's cross-fitted bank (``fold_loss``): "re", RE's
# (shared with RE's own bank); "bu", BU's own (before the twenty-fifth session).
BU_FOLDS = ("re", "bu")
DEFAULT_BU_FOLDS = "re"
_FLOOR = 1e-12  # the smallest median score a scale divides by


def split(n: int, *, seed: int, folds: int = FOLDS) -> list[list[int]]:
  """The clip indices of each fold: a permutation of ``range(n)`` by
  ``numpy.random.default_rng(seed)`` dealt out in turn, each fold sorted.

  Raises:
    ValueError: fewer clips than ``2 * folds`` (each fold model needs clips to
      train on, each fold clips to score) or fewer than 2 folds.
  """
  if folds < 2:
    raise ValueError(f"cross-fitting needs at least 2 folds, got {folds}")
  if n < 2 * folds:
    raise ValueError(f"--normalization_bank=crossfit (or auto): {n} training clip(s) for "
                     f"{folds} folds; "
                     f"need at least {2 * folds}")
  order = np.random.default_rng(seed).permutation(n)
  return [sorted(int(i) for i in order[k::folds]) for k in range(folds)]


def fold_steps_per_epoch(steps_per_epoch: int, *, schedule: str = DEFAULT_SCHEDULE,
                         folds: int = FOLDS) -> int:
  """Mini-batches per epoch of a fold model whose main model trains
  ``steps_per_epoch``: that times (folds - 1) / folds, rounded (at least 1), for
  ``schedule`` "scaled" (each fold model trains on that share of the clips, so
  it passes over them as often as the main model over its own); half of that
  for "short" (half as many passes, at the same epochs and learning-rate
  schedule); unchanged for "full".

  Raises:
    ValueError: an unknown schedule or fewer than 2 folds.
  """
  if schedule not in SCHEDULES:
    raise ValueError(f"--crossfit_schedule must be one of {SCHEDULES}, got {schedule!r}")
  if folds < 2:
    raise ValueError(f"cross-fitting needs at least 2 folds, got {folds}")
  if schedule == "full":
    return steps_per_epoch
  share = (folds - 1) / folds / (2 if schedule == "short" else 1)
  return max(1, round(steps_per_epoch * share))


def fold_loss(loss: str, *, bu_folds: str = DEFAULT_BU_FOLDS) -> str:
  """The loss whose fold models give the cross-fitted bank of ``loss``'s model:
  "re" for BU with ``bu_folds="re"`` (RE's fold models, trained once for
  both), else ``loss`` itself.

  Raises:
    ValueError: an unknown ``bu_folds``.
  """
  if bu_folds not in BU_FOLDS:
    raise ValueError(f"--crossfit_bu_folds must be one of {BU_FOLDS}, got {bu_folds!r}")
  return "re" if loss == "bu" and bu_folds == "re" else loss


def shared_fold_models(loss: str, *, bu_folds: str, cache: dict,
                       train: Callable[[str], tuple[list[Any], list[list[int]], int]]
                       ) -> tuple[str, list[Any], list[list[int]], int]:
  """The fold models of ``loss``'s cross-fitted bank in one run (or one group of
  a DCASE run): those of ``fold_loss(loss)``, taken from ``cache`` when an
  earlier loss of the run already has them (RE's, for BU), else
  ``train(fold_loss)`` (``(params, folds, steps trained now)``), then cached.

  Returns:
    ``(fold_loss, params, folds, steps trained now)``: 0 steps when cached.
  """
  owner = fold_loss(loss, bu_folds=bu_folds)
  if owner in cache:
    return (owner, *cache[owner], 0)
  params, folds, steps = train(owner)
  cache[owner] = params, folds
  return owner, params, folds, steps


def fold_train_seconds(elapsed: Optional[float], *, loss: str, fold_loss: str,
                       previous: Optional[float]) -> Optional[float]:
  """The fold models' training time a run records with ``loss``'s bank: ``elapsed``
  (rounded) when they trained now; found finished, ``previous`` (the run that
  trained them); None when they are another loss's (BU's bank from RE's fold
  models: their time is recorded with RE's)."""
  if elapsed is not None:
    return round(elapsed, 1)
  return previous if fold_loss == loss else None


def previous_fold_seconds(record: Optional[dict], fold_loss: str) -> Optional[float]:
  """The ``train_seconds`` of an earlier run's cross-fit ``record`` when its fold
  models were ``fold_loss``'s (a record of RE's fold models says nothing of BU's
  own, ``--crossfit_bu_folds``), else None."""
  if not record or record.get("fold_models", fold_loss) != fold_loss:
    return None
  return record.get("train_seconds")


@contextlib.contextmanager
def schedule_hint() -> Iterator[None]:
  """Around a fold model's training: a ``runner.SettingsMismatchError`` over the
  steps per epoch (fold models trained before ``SCHEDULES`` existed ran the main
  model's) is raised again with the flag that re-evaluates them."""
  try:
    yield
  except runner.SettingsMismatchError as e:
    if "steps_per_epoch" not in str(e):
      raise
    raise runner.SettingsMismatchError(
        f"{e} This is a fold model of --normalization_bank=crossfit (or auto); its steps per epoch "
        "follow --crossfit_schedule: short (the default) trains it with half of (folds - 1) / "
        "folds of the main model's, scaled with (folds - 1) / folds (an earlier default), full "
        "with as many (the first default): give the schedule the fold models were trained "
        "with to re-evaluate them.") from None


def check_split(n: int, *, seed: int, where: str) -> None:
  """Refuses, before any training, ``n`` training clips too few to ``split``.

  Raises:
    data.DataError: naming ``where`` (the data directory or the group) and the flag.
  """
  try:
    split(n, seed=seed)
  except ValueError as e:
    raise data_lib.DataError(f"{where}: {e}") from None


def pca_fold_models(config, *, components: int, waves: Sequence[np.ndarray],
                    folds: Sequence[Sequence[int]]) -> list[tuple[Any, None]]:
  """The fold models of the PCA reference (``reference.PCADetector`` with
  ``components`` on the features of ``config``): for each fold k, a PCA fitted
  on the clips of the other folds, as ``(scorer, None)`` pairs for ``bank_scores``."""
  return [(reference_lib.PCAScorer(reference_lib.PCADetector(config, components=components)
                                   .fit([waves[i] for i in others(folds, k)])), None)
          for k in range(len(folds))]


def others(folds: Sequence[Sequence[int]], k: int) -> list[int]:
  """The clips fold model ``k`` trains on: those of every fold but ``k``, sorted."""
  return sorted(i for j, fold in enumerate(folds) if j != k for i in fold)


def heldout_scales(main: tuple[Any, Any], fold_models: Sequence[tuple[Any, Any]],
                   heldout_waves: Sequence[np.ndarray]) -> list[float]:
  """For each fold model, the median held-out frame score of the ``main`` model
  over its own; each model a ``(scorer, params)`` pair (``score_norm.clip_frames``'s
  scorer). The held-out clips are new to every model."""
  names = [f"held-out clip {i}" for i in range(len(heldout_waves))]
  median = lambda model: max(float(np.median(score_norm.clip_frames(
      *model, heldout_waves, names=names)[1])), _FLOOR)
  main_median = median(main)
  return [main_median / median(model) for model in fold_models]


def out_of_fold_scores(fold_models: Sequence[tuple[Any, Any]], waves: Sequence[np.ndarray],
                       folds: Sequence[Sequence[int]], *,
                       scales: Optional[Sequence[float]] = None,
                       names: Optional[Sequence[str]] = None) -> np.ndarray:
  """The interior frames' scores of every clip of ``waves`` (in their order, as
  ``score_norm.clip_frames`` concatenates them), each clip scored by the model of
  its fold: ``fold_models[k]`` = ``(scorer, params)`` trained without the clips of
  ``folds[k]``, its scores times ``scales[k]`` (default 1).

  Raises:
    ValueError: the folds do not cover every clip exactly once, or the model
      and scale counts differ from the fold count.
  """
  fold_of = {i: k for k, fold in enumerate(folds) for i in fold}
  if sorted(fold_of) != list(range(len(waves))) or sum(map(len, folds)) != len(waves):
    raise ValueError(f"the folds must hold each of the {len(waves)} clips exactly once")
  scales = [1.0] * len(folds) if scales is None else list(scales)
  if len(fold_models) != len(folds) or len(scales) != len(folds):
    raise ValueError(f"{len(folds)} folds, {len(fold_models)} fold models, {len(scales)} scales")
  names = list(names or [f"training clip {i}" for i in range(len(waves))])
  parts = []
  for i, wave in enumerate(waves):
    scorer, params = fold_models[fold_of[i]]
    _, scores = score_norm.clip_frames(scorer, params, [wave], names=[names[i]])
    parts.append(scores.astype(np.float64) * scales[fold_of[i]])
  return np.concatenate(parts).astype(np.float32)


def bank_scores(main: tuple[Any, Any], fold_models: Sequence[tuple[Any, Any]],
                folds: Sequence[Sequence[int]], *, fit_waves: Sequence[np.ndarray],
                heldout_waves: Sequence[np.ndarray],
                names: Optional[Sequence[str]] = None) -> tuple[np.ndarray, dict]:
  """The cross-fitted bank's scores of the training clips ``fit_waves``
  (``out_of_fold_scores``, each fold model on the ``main`` model's scale by
  ``heldout_scales``) and its record for ``results.json`` (folds, clips per
  fold, scales). Models are ``(scorer, params)`` pairs."""
  scales = heldout_scales(main, fold_models, heldout_waves)
  scores = out_of_fold_scores(fold_models, fit_waves, folds, scales=scales, names=names)
  return scores, {"folds": len(folds), "clips_per_fold": [len(f) for f in folds],
                  "scales": [round(x, 4) for x in scales]}
