"""Tests for bu_jax.evaluate: metrics, threshold, per-condition report, DCASE CSV files."""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import logging

from hypothesis import assume, given, settings, strategies as st
from hypothesis.extra import numpy as hnp
import numpy as np
import pytest
import scipy.stats

from bu_jax import evaluate
from bu_jax import features
from bu_jax import fileio


@dataclasses.dataclass(frozen=True)
class Clip:
  """Stand-in for bu_jax.data.TestClip (duck-typed by evaluate)."""

  path: str
  label: int
  condition: str
  rare: bool | None


# ---------------------------------------------------------------- clip_score


def test_clip_score_max_and_mean():
  frames = np.array([0.5, 3.0, 1.0, 0.5])
  assert evaluate.clip_score(frames) == 3.0
  assert evaluate.clip_score(frames, reduce="mean") == pytest.approx(1.25)
  assert evaluate.clip_score(frames[:, None]) == 3.0  # any shape


@pytest.mark.parametrize("frames, message", [
    ([], "empty"),
    ([1.0, np.nan], "non-finite"),
    ([np.inf], "non-finite"),
])
@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_clip_score_bad_input(frames, message, reduce):
  with pytest.raises(ValueError, match=message):
    evaluate.clip_score(frames, reduce=reduce)


def test_clip_score_unknown_reduce():
  with pytest.raises(ValueError, match="reduce"):
    evaluate.clip_score([1.0], reduce="median")


def test_window_means_are_the_means_of_consecutive_frames():
  frames = np.array([0.0, 6.0, 0.0, 2.0, 2.0, 2.0, 0.0])
  np.testing.assert_allclose(evaluate.window_means(frames, window=3),
                             [2, 8 / 3, 4 / 3, 2, 4 / 3])
  np.testing.assert_array_equal(evaluate.window_means(frames, window=1), frames)
  np.testing.assert_allclose(evaluate.window_means(frames, window=50), [frames.mean()])
  rng = np.random.default_rng(0)
  long = rng.gamma(2.0, size=1000) * 1e4
  np.testing.assert_allclose(evaluate.window_means(long, window=62),
                             np.convolve(long, np.ones(62) / 62, mode="valid"), rtol=1e-10)
  # One huge score does not wipe out the windows after it (running sums would: 5e34 + 1 - 5e34 = 0).
  spike = np.concatenate([[5e34], np.ones(20)])
  means = evaluate.window_means(spike, window=4)
  np.testing.assert_array_equal(means[1:], np.ones(17))
  assert means[0] == pytest.approx((5e34 + 3) / 4)


def test_clip_score_window_ranks_a_sustained_rise_above_a_spike():
  spike = np.array([0.0, 9.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
  rise = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 4.0, 4.0, 4.0, 4.0, 0.0])
  assert evaluate.clip_score(spike) > evaluate.clip_score(rise)  # eq. (11)
  assert evaluate.clip_score(spike, window=4) == pytest.approx(2.25)
  assert evaluate.clip_score(rise, window=4) == pytest.approx(4.0)
  assert evaluate.clip_score(rise, window=1) == evaluate.clip_score(rise)


@pytest.mark.parametrize("kwargs, message", [
    (dict(window=0), "window must be an integer >= 1"),
    (dict(window=2.5), "window must be an integer >= 1"),
    (dict(window=True), "window must be an integer >= 1"),
    (dict(reduce="mean", window=3), "window must be 1"),
])
def test_clip_score_bad_window(kwargs, message):
  with pytest.raises(ValueError, match=message):
    evaluate.clip_score([1.0, 2.0, 3.0], **kwargs)


def test_interior_clip_score_uses_every_interior_frame_and_no_edge_frame():
  """Both ends' zero-padded frames are left out; the first and last interior frames count."""
  config = features.FeatureConfig(n_mels=8, context=2)
  n = 16000
  inner = config.interior(n)
  frames = np.zeros(config.num_frames(n))
  assert 0 < inner.start and inner.stop < frames.size  # edge frames at both ends
  frames[:inner.start] = frames[inner.stop:] = 100.0
  for t in (inner.start, inner.stop - 1):
    scores = frames.copy()
    scores[t] = 3.0
    assert evaluate.interior_clip_score(scores, num_samples=n, feature_config=config) == 3.0


