"""Model-agnostic evaluation of anomalous sound detection (ADS) scores.

Everything here works on NumPy arrays of anomaly scores that a (jitted) model
computed elsewhere:

* ``clip_score``: the clip-level anomaly score of Koizumi et al. (2019), eq. 11,
  the maximum of the frame scores A_θ(x_t).
* ``metrics``: AUC and pAUC with scikit-learn, as in the DCASE task 2 baselines.
* ``fit_threshold``: the decision threshold φ of eq. 4, a quantile of a gamma
  distribution fitted to normal clip scores (DCASE 2020/2021 baselines).
* ``false_positive_rates`` and ``evaluate_conditions``: per-condition AUC/pAUC
  and the false-positive rates on frequent- and rare-normal clips, the failure
  mode that batch uniformization addresses (sec. 2.3 of the paper).
* ``write_dcase_csvs``: ``anomaly_score_*.csv`` and ``decision_result_*.csv``
  files in the layout of the DCASE baseline.
* ``plot_roc``, ``plot_scores_over_time``, ``plot_score_histogram``: PNG figures
  drawn with matplotlib's Agg canvas (no display, no pyplot global state).
* ``write_json``: atomic JSON writer that understands NumPy values.

Clip records passed to ``evaluate_conditions`` and ``write_dcase_csvs`` are
duck-typed: any object with the attributes ``path`` (str), ``label`` (0 normal,
1 anomalous), ``condition`` (str) and ``rare`` (bool or None) works, e.g.
``bu_jax.data.TestClip``.

References:
  Y. Koizumi, S. Saito, M. Yamaguchi, S. Murata, N. Harada, "Batch
  uniformization for minimizing maximum anomaly score of DNN-based anomaly
  detection in sounds", WASPAA 2019.
  D. K. McClish, "Analyzing a portion of the ROC curve", Medical Decision
  Making 9(3), 1989.
"""

from __future__ import annotations

import collections
import csv
import json
import math
import os
import pathlib
import re
import warnings
from typing import Any, Iterable, Mapping, Sequence

from absl import logging
import numpy as np
import scipy.stats
from sklearn import metrics as sk_metrics

from bu_jax import fileio

PathLike = str | os.PathLike


# --------------------------------------------------------------------------
# Input checks.
# --------------------------------------------------------------------------


def _as_finite_1d(values: Any, name: str) -> np.ndarray:
  """Returns `values` as a non-empty, finite, 1-D float64 array."""
  array = np.asarray(values, dtype=np.float64)
  if array.ndim != 1:
    raise ValueError(f"{name} must be 1-D, got shape {array.shape}.")
  if array.size == 0:
    raise ValueError(f"{name} is empty.")
  bad = ~np.isfinite(array)
  if bad.any():
    first = int(np.flatnonzero(bad)[0])
    raise ValueError(
        f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf);"
        f" first at index {first}: {array[first]}."
    )
  return array


def _as_binary_labels(labels: Any, name: str = "labels") -> np.ndarray:
  array = np.asarray(labels)
  if array.ndim != 1:
    raise ValueError(f"{name} must be 1-D, got shape {array.shape}.")
  if array.size == 0:
    raise ValueError(f"{name} is empty.")
  unique = np.unique(array)
  if not np.isin(unique, (0, 1)).all():
    raise ValueError(
        f"{name} must contain only 0 (normal) and 1 (anomalous); got values"
        f" {unique.tolist()}."
    )
  return array.astype(np.int64)


# --------------------------------------------------------------------------
# Clip score, metrics, threshold.
# --------------------------------------------------------------------------


def clip_score(frame_scores: Any, *, reduce: str = "max") -> float:
  """Clip-level anomaly score from per-frame anomaly scores.

  Frame-wise ADS declares a clip X = {x_t} anomalous as soon as one frame
  exceeds the threshold φ (eq. 4), which is the same as thresholding

    A_θ(X) = max_t A_θ(x_t)                                      (eq. 11)

  Args:
    frame_scores: per-frame anomaly scores A_θ(x_t) of one clip, any shape
      (flattened).
    reduce: "max" (eq. 11, default) or "mean" (the DCASE baselines' average
      over frames).

  Returns:
    The clip score as a Python float.

  Raises:
    ValueError: for an empty input, a non-finite score, or an unknown `reduce`.
  """
  scores = _as_finite_1d(np.ravel(np.asarray(frame_scores, dtype=np.float64)),
                         "frame_scores")
  if reduce == "max":
    return float(scores.max())
  if reduce == "mean":
    return float(scores.mean())
  raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}.")


