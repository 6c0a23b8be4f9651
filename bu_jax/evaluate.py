"""Model-agnostic evaluation of anomalous sound detection (ADS) scores.

Everything here works on NumPy arrays of anomaly scores that a (jitted) model
computed elsewhere:

* ``clip_score``: the clip-level anomaly score of Koizumi et al. (2019), eq. 11,
  the maximum of the frame scores A_θ(x_t).
* ``metrics``: AUC and pAUC with scikit-learn, as in the DCASE task 2 baselines.
* ``fit_threshold``: the decision threshold φ of eq. 4, a quantile of a gamma
  distribution fitted to normal clip scores (as the DCASE 2020/2021 baselines,
  with the location fixed at 0 unless asked otherwise).
* ``false_positive_rates`` and ``evaluate_conditions``: per-condition AUC/pAUC
  and the false-positive rates on frequent- and rare-normal clips, the failure
  mode that batch uniformization addresses (sec. 2.3 of the paper).
* ``decide``: the decision of eq. 4, clip score >= φ.

Figures are in ``bu_jax.plots``, the files a run writes (JSON, the DCASE CSV
files, ``metrics.jsonl``) in ``bu_jax.fileio``.

Clip records passed to ``evaluate_conditions`` are
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
import math
import warnings
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np
import scipy.stats
from sklearn import metrics as sk_metrics


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


# Clip-score windows (seconds) that a run may choose from, besides one frame
# (eq. 11): ``window_candidates``.
WINDOW_CANDIDATES_S = (0.25, 0.5, 1.0, 2.0)


def check_window(window: Any) -> None:
  """Raises ValueError unless ``window`` is an integer >= 1 (frames)."""
  if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
    raise ValueError(f"window must be an integer >= 1 (frames), got {window!r}")


def window_means(frame_scores: Any, *, window: int) -> np.ndarray:
  """Means of ``window`` consecutive frame scores: every full window, in time order.

  Window i covers frames i .. i + window - 1; a clip shorter than ``window``
  frames has one window, the whole clip. ``window=1`` returns the scores.

  Raises:
    ValueError: ``window`` < 1, an empty input or a non-finite score.
  """
  check_window(window)
  scores = _as_finite_1d(np.ravel(np.asarray(frame_scores, dtype=np.float64)),
                         "frame_scores")
  window = min(int(window), scores.size)
  if window == 1:
    return scores
  # Each window summed on its own (not a difference of running sums, which loses every
  # later window to rounding after one huge score).
  return np.lib.stride_tricks.sliding_window_view(scores, window).mean(axis=1)


def window_candidates(feature_config: Any) -> tuple[int, ...]:
  """Clip-score windows in frames: 1 (eq. 11) and ``WINDOW_CANDIDATES_S`` at the
  hop of ``feature_config`` (distinct, ascending)."""
  hop_s = feature_config.hop_length / feature_config.sample_rate
  return tuple(sorted({1, *(max(1, int(round(s / hop_s))) for s in WINDOW_CANDIDATES_S)}))


def clip_score(frame_scores: Any, *, reduce: str = "max", window: int = 1) -> float:
  """Clip-level anomaly score from per-frame anomaly scores.

  Frame-wise ADS declares a clip X = {x_t} anomalous as soon as one frame
  exceeds the threshold φ (eq. 4), which is the same as thresholding

    A_θ(X) = max_t A_θ(x_t)                                      (eq. 11)

  With ``window`` = W > 1 the clip is anomalous as soon as the *mean* score of
  W consecutive frames exceeds φ: A_θ(X) = max_t (1/W) Σ_{s<W} A_θ(x_{t+s})
  (``window_means``). A sound that lasts, as most machine faults do, keeps
  its score; a single frame's spike (a transient of normal operation, or a
  noisy frame score) is averaged with its neighbours. W = 1 is eq. (11).

  Args:
    frame_scores: per-frame anomaly scores A_θ(x_t) of one clip, any shape
      (flattened).
    reduce: "max" (eq. 11, default) or "mean" (the DCASE baselines' average
      over frames).
    window: frames per mean for "max" (1: eq. 11); "mean" needs 1.

  Returns:
    The clip score as a Python float.

  Raises:
    ValueError: for an empty input, a non-finite score, an unknown `reduce`,
      or a window that is not a positive integer (or not 1 with "mean").
  """
  if reduce == "max":
    return float(window_means(frame_scores, window=window).max())
  if reduce == "mean":
    if window != 1:
      raise ValueError(f"reduce='mean' averages the whole clip; window must be 1, got {window!r}")
    return float(_as_finite_1d(np.ravel(np.asarray(frame_scores, dtype=np.float64)),
                               "frame_scores").mean())
  raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}.")


def interior_clip_score(frame_scores: Any, *, num_samples: int, feature_config: Any,
                        reduce: str = "max", window: int = 1) -> float:
  """Eq. (11) over the interior frames of a clip: the clip score that eq. (4) thresholds.

  Frames whose STFT window or context reaches past the clip's ends see zero
  padding and score high on every clip, so the clip score uses only the
  frames ``feature_config.interior(num_samples)`` (``features.FeatureConfig``).
  Evaluation (``bu_jax.toycar``, ``bu_jax.dcase_run``) and scoring
  (``bu_jax.detector``) both call this.

  Args:
    frame_scores: A(x_t) of every frame of the clip, shape (T,).
    num_samples: the clip's length in samples.
    feature_config: its ``FeatureConfig``.
    reduce: "max" (eq. 11) or "mean"; see ``clip_score``.
    window: frames per mean of the maximum; see ``clip_score``.

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
  return clip_score(frame_scores[feature_config.interior(num_samples)], reduce=reduce,
                    window=window)