def test_window_candidates_are_one_frame_and_quarter_to_two_seconds():
  config = collections.namedtuple("Config", "hop_length sample_rate")
  assert evaluate.window_candidates(config(256, 16000)) == (1, 16, 31, 62, 125)
  assert evaluate.window_candidates(config(512, 16000)) == (1, 8, 16, 31, 62)
  assert evaluate.window_candidates(config(16000, 16000)) == (1, 2)  # 1-s hop


# ------------------------------------------------------------------- metrics


def test_metrics_perfect_separation():
  result = evaluate.metrics([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.8, 0.9])
  assert result == pytest.approx({"auc": 1.0, "pauc": 1.0, "pauc_dcase": 1.0})


def test_metrics_reversed():
  result = evaluate.metrics([0, 0, 0, 1, 1], [0.8, 0.9, 0.7, 0.1, 0.2])
  assert result["auc"] == pytest.approx(0.0)
  assert result["pauc_dcase"] == pytest.approx(0.0)
  # McClish standardization maps the worst partial curve to 0.5 * (1 - 1/19)
  # for p = 0.1: min((0 - p²/2) / (p - p²/2)) = -0.05 / 0.95.
  assert result["pauc"] == pytest.approx(0.5 * (1 - 0.005 / 0.095))


def test_metrics_ties_are_chance():
  result = evaluate.metrics([0, 1, 0, 1], [2.0, 2.0, 2.0, 2.0])
  assert result["auc"] == pytest.approx(0.5)
  assert result["pauc"] == pytest.approx(0.5)  # McClish: chance level = 0.5
  assert result["pauc_dcase"] == pytest.approx(0.05)  # raw: p / 2


def test_metrics_hand_checked_partial_auc():
  # Ten normals scored 1..10 (each one is an FPR step of 0.1) and two
  # anomalies: 11 (above every normal) and 5.5 (above five normals).
  labels = [0] * 10 + [1, 1]
  scores = list(range(1, 11)) + [11.0, 5.5]
  result = evaluate.metrics(labels, scores, max_fpr=0.1)
  # AUC = (10 + 5) pairs won / 20 pairs.
  assert result["auc"] == pytest.approx(0.75)
  # TPR = 0.5 on FPR in [0, 0.1]: raw area 0.05, normalized 0.5.
  assert result["pauc_dcase"] == pytest.approx(0.5)
  # McClish: 0.5 * (1 + (0.05 - 0.005) / (0.1 - 0.005)).
  assert result["pauc"] == pytest.approx(0.5 * (1 + 0.045 / 0.095))


def test_metrics_partial_auc_interpolates_inside_a_step():
  # Five normals: the first FP step goes to FPR 0.2; max_fpr 0.1 cuts it.
  # Anomaly at 10 beats all; the other (0.5) beats none. The first normal
  # (score 5) brings FPR 0 -> 0.2 at TPR 0.5: area on [0, 0.1] = 0.05.
  result = evaluate.metrics([0, 0, 0, 0, 0, 1, 1],
                            [1, 2, 3, 4, 5, 10, 0.5], max_fpr=0.1)
  assert result["pauc_dcase"] == pytest.approx(0.5)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, 6), min_size=8, max_size=8),
       st.floats(0.05, 1.0))
def test_metrics_match_pairwise_reference(raw_scores, max_fpr):
  labels = np.array([0, 0, 0, 0, 0, 1, 1, 1])
  scores = np.asarray(raw_scores, dtype=float)  # small ints: many ties
  result = evaluate.metrics(labels, scores, max_fpr=max_fpr)
  # AUC = P(anomalous > normal) + 0.5 P(tie), a NumPy loop over pairs.
  diff = scores[labels == 1][:, None] - scores[labels == 0][None, :]
  assert result["auc"] == pytest.approx(
      np.mean((diff > 0) + 0.5 * (diff == 0)))
  # Raw and McClish-standardized pAUC describe the same area.
  area = result["pauc_dcase"] * max_fpr
  if max_fpr < 1.0:
    min_area, max_area = 0.5 * max_fpr**2, max_fpr
    assert result["pauc"] == pytest.approx(
        0.5 * (1 + (area - min_area) / (max_area - min_area)))
  else:
    assert result["pauc_dcase"] == pytest.approx(result["auc"])


