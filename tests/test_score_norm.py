"""Local normalization of frame scores by the nearest training frames in code space."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bu_jax import artifact, features, frame_scores, models, score_norm


def _bank(n=200, z=3, seed=0):
  rng = np.random.default_rng(seed)
  codes = rng.standard_normal((n, z)).astype(np.float32)
  scores = (1.0 + rng.gamma(2.0, size=n)).astype(np.float32)
  return codes, scores


def _knn_mean(bank_codes, bank_scores, codes, k):
  """Brute force: the mean bank score of the k nearest bank codes of each row."""
  d = np.sum(np.square(codes[:, None, :] - bank_codes[None, :, :]), axis=-1)
  return np.mean(bank_scores[np.argsort(d, axis=1, kind="stable")[:, :k]], axis=1)


def test_bank_frame_is_its_score_over_its_neighbours_mean():
  codes, scores = _bank()
  norm = score_norm.fit_local_normalizer(codes, scores, neighbors=5)
  got = norm(codes[:20], scores[:20])
  want = scores[:20] / _knn_mean(codes, scores, codes[:20], 5)
  assert got.dtype == np.float32 and got.shape == (20,)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_frame_scoring_like_its_neighbours_gives_one():
  codes, scores = _bank()
  codes[:10] = 50.0 + 0.01 * np.arange(10)[:, None]  # a tight cluster far from the rest
  scores[:10] = 7.0
  norm = score_norm.fit_local_normalizer(codes, scores, neighbors=10)
  query = np.full((1, 3), 50.05, np.float32)
  np.testing.assert_allclose(norm(query, [7.0]), [1.0], rtol=1e-6)
  np.testing.assert_allclose(norm(query, [14.0]), [2.0], rtol=1e-6)


def test_scaling_every_score_leaves_normalized_scores_unchanged():
  codes, scores = _bank()
  rng = np.random.default_rng(1)
  query, q_scores = rng.standard_normal((30, 3)), rng.gamma(2.0, size=30)
  base = score_norm.fit_local_normalizer(codes, scores, neighbors=7)(query, q_scores)
  for c in (1e-3, 3.0, 1e4):
    scaled = score_norm.fit_local_normalizer(codes, c * scores, neighbors=7)
    np.testing.assert_allclose(scaled(query, c * q_scores), base, rtol=1e-5)


def test_zero_bank_scores_give_finite_values():
  codes, _ = _bank(n=20)
  norm = score_norm.fit_local_normalizer(codes, np.zeros(20), neighbors=3)
  got = norm(codes[:5], [0.0, 1.0, 2.0, 0.0, 5.0])
  assert np.all(np.isfinite(got)) and got[0] == 0.0 and got[1] > 0
  # A bank with some zeros: the floor (1e-6 of the median) keeps the quotient finite.
  scores = np.ones(20)
  scores[:5] = 0.0
  codes[:5] = 100.0
  got = score_norm.fit_local_normalizer(codes, scores, neighbors=3)(codes[:1], [1.0])
  np.testing.assert_allclose(got, [1e6], rtol=1e-6)


def test_bad_input_is_a_value_error_naming_it():
  codes, scores = _bank(n=20)
  norm = score_norm.fit_local_normalizer(codes, scores, neighbors=3)
  bad = codes[:4].copy()
  bad[1, 2] = np.nan
  with pytest.raises(ValueError, match="rec.wav: the codes hold NaN"):
    norm(bad, scores[:4], name="rec.wav")
  with pytest.raises(ValueError, match="the scores hold NaN"):
    norm(codes[:2], [1.0, np.nan])
  with pytest.raises(ValueError, match=r"expected codes \(T, 3\)"):
    norm(codes[:2, :2], scores[:2])
  with pytest.raises(ValueError, match="the codes hold NaN"):
    score_norm.fit_local_normalizer(np.where(codes > 1, np.nan, codes), scores)
  with pytest.raises(ValueError, match="the scores hold infinite"):
    score_norm.fit_local_normalizer(codes, np.full(20, np.inf), neighbors=2)


@pytest.mark.parametrize("kw, message", [
    (dict(neighbors=21), r"neighbors must lie in \[1, 20\]"),
    (dict(neighbors=0), r"neighbors must lie in \[1, 20\]"),
    (dict(neighbors=9, max_frames=8), r"neighbors must lie in \[1, 8\]"),
    (dict(max_frames=1), "max_frames must be >= 2"),
])
def test_neighbors_out_of_range(kw, message):
  codes, scores = _bank(n=20)
  with pytest.raises(ValueError, match=message):
    score_norm.fit_local_normalizer(codes, scores, **kw)


def test_too_few_frames_and_even_subset():
  with pytest.raises(ValueError, match="1 training frame"):
    score_norm.fit_local_normalizer(np.zeros((1, 2)), [1.0], neighbors=1)
  codes, scores = _bank(n=101)
  norm = score_norm.fit_local_normalizer(codes, scores, neighbors=2, max_frames=11)
  np.testing.assert_array_equal(norm.codes, codes[::10])
  np.testing.assert_array_equal(norm.scores, scores[::10])


def test_save_load_round_trip(tmp_path):
  codes, scores = _bank(n=50)
  norm = score_norm.fit_local_normalizer(codes, scores, neighbors=4)
  path = norm.save(tmp_path / "sub" / score_norm.FILE_NAME)
  assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == [score_norm.FILE_NAME]
  loaded = score_norm.load_local_normalizer(path)
  assert loaded.neighbors == 4
  np.testing.assert_array_equal(loaded.codes, norm.codes)
  np.testing.assert_array_equal(loaded.scores, norm.scores)
  np.testing.assert_array_equal(loaded(codes[:9], scores[:9]), norm(codes[:9], scores[:9]))


def test_missing_or_corrupt_file_is_an_error_naming_it(tmp_path):
  missing = tmp_path / "none.npz"
  with pytest.raises(artifact.ArtifactError, match=f"{missing}: the score normalizer .*missing"):
    score_norm.load_local_normalizer(missing)
  corrupt = tmp_path / "corrupt.npz"
  corrupt.write_bytes(b"PK\x03\x04 not a zip")
  with pytest.raises(artifact.ArtifactError, match=f"{corrupt}: not a usable score normalizer"):
    score_norm.load_local_normalizer(corrupt)
  wrong = tmp_path / "wrong.npz"
  np.savez(wrong, codes=np.zeros(5), scores=np.zeros(5), neighbors=2)
  with pytest.raises(artifact.ArtifactError, match=rf"{wrong}: .*expected codes \(N, Z\)"):
    score_norm.load_local_normalizer(wrong)
  fractional = tmp_path / "fractional.npz"  # k must be stored as an integer, not rounded
  np.savez(fractional, codes=np.zeros((5, 2)), scores=np.ones(5), neighbors=2.5)
  with pytest.raises(artifact.ArtifactError, match=f"{fractional}: .*'neighbors' must be an "
                     "integer"):
    score_norm.load_local_normalizer(fractional)
  lacking = tmp_path / "lacking.npz"
  np.savez(lacking, codes=np.zeros((5, 2)), scores=np.zeros(5))
  with pytest.raises(artifact.ArtifactError, match=f"{lacking}: .*neighbors"):
    score_norm.load_local_normalizer(lacking)


def _tiny_scorer():
  """A small untrained FCN AE's feature config, FrameScorer and parameters."""
  cfg = features.FeatureConfig(n_mels=8, context=2)
  model = models.FCNAutoencoder(dim=cfg.dim, hidden_layers=1, units=16, bottleneck=4)
  params = model.init(jax.random.key(0), jnp.zeros((1, cfg.dim)))["params"]
  return cfg, frame_scores.FrameScorer(model, cfg), params