def interior_clip_score(frame_scores: Any, *, num_samples: int, feature_config: Any,
                        reduce: str = "max") -> float:
  """Eq. (11) over the interior frames of a clip: the clip score that eq. (4) thresholds.

  Frames whose STFT window or context reaches past the clip's ends see zero
  padding and score high on every clip, so the clip score uses only the
  frames ``feature_config.interior(num_samples)`` (``features.FeatureConfig``).
  Evaluation (``bu_jax.toycar``, ``bu_jax.dcase_run``) and scoring
  (``bu_jax.detect``) both call this.

  Args:
    frame_scores: A(x_t) of every frame of the clip, shape (T,).
    num_samples: the clip's length in samples.
    feature_config: its ``FeatureConfig``.
    reduce: "max" (eq. 11) or "mean"; see ``clip_score``.

  Returns:
    The clip score as a Python float.

  Raises:
    ValueError: ``frame_scores`` does not have the clip's number of frames,
      or see ``clip_score``.
  """
  frame_scores = np.ravel(np.asarray(frame_scores))
  expected = feature_config.num_frames(num_samples)
  if frame_scores.size != expected:
    raise ValueError(f"a clip of {num_samples} samples has {expected} frames, got "
                     f"{frame_scores.size} frame scores.")
  return clip_score(frame_scores[feature_config.interior(num_samples)], reduce=reduce)


def decide(clip_scores: Any, threshold: float) -> Any:
  """Eq. (4): a clip is anomalous when its score reaches φ, A(X) >= φ.

  Args:
    clip_scores: one clip score (from ``interior_clip_score``) or an array.
    threshold: φ.

  Returns:
    A Python bool for a scalar score, else a boolean array of the same shape.
  """
  decision = np.asarray(clip_scores, dtype=np.float64) >= float(threshold)
  return bool(decision) if decision.ndim == 0 else decision


def _raw_partial_auc(labels: np.ndarray, scores: np.ndarray,
                     max_fpr: float) -> float:
  """Area under the ROC curve for FPR in [0, max_fpr], not standardized."""
  fpr, tpr, _ = sk_metrics.roc_curve(labels, scores)
  if max_fpr < fpr[-1]:
    # Cut the curve at max_fpr, interpolating linearly (as sklearn does
    # before its McClish correction).
    stop = int(np.searchsorted(fpr, max_fpr, side="right"))
    tpr_at_max = np.interp(max_fpr, fpr[stop - 1:stop + 1],
                           tpr[stop - 1:stop + 1])
    fpr = np.append(fpr[:stop], max_fpr)
    tpr = np.append(tpr[:stop], tpr_at_max)
  return float(np.trapezoid(tpr, fpr))


def metrics(labels: Any, scores: Any, *, max_fpr: float = 0.1
           ) -> dict[str, float]:
  """AUC and partial AUC of anomaly scores (higher = more anomalous).

  Args:
    labels: 1-D array of 0 (normal) / 1 (anomalous); both classes must occur.
    scores: 1-D array of finite anomaly scores, same length as `labels`.
    max_fpr: upper end p of the false-positive-rate range of the pAUC.

  Returns:
    A dict with
      "auc": area under the ROC curve (sklearn `roc_auc_score`);
      "pauc": `roc_auc_score(labels, scores, max_fpr=max_fpr)`, as computed
        by the DCASE 2020 baseline. sklearn returns the McClish-standardized
        partial AUC, 0.5 * (1 + (A - p²/2) / (p - p²/2)) with A the raw area
        over FPR in [0, p]: 0.5 for a chance-level and 1.0 for a perfect
        detector.
      "pauc_dcase": the raw area A normalized by p, A / p, as defined in the
        DCASE 2020+ task 2 descriptions: p/2 (0.05 for p = 0.1) for chance
        level and 1.0 for a perfect detector. Computed from sklearn
        `roc_curve`, interpolated linearly at FPR = p.

  Raises:
    ValueError: for empty, mismatched, non-binary or single-class labels, or
      non-finite scores.

  References:
    McClish (1989); DCASE 2020 task 2 baseline (`01_test.py`).
  """
  labels = _as_binary_labels(labels)
  scores = _as_finite_1d(scores, "scores")
  if labels.shape != scores.shape:
    raise ValueError(
        f"labels and scores differ in length: {labels.size} vs {scores.size}."
    )
  if not 0.0 < max_fpr <= 1.0:
    raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}.")
  n_anomalous = int(labels.sum())
  if n_anomalous in (0, labels.size):
    present = "anomalous (1)" if n_anomalous else "normal (0)"
    raise ValueError(
        f"AUC needs both normal (0) and anomalous (1) clips, but only"
        f" {present} labels are present ({labels.size} clips)."
    )
  return {
      "auc": float(sk_metrics.roc_auc_score(labels, scores)),
      "pauc": float(sk_metrics.roc_auc_score(labels, scores, max_fpr=max_fpr)),
      "pauc_dcase": _raw_partial_auc(labels, scores, max_fpr) / max_fpr,
  }


