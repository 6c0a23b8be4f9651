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
  lacking = tmp_path / "lacking.npz"
  np.savez(lacking, codes=np.zeros((5, 2)), scores=np.zeros(5))
  with pytest.raises(artifact.ArtifactError, match=f"{lacking}: .*neighbors"):
    score_norm.load_local_normalizer(lacking)


def test_normalized_scorer_and_fit_from_clips():
  cfg = features.FeatureConfig(n_mels=8, context=2)
  model = models.FCNAutoencoder(dim=cfg.dim, hidden_layers=1, units=16, bottleneck=4)
  params = model.init(jax.random.key(0), jnp.zeros((1, cfg.dim)))["params"]
  scorer = frame_scores.FrameScorer(model, cfg)
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