def test_normalized_scorer_and_fit_from_clips():
  cfg, scorer, params = _tiny_scorer()
  rng = np.random.default_rng(0)
  waves = [(0.2 * rng.standard_normal(8000 + 100 * i)).astype(np.float32) for i in range(3)]
  norm = score_norm.fit_from_clips(scorer, params, waves, neighbors=5)
  inner = [scorer(params, w, with_codes=True) for w in waves]
  inner = [(s[cfg.interior(len(w))], c[cfg.interior(len(w))]) for w, (s, c) in zip(waves, inner)]
  np.testing.assert_array_equal(norm.scores, np.concatenate([s for s, _ in inner]))
  np.testing.assert_array_equal(norm.codes, np.concatenate([c for _, c in inner]))
  wrapped = score_norm.NormalizedScorer(scorer, norm)
  assert wrapped.config is cfg
  test = (0.3 * rng.standard_normal(9000)).astype(np.float32)
  scores, codes = scorer(params, test, with_codes=True)
  np.testing.assert_array_equal(wrapped(params, test, name="t.wav"), norm(codes, scores))


# ------------------------------------------------------------------ knn_z


def _knn_z_brute(bank_codes, bank_scores, codes, scores, k):
  """exp(sigma_ref * z) by brute force (module doc of score_norm)."""
  logs = np.log(bank_scores.astype(np.float64))

  def spread(rows):
    return np.mean(logs[rows], axis=1), np.std(logs[rows], axis=1, ddof=1)

  d_self = np.sum(np.square(bank_codes[:, None] - bank_codes[None]), axis=-1)
  np.fill_diagonal(d_self, np.inf)
  reference = np.median(spread(np.argsort(d_self, axis=1, kind="stable")[:, :k])[1])
  d = np.sum(np.square(codes[:, None, :] - bank_codes[None, :, :]), axis=-1)
  mean, sd = spread(np.argsort(d, axis=1, kind="stable")[:, :k])
  return np.exp(reference * (np.log(scores) - mean) / sd)