def fit_threshold(normal_clip_scores: Any, *, quantile: float = 0.9) -> float:
  """Decision threshold φ (eq. 4) from held-out normal clip scores.

  As in the DCASE 2020/2021 task 2 baselines, a three-parameter gamma
  distribution (shape, loc, scale) is fitted by maximum likelihood with
  `scipy.stats.gamma.fit`, and φ is its `quantile`; with quantile = 0.9 about
  10 % of normal clips are expected to be flagged. If the scores are degenerate
  (all equal, or fewer than three) or the fit fails or gives a non-finite φ,
  the empirical quantile of the scores is returned instead and a warning is
  logged.

  Args:
    normal_clip_scores: 1-D array of clip scores of normal clips that were not
      used for training.
    quantile: the target quantile, in (0, 1).

  Returns:
    The threshold φ as a Python float.

  Raises:
    ValueError: for empty or non-finite scores, or a quantile outside (0, 1).
  """
  scores = _as_finite_1d(normal_clip_scores, "normal_clip_scores")
  if not 0.0 < quantile < 1.0:
    raise ValueError(f"quantile must be in (0, 1), got {quantile}.")
  empirical = float(np.quantile(scores, quantile))
  if scores.size < 3 or np.ptp(scores) == 0.0:
    logging.warning(
        "fit_threshold: %d normal clip score(s) with range %g are degenerate"
        " for a gamma fit; using the empirical %g-quantile %g.",
        scores.size, float(np.ptp(scores)), quantile, empirical)
    return empirical
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)
      shape, loc, scale = scipy.stats.gamma.fit(scores)
      threshold = float(
          scipy.stats.gamma.ppf(quantile, shape, loc=loc, scale=scale))
  except Exception as error:  # pylint: disable=broad-except
    logging.warning(
        "fit_threshold: gamma fit failed (%s: %s); using the empirical"
        " %g-quantile %g.", type(error).__name__, error, quantile, empirical)
    return empirical
  if not math.isfinite(threshold):
    logging.warning(
        "fit_threshold: gamma fit (shape=%g, loc=%g, scale=%g) gave a"
        " non-finite threshold; using the empirical %g-quantile %g.",
        shape, loc, scale, quantile, empirical)
    return empirical
  return threshold


def false_positive_rates(
    scores: Any,
    threshold: float,
    groups: Sequence[Any] | Mapping[str, Any],
) -> dict[Any, float]:
  """False-positive rate of the decision A ≥ φ (eq. 4) per group of clips.

  All `scores` are taken to be normal clips: the FPR of a group is the
  fraction of its clips whose score is ≥ `threshold`.

  Args:
    scores: 1-D array of normal clip scores.
    threshold: the decision threshold φ.
    groups: either one group name per score (e.g. "frequent" / "rare"; entries
      that are None are skipped), or a mapping from group name to a boolean
      mask or index array into `scores`.

  Returns:
    {group: FPR}; a group with no clips is left out.
  """
  scores = _as_finite_1d(scores, "scores")
  flagged = decide(scores, threshold)
  if isinstance(groups, Mapping):
    selections = {name: np.asarray(sel) for name, sel in groups.items()}
  else:
    names = list(groups)
    if len(names) != scores.size:
      raise ValueError(
          f"groups has {len(names)} entries but scores has {scores.size}.")
    members = collections.defaultdict(list)
    for index, name in enumerate(names):
      if name is not None:
        members[name].append(index)
    selections = {name: np.asarray(index, dtype=np.int64)
                  for name, index in members.items()}
  rates = {}
  for name, selection in selections.items():
    picked = flagged[selection]
    if picked.size:
      rates[name] = float(picked.mean())
  return rates


