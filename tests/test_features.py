"""Log-mel features: parity with librosa, context stacking, bad input."""

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from bu_jax import features

SR = 16000


def _signal(seconds=1.0, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * SR)) / SR
  chirp = 0.3 * np.sin(2 * np.pi * (200 * t + 900 * t**2))
  harm = sum(0.1 / k * np.sin(2 * np.pi * 120 * k * t) for k in range(1, 8))
  return (chirp + harm + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("config", [features.FCN40, features.FCN64])
def test_log_mel_matches_librosa(config):
  wave = _signal()
  mag = np.abs(librosa.stft(wave, n_fft=512, hop_length=256, window="hann",
                            center=True, pad_mode="constant"))
  mel = librosa.filters.mel(sr=SR, n_fft=512, n_mels=config.n_mels)
  ref = np.log(mel @ mag + config.floor).T  # (T, M)
  got = np.asarray(features.log_mel(wave, config=config))
  assert got.shape == ref.shape == (config.num_frames(wave.size), config.n_mels)
  above_floor = (mel @ mag).T > 100 * config.floor
  assert above_floor.mean() > 0.9  # the comparison is on real signal content
  np.testing.assert_allclose(got[above_floor], ref[above_floor], rtol=1e-4)
  np.testing.assert_allclose(got, ref, atol=1e-3)


def test_stft_magnitude_matches_librosa_exactly_shaped():
  wave = _signal(0.37, seed=3)  # odd length, not a multiple of the hop
  ref = np.abs(librosa.stft(wave, n_fft=512, hop_length=256)).T
  got = np.asarray(features.stft_magnitude(wave))
  assert got.shape == ref.shape
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.max())


def test_context_stacking_order_and_edges():
  t, m, c = 6, 3, 2
  psi = jnp.arange(t * m, dtype=jnp.float32).reshape(t, m)
  x = np.asarray(features.stack_context(psi, context=c))
  assert x.shape == (t, m * (2 * c + 1))
  blocks = x.reshape(t, 2 * c + 1, m)
  for ti in range(t):
    for k, off in enumerate(range(-c, c + 1)):
      src = min(max(ti + off, 0), t - 1)  # edge frames repeat
      np.testing.assert_array_equal(blocks[ti, k], np.asarray(psi[src]))
  # The centre block is the frame itself.
  np.testing.assert_array_equal(blocks[:, c], np.asarray(psi))


@pytest.mark.parametrize("name,dim", [("fcn40", 440), ("fcn64", 1344)])
def test_presets_dimension(name, dim):
  cfg = features.PRESETS[name]
  assert cfg.dim == dim
  x = features.extract(_signal(0.5), config=cfg)
  assert x.shape == (cfg.num_frames(8000), dim)