def test_knn_z_is_the_local_z_score_of_the_log_score_on_the_reference_scale():
  codes, scores = _bank()
  norm = score_norm.fit_local_normalizer(codes, scores, neighbors=6, kind="knn_z")
  rng = np.random.default_rng(3)
  query, q_scores = rng.standard_normal((25, 3)), 1.0 + rng.gamma(2.0, size=25)
  np.testing.assert_allclose(norm(query, q_scores),
                             _knn_z_brute(codes, scores, query, q_scores, 6), rtol=1e-4)
  # Scaling every score (a model with other units) changes nothing.
  scaled = score_norm.fit_local_normalizer(codes, 40.0 * scores, neighbors=6, kind="knn_z")
  np.testing.assert_allclose(scaled(query, 40.0 * q_scores), norm(query, q_scores), rtol=1e-4)


def test_knn_z_reference_spread_never_counts_a_frame_as_its_own_neighbour():
  """Codes shared exactly (identical frames, an all-zero ReLU code) may list another copy
  before the frame itself: sigma_ref's 'other' neighbours still leave the frame out."""
  rng = np.random.default_rng(0)
  codes = np.concatenate([np.zeros((200, 3)), rng.standard_normal((200, 3))]).astype(np.float32)
  scores = (1.0 + rng.gamma(2.0, size=400)).astype(np.float32)
  norm = score_norm.fit_local_normalizer(codes, scores, neighbors=10, kind="knn_z")
  from sklearn.neighbors import NearestNeighbors  # pylint: disable=import-outside-toplevel
  raw = NearestNeighbors(n_neighbors=11).fit(codes).kneighbors(codes, return_distance=False)
  assert np.any(raw[:, 0] != np.arange(400))  # the case in question does arise here
  index = score_norm._others(raw)  # pylint: disable=protected-access
  assert index.shape == (400, 10)
  assert not np.any(index == np.arange(400)[:, None])
  # a row without itself drops its farthest; a row with itself keeps the other ten in order
  for i in range(400):
    want = [j for j in raw[i] if j != i][:10]
    np.testing.assert_array_equal(index[i], want)
  logs = np.log(scores.astype(np.float64))[index]
  assert norm.reference_spread == pytest.approx(float(np.median(logs.std(axis=1, ddof=1))))