# --------------------------------------------------------------------------
# Per-condition evaluation and DCASE-style CSV files.
# --------------------------------------------------------------------------


def _clip_fields(clips: Sequence[Any]) -> tuple[np.ndarray, list[str],
                                                 list[bool | None], list[str]]:
  labels, conditions, rares, paths = [], [], [], []
  for index, clip in enumerate(clips):
    try:
      labels.append(int(clip.label))
      conditions.append(str(clip.condition))
      rares.append(None if clip.rare is None else bool(clip.rare))
      paths.append(str(clip.path))
    except AttributeError as error:
      raise TypeError(
          f"clip {index} ({type(clip).__name__}) lacks a field needed for"
          f" evaluation (label, condition, rare, path): {error}") from error
  return (_as_binary_labels(np.asarray(labels, dtype=np.int64), "clip labels"),
          conditions, rares, paths)


def _condition_groups(labels: np.ndarray,
                      conditions: Sequence[str]) -> dict[str, np.ndarray]:
  """Indices of the clips evaluated under each condition.

  A condition is any `condition` value that has anomalous clips. Normal clips
  whose condition has no anomalous clips form a shared pool (e.g. one set of
  normal clips for all anomaly-to-normal ratios); it is added to every
  condition that has no normal clips of its own. Without any anomalous clip,
  clips are simply grouped by condition.
  """
  order = list(dict.fromkeys(conditions))
  conditions = np.asarray(conditions, dtype=object)
  anomalous = [c for c in order if labels[conditions == c].any()]
  if not anomalous:
    return {c: np.flatnonzero(conditions == c) for c in order}
  shared = np.flatnonzero(~np.isin(conditions, anomalous) & (labels == 0))
  groups = {}
  for condition in anomalous:
    own = np.flatnonzero(conditions == condition)
    if not (labels[own] == 0).any():
      own = np.concatenate([own, shared])
    groups[condition] = own
  return groups


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
  """AUC of ``positive`` scores above ``negative`` ones (sklearn); ties count 1/2."""
  labels = np.r_[np.ones(positive.size), np.zeros(negative.size)]
  return float(sk_metrics.roc_auc_score(labels, np.r_[positive, negative]))


def _with_mean(values: dict[str, float]) -> dict[str, float]:
  if values:
    values["mean"] = float(np.mean(list(values.values())))
  return values


