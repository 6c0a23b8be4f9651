"""The cross-fitted bank's folds and out-of-fold scores (``bu_jax.crossfit``)."""

import numpy as np
import pytest

from bu_jax import crossfit
from bu_jax import data
from bu_jax import features
from bu_jax import reference


class _ConstantScorer:
  """Scores every frame ``value`` (codes: zeros), with FrameScorer's calling convention."""

  config = features.FeatureConfig(n_mels=8, context=1)

  def __init__(self, value):
    self.value = value

  def __call__(self, params, wave, *, name="waveform", with_codes=False):
    n = self.config.num_frames(len(wave))
    scores = np.full(n, self.value * (1.0 if params is None else params), np.float32)
    return (scores, np.zeros((n, 2), np.float32)) if with_codes else scores


def test_split_deals_every_clip_to_one_fold_and_is_deterministic():
  folds = crossfit.split(11, seed=3)
  assert len(folds) == crossfit.FOLDS == 2
  assert sorted(i for f in folds for i in f) == list(range(11))
  assert {len(f) for f in folds} == {5, 6} and all(f == sorted(f) for f in folds)
  assert folds == crossfit.split(11, seed=3) and folds != crossfit.split(11, seed=4)
  assert crossfit.others(folds, 0) == folds[1] and crossfit.others(folds, 1) == folds[0]
  three = crossfit.split(9, seed=0, folds=3)
  assert crossfit.others(three, 1) == sorted(three[0] + three[2])


@pytest.mark.parametrize("n, folds, message", [
    (3, 2, "3 training clip"), (0, 2, "need at least 4"), (10, 1, "at least 2 folds")])
def test_split_refuses_too_few_clips_or_folds(n, folds, message):
  with pytest.raises(ValueError, match=message):
    crossfit.split(n, seed=0, folds=folds)


def test_each_clip_is_scored_by_the_model_that_did_not_train_on_it():
  rng = np.random.default_rng(0)
  waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (4000, 6000, 5000, 7000, 4500)]
  folds = [[0, 3], [1, 2, 4]]
  models = [(_ConstantScorer(1.0), None), (_ConstantScorer(2.0), None)]  # model k: without fold k
  scores = crossfit.out_of_fold_scores(models, waves, folds, scales=[10.0, 0.5])
  config = _ConstantScorer.config
  expected = np.concatenate([
      np.full(len(range(config.num_frames(len(w)))[config.interior(len(w))]),
              10.0 if i in folds[0] else 1.0) for i, w in enumerate(waves)])
  np.testing.assert_allclose(scores, expected)
  assert scores.dtype == np.float32


def test_out_of_fold_scores_refuse_folds_that_miss_or_repeat_a_clip():
  waves = [np.zeros(4000, np.float32) + 0.01] * 4
  models = [(_ConstantScorer(1.0), None)] * 2
  for folds in ([[0, 1], [2]], [[0, 1], [1, 2, 3]], [[0, 1], [2, 5]]):
    with pytest.raises(ValueError, match="exactly once"):
      crossfit.out_of_fold_scores(models, waves, folds)
  with pytest.raises(ValueError, match="2 folds, 1 fold models"):
    crossfit.out_of_fold_scores(models[:1], waves, [[0, 1], [2, 3]])


def test_heldout_scales_put_the_fold_models_on_the_main_models_scale():
  waves = [np.zeros(5000, np.float32) + 0.01] * 3
  scales = crossfit.heldout_scales((_ConstantScorer(6.0), None),
                                   [(_ConstantScorer(2.0), None), (_ConstantScorer(3.0), None)],
                                   waves)
  assert scales == pytest.approx([3.0, 2.0])
  # A fold model scoring 0 everywhere gives a finite (large) scale, not a division by 0.
  assert np.isfinite(crossfit.heldout_scales((_ConstantScorer(1.0), None),
                                             [(_ConstantScorer(0.0), None)], waves)[0])


