"""An embedded, deterministic synthetic data set in the paper's "mixing" layout.

A stand-in for the toy-car data of section 4.2.1, small enough for a CPU demo
and generated in seconds (vectorized NumPy, no downloads)::

  <root>/
    metadata.json            written last: its presence marks a complete set
    train/normal_0000.wav    clean machine sound, 10 s (num_train clips)
    test/normal_0000.wav     clean machine sound, 10 s (num_test clips)
    noise/factory_00.wav     factory noise, 20 s (num_noise clips)
    something_else/<family>_000.wav   training "something-else" sounds, < 5 s
    anomaly/<family>_000.wav          test anomalies, a disjoint family

Load it with ``data.load_dataset(root)`` (layout "mixing": noise/ is mixed
into every clip at 0 dB SNR, anomaly/ into the test clips at -10/-15/-20 dB
ANR) and ``data.load_something_else(root + "/something_else")``.

The machine ("toy car") has two operating modes:

* frequent: motor harmonic stack, fundamental 115-135 Hz per clip with slow
  jitter, a resonance near 800 Hz, gear whine at ~23 f0 (~3 kHz) and
  band-limited rolling noise modulated by the wheel rotation;
* rare (warm-up / acceleration), ``rare_fraction`` of the training time
  (default 7.5 %, in episodes of ``rare_seconds``): the fundamental sweeps up
  to 1.7-2x and back, the harmonic spectrum is brighter (slower roll-off,
  stronger odd harmonics), the whine is louder and the rolling noise softer.
  Rare episodes are normal: they occur in training clips and in a fraction
  ``rare_test_fraction`` of the normal test clips, all listed in
  ``metadata.json`` ("rare_test_clips" names, "rare_intervals" in seconds).

Noise: mains hum (50 or 60 Hz with harmonics), pink-ish noise and occasional
distant clanks. Something-else families: noise bursts, speech-like formant
buzz, tones/beeps, chirps. Anomaly families: impacts, knocks, click trains,
metallic ringing, door slams.

Every file comes from ``np.random.default_rng([seed, kind, index])``, so equal
arguments give byte-identical files (16-bit PCM WAVs; peak <= 0.9).
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
import time
from typing import Callable

from absl import logging
import numpy as np

from bu_jax import audio
from bu_jax import fileio

VERSION = 1
PEAK = 0.9
SOMETHING_ELSE_FAMILIES = ("noise_burst", "formant_buzz", "beeps", "chirp")
ANOMALY_FAMILIES = ("impact", "knock", "clicks", "metal_ring", "door_slam")

# Seed-sequence "kind" codes, one independent random stream per file.
_TRAIN, _TEST, _NOISE, _ANOMALY, _SOMETHING_ELSE, _PLAN = range(6)
_TABLE_SIZE = 4096


# ----------------------------------------------------------------------------
# Small signal helpers
# ----------------------------------------------------------------------------


def _upsample_linear(knots: np.ndarray, n: int, factor: float) -> np.ndarray:
  """Linear interpolation of ``knots`` (last axis) at positions i / factor, i < n."""
  position = np.arange(n) / factor
  left = position.astype(np.int64)
  return knots[..., left] + np.diff(knots)[..., left] * (position - left)


def _smooth_noise(rng: np.random.Generator, n: int, sr: int, *, rate_hz: float) -> np.ndarray:
  """Unit-variance random curve, linearly interpolated between knots at rate_hz."""
  knots = rng.standard_normal(int(np.ceil(n / sr * rate_hz)) + 2)
  return _upsample_linear(knots, n, sr / rate_hz)


def _shaped_noise(rng: np.random.Generator, n: int, sr: int, gain) -> np.ndarray:
  """Gaussian noise with amplitude spectrum ``gain(freq_hz)``; unit RMS.

  Drawn directly in the frequency domain (one inverse FFT).
  """
  bins = n // 2 + 1
  spectrum = rng.standard_normal(bins) + 1j * rng.standard_normal(bins)
  noise = np.fft.irfft(spectrum * gain(np.fft.rfftfreq(n, 1.0 / sr)), n)
  return noise / max(np.sqrt(np.mean(noise**2)), 1e-12)


def _damped_modes(t: np.ndarray, freqs, decays, amps, phases=None) -> np.ndarray:
  """Sum of exponentially damped sinusoids (modes of a struck object)."""
  freqs, decays, amps = (np.asarray(x, dtype=np.float64)[:, None] for x in (freqs, decays, amps))
  phases = np.zeros_like(freqs) if phases is None else np.asarray(phases)[:, None]
  return np.sum(amps * np.exp(-t / decays) * np.sin(2 * np.pi * freqs * t + phases), axis=0)


def _stft_filter(wave: np.ndarray, sr: int, envelope, *, n_fft: int = 512) -> np.ndarray:
  """Time-varying filtering by STFT overlap-add (Hann windows, hop n_fft / 4).

  ``envelope(frame_times_s, freqs_hz) -> (frames, bins)`` gives the gain of
  each frame. Plain NumPy (librosa.stft would JIT-compile on first use).
  """
  hop = n_fft // 4
  n = wave.size
  frames_count = -(-(n + n_fft) // hop)
  padded = np.zeros((frames_count + 3) * hop)
  padded[n_fft: n_fft + n] = wave
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
  frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:frames_count]
  times = (np.arange(frames_count) * hop + n_fft // 2 - n_fft) / sr
  gains = envelope(times, np.fft.rfftfreq(n_fft, 1.0 / sr))
  filtered = np.fft.irfft(np.fft.rfft(frames * window) * gains, n_fft) * window
  out = np.zeros((frames_count + 3, hop))
  for j in range(4):  # overlap-add, one quarter frame at a time
    out[j: j + frames_count] += filtered[:, j * hop: (j + 1) * hop]
  return out.reshape(-1)[n_fft: n_fft + n] / 1.5  # sum of Hann^2 at 75 % overlap


def _fade(wave: np.ndarray, sr: int, *, seconds: float = 0.01) -> np.ndarray:
  """Raised-cosine fade in and out, so that clips start and end at zero."""
  ramp_len = min(int(seconds * sr), wave.size // 2)
  if ramp_len > 0:
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp_len) / ramp_len)
    wave = wave.copy()
    wave[:ramp_len] *= ramp
    wave[-ramp_len:] *= ramp[::-1]
  return wave


def _to_peak(wave: np.ndarray, peak: float = PEAK) -> np.ndarray:
  return (wave * (peak / max(np.max(np.abs(wave)), 1e-12))).astype(np.float32)


def _limit_peak(wave: np.ndarray, peak: float = PEAK) -> np.ndarray:
  """Scales down only if the peak exceeds ``peak``."""
  top = np.max(np.abs(wave))
  return (wave * (peak / top if top > peak else 1.0)).astype(np.float32)


def _wavetable(amps: np.ndarray, phases: np.ndarray) -> np.ndarray:
  """One period of sum_k amps[k-1] sin(2 pi k x + phases[k-1]); unit RMS, wrapped."""
  spectrum = np.zeros(_TABLE_SIZE // 2 + 1, dtype=np.complex128)
  spectrum[1: amps.size + 1] = amps * np.exp(1j * (phases - np.pi / 2))
  table = np.fft.irfft(spectrum, _TABLE_SIZE)
  table /= np.sqrt(np.mean(table**2))
  return np.append(table, table[0])


def _play_table(table: np.ndarray, cycles: np.ndarray) -> np.ndarray:
  """Reads a wavetable at phase ``cycles`` (in periods), linear interpolation."""
  position = (cycles % 1.0) * _TABLE_SIZE
  index = position.astype(np.int64)
  frac = position - index
  return table[index] * (1.0 - frac) + table[index + 1] * frac


# ----------------------------------------------------------------------------
# Machine sound
# ----------------------------------------------------------------------------


def machine_sound(rng: np.random.Generator, *, num_samples: int, sr: int,
                  rare_spans: list[tuple[int, int]] = ()) -> np.ndarray:
  """One toy-car clip; ``rare_spans`` are (start, stop) samples in the rare mode.

  Returns float32, RMS ~0.1 over the frequent-mode part, peak <= 0.9.
  """
  n = num_samples
  f_base = rng.uniform(115.0, 135.0)
  jitter = (0.006 * _smooth_noise(rng, n, sr, rate_hz=3.0)
            + 0.002 * _smooth_noise(rng, n, sr, rate_hz=25.0))
  depth = rng.uniform(0.7, 1.0)
  weight = np.zeros(n)  # 0 frequent mode, 1 rare mode
  sweep = np.zeros(n)   # relative rise of the fundamental
  for start, stop in rare_spans:
    u = np.arange(stop - start) / (stop - start)
    sweep[start:stop] = depth * np.where(u < 0.8, u / 0.8, (1.0 - u) / 0.2)
    ramp_len = max(1, min(int(0.15 * sr), (stop - start) // 4))
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp_len) / ramp_len)
    span = np.ones(stop - start)
    span[:ramp_len], span[-ramp_len:] = ramp, ramp[::-1]
    weight[start:stop] = span
  f0 = f_base * (1.0 + jitter) * (1.0 + sweep)
  cycles = np.cumsum(f0) / sr

  # Harmonic stacks (kept below 7.5 kHz at the highest fundamental).
  k_frequent = np.arange(1, int(7500 / (f_base * 1.05)) + 1)
  amps_frequent = (k_frequent ** -1.1 * np.exp(0.25 * rng.standard_normal(k_frequent.size))
                   * (1.0 + 1.5 * np.exp(-(((k_frequent * f_base) - 800.0) / 250.0) ** 2)))
  k_rare = np.arange(1, int(7500 / (f_base * (1.0 + depth) * 1.05)) + 1)
  amps_rare = (k_rare ** -0.6 * np.exp(0.25 * rng.standard_normal(k_rare.size))
               * np.where(k_rare % 2 == 1, 1.5, 1.0))
  table_frequent = _wavetable(amps_frequent, rng.uniform(0, 2 * np.pi, k_frequent.size))
  table_rare = _wavetable(amps_rare, rng.uniform(0, 2 * np.pi, k_rare.size))
  harmonic = _play_table(table_frequent, cycles)
  for start, stop in rare_spans:  # crossfade to the rare stack inside episodes only
    w = weight[start:stop]
    harmonic[start:stop] = ((1.0 - w) * harmonic[start:stop]
                            + w * 1.2 * _play_table(table_rare, cycles[start:stop]))

  gear_ratio = 23.3
  gear_phase = ((gear_ratio * cycles) % 1.0).astype(np.float32)  # float32 sin is fast
  whine = (np.sin(2 * np.pi * gear_phase + np.float32(rng.uniform(0, 2 * np.pi)))
           * (np.sqrt(2.0) * (0.12 + 0.23 * weight))
           * (1.0 + 0.2 * _smooth_noise(rng, n, sr, rate_hz=2.0)))
  wheel_phase = ((cycles / 14.0) % 1.0).astype(np.float32)
  rolling = (_shaped_noise(rng, n, sr, lambda f: (f / (f + 150.0)) / (1.0 + (f / 2500.0) ** 2))
             * (1.0 + 0.35 * np.sin(2 * np.pi * wheel_phase))
             * (0.45 - 0.25 * weight))
  wave = harmonic + whine + rolling
  frequent = wave[weight == 0] if np.any(weight == 0) else wave
  gain = 0.1 * np.exp(0.1 * rng.standard_normal()) / np.sqrt(np.mean(frequent**2))
  return _limit_peak(wave * gain)


# ----------------------------------------------------------------------------
# Factory noise
# ----------------------------------------------------------------------------


def factory_noise(rng: np.random.Generator, *, num_samples: int, sr: int, index: int = 0
                  ) -> np.ndarray:
  """Hum + pink-ish noise + occasional distant clanks; peak 0.9."""
  n = num_samples
  t = np.arange(n) / sr
  beta = rng.uniform(0.8, 1.4)  # spectral slope, power ~ f^-beta
  pink = _shaped_noise(rng, n, sr,
                       lambda f: np.maximum(f, 30.0) ** (-beta / 2) * (f / (f + 30.0)))
  hum_freq = (50.0, 60.0)[index % 2]
  orders = np.arange(1, 7)
  hum = np.sum((orders ** -1.0 * np.exp(0.3 * rng.standard_normal(orders.size)))[:, None]
               * np.sin(2 * np.pi * hum_freq * orders[:, None] * t
                        + rng.uniform(0, 2 * np.pi, orders.size)[:, None]), axis=0)
  hum *= rng.uniform(0.3, 0.7) / np.sqrt(np.mean(hum**2))
  # Clanks: sparse impulses (circularly) convolved with a low-passed metal ring.
  excitation = np.zeros(n)
  count = rng.poisson(rng.uniform(0.2, 0.5) * n / sr)
  excitation[rng.integers(0, n, count)] = rng.lognormal(0.0, 0.5, count)
  ir_t = np.arange(int(0.3 * sr)) / sr
  ring = _damped_modes(ir_t, rng.uniform(300, 2500, 3), rng.uniform(0.02, 0.08, 3),
                       rng.uniform(0.5, 1.0, 3))
  ir = np.zeros(n)
  ir[: ring.size] = ring / np.max(np.abs(ring))
  spectrum = np.fft.rfft(excitation) * np.fft.rfft(ir)
  spectrum /= 1.0 + (np.fft.rfftfreq(n, 1.0 / sr) / 1500.0) ** 2  # distance: low-pass
  clanks = np.fft.irfft(spectrum, n)
  clanks *= 2.0 / max(np.max(np.abs(clanks)), 1e-12)  # peaks ~2x the noise RMS
  return _to_peak(pink + hum + clanks)


# ----------------------------------------------------------------------------
# Something-else sounds (training) and anomalies (test), disjoint families
# ----------------------------------------------------------------------------


def _noise_burst(rng, sr):
  n = int(rng.uniform(0.5, 3.0) * sr)
  beta = rng.choice([0.0, 1.0])
  noise = _shaped_noise(rng, n, sr, lambda f: np.maximum(f, 20.0) ** (-beta / 2))
  attack, release = rng.uniform(0.02, 0.2), rng.uniform(0.05, 0.3)
  t = np.arange(n) / sr
  envelope = np.minimum(np.minimum(t / attack, (t[-1] - t) / release), 1.0)
  return noise * envelope


def _formant_buzz(rng, sr):
  """Speech-like: a glottal harmonic source shaped by moving formants (STFT filter)."""
  n = int(rng.uniform(1.0, 4.5) * sr)
  t = np.arange(n) / sr
  f0 = rng.uniform(90, 220) * (1.0 + 0.08 * _smooth_noise(rng, n, sr, rate_hz=3.0))
  num_harmonics = int(5000 / f0.max())
  source = _play_table(
      _wavetable(1.0 / np.arange(1, num_harmonics + 1), np.zeros(num_harmonics)),
      np.cumsum(f0) / sr)
  syllable_rate = rng.uniform(3.0, 6.0)
  vowels = np.array([[700, 1200, 2500], [300, 2200, 3000], [500, 900, 2400],
                     [400, 1900, 2600], [350, 800, 2300]], dtype=np.float64)
  targets = vowels[rng.integers(0, len(vowels), int(n / sr * syllable_rate) + 2)]
  knots = np.arange(targets.shape[0]) / syllable_rate
  bandwidths = np.array([80.0, 120.0, 160.0])[:, None, None]

  def formant_envelope(frame_times, freqs):  # (frames, bins)
    formants = np.stack([np.interp(frame_times, knots, targets[:, i]) for i in range(3)])
    return np.sum(1.0 / (1.0 + ((freqs[None, None, :] - formants[:, :, None]) / bandwidths)
                         ** 2), axis=0)

  wave = _stft_filter(source, sr, formant_envelope)
  return wave * (0.55 + 0.45 * np.sin(2 * np.pi * syllable_rate * t) ** 2)


def _beeps(rng, sr):
  n = int(rng.uniform(0.5, 3.5) * sr)
  t = np.arange(n) / sr
  freq = rng.uniform(400, 3500)
  overtones = rng.integers(1, 4)
  tone = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, overtones + 1))
  period, duty = rng.uniform(0.15, 0.6), rng.uniform(0.3, 0.8)
  gate = ((t % period) < duty * period).astype(np.float64)
  gate = np.convolve(gate, np.hanning(int(0.01 * sr)) / np.sum(np.hanning(int(0.01 * sr))),
                     mode="same")  # 10 ms edges, no clicks
  return tone * gate


def _chirp(rng, sr):
  n = int(rng.uniform(0.3, 2.5) * sr)
  t = np.arange(n) / sr
  lo, hi = np.sort(rng.uniform(200, 6000, 2))
  freq = lo * (hi / lo) ** (t / t[-1]) if rng.uniform() < 0.5 else hi * (lo / hi) ** (t / t[-1])
  return np.sin(2 * np.pi * np.cumsum(freq) / sr)


def _impact(rng, sr):
  t = np.arange(int(rng.uniform(0.3, 0.8) * sr)) / sr
  thud = _damped_modes(t, rng.uniform(60, 250, 2), rng.uniform(0.03, 0.12, 2), [1.0, 0.6])
  crack = _shaped_noise(rng, t.size, sr, lambda f: f / (f + 500.0)) * np.exp(
      -t / rng.uniform(0.005, 0.02))
  return thud + 0.5 * crack


def _knock(rng, sr):
  n = int(rng.uniform(0.5, 1.2) * sr)
  t = np.arange(n) / sr
  freqs, decays = rng.uniform(150, 700, 2), rng.uniform(0.01, 0.04, 2)
  wave = np.zeros(n)
  start = 0.0
  for _ in range(int(rng.integers(2, 5))):
    offset = int(start * sr)
    if offset >= n:
      break
    wave[offset:] += rng.uniform(0.6, 1.0) * _damped_modes(t[: n - offset], freqs, decays,
                                                           [1.0, 0.5])
    start += rng.uniform(0.12, 0.3)
  return wave


def _clicks(rng, sr):
  n = int(rng.uniform(0.2, 1.0) * sr)
  t = np.arange(n) / sr
  count = int(rng.integers(3, 11))
  excitation = np.zeros(n)
  excitation[np.sort(rng.integers(0, n - int(0.005 * sr), count))] = rng.uniform(0.5, 1.0, count)
  click = _shaped_noise(rng, int(0.003 * sr), sr, lambda f: f / (f + 2000.0)) * np.exp(
      -t[: int(0.003 * sr)] / 0.001)
  return np.convolve(excitation, click)[:n]


def _metal_ring(rng, sr):
  t = np.arange(int(rng.uniform(1.0, 2.0) * sr)) / sr
  base = rng.uniform(400, 1500)
  ratios = np.array([1.0, 2.76, 5.40, 8.93])
  freqs = base * ratios * (1.0 + 0.01 * rng.standard_normal(ratios.size))
  decays = rng.uniform(0.3, 1.2, ratios.size) / ratios**0.5  # higher partials die faster
  phases = rng.uniform(0, 2 * np.pi, ratios.size)
  keep = freqs < 7500
  return _damped_modes(t, freqs[keep], decays[keep], (1.0 / ratios)[keep], phases[keep])


def _door_slam(rng, sr):
  n = int(rng.uniform(0.6, 1.2) * sr)
  t = np.arange(n) / sr
  thump = _damped_modes(t, [rng.uniform(60, 120)], [rng.uniform(0.05, 0.12)], [1.0])
  rattle = _shaped_noise(rng, n, sr, lambda f: f / (f + 800.0) / (1.0 + (f / 4000.0) ** 2))
  rattle *= np.exp(-t / rng.uniform(0.05, 0.15)) * (
      1.0 + np.sign(np.sin(2 * np.pi * rng.uniform(15, 30) * t))) * 0.3
  return thump + rattle


_SOMETHING_ELSE_MAKERS = {"noise_burst": _noise_burst, "formant_buzz": _formant_buzz,
                          "beeps": _beeps, "chirp": _chirp}
_ANOMALY_MAKERS = {"impact": _impact, "knock": _knock, "clicks": _clicks,
                   "metal_ring": _metal_ring, "door_slam": _door_slam}


# ----------------------------------------------------------------------------
# Data set
# ----------------------------------------------------------------------------


def _rare_plan(rng: np.random.Generator, *, num_clips: int, num_episodes: int, clip_len: int,
               episode_len: int) -> dict[int, tuple[int, int]]:
  """At most one rare episode per clip: {clip index: (start, stop)}."""
  num_episodes = min(num_episodes, num_clips)
  clips = np.sort(rng.choice(num_clips, num_episodes, replace=False))
  starts = rng.integers(0, clip_len - episode_len + 1, num_episodes)
  return {int(c): (int(s), int(s) + episode_len) for c, s in zip(clips, starts)}


def generate(
    root: str | os.PathLike,
    *,
    seed: int = 0,
    num_train: int = 60,
    num_test: int = 40,
    clip_seconds: float = 10.0,
    num_noise: int = 4,
    noise_seconds: float = 20.0,
    num_anomaly: int = 20,
    num_something_else: int = 30,
    rare_fraction: float = 0.075,
    rare_seconds: float = 3.0,
    rare_test_fraction: float = 0.3,
    sr: int = audio.SAMPLE_RATE,
) -> str:
  """Writes the synthetic data set into ``root`` (created; must be empty).

  Args:
    root: output directory.
    seed: random seed; equal arguments give byte-identical files.
    num_train: clean normal training clips.
    num_test: clean normal test clips (the loader adds anomalous versions).
    clip_seconds: length of train and test clips.
    num_noise: factory-noise clips ("types"), each ``noise_seconds`` long.
    noise_seconds: length of each noise clip.
    num_anomaly: test anomaly sounds, families in turn (ANOMALY_FAMILIES).
    num_something_else: training something-else sounds, < 5 s, families in
      turn (SOMETHING_ELSE_FAMILIES).
    rare_fraction: target share of training time in the rare mode.
    rare_seconds: length of one rare episode (at most half a clip).
    rare_test_fraction: share of test clips holding one rare episode.
    sr: sampling rate.

  Returns:
    ``root`` as a string.

  Raises:
    ValueError: ``root`` exists and is not empty, or a size is invalid.
  """
  params = dict(seed=seed, num_train=num_train, num_test=num_test, clip_seconds=clip_seconds,
                num_noise=num_noise, noise_seconds=noise_seconds, num_anomaly=num_anomaly,
                num_something_else=num_something_else, rare_fraction=rare_fraction,
                rare_seconds=rare_seconds, rare_test_fraction=rare_test_fraction, sr=sr)
  root = os.fspath(root)
  if os.path.exists(root) and (not os.path.isdir(root) or os.listdir(root)):
    raise ValueError(f"{root}: exists and is not an empty directory")
  if min(num_train, num_test, num_noise, num_anomaly, num_something_else) < 1:
    raise ValueError(f"every count must be >= 1, got {params}")
  if not 0.0 <= rare_fraction <= 0.5 or not 0.0 <= rare_test_fraction <= 1.0:
    raise ValueError("rare_fraction must be in [0, 0.5] and rare_test_fraction in [0, 1]")
  clip_len = int(round(clip_seconds * sr))
  episode_len = int(round(min(rare_seconds, clip_seconds / 2) * sr))
  if episode_len < int(0.2 * sr):
    raise ValueError(f"clips of {clip_seconds} s are too short for rare episodes")
  began = time.perf_counter()
  for sub in ("train", "test", "noise", "anomaly", "something_else"):
    os.makedirs(os.path.join(root, sub))

  plan_rng = np.random.default_rng([seed, _PLAN])
  num_train_episodes = int(round(rare_fraction * num_train * clip_len / episode_len))
  if rare_fraction > 0:
    num_train_episodes = max(1, num_train_episodes)
  train_plan = _rare_plan(plan_rng, num_clips=num_train, num_episodes=num_train_episodes,
                          clip_len=clip_len, episode_len=episode_len)
  test_plan = _rare_plan(plan_rng, num_clips=num_test,
                         num_episodes=int(round(rare_test_fraction * num_test)),
                         clip_len=clip_len, episode_len=episode_len)
  rare_intervals = {}
  for split, count, plan, kind in (("train", num_train, train_plan, _TRAIN),
                                   ("test", num_test, test_plan, _TEST)):
    for index in range(count):
      name = f"{split}/normal_{index:04d}.wav"
      spans = [plan[index]] if index in plan else []
      wave = machine_sound(np.random.default_rng([seed, kind, index]), num_samples=clip_len,
                           sr=sr, rare_spans=spans)
      audio.write_wav(os.path.join(root, name), wave, sr=sr)
      if spans:
        rare_intervals[name] = [[round(s / sr, 6), round(e / sr, 6)] for s, e in spans]

  for index in range(num_noise):
    wave = factory_noise(np.random.default_rng([seed, _NOISE, index]),
                         num_samples=int(round(noise_seconds * sr)), sr=sr, index=index)
    audio.write_wav(os.path.join(root, "noise", f"factory_{index:02d}.wav"), wave, sr=sr)
  for sub, count, makers, kind in (
      ("anomaly", num_anomaly, _ANOMALY_MAKERS, _ANOMALY),
      ("something_else", num_something_else, _SOMETHING_ELSE_MAKERS, _SOMETHING_ELSE)):
    families = list(makers)
    for index in range(count):
      family = families[index % len(families)]
      wave = makers[family](np.random.default_rng([seed, kind, index]), sr)
      wave = _to_peak(_fade(np.asarray(wave, dtype=np.float64), sr, seconds=0.002))
      audio.write_wav(os.path.join(root, sub, f"{family}_{index:03d}.wav"), wave, sr=sr)

  metadata = {
      "description": "bu_jax synthetic toy-car data set (layout 'mixing')",
      "version": VERSION,
      "params": params,
      "rare_test_clips": sorted(os.path.basename(n) for n in rare_intervals
                                if n.startswith("test/")),
      "rare_intervals": rare_intervals,
      "rare_train_fraction": round(len(train_plan) * episode_len / (num_train * clip_len), 6),
      "families": {"anomaly": list(_ANOMALY_MAKERS),
                   "something_else": list(_SOMETHING_ELSE_MAKERS)},
  }
  fileio.write_json(os.path.join(root, "metadata.json"), metadata, indent=1, sort_keys=True)
  logging.info("synthetic: wrote %d train, %d test, %d noise, %d anomaly, %d something-else"
               " clips to %s in %.1f s", num_train, num_test, num_noise, num_anomaly,
               num_something_else, root, time.perf_counter() - began)
  return root


def default_cache_dir(seed: int = 0) -> str:
  """Where ``ensure`` keeps the default data set.

  ``$BU_JAX_DATA/synthetic-v1-seed<seed>`` if ``BU_JAX_DATA`` is set, else
  ``$XDG_CACHE_HOME/bu_jax/...`` (default ``~/.cache/bu_jax/...``).
  """
  parent = os.environ.get("BU_JAX_DATA")
  if not parent:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    parent = os.path.join(cache, "bu_jax")
  return os.path.join(parent, f"synthetic-v{VERSION}-seed{seed}")


def ensure(seed: int = 0, *, root: str | os.PathLike | None = None, **generate_kwargs) -> str:
  """Returns the path of a complete synthetic data set, generating it once.

  Generation goes to a temporary sibling directory that is renamed into place
  at the end, so an interrupted run never leaves a half data set; if another
  process finished first, its copy is used.

  Args:
    seed: random seed.
    root: target directory (default ``default_cache_dir(seed)``).
    **generate_kwargs: sizes for ``generate``; only together with ``root``,
      so the default cache always holds the default sizes.

  Raises:
    ValueError: sizes without ``root``, ``root`` exists without a
      metadata.json, or an existing set was made with other arguments.
  """
  return generate_once(generate, default_cache_dir, seed=seed, root=root, **generate_kwargs)


def generate_once(generate_fn: Callable[..., str], default_root: Callable[[int], str], *,
                  seed: int, root: str | os.PathLike | None = None, **generate_kwargs) -> str:
  """``ensure`` for any generator ``generate_fn(root, *, seed, ...)`` that writes
  a ``metadata.json`` with its keyword arguments under ``"params"`` (this
  module's and ``synthetic_dcase``'s); ``default_root(seed)`` is the cache
  folder used when ``root`` is None."""
  if generate_kwargs and root is None:
    raise ValueError("pass root= together with non-default generate() arguments")
  root = os.fspath(root) if root is not None else default_root(seed)
  meta_path = os.path.join(root, "metadata.json")
  if not os.path.exists(root):
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.tmp-", dir=parent)
    try:
      generate_fn(scratch, seed=seed, **generate_kwargs)
      os.rename(scratch, root)
    except OSError:
      if not os.path.exists(meta_path):  # not a lost race: a real failure
        raise
      logging.info("synthetic: %s appeared meanwhile; using it", root)
    finally:
      shutil.rmtree(scratch, ignore_errors=True)
  if not os.path.exists(meta_path):
    raise ValueError(f"{root}: exists but holds no metadata.json (incomplete?); delete it")
  with open(meta_path, encoding="utf-8") as f:
    params = json.load(f).get("params", {})
  defaults = {name: parameter.default
              for name, parameter in inspect.signature(generate_fn).parameters.items()
              if parameter.kind == inspect.Parameter.KEYWORD_ONLY}
  # Through JSON, as metadata.json holds them (a tuple reads back as a list).
  wanted = json.loads(json.dumps({**defaults, **generate_kwargs, "seed": seed}))
  mismatch = {k: (params.get(k), v) for k, v in wanted.items() if params.get(k) != v}
  if mismatch:
    raise ValueError(f"{root}: made with other arguments (found, wanted): {mismatch}")
  return root