def test_knn_z_evens_out_modes_of_different_spread_where_knn_does_not():
  """Two modes: a frequent one whose scores vary little and a rare one whose scores
  vary widely (in log units 0.1 against 0.5). New normal frames of each mode: under knn
  the rare mode's upper quantile stays far above the frequent one's (its maxima are the
  false alarms of eq. 11); under knn_z the two quantiles nearly agree."""
  rng = np.random.default_rng(0)

  def mode(n, centre, log_sd):
    codes = centre + 0.3 * rng.standard_normal((n, 2))
    return codes, np.exp(5.0 + log_sd * rng.standard_normal(n))

  (fc, fs), (rc, rs) = mode(1800, 0.0, 0.1), mode(200, 10.0, 0.5)
  codes, scores = np.concatenate([fc, rc]), np.concatenate([fs, rs])
  (qfc, qfs), (qrc, qrs) = mode(3000, 0.0, 0.1), mode(3000, 10.0, 0.5)
  for kind, lo, hi in (("knn", 1.4, np.inf), ("knn_z", 0.9, 1.1)):
    norm = score_norm.fit_local_normalizer(codes, scores, neighbors=20, kind=kind)
    ratio = np.quantile(norm(qrc, qrs), 0.99) / np.quantile(norm(qfc, qfs), 0.99)
    assert lo < ratio < hi, (kind, ratio)


def test_knn_z_is_finite_for_equal_zero_and_extreme_scores():
  codes, _ = _bank(n=30)
  equal = score_norm.fit_local_normalizer(codes, np.full(30, 3.0), neighbors=4, kind="knn_z")
  got = equal(codes[:4], [3.0, 3.0 * (1 + 1e-9), 1e30, 0.0])
  assert np.all(np.isfinite(got)) and got[0] == pytest.approx(1.0)
  # Equal neighbours everywhere: both spreads are the floor, so knn_z is the ratio to
  # the geometric mean (a zero score is floored, not log(0)).
  np.testing.assert_allclose(got[2:], [1e30 / 3.0, 1e-6], rtol=1e-5)
  # A cluster of equal scores (spread at the floor) in a bank whose usual spread is ~1:
  # z of a deviating score is huge; the exponent is clipped at +-80, not inf or 0.
  codes, scores = _bank(n=40)
  codes[:10], scores[:10] = 100.0, 3.0
  mixed = score_norm.fit_local_normalizer(codes, scores, neighbors=4, kind="knn_z")
  huge = mixed(codes[:2], [1e30, 1e-30])
  np.testing.assert_allclose(huge, np.exp([80.0, -80.0]).astype(np.float32), rtol=1e-5)
  zeros = score_norm.fit_local_normalizer(codes, np.zeros(len(codes)), neighbors=4,
                                          kind="knn_z")
  assert np.all(np.isfinite(zeros(codes[:3], [0.0, 1.0, 1e-20])))


def test_knn_z_bad_kind_and_neighbours():
  codes, scores = _bank(n=20)
  with pytest.raises(ValueError, match=r"neighbors must lie in \[2, 20\] .* 'knn_z', got 1"):
    score_norm.fit_local_normalizer(codes, scores, neighbors=1, kind="knn_z")
  with pytest.raises(ValueError, match="kind must be one of"):
    score_norm.fit_local_normalizer(codes, scores, neighbors=3, kind="knn_max")


def test_knn_z_save_load_and_old_files_without_kind(tmp_path):
  codes, scores = _bank(n=50)
  norm = score_norm.fit_local_normalizer(codes, scores, neighbors=4, kind="knn_z")
  loaded = score_norm.load_local_normalizer(norm.save(tmp_path / "z.npz"))
  assert loaded.kind == "knn_z" and "knn_z normalization" in loaded.describe()
  np.testing.assert_array_equal(loaded(codes[:9], scores[:9]), norm(codes[:9], scores[:9]))
  old = tmp_path / "old.npz"  # written before knn_z existed: no 'kind' entry
  np.savez(old, codes=codes, scores=scores, neighbors=np.int64(4))
  assert score_norm.load_local_normalizer(old).kind == "knn"


