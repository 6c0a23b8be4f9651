"""Log-mel features with context stacking (paper section 4.2.2).

Pure ``jnp`` functions, batched over leading axes, safe under ``jax.jit`` and
``jax.vmap``. The mel matrix comes from ``librosa.filters.mel`` and is computed
once per configuration, then held as a constant.

The pipeline for a waveform ``w`` (16 kHz, float) is::

    X      = STFT(w)                 # Hann window 512, hop 256, centered
    psi_t  = ln(Mel_M |X_t| + floor)  # amplitude mel spectrum, natural log
    x_t    = (psi_{t-C}, ..., psi_{t+C})   # D = M (2C + 1)

Edges of the context window: frames before the first / after the last frame
repeat the first / last frame ("edge" padding), so a clip of ``T`` STFT frames
yields exactly ``T`` feature vectors and frame ``t`` of the features is frame
``t`` of the spectrogram.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16000
MAX_AMPLITUDE = 1e15  # |X|^2 of a 512-point frame stays finite in float32 below this


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
  """Feature settings. ``dim`` is the paper's D = M (2C + 1)."""

  n_mels: int
  context: int
  sample_rate: int = SAMPLE_RATE
  n_fft: int = 512
  hop_length: int = 256
  floor: float = 1e-5  # added to the mel amplitude before ln (silence -> ln(floor))

  def __post_init__(self):
    for name in ("n_mels", "sample_rate", "n_fft", "hop_length"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"FeatureConfig.{name} must be a positive integer, got {value!r}")
    if isinstance(self.context, bool) or not isinstance(self.context, (int, np.integer)) \
        or self.context < 0:
      raise ValueError(f"FeatureConfig.context must be an integer >= 0, got {self.context!r}")
    if not (np.isfinite(self.floor) and self.floor > 0):  # ln(0 + floor) must be finite
      raise ValueError(f"FeatureConfig.floor must be finite and > 0, got {self.floor!r}")

  @property
  def dim(self) -> int:
    return self.n_mels * (2 * self.context + 1)

  def num_frames(self, num_samples: int) -> int:
    """Number of (centered) STFT frames for a clip of ``num_samples``."""
    return 1 + num_samples // self.hop_length

  def interior(self, num_samples: int) -> slice:
    """The feature frames that see only the clip's own samples.

    Frame t is interior when every STFT window of its context t-C .. t+C lies
    wholly inside the clip: no zero padding of the centered STFT and no
    edge-replicated context. The frames outside (about C + 1 at each end)
    have attenuated, padded spectra that no training frame resembles and
    score high on every clip, so clip scores (eq. 11) and detected events
    use interior frames only. Falls back to all frames for a clip too short
    to have any.
    """
    total = self.num_frames(num_samples)
    if num_samples < self.min_interior_samples:
      return slice(0, total)
    half = self.n_fft // 2
    last_full = (num_samples - half) // self.hop_length  # t hop + n_fft/2 <= N
    return slice(self._first_full + self.context, min(last_full - self.context + 1, total))

  def interior_count(self, num_samples: int) -> int:
    """How many frames ``interior`` keeps of a clip of ``num_samples``."""
    return len(range(self.num_frames(num_samples))[self.interior(num_samples)])

  @property
  def _first_full(self) -> int:
    """The first STFT frame t with t hop - n_fft/2 >= 0 (no zero padding)."""
    return -(-(self.n_fft // 2) // self.hop_length)

  @property
  def min_interior_samples(self) -> int:
    """The shortest clip with one interior frame (``interior``)."""
    return self.n_fft // 2 + self.hop_length * (self._first_full + 2 * self.context)

  def short_clip_note(self, num_samples: int) -> str | None:
    """Why a clip of ``num_samples`` is scored from padded frames (too short for
    one interior frame: ``interior`` falls back to all frames), or None."""
    shortest = self.min_interior_samples
    if num_samples >= shortest:
      return None
    return (f"{num_samples / self.sample_rate:.3g} s long, shorter than the "
            f"{shortest / self.sample_rate:.3g} s one frame needs with its context: scored from "
            "zero-padded frames, which score high on any clip")


def short_window_note(num_samples: Sequence[int], config: FeatureConfig, *,
                      window: int) -> tuple[int, Optional[str]]:
  """How many clips have fewer interior frames (``FeatureConfig.interior``) than a
  clip-score window of ``window`` frames, and a note saying so (None when none).

  Such a clip has a single window, the whole clip (``evaluate.window_means``): its
  score is its mean frame score, not the maximum of window means the others get.
  """
  if window <= 1:
    return 0, None
  counts = [config.interior_count(int(n)) for n in num_samples]
  short = [c for c in counts if c < window]
  if not short:
    return 0, None
  seconds = window * config.hop_length / config.sample_rate
  return len(short), (
      f"{len(short)} of {len(counts)} clips have fewer interior frames ({min(short)} at the "
      f"fewest) than the clip-score window of {window} frames ({seconds:.3g} s): each is "
      "scored by its mean over the whole clip")


def warn_short_clips(paths, waves, config: FeatureConfig) -> None:
  """A warning naming each clip too short for one interior frame
  (``FeatureConfig.short_clip_note``); such a clip is still scored."""
  for path, wave in zip(paths, waves):
    note = config.short_clip_note(len(wave))
    if note:
      logging.warning("%s: %s", path, note)


FCN40 = FeatureConfig(n_mels=40, context=5)   # D = 440
FCN64 = FeatureConfig(n_mels=64, context=10)  # D = 1344
PRESETS = {"fcn40": FCN40, "fcn64": FCN64}


class FeatureInputError(ValueError):
  """Raised at the API boundary for waveforms that cannot give features."""


@functools.lru_cache(maxsize=None)
def mel_matrix(*, sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
  """librosa's Slaney mel filterbank, shape (n_mels, n_fft // 2 + 1), float32."""
  import librosa  # pylint: disable=g-import-not-at-top

  return librosa.filters.mel(
      sr=sample_rate, n_fft=n_fft, n_mels=n_mels).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _hann(n_fft: int) -> np.ndarray:
  # Periodic Hann window, as scipy.signal.get_window("hann", n_fft) / librosa.
  n = np.arange(n_fft)
  return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)).astype(np.float32)


# Longest run of frames that the CPU path computes in one go (see ``log_mel``).
# On XLA's CPU backend (jax 0.10, 2 cores) the framing + FFT + mel + log chain
# runs at about 2 us per frame for one clip of up to a few thousand frames, but
# at about 4 us per frame in one pass over a batch of clips (32 x 10 s: 73-100
# ms in one pass, 35-41 ms clip by clip; benchmarks/features.py). Mapping over
# clips, and over ~1k-frame segments of long clips, keeps the fast regime.
CPU_FRAMES_PER_BLOCK = 1024
# Blocks per step of that loop, as independent chains (not vmapped) that the
# CPU runtime can run on separate cores: 2 chains took 33-41 ms where 1 took
# 50-52 ms on the 2-core machine. Capped to keep the unrolled program small.
CPU_STREAMS = min(4, os.cpu_count() or 1)


def default_frames_per_block() -> int | None:
  """``CPU_FRAMES_PER_BLOCK`` on the CPU backend, None (one pass) on GPU/TPU."""
  return CPU_FRAMES_PER_BLOCK if jax.default_backend() == "cpu" else None


def _frame_count(num_samples: int, *, n_fft: int, hop_length: int, center: bool) -> int:
  if center:
    return 1 + num_samples // hop_length
  num_frames = 1 + (num_samples - n_fft) // hop_length
  if num_frames < 1:
    raise ValueError(f"center=False needs at least n_fft={n_fft} samples, got {num_samples}")
  return num_frames


def _center_pad(wave: jax.Array, *, n_fft: int) -> jax.Array:
  """Zero padding of n_fft // 2 on both sides (librosa's centered frames)."""
  pad = n_fft // 2
  return jnp.pad(wave, [(0, 0)] * (wave.ndim - 1) + [(pad, pad)])


def _frame_magnitude(padded: jax.Array, *, num_frames: int, n_fft: int,
                     hop_length: int) -> jax.Array:
  """|rfft(hann * padded[..., t hop : t hop + n_fft])| -> (..., num_frames, n_fft/2+1)."""
  idx = (np.arange(num_frames)[:, None] * hop_length
         + np.arange(n_fft)[None, :])
  spec = jnp.fft.rfft(padded[..., idx] * _hann(n_fft), n=n_fft, axis=-1)
  return jnp.sqrt(spec.real * spec.real + spec.imag * spec.imag)


def _blockwise(per_segment, wave: jax.Array, *, center: bool, n_fft: int,
               hop_length: int, frames_per_block: int | None) -> jax.Array:
  """Applies ``per_segment(segment, frames) -> (frames, K)`` one block at a time.

  ``per_segment`` gets a 1-D signal whose frame t is ``[t hop, t hop + n_fft)``
  (centered padding already applied). With ``frames_per_block=None``, or for
  a single clip of at most that many frames, this is one vectorized call.
  Otherwise every clip is one block, a clip longer than ``frames_per_block``
  frames is first cut into equal segments of at most that many frames
  (overlapping by ``n_fft - hop`` samples, so every frame sees exactly its
  own samples), and ``lax.map`` runs the blocks one after another,
  ``CPU_STREAMS`` per step. The result is the same up to float rounding;
  only the order of work changes.
  """
  wave = jnp.asarray(wave, jnp.float32)
  lead = wave.shape[:-1]
  num_frames = _frame_count(wave.shape[-1], n_fft=n_fft, hop_length=hop_length,
                            center=center)
  x = wave.reshape(-1, wave.shape[-1])
  clips = x.shape[0]
  identity = lambda r: r  # pylint: disable=unnecessary-lambda-assignment
  pad = functools.partial(_center_pad, n_fft=n_fft) if center else identity
  if frames_per_block is None or clips == 1 and num_frames <= frames_per_block:
    out = jax.vmap(lambda r: per_segment(r, num_frames))(pad(x))
    return out.reshape(*lead, num_frames, out.shape[-1])
  if num_frames > frames_per_block:
    x, pad = pad(x), identity  # segments are cut from the padded clips
    segs_per_clip = -(-num_frames // frames_per_block)
    f = -(-num_frames // segs_per_clip)  # balanced: fewer than segs_per_clip wasted frames
    seg_len = (f - 1) * hop_length + n_fft
    need = (segs_per_clip * f - 1) * hop_length + n_fft
    if need > x.shape[-1]:
      x = jnp.pad(x, [(0, 0), (0, need - x.shape[-1])])
    starts = np.arange(segs_per_clip) * f * hop_length
    x = x[:, starts[:, None] + np.arange(seg_len)[None, :]]
    x = x.reshape(clips * segs_per_clip, seg_len)
  else:  # whole clips, padded inside the loop (a small copy that stays in cache)
    f, segs_per_clip = num_frames, 1
  rows = x.shape[0]
  streams = min(CPU_STREAMS, rows)
  steps = -(-rows // streams)
  if steps * streams > rows:  # zero rows (silence) to fill the last step; dropped below
    x = jnp.pad(x, [(0, steps * streams - rows), (0, 0)])

  def step(group):  # `streams` independent chains that XLA may run concurrently
    return jnp.stack([per_segment(pad(group[i]), f) for i in range(streams)])

  out = jax.lax.map(step, x.reshape(steps, streams, x.shape[-1]))
  out = out.reshape(steps * streams, f, out.shape[-1])[:rows]
  out = out.reshape(clips, segs_per_clip * f, out.shape[-1])[:, :num_frames]
  return out.reshape(*lead, num_frames, out.shape[-1])


def stft_magnitude(wave: jax.Array, *, n_fft: int = 512, hop_length: int = 256,
                   center: bool = True) -> jax.Array:
  """|STFT| of ``wave`` (..., N) -> (..., 1 + N // hop_length, n_fft // 2 + 1).

  Matches ``np.abs(librosa.stft(wave, n_fft=n_fft, hop_length=hop_length))``
  (centered frames, zero padding of n_fft // 2 on both sides, periodic Hann),
  transposed to time-major. With ``center=False`` frame t is
  ``wave[t hop : t hop + n_fft]`` and there are 1 + (N - n_fft) // hop frames
  (used to compute a long clip's frames chunk by chunk). One vectorized pass;
  ``log_mel`` is the blocked, faster-on-CPU path.
  """
  wave = jnp.asarray(wave, jnp.float32)
  num_frames = _frame_count(wave.shape[-1], n_fft=n_fft, hop_length=hop_length,
                            center=center)
  padded = _center_pad(wave, n_fft=n_fft) if center else wave
  return _frame_magnitude(padded, num_frames=num_frames, n_fft=n_fft,
                          hop_length=hop_length)


def log_mel(wave: jax.Array, *, config: FeatureConfig, center: bool = True,
            frames_per_block: int | None | str = "auto") -> jax.Array:
  """psi = ln(Mel_M(|X|) + floor) (section 4.2.2); shape (..., T, M).

  ``frames_per_block``: how many frames to compute at a time. On CPU the
  framing, FFT, mel product and log run clip by clip (``lax.map``), long clips
  in segments of at most this many frames, which is about twice as fast as one
  pass over a batch (see ``CPU_FRAMES_PER_BLOCK``); ``None`` is one vectorized
  pass, which is what accelerators want. "auto" is
  ``default_frames_per_block()``. The values do not depend on it.
  """
  if frames_per_block == "auto":
    frames_per_block = default_frames_per_block()
  elif frames_per_block is not None and (
      isinstance(frames_per_block, str) or frames_per_block < 1):
    raise ValueError(f'frames_per_block must be "auto", None or >= 1, got '
                     f"{frames_per_block!r}")
  mel = mel_matrix(sample_rate=config.sample_rate, n_fft=config.n_fft,
                   n_mels=config.n_mels)

  def per_segment(segment, frames):
    mag = _frame_magnitude(segment, num_frames=frames, n_fft=config.n_fft,
                           hop_length=config.hop_length)
    mel_amp = jnp.einsum("tf,mf->tm", mag, mel, precision=jax.lax.Precision.HIGHEST)
    return jnp.log(jnp.maximum(mel_amp, 0.0) + config.floor)

  return _blockwise(per_segment, wave, center=center, n_fft=config.n_fft,
                    hop_length=config.hop_length, frames_per_block=frames_per_block)


def stack_context(psi: jax.Array, *, context: int) -> jax.Array:
  """x_t = (psi_{t-C}, ..., psi_{t+C}), edge-padded; (..., T, M) -> (..., T, M(2C+1))."""
  if context == 0:
    return psi
  t = psi.shape[-2]
  idx = np.clip(np.arange(t)[:, None] + np.arange(-context, context + 1)[None, :],
                0, t - 1)  # (T, 2C+1)
  stacked = psi[..., idx, :]  # (..., T, 2C+1, M)
  return stacked.reshape(*psi.shape[:-2], t, (2 * context + 1) * psi.shape[-1])


def features(wave: jax.Array, *, config: FeatureConfig) -> jax.Array:
  """Stacked log-mel features of ``wave`` (..., N) -> (..., T, D). Pure, jittable."""
  return stack_context(log_mel(wave, config=config), context=config.context)


def check_waveform(wave, *, name: str = "waveform") -> np.ndarray:
  """Host-side check at the API boundary: a finite, non-empty float array.

  Raises FeatureInputError naming ``name`` (e.g. the file path) for empty input,
  a scalar, integer / boolean / complex samples (PCM integers must be scaled to
  [-1, 1] first, e.g. ``x / 32768`` for int16: unscaled they would shift every
  feature by ln 32768), NaN/Inf samples, or amplitudes beyond 1e15, whose
  spectra overflow float32. Silence is fine (its features are ln(floor)).
  """
  raw = np.asarray(wave)
  if raw.dtype.kind in "biuc":
    raise FeatureInputError(f"{name}: waveform of {raw.dtype} samples; pass floats in [-1, 1] "
                            "(e.g. int16 PCM / 32768)")
  if raw.ndim == 0:
    raise FeatureInputError(f"{name}: a waveform is an array of samples, got a scalar")
  arr = raw.astype(np.float32)
  if arr.size == 0 or arr.shape[-1] == 0:
    raise FeatureInputError(f"{name}: empty waveform (0 samples)")
  bad = ~np.isfinite(arr)
  if bad.any():
    first = np.argwhere(bad)[0].tolist()
    raise FeatureInputError(
        f"{name}: waveform has {int(bad.sum())} non-finite samples "
        f"(NaN/Inf), first at index {first}")
  peak = float(np.max(np.abs(arr)))
  if peak > MAX_AMPLITUDE:
    raise FeatureInputError(f"{name}: peak amplitude {peak:.3g} > {MAX_AMPLITUDE:g}; audio is "
                            "expected in [-1, 1] (its spectra would overflow float32)")
  return arr


@functools.partial(jax.jit, static_argnames=("config",))
def _features_jit(wave, config):
  return features(wave, config=config)


def extract(wave, *, config: FeatureConfig, name: str = "waveform") -> jax.Array:
  """Checked, jitted ``features`` for concrete (host) input; see check_waveform."""
  return _features_jit(check_waveform(wave, name=name), config)


def statistics(waves, *, config: FeatureConfig,
               names=None) -> tuple[np.ndarray, np.ndarray]:
  """Per-dimension mean and standard deviation of the interior feature frames.

  Over all clips of ``waves`` (normal training clips), float64 accumulation;
  used to standardize an autoencoder's input with training statistics.
  """
  if not waves:
    raise ValueError("statistics needs at least one clip")
  names = names or [f"clip {i}" for i in range(len(waves))]
  total = np.zeros(config.dim)
  total_sq = np.zeros(config.dim)
  count = 0
  for wave, name in zip(waves, names):
    x = np.asarray(extract(wave, config=config, name=name), np.float64)
    x = x[config.interior(len(wave))]
    total += x.sum(axis=0)
    total_sq += np.square(x).sum(axis=0)
    count += x.shape[0]
  if count < 2:
    raise ValueError(f"statistics: {count} frame(s); need at least 2")
  mean = total / count
  var = np.maximum(total_sq / count - np.square(mean), 0.0)
  return mean, np.sqrt(var)