class _SpikyScorer(_ConstantScorer):
  """``value`` on every frame but one interior frame of 1000 (a transient)."""

  def __call__(self, params, wave, *, name="waveform", with_codes=False):
    scores = super().__call__(params, wave, name=name, with_codes=with_codes)
    frames = scores[0] if with_codes else scores
    frames[len(frames) // 2] = 1000.0
    return scores


def test_heldout_scales_are_ratios_of_median_frame_scores():
  """The median, not the mean: one transient frame per held-out clip leaves the scale."""
  waves = [np.zeros(5000, np.float32) + 0.01] * 3
  scales = crossfit.heldout_scales((_SpikyScorer(6.0), None),
                                   [(_SpikyScorer(2.0), None), (_ConstantScorer(3.0), None)],
                                   waves)
  assert scales == pytest.approx([3.0, 2.0])


def test_bank_scores_put_each_clip_s_out_of_fold_scores_on_the_main_model_s_scale():
  """Fold models scoring 2 and 3 where the main model scores 6: scaled by 3 and 2,
  every bank score is 6; the record holds the folds and the scales."""
  waves = [np.zeros(n, np.float32) + 0.01 for n in (4000, 5000, 4500, 6000)]
  folds = [[0, 2], [1, 3]]
  scores, record = crossfit.bank_scores(
      (_ConstantScorer(6.0), None), [(_ConstantScorer(2.0), None), (_ConstantScorer(3.0), None)],
      folds, fit_waves=waves, heldout_waves=waves[:2])
  config = _ConstantScorer.config
  assert scores.shape == (sum(config.interior_count(len(w)) for w in waves),)
  np.testing.assert_allclose(scores, 6.0, rtol=1e-6)
  assert record == {"folds": 2, "clips_per_fold": [2, 2], "scales": [3.0, 2.0]}


def test_bu_s_bank_takes_re_s_fold_models_whichever_loss_comes_first():
  """With BU before RE in a run's losses, RE's fold models still train once."""
  calls, cache = [], {}
  def train(owner):
    calls.append(owner)
    return [f"{owner}-params"], [[0], [1]], 7
  got = {loss: crossfit.shared_fold_models(loss, bu_folds="re", cache=cache, train=train)
         for loss in ("bu", "re")}
  assert calls == ["re"]
  assert got == {"bu": ("re", ["re-params"], [[0], [1]], 7),
                 "re": ("re", ["re-params"], [[0], [1]], 0)}


@pytest.mark.parametrize("steps, folds, schedule, expected", [
    (100, 2, "scaled", 50), (500, 2, "scaled", 250), (1, 2, "scaled", 1), (3, 2, "scaled", 2),
    (90, 3, "scaled", 60), (100, 2, "full", 100), (7, 3, "full", 7),
    (100, 2, "short", 25), (90, 3, "short", 30), (1, 2, "short", 1), (6, 2, "short", 2)])
def test_fold_steps_per_epoch_keep_the_passes_over_the_clips(steps, folds, schedule, expected):
  """A fold model trains on (folds - 1) / folds of the clips: "scaled" shortens its
  epochs by as much (at least one step), "short" by half as much again, "full"
  keeps the main model's."""
  assert crossfit.fold_steps_per_epoch(steps, schedule=schedule, folds=folds) == expected


def test_fold_steps_per_epoch_refuse_an_unknown_schedule():
  with pytest.raises(ValueError, match=r"--crossfit_schedule must be one of \('scaled', 'short', 'full'\)"):
    crossfit.fold_steps_per_epoch(100, schedule="half")
  with pytest.raises(ValueError, match="at least 2 folds"):
    crossfit.fold_steps_per_epoch(100, folds=1)


def test_check_split_names_where_and_the_flag():
  crossfit.check_split(4, seed=0, where="fan id_00")  # enough: no error
  with pytest.raises(data.DataError, match=r"^fan id_00: --normalization_bank=crossfit \(or auto\): 3 "):
    crossfit.check_split(3, seed=0, where="fan id_00")


def test_pca_fold_models_are_fitted_on_the_other_folds_only():
  config = _ConstantScorer.config
  rng = np.random.default_rng(1)
  quiet = [rng.standard_normal(6000).astype(np.float32) * 0.01 for _ in range(2)]
  loud = [rng.standard_normal(6000).astype(np.float32) * (1.0 + 0.5 * np.sin(
      np.arange(6000) / 40.0)).astype(np.float32) for _ in range(2)]
  waves, folds = quiet + loud, [[0, 1], [2, 3]]
  models = crossfit.pca_fold_models(config, components=2, waves=waves, folds=folds)
  assert len(models) == 2 and all(params is None for _, params in models)
  for k, (scorer, _) in enumerate(models):
    expected = reference.PCADetector(config, components=2).fit(
        [waves[i] for i in crossfit.others(folds, k)])
    for w in waves:
      np.testing.assert_allclose(scorer(None, w), expected.frame_scores(w), rtol=1e-6)
  # The model without the quiet clips has never seen them: they score higher under it.
  assert np.median(models[0][0](None, quiet[0])) > np.median(models[1][0](None, quiet[0]))


def test_bu_s_bank_comes_from_re_s_fold_models_by_default():
  assert crossfit.DEFAULT_BU_FOLDS == "re"
  assert [crossfit.fold_loss(l) for l in ("re", "snp", "bu")] == ["re", "snp", "re"]
  assert [crossfit.fold_loss(l, bu_folds="bu") for l in ("re", "snp", "bu")] == [
      "re", "snp", "bu"]
  with pytest.raises(ValueError, match=r"--crossfit_bu_folds must be one of \('re', 'bu'\), "
                     r"got 'snp'"):
    crossfit.fold_loss("bu", bu_folds="snp")


@pytest.mark.parametrize("bu_folds,trained", [("re", ["re", "snp"]), ("bu", ["re", "snp", "bu"])])
def test_a_run_trains_each_loss_s_fold_models_once(bu_folds, trained):
  calls, cache = [], {}
  def train(owner):
    calls.append(owner)
    return [f"{owner}-params"], [[0], [1]], 7
  got = {loss: crossfit.shared_fold_models(loss, bu_folds=bu_folds, cache=cache, train=train)
         for loss in ("re", "snp", "bu")}
  assert calls == trained
  assert got["re"] == ("re", ["re-params"], [[0], [1]], 7)
  assert got["bu"] == (("re", ["re-params"], [[0], [1]], 0) if bu_folds == "re"
                       else ("bu", ["bu-params"], [[0], [1]], 7))


def test_previous_fold_seconds_only_from_the_same_fold_models():
  """A record of RE's fold models gives no time for BU's own (--crossfit_bu_folds=bu)."""
  assert crossfit.previous_fold_seconds({"fold_models": "bu", "train_seconds": 6.7}, "bu") == 6.7
  assert crossfit.previous_fold_seconds({"fold_models": "re", "train_seconds": 4.5}, "bu") is None
  assert crossfit.previous_fold_seconds({"train_seconds": 3.0}, "re") == 3.0  # older record
  assert crossfit.previous_fold_seconds(None, "re") is None
  assert crossfit.previous_fold_seconds({}, "re") is None