def evaluate_conditions(
    clips: Sequence[Any],
    clip_scores: Any,
    *,
    threshold: float | None,
    max_fpr: float = 0.1,
) -> dict[str, Any]:
  """AUC, pAUC and frequent/rare-normal false-positive rates per condition.

  Conditions and their normal clips are found as in `_condition_groups`: each
  `condition` with anomalous clips is one condition, evaluated against its own
  normal clips or, if it has none, against the shared pool of normal clips
  whose condition has no anomalies.

  Args:
    clips: records with attributes label (0/1), condition (str), rare
      (bool | None: True for clips whose normal content is a rare operating
      mode, such as warm-up sounds; only read on normal clips) and path (str,
      identifies a normal clip that is repeated in several conditions).
    clip_scores: 1-D array of clip anomaly scores A_θ(X) (eq. 11), one per
      clip.
    threshold: decision threshold φ (eq. 4), e.g. from `fit_threshold`; None
      skips the false-positive rates.
    max_fpr: upper FPR end of the pAUC.

  Returns:
    {
      "auc": {condition: AUC, ..., "mean": arithmetic mean over conditions},
      "pauc": {... McClish-standardized pAUC, see `metrics`},
      "pauc_dcase": {... raw pAUC / max_fpr, see `metrics`},
      "rare_normal": {
        "auc_vs_rare": {condition: AUC of the anomalous clips against only the
          rare-normal clips (rare=True), "mean": ...}, for the conditions that
          have rare-normal clips ({} if none);
        "auc_vs_frequent": the same against only the frequent-normal clips
          (rare=False), for the conditions that have rare-normal clips too;
        "rare_vs_frequent": {condition: AUC of the rare-normal clips against
          the frequent-normal ones, "mean": ...}: 0.5 means rare normals score
          like frequent ones, 1.0 that every rare normal outscores every
          frequent one (the false alarms BU is meant to remove);
        "fpr_rare_by_condition", "fpr_frequent_by_condition": the FPRs at
          the threshold per condition;
        "fpr_frequent": FPR on normal clips with rare False or None,
        "fpr_rare": FPR on normal clips with rare True,
      },  (an FPR is None without threshold or without such clips)
      "threshold": φ,
    }
    False-positive rates count every normal clip (path) once, the first
    time it occurs in `clips`.

  Raises:
    ValueError: for mismatched lengths, non-finite scores, or a condition with
      a single class (the message names the condition).
  """
  labels, conditions, rares, paths = _clip_fields(clips)
  scores = _as_finite_1d(clip_scores, "clip_scores")
  if scores.size != labels.size:
    raise ValueError(
        f"{labels.size} clips but {scores.size} clip scores.")
  is_rare = np.asarray([r is True for r in rares])
  results = {"auc": {}, "pauc": {}, "pauc_dcase": {}}
  is_frequent = np.asarray([r is False for r in rares])
  auc_vs_rare, auc_vs_frequent, rare_vs_frequent = {}, {}, {}
  fpr_rare_by, fpr_frequent_by = {}, {}
  for condition, index in _condition_groups(labels, conditions).items():
    try:
      values = metrics(labels[index], scores[index], max_fpr=max_fpr)
    except ValueError as error:
      raise ValueError(f"condition {condition!r}: {error}") from error
    for key, value in values.items():
      results[key][condition] = value
    normal = index[labels[index] == 0]
    rare_n, frequent_n = normal[is_rare[normal]], normal[is_frequent[normal]]
    anomalous = index[labels[index] == 1]
    if rare_n.size:
      auc_vs_rare[condition] = _auc(scores[anomalous], scores[rare_n])
      if threshold is not None:
        fpr_rare_by[condition] = float(np.mean(decide(scores[rare_n], threshold)))
    if frequent_n.size and rare_n.size:
      auc_vs_frequent[condition] = _auc(scores[anomalous], scores[frequent_n])
      if threshold is not None:
        fpr_frequent_by[condition] = float(np.mean(decide(scores[frequent_n], threshold)))
      rare_vs_frequent[condition] = _auc(scores[rare_n], scores[frequent_n])
  for key in ("auc", "pauc", "pauc_dcase"):
    _with_mean(results[key])

  # Each normal clip once: the "mixing" layout repeats them per condition.
  normal = np.zeros(labels.size, dtype=bool)
  seen = set()
  for index in np.flatnonzero(labels == 0):
    if paths[index] not in seen:
      seen.add(paths[index])
      normal[index] = True
  fpr_frequent = fpr_rare = None
  if threshold is not None:
    group = np.where(is_rare, "rare", "frequent")
    rates = false_positive_rates(scores[normal], threshold, group[normal])
    fpr_frequent = rates.get("frequent")
    fpr_rare = rates.get("rare")
  results["rare_normal"] = {
      "auc_vs_rare": _with_mean(auc_vs_rare),
      "auc_vs_frequent": _with_mean(auc_vs_frequent),
      "rare_vs_frequent": _with_mean(rare_vs_frequent),
      "fpr_rare_by_condition": _with_mean(fpr_rare_by),
      "fpr_frequent_by_condition": _with_mean(fpr_frequent_by),
      "fpr_frequent": fpr_frequent,
      "fpr_rare": fpr_rare,
  }
  results["threshold"] = None if threshold is None else float(threshold)
  return results


def _safe_filename_part(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._+-]+", "_", text) or "_"