# ------------------------------------------------------------------ k chosen (AUTO)


def _line_bank(n, log_scores_of, seed):
  """Codes on a line (N, 1) and scores exp(log_scores_of(x) + noise)."""
  rng = np.random.default_rng(seed)
  x = np.sort(rng.uniform(0, 100, n))
  return x[:, None].astype(np.float32), np.exp(log_scores_of(x, rng))


def test_choose_neighbors_follows_the_structure_of_the_scores():
  """Scores that are noise around one level: more neighbours estimate it better, so the
  largest k wins. Scores that switch between two levels every ~3 units of code
  (about 120 frames): a large k blurs the switches, so a small k wins."""
  flat = lambda x, rng: 0.3 * rng.standard_normal(x.size)
  steps = lambda x, rng: 2.0 * (np.sin(x) > 0) + 0.05 * rng.standard_normal(x.size)
  chosen = {}
  for name, fn in (("flat", flat), ("steps", steps)):
    codes, scores = _line_bank(4000, fn, 0)
    held_codes, held_scores = _line_bank(1000, fn, 1)
    bank = score_norm.fit_local_normalizer(codes, scores, neighbors=2, kind="knn_z")
    k, table = score_norm.choose_neighbors(bank, held_codes, held_scores)
    assert sorted(table) == list(score_norm.CANDIDATES) and k in table
    assert table[k] == max(table.values())
    chosen[name] = k
  assert chosen["flat"] == 160 and chosen["steps"] <= 40, chosen


def test_choose_neighbors_bad_input():
  codes, scores = _bank(n=30)
  bank = score_norm.fit_local_normalizer(codes, scores, neighbors=2, kind="knn_z")
  k, table = score_norm.choose_neighbors(bank, codes[:5], scores[:5])
  assert sorted(table) == [5, 10, 20] and k in table  # the candidates <= 30 frames
  with pytest.raises(ValueError, match="no k in"):
    score_norm.choose_neighbors(bank, codes[:5], scores[:5], candidates=(40, 80))
  with pytest.raises(ValueError, match=r"held-out frames: expected codes \(T, 3\)"):
    score_norm.choose_neighbors(bank, codes[:5, :2], scores[:5])
  with pytest.raises(ValueError, match="held-out frames: the scores hold NaN"):
    score_norm.choose_neighbors(bank, codes[:2], [1.0, np.nan])


def test_fit_from_clips_chooses_k_on_the_heldout_clips():
  _, scorer, params = _tiny_scorer()
  rng = np.random.default_rng(0)
  waves = [(0.2 * rng.standard_normal(16000)).astype(np.float32) for _ in range(4)]
  norm = score_norm.fit_from_clips(scorer, params, waves[:3], neighbors=score_norm.AUTO,
                                   kind="knn_z", heldout_waves=waves[3:])
  first = score_norm.fit_from_clips(scorer, params, waves[:3], neighbors=2, kind="knn_z")
  held = score_norm.clip_frames(scorer, params, waves[3:])
  assert (norm.neighbors, norm.choice) == score_norm.choose_neighbors(first, *held)
  with pytest.raises(ValueError, match="needs held-out normal clips"):
    score_norm.fit_from_clips(scorer, params, waves[:3], neighbors=0, kind="knn_z")
  with pytest.raises(ValueError, match="applies to --score_normalization=knn_z or auto only"):
    score_norm.fit_from_clips(scorer, params, waves[:3], neighbors=0, kind="knn",
                              heldout_waves=waves[3:])


# ------------------------------------------------------------------ the held-out bank