def test_batched_and_vmapped_equal_single():
  cfg = features.FCN40
  waves = np.stack([_signal(0.5, seed=s) for s in range(3)])
  batched = features.features(waves, config=cfg)
  vmapped = jax.vmap(lambda w: features.features(w, config=cfg))(waves)
  single = features.features(waves[1], config=cfg)
  np.testing.assert_allclose(batched, vmapped, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(batched[1], single, rtol=1e-6, atol=1e-6)


def test_silence_is_finite_floor():
  cfg = features.FCN40
  x = np.asarray(features.extract(np.zeros(4000, np.float32), config=cfg))
  assert np.isfinite(x).all()
  np.testing.assert_allclose(x, np.log(cfg.floor), rtol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_raises_clear_error(bad):
  wave = _signal(0.2)
  wave[100] = bad
  with pytest.raises(features.FeatureInputError, match=r"clip\.wav.*non-finite"):
    features.extract(wave, config=features.FCN40, name="clip.wav")


def test_empty_input_raises():
  with pytest.raises(features.FeatureInputError, match="empty"):
    features.extract(np.zeros(0, np.float32), config=features.FCN40)


@pytest.mark.parametrize("num_samples", [16000, 16000 + 100, 16000 + 255])
def test_interior_frames_depend_only_on_the_clip(num_samples):
  """Interior frames equal those of the same clip embedded in a longer signal."""
  cfg = features.FeatureConfig(n_mels=16, context=3)
  rng = np.random.default_rng(num_samples)
  clip = (0.3 * rng.standard_normal(num_samples)).astype(np.float32)
  pad = 256 * 8
  longer = np.concatenate([rng.standard_normal(pad), clip,
                           rng.standard_normal(pad)]).astype(np.float32)
  inner = cfg.interior(num_samples)
  assert 0 < inner.start <= cfg.context + 1 and inner.stop < cfg.num_frames(num_samples)
  x = np.asarray(features.features(clip, config=cfg))[inner]
  y = np.asarray(features.features(longer, config=cfg))[inner.start + 8: inner.stop + 8]
  np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)
  # and the frames just outside the interior do not (they see the padding)
  x_out = np.asarray(features.features(clip, config=cfg))[inner.start - 1]
  y_out = np.asarray(features.features(longer, config=cfg))[inner.start - 1 + 8]
  assert np.abs(x_out - y_out).max() > 1e-2


@pytest.mark.parametrize("shape,frames_per_block", [
    ((5, 4000), 7),        # 5 clips (not a multiple of the CPU streams), each cut in segments
    ((2, 3, 2600), 64),    # nested leading axes, whole clips per block
    ((9000,), 5),          # one long clip in many segments; last segment padded
    ((3, 700), 1),         # one frame per block
])
@pytest.mark.parametrize("center", [True, False])
def test_blocked_log_mel_equals_one_pass_and_librosa(shape, frames_per_block, center):
  """The CPU path (clip by clip, long clips in segments) changes no values."""
  cfg = features.FeatureConfig(n_mels=16, context=0)
  rng = np.random.default_rng(sum(shape))
  waves = (0.2 * rng.standard_normal(shape)).astype(np.float32)
  blocked = np.asarray(features.log_mel(waves, config=cfg, center=center,
                                        frames_per_block=frames_per_block))
  one_pass = np.asarray(features.log_mel(waves, config=cfg, center=center,
                                         frames_per_block=None))
  assert blocked.shape == one_pass.shape
  np.testing.assert_allclose(blocked, one_pass, rtol=1e-5, atol=1e-5)
  flat = waves.reshape(-1, shape[-1])
  mel = librosa.filters.mel(sr=SR, n_fft=512, n_mels=16)
  for i in (0, flat.shape[0] - 1):
    mag = np.abs(librosa.stft(flat[i], n_fft=512, hop_length=256, center=center,
                              pad_mode="constant"))
    ref = np.log(mel @ mag + cfg.floor).T
    np.testing.assert_allclose(blocked.reshape(-1, *blocked.shape[-2:])[i], ref,
                               rtol=1e-4, atol=1e-4)


def test_frames_per_block_default_and_bad_values():
  expected = features.CPU_FRAMES_PER_BLOCK if jax.default_backend() == "cpu" else None
  assert features.default_frames_per_block() == expected
  with pytest.raises(ValueError, match="frames_per_block"):
    features.log_mel(np.zeros(4000, np.float32), config=features.FCN40, frames_per_block=0)
  with pytest.raises(ValueError, match="n_fft=512"):
    features.log_mel(np.zeros(300, np.float32), config=features.FCN40, center=False)


@pytest.mark.parametrize("streams", [1, 3, 4])
def test_blocked_log_mel_any_number_of_chains(monkeypatch, streams):
  """Clips per loop step (CPU_STREAMS follows the core count) change no values."""
  monkeypatch.setattr(features, "CPU_STREAMS", streams)
  cfg = features.FeatureConfig(n_mels=16, context=0)
  waves = (0.2 * np.random.default_rng(streams).standard_normal((5, 3000))).astype(np.float32)
  blocked = features.log_mel(waves, config=cfg, frames_per_block=4)
  one_pass = features.log_mel(waves, config=cfg, frames_per_block=None)
  np.testing.assert_allclose(blocked, one_pass, rtol=1e-5, atol=1e-5)


def test_short_clip_note_names_clips_without_an_interior_frame(caplog):
  """A clip too short for one frame with its whole context is scored from padded
  frames (``interior`` falls back to all of them): warned, with its length."""
  for config in (features.FCN40, features.FCN64):
    shortest = min(n for n in range(1, 20000)
                   if config.interior(n) != slice(0, config.num_frames(n)))
    assert config.short_clip_note(shortest) is None
    assert "one frame needs with its context" in config.short_clip_note(shortest - 1)
  features.warn_short_clips(["a.wav", "b.wav"], [np.zeros(800), np.zeros(16000)], features.FCN40)
  warned = [r.getMessage() for r in caplog.records]
  assert len(warned) == 1 and warned[0].startswith("a.wav: 0.05 s long, shorter than the ")


def test_short_window_note_counts_clips_scored_by_their_mean():
  cfg = features.FCN40
  lengths = [16000, 32000, 160000]
  counts = [cfg.interior_count(n) for n in lengths]
  assert features.short_window_note(lengths, cfg, window=1) == (0, None)
  assert features.short_window_note(lengths, cfg, window=counts[0]) == (0, None)
  short, note = features.short_window_note(lengths, cfg, window=counts[1])
  assert short == 1 and note.startswith(
      f"1 of 3 clips have fewer interior frames ({counts[0]} at the fewest) than the "
      f"clip-score window of {counts[1]} frames")
  assert features.short_window_note(lengths, cfg, window=counts[2] + 1)[0] == 3


@pytest.mark.parametrize("wave, message", [
    (np.zeros(16000, np.int16), "int16 samples; pass floats in"),
    (np.zeros(16000, bool), "bool samples"),
    (np.zeros(16000, np.complex64), "complex64 samples"),
    (np.float32(0.3), "got a scalar"),
    (np.full(16000, 1e16, np.float32), r"peak amplitude 1e\+16 > 1e\+15"),
])
def test_extract_refuses_unscaled_or_overflowing_input_naming_it(wave, message):
  with pytest.raises(features.FeatureInputError, match=f"clip.wav: .*{message}"):
    features.extract(wave, config=features.FCN40, name="clip.wav")


def test_extract_stays_finite_up_to_the_amplitude_limit():
  loud = np.sign(np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
  for config in (features.FCN40, features.FCN64):
    assert np.isfinite(np.asarray(features.extract(loud * features.MAX_AMPLITUDE,
                                                   config=config))).all()


@pytest.mark.parametrize("field, value", [
    ("floor", 0.0), ("floor", -1.0), ("floor", float("nan")), ("hop_length", 0),
    ("n_fft", -512), ("n_mels", 2.5), ("context", -1), ("sample_rate", True)])
def test_feature_config_refuses_values_that_break_the_features(field, value):
  with pytest.raises(ValueError, match=f"FeatureConfig.{field} must be"):
    features.FeatureConfig(**{"n_mels": 40, "context": 5, field: value})


def test_statistics_are_the_mean_and_std_of_the_interior_frames():
  """Per dimension, over the interior frames of all clips pooled (the frames an AE
  trains on), the population standard deviation, not the variance."""
  cfg = features.FeatureConfig(n_mels=8, context=1)
  waves = [_signal(0.5, seed=1), 3.0 * _signal(0.3, seed=2)]
  mean, std = features.statistics(waves, config=cfg)
  frames = np.concatenate([np.asarray(features.extract(w, config=cfg), np.float64)
                           [cfg.interior(len(w))] for w in waves])
  assert mean.shape == std.shape == (cfg.dim,)
  np.testing.assert_allclose(mean, frames.mean(axis=0), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(std, frames.std(axis=0), rtol=1e-5, atol=1e-6)
  assert np.all(std > 0.05) and np.any(np.abs(std - std**2) > 0.05)  # std and var differ


@pytest.mark.parametrize("config", [features.FCN40, features.FeatureConfig(n_mels=8, context=2)])
def test_interior_frames_see_only_the_clip_and_a_clip_always_has_some(config):
  """Every clip, however short, has frames to score (eq. 11 over an empty set is
  undefined): the interior frames when it has any, else all of them. Interior frames
  are those whose every context window lies wholly inside the clip; the next frame on
  either side is not."""
  half, hop, c = config.n_fft // 2, config.hop_length, config.context
  inside = lambda t, n: 0 <= (t - c) * hop - half and (t + c) * hop + half <= n
  for n in range(1, 8 * config.min_interior_samples):
    inner = range(config.num_frames(n))[config.interior(n)]
    assert len(inner) >= 1 and config.interior_count(n) == len(inner), n
    if len(inner) == config.num_frames(n):  # the fall-back: no frame lies inside
      assert not any(inside(t, n) for t in inner), n
      continue
    assert all(inside(t, n) for t in inner), n
    assert not inside(inner[0] - 1, n) and not inside(inner[-1] + 1, n), n