@pytest.mark.parametrize("labels, scores, message", [
    ([0, 0, 0], [0.1, 0.2, 0.3], "only normal"),
    ([1, 1], [0.1, 0.2], "only anomalous"),
    ([0, 1], [0.1, np.nan], "non-finite"),
    ([], [], "empty"),
    ([0, 1, 1], [0.1, 0.2], "differ in length"),
    ([0, 2], [0.1, 0.2], "only 0"),
])
def test_metrics_bad_input(labels, scores, message):
  with pytest.raises(ValueError, match=message):
    evaluate.metrics(labels, scores)


def test_decide_refuses_a_nan_threshold():
  # scores >= NaN is False for every clip: a NaN phi would call everything normal.
  with pytest.raises(ValueError, match="NaN"):
    evaluate.decide(np.array([0.5, 2.0]), float("nan"))
  np.testing.assert_array_equal(evaluate.decide(np.array([0.5, 2.0]), 1.0), [False, True])
  assert evaluate.decide(1.0, 1.0) is True and evaluate.decide(0.5, 1.0) is False  # Python bools


# ------------------------------------------------------------- fit_threshold


@pytest.mark.parametrize("loc, free_loc", [(0.0, False), (1.0, True)])
def test_fit_threshold_recovers_gamma_quantile(loc, free_loc):
  rng = np.random.default_rng(0)
  shape, scale = 3.0, 0.5
  samples = scipy.stats.gamma.rvs(shape, loc=loc, scale=scale, size=2000,
                                  random_state=rng)
  expected = scipy.stats.gamma.ppf(0.9, shape, loc=loc, scale=scale)
  assert evaluate.fit_threshold(samples, quantile=0.9, free_loc=free_loc) == pytest.approx(
      expected, rel=0.05)


# Six held-out PCA clip scores of the demo (seed 0), as computed on a CPU and on a GPU: they
# differ by at most 2e-7 relative, and the three-parameter fit put phi at 382.4 and 394.2.
_DEMO_HELDOUT_CPU = [371.2618103, 384.09454346, 421.92767334, 367.83493042, 374.39282227,
                     357.390625]
_DEMO_HELDOUT_GPU = [371.26187134, 384.09451294, 421.92767334, 367.83496094, 374.39282227,
                     357.390625]


def test_fit_threshold_is_stable_on_a_few_heldout_clips():
  cpu = evaluate.fit_threshold(_DEMO_HELDOUT_CPU)
  assert evaluate.fit_threshold(_DEMO_HELDOUT_GPU) == pytest.approx(cpu, rel=1e-5)
  # Near the scores' own 0.9-quantile: at most one of the six clips at or above it.
  assert np.mean(np.asarray(_DEMO_HELDOUT_CPU) >= cpu) <= 1 / 6


@settings(deadline=None, max_examples=40)
@given(
    scores=hnp.arrays(np.float64, st.integers(3, 30),
                      elements=st.floats(0.5, 2.0, allow_nan=False)),
    factor=st.floats(1e-3, 1e3),
    quantile=st.floats(0.5, 0.99))
def test_fit_threshold_is_scale_equivariant_and_continuous(scores, factor, quantile):
  """phi(c x) = c phi(x) (units do not matter), and tiny changes of the scores move phi a little."""
  assume(np.ptp(scores) > 1e-3)
  phi = evaluate.fit_threshold(scores, quantile=quantile)
  assert evaluate.fit_threshold(scores * factor, quantile=quantile) == pytest.approx(
      phi * factor, rel=1e-5)
  nudged = scores * (1.0 + 1e-7 * np.cos(np.arange(scores.size)))
  assert evaluate.fit_threshold(nudged, quantile=quantile) == pytest.approx(phi, rel=1e-4)


def test_fit_threshold_needs_positive_scores_for_location_zero(caplog):
  scores = np.array([-1.0, 0.0, 1.0, 2.0, 3.0])
  with caplog.at_level(logging.WARNING):
    assert evaluate.fit_threshold(scores) == pytest.approx(np.quantile(scores, 0.9))
  assert "positive" in caplog.text
  assert np.isfinite(evaluate.fit_threshold(scores, free_loc=True))


@pytest.mark.parametrize("scores", [[2.0] * 50, [2.0], [1.0, 3.0]])
def test_fit_threshold_degenerate_falls_back(scores, caplog):
  with caplog.at_level(logging.WARNING):
    threshold = evaluate.fit_threshold(scores, quantile=0.9)
  assert threshold == pytest.approx(np.quantile(scores, 0.9))
  assert "empirical" in caplog.text