def write_dcase_csvs(
    workdir: PathLike,
    clips: Sequence[Any],
    clip_scores: Any,
    *,
    threshold: float,
    prefix: str = "",
) -> list[pathlib.Path]:
  """Writes DCASE-baseline-style score and decision CSV files per condition.

  For each condition (grouped as in `evaluate_conditions`), writes to
  `workdir`:
    <prefix>anomaly_score_<condition>.csv    rows: file basename, clip score
    <prefix>decision_result_<condition>.csv  rows: file basename, 1 if
        score ≥ threshold else 0 (eq. 4, ``decide``)
  without header, in the order of `clips`. A basename that occurs more than
  once in a condition (the "mixing" layout uses the same file for a clip's
  normal and anomalous versions) is written as "normal_<basename>" or
  "anomaly_<basename>". Characters other than letters, digits and ``._+-``
  in the condition are replaced by "_".

  Args:
    workdir: output directory (created if missing).
    clips: records with attributes path, label, condition, rare.
    clip_scores: 1-D array of clip scores, one per clip.
    threshold: the decision threshold φ.
    prefix: prepended to every file name.

  Returns:
    The paths written, two per condition.
  """
  labels, conditions, _, paths = _clip_fields(clips)
  scores = _as_finite_1d(clip_scores, "clip_scores")
  if scores.size != labels.size:
    raise ValueError(f"{labels.size} clips but {scores.size} clip scores.")
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  written = []
  for condition, index in _condition_groups(labels, conditions).items():
    index = np.sort(index)
    names = [os.path.basename(paths[i]) for i in index]
    counts = collections.Counter(names)
    names = [(f"{'anomaly' if labels[i] else 'normal'}_{name}"
              if counts[name] > 1 else name) for name, i in zip(names, index)]
    suffix = _safe_filename_part(condition)
    score_rows = [(name, repr(float(scores[i]))) for name, i in zip(names, index)]
    decision_rows = [(name, int(decide(scores[i], threshold)))
                     for name, i in zip(names, index)]
    for kind, rows in (("anomaly_score", score_rows),
                       ("decision_result", decision_rows)):
      path = workdir / f"{prefix}{kind}_{suffix}.csv"
      with open(path, "w", newline="") as file:
        csv.writer(file, lineterminator="\n").writerows(rows)
      written.append(path)
  logging.info("Wrote %d DCASE CSV files to %s.", len(written), workdir)
  return written


# --------------------------------------------------------------------------
# Figures (matplotlib Agg canvas; no pyplot, no display).
# --------------------------------------------------------------------------


def _new_figure(figsize: tuple[float, float]):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  return Figure(figsize=figsize, layout="constrained")


def _save_figure(figure, path: PathLike) -> str:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(path, dpi=100, format="png")
  return str(path)


def _colors(count: int) -> list[Any]:
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  cmap = colormaps["tab10"]
  return [cmap(i % 10) for i in range(count)]


def plot_roc(path: PathLike,
             curves: Mapping[str, tuple[Any, Any]],
             *,
             max_fpr: float | None = None) -> str:
  """ROC curves of several methods in one PNG.

  Args:
    path: output PNG path.
    curves: {method: (labels, scores)}; labels 0/1, scores higher = anomalous.
    max_fpr: if given, a vertical line marks the pAUC range.

  Returns:
    `path` as a string.
  """
  if not curves:
    raise ValueError("plot_roc needs at least one method.")
  figure = _new_figure((5.0, 5.0))
  axes = figure.add_subplot()
  axes.plot([0, 1], [0, 1], color="gray", linestyle=":", label="chance")
  for (method, (labels, scores)), color in zip(curves.items(),
                                               _colors(len(curves))):
    auc = metrics(labels, scores)["auc"]
    fpr, tpr, _ = sk_metrics.roc_curve(_as_binary_labels(labels),
                                       _as_finite_1d(scores, "scores"))
    axes.plot(fpr, tpr, color=color, label=f"{method} (AUC={auc:.3f})")
  if max_fpr is not None:
    axes.axvline(max_fpr, color="gray", linestyle="--", linewidth=0.8)
  axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate",
           ylabel="true-positive rate", title="ROC")
  axes.set_aspect("equal")
  axes.legend(loc="lower right", fontsize="small")
  return _save_figure(figure, path)