def decide(clip_scores: Any, threshold: float) -> Any:
  """Eq. (4): a clip is anomalous when its score reaches φ, A(X) >= φ.

  Args:
    clip_scores: one clip score (from ``interior_clip_score``) or an array.
    threshold: φ.

  Returns:
    A Python bool for a scalar score, else a boolean array of the same shape.

  Raises:
    ValueError: ``threshold`` is NaN (every comparison would say "normal").
  """
  if math.isnan(float(threshold)):
    raise ValueError("decide: the threshold phi is NaN; every clip would be called normal")
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


def _degenerate(scores: np.ndarray) -> bool:
  """Too few, or equal up to rounding (a gamma fit to a spread of one ulp puts phi anywhere)."""
  return scores.size < 3 or np.ptp(scores) <= 1e-9 * max(float(np.max(np.abs(scores))), 1e-300)


def gamma_fit_applies(normal_clip_scores: Any, *, free_loc: bool = False) -> bool:
  """Whether ``fit_threshold`` fits a gamma to these scores rather than taking their
  empirical quantile: at least three, not equal up to rounding, and (location 0) all
  positive. A fit that fails at run time still falls back."""
  scores = _as_finite_1d(normal_clip_scores, "normal_clip_scores")
  return not _degenerate(scores) and (free_loc or float(np.min(scores)) > 0.0)