def test_fit_threshold_failed_fit_falls_back(monkeypatch, caplog):
  def broken_fit(data, **kwargs):
    raise RuntimeError("optimizer diverged")
  monkeypatch.setattr(scipy.stats.gamma, "fit", broken_fit)
  scores = np.linspace(0.1, 1.1, 11)
  with caplog.at_level(logging.WARNING):
    threshold = evaluate.fit_threshold(scores, quantile=0.9)
  assert threshold == pytest.approx(1.0)
  assert "optimizer diverged" in caplog.text


def test_fit_threshold_non_finite_fit_falls_back(monkeypatch, caplog):
  """A fit that returns NaN parameters (no exception) gives the empirical quantile, not NaN."""
  monkeypatch.setattr(scipy.stats.gamma, "fit", lambda data, **kwargs: (np.nan, 0.0, 1.0))
  scores = np.linspace(0.1, 1.1, 11)
  with caplog.at_level(logging.WARNING):
    threshold = evaluate.fit_threshold(scores, quantile=0.9)
  assert threshold == pytest.approx(1.0)
  assert "non-finite" in caplog.text


@pytest.mark.parametrize("scores, kwargs, message", [
    ([], {}, "empty"),
    ([1.0, np.nan, 2.0], {}, "non-finite"),
    ([1.0, 2.0, 3.0], {"quantile": 1.0}, "quantile"),
])
def test_fit_threshold_bad_input(scores, kwargs, message):
  with pytest.raises(ValueError, match=message):
    evaluate.fit_threshold(scores, **kwargs)


# ------------------------------------------------------ false_positive_rates


def test_false_positive_rates_by_name_and_by_mask():
  scores = np.array([0.1, 0.5, 1.0, 2.0, 3.0])
  names = ["frequent", "frequent", "frequent", "rare", None]
  assert evaluate.false_positive_rates(scores, 1.0, names) == pytest.approx(
      {"frequent": 1 / 3, "rare": 1.0})  # score == φ counts as anomalous
  masks = {"low": scores < 1, "high": scores >= 1, "none": np.zeros(5, bool)}
  assert evaluate.false_positive_rates(scores, 1.5, masks) == pytest.approx(
      {"low": 0.0, "high": 2 / 3})
  for short_or_long in (names[:-1], names + ["rare"]):  # one name per score, no fewer or more
    with pytest.raises(ValueError, match="groups has"):
      evaluate.false_positive_rates(scores, 1.0, short_or_long)


# ------------------------------------------------------- evaluate_conditions


def _synthetic_set():
  """Two ANR conditions sharing one pool of normal clips.

  Normals: 8 frequent (scores 0.1..0.8) and 2 rare (scores 0.95, 2.0 - high,
  as a model trained on the average would give). Anomalies: at -10 dB all
  above every normal; at -20 dB two of three below the rare normals.
  """
  clips, scores = [], []
  for i in range(8):
    clips.append(Clip(f"/d/normal_{i}.wav", 0, "normal", False))
    scores.append(0.1 * (i + 1))
  for i, score in enumerate([0.95, 2.0]):
    clips.append(Clip(f"/d/rare_{i}.wav", 0, "normal", True))
    scores.append(score)
  for i, score in enumerate([3.0, 4.0, 5.0]):
    clips.append(Clip(f"/d/-10dB/anomaly_{i}.wav", 1, "-10dB", None))
    scores.append(score)
  for i, score in enumerate([0.9, 0.92, 5.0]):
    clips.append(Clip(f"/d/-20dB/anomaly_{i}.wav", 1, "-20dB", None))
    scores.append(score)
  return clips, np.asarray(scores)


def test_evaluate_conditions_synthetic():
  clips, scores = _synthetic_set()
  result = evaluate.evaluate_conditions(clips, scores, threshold=0.9)
  assert list(result["auc"]) == ["-10dB", "-20dB", "mean"]
  assert result["auc"]["-10dB"] == pytest.approx(1.0)
  # -20 dB: 0.9 and 0.92 beat the 8 frequent normals, 5.0 beats all 10.
  assert result["auc"]["-20dB"] == pytest.approx((8 + 8 + 10) / 30)
  assert result["auc"]["mean"] == pytest.approx((1.0 + 26 / 30) / 2)
  for key in ("pauc", "pauc_dcase"):
    assert set(result[key]) == {"-10dB", "-20dB", "mean"}
  rare = result["rare_normal"]
  assert rare["auc_vs_rare"]["-10dB"] == pytest.approx(1.0)
  assert rare["auc_vs_rare"]["-20dB"] == pytest.approx(2 / 6)
  assert rare["fpr_frequent"] == pytest.approx(0.0)
  assert rare["fpr_rare"] == pytest.approx(1.0)
  assert rare["fpr_rare"] > rare["fpr_frequent"]
  assert result["threshold"] == 0.9
  # The report is JSON-ready.
  json.dumps(result, allow_nan=False)