def test_heldout_banks_leave_each_clip_out_and_choose_k_on_the_left_out_clip():
  _, scorer, params = _tiny_scorer()
  rng = np.random.default_rng(1)
  waves = [(0.2 * rng.standard_normal(16000)).astype(np.float32) for _ in range(4)]
  full, loco = score_norm.fit_heldout_banks(scorer, params, waves, neighbors=score_norm.AUTO,
                                            kind="knn_z")
  per_clip = [score_norm.clip_frames(scorer, params, [w]) for w in waves]
  np.testing.assert_array_equal(full.codes, np.concatenate([c for c, _ in per_clip]))
  assert len(loco) == 4
  for i, bank in enumerate(loco):  # bank i holds every clip's frames but clip i's
    others = [s for j, (_, s) in enumerate(per_clip) if j != i]
    np.testing.assert_array_equal(bank.scores, np.concatenate(others).astype(np.float32))
    assert bank.neighbors == full.neighbors and bank.kind == "knn_z"
  # k: the mean over every held-out frame of its log density under the other clips' bank
  total = {}
  for i, (codes, scores) in enumerate(per_clip):
    first = score_norm.fit_local_normalizer(loco[i].codes, loco[i].scores, neighbors=2,
                                            kind="knn_z")
    _, table = score_norm.choose_neighbors(first, codes, scores)
    for k, v in table.items():
      total[k] = total.get(k, 0.0) + v * scores.size
  frames = sum(s.size for _, s in per_clip)
  expected = {k: v / frames for k, v in total.items()}
  assert full.choice.keys() == expected.keys()
  for k in expected:
    assert full.choice[k] == pytest.approx(expected[k], rel=1e-9)
  assert full.neighbors == max(expected, key=lambda k: (expected[k], -k))
  # a clip normalized by a bank that holds its own frames finds itself among the
  # neighbours; left out, it does not: the two differ
  codes, scores = per_clip[0]
  assert not np.allclose(full(codes, scores), loco[0](codes, scores))


def test_heldout_banks_need_two_clips_and_a_k_that_fits():
  _, scorer, params = _tiny_scorer()
  rng = np.random.default_rng(2)
  waves = [(0.2 * rng.standard_normal(16000)).astype(np.float32) for _ in range(3)]
  with pytest.raises(ValueError, match="at least 2 held-out clips, got 1"):
    score_norm.fit_heldout_banks(scorer, params, waves[:1], neighbors=5)
  full, loco = score_norm.fit_heldout_banks(scorer, params, waves, neighbors=5, kind="knn")
  assert full.neighbors == 5 and full.choice is None and full.kind == "knn"
  with pytest.raises(ValueError, match="neighbors"):
    score_norm.fit_heldout_banks(scorer, params, waves, neighbors=10**6, kind="knn")


def test_knn_z_needs_three_bank_frames():
  """sigma_ref is a spread over each frame's *other* frames: with two, one value."""
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match="2 training frames; kind 'knn_z' needs at least 3"):
    score_norm.fit_local_normalizer(rng.normal(size=(2, 3)), [1.0, 2.0], neighbors=2,
                                    kind="knn_z")
  out = score_norm.fit_local_normalizer(rng.normal(size=(3, 3)), [1.0, 2.0, 3.0], neighbors=2,
                                        kind="knn_z")(rng.normal(size=(4, 3)), [0.5, 1, 2, 3])
  assert np.isfinite(out).all()


def test_knn_z_bank_with_as_many_frames_as_neighbours():
  """k = N: sigma_ref is the spread over each frame's N - 1 other frames."""
  rng = np.random.default_rng(0)
  codes, scores = rng.normal(size=(4, 3)), np.array([1.0, 2.0, 4.0, 8.0])
  norm = score_norm.fit_local_normalizer(codes, scores, neighbors=4, kind="knn_z")
  logs = np.log(scores)
  want = np.median([np.std(np.delete(logs, i), ddof=1) for i in range(4)])
  assert norm.reference_spread == pytest.approx(want)
  assert np.isfinite(norm(rng.normal(size=(2, 3)), [1.0, 3.0])).all()