def fit_threshold(normal_clip_scores: Any, *, quantile: float = 0.9,
                  free_loc: bool = False) -> float:
  """Decision threshold φ (eq. 4) from held-out normal clip scores.

  A gamma distribution is fitted by maximum likelihood
  (`scipy.stats.gamma.fit`) and φ is its `quantile`; with quantile = 0.9 about
  10 % of normal clips are expected to be flagged. By default the location is
  fixed at 0 (two parameters, shape and scale): anomaly scores (squared errors,
  eq. 5, or their normalized forms) are positive, and this fit is a smooth
  function of the scores. ``free_loc=True`` fits the location too, as the DCASE
  2020/2021 task 2 baselines do on hundreds of clips; on the 6-20 held-out clips
  of a run that three-parameter fit is ill-posed (its likelihood has no maximum
  as the location nears the smallest score): relative changes of 1e-6 in the
  scores moved its φ by up to 20 %, and it can put φ far below the scores' own
  quantile (RE of the demo, seed 0, on the CPU: 392.4 against an empirical 0.9-quantile
  of 433, two of six clips above it) (README, the toy-car section: the
  threshold phi).

  If the scores are degenerate (all equal up to rounding, or fewer than three),
  not all positive for the two-parameter fit, or the fit fails or gives a
  non-finite φ, the empirical quantile of the scores is returned instead and a
  warning is logged.

  Args:
    normal_clip_scores: 1-D array of clip scores of normal clips that were not
      used for training.
    quantile: the target quantile, in (0, 1).
    free_loc: fit the gamma's location too (the DCASE baselines' three
      parameters) instead of fixing it at 0.

  Returns:
    The threshold φ as a Python float.

  Raises:
    ValueError: for empty or non-finite scores, or a quantile outside (0, 1).
  """
  scores = _as_finite_1d(normal_clip_scores, "normal_clip_scores")
  if not 0.0 < quantile < 1.0:
    raise ValueError(f"quantile must be in (0, 1), got {quantile}.")
  empirical = float(np.quantile(scores, quantile))
  if _degenerate(scores):
    logging.warning(
        "fit_threshold: %d normal clip score(s) with range %g are degenerate"
        " for a gamma fit; using the empirical %g-quantile %g.",
        scores.size, float(np.ptp(scores)), quantile, empirical)
    return empirical
  if not free_loc and float(np.min(scores)) <= 0.0:
    logging.warning(
        "fit_threshold: a gamma with location 0 needs positive scores, the smallest"
        " is %g; using the empirical %g-quantile %g.", float(np.min(scores)), quantile,
        empirical)
    return empirical
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)
      if free_loc:
        shape, loc, scale = scipy.stats.gamma.fit(scores)
      else:
        shape, loc, scale = scipy.stats.gamma.fit(scores, floc=0.0)
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


def heldout_spread(normal_clip_scores: Any) -> float:
  """Max over median of held-out normal clip scores: a label-free check.

  The paper's aim is to minimize the maximum anomaly score of normal data
  (section 3); relative to the typical normal clip, a lower value means the
  normal clips score more evenly, so fewer of them reach a threshold. Two
  evaluations of the same model (e.g. raw or normalized scores) can be
  compared with it without any test label.

  Returns:
    max / median, or NaN when there are no scores or the median is not > 0.

  Raises:
    ValueError: for non-finite scores.
  """
  scores = np.asarray(normal_clip_scores, dtype=np.float64).reshape(-1)
  if scores.size == 0:
    return float("nan")
  scores = _as_finite_1d(scores, "normal_clip_scores")
  median = float(np.median(scores))
  return float(scores.max() / median) if median > 0 else float("nan")


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
# Per-condition evaluation.
# --------------------------------------------------------------------------


def _clip_fields(clips: Sequence[Any], clip_scores: Any) -> tuple[
    np.ndarray, list[str], list[bool | None], list[str], np.ndarray]:
  """The clips' labels, conditions, rare flags and paths, and their scores."""
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
  labels = _as_binary_labels(np.asarray(labels, dtype=np.int64), "clip labels")
  scores = _as_finite_1d(clip_scores, "clip_scores")
  if scores.size != labels.size:
    raise ValueError(f"{labels.size} clips but {scores.size} clip scores.")
  return labels, conditions, rares, paths, scores


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


def condition_groups(clips: Sequence[Any], clip_scores: Any
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
  """(labels, scores, {condition: clip indices}) as ``evaluate_conditions`` groups them.

  Raises:
    ValueError: mismatched lengths or non-finite scores.
    TypeError: a clip without label, condition, rare or path.
  """
  labels, conditions, _, _, scores = _clip_fields(clips, clip_scores)
  return labels, scores, _condition_groups(labels, conditions)


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
        "fpr_frequent": FPR on normal clips with rare False (with no clip
          labelled, rare None everywhere: on every normal clip),
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
  labels, conditions, rares, paths, scores = _clip_fields(clips, clip_scores)
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
    # Unlisted clips (None) count as frequent only when no clip is labelled (no
    # --rare_clips): then the row is every normal clip's rate. Else they are in
    # neither group, as in the AUCs above.
    labelled = bool(is_rare.any() or is_frequent.any())
    group = np.array(["rare" if r else "frequent" if f or not labelled else None
                      for r, f in zip(is_rare, is_frequent)], dtype=object)
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
