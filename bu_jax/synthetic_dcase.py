"""An embedded, deterministic DCASE-style data set (2022+ layout) with domain shift.

Small enough to generate in seconds on a CPU and read through the same loader
as real data (``bu_jax.dcase``)::

  <root>/
    metadata.json                       written last: marks a complete set
    SynthFan/train/section_00_source_train_normal_0000_spd_A1_noise_2.wav
    SynthFan/train/section_00_target_train_normal_0000_spd_B_noise_0.wav
    SynthFan/test/section_00_{source,target}_test_{normal,anomaly}_0000_<attrs>.wav
    SynthFan/... section_01 ...
    SynthPump/..., SynthSlider/...
    something_else/<family>_000.wav     training something-else sounds (< 5 s)

Every machine type is a harmonic stack (its own fundamental range, spectral
slope and resonance) with slow speed jitter, a band of machine noise and
factory background noise. The **source domain** runs at speed "A1" or "A2"
(fundamental x1.0 / x1.05); the **target domain** at speed "B" (x1.35, a
brighter spectrum and less machine noise): an operating condition with only
``num_target_train`` (10) training clips per section against
``num_source_train`` (100) source ones, as in DCASE 2022-2025. Sections differ
by their base fundamental. Anomalous test clips carry a transient fault sound
(impacts, knocks, clicks, metallic ringing, door slams of ``bu_jax.synthetic``)
at -16 to -8 dB anomaly-to-normal ratio over the clip, or a fault tone (a
non-harmonic whine) at -22 to -16 dB.

Every file comes from ``np.random.default_rng([seed, kind, machine, section,
index])``: equal arguments give byte-identical files (16-bit PCM).
"""

from __future__ import annotations

import os
import time

from absl import logging
import numpy as np

from bu_jax import audio
from bu_jax import fileio
from bu_jax import synthetic

VERSION = 1
# name: (base fundamental Hz, harmonic slope, resonance Hz, noise band (lo, hi) Hz, sections)
MACHINES = {
    "SynthFan": (52.0, -0.9, 1400.0, (300.0, 3000.0), 2),
    "SynthPump": (95.0, -1.2, 600.0, (100.0, 1200.0), 1),
    "SynthSlider": (160.0, -0.7, 2500.0, (1500.0, 6000.0), 1),
}
SPEEDS = {"A1": 1.0, "A2": 1.05, "B": 1.35}  # source A1/A2, target B
_TRAIN, _TEST, _SOMETHING_ELSE = range(3)


def _machine_clip(rng: np.random.Generator, machine: str, section: int, speed: str,
                  num_samples: int, sr: int) -> np.ndarray:
  f_base, slope, resonance, (lo, hi), _ = MACHINES[machine]
  target = speed == "B"
  f0_mean = f_base * (1.0 + 0.12 * section) * SPEEDS[speed] * rng.uniform(0.98, 1.02)
  jitter = 0.004 * synthetic._smooth_noise(rng, num_samples, sr, rate_hz=2.0)
  cycles = np.cumsum(f0_mean * (1.0 + jitter)) / sr
  k = np.arange(1, int(7000 / (f0_mean * 1.05)) + 1)
  amps = (k ** (slope + (0.35 if target else 0.0))
          * np.exp(0.15 * rng.standard_normal(k.size))
          * (1.0 + 2.0 * np.exp(-(((k * f0_mean) - resonance) / 300.0) ** 2)))
  harmonic = synthetic._play_table(synthetic._wavetable(amps, rng.uniform(0, 2 * np.pi, k.size)),
                                   cycles)
  harmonic /= np.sqrt(np.mean(harmonic ** 2)) + 1e-12
  band = synthetic._shaped_noise(
      rng, num_samples, sr, lambda f: 1.0 / (1.0 + ((f - (lo + hi) / 2) / ((hi - lo) / 2)) ** 4))
  band *= 1.0 + 0.3 * synthetic._smooth_noise(rng, num_samples, sr, rate_hz=4.0)
  machine_part = harmonic + (0.3 if target else 0.6) * band
  machine_part *= 0.1 / np.sqrt(np.mean(machine_part ** 2))
  return machine_part


def _background(rng: np.random.Generator, num_samples: int, sr: int, noise_index: int
                ) -> np.ndarray:
  noise = synthetic.factory_noise(rng, num_samples=num_samples, sr=sr, index=noise_index)
  return noise * (0.05 / np.sqrt(np.mean(noise ** 2)))  # 6 dB below the machine