def plot_scores_over_time(
    path: PathLike,
    clips_by_method: Mapping[str, Sequence[tuple]],
    *,
    thresholds: Mapping[str, float] | None = None,
    overlay: bool = False,
) -> str:
  """Frame anomaly scores A_θ(x_t) over time, as in the paper's Figure 3.

  One row per clip (e.g. a normal, a rare-normal and an anomalous clip); one
  column per method (default, each with its own y scale), or, with
  `overlay=True`, one line per method in a single column.

  Args:
    path: output PNG path.
    clips_by_method: {method: [(title, times_s, frame_scores), ...]}; every
      method lists the same clips in the same order. A tuple may have a fourth
      element, a list of (start_s, end_s) anomalous spans, shaded yellow.
    thresholds: optional {method: φ}, drawn as horizontal dashed lines.
    overlay: draw all methods in one column.

  Returns:
    `path` as a string.
  """
  if not clips_by_method:
    raise ValueError("plot_scores_over_time needs at least one method.")
  methods = list(clips_by_method)
  counts = {len(clips_by_method[m]) for m in methods}
  if len(counts) != 1 or 0 in counts:
    raise ValueError(
        "every method must list the same, non-zero number of clips; got"
        f" { {m: len(clips_by_method[m]) for m in methods} }.")
  rows = counts.pop()
  columns = 1 if overlay else len(methods)
  thresholds = thresholds or {}
  figure = _new_figure((4.0 * columns + 1.0, 2.2 * rows))
  grid = figure.subplots(rows, columns, squeeze=False, sharex="row",
                         sharey=False if overlay else "col")
  for method, color, column in zip(methods, _colors(len(methods)),
                                   range(len(methods))):
    for row, entry in enumerate(clips_by_method[method]):
      title, times, frame_scores = entry[:3]
      spans = entry[3] if len(entry) > 3 else ()
      axes = grid[row, 0 if overlay else column]
      times = np.asarray(times, dtype=np.float64)
      frame_scores = np.asarray(frame_scores, dtype=np.float64)
      if times.shape != frame_scores.shape:
        raise ValueError(
            f"{method}, clip {row}: times_s shape {times.shape} differs from"
            f" frame_scores shape {frame_scores.shape}.")
      if column == 0 or not overlay:
        for start, end in spans:
          axes.axvspan(start, end, color="yellow", alpha=0.3, linewidth=0)
      axes.plot(times, frame_scores, color=color, linewidth=1.0, label=method)
      if method in thresholds:
        axes.axhline(thresholds[method], color=color, linestyle="--",
                     linewidth=0.8)
      if overlay:
        axes.set_title(str(title), fontsize="small")
      else:
        axes.set_title(f"{method}: {title}", fontsize="small")
      if row == rows - 1:
        axes.set_xlabel("time [s]")
      if column == 0 or overlay:
        axes.set_ylabel("anomaly score")
  if overlay:
    grid[0, 0].legend(fontsize="small")
  return _save_figure(figure, path)


def plot_score_histogram(
    path: PathLike,
    scores_by_method: Mapping[str, Mapping[str, Any]],
    *,
    thresholds: Mapping[str, float] | None = None,
    bins: int = 30,
) -> str:
  """Histograms of clip scores of normal, rare-normal and anomalous clips.

  One panel per method; groups that are missing or empty are skipped.

  Args:
    path: output PNG path.
    scores_by_method: {method: {"normal": s, "rare": s, "anomalous": s}}
      (any group names work).
    thresholds: optional {method: φ}, drawn as vertical dashed lines.
    bins: number of bins, shared by the groups of one method.

  Returns:
    `path` as a string.
  """
  if not scores_by_method:
    raise ValueError("plot_score_histogram needs at least one method.")
  thresholds = thresholds or {}
  methods = list(scores_by_method)
  figure = _new_figure((4.0 * len(methods) + 0.5, 3.2))
  grid = figure.subplots(1, len(methods), squeeze=False)
  for axes, method in zip(grid[0], methods):
    groups = {name: np.asarray(s, dtype=np.float64).ravel()
              for name, s in scores_by_method[method].items()}
    groups = {name: s[np.isfinite(s)] for name, s in groups.items()}
    groups = {name: s for name, s in groups.items() if s.size}
    if groups:
      edges = np.histogram_bin_edges(np.concatenate(list(groups.values())),
                                     bins=bins)
      for (name, values), color in zip(groups.items(), _colors(len(groups))):
        axes.hist(values, bins=edges, color=color, alpha=0.5,
                  label=f"{name} (n={values.size})")
    if method in thresholds:
      axes.axvline(thresholds[method], color="black", linestyle="--",
                   linewidth=1.0, label="threshold φ")
    axes.set(title=method, xlabel="clip anomaly score", ylabel="clips")
    axes.legend(fontsize="small")
  return _save_figure(figure, path)


