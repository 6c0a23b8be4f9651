"""Rare-normal evaluation: several test folders, --rare_clips files, the PCA reference,
input standardization and the contrast band-width (issue: rare normals on real recordings)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile

from bu_jax import data
from bu_jax import kde
from bu_jax import models
from bu_jax import reference

SR = 16000


def _write(path, seed, seconds=0.5, freq=440.0):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  t = np.arange(int(seconds * SR)) / SR
  rng = np.random.default_rng(seed)
  wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)
  soundfile.write(path, wave.astype(np.float32), SR)
  return path


def _dcase_tree(root, folders=("test_anr-10dB", "test_anr-20dB")):
  for i in range(3):
    _write(os.path.join(root, "train", f"normal_id_00_{i:08d}.wav"), i)
  for k, folder in enumerate(folders):  # the same normals; other anomalies per folder
    for i in range(2):
      _write(os.path.join(root, folder, f"normal_id_00_{i:08d}.wav"), 10 + i)
      _write(os.path.join(root, folder, f"anomaly_id_00_{i:08d}.wav"), 20 + i + 10 * k,
             freq=900.0)
  return root


def test_several_test_folders_give_one_condition_each(tmp_path):
  root = _dcase_tree(str(tmp_path / "m"))
  ds = data.load_dataset(root)
  conds = sorted({c.condition for c in ds.test})
  assert conds == ["test_anr-10dB_id_00", "test_anr-20dB_id_00"]
  assert len(ds.test) == 8
  # a single plain test/ keeps the plain names
  root2 = _dcase_tree(str(tmp_path / "p"), folders=("test",))
  assert {c.condition for c in data.load_dataset(root2).test} == {"id_00"}


def test_missing_test_folder_is_named(tmp_path):
  root = str(tmp_path / "m")
  _write(os.path.join(root, "train", "normal_id_00_00000000.wav"), 0)
  with pytest.raises(data.DataError, match="test"):
    data.load_dataset(root)


def test_rare_clips_csv_matches_by_relative_path(tmp_path):
  root = _dcase_tree(str(tmp_path / "set" / "dev_data" / "m"))
  csv_path = tmp_path / "set" / "metadata.csv"
  # train/ and test folders share file names: the folder tells them apart
  csv_path.write_text(
      "file,split,rare\n"
      "dev_data/m/train/normal_id_00_00000000.wav,train,0\n"
      "dev_data/m/test_anr-10dB/normal_id_00_00000000.wav,test,1\n"
      "dev_data/m/test_anr-10dB/normal_id_00_00000001.wav,test,0\n"
      "dev_data/m/test_anr-20dB/normal_id_00_00000000.wav,test,1\n"
      "dev_data/m/test_anr-20dB/normal_id_00_00000001.wav,test,0\n")
  ds = data.mark_rare(data.load_dataset(root), data.read_rare_clips(str(csv_path)))
  rare = {(c.condition, os.path.basename(c.path), c.label): c.rare for c in ds.test}
  assert rare[("test_anr-10dB_id_00", "normal_id_00_00000000.wav", 0)] is True
  assert rare[("test_anr-20dB_id_00", "normal_id_00_00000001.wav", 0)] is False
  assert rare[("test_anr-10dB_id_00", "anomaly_id_00_00000000.wav", 1)] is None  # not listed


def test_rare_clips_warning_counts_the_unlisted_normal_clips(tmp_path, caplog):
  """The warning counts the normal test clips left in neither group, not the anomalies,
  whose flag is never used (it once said '228 of 240 test clips' for 2 of 40 normals)."""
  root = _dcase_tree(str(tmp_path / "set" / "dev_data" / "m"))
  csv_path = tmp_path / "set" / "metadata.csv"
  csv_path.write_text("file,rare\ndev_data/m/test_anr-10dB/normal_id_00_00000000.wav,1\n")
  with caplog.at_level("WARNING"):
    data.mark_rare(data.load_dataset(root), data.read_rare_clips(str(csv_path)))
  (message,) = [r.getMessage() for r in caplog.records if "not listed" in r.getMessage()]
  assert "3 of the 4 normal test clips are not listed: in neither the rare nor" in message


def test_rare_clips_plain_list_and_bad_files(tmp_path):
  root = _dcase_tree(str(tmp_path / "m"))
  listing = tmp_path / "rare.txt"
  listing.write_text("normal_id_00_00000001.wav\n")
  ds = data.mark_rare(data.load_dataset(root), data.read_rare_clips(str(listing)))
  normals = {(c.condition, os.path.basename(c.path)): c.rare for c in ds.test if c.label == 0}
  assert normals[("test_anr-10dB_id_00", "normal_id_00_00000001.wav")] is True
  assert normals[("test_anr-10dB_id_00", "normal_id_00_00000000.wav")] is False
  with pytest.raises(data.DataError, match="no such file"):
    data.read_rare_clips(str(tmp_path / "missing.csv"))
  for content, message in (
      ("file,rare\nx.wav,maybe\n", "line 2"),
      ("clip,rare\nx.wav,1\n", "file-name column"),
      ("file,label\nx.wav,0\n", r"no 'rare' column \(0/1; its columns: file, label\)"),
      ("rare\n1\n0\n", "a 'rare' column but no file-name column"),
      ("file,rare\nx.wav,1\ny.wav,0\nx.wav,1\nx.wav,0\n",
       "line 5: x.wav is marked both rare and not rare"),
      ("file,rare\n\n\nx.wav,1\n\ny.wav,maybe\n", "line 6: rare must be"),  # blank lines counted
      ("clip,is_rare\nx.wav,1\n", r"2 columns \(clip, is_rare\) but neither")):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    with pytest.raises(data.DataError, match=message):
      data.read_rare_clips(str(bad))
  other = tmp_path / "other.txt"
  other.write_text("somewhere_else.wav\n")
  with pytest.raises(data.DataError, match="names a test clip"):
    data.mark_rare(data.load_dataset(root), data.read_rare_clips(str(other)))


def test_rare_clips_a_path_entry_outranks_a_bare_name(tmp_path):
  """An entry with the folder (test_anr-10dB/x.wav) is more specific than a bare x.wav: it
  decides the clips it names; the bare name decides the others of that name."""
  listing = tmp_path / "rare.csv"
  listing.write_text("file,rare\nnormal_0.wav,0\ntest_anr-10dB/normal_0.wav,1\n")
  labels = data.read_rare_clips(str(listing))
  paths = [str(tmp_path / f / "normal_0.wav") for f in ("test_anr-10dB", "test_anr-20dB")]
  assert data.rare_flags(paths, labels) == ([True, False], 2)


@pytest.mark.parametrize("content", [
    "file;rare\nx.wav;1\ny.wav;0\nz.wav;\n",       # semicolons, z left unknown
    "wav\trare\nx.wav\t1.0\ny.wav\t0.0\nz.wav\t\n",  # tabs, pandas' floats
    "\ufeffname,rare,note\r\nx.wav,yes,a\r\ny.wav,No,b\r\nz.wav,,c\r\n",  # BOM, CRLF
])
def test_rare_clips_csv_dialects_read_alike(tmp_path, content):
  listing = tmp_path / "rare.csv"
  listing.write_bytes(content.encode("utf-8"))
  assert data.read_rare_clips(str(listing)) == {("x.wav",): True, ("y.wav",): False}


def test_pca_detector_scores_the_unseen_direction():
  """A tone-only training set: white noise scores far higher than the tone."""
  cfg = models.preset("fcn40-small").features
  t = np.arange(SR) / SR
  rng = np.random.default_rng(0)
  train = [(0.3 * np.sin(2 * np.pi * 300 * t) + 0.01 * rng.standard_normal(t.size))
           .astype(np.float32) for _ in range(3)]
  det = reference.PCADetector(cfg, components=4).fit(train)
  normal = det.frame_scores(train[0])
  noisy = det.frame_scores((train[0] + 0.3 * rng.standard_normal(t.size)).astype(np.float32))
  assert normal.shape == (cfg.num_frames(t.size),)
  assert np.all(np.isfinite(normal))
  assert np.median(noisy) > 10 * np.median(normal)
  assert 0 < det.explained_variance <= 1
  scores, codes = det.frame_scores(train[0], with_codes=True)  # the PCA coefficients
  np.testing.assert_array_equal(scores, normal)
  assert codes.shape == (normal.size, 4) and codes.dtype == np.float32
  with pytest.raises(ValueError, match="components"):
    reference.PCADetector(cfg, components=0)
  with pytest.raises(RuntimeError, match="fit"):
    reference.PCADetector(cfg, components=2).frame_scores(train[0])


def _pca_training_clips():
  """Three 1-s training clips: two of a 300-Hz tone, then one of a 3-kHz tone, each in
  noise (every feature dimension varies)."""
  t = np.arange(SR) / SR
  rng = np.random.default_rng(0)
  return [(0.3 * np.sin(2 * np.pi * f * t) + 0.03 * rng.standard_normal(t.size))
          .astype(np.float32) for f in (300, 300, 3000)]


def test_pca_training_frames_score_d_times_the_unexplained_variance():
  """Standardized with the training frames' statistics, every dimension of those frames
  has unit variance, total D; the k components keep the share ``explained_variance`` of
  it, so the squared reconstruction error (eq. 5's linear analogue) of the training
  clips' interior frames averages D (1 - explained_variance)."""
  cfg = models.preset("fcn40-small").features
  train = _pca_training_clips()
  det = reference.PCADetector(cfg, components=8).fit(train)
  scores = np.concatenate([det.frame_scores(w)[cfg.interior(len(w))] for w in train])
  assert 0.1 < det.explained_variance < 0.99
  assert np.mean(scores, dtype=np.float64) == pytest.approx(
      cfg.dim * (1 - det.explained_variance), rel=1e-3)


def test_pca_fitted_on_a_subset_of_frames_takes_them_from_every_clip():
  """``max_frames`` below the training frames' count: the subset spans all clips, so
  the last clip's tone is as well reconstructed as with every frame (not a direction
  the fit never saw)."""
  cfg = models.preset("fcn40-small").features
  train = _pca_training_clips()
  frames = sum(cfg.interior_count(len(w)) for w in train)
  full = reference.PCADetector(cfg, components=4).fit(train)
  subset = reference.PCADetector(cfg, components=4, max_frames=frames // 2).fit(train)
  last = lambda det: np.median(det.frame_scores(train[-1])[cfg.interior(len(train[-1]))])
  assert last(subset) < 2 * last(full)


@pytest.mark.parametrize("rows", [200, 4000])  # the full SVD, the covariance's eigenvectors
def test_fit_pca_reconstructs_as_the_full_svd_does(rows):
  from sklearn import decomposition  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  z = rng.standard_normal((rows, 40)) @ rng.standard_normal((40, 40))
  z -= z.mean(axis=0)
  fitted, full = (reference.fit_pca(z, 6),
                  decomposition.PCA(n_components=6, svd_solver="full").fit(z))
  assert fitted.svd_solver == ("full" if rows < 10 * 40 else "covariance_eigh")
  query = rng.standard_normal((50, 40)) @ rng.standard_normal((40, 40))
  residual = lambda p: np.sum((query - p.inverse_transform(p.transform(query))) ** 2, axis=1)
  np.testing.assert_allclose(residual(fitted), residual(full), rtol=1e-9)
  np.testing.assert_allclose(fitted.explained_variance_ratio_, full.explained_variance_ratio_,
                             rtol=1e-9)


def test_standardized_input_ae_scores_in_standard_units():
  """score(x) = ||z - AE(z)||^2 with z = (x - mean) * scale; the stats get no gradient."""
  preset = models.ModelPreset("tiny", models.preset("fcn40-small").features, 1, 8, 4,
                              standardize_input=True)
  model = preset.build()
  d = preset.features.dim
  params = model.init(jax.random.key(0), jnp.zeros((1, d)))["params"]
  mean = np.linspace(-10, 0, d).astype(np.float32)
  std = np.linspace(0.5, 2, d).astype(np.float32)
  params = models.set_input_statistics(params, mean, std)
  x = jnp.asarray(mean + std * np.random.default_rng(0).standard_normal((5, d)), jnp.float32)
  z = (x - mean) / std
  want = models.anomaly_score(z, model.apply({"params": params}, x))
  got = models.score_fn(model)(params, x)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  grads = jax.grad(lambda p: jnp.sum(models.score_fn(model)(p, x)))(params)
  assert not np.any(grads["input_mean"]) and not np.any(grads["input_scale"])
  assert np.any(grads["enc_0"]["kernel"])
  with pytest.raises(ValueError, match="finite"):
    models.set_input_statistics(params, mean, std * np.nan)
  # features that never vary (silent or identical frames) have nothing to standardize by:
  # an error, not a scale of 1e15 that makes every score astronomical
  for no_spread in (np.zeros(d), np.full(d, 1e-9)):
    with pytest.raises(ValueError, match="no spread"):
      models.set_input_statistics(params, mean, no_spread)
  # one dimension constant among varying ones: scaled by the floor, not blown up
  some = std.copy()
  some[3] = 0.0
  scale = np.asarray(models.set_input_statistics(params, mean, some)["input_scale"])
  assert scale[3] == pytest.approx(1 / (1e-3 * std.max()))
  plain = models.preset("fcn40-small").build()
  plain_params = plain.init(jax.random.key(0), jnp.zeros((1, d)))["params"]
  with pytest.raises(ValueError, match="standardize_input"):
    models.set_input_statistics(plain_params, mean, std)


# The KDE tests below call these jitted wrappers: one compilation per shape. Called
# eagerly, each of the ~100 operations of a call compiles on its own for every new
# shape (a contrast_sigma on a new shape took ~4 s of CPU eagerly, ~1 s jitted). The
# band-width is an argument (one program for every sigma), the rest as the caller gives.
_contrast_sigma = jax.jit(kde.contrast_sigma,
                          static_argnames=("base_sigma", "factors", "probe_rows"))


_kde_density = jax.jit(lambda x, sigma: kde.kde_density(x, sigma=sigma))
_kde_weights = jax.jit(lambda x, sigma: kde.kde_weights(x, sigma=sigma))
_kde_weights_with_memory = jax.jit(lambda x, memory, sigma, memory_mask=None: (
    kde.kde_weights_with_memory(x, memory, sigma=sigma, memory_mask=memory_mask)))


def _clusters(n_dense=400, n_sparse=40, dim=16, seed=0):
  rng = np.random.default_rng(seed)
  dense = 0.2 * rng.standard_normal((n_dense, dim))
  sparse = 3.0 + 2.0 * rng.standard_normal((n_sparse, dim))
  return jnp.asarray(np.concatenate([dense, sparse]), jnp.float32), n_dense


def test_contrast_sigma_gives_rare_frames_more_weight_than_the_paper_sigma():
  x, n_dense = _clusters()
  base = 1.0 / (2 * x.shape[1])
  sigma = float(_contrast_sigma(x, base_sigma=base))
  assert sigma in [f * base for f in kde.CONTRAST_FACTORS]

  def ratio(s):
    w = np.asarray(_kde_weights(x, s))
    return w[n_dense:].mean() / w[:n_dense].mean()

  spread = lambda s: np.var(np.log(np.asarray(_kde_density(x, s))))
  # it maximizes the spread of ln K over the candidates (all rows probed here)
  assert spread(sigma) >= max(spread(f * base) for f in kde.CONTRAST_FACTORS) - 1e-6
  assert ratio(sigma) > ratio(base)


def test_contrast_sigma_mask_and_sharding_invariance():
  x, _ = _clusters(n_dense=60, n_sparse=4, dim=8)
  base = 1.0 / 16
  want = _contrast_sigma(x, base_sigma=base)
  padded = jnp.concatenate([x, jnp.full((8, 8), jnp.nan)])
  mask = jnp.arange(72) < 64
  got = _contrast_sigma(padded, base_sigma=base, mask=mask, probe_rows=64)
  np.testing.assert_allclose(float(got), float(want))
  mesh = jax.make_mesh((8,), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.P("data"))
  sharded = jax.jit(jax.shard_map(
      lambda a: kde.contrast_sigma(a, base_sigma=base, axis_name="data"),
      mesh=mesh, in_specs=jax.P("data"), out_specs=jax.P()))(jax.device_put(x, sharding))
  np.testing.assert_allclose(float(sharded), float(want))
  # duplicates and a constant batch stay finite
  same = jnp.ones((32, 8))
  assert np.isfinite(float(_contrast_sigma(same, base_sigma=base)))
  with pytest.raises(ValueError, match="factors"):
    kde.contrast_sigma(x, base_sigma=base, factors=(1.0, -2.0))


def test_contrast_sigma_probes_the_valid_rows_wherever_the_padding_lies():
  """More rows than probe_rows, masked rows interleaved (as the train step's per-device
  buffers gather): the probes are the same valid rows, so sigma is that of the unpadded
  batch (it was not: the probes were spread over every row, padding included)."""
  sigma = jax.jit(lambda x, mask: kde.contrast_sigma(x, base_sigma=1 / 16, mask=mask))
  mask = np.stack([np.ones(600, bool), np.zeros(600, bool)], 1).reshape(-1)
  mismatched = []
  for seed in range(20):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((600, 8)).astype(np.float32)
    x[:75] = 3 + 2 * rng.standard_normal((75, 8))
    plain = float(sigma(x, None))
    interleaved = np.stack([x, np.full((600, 8), np.nan, np.float32)], 1).reshape(1200, 8)
    padded = float(sigma(interleaved, mask))
    if padded != plain:
      mismatched.append((seed, plain, padded))
  assert not mismatched
  # fewer valid rows than probe_rows: every valid row probed, none twice
  x, _ = _clusters(n_dense=100, n_sparse=10, dim=8)
  junk = jnp.concatenate([jnp.full((300, 8), jnp.nan), x, jnp.full((90, 8), jnp.nan)])
  mask = (jnp.arange(500) >= 300) & (jnp.arange(500) < 410)
  np.testing.assert_allclose(
      float(_contrast_sigma(junk, base_sigma=1 / 16, mask=mask, probe_rows=256)),
      float(_contrast_sigma(x, base_sigma=1 / 16, probe_rows=256)))


def test_contrast_sigma_with_fewer_rows_than_probes_maximizes_the_spread_over_each_row_once():
  """Fewer valid rows than probe_rows (256), alone or in a padded buffer: sigma is the
  factor whose ln K (eq. 15) varies most over the batch's rows, each counted once (the
  probe slots beyond the rows are not probes: counting them as copies of one row moved
  the choice to 4 or 8 x base here)."""
  base = 1 / 16
  for seed in (0, 24, 29):
    rng = np.random.default_rng(seed)
    n, r = int(rng.integers(20, 60)), int(rng.integers(2, 10))
    x = rng.standard_normal((n, 8)).astype(np.float32)
    x[-r:] = 3 + 2 * rng.standard_normal((r, 8))  # a rare mode after the frequent rows
    spreads = [np.var(np.log(np.asarray(_kde_density(x, f * base), np.float64)))
               for f in kde.CONTRAST_FACTORS]
    want = kde.CONTRAST_FACTORS[int(np.argmax(spreads))] * base
    assert float(_contrast_sigma(x, base_sigma=base)) == pytest.approx(want), seed
    # in a padded buffer of 300 rows (k = 256 probe slots, n valid rows)
    padded = np.concatenate([x, np.full((300 - n, 8), np.nan, np.float32)])
    mask = np.arange(300) < n
    got = float(_contrast_sigma(padded, base_sigma=base, mask=mask))
    assert got == pytest.approx(want), seed


def test_memory_weights_reduce_to_batch_weights_and_count_the_memory():
  x, _ = _clusters(n_dense=50, n_sparse=6, dim=8)
  sigma = 1.0 / 16
  empty = jnp.zeros((32, 8))
  got = _kde_weights_with_memory(x, empty, sigma, memory_mask=jnp.zeros(32, bool))
  np.testing.assert_allclose(got, _kde_weights(x, sigma), rtol=1e-5)
  # a memory holding the batch again: same standardization, every kernel sum
  # doubled over twice the count -> the same density and weights
  both = _kde_weights_with_memory(x, x, sigma)
  np.testing.assert_allclose(both, _kde_weights(x, sigma), rtol=1e-4)
  # a memory full of frames like the sparse ones makes them denser (lower weight)
  sparse_like = jnp.asarray(np.repeat(np.asarray(x[50:]), 20, axis=0))
  w = np.asarray(_kde_weights_with_memory(x, sparse_like, sigma))
  w0 = np.asarray(_kde_weights(x, sigma))
  assert w[50:].mean() / w[:50].mean() < w0[50:].mean() / w0[:50].mean()
  # garbage in masked memory rows changes nothing
  junk = jnp.concatenate([x, jnp.full((4, 8), jnp.nan)])
  mask = jnp.arange(60) < 56
  np.testing.assert_allclose(
      _kde_weights_with_memory(x, junk, sigma, memory_mask=mask), both, rtol=1e-4)


def test_memory_weights_with_groups_skip_own_group_in_the_batch_only():
  rng = np.random.default_rng(4)
  x = rng.standard_normal((10, 3)).astype(np.float32)
  mem = rng.standard_normal((5, 3)).astype(np.float32)
  g = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
  sigma = 0.4
  # an empty memory: kde_weights with the same groups
  np.testing.assert_allclose(
      kde.kde_weights_with_memory(x, mem, sigma=sigma, groups=g, memory_mask=np.zeros(5, bool)),
      kde.kde_weights(x, sigma=sigma, groups=g), rtol=1e-6)
  # against a NumPy loop: own group skipped among the batch rows, every memory row kept
  both = np.concatenate([x, mem]).astype(np.float64)
  z = (both - both.mean(0)) / both.std(0)
  want = []
  for i in range(10):
    keep = [j for j in range(15) if j >= 10 or j == i or g[j] != g[i]]
    want.append(1 / (np.mean([np.exp(-sigma * np.sum((z[i] - z[j]) ** 2)) for j in keep]) + 1e-6))
  np.testing.assert_allclose(kde.kde_weights_with_memory(x, mem, sigma=sigma, groups=g), want,
                             rtol=1e-4)


def test_memory_update_is_a_ring_of_slots():
  mem = jnp.zeros((6, 2))
  valid = jnp.zeros(6, bool)
  x = jnp.arange(20.0).reshape(10, 2)
  mask = jnp.asarray([1, 0, 1, 1, 0, 0, 1, 0, 0, 0], bool)  # valid rows 0, 2, 3, 6
  mem, valid = kde.memory_update(mem, valid, x, slot=4, rows_per_slot=2, mask=mask)
  # slot 4 % 3 = 1 -> rows 2..3; picks the 1st and 3rd valid rows (0 and 3)
  np.testing.assert_array_equal(mem[2:4], [[0, 1], [6, 7]])
  np.testing.assert_array_equal(valid, [False, False, True, True, False, False])
  # fewer valid rows than a slot holds: each valid row once, in order, the rest unfilled
  mem, valid = kde.memory_update(jnp.zeros((8, 2)), jnp.zeros(8, bool), x, slot=1,
                                 rows_per_slot=8, mask=mask)
  np.testing.assert_array_equal(mem[:4], [[0, 1], [4, 5], [6, 7], [12, 13]])
  np.testing.assert_array_equal(valid, [True] * 4 + [False] * 4)
  with pytest.raises(ValueError, match="multiple"):
    kde.memory_update(jnp.zeros((5, 2)), jnp.zeros(5, bool), x, slot=0, rows_per_slot=2)


def test_bu_training_with_memory_fills_it_and_matches_across_devices(fast_compiler_options):
  """Two BU steps with a KDE memory, the contrast band-width and leave-one-segment-out
  sums: the memory fills slot by slot, and the result on 1 device equals the result on
  2 (global KDE, replicated memory, global segment ids)."""
  from bu_jax import parallel, train  # pylint: disable=g-import-not-at-top
  preset = models.ModelPreset("tiny", models.preset("fcn40-small").features, 1, 8, 4)
  cfg = train.TrainConfig(loss="bu", model=preset, epochs=1, steps_per_epoch=2,
                          decay_start_epoch=0, segments_per_mixture=1, mixtures_per_step=2,
                          segment_seconds=0.5, kde_memory=3, kde_memory_rows=16,
                          bandwidth="contrast", kde_exclude="segment", learning_rate=1e-3)
  rng = np.random.default_rng(0)
  segs = (0.1 * rng.standard_normal((4, cfg.segment_length))).astype(np.float32)
  clips = (0.1 * rng.standard_normal((2, 2000))).astype(np.float32)
  out = []
  for n in (1, 2):
    mesh = parallel.data_mesh(jax.devices()[:n])
    corpus = train.place_corpus(segs, clips, np.array([2000, 1500]), mesh=mesh, config=cfg)
    state = train.train(cfg, corpus, mesh=mesh, compiler_options=fast_compiler_options)
    out.append(jax.device_get(state))
  for state in out:
    assert int(np.sum(state.memory["valid"])) == 32  # 2 of 3 slots written
    assert np.all(np.isfinite(state.memory["frames"]))
  np.testing.assert_allclose(out[0].memory["frames"], out[1].memory["frames"], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6),
               out[0].params, out[1].params)


def test_leave_one_group_out_density():
  """groups: a frame's sum skips its own group's other frames, against a NumPy loop."""
  rng = np.random.default_rng(1)
  x = rng.standard_normal((12, 3)).astype(np.float32)
  g = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3])
  sigma = 0.3
  got = np.asarray(kde.kde_density(jnp.asarray(x), sigma=sigma, groups=jnp.asarray(g),
                                   standardize_features=False))
  want = []
  for i in range(12):
    terms = [np.exp(-sigma * np.sum((x[i] - x[j]) ** 2)) for j in range(12)
             if j == i or g[j] != g[i]]
    want.append(np.mean(terms))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # all in distinct groups: eq. (15) exactly
  np.testing.assert_allclose(
      kde.kde_density(jnp.asarray(x), sigma=sigma, groups=jnp.arange(12)),
      kde.kde_density(jnp.asarray(x), sigma=sigma), rtol=1e-6)
  # one group: only the self term -> K = 1, uniform weights
  np.testing.assert_allclose(
      kde.kde_density(jnp.asarray(x), sigma=sigma, groups=jnp.zeros(12, jnp.int32)), 1.0)
  # sharded = single device
  mesh = jax.make_mesh((4,), ("data",), devices=jax.devices()[:4])
  shard = jax.sharding.NamedSharding(mesh, jax.P("data"))
  f = jax.jit(jax.shard_map(
      lambda a, b: kde.kde_weights(a, sigma=sigma, groups=b, axis_name="data"),
      mesh=mesh, in_specs=(jax.P("data"), jax.P("data")), out_specs=jax.P("data")))
  np.testing.assert_allclose(
      f(jax.device_put(jnp.asarray(x), shard), jax.device_put(jnp.asarray(g), shard)),
      kde.kde_weights(jnp.asarray(x), sigma=sigma, groups=jnp.asarray(g)), rtol=1e-5)
  s = kde.contrast_sigma(jnp.asarray(x), base_sigma=0.1, groups=jnp.asarray(g))
  assert np.isfinite(float(s))


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(deadline=None, derandomize=True, max_examples=15)
@given(seed=st.integers(0, 10_000), n_groups=st.integers(1, 6),
       sigma=st.floats(0.01, 2.0), scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_grouped_density_properties(seed, n_groups, sigma, scale):
  """Leave-one-group-out K: in [1/M, 1], finite for any scale and duplicates, equal to
  a NumPy loop, invariant to a joint permutation of rows and group ids."""
  rng = np.random.default_rng(seed)
  x = scale * rng.standard_normal((10, 4))
  x[3] = x[2]  # a duplicate frame
  g = rng.integers(0, n_groups, 10)
  k = np.asarray(kde.kde_density(jnp.asarray(x, jnp.float32), sigma=sigma,
                                 groups=jnp.asarray(g)))
  assert np.all(np.isfinite(k)) and np.all(k <= 1 + 1e-6) and np.all(k >= 1 / 10 - 1e-6)
  z = (x - x.mean(0)) / x.std(0)
  want = [np.mean([np.exp(-sigma * np.sum((z[i] - z[j]) ** 2)) for j in range(10)
                   if j == i or g[j] != g[i]]) for i in range(10)]
  np.testing.assert_allclose(k, want, rtol=2e-3, atol=1e-6)
  perm = rng.permutation(10)
  kp = np.asarray(kde.kde_density(jnp.asarray(x[perm], jnp.float32), sigma=sigma,
                                  groups=jnp.asarray(g[perm])))
  np.testing.assert_allclose(kp, k[perm], rtol=1e-4, atol=1e-7)


@settings(deadline=None, derandomize=True, max_examples=10)
@given(seed=st.integers(0, 10_000), scale=st.sampled_from([1e-2, 1.0, 1e2]))
def test_contrast_sigma_properties(seed, scale):
  """One of the candidates; the same for a row permutation (all rows probed) and for a
  rescaled batch (the features are standardized first)."""
  rng = np.random.default_rng(seed)
  x = np.concatenate([0.3 * rng.standard_normal((40, 6)), 2 + rng.standard_normal((6, 6))])
  base = 1.0 / 12
  s = float(kde.contrast_sigma(jnp.asarray(scale * x, jnp.float32), base_sigma=base))
  assert any(abs(s - f * base) < 1e-7 for f in kde.CONTRAST_FACTORS)
  perm = rng.permutation(len(x))
  assert float(kde.contrast_sigma(jnp.asarray(x[perm], jnp.float32), base_sigma=base)) == \
      pytest.approx(float(kde.contrast_sigma(jnp.asarray(x, jnp.float32), base_sigma=base)))
  assert float(kde.contrast_sigma(jnp.asarray(x, jnp.float32), base_sigma=base)) == \
      pytest.approx(s)


def test_train_state_fields_stay_those_of_existing_checkpoints(fast_compiler_options):
  """Checkpoints store the state's fields: without a KDE memory the state must keep
  exactly (step, params, opt_state), or earlier checkpoints stop restoring."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from bu_jax import parallel, train  # pylint: disable=g-import-not-at-top
  mesh = parallel.data_mesh(jax.devices()[:1])
  preset = models.ModelPreset("tiny", models.preset("fcn40-small").features, 1, 8, 4)
  for loss, memory in (("re", 0), ("bu", 0), ("bu", 2)):
    cfg = train.TrainConfig(loss=loss, model=preset, kde_memory=memory, kde_memory_rows=4)
    state = train.create_state(cfg, mesh=mesh, compiler_options=fast_compiler_options)
    names = [f.name for f in dataclasses.fields(state)]
    assert names == ["step", "params", "opt_state"] + (["memory"] if memory else [])