def test_evaluate_conditions_own_normals_and_no_rare():
  clips = [Clip("a.wav", 0, "c1", None), Clip("b.wav", 1, "c1", None),
           Clip("c.wav", 0, "c2", False), Clip("d.wav", 1, "c2", None)]
  result = evaluate.evaluate_conditions(clips, [0.0, 1.0, 1.0, 0.0],
                                        threshold=None)
  assert result["auc"] == pytest.approx({"c1": 1.0, "c2": 0.0, "mean": 0.5})
  assert result["rare_normal"] == {
      "auc_vs_rare": {}, "auc_vs_frequent": {}, "rare_vs_frequent": {},
      "fpr_rare_by_condition": {}, "fpr_frequent_by_condition": {},
      "fpr_frequent": None, "fpr_rare": None}


def test_shared_normal_pool_only_joins_conditions_without_normals_of_their_own():
  # "own" has its own normals; "pooled" has only anomalies and borrows the pool
  # (the normal-only condition "normal"). The pool must not enter "own"'s AUC.
  clips = [Clip("own_n0.wav", 0, "own", None), Clip("own_n1.wav", 0, "own", None),
           Clip("own_a0.wav", 1, "own", None),
           Clip("pool_n0.wav", 0, "normal", None), Clip("pool_n1.wav", 0, "normal", None),
           Clip("pooled_a0.wav", 1, "pooled", None)]
  scores = [0.1, 0.2, 0.5, 0.9, 1.0, 0.95]
  labels, _, groups = evaluate.condition_groups(clips, scores)
  assert sorted(groups) == ["own", "pooled"]
  assert sorted(groups["own"].tolist()) == [0, 1, 2]
  assert sorted(groups["pooled"].tolist()) == [3, 4, 5]
  result = evaluate.evaluate_conditions(clips, scores, threshold=None)
  assert result["auc"]["own"] == pytest.approx(1.0)  # 0.5 above 0.1 and 0.2 only
  assert result["auc"]["pooled"] == pytest.approx(0.5)  # 0.95 above 0.9, below 1.0


def test_fpr_frequent_leaves_out_unlisted_clips_once_any_clip_is_labelled():
  # A --rare_clips CSV that lists one rare normal and no other: the unlisted normals
  # are in neither group (as for the AUCs), not counted as frequent.
  clips = [Clip("r.wav", 0, "c", True), Clip("u0.wav", 0, "c", None),
           Clip("u1.wav", 0, "c", None), Clip("a.wav", 1, "c", None)]
  rare = evaluate.evaluate_conditions(clips, [2.0, 3.0, 3.0, 5.0], threshold=1.0)["rare_normal"]
  assert rare["fpr_rare"] == pytest.approx(1.0) and rare["fpr_frequent"] is None
  assert rare["auc_vs_frequent"] == {}
  # With one frequent clip listed, it alone is the frequent group.
  clips[1] = Clip("u0.wav", 0, "c", False)
  rare = evaluate.evaluate_conditions(clips, [2.0, 0.5, 3.0, 5.0], threshold=1.0)["rare_normal"]
  assert rare["fpr_frequent"] == pytest.approx(0.0)
  # No clip labelled at all (no --rare_clips): the row is every normal clip's rate.
  unlabelled = [Clip(c.path, c.label, c.condition, None) for c in clips]
  rare = evaluate.evaluate_conditions(unlabelled, [2.0, 0.5, 3.0, 5.0],
                                      threshold=1.0)["rare_normal"]
  assert rare["fpr_frequent"] == pytest.approx(2 / 3) and rare["fpr_rare"] is None
  # Only frequent clips listed (no rare one): the unlisted normals are still left out.
  listed = [Clip("f.wav", 0, "c", False), Clip("u0.wav", 0, "c", None),
            Clip("u1.wav", 0, "c", None), Clip("a.wav", 1, "c", None)]
  rare = evaluate.evaluate_conditions(listed, [0.5, 3.0, 3.0, 5.0],
                                      threshold=1.0)["rare_normal"]
  assert rare["fpr_frequent"] == pytest.approx(0.0) and rare["fpr_rare"] is None