def _read_metrics(path: PathLike) -> list[dict]:
  rows = []
  if not os.path.exists(path):
    return rows
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except ValueError:  # a damaged (e.g. half-written) line: skip it
        continue
  return rows


def plot_training(path: PathLike, metrics_files: Mapping[str, PathLike], *,
                  smooth: int = 50) -> str | None:
  """Training curves per loss from ``metrics.jsonl`` files (``train.train``'s rows).

  Four panels: the loss; the normal term and L_a (eq. 10); the BU weights'
  effective sample size as a fraction of the normal frames, (sum w)^2 /
  (M_u sum w^2), and their max/min ratio (log scale) -- 1 and 1 for RE/SNP,
  whose weights are uniform. Curves are moving averages over ``smooth`` steps.
  Returns ``path``, or None when no file has rows.
  """
  data = {name: _read_metrics(p) for name, p in metrics_files.items()}
  data = {name: rows for name, rows in data.items() if rows}
  if not data:
    return None

  def series(rows, fn):
    steps = np.array([r.get("step", i) for i, r in enumerate(rows)], np.float64)
    values = np.array([fn(r) for r in rows], np.float64)
    k = max(1, min(smooth, values.size // 20))  # at least ~20 points per curve
    kernel = np.ones(k) / k
    valid = np.convolve(values, kernel, mode="valid")
    return steps[k - 1:], valid

  figure = _new_figure((11.0, 6.5))
  grid = figure.subplots(2, 2, squeeze=False)
  panels = [
      (grid[0][0], "loss", [("", lambda r: r["loss"])], "linear"),
      (grid[0][1], "normal term / L_a", [("normal", lambda r: r["normal"]),
                                         ("L_a", lambda r: r["la"])], "linear"),
      (grid[1][0], "BU weights: ESS / normal frames",
       [("", lambda r: r["ess"] / max(r["frames_normal"], 1.0))], "linear"),
      (grid[1][1], "BU weights: max / min", [("", lambda r: r["w_max"] / max(r["w_min"],
                                                                              1e-30))], "log"),
  ]
  colors = dict(zip(data, _colors(len(data))))
  for axes, title, curves, scale in panels:
    for name, rows in data.items():
      for (label, fn), style in zip(curves, ("-", "--")):
        try:
          x, y = series(rows, fn)
        except (KeyError, TypeError, ZeroDivisionError):
          continue
        axes.plot(x, y, style, color=colors[name], linewidth=1.0,
                  label=f"{name} {label}".strip())
    axes.set(title=title, xlabel="step", yscale=scale)
    axes.legend(fontsize="small")
  return _save_figure(figure, path)


# --------------------------------------------------------------------------
# JSON.
# --------------------------------------------------------------------------


def _to_json(obj: Any) -> Any:
  """Recursively converts NumPy and path values to JSON-compatible ones.

  Non-finite floats become None so that the output is strict JSON.
  """
  if isinstance(obj, Mapping):
    return {str(_to_json(k)) if not isinstance(k, str) else k: _to_json(v)
            for k, v in obj.items()}
  if isinstance(obj, np.ndarray):
    return _to_json(obj.tolist())
  if isinstance(obj, np.generic):
    return _to_json(obj.item())
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, (str, int, bool)) or obj is None:
    return obj
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  if isinstance(obj, (list, tuple, set, frozenset)) or (
      isinstance(obj, Iterable) and not isinstance(obj, (bytes, bytearray))):
    return [_to_json(v) for v in obj]
  raise TypeError(f"cannot convert {type(obj).__name__} to JSON: {obj!r}")


def write_json(path: PathLike, obj: Any) -> str:
  """Writes `obj` as JSON atomically (temporary file + `os.replace`).

  NumPy scalars and arrays become Python numbers and lists, paths become
  strings, non-string keys are converted with `str`, and NaN / inf become
  null. Parent directories are created.

  Returns:
    `path` as a string.
  """
  text = json.dumps(_to_json(obj), indent=2, sort_keys=False, allow_nan=False)
  return fileio.atomic_write(path, text + "\n")
