"""The held-out split and the label-free choice of the scoring (bu_jax.heldout)."""

import jax
import numpy as np
import pytest

from bu_jax import frame_scores, heldout, models


def test_split_is_deterministic_disjoint_and_bounded():
  held, fit = heldout.split(20, fraction=0.1, seed=3)
  assert len(held) == 2 and len(fit) == 18 and sorted(held + fit) == list(range(20))
  assert heldout.split(20, fraction=0.1, seed=3) == (held, fit)
  assert heldout.split(20, fraction=0.1, seed=4) != (held, fit)
  assert len(heldout.split(5, fraction=0.01, seed=0)[0]) == 1  # at least one held out
  assert len(heldout.split(3, fraction=0.99, seed=0)[1]) == 1  # at least one trained on
  with pytest.raises(ValueError, match="1 training clip"):
    heldout.split(1, fraction=0.5, seed=0)
  with pytest.raises(ValueError, match=r"fraction must lie in \(0, 1\), got 0"):
    heldout.split(10, fraction=0.0, seed=0)


def test_choosing_without_pseudo_anomalies_is_an_error(tmp_path):
  preset = models.preset("fcn40-small")
  model, config = preset.build(), preset.features
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, config.dim), np.float32))["params"]
  scorer = frame_scores.FrameScorer(model, config)
  rng = np.random.default_rng(0)
  wave = lambda: rng.standard_normal(16000).astype(np.float32) * 0.1
  held = heldout.HeldOut(fit_waves=[wave(), wave()], waves=[wave()], names=["h.wav"])
  with pytest.raises(ValueError, match="needs pseudo-anomalies"):
    heldout.choose_scoring(scorer, params, held, str(tmp_path), kind="auto", neighbors=0,
                           window=1, reduce="max")
  choice = heldout.choose_scoring(scorer, params, held, str(tmp_path), kind="none",
                                  neighbors=10, window=4, reduce="max")
  assert choice.pseudo_auc is None and choice.clip_score["window_frames"] == 4
  assert heldout.describe(choice) == "raw scores, 0.064-s windows"
  assert heldout.calibration_normalization(choice.normalization) is None


def test_validation_error_is_the_mean_over_every_frame_of_the_clips():
  preset = models.preset("fcn40-small")
  model, config = preset.build(), preset.features
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, config.dim), np.float32))["params"]
  scorer = frame_scores.FrameScorer(model, config)
  rng = np.random.default_rng(1)
  short, long = (rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 24000))
  frames = [np.asarray(scorer(params, w)) for w in (short, long)]
  value = heldout.validation_error(scorer, params, [short, long], names=["a.wav", "b.wav"])
  # frame-weighted, not the mean of the two clips' means
  assert value == pytest.approx(np.concatenate(frames).mean(), rel=1e-6)
  assert value != pytest.approx(np.mean([f.mean() for f in frames]), rel=1e-6)
  with pytest.raises(ValueError, match="no held-out clips"):
    heldout.validation_error(scorer, params, [])


def test_validation_summary_reports_the_fall_over_the_last_quarter():
  records = [{"step": s, "heldout_error": v}
             for s, v in ((0, 500.0), (500, 200.0), (1500, 120.0), (2000, 110.0))]
  summary = heldout.validation_summary(records)
  assert summary["steps"] == [0, 500, 1500, 2000]
  assert summary["heldout_error"] == [500.0, 200.0, 120.0, 110.0]
  assert summary["last_quarter_change"] == pytest.approx(110 / 120 - 1)  # from step 1500
  assert heldout.validation_summary(records[:1]) is None
  assert heldout.validation_summary([{"step": 0, "heldout_error": None}] + records[:1]) is None