def _mixing_layout_set():
  """As bu_jax.data's "mixing" layout: every test file appears in every ANR
  condition, once normal and once anomalous, with the same path; `rare` is
  set on both versions."""
  normal_scores = {"f0.wav": 0.1, "f1.wav": 0.2, "f2.wav": 0.3, "r0.wav": 2.0}
  clips, scores = [], []
  for condition, boost in (("anr_-10dB", 5.0), ("anr_-20dB", 1.0)):
    for name, score in normal_scores.items():
      rare = name.startswith("r")
      clips.append(Clip(f"/t/{name}", 0, condition, rare))
      scores.append(score)
      clips.append(Clip(f"/t/{name}", 1, condition, rare))
      scores.append(score + boost)
  return clips, np.asarray(scores)


def test_evaluate_conditions_mixing_layout():
  clips, scores = _mixing_layout_set()
  result = evaluate.evaluate_conditions(clips, scores, threshold=1.0)
  assert result["auc"]["anr_-10dB"] == pytest.approx(1.0)
  # -20 dB anomalies 1.1, 1.2, 1.3, 3.0 vs normals 0.1, 0.2, 0.3, 2.0.
  assert result["auc"]["anr_-20dB"] == pytest.approx((3 + 3 + 3 + 4) / 16)
  rare = result["rare_normal"]
  assert rare["auc_vs_rare"] == pytest.approx(
      {"anr_-10dB": 1.0, "anr_-20dB": 0.25, "mean": 0.625})
  assert rare["fpr_frequent"] == pytest.approx(0.0)
  assert rare["fpr_rare"] == pytest.approx(1.0)


def test_evaluate_conditions_counts_each_normal_path_once(monkeypatch):
  clips, scores = _mixing_layout_set()
  seen = {}

  def spy(normal_scores, threshold, groups):
    seen["n"] = len(normal_scores)
    return {}
  monkeypatch.setattr(evaluate, "false_positive_rates", spy)
  evaluate.evaluate_conditions(clips, scores, threshold=1.0)
  assert seen["n"] == 4


def test_evaluate_conditions_errors():
  clips, scores = _synthetic_set()
  with pytest.raises(ValueError, match="non-finite"):
    evaluate.evaluate_conditions(clips, np.where(scores > 4, np.nan, scores),
                                 threshold=1.0)
  with pytest.raises(ValueError, match="clip scores"):
    evaluate.evaluate_conditions(clips, scores[:-1], threshold=1.0)
  only_anomalous = [Clip("x.wav", 1, "c", None), Clip("y.wav", 1, "c", None)]
  with pytest.raises(ValueError, match="condition 'c'.*only anomalous"):
    evaluate.evaluate_conditions(only_anomalous, [1.0, 2.0], threshold=1.0)
  with pytest.raises(TypeError, match="label"):
    evaluate.evaluate_conditions([object()], [1.0], threshold=1.0)
  only_normal = [Clip("x.wav", 0, "c", None), Clip("y.wav", 0, "c", None)]
  with pytest.raises(ValueError, match="condition 'c'.*only normal"):
    evaluate.evaluate_conditions(only_normal, [1.0, 2.0], threshold=1.0)


def test_evaluate_conditions_means_are_arithmetic_over_three_conditions():
  """The "mean" rows average the conditions (with three, a median would differ); the
  conditions are listed in the order they first appear."""
  clips, scores = [], []
  for condition, anomaly in (("c", 5.0), ("a", 5.0), ("b", -5.0)):  # AUC 1, 1, 0
    clips += [Clip(f"{condition}_n0", 0, condition, False),
              Clip(f"{condition}_r0", 0, condition, True),
              Clip(f"{condition}_a0", 1, condition, None)]
    scores += [0.0, 1.0, anomaly]
  result = evaluate.evaluate_conditions(clips, scores, threshold=0.5)
  assert result["auc"] == pytest.approx({"c": 1.0, "a": 1.0, "b": 0.0, "mean": 2 / 3})
  assert list(result["auc"]) == ["c", "a", "b", "mean"]  # as the conditions first appear
  assert result["pauc_dcase"]["mean"] == pytest.approx(2 / 3)
  assert result["rare_normal"]["auc_vs_rare"]["mean"] == pytest.approx(2 / 3)


