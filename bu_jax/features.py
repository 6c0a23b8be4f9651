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

import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16000


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
  """Feature settings. ``dim`` is the paper's D = M (2C + 1)."""

  n_mels: int
  context: int
  sample_rate: int = SAMPLE_RATE
  n_fft: int = 512
  hop_length: int = 256
  floor: float = 1e-5  # added to the mel amplitude before ln (silence -> ln(floor))

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
    half = self.n_fft // 2
    first_full = -(-half // self.hop_length)  # first STFT frame with t hop - n_fft/2 >= 0
    last_full = (num_samples - half) // self.hop_length  # t hop + n_fft/2 <= N
    start, stop = first_full + self.context, last_full - self.context + 1
    if stop <= start:
      return slice(0, total)
    return slice(start, min(stop, total))


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


def stft_magnitude(wave: jax.Array, *, n_fft: int = 512, hop_length: int = 256,
                   center: bool = True) -> jax.Array:
  """|STFT| of ``wave`` (..., N) -> (..., 1 + N // hop_length, n_fft // 2 + 1).

  Matches ``np.abs(librosa.stft(wave, n_fft=n_fft, hop_length=hop_length))``
  (centered frames, zero padding of n_fft // 2 on both sides, periodic Hann),
  transposed to time-major. With ``center=False`` frame t is
  ``wave[t hop : t hop + n_fft]`` and there are 1 + (N - n_fft) // hop frames
  (used to compute a long clip's frames chunk by chunk).
  """
  wave = jnp.asarray(wave, jnp.float32)
  n = wave.shape[-1]
  if center:
    pad = n_fft // 2
    widths = [(0, 0)] * (wave.ndim - 1) + [(pad, pad)]
    padded = jnp.pad(wave, widths)
    num_frames = 1 + n // hop_length
  else:
    padded = wave
    num_frames = 1 + (n - n_fft) // hop_length
  idx = (np.arange(num_frames)[:, None] * hop_length
         + np.arange(n_fft)[None, :])
  frames = padded[..., idx] * _hann(n_fft)
  return jnp.abs(jnp.fft.rfft(frames, n=n_fft, axis=-1))


def log_mel(wave: jax.Array, *, config: FeatureConfig,
            center: bool = True) -> jax.Array:
  """psi = ln(Mel_M(|X|) + floor) (section 4.2.2); shape (..., T, M)."""
  mag = stft_magnitude(wave, n_fft=config.n_fft, hop_length=config.hop_length,
                       center=center)
  mel = mel_matrix(sample_rate=config.sample_rate, n_fft=config.n_fft,
                   n_mels=config.n_mels)
  mel_amp = jnp.einsum("...tf,mf->...tm", mag, mel,
                       precision=jax.lax.Precision.HIGHEST)
  return jnp.log(jnp.maximum(mel_amp, 0.0) + config.floor)


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

  Raises FeatureInputError naming ``name`` (e.g. the file path) for empty input
  or NaN/Inf samples. Silence is fine (its features are ln(floor)).
  """
  arr = np.asarray(wave, dtype=np.float32)
  if arr.size == 0 or arr.shape[-1] == 0:
    raise FeatureInputError(f"{name}: empty waveform (0 samples)")
  bad = ~np.isfinite(arr)
  if bad.any():
    first = np.argwhere(bad)[0].tolist()
    raise FeatureInputError(
        f"{name}: waveform has {int(bad.sum())} non-finite samples "
        f"(NaN/Inf), first at index {first}")
  return arr


@functools.partial(jax.jit, static_argnames=("config",))
def _features_jit(wave, config):
  return features(wave, config=config)


def extract(wave, *, config: FeatureConfig, name: str = "waveform") -> jax.Array:
  """Checked, jitted ``features`` for concrete (host) input; see check_waveform."""
  return _features_jit(check_waveform(wave, name=name), config)