def test_choose_neighbors_keeps_the_first_k_on_ties_and_a_k_equal_to_the_bank():
  codes, _ = _bank(n=20)
  equal = score_norm.fit_local_normalizer(codes, np.full(20, 2.0), neighbors=2, kind="knn_z")
  # equal scores everywhere: every k gives the same density; the smallest is kept
  k, table = score_norm.choose_neighbors(equal, codes[:5], np.full(5, 2.0))
  assert sorted(table) == [5, 10, 20]  # 20 = the bank's frames is a usable k
  assert len(set(table.values())) == 1 and k == 5


class _ConstantScorer:
  """A stand-in for ``FrameScorer``: every frame scores 1, codes are random (no model)."""

  config = features.FeatureConfig(n_mels=8, context=2)

  def __call__(self, params, wave, *, name="waveform", with_codes=False):
    frames = self.config.num_frames(len(wave))
    codes = np.random.default_rng(len(wave)).standard_normal((frames, 2)).astype(np.float32)
    scores = np.ones(frames, np.float32)
    return (scores, codes) if with_codes else scores


def test_heldout_banks_choose_k_among_those_every_left_out_bank_fits():
  """Clips of 6, 10 and 26 interior frames: the banks without one clip hold 36, 32 and 16
  frames, so k in (5, 10) only; equal densities (constant scores): the first, 5."""
  scorer = _ConstantScorer()
  waves = [np.zeros(n, np.float32) for n in (3000, 4000, 8000)]
  assert [scorer.config.interior_count(len(w)) for w in waves] == [6, 10, 26]
  full, loco = score_norm.fit_heldout_banks(scorer, None, waves, neighbors=score_norm.AUTO,
                                            kind="knn_z")
  assert sorted(full.choice) == [5, 10] and full.neighbors == 5
  assert [b.frames for b in loco] == [36, 32, 16]


@pytest.mark.parametrize("kind, neighbors, error", [
    ("knn_z", 2, None), ("knn_z", 1, ">= 2"), ("auto", 1, ">= 2"), ("auto", 0, None),
    ("knn", 1, None), ("knn", 0, "knn_z or auto only"), ("none", 0, "knn_z or auto only")])
def test_check_setting(kind, neighbors, error):
  if error is None:
    score_norm.check_setting(kind, neighbors)
  else:
    with pytest.raises(ValueError, match=error):
      score_norm.check_setting(kind, neighbors)


def test_flag_defaults_and_bank_candidates():
  assert score_norm.resolve_neighbors("knn_z", None) == score_norm.AUTO
  assert score_norm.resolve_neighbors("auto", None) == score_norm.AUTO
  assert score_norm.resolve_neighbors("knn", None) == 10
  assert score_norm.resolve_neighbors("knn", 3) == 3
  assert score_norm.bank_candidates("auto") == ("training", "crossfit")
  assert score_norm.bank_candidates("heldout") == ("heldout",)
  assert score_norm.needs_fold_models("auto") and score_norm.needs_fold_models("crossfit")
  assert not score_norm.needs_fold_models("heldout")


def test_prepare_none_removes_an_earlier_bank(tmp_path):
  codes, scores = _bank(n=20)
  score_norm.fit_local_normalizer(codes, scores, neighbors=3).save(tmp_path / score_norm.FILE_NAME)
  scorer = object()
  assert score_norm.prepare(scorer, None, [], kind="none", neighbors=10,
                            directory=str(tmp_path)) == (scorer, None)
  assert not (tmp_path / score_norm.FILE_NAME).exists()


# ------------------------------------------------------------------ sizes known before training