def test_evaluate_conditions_passes_max_fpr_to_every_condition():
  clips, scores = _synthetic_set()
  result = evaluate.evaluate_conditions(clips, scores, threshold=None, max_fpr=0.3)
  labels, _, groups = evaluate.condition_groups(clips, scores)
  for condition, index in groups.items():
    for key, value in evaluate.metrics(labels[index], scores[index], max_fpr=0.3).items():
      assert result[key][condition] == pytest.approx(value)
  # -10 dB separates perfectly (pAUC 1 for any p); at -20 dB the pAUC depends on p.
  assert result["pauc_dcase"]["-20dB"] == pytest.approx(5 / 9)  # 0.33 at p = 0.1


def test_evaluate_conditions_fprs_count_a_score_equal_to_phi():
  """Eq. (4), A >= phi, in every false-positive rate of the report; phi is a Python float."""
  clips = [Clip("n0", 0, "c", False), Clip("n1", 0, "c", False), Clip("r0", 0, "c", True),
           Clip("r1", 0, "c", True), Clip("a0", 1, "c", None)]
  scores = [0.5, 0.1, 0.5, 0.1, 0.9]
  rare = evaluate.evaluate_conditions(clips, scores, threshold=0.5)["rare_normal"]
  assert rare["fpr_frequent_by_condition"]["c"] == pytest.approx(0.5)
  assert rare["fpr_rare_by_condition"]["c"] == pytest.approx(0.5)
  assert rare["fpr_frequent"] == pytest.approx(0.5) and rare["fpr_rare"] == pytest.approx(0.5)
  result = evaluate.evaluate_conditions(clips, scores, threshold=np.float32(0.5))
  assert type(result["threshold"]) is float  # pylint: disable=unidiomatic-typecheck
  json.dumps(result, allow_nan=False)


# ----------------------------------------------------------------- CSV files


def _read_csv(path):
  with open(path, newline="") as file:
    return list(csv.reader(file))


def test_write_dcase_csvs(tmp_path):
  clips, scores = _synthetic_set()
  written = fileio.write_dcase_csvs(tmp_path / "out", clips, scores,
                                    threshold=0.9, prefix="bu_")
  names = sorted(p.name for p in written)
  assert names == sorted([
      "bu_anomaly_score_-10dB.csv", "bu_decision_result_-10dB.csv",
      "bu_anomaly_score_-20dB.csv", "bu_decision_result_-20dB.csv"])
  rows = _read_csv(tmp_path / "out" / "bu_anomaly_score_-20dB.csv")
  # The 10 shared normals, then the 3 anomalies of the condition.
  assert [r[0] for r in rows] == (
      [f"normal_{i}.wav" for i in range(8)] + ["rare_0.wav", "rare_1.wav"]
      + [f"anomaly_{i}.wav" for i in range(3)])
  np.testing.assert_allclose([float(r[1]) for r in rows],
                             np.concatenate([scores[:10], scores[13:]]))
  decisions = _read_csv(tmp_path / "out" / "bu_decision_result_-20dB.csv")
  assert [int(r[1]) for r in decisions] == (
      [0] * 8 + [1, 1] + [1, 1, 1])  # 0.9 >= φ = 0.9 counts (eq. 4)


def test_write_dcase_csvs_disambiguates_repeated_files(tmp_path):
  clips, scores = _mixing_layout_set()
  fileio.write_dcase_csvs(tmp_path, clips, scores, threshold=1.0)
  rows = _read_csv(tmp_path / "anomaly_score_anr_-20dB.csv")
  assert [r[0] for r in rows] == [
      "normal_f0.wav", "anomaly_f0.wav", "normal_f1.wav", "anomaly_f1.wav",
      "normal_f2.wav", "anomaly_f2.wav", "normal_r0.wav", "anomaly_r0.wav"]
  decisions = _read_csv(tmp_path / "decision_result_anr_-20dB.csv")
  assert [int(r[1]) for r in decisions] == [0, 1, 0, 1, 0, 1, 1, 1]


