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
  stereo = np.zeros((2, 1000), np.float32)
  with pytest.raises(ValueError, match=r"st.wav: expected a mono waveform \(N,\)"):
    frame_scores.FrameScorer(model, CFG)(params, stereo, name="st.wav")
  with pytest.raises(ValueError, match="chunk_frames must be >= 1, got 0"):
    frame_scores.FrameScorer(model, CFG, chunk_frames=0)


@pytest.mark.parametrize("standardize", [False, True])
def test_codes_are_the_encoder_output_and_scores_unchanged(standardize):
  model = models.FCNAutoencoder(dim=CFG.dim, hidden_layers=1, units=16, bottleneck=4,
                                standardize_input=standardize)
  params = model.init(jax.random.key(1), jnp.zeros((1, CFG.dim)))["params"]
  if standardize:
    params = models.set_input_statistics(params, np.full(CFG.dim, -3.0), np.full(CFG.dim, 2.0))
  rng = np.random.default_rng(3)
  wave = (0.2 * rng.standard_normal(16000 + 123)).astype(np.float32)
  x = features.features(wave, config=CFG)
  want = np.asarray(model.apply({"params": params}, x,
                                method=lambda m, v: m.encode(m.normalize(v))))
  plain = frame_scores.FrameScorer(model, CFG)(params, wave)
  for chunk_frames in (4096, 7):
    scorer = frame_scores.FrameScorer(model, CFG, chunk_frames=chunk_frames)
    scores, codes = scorer(params, wave, with_codes=True)
    assert codes.shape == (CFG.num_frames(wave.size), 4) and codes.dtype == np.float32
    np.testing.assert_allclose(codes, want, rtol=2e-5, atol=1e-5)
    same_chunks = scorer(params, wave)  # the default path, same chunking
    np.testing.assert_array_equal(scores, same_chunks)
    np.testing.assert_allclose(scores, plain, rtol=2e-5, atol=1e-4)  # chunked == whole