def _fault(rng: np.random.Generator, clean: np.ndarray, sr: int) -> tuple[np.ndarray, str]:
  n = clean.size
  if rng.uniform() < 0.7:  # a transient fault sound
    families = list(synthetic._ANOMALY_MAKERS)
    family = families[rng.integers(len(families))]
    event = np.asarray(synthetic._ANOMALY_MAKERS[family](rng, sr), dtype=np.float64)[: n // 2]
    placed = np.zeros(n)
    start = rng.integers(0, n - event.size + 1)
    placed[start:start + event.size] = event
    return audio.mix_at_ratio(clean, placed, ratio_db=rng.uniform(-16.0, -8.0)), family
  freq = rng.uniform(900.0, 4000.0)  # a fault whine
  t = np.arange(n) / sr
  tone = np.sin(2 * np.pi * freq * t * (1 + 0.002 * np.sin(2 * np.pi * 0.5 * t)))
  return audio.mix_at_ratio(clean, tone, ratio_db=rng.uniform(-22.0, -16.0)), "whine"


def generate(root: str | os.PathLike, *, seed: int = 0, num_source_train: int = 100,
             num_target_train: int = 10, num_test_per_group: int = 15,
             clip_seconds: float = 3.0, num_something_else: int = 24,
             machines: tuple[str, ...] = tuple(MACHINES), sr: int = audio.SAMPLE_RATE) -> str:
  """Writes the DCASE-style set into ``root`` (created; must be empty).

  Args:
    root: output directory.
    seed: random seed.
    num_source_train, num_target_train: normal training clips per section
      and domain.
    num_test_per_group: test clips per section, domain and label (normal,
      anomaly): 4 x this many per section.
    clip_seconds: clip length (3 s: one training segment per clip).
    num_something_else: something-else clips (for SNP and BU).
    machines: machine types, a subset of ``MACHINES``.
    sr: sampling rate.

  Returns:
    ``root``.
  """
  root = os.fspath(root)
  if os.path.exists(root) and (not os.path.isdir(root) or os.listdir(root)):
    raise ValueError(f"{root}: exists and is not an empty directory")
  unknown = [m for m in machines if m not in MACHINES]
  if unknown:
    raise ValueError(f"unknown synthetic machine types {unknown}; choose from {list(MACHINES)}")
  began = time.perf_counter()
  n = int(round(clip_seconds * sr))
  faults = {}
  for m_index, machine in enumerate(machines):
    for split in ("train", "test"):
      os.makedirs(os.path.join(root, machine, split))
    for section in range(MACHINES[machine][4]):
      jobs = []
      for domain, count in (("source", num_source_train), ("target", num_target_train)):
        jobs += [("train", domain, "normal", i) for i in range(count)]
      for domain in ("source", "target"):
        for label in ("normal", "anomaly"):
          jobs += [("test", domain, label, i) for i in range(num_test_per_group)]
      counters = {}
      for split, domain, label, i in jobs:
        kind = _TRAIN if split == "train" else _TEST
        key = (split, domain, label)
        number = counters.get(key, 0)
        counters[key] = number + 1
        rng = np.random.default_rng(
            [seed, kind, m_index, section, ("source", "target").index(domain),
             ("normal", "anomaly").index(label), i])
        speed = "B" if domain == "target" else ("A1", "A2")[int(rng.integers(2))]
        noise_index = int(rng.integers(3))
        wave = (_machine_clip(rng, machine, section, speed, n, sr)
                + _background(rng, n, sr, noise_index))
        name = (f"section_{section:02d}_{domain}_{split}_{label}_{number:04d}"
                f"_spd_{speed}_noise_{noise_index}.wav")
        if label == "anomaly":
          wave, fault = _fault(rng, wave, sr)
          faults[f"{machine}/test/{name}"] = fault
        audio.write_wav(os.path.join(root, machine, split, name),
                        synthetic._limit_peak(wave), sr=sr)
  os.makedirs(os.path.join(root, "something_else"))
  families = list(synthetic._SOMETHING_ELSE_MAKERS)
  for index in range(num_something_else):
    family = families[index % len(families)]
    wave = synthetic._SOMETHING_ELSE_MAKERS[family](
        np.random.default_rng([seed, _SOMETHING_ELSE, index]), sr)
    wave = synthetic._to_peak(synthetic._fade(np.asarray(wave, np.float64), sr, seconds=0.002))
    audio.write_wav(os.path.join(root, "something_else", f"{family}_{index:03d}.wav"), wave,
                    sr=sr)
  params = dict(seed=seed, num_source_train=num_source_train,
                num_target_train=num_target_train, num_test_per_group=num_test_per_group,
                clip_seconds=clip_seconds, num_something_else=num_something_else,
                machines=list(machines), sr=sr)
  metadata = {"description": "bu_jax synthetic DCASE-style data set (2022+ names)",
              "version": VERSION, "params": params, "faults": faults}
  fileio.write_json(os.path.join(root, "metadata.json"), metadata, indent=1, sort_keys=True)
  logging.info("synthetic_dcase: wrote %s in %.1f s", root, time.perf_counter() - began)
  return root


def default_cache_dir(seed: int = 0) -> str:
  """``$BU_JAX_DATA/synthetic-dcase-v1-seed<seed>`` or under ``~/.cache/bu_jax``."""
  parent = os.environ.get("BU_JAX_DATA")
  if not parent:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    parent = os.path.join(cache, "bu_jax")
  return os.path.join(parent, f"synthetic-dcase-v{VERSION}-seed{seed}")


def ensure(seed: int = 0, *, root: str | os.PathLike | None = None, **generate_kwargs) -> str:
  """The path of a complete set, generated once (``synthetic.generate_once``:
  into a temporary sibling, then renamed; an existing set made with other
  arguments is refused)."""
  return synthetic.generate_once(generate, default_cache_dir, seed=seed, root=root,
                                 **generate_kwargs)