def test_rare_normal_metrics_per_condition():
  """auc_vs_rare / auc_vs_frequent / rare_vs_frequent and FPRs, hand-computed."""
  Clip = collections.namedtuple("Clip", "path label condition rare")
  clips = [Clip("n0", 0, "c", False), Clip("n1", 0, "c", False), Clip("r0", 0, "c", True),
           Clip("r1", 0, "c", True), Clip("a0", 1, "c", False), Clip("a1", 1, "c", True)]
  scores = [0.1, 0.5, 0.9, 0.3, 0.6, 0.95]
  out = evaluate.evaluate_conditions(clips, scores, threshold=0.55)["rare_normal"]
  # anomalies {0.6, 0.95} vs rare {0.9, 0.3}: pairs won 1 + 2 = 3 of 4
  assert out["auc_vs_rare"]["c"] == pytest.approx(0.75)
  # vs frequent {0.1, 0.5}: 4 of 4
  assert out["auc_vs_frequent"]["c"] == pytest.approx(1.0)
  # rare {0.9, 0.3} vs frequent {0.1, 0.5}: 0.9 beats both, 0.3 beats 0.1 -> 3/4
  assert out["rare_vs_frequent"]["c"] == pytest.approx(0.75)
  assert out["fpr_rare_by_condition"]["c"] == pytest.approx(0.5)
  assert out["fpr_frequent_by_condition"]["c"] == pytest.approx(0.0)
  # rare unknown (None) on a clip: it counts in neither group
  clips[1] = Clip("n1", 0, "c", None)
  out = evaluate.evaluate_conditions(clips, scores, threshold=None)["rare_normal"]
  assert out["rare_vs_frequent"]["c"] == pytest.approx(1.0)
  assert out["fpr_rare_by_condition"] == {}


def test_rare_normal_aucs_count_ties_as_half():
  """An anomaly that ties a rare normal wins half the pair, as in the AUC (sklearn)."""
  clips = [Clip("f0", 0, "c", False), Clip("r0", 0, "c", True), Clip("a0", 1, "c", None)]
  out = evaluate.evaluate_conditions(clips, [0.1, 0.5, 0.5], threshold=None)["rare_normal"]
  assert out["auc_vs_rare"]["c"] == pytest.approx(0.5)
  assert out["auc_vs_frequent"]["c"] == pytest.approx(1.0)
  out = evaluate.evaluate_conditions(clips, [0.5, 0.5, 0.9], threshold=None)["rare_normal"]
  assert out["rare_vs_frequent"]["c"] == pytest.approx(0.5)


def test_heldout_spread_is_max_over_median_and_label_free():
  assert evaluate.heldout_spread([1.0, 2.0, 4.0]) == pytest.approx(2.0)
  scores = np.array([3.0, 1.0, 2.0, 8.0])
  assert evaluate.heldout_spread(scores * 7.5) == pytest.approx(evaluate.heldout_spread(scores))
  assert np.isnan(evaluate.heldout_spread([]))
  assert np.isnan(evaluate.heldout_spread([0.0, 0.0, 1.0]))  # median 0: undefined, not inf
  with pytest.raises(ValueError, match="normal_clip_scores"):
    evaluate.heldout_spread([1.0, np.nan])


def test_fit_threshold_treats_scores_equal_up_to_rounding_as_degenerate(caplog):
  """A gamma fit to a spread of one ulp would put phi anywhere (2.14 for scores of 1)."""
  for value in (1.0, 100.0):
    scores = np.r_[np.full(9, value), np.nextafter(value, 2 * value)]
    assert evaluate.fit_threshold(scores) == pytest.approx(value)
  assert "degenerate" in caplog.text


@pytest.mark.parametrize("scores, free_loc, fits", [
    ([1.0, 2.0, 3.0], False, True), ([2.0] * 5, False, False), ([1.0, 3.0], False, False),
    ([1.0] * 9 + [float(np.nextafter(1.0, 2.0))], False, False),
    ([-1.0, 0.0, 1.0, 2.0], False, False), ([-1.0, 0.0, 1.0, 2.0], True, True),
    ([0.0, 1.0, 2.0, 3.0], False, False)])  # location 0: a score of 0 is not positive
def test_gamma_fit_applies_says_what_fit_threshold_does(scores, free_loc, fits, caplog):
  """The detector's --fpr message names the method from this: it must match the fallback."""
  assert evaluate.gamma_fit_applies(scores, free_loc=free_loc) == fits
  with caplog.at_level(logging.WARNING):
    evaluate.fit_threshold(scores, free_loc=free_loc)
  assert ("empirical" in caplog.text) == (not fits)
