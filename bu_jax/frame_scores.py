"""Frame-wise anomaly scores of whole recordings, chunked with bounded memory.

``FrameScorer(model, config)(params, wave)`` returns A(x_t) (eq. 5) for every
frame t of ``wave``: the values of ``anomaly_score(features(wave), AE(...))``
on the whole clip (edge-padded context at the clip's ends; equal to float32
rounding, about 2e-7 relative at most), but computed in
chunks of at most ``chunk_frames`` frames, so an hour-long recording never
materializes its (T, D) feature matrix. Each chunk is one jitted call on a
static shape (chunk sizes are rounded up to a multiple of 256 frames, so few
shapes are compiled). With ``with_codes=True`` it also returns each frame's
code, the AE's encoder output E(z_t) (``models.FCNAutoencoder.score_and_code``),
from a second jitted function; the default path is unchanged. ``chunks`` yields
the same, chunk by chunk. The waveform may be an ``audio.Recording`` (a long
file read range by range): then only each chunk's range of samples is read and
checked, so a day-long recording is scored in bounded memory.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import numpy as np

from bu_jax import audio
from bu_jax import features as features_lib
from bu_jax import models


def _round_up(n: int, k: int) -> int:
  return -(-n // k) * k


class FrameScorer:
  """Chunked, jitted frame scores for one model and feature configuration."""

  def __init__(self, model: nn.Module, config: features_lib.FeatureConfig, *,
               chunk_frames: int = 4096):
    if chunk_frames < 1:
      raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    self.model = model
    self.config = config
    self.chunk_frames = chunk_frames
    self._score = jax.jit(functools.partial(self._score_chunk, models.score_fn(model), config))
    self._score_and_code = None  # jitted on the first call with codes

  @staticmethod
  def _score_chunk(fn, config, params, window, gather):
    psi = features_lib.log_mel(window, config=config, center=False)  # (P, M)
    x = psi[gather].reshape(gather.shape[0], -1)  # (F, (2C+1) M)
    return fn(params, x)

  @staticmethod
  def _window(wave: np.ndarray, start: int, length: int) -> np.ndarray:
    """wave[start : start + length], zero outside the clip (the centered-STFT
    padding), without copying the whole recording."""
    window = np.zeros(length, np.float32)
    a, b = max(start, 0), min(start + length, wave.size)
    if b > a:
      window[a - start:b - start] = wave[a:b]
    return window

  def frames(self, num_samples: int) -> int:
    return self.config.num_frames(num_samples)

  def __call__(self, params, wave, *, name: str = "waveform", with_codes: bool = False):
    """A(x_t) for t = 0 .. T-1.

    Args:
      params: the AE parameters.
      wave: a mono waveform (N,) at the configured sample rate, or an
        ``audio.Recording``.
      name: names the recording in error messages.
      with_codes: also return each frame's code E(z_t) (the encoder's output
        for the AE's normalized input).

    Returns:
      The scores, float32 numpy (T,); with ``with_codes`` the pair
      ``(scores (T,), codes (T, Z))``, both float32.
    """
    parts = list(self.chunks(params, wave, name=name, with_codes=with_codes))
    out = [np.concatenate(column) for column in zip(*parts)]
    return tuple(out) if with_codes else out[0]

  def chunks(self, params, wave, *, name: str = "waveform", with_codes: bool = False):
    """``__call__``'s result chunk by chunk, in order: ``(scores,)`` or
    ``(scores, codes)`` of consecutive frames, each chunk one jitted call."""
    recording = isinstance(wave, audio.Recording)
    if not recording:
      wave = features_lib.check_waveform(wave, name=name)
      if wave.ndim != 1:
        raise ValueError(f"{name}: expected a mono waveform (N,), got shape {wave.shape}")
    cfg = self.config
    hop, n_fft, c = cfg.hop_length, cfg.n_fft, cfg.context
    t_total = cfg.num_frames(wave.size)
    f = min(self.chunk_frames, _round_up(t_total, 256))
    p = f + 2 * c  # psi frames per chunk window
    win_len = (p - 1) * hop + n_fft
    offsets = np.arange(-c, c + 1)
    if with_codes and self._score_and_code is None:
      self._score_and_code = jax.jit(functools.partial(
          self._score_chunk, models.score_and_code_fn(self.model), cfg))
    chunk_fn = self._score_and_code if with_codes else lambda *args: (self._score(*args),)
    for a in range(0, t_total, f):
      b = min(a + f, t_total)
      lo = max(0, a - c)
      t = np.minimum(np.arange(a, a + f), t_total - 1)
      gather = np.clip(t[:, None] + offsets[None, :], 0, t_total - 1) - lo
      window = self._window(wave, lo * hop - n_fft // 2, win_len)
      if recording:  # read just now: checked as check_waveform checks a whole wave
        at = (wave.offset + max(lo * hop - n_fft // 2, 0)) / cfg.sample_rate  # in the file
        window = features_lib.check_waveform(window, name=f"{name} (at {at:.1f} s)")
      yield tuple(np.asarray(x, np.float32)[: b - a]
                  for x in chunk_fn(params, window, gather.astype(np.int32)))
