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


def test_difference_se_is_the_jackknife_over_held_out_clips_by_hand():
  """Three clips, one ANR, one mixture per clip. Scorer b scores clip 2 as high as
  any mixture: its AUC is 6/9 against a's 1, a lead of 1/3 that hinges on that one
  clip. Leaving out clip 0, 1 or 2 gives d = 1/2, 1/2, 0; the jackknife SE is
  sqrt(2/3 * ((1/6)^2 + (1/6)^2 + (1/3)^2)) = 1/3, as large as the lead itself."""
  normal_a, pseudo_a = [0.0, 0.0, 0.0], {"-10dB": [1.0, 1.0, 1.0]}
  normal_b, pseudo_b = [0.0, 0.0, 2.0], {"-10dB": [1.0, 1.0, 1.0]}
  lead = (pseudo_anomaly.mean_auc(normal_a, pseudo_a)
          - pseudo_anomaly.mean_auc(normal_b, pseudo_b))
  assert lead == pytest.approx(1 / 3)
  se = pseudo_anomaly.difference_se(normal_a, pseudo_a, normal_b, pseudo_b)
  assert se == pytest.approx(1 / 3)
  assert pseudo_anomaly.difference_se(normal_b, pseudo_b, normal_a, pseudo_a) == (
      pytest.approx(se))


def test_difference_se_groups_each_clip_with_its_own_mixtures():
  """Mixtures are clip-major (two per clip here): leaving a clip out drops its two.
  A lead spread over every clip is resolved (SE well below it); a monotone rescaling
  of one scorer changes no AUC, so its difference with the original has SE 0."""
  rng = np.random.default_rng(0)
  n, per = 10, 2
  normal = rng.normal(size=n)
  pseudo = {anr: rng.normal(1.5, 1.0, size=n * per) for anr in ("-10dB", "-20dB")}
  assert pseudo_anomaly.difference_se(
      normal, pseudo, 3 * normal + 1, {k: 3 * v + 1 for k, v in pseudo.items()}) == 0.0
  # b: every mixture a little quieter, so b loses a few pairs on every clip
  quieter = {k: v - 0.3 for k, v in pseudo.items()}
  lead = pseudo_anomaly.mean_auc(normal, pseudo) - pseudo_anomaly.mean_auc(normal, quieter)
  se = pseudo_anomaly.difference_se(normal, pseudo, normal, quieter)
  assert lead > 0 and 0 < se < lead
  # dropping clip i must drop mixtures 2i and 2i + 1: a fake lead made of clip 0's two
  # mixtures only (b lowers just those) is as large as its SE, it hinges on one clip
  one_clip = {k: np.concatenate([v[:per] - 5.0, v[per:]]) for k, v in pseudo.items()}
  lead = pseudo_anomaly.mean_auc(normal, pseudo) - pseudo_anomaly.mean_auc(normal, one_clip)
  se = pseudo_anomaly.difference_se(normal, pseudo, normal, one_clip)
  assert lead > 0 and se > 0.9 * lead


def test_difference_se_needs_the_same_clips():
  with pytest.raises(ValueError, match="the same clips"):
    pseudo_anomaly.difference_se([0, 1, 2], {"a": [1, 2, 3]}, [0, 1], {"a": [1, 2]})
  with pytest.raises(ValueError, match="the same clips"):
    pseudo_anomaly.difference_se([0, 1, 2], {"a": [1, 2, 3]}, [0, 1, 2], {"b": [1, 2, 3]})
  with pytest.raises(ValueError, match=r"5 and 5 pseudo-anomalies at a for 3 clips"):
    pseudo_anomaly.difference_se([0, 1, 2], {"a": [1] * 5}, [0, 1, 2], {"a": [1] * 5})
  with pytest.raises(ValueError, match=r"6 and 3 pseudo-anomalies at a"):
    pseudo_anomaly.difference_se([0, 1, 2], {"a": [1] * 6}, [0, 1, 2], {"a": [1] * 3})
  assert pseudo_anomaly.difference_se([0], {"a": [1, 2]}, [1], {"a": [0, 0]}) == 0.0  # one clip


def test_mix_draws_every_sound_and_onsets_over_the_whole_clip_for_each_clip_anew():
  """Each mixture draws its sound among all of them and its onset uniformly in
  [0, len(clip) - len(sound)], independently for each clip (mixture (i, j) depends on
  (seed, i, j)): ten clips of one length do not reuse the same four placements."""
  normals = _clips(10, size=8000)
  rng = np.random.default_rng(5)
  lengths = (1000, 1500, 2000)
  sounds = [(1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
  mixed = pseudo_anomaly.mix(normals, sounds, anr_db=-6.0, per_clip=4, seed=0)
  placements = []
  for i, m in enumerate(mixed):
    active = np.flatnonzero(np.abs(m - normals[i // 4]) > 1e-6)
    size = active[-1] - active[0] + 1
    assert size in lengths and active.size == size  # one whole sound, never near zero
    placements.append((size, active[0] / (8000 - size)))
  assert {size for size, _ in placements} == set(lengths)  # every sound is drawn
  onsets = np.array([u for _, u in placements])
  assert onsets.max() <= 1.0 and onsets.min() < 0.15 and onsets.max() > 0.85
  assert len(set(placements)) > 30  # 40 mixtures, not 4 placements repeated per clip


def test_mean_auc_is_the_mean_over_the_anrs():
  """Three ANRs with AUCs 1, 1 and 0: the mean is 2/3 (not, say, the median 1)."""
  normal = [0.0, 0.0]
  pseudo = {"-10dB": [1.0, 2.0], "-15dB": [1.0, 1.0], "-20dB": [-1.0, -2.0]}
  assert [pseudo_anomaly.auc(normal, p) for p in pseudo.values()] == [1.0, 1.0, 0.0]
  assert pseudo_anomaly.mean_auc(normal, pseudo) == pytest.approx(2 / 3)