def test_bank_frames_counts_the_frames_the_banks_will_hold():
  _, scorer, params = _tiny_scorer()
  rng = np.random.default_rng(2)
  # one clip too short for an interior frame (all its frames are kept), three of other lengths
  waves = [(0.2 * rng.standard_normal(n)).astype(np.float32) for n in (600, 8000, 9100, 16000)]
  lengths = [len(w) for w in waves]
  full, loco = score_norm.fit_heldout_banks(scorer, params, waves, neighbors=3, kind="knn")
  assert score_norm.bank_frames(lengths, scorer.config) == full.frames
  assert score_norm.bank_frames(lengths, scorer.config, leave_one_out=True) == min(
      b.frames for b in loco)
  assert score_norm.bank_frames(lengths, scorer.config, max_frames=50) == 50
  fitted = score_norm.fit_from_clips(scorer, params, waves, neighbors=3, max_frames=50)
  assert fitted.frames == 50


def test_a_bank_too_small_for_the_normalization_is_refused_naming_the_flags():
  cfg = features.FeatureConfig(n_mels=8, context=2)
  frames = cfg.interior_count(16000)
  score_norm.check_bank_size("knn_z", frames, [16000], cfg)  # k = the bank's frames: fits
  with pytest.raises(ValueError, match=rf"--normalization_neighbors={frames + 1} exceeds the "
                     rf"{frames} frames of the knn bank"):
    score_norm.check_bank_size("knn", frames + 1, [16000], cfg)
  score_norm.check_bank_size("none", 10**6, [], cfg)  # no bank
  short = next(n for n in range(1, 16000) if cfg.interior_count(n) == 4)
  score_norm.check_bank_size("knn_z", 3, [short], cfg)
  score_norm.check_bank_size("auto", score_norm.AUTO, [short, short], cfg)  # 8 >= 5
  three = next(n for n in range(1, 16000) if cfg.interior_count(n) == 3)
  score_norm.check_bank_size("knn_z", 2, [three], cfg)  # exactly the 3 frames knn_z needs
  five = next(n for n in range(1, 16000) if cfg.interior_count(n) == 5)
  score_norm.check_bank_size("knn_z", score_norm.AUTO, [five], cfg)  # exactly min(CANDIDATES)
  with pytest.raises(ValueError, match=r"the knn bank holds 4 frames; --score_normalization="
                     r"auto with --normalization_neighbors=0 \(k chosen\) needs at least 5"):
    score_norm.check_bank_size("auto", score_norm.AUTO, [short], cfg)  # CANDIDATES start at 5
  two = next(n for n in range(1, 16000) if cfg.interior_count(n) == 2)
  with pytest.raises(ValueError, match="holds 2 frames; --score_normalization=knn_z needs at "
                     "least 3"):
    score_norm.check_bank_size("knn_z", 2, [two], cfg)
  with pytest.raises(ValueError, match="the knn bank is empty"):
    score_norm.check_bank_size("knn", 1, [16000], cfg, leave_one_out=True)  # one held-out clip


def test_the_fingerprint_tells_banks_apart(tmp_path):
  # A stored format (calibrations keep it): pinned, and it survives a save and load.
  tiny = score_norm.LocalNormalizer(codes=np.arange(6, dtype=np.float32).reshape(3, 2),
                                    scores=np.array([1, 2, 3], np.float32), neighbors=2)
  assert tiny.fingerprint == "fe0adc37baba5f97"
  big_endian = score_norm.LocalNormalizer(codes=tiny.codes.astype(">f4"),
                                          scores=tiny.scores.astype(">f8"), neighbors=2)
  assert big_endian.fingerprint == tiny.fingerprint
  codes, scores = _bank()
  tiny.save(tmp_path / "tiny.npz")
  assert score_norm.load_local_normalizer(tmp_path / "tiny.npz").fingerprint == tiny.fingerprint
  a = score_norm.fit_local_normalizer(codes, scores, neighbors=5)
  assert a.fingerprint == score_norm.fit_local_normalizer(codes.copy(), scores.copy(),
                                                          neighbors=5).fingerprint
  changed = scores.copy()
  changed[7] *= 1.001
  assert score_norm.fit_local_normalizer(codes, changed, neighbors=5).fingerprint != a.fingerprint
  assert score_norm.fit_local_normalizer(codes, scores, neighbors=6).fingerprint != a.fingerprint
