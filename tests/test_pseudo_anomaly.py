"""Pseudo-anomalies (``bu_jax.pseudo_anomaly``): the label-free check of detection."""

import numpy as np
import pytest

from bu_jax import pseudo_anomaly


def _clips(n, size=8000, seed=0):
  rng = np.random.default_rng(seed)
  return [(0.1 * rng.standard_normal(size)).astype(np.float32) for _ in range(n)]


def test_mix_places_each_sound_at_the_anr_over_the_whole_clip():
  normals = _clips(3)
  sounds = [np.sin(np.arange(n) * 0.3).astype(np.float32) for n in (2000, 5000, 12000)]
  mixed = pseudo_anomaly.mix(normals, sounds, anr_db=-6.0, per_clip=2, seed=1)
  assert len(mixed) == 6
  for i, m in enumerate(mixed):
    normal = normals[i // 2]  # clip-major
    added = m - normal
    assert m.shape == normal.shape and m.dtype == np.float32
    ratio = 10 * np.log10(np.mean(added.astype(np.float64) ** 2) / np.mean(normal ** 2.0))
    assert ratio == pytest.approx(-6.0, abs=0.01)
    active = np.flatnonzero(np.abs(added) > 1e-6)
    assert active.size and active[-1] - active[0] < normal.size  # one placed sound
  again = pseudo_anomaly.mix(normals, sounds, anr_db=-6.0, per_clip=2, seed=1)
  assert all(np.array_equal(a, b) for a, b in zip(mixed, again))
  other = pseudo_anomaly.mix(normals, sounds, anr_db=-6.0, per_clip=2, seed=2)
  assert not all(np.array_equal(a, b) for a, b in zip(mixed, other))


def test_a_louder_mixture_is_found_by_an_energy_detector_and_auc_is_oriented():
  normals = _clips(5)
  sounds = _clips(3, size=3000, seed=9)
  rms = lambda w: float(np.sqrt(np.mean(np.square(w, dtype=np.float64))))
  held = [rms(w) for w in normals]
  loud = [rms(w) for w in pseudo_anomaly.mix(normals, sounds, anr_db=10.0)]
  assert pseudo_anomaly.auc(held, loud) == 1.0
  assert pseudo_anomaly.auc(held, [-s for s in loud]) < 0.5  # higher = more anomalous


@pytest.mark.parametrize("normals, sounds, kw, message", [
    ([], [np.ones(10)], {}, r"need normal clips and sounds, got 0 clip\(s\) and 1"),
    ([np.ones(10)], [], {}, r"got 1 clip\(s\) and 0 sound\(s\)"),
    ([np.ones(10)], [np.ones(5)], {"per_clip": 0}, r"per_clip must be >= 1"),
    ([np.ones(10), np.zeros(10)], [np.ones(5)], {},
     r"pseudo-anomaly \(held-out clip 1, sound 0\): .*zero power"),
])
def test_bad_input_is_named(normals, sounds, kw, message):
  with pytest.raises(ValueError, match=message):
    pseudo_anomaly.mix(normals, sounds, anr_db=-20.0, **kw)
