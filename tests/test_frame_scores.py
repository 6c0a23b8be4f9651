"""Chunked frame scoring equals whole-clip scoring, across chunk boundaries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bu_jax import features, models, frame_scores

CFG = features.FeatureConfig(n_mels=8, context=2)


@pytest.fixture(scope="module")
def model_and_params():
  model = models.FCNAutoencoder(dim=CFG.dim, hidden_layers=1, units=16, bottleneck=4)
  return model, model.init(jax.random.key(0), jnp.zeros((1, CFG.dim)))["params"]


def _reference(model, params, wave):
  x = features.features(wave, config=CFG)
  return np.asarray(models.anomaly_score(x, model.apply({"params": params}, x)))


@pytest.mark.parametrize("num_samples,chunk_frames", [
    (300, 4096), (16000 * 3 + 77, 4096), (16000 * 3 + 77, 64), (16000, 5), (16000, 1)])
def test_chunked_scores_equal_whole_clip(model_and_params, num_samples, chunk_frames):
  model, params = model_and_params
  rng = np.random.default_rng(num_samples)
  wave = (0.2 * rng.standard_normal(num_samples)).astype(np.float32)
  wave[num_samples // 2:] *= 5  # a level change inside the clip
  got = frame_scores.FrameScorer(model, CFG, chunk_frames=chunk_frames)(params, wave)
  ref = _reference(model, params, wave)
  assert got.shape == (CFG.num_frames(num_samples),)
  np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-4)


def test_bad_input_named(model_and_params):
  model, params = model_and_params
  wave = np.zeros(1000, np.float32)
  wave[3] = np.nan
  with pytest.raises(ValueError, match="rec.wav"):
    frame_scores.FrameScorer(model, CFG)(params, wave, name="rec.wav")
