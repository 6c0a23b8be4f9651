"""RE / SNP / BU losses and KDE weights: exactness, invariants, data parallelism."""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import assume, given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from jax.sharding import NamedSharding, PartitionSpec as P

from bu_jax import kde, losses, models

M, D = 24, 5
SIGMA = 1.0 / (2 * D)
LAM = 4.0
PROPS = settings(deadline=None, derandomize=True, max_examples=25, database=None)

finite = st.floats(-10, 10, allow_nan=False, width=32)
feats = hnp.arrays(np.float32, (M, D), elements=finite)


@functools.partial(jax.jit, static_argnames=("standardize",))
def _weights(x, standardize=True):
  return kde.kde_weights(x, sigma=SIGMA, standardize_features=standardize)


def _np_weights(x, *, sigma, eps=1e-6, standardize=True):
  """Reference: float64 double loop over frames."""
  x = np.asarray(x, np.float64)
  if standardize:
    std = x.std(0)
    x = np.where(std > 0, (x - x.mean(0)) / np.where(std > 0, std, 1), 0.0)
  m = len(x)
  k = np.zeros(m)
  for i in range(m):
    for j in range(m):
      k[i] += np.exp(-sigma * np.sum((x[i] - x[j]) ** 2)) / m
  return 1.0 / (k + eps)


# ---------------------------------------------------------------- exactness

def test_pairwise_distances_exact_against_double_loop():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((7, 11)).astype(np.float32)
  b = rng.standard_normal((5, 11)).astype(np.float32) * 3
  ref = np.array([[np.sum((ai.astype(np.float64) - bj) ** 2) for bj in b] for ai in a])
  got = np.asarray(kde.pairwise_sq_distances(a, b))
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  assert (np.asarray(kde.pairwise_sq_distances(a, a)) >= 0).all()


def test_pairwise_distances_of_raw_log_mel_like_rows_keep_their_precision():
  """Rows with a large common offset (raw log-mel frames: band means -80..-10, D = 440,
  spread 3 about them) and close pairs among them: the error is that of the rows' spread
  about their mean, not of their offset (2e-6 of those squared norms; the Gram form alone
  cancelled terms of 10^6 here and was 0.38 off on distances of about 1); close pairs not 0."""
  rng = np.random.default_rng(0)
  base = rng.uniform(-80, -10, 440) + 3 * rng.standard_normal((50, 440))
  a = np.concatenate([base, base + 0.05 * rng.standard_normal(base.shape)]).astype(np.float32)
  b = np.asarray(a[::-1])
  ref = np.sum((a[:, None, :].astype(np.float64) - b[None, :, :]) ** 2, axis=-1)
  got = np.asarray(kde.pairwise_sq_distances(a, b))
  centred = lambda x: np.sum((x - b.astype(np.float64).mean(0)) ** 2, axis=1)
  scale = centred(a)[:, None] + centred(b)[None, :]  # about 8,000 here
  assert np.all(np.abs(got - ref) <= 2e-6 * scale), np.max(np.abs(got - ref) / scale)
  close = (ref > 0) & (ref < 5.0)
  assert close.sum() >= 100 and np.all(got[close] > 0)
  np.testing.assert_allclose(kde.pairwise_sq_distances(a.tolist()[:3], b.tolist()[:2]),
                             ref[:3, :2], rtol=1e-3)


@pytest.mark.parametrize("standardize", [True, False])
def test_kde_weights_match_numpy_reference(standardize):
  x = np.random.default_rng(1).standard_normal((M, D)).astype(np.float32) * [1, 2, 3, 4, 5]
  sigma = SIGMA if standardize else 0.05
  got = kde.kde_weights(x, sigma=sigma, standardize_features=standardize)
  np.testing.assert_allclose(got, _np_weights(x, sigma=sigma, standardize=standardize),
                             rtol=1e-5)


def _np_density(x, valid, groups, *, sigma):
  """Reference of eq. (15) over the valid rows, float64, vectorized; with groups a
  row skips the other rows of its own group."""
  z = np.asarray(x, np.float64)[valid]
  std = z.std(0)
  z = np.where(std > 0, (z - z.mean(0)) / np.where(std > 0, std, 1), 0.0)
  d = np.sum((z[:, None, :] - z[None, :, :]) ** 2, axis=-1)
  use = np.ones_like(d, bool) if groups is None else (
      (groups[valid][:, None] != groups[valid][None, :]) | np.eye(len(z), dtype=bool))
  k = np.sum(np.where(use, np.exp(-sigma * d), 0.0), axis=1) / np.sum(use, axis=1)
  out = np.zeros(len(x))
  out[valid] = k
  return out


# Jitted: one program per shape (eagerly each of its operations compiled on its own for
# every new shape, ~2 s of CPU per m).
_kde_density_03 = jax.jit(lambda x, mask, groups: kde.kde_density(x, sigma=0.3, mask=mask,
                                                                  groups=groups))


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("m", [200, 700, 1030])  # 1, 2 and 4 blocks of the all-pairs sums
def test_batch_density_matches_reference_at_every_block_count(m, grouped):
  """One device's all-pairs KDE (the upper block triangle) against eq. (15)
  computed row by row, with masked rows holding NaN and padding to the blocks."""
  rng = np.random.default_rng(m)
  x = rng.standard_normal((m, 6)).astype(np.float32)
  x[: m // 3] += 3.0  # a dense and a sparser cluster
  valid = rng.random(m) > 0.1
  x[~valid] = np.nan
  groups = rng.integers(0, 40, m) if grouped else None
  got = _kde_density_03(jnp.asarray(x), jnp.asarray(valid),
                        None if groups is None else jnp.asarray(groups))
  want = _np_density(x, valid, groups, sigma=0.3)
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=1e-7)
  assert np.ptp(want[valid]) > 0.1 * want[valid].max()  # densities that differ


def test_kde_never_builds_m_by_m_by_d_tensor():
  m, d = 64, 48
  jaxpr = jax.make_jaxpr(lambda x: kde.kde_weights(x, sigma=0.1))(jnp.zeros((m, d)))
  sizes = [int(np.prod(v.aval.shape)) for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars]
  assert max(sizes) < m * m * d / 4  # largest intermediate is the M x M block
  assert m * m in sizes


def test_masked_frames_are_excluded():
  rng = np.random.default_rng(2)
  x = rng.standard_normal((M, D)).astype(np.float32)
  mask = np.arange(M) % 3 != 0
  w = np.asarray(kde.kde_weights(x, sigma=SIGMA, mask=mask))
  assert (w[~mask] == 0).all()
  np.testing.assert_allclose(w[mask], _np_weights(x[mask], sigma=SIGMA), rtol=1e-5)
  # garbage (even NaN) in masked rows does not leak into the valid ones
  x_bad = x.copy()
  x_bad[~mask] = np.nan
  w_bad = np.asarray(kde.kde_weights(x_bad, sigma=SIGMA, mask=mask))
  np.testing.assert_allclose(w_bad, w, rtol=1e-6)


def test_losses_against_hand_formulas():
  rng = np.random.default_rng(3)
  au = rng.uniform(0, 10, M).astype(np.float32)
  aa = rng.uniform(0, 30, 9).astype(np.float32)
  x = rng.standard_normal((M, D)).astype(np.float32)
  la = np.mean(LAM * np.tanh(aa / LAM))
  np.testing.assert_allclose(losses.re_loss(au), au.mean(), rtol=1e-6)
  np.testing.assert_allclose(losses.anomaly_term(aa, lam=LAM), la, rtol=1e-6)
  np.testing.assert_allclose(losses.snp_loss(au, aa, lam=LAM), au.mean() - la, rtol=1e-5)
  w = _np_weights(x, sigma=SIGMA)
  np.testing.assert_allclose(losses.bu_loss(au, aa, x, lam=LAM, sigma=SIGMA),
                             np.sum(w * au) / np.sum(w) - la, rtol=1e-5)
  # sigma defaults to 1 / (2D)
  np.testing.assert_allclose(losses.bu_loss(au, aa, x, lam=LAM),
                             losses.bu_loss(au, aa, x, lam=LAM, sigma=SIGMA), rtol=1e-6)


def test_paper_hyperparameters():
  assert losses.paper_hyperparameters(dim=1344, n_mels=64) == {"sigma": 1 / 2688, "lam": 128.0}
  assert losses.paper_hyperparameters(dim=2) == {"sigma": 4.0, "lam": 4.0}
  assert losses.paper_hyperparameters(dim=np.int64(440), n_mels=40)["lam"] == 80.0
  # once a ZeroDivisionError (dim=0) or a negative sigma and lambda (dim=-3) in silence
  for kwargs, name in [({"dim": 0, "n_mels": 40}, "dim"), ({"dim": -3}, "dim"),
                       ({"dim": 440.5, "n_mels": 40}, "dim"), ({"dim": True}, "dim"),
                       ({"dim": "440"}, "dim"), ({"dim": 440, "n_mels": 0}, "n_mels"),
                       ({"dim": 440, "n_mels": 40.0}, "n_mels")]:
    with pytest.raises(ValueError, match=f"^{name} must be a positive integer"):
      losses.paper_hyperparameters(**kwargs)


# ---------------------------------------------------------- property tests

@PROPS
@given(x=feats, seed=st.integers(0, 2**16))
def test_weights_and_loss_permutation_invariant(x, seed):
  perm = np.random.default_rng(seed).permutation(M)
  scores = np.linspace(0, 5, M, dtype=np.float32)
  w, wp = _weights(x), _weights(x[perm])
  np.testing.assert_allclose(np.asarray(w)[perm], wp, rtol=1e-4)
  loss = losses.bu_loss(scores, scores[:4], x, lam=LAM)
  loss_p = losses.bu_loss(scores[perm], scores[:4][::-1], x[perm], lam=LAM)
  np.testing.assert_allclose(loss, loss_p, rtol=1e-4, atol=1e-5)


@PROPS
@given(x=hnp.arrays(np.float32, (M, D), elements=st.floats(-1, 1, width=32)),
       log_scale=hnp.arrays(np.float64, (D,), elements=st.floats(-3, 3)),
       sign=hnp.arrays(np.float64, (D,), elements=st.sampled_from([-1.0, 1.0])),
       shift=hnp.arrays(np.float64, (D,), elements=st.floats(-5, 5)))
def test_weights_invariant_to_per_dimension_affine_rescaling(x, log_scale, sign, shift):
  # Invariance is claimed for dimensions with a real spread: a column whose
  # values differ by a few float32 ulps is rounding noise in one scaling and
  # (after the shift) below resolution in another.
  assume(np.ptp(x, axis=0).min() > 1e-2)
  scale = sign * 10.0 ** log_scale  # |scale| from 1e-3 to 1e3
  y = (x * scale + shift * np.abs(scale)).astype(np.float32)
  np.testing.assert_allclose(_weights(x), _weights(y), rtol=2e-3)


@PROPS
@given(row=hnp.arrays(np.float32, (D,), elements=finite),
       scores=hnp.arrays(np.float32, (M,), elements=st.floats(0, 50, width=32)),
       scores_a=hnp.arrays(np.float32, (6,), elements=st.floats(0, 50, width=32)))
def test_bu_equals_re_when_all_normal_frames_identical(row, scores, scores_a):
  x = np.tile(row, (M, 1))
  w = np.asarray(_weights(x))
  np.testing.assert_allclose(w, w[0])  # uniform weights
  np.testing.assert_allclose(losses.bu_loss(scores, scores_a, x, lam=LAM),
                             losses.snp_loss(scores, scores_a, lam=LAM), rtol=1e-5, atol=1e-5)


@PROPS
@given(x=feats, log_scale=st.floats(-3, 3), n_dup=st.integers(0, M - 1),
       n_const=st.integers(0, D))
def test_weights_positive_finite_with_duplicates_constants_and_scales(
    x, log_scale, n_dup, n_const):
  x = x * np.float32(10.0 ** log_scale)
  x[:n_dup] = x[n_dup]  # duplicated points
  x[:, :n_const] = x[0, :n_const]  # constant dimensions
  for standardize in (True, False):
    w = np.asarray(_weights(x, standardize=standardize))
    assert np.isfinite(w).all() and (w > 0).all()
    assert (w <= M * (1 + 1e-4)).all()  # K(x_i) >= 1/M: own kernel term


@PROPS
@given(seed=st.integers(0, 2**16), n_sparse=st.integers(1, 4))
def test_sparse_frames_get_larger_weights_than_dense_cluster(seed, n_sparse):
  rng = np.random.default_rng(seed)
  dense = rng.normal(0, 0.1, (M - n_sparse, D))
  sparse = rng.normal(0, 1, (n_sparse, D)) + 4 * rng.choice([-1, 1], (n_sparse, D))
  x = np.concatenate([dense, sparse]).astype(np.float32)
  w = np.asarray(_weights(x))
  assert w[-n_sparse:].min() > w[:-n_sparse].max()


@PROPS
@given(a=hnp.arrays(np.float32, (8,), elements=st.floats(0, 1e6, width=32)),
       lam=st.floats(0.1, 100))
def test_anomaly_term_bounded_and_monotone(a, lam):
  la = float(losses.anomaly_term(a, lam=lam))
  assert 0 <= la <= lam * (1 + 1e-6)
  assert float(losses.anomaly_term(a + 1.0, lam=lam)) >= la - 1e-6 * lam


# ------------------------------------------------------ gradients and jit

class _Tiny(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(D)(nn.relu(nn.Dense(3)(x)))


def _loss_fn(name, axis_name=None):
  score = models.score_fn(_Tiny())

  def f(params, xu, xa, mu, ma):
    su, sa = score(params, xu), score(params, xa)
    if name == "re":
      return losses.re_loss(su, mask_u=mu, axis_name=axis_name)
    if name == "snp":
      return losses.snp_loss(su, sa, lam=LAM, mask_u=mu, mask_a=ma, axis_name=axis_name)
    return losses.bu_loss(su, sa, xu, lam=LAM, mask_u=mu, mask_a=ma, axis_name=axis_name)

  return f


def _batch(seed=0, m=M):
  rng = np.random.default_rng(seed)
  xu = rng.standard_normal((m, D)).astype(np.float32)
  xa = (3 * rng.standard_normal((m, D))).astype(np.float32)
  mu = rng.random(m) > 0.2
  return xu, xa, mu, ~mu


@functools.cache
def _params():
  return _Tiny().init(jax.random.key(0), jnp.zeros((1, D)))["params"]


_bu_grad = jax.jit(jax.grad(_loss_fn("bu")))  # one program for every example below


@PROPS
@given(x=hnp.arrays(np.float32, (M, D), elements=st.floats(-1e3, 1e3, width=32)))
def test_gradients_finite(x):
  x[:3] = x[3]
  _, xa, mu, ma = _batch()
  grads = _bu_grad(_params(), x, xa, mu, ma)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("name", losses.LOSSES)
def test_jit_equals_no_jit(name):
  f = jax.value_and_grad(_loss_fn(name))
  eager = f(_params(), *_batch())
  jitted = jax.jit(f)(_params(), *_batch())
  chex_tol = dict(rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(eager[0], jitted[0], **chex_tol)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **chex_tol), eager[1], jitted[1])


def test_jitted_loss_traced_once_per_shape():
  traces = []

  def f(su, sa, xu):
    traces.append(1)
    return losses.bu_loss(su, sa, xu, lam=LAM)

  g = jax.jit(f)
  for seed in range(4):
    xu, xa, _, _ = _batch(seed)
    g(xu[:, 0] ** 2, xa[:, 0] ** 2, xu).block_until_ready()
  assert len(traces) == 1


@pytest.mark.parametrize("n_dev", [2, 4, 8])
@pytest.mark.parametrize("name", losses.LOSSES)
def test_sharded_loss_and_grads_equal_single_device(n_dev, name):
  assert len(jax.devices()) >= n_dev, "conftest sets 8 fake CPU devices"
  mesh = jax.make_mesh((n_dev,), ("data",), devices=jax.devices()[:n_dev])
  batch = _batch(seed=n_dev, m=4 * 8)
  params = _params()
  single = jax.jit(jax.value_and_grad(_loss_fn(name)))(params, *batch)

  local = _loss_fn(name, axis_name="data")
  sharded_loss = lambda p, *b: jax.shard_map(
      local, mesh=mesh, in_specs=(P(),) + (P("data"),) * 4, out_specs=P())(p, *b)
  rep, shard = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  sharded = jax.jit(jax.value_and_grad(sharded_loss))(
      jax.device_put(params, rep), *(jax.device_put(b, shard) for b in batch))
  np.testing.assert_allclose(sharded[0], single[0], rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               sharded[1], single[1])


def test_bu_composes_with_a_plain_function_model():
  """One BU training step for a model that is not a Flax module at all."""
  rng = np.random.default_rng(5)
  xu, xa, _, _ = _batch(5)
  params = {"w": jnp.asarray(rng.standard_normal((D, 2)) * 0.3, jnp.float32),
            "v": jnp.asarray(rng.standard_normal((2, D)) * 0.3, jnp.float32)}

  def loss(p):
    recon = lambda x: jnp.tanh(x @ p["w"]) @ p["v"]  # a linear-tanh autoencoder
    su = models.anomaly_score(xu, recon(xu))
    sa = models.anomaly_score(xa, recon(xa))
    return losses.bu_loss(su, sa, xu, lam=LAM)

  opt = optax.amsgrad(1e-2)
  state = opt.init(params)
  before, grads = jax.value_and_grad(loss)(params)
  updates, state = opt.update(grads, state, params)
  after = loss(optax.apply_updates(params, updates))
  assert np.isfinite(before) and after < before


# ------------------------------------------- API edges: masks, empty batch, checks

GARBAGE = st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30, 3e38])
M_VALID, M_PAD, M_A = 10, 6, 7
# every public loss: eqs. (7), (9) and (16) three ways
ALL_LOSSES = ("re", "snp", "bu", "bu_with_aux", "bu_from_weights")


def _loss_of(name, su, sa, xu, mu=None, ma=None, standardize=True):
  if name == "re":
    return losses.re_loss(su, mask_u=mu)
  if name == "snp":
    return losses.snp_loss(su, sa, lam=LAM, mask_u=mu, mask_a=ma)
  kwargs = dict(lam=LAM, mask_u=mu, mask_a=ma)
  if name == "bu_from_weights":
    w = kde.kde_weights(xu, sigma=SIGMA, mask=mu, standardize_features=standardize)
    if mu is not None:  # garbage weights in the masked-out rows, too
      w = jnp.where(mu, w, jnp.nan)
    return losses.bu_loss_from_weights(su, sa, w, **kwargs)[0]
  fn = losses.bu_loss if name == "bu" else lambda *a, **k: losses.bu_loss_with_aux(*a, **k)[0]
  return fn(su, sa, xu, standardize_features=standardize, **kwargs)


# Jitted (as the train step runs the losses): one program per loss, standardization and
# shape for every example of the property tests, where eagerly each operation compiled
# on its own for every new shape.
@functools.partial(jax.jit, static_argnames=("name", "standardize"))
def _grads(name, su, sa, xu, mu=None, ma=None, standardize=True):
  f = lambda su, sa, xu: _loss_of(name, su, sa, xu, mu, ma, standardize)
  return jax.value_and_grad(f, argnums=(0, 1, 2))(su, sa, xu)


@PROPS
@given(name=st.sampled_from(ALL_LOSSES), standardize=st.booleans(),
       garbage=GARBAGE, seed=st.integers(0, 2**16))
def test_garbage_in_masked_rows_gives_finite_loss_and_grads(name, standardize, garbage, seed):
  rng = np.random.default_rng(seed)
  su = rng.uniform(0, 5, M_VALID + M_PAD).astype(np.float32)
  sa = rng.uniform(0, 50, M_A).astype(np.float32)
  xu = rng.standard_normal((M_VALID + M_PAD, D)).astype(np.float32)
  mu = np.arange(M_VALID + M_PAD) < M_VALID
  ma = np.arange(M_A) < M_A - 2
  su[~mu], xu[~mu], sa[~ma] = garbage, garbage, garbage
  loss, grads = _grads(name, su, sa, xu, mu, ma, standardize)
  assert np.isfinite(loss)
  for g in grads:
    assert np.isfinite(np.asarray(g)).all()
  np.testing.assert_array_equal(np.asarray(grads[0])[~mu], 0.0)
  np.testing.assert_array_equal(np.asarray(grads[1])[~ma], 0.0)


def test_nan_in_an_unmasked_row_is_not_hidden():
  """As the README says: unchecked inside jit, a NaN frame poisons every weight of its
  batch (never a silently finite, wrong weighting); masking the row is the remedy."""
  xu = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
  xu[2, 1] = np.nan
  assert np.isnan(np.asarray(kde.kde_weights(xu, sigma=0.1))).all()
  mask = np.arange(8) != 2
  w = np.asarray(kde.kde_weights(xu, sigma=0.1, mask=mask))
  assert np.isfinite(w).all() and w[2] == 0 and (w[mask] > 0).all()


@PROPS
@given(name=st.sampled_from(ALL_LOSSES), standardize=st.booleans(),
       su=hnp.arrays(np.float32, (M_VALID,), elements=st.floats(0, 50, width=32)),
       sa=hnp.arrays(np.float32, (M_A,), elements=st.floats(0, 1e4, width=32)),
       xu=hnp.arrays(np.float32, (M_VALID, D), elements=finite),
       pad_u=hnp.arrays(np.float32, (M_PAD,), elements=GARBAGE),
       pad_a=hnp.arrays(np.float32, (3,), elements=GARBAGE),
       pad_x=hnp.arrays(np.float32, (M_PAD, D), elements=GARBAGE),
       perm_seed=st.integers(0, 2**16))
def test_masked_padding_equals_unpadded_loss_and_gradient(
    name, standardize, su, sa, xu, pad_u, pad_a, pad_x, perm_seed):
  # padding rows interleaved at random positions among the valid ones
  rng = np.random.default_rng(perm_seed)
  order_u = rng.permutation(M_VALID + M_PAD)
  order_a = rng.permutation(M_A + 3)
  su_p = np.concatenate([su, pad_u])[order_u]
  xu_p = np.concatenate([xu, pad_x])[order_u]
  mu = (np.arange(M_VALID + M_PAD) < M_VALID)[order_u]
  sa_p = np.concatenate([sa, pad_a])[order_a]
  ma = (np.arange(M_A + 3) < M_A)[order_a]
  loss, (gu, ga, gx) = _grads(name, su, sa, xu, standardize=standardize)
  loss_p, (gu_p, ga_p, gx_p) = _grads(name, su_p, sa_p, xu_p, mu, ma, standardize)
  tol = dict(rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(loss_p, loss, **tol)
  np.testing.assert_allclose(np.asarray(gu_p)[mu], np.asarray(gu)[order_u[mu]], **tol)
  np.testing.assert_allclose(np.asarray(ga_p)[ma], np.asarray(ga)[order_a[ma]], **tol)
  np.testing.assert_array_equal(np.asarray(gu_p)[~mu], 0.0)
  np.testing.assert_array_equal(np.asarray(ga_p)[~ma], 0.0)
  np.testing.assert_array_equal(np.asarray(gx_p), 0.0)  # weights carry no gradient
  np.testing.assert_array_equal(np.asarray(gx), 0.0)


# Without standardization, jitted with the band-width an argument: one program per shape
# for every example and scale below (eagerly, each operation compiled on its own).
_raw_kde_weights = jax.jit(
    lambda x, sigma: kde.kde_weights(x, sigma=sigma, standardize_features=False))


@settings(deadline=None, derandomize=True, max_examples=10, database=None)
@given(base=hnp.arrays(np.float32, (16, 440), elements=st.floats(-2, 2, width=32)),
       offset=st.sampled_from([1e3, -1e3, 1e4, -1e4]))
def test_raw_kde_weights_invariant_to_a_large_common_offset(base, offset):
  # Raw features are centred before the Gram product: with an offset of 1e3
  # or 1e4 on D = 440 the weights equal those of the same points without it.
  sigma = 1.0 / (2 * 440)
  shifted = (base.astype(np.float64) + offset).astype(np.float32)
  same_points = (shifted.astype(np.float64) - offset).astype(np.float32)  # exact in float32
  exact = _np_weights(same_points, sigma=sigma, standardize=False)
  w = _raw_kde_weights(shifted, sigma)
  np.testing.assert_allclose(w, exact, rtol=1e-4)
  np.testing.assert_allclose(w, _raw_kde_weights(same_points, sigma), rtol=1e-4)
  # against the unshifted input only float32 rounding of base + offset remains
  np.testing.assert_allclose(w, _raw_kde_weights(base, sigma), rtol=1e-3)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("empty", ["zero_rows", "all_masked"])
def test_empty_normal_batch_gives_minus_la_for_every_loss(empty, jit):
  sa = np.array([0.5, 3.0, 40.0], np.float32)
  la = float(np.mean(LAM * np.tanh(sa / LAM)))
  if empty == "zero_rows":
    su, xu, mu = np.zeros((0,), np.float32), np.zeros((0, D), np.float32), None
  else:
    su, xu, mu = np.full((4,), np.nan, np.float32), np.ones((4, D), np.float32), np.zeros(4, bool)
  expected = {"re": 0.0, "snp": -la, "bu": -la, "bu_with_aux": -la, "bu_from_weights": -la}
  for name in ALL_LOSSES:
    for standardize in (True, False):
      f = jax.value_and_grad(
          lambda su, sa, xu: _loss_of(name, su, sa, xu, mu, None, standardize),
          argnums=(0, 1, 2))
      loss, grads = (jax.jit(f) if jit else f)(su, sa, xu)
      np.testing.assert_allclose(loss, expected[name], rtol=1e-6, atol=1e-7)
      assert all(np.isfinite(np.asarray(g)).all() for g in grads)
  loss, aux = losses.bu_loss_with_aux(su, sa, xu, lam=LAM, mask_u=mu)
  assert float(aux["normal"]) == 0.0 and aux["weights"].shape == su.shape
  assert float(kde.weight_stats(aux["weights"], mask=mu)["ess"]) == 0.0
  # an empty anomalous set: L_a = 0
  np.testing.assert_allclose(losses.anomaly_term(np.zeros((0,), np.float32), lam=LAM), 0.0)


_BAD = [("lam", 0.0), ("lam", -5), ("lam", float("nan")), ("lam", float("inf")),
        ("sigma", 0.0), ("sigma", -1.0), ("sigma", float("nan")), ("sigma", float("inf")),
        ("eps", -1e-6), ("eps", float("nan")), ("eps", float("inf")),
        # beyond float32, the precision they are used in; and bools (a slip, not 1)
        ("sigma", 1e39), ("lam", 1e39), ("eps", 1e39), ("lam", 1e-50), ("sigma", True),
        ("lam", False),
        # 0-d arrays with a value are numbers too (they once gave NaN silently)
        ("sigma", np.array(-0.1)), ("lam", np.array(np.nan)), ("eps", np.array(-1e-6)),
        ("lam", jnp.float32(-1.0)), ("sigma", jnp.asarray(0.0)), ("sigma", np.array(True))]


@pytest.mark.parametrize("arg,value", _BAD)
def test_hyperparameters_out_of_range_raise_value_error_naming_them(arg, value):
  xu, xa, _, _ = _batch()
  su, sa = xu[:, 0] ** 2, xa[:, 0] ** 2  # the frames' scores; xu their features
  kwargs = {"lam": LAM, "sigma": SIGMA, "eps": 1e-6, arg: value}
  calls = [lambda: losses.bu_loss(su, sa, xu, **kwargs),
           lambda: losses.bu_loss_with_aux(su, sa, xu, **kwargs)]
  if arg == "lam":
    calls += [lambda: losses.anomaly_term(sa, lam=value),
              lambda: losses.snp_loss(su, sa, lam=value),
              lambda: losses.bu_loss_from_weights(su, sa, np.ones_like(su), lam=value)]
  else:
    kde_kwargs = {"sigma": SIGMA, "eps": 1e-6, arg: value}
    calls += [lambda: kde.kde_weights(xu, **kde_kwargs),
              lambda: kde.kde_weights_with_memory(xu, xu[:4], **kde_kwargs)]
    if arg == "sigma":
      calls += [lambda: kde.kde_density(xu, sigma=value),
                lambda: kde.contrast_sigma(xu, base_sigma=value)]
  for call in calls:
    with pytest.raises(ValueError, match=arg):
      call()


@pytest.mark.parametrize("value", ["0.1", [0.1], None, np.ones(2), jnp.ones(2), np.array("0.1")])
def test_hyperparameters_that_are_not_numbers_raise_value_error_naming_them(value):
  """A string or a list once passed as its number, None and an array of several values
  failed deep inside JAX (a broadcast, ``jnp.array``) without naming the argument."""
  xu, xa, _, _ = _batch()
  su, sa = xu[:, 0] ** 2, xa[:, 0] ** 2
  calls = {"lam": [lambda: losses.bu_loss(su, sa, xu, lam=value),
                   lambda: losses.anomaly_term(sa, lam=value),
                   lambda: losses.snp_loss(su, sa, lam=value),
                   lambda: losses.bu_loss_from_weights(su, sa, np.ones_like(su), lam=value)],
           "eps": [lambda: losses.bu_loss(su, sa, xu, lam=LAM, eps=value),
                   lambda: kde.kde_weights(xu, sigma=SIGMA, eps=value)],
           "sigma": [lambda: kde.kde_weights(xu, sigma=value),
                     lambda: kde.kde_density(xu, sigma=value),
                     lambda: kde.sampling_probabilities(xu, sigma=value)],
           "base_sigma": [lambda: kde.contrast_sigma(xu, base_sigma=value)],
           "tilt": [lambda: losses.tilted_weights(su, tilt=value)],
           "temperature": [lambda: kde.sampling_probabilities(xu, sigma=SIGMA,
                                                              temperature=value)]}
  if value is not None:  # bu_loss's sigma=None is the paper's 1/(2D)
    calls["sigma"].append(lambda: losses.bu_loss(su, sa, xu, lam=LAM, sigma=value))
  for name, fns in calls.items():
    for call in fns:
      with pytest.raises(ValueError, match=f"^{name} must be a number"):
        call()


def test_feature_rows_given_as_lists_are_arrays():
  """Nested lists are rows like an array's (once an AttributeError on ``.shape``)."""
  xu, xa, _, _ = _batch()
  su, sa = xu[:, 0] ** 2, xa[:, 0] ** 2
  rows = np.asarray(xu).tolist()
  np.testing.assert_allclose(kde.kde_density(rows, sigma=SIGMA), kde.kde_density(xu, sigma=SIGMA))
  np.testing.assert_allclose(kde.kde_weights(rows, sigma=SIGMA), kde.kde_weights(xu, sigma=SIGMA))
  np.testing.assert_allclose(kde.kde_weights_with_memory(rows, rows[:4], sigma=SIGMA),
                             kde.kde_weights_with_memory(xu, xu[:4], sigma=SIGMA))
  np.testing.assert_allclose(losses.bu_loss(su, sa, rows, lam=LAM),
                             losses.bu_loss(su, sa, xu, lam=LAM))
  memory, valid = kde.memory_update(np.zeros((4, xu.shape[1])).tolist(), np.zeros(4, bool), rows,
                                    slot=0, rows_per_slot=4)
  assert np.all(np.asarray(valid)) and np.all(np.isfinite(memory))


def test_hyperparameter_edges_accepted_and_traced_values_out_of_range_give_nan():
  xu, xa, _, _ = _batch()
  su, sa = xu[:, 0] ** 2, xa[:, 0] ** 2  # the frames' scores; xu their features
  assert np.isfinite(losses.bu_loss(su, sa, xu, lam=np.float32(LAM), sigma=1, eps=0))
  f = jax.jit(lambda lam, sigma, eps: losses.bu_loss(su, sa, xu, lam=lam, sigma=sigma, eps=eps))
  np.testing.assert_allclose(f(LAM, SIGMA, 1e-6),
                             losses.bu_loss(su, sa, xu, lam=LAM, sigma=SIGMA), rtol=1e-6)
  assert np.isfinite(f(LAM, SIGMA, 0.0))
  # A traced value cannot raise under jit: out of range it makes the result NaN, which the
  # training loop stops on, never a plausible number (a negative sigma gave zero weights).
  for lam, sigma, eps in [(-1.0, SIGMA, 1e-6), (LAM, -SIGMA, 1e-6), (LAM, 0.0, 1e-6),
                          (LAM, np.inf, 1e-6), (LAM, SIGMA, -1e-6), (np.nan, SIGMA, 1e-6)]:
    assert np.isnan(f(lam, sigma, eps)), (lam, sigma, eps)
  weights = jax.jit(lambda s: kde.kde_weights(xu, sigma=s))
  assert np.isnan(np.asarray(weights(-SIGMA))).all()
  np.testing.assert_allclose(weights(SIGMA), kde.kde_weights(xu, sigma=SIGMA), rtol=1e-6)
  assert np.isnan(jax.jit(lambda s: kde.contrast_sigma(xu, base_sigma=s))(-SIGMA))
  assert np.isnan(jax.jit(lambda lam: losses.anomaly_term(sa, lam=lam))(0.0))


def test_standardization_is_exact_under_power_of_two_scaling_over_float32_range():
  # Each dimension is rescaled by a power of two before its variance: the same bits for
  # any such scale, where squaring values beyond ~1e19 once overflowed and made every
  # weight equal.
  x = np.random.default_rng(11).standard_normal((M, D)).astype(np.float32) * [1, 8, 0.1, 3, 50]
  ref = np.asarray(kde.standardize(x))
  for k in (-100, -64, 0, 64, 100):
    np.testing.assert_array_equal(kde.standardize(x * np.float32(2.0 ** k)), ref, err_msg=k)
  w = np.asarray(kde.kde_weights(x, sigma=SIGMA))
  assert w.max() / w.min() > 1.5  # not uniform, so the comparison below means something
  for scale in (1e20, 1e30, 1e-25):
    np.testing.assert_allclose(kde.kde_weights(x * np.float32(scale), sigma=SIGMA), w,
                               rtol=1e-5, err_msg=scale)


def test_raw_kde_is_exact_under_power_of_two_scaling_and_finite_over_float32_range():
  """Without standardization (section 4.1's path) the distances are taken in units of a
  power of two near the rows' magnitude: the same weights for data scaled by 2^k with
  sigma scaled by 4^-k, and for rows so far apart that their squared distance overflows
  float32, each row is alone (K = 1/M), never NaN from inf - inf."""
  sigma = 4.0  # section 4.1's 2D
  x = np.random.default_rng(12).standard_normal((M, 2)).astype(np.float32)
  ref = np.asarray(_raw_kde_weights(x, sigma))
  assert ref.max() / ref.min() > 1.5
  for k in (-20, 20):
    np.testing.assert_array_equal(_raw_kde_weights(x * np.float32(2.0 ** k), sigma * 4.0 ** -k),
                                  ref, err_msg=k)
  for scale in (1e19, 1e30, 1e37):
    w = np.asarray(_raw_kde_weights(x * np.float32(scale), sigma))
    np.testing.assert_allclose(w, 1.0 / (1.0 / M + 1e-6), rtol=1e-6, err_msg=scale)
  big = np.random.default_rng(13).standard_normal((3000, 2)).astype(np.float32)  # block path
  w = np.asarray(_raw_kde_weights(big * np.float32(1e20), sigma))
  np.testing.assert_allclose(w, 1.0 / (1.0 / 3000 + 1e-6), rtol=1e-6)
  d = np.asarray(kde.pairwise_sq_distances(x[:2] * np.float32(1e20), x[:3] * np.float32(1e20)))
  assert d[0, 0] == d[1, 1] == 0.0 and np.isinf(d[0, 1:]).all() and not np.isnan(d).any()


def test_bu_loss_return_types_are_stable():
  xu, xa, _, _ = _batch()
  su, sa = xu[:, 0] ** 2, xa[:, 0] ** 2  # the frames' scores; xu their features
  loss = losses.bu_loss(su, sa, xu, lam=LAM)
  assert isinstance(loss, jax.Array) and loss.shape == ()
  loss2, aux = losses.bu_loss_with_aux(su, sa, xu, lam=LAM)
  assert float(loss2) == float(loss)
  assert set(aux) == {"weights", "normal", "la"}
  np.testing.assert_allclose(aux["normal"] - aux["la"], loss, rtol=1e-6)
  loss3, normal = losses.bu_loss_from_weights(su, sa, aux["weights"], lam=LAM)
  assert float(loss3) == float(loss) and float(normal) == float(aux["normal"])
  with pytest.raises(TypeError):  # one return type: no flag switches it to a tuple
    losses.bu_loss(su, sa, xu, lam=LAM, has_aux=True)  # pylint: disable=unexpected-keyword-arg


def test_public_loss_and_kde_functions_document_args_returns_and_equation():
  import inspect
  for module in (losses, kde):
    for fname, fn in inspect.getmembers(module, inspect.isfunction):
      if fname.startswith("_") or fn.__module__ != module.__name__:
        continue
      doc = inspect.getdoc(fn) or ""
      assert "Args:" in doc and "Returns:" in doc, fname
      assert re.search(r"\beqs?\. ?\(?\d+", doc), fname  # "eq. (15)", "eqs. 15-16", "(eq. 10)"


def test_shape_mistakes_raise_value_errors_naming_the_argument():
  xu, xa, _, _ = _batch()
  su, sa = xu[:, 0] ** 2, xa[:, 0] ** 2
  m = xu.shape[0]
  cases = [
      (lambda: kde.kde_weights(xu[:, 0], sigma=SIGMA), r"x must be \(M, D\) feature rows"),
      (lambda: kde.kde_weights(xu[None], sigma=SIGMA), r"x must be \(M, D\)"),
      (lambda: kde.kde_weights(xu, sigma=SIGMA, mask=np.ones(m - 1, bool)),
       rf"mask must have shape \({m},\)"),
      (lambda: kde.kde_weights(xu, sigma=SIGMA, groups=np.zeros(m - 1, np.int32)),
       rf"groups must have shape \({m},\)"),
      (lambda: kde.kde_weights_with_memory(xu, xu[:4, :3], sigma=SIGMA),
       "memory rows have 3 dimensions"),
      (lambda: losses.re_loss(np.ones((4, 4), np.float32)), r"scores_u must have shape \(M,\)"),
      (lambda: losses.re_loss(su, mask_u=np.ones(m - 1, bool)), rf"mask_u must have shape \({m},\)"),
      (lambda: losses.masked_mean(su, mask=np.ones(m - 1, bool)), rf"mask must have shape \({m},\)"),
      (lambda: losses.bu_loss(su, sa, xu, lam=LAM, mask_u=np.ones(m - 1, bool)),
       rf"mask_u must have shape \({m},\)"),
      # mask_a: checked before it is applied (a broadcasting error from jnp.where before)
      (lambda: losses.anomaly_term(sa, lam=LAM, mask_a=np.ones(sa.size - 1, bool)),
       rf"mask_a must have shape \({sa.size},\)"),
      (lambda: losses.snp_loss(su, sa, lam=LAM, mask_a=np.ones(2, bool)),
       rf"mask_a must have shape \({sa.size},\)"),
      (lambda: losses.bu_loss(su, sa, xu, lam=LAM, mask_a=np.ones(2, bool)),
       rf"mask_a must have shape \({sa.size},\)"),
      (lambda: losses.bu_loss_from_weights(su, sa, np.ones(m), lam=LAM, mask_a=np.ones(2, bool)),
       rf"mask_a must have shape \({sa.size},\)"),
      (lambda: losses.anomaly_term(np.ones((2, 2), np.float32), lam=LAM),
       r"scores_a must have shape \(M,\)"),
      (lambda: losses.bu_loss(su[:-1], sa, xu, lam=LAM),
       rf"features_u must be \({m - 1}, D\), one row per score of scores_u, got \({m}, {D}\)"),
      (lambda: losses.bu_loss(su, sa, xu[:, 0], lam=LAM), rf"features_u must be \({m}, D\)"),
      (lambda: losses.bu_loss_from_weights(su, sa, np.ones(m - 1), lam=LAM),
       rf"weights must have shape \({m},\)"),
      (lambda: kde.contrast_sigma(xu, base_sigma=SIGMA, probe_rows=0),
       "probe_rows must be a positive integer"),
  ]
  for call, message in cases:
    with pytest.raises(ValueError, match=message):
      call()


def test_weighted_mean_does_not_depend_on_the_weights_scale():
  xu, _, _, _ = _batch()
  s = xu[:, 0] ** 2
  w = np.random.default_rng(1).random(s.size).astype(np.float32)
  ref = float(losses.weighted_mean(s, weights=w))
  with pytest.raises(TypeError):  # keyword-only: two (M,) vectors are too easily swapped
    losses.weighted_mean(s, w)  # pylint: disable=too-many-function-args
  np.testing.assert_allclose(ref, np.sum(w * s) / np.sum(w), rtol=1e-5)
  for scale in (1e-32, 1e-20, 1e20):  # sum w < 1e-30 at 1e-32 (a floor there would bite)
    np.testing.assert_allclose(float(losses.weighted_mean(s, weights=w * np.float32(scale))), ref,
                               rtol=1e-3)
  assert float(losses.weighted_mean(s, weights=np.zeros_like(w))) == 0.0
  # across float32's range: the sums once overflowed (inf / inf = NaN near 2**125) and
  # the products underflowed (2**-120); ordinary weights give the same bits as before
  for k in (-120, -64, 64, 125):
    got = losses.weighted_mean(s, weights=w * np.float32(2.0 ** k))
    np.testing.assert_allclose(float(got), ref, rtol=1e-6, err_msg=k)
  loss, normal = losses.bu_loss_from_weights(s, s[:3], w * np.float32(2.0 ** 125), lam=LAM)
  np.testing.assert_allclose(float(normal), ref, rtol=1e-6)
  # a negative weight is out of range: NaN, not a number with it in the normalizer only
  assert np.isnan(float(losses.weighted_mean(s, weights=w.copy() * np.r_[-1, np.ones(s.size - 1)])))
  masked = losses.weighted_mean(s, weights=np.r_[-1, w[1:]], mask=np.arange(s.size) > 0)
  np.testing.assert_allclose(float(masked), np.sum(w[1:] * s[1:]) / np.sum(w[1:]), rtol=1e-5)


def test_bu_loss_from_weights_passes_no_gradient_through_the_weights():
  """Eq. (16)'s weights are constants of the step: weights computed from the scores
  themselves (a user's weighting) give the gradient w_i / sum_j w_j of the normal term."""
  su = jnp.asarray([1.0, 2.0, 4.0, 0.5], jnp.float32)
  sa = jnp.asarray([3.0], jnp.float32)
  grad = jax.grad(lambda s: losses.bu_loss_from_weights(s, sa, s + 1.0, lam=LAM)[0])(su)
  w = np.asarray(su) + 1.0
  np.testing.assert_allclose(grad, w / w.sum(), rtol=1e-6)


def test_weight_stats_by_hand_masked_and_sharded():
  """w_max, w_min and ess = (sum w)^2 / sum w^2 over the valid rows (masked rows may hold
  anything), and the same over the global batch under shard_map."""
  w = np.float32([1.0, 2.0, 3.0, 100.0, 4.0, 0.5, 2.0, 1e9])
  mask = np.array([True, True, True, False, True, True, True, False])
  stats = kde.weight_stats(w, mask=mask)
  v = w[mask].astype(np.float64)
  np.testing.assert_allclose(stats["w_max"], 4.0)
  np.testing.assert_allclose(stats["w_min"], 0.5)
  np.testing.assert_allclose(stats["ess"], v.sum() ** 2 / np.sum(v * v), rtol=1e-6)
  assert float(kde.weight_stats(np.ones(5, np.float32))["ess"]) == pytest.approx(5.0)
  mesh = jax.make_mesh((4,), ("data",), devices=jax.devices()[:4])
  sharded = jax.jit(jax.shard_map(
      lambda a, m: kde.weight_stats(a, mask=m, axis_name="data"),
      mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P()))(
          *(jax.device_put(a, NamedSharding(mesh, P("data"))) for a in (w, mask)))
  for key in ("w_max", "w_min", "ess"):
    np.testing.assert_allclose(sharded[key], stats[key], rtol=1e-6)


def test_standardize_and_density_have_finite_gradients_at_constant_dimensions():
  """A constant dimension maps to 0 (no NaN), and so does its gradient: the
  features of a user's differentiable objective may go through eq. (15)."""
  xu, _, _, _ = _batch()
  xc = xu.copy()
  xc[:, 2] = 5.0
  density = jax.jit(jax.grad(
      lambda v: jnp.sum(kde.kde_density(v, sigma=SIGMA) * jnp.arange(v.shape[0]))))
  standardized = jax.jit(jax.grad(lambda v: jnp.sum(kde.standardize(v) ** 3)))
  for x in (xc, np.ones_like(xu)):  # one constant dimension; all points coincide
    assert np.isfinite(np.asarray(density(x))).all()
    assert np.isfinite(np.asarray(standardized(x))).all()


# ------------------------------------------------------- tilted weights (section 3.1)

def _np_tilted(scores, tilt, mask=None):
  """Reference in float64: exp(t (A_i - max A) / mean A) over the valid frames."""
  s = np.asarray(scores, np.float64)
  valid = np.ones(s.shape, bool) if mask is None else np.asarray(mask, bool)
  top, mean = s[valid].max(), s[valid].mean()
  return np.where(valid, np.exp(tilt * (s - top) / (mean if mean > 0 else 1.0)), 0.0)


@PROPS
@given(scores=hnp.arrays(np.float32, (M,), elements=st.floats(0, 1e4, width=32)),
       tilt=st.one_of(st.just(0.0), st.floats(1e-3, 50)), seed=st.integers(0, 2**16))
def test_tilted_weights_match_reference_and_order_by_score(scores, tilt, seed):
  mask = np.random.default_rng(seed).random(M) < 0.7
  mask[0] = True
  w = np.asarray(losses.tilted_weights(scores, tilt=tilt, mask_u=mask))
  np.testing.assert_allclose(w, _np_tilted(scores, tilt, mask), rtol=1e-4, atol=1e-30)
  assert np.isfinite(w).all() and (w[~mask] == 0).all() and (w[mask] <= 1).all()
  assert w[mask].max() == 1.0  # the worst-fitted valid frame
  order = np.argsort(scores[mask], kind="stable")
  assert (np.diff(w[mask][order]) >= 0).all()  # a higher score never weighs less
  # unit-free: the same weights for the scores in any unit
  np.testing.assert_allclose(losses.tilted_weights(scores * np.float32(1024), tilt=tilt,
                                                   mask_u=mask), w, rtol=1e-4, atol=1e-30)


@PROPS
@given(scores=hnp.arrays(np.float32, (M,), elements=st.floats(0, 50, width=32)),
       scores_a=hnp.arrays(np.float32, (6,), elements=st.floats(0, 50, width=32)))
def test_zero_tilt_gives_snp_and_a_large_tilt_the_maximum(scores, scores_a):
  w0 = losses.tilted_weights(scores, tilt=0.0)
  np.testing.assert_array_equal(w0, np.ones(M, np.float32))
  np.testing.assert_allclose(losses.bu_loss_from_weights(scores, scores_a, w0, lam=LAM)[0],
                             losses.snp_loss(scores, scores_a, lam=LAM), rtol=1e-5, atol=1e-5)
  assume(scores.mean() > 0 and np.sort(scores)[-1] - np.sort(scores)[-2] > 0.05 * scores.mean())
  w = losses.tilted_weights(scores, tilt=2000.0)
  normal = losses.bu_loss_from_weights(scores, scores_a, w, lam=LAM)[1]
  np.testing.assert_allclose(normal, scores.max(), rtol=1e-4)  # section 3.1's max A


def test_tilted_weights_gradient_is_the_tilted_mean_and_finite_at_the_edges():
  s = jnp.asarray([0.5, 1.0, 2.0, 6.0])
  t = 1.5
  scale = float(jnp.mean(s))
  weighted = lambda s: losses.bu_loss_from_weights(
      s, jnp.zeros(0), losses.tilted_weights(s, tilt=t), lam=LAM)[1]
  tilted_mean = lambda s: scale / t * jax.nn.logsumexp(t * s / scale)  # the weights' objective
  np.testing.assert_allclose(jax.grad(weighted)(s), jax.grad(tilted_mean)(s), rtol=1e-5)
  for scores, mask in [(jnp.zeros(4), None),  # every score 0: uniform
                       (jnp.asarray([1.0, jnp.nan, jnp.inf, 3.0]),
                        jnp.asarray([True, False, False, True])),  # garbage masked out
                       (jnp.asarray([0.0, 1e30]), None),  # huge spread: no overflow
                       (jnp.zeros(0), None)]:  # no normal frame
    w = losses.tilted_weights(scores, tilt=1e3, mask_u=mask)
    g = jax.grad(lambda s: losses.bu_loss_from_weights(
        s, jnp.zeros(0), losses.tilted_weights(s, tilt=1e3, mask_u=mask), lam=LAM,
        mask_u=mask)[0])(scores)
    assert np.isfinite(w).all() and np.isfinite(g).all(), (scores, w, g)
  # a NaN or inf in a valid row is not hidden: every weight is NaN, so the loss is
  for bad_score in (jnp.nan, jnp.inf):
    assert np.isnan(losses.tilted_weights(jnp.asarray([1.0, bad_score]), tilt=1.0)).all()
  for bad in (-1.0, float("nan"), float("inf"), True):
    with pytest.raises(ValueError, match="tilt"):
      losses.tilted_weights(s, tilt=bad)


@pytest.mark.parametrize("exponent", [-120, -60, 0, 60, 120, 127])
def test_tilted_weights_exact_from_tiny_to_float32_max_scores(exponent):
  """No overflow of the mean and no flushed reciprocal, eager, jitted and sharded."""
  rng = np.random.default_rng(exponent + 200)
  scores = np.ldexp(rng.uniform(0.05, 1.99, 16), exponent).astype(np.float32)
  scores[3] = np.float32(np.ldexp(1.99, exponent))  # the largest, near 3.4e38 at 127
  mask = np.ones(16, bool)
  mask[5] = False
  want = _np_tilted(scores, 3.0, mask)
  mesh = jax.make_mesh((2,), ("data",), devices=jax.devices()[:2])
  sharded = jax.jit(jax.shard_map(
      lambda s, m: losses.tilted_weights(s, tilt=3.0, mask_u=m, axis_name="data"),
      mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P("data")))
  for got in (losses.tilted_weights(scores, tilt=3.0, mask_u=mask),
              jax.jit(lambda s, m: losses.tilted_weights(s, tilt=3.0, mask_u=m))(scores, mask),
              sharded(*(jax.device_put(a, NamedSharding(mesh, P("data")))
                        for a in (scores, mask)))):
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-30)
    assert np.asarray(got)[3] == 1.0
  # below the smallest normal float every score counts as 0: uniform, finite
  np.testing.assert_array_equal(
      losses.tilted_weights(np.float32([1e-39, 3e-39, 0.0]), tilt=3.0), np.ones(3))


@pytest.mark.parametrize("n_dev", [2, 4])
def test_tilted_weights_sharded_equal_single_device(n_dev):
  mesh = jax.make_mesh((n_dev,), ("data",), devices=jax.devices()[:n_dev])
  rng = np.random.default_rng(n_dev)
  scores = rng.gamma(2.0, 3.0, 8 * n_dev).astype(np.float32)
  mask = rng.random(8 * n_dev) < 0.8
  single = losses.tilted_weights(scores, tilt=2.0, mask_u=mask)
  sharded = jax.jit(jax.shard_map(
      lambda s, m: losses.tilted_weights(s, tilt=2.0, mask_u=m, axis_name="data"),
      mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P("data")))(
          *(jax.device_put(a, NamedSharding(mesh, P("data"))) for a in (scores, mask)))
  np.testing.assert_allclose(sharded, single, rtol=1e-5)  # sums in another order


# ---------------------------------------------------------------- uniformization by sampling

def _np_sampling(x, *, sigma, temperature, mask=None):
  """Reference: eq. (15) over the valid rows (standardized), p ~ K^-t, float64."""
  x = np.asarray(x, np.float64)
  mask = np.ones(len(x), bool) if mask is None else np.asarray(mask)
  v = x[mask]
  std = v.std(0)
  z = np.where(std > 0, (x - v.mean(0)) / np.where(std > 0, std, 1), 0.0)
  k = np.array([np.mean(np.exp(-sigma * np.sum((z[i] - z[mask]) ** 2, axis=1)))
                for i in range(len(x))])
  p = np.where(mask, k ** -temperature, 0.0)
  return p / p.sum()


@PROPS
@given(feats, st.sampled_from([0.0, 0.5, 1.0, 3.0]), st.integers(0, 2**16))
def test_sampling_probabilities_match_reference_and_sum_to_one(x, temperature, seed):
  mask = np.random.default_rng(seed).random(M) < 0.8
  assume(mask.sum() >= 2)
  got = np.asarray(kde.sampling_probabilities(x, sigma=SIGMA, temperature=temperature,
                                              mask=mask))
  assert np.all(np.isfinite(got)) and np.all(got >= 0)
  assert got.sum() == pytest.approx(1.0, abs=1e-5)
  assert np.all(got[~mask] == 0)
  np.testing.assert_allclose(got, _np_sampling(x, sigma=SIGMA, temperature=temperature,
                                               mask=mask), rtol=2e-3, atol=1e-7)


def test_sampling_probabilities_favour_the_sparse_rows_and_zero_temperature_is_uniform():
  rng = np.random.default_rng(3)
  x = np.concatenate([rng.normal(0, 1, (45, D)), rng.normal(8, 1, (5, D))]).astype(np.float32)
  uniform = np.asarray(kde.sampling_probabilities(x, sigma=SIGMA, temperature=0.0))
  np.testing.assert_allclose(uniform, np.full(50, 1 / 50), rtol=1e-5)
  shares = [float(np.sum(np.asarray(kde.sampling_probabilities(
      x, sigma=SIGMA, temperature=t))[45:])) for t in (0.0, 0.5, 1.0, 2.0)]
  assert shares[0] == pytest.approx(0.1, abs=1e-5)
  assert all(a < b for a, b in zip(shares, shares[1:])), shares  # the rare mode drawn more
  # permuting the rows permutes the probabilities
  perm = rng.permutation(50)
  np.testing.assert_allclose(kde.sampling_probabilities(x[perm], sigma=SIGMA),
                             np.asarray(kde.sampling_probabilities(x, sigma=SIGMA))[perm],
                             rtol=1e-5)


def test_sampling_probabilities_finite_for_coincident_rows_huge_temperature_and_no_rows():
  same = np.ones((6, D), np.float32)
  np.testing.assert_allclose(kde.sampling_probabilities(same, sigma=SIGMA, temperature=50.0),
                             np.full(6, 1 / 6), rtol=1e-5)
  x = np.random.default_rng(4).normal(size=(10, D)).astype(np.float32) * 100
  p = np.asarray(kde.sampling_probabilities(x, sigma=10.0, temperature=1e6))  # K^-t overflows
  assert np.all(np.isfinite(p)) and p.sum() == pytest.approx(1.0, abs=1e-5)
  none = np.asarray(kde.sampling_probabilities(x, sigma=SIGMA, mask=np.zeros(10, bool)))
  np.testing.assert_array_equal(none, np.zeros(10))
  for bad in (-1.0, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="temperature"):
      kde.sampling_probabilities(x, sigma=SIGMA, temperature=bad)


@pytest.mark.parametrize("n_dev", [2, 4])
def test_sampling_probabilities_sharded_equal_single_device(n_dev):
  mesh = jax.make_mesh((n_dev,), ("data",), devices=jax.devices()[:n_dev])
  rng = np.random.default_rng(n_dev)
  x = rng.normal(size=(6 * n_dev, D)).astype(np.float32)
  mask = rng.random(6 * n_dev) < 0.8
  single = kde.sampling_probabilities(x, sigma=SIGMA, temperature=1.5, mask=mask)
  sharded = jax.jit(jax.shard_map(
      lambda a, m: kde.sampling_probabilities(a, sigma=SIGMA, temperature=1.5, mask=m,
                                              axis_name="data"),
      mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P("data")))(
          *(jax.device_put(a, NamedSharding(mesh, P("data"))) for a in (x, mask)))
  np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-8)


def test_contrast_sigma_takes_factors_as_an_array_and_refuses_non_numbers_naming_them():
  """An array of factors once failed on its truth value (no name); a bool passed as 1."""
  xu, _, _, _ = _batch()
  want = float(kde.contrast_sigma(xu, base_sigma=SIGMA, factors=(0.5, 4.0, 32.0)))
  for factors in (np.array([0.5, 4.0, 32.0]), jnp.asarray([0.5, 4.0, 32.0]), [0.5, 4, 32.0]):
    assert float(kde.contrast_sigma(xu, base_sigma=SIGMA, factors=factors)) == want
  for factors in ((True, 2.0), ("1",), np.ones((2, 2)), (), np.array([1.0, np.nan]), (1.0, -2.0)):
    with pytest.raises(ValueError, match="^factors must be"):
      kde.contrast_sigma(xu, base_sigma=SIGMA, factors=factors)


def test_masked_garbage_rows_zeroed_before_the_model_leave_the_parameter_gradients():
  """The README's mask contract holds for the scores and features; a model's own backward
  pass through a NaN input row is NaN (0 x NaN), so the rows are zeroed before it."""
  xu, xa, _, _ = _batch()
  mu = np.arange(xu.shape[0]) % 4 != 0
  garbage = np.where(mu[:, None], xu, np.nan).astype(np.float32)
  model = nn.Dense(xu.shape[1])
  params = model.init(jax.random.key(0), xu)

  def loss(p, x, zero_first):
    seen = jnp.where(mu[:, None], x, 0.0) if zero_first else x
    su = models.anomaly_score(seen, model.apply(p, seen))
    sa = models.anomaly_score(xa, model.apply(p, xa))
    return losses.bu_loss(su, sa, x, lam=LAM, mask_u=mu)

  clean = jax.value_and_grad(loss)(params, np.where(mu[:, None], xu, 0.0), True)
  zeroed = jax.value_and_grad(loss)(params, garbage, True)
  for a, b in zip(jax.tree.leaves(clean), jax.tree.leaves(zeroed)):
    np.testing.assert_array_equal(a, b)
  _, through = jax.value_and_grad(loss)(params, garbage, False)
  assert np.isnan(np.asarray(through["params"]["kernel"])).any()  # why the README says so


def test_feature_rows_without_a_dimension_are_refused_naming_them():
  """(M, 0) features once gave uniform weights (every distance 0): BU as SNP in silence,
  as a 1-D array would."""
  su = np.linspace(1, 2, 6).astype(np.float32)
  empty = np.zeros((6, 0), np.float32)
  with pytest.raises(ValueError, match="^features_u must be"):
    losses.bu_loss(su, su, empty, lam=LAM)
  for call in (lambda: kde.kde_weights(empty, sigma=SIGMA),
               lambda: kde.kde_density(empty, sigma=SIGMA),
               lambda: kde.sampling_probabilities(empty, sigma=SIGMA),
               lambda: kde.contrast_sigma(empty, base_sigma=SIGMA)):
    with pytest.raises(ValueError, match=r"^x must be \(M, D\) feature rows with D >= 1"):
      call()
  assert kde.kde_weights(np.zeros((0, 3), np.float32), sigma=SIGMA).shape == (0,)


def _two_device_map(fn, n_args, out_specs=P()):
  mesh = jax.make_mesh((2,), ("data",), devices=jax.devices()[:2])
  mapped = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(P("data"),) * n_args,
                                 out_specs=out_specs))
  return lambda *args: mapped(*(jax.device_put(a, NamedSharding(mesh, P("data")))
                                for a in args))


def test_means_of_finite_values_near_float32_max_are_finite_on_any_device_count():
  """Eqs. (7) and (16)'s normal terms of scores or weights at 2^127..3.4e38: the sums
  are taken in units of a power of two, where they once overflowed to inf (the mean)
  or scaled every weight to 0 (a flushed 2^-127: the weighted mean returned 0)."""
  top = np.float32([3.0e38, 3.4e38, 1.0, 2.0])
  want = float(np.mean(top.astype(np.float64)))
  np.testing.assert_allclose(losses.re_loss(top), want, rtol=1e-6)
  np.testing.assert_allclose(
      _two_device_map(lambda s: losses.re_loss(s, axis_name="data"), 1)(top), want, rtol=1e-6)
  mask = np.array([True, True, False, True])
  np.testing.assert_allclose(losses.re_loss(top, mask_u=mask),
                             np.mean(top[mask].astype(np.float64)), rtol=1e-6)
  scores, weights = np.float32([1.0, 3.0, 5.0, 7.0]), np.float32([3e38, 1e38, 0.0, 0.0])
  for got in (losses.weighted_mean(scores, weights=weights),
              jax.jit(lambda s, w: losses.weighted_mean(s, weights=w))(scores, weights),
              _two_device_map(lambda s, w: losses.weighted_mean(s, weights=w, axis_name="data"),
                              2)(scores, weights)):
    np.testing.assert_allclose(got, 1.5, rtol=1e-6)
  # inf is not hidden by the scaling
  assert np.isinf(losses.re_loss(np.float32([1.0, np.inf])))


def test_raw_kde_of_rows_near_float32_max_of_both_signs():
  """Without standardization, rows at +-3e38 lie beyond float32 of their mean: the
  centring once overflowed to inf (NaN distances and weights), and rows at
  2^127..3.4e38 were scaled to 0 (every distance 0: uniform weights). Coincident rows
  are at distance 0, every other pair beyond float32 (kernel 0)."""
  cases = {  # rows -> which rows coincide (K = share of the batch at the same point)
      "both signs": (np.float32([[3e38, 1.0], [-3e38, 2.0], [3e38, 1.0], [0.0, 2.0]]),
                     [0.5, 0.25, 0.5, 0.25]),
      "top binade": (np.float32([[3.0e38], [3.0e38], [3.3e38], [0.0]]),
                     [0.5, 0.5, 0.25, 0.25]),
  }
  for name, (x, density) in cases.items():
    d = np.asarray(kde.pairwise_sq_distances(x, x))
    same = np.all(x[:, None, :] == x[None, :, :], axis=-1)
    assert not np.isnan(d).any() and (d[same] == 0).all() and np.isinf(d[~same]).all(), name
    want = 1.0 / (np.asarray(density) + 1e-6)
    for got in (kde.kde_weights(x, sigma=1.0, standardize_features=False),
                jax.jit(lambda v: kde.kde_weights(v, sigma=1.0, standardize_features=False))(x),
                _two_device_map(lambda v: kde.kde_weights(
                    v, sigma=1.0, standardize_features=False, axis_name="data"), 1, P("data"))(x)):
      np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=name)


def test_contrast_sigma_without_any_spread_returns_base_sigma():
  """With no valid row, a single one, or only coincident rows every factor gives the
  same densities: nothing to choose by, so the reference band-width, not the first
  factor (which it once returned without a word)."""
  x = np.random.default_rng(21).standard_normal((M, D)).astype(np.float32)
  factors = (0.5, 2.0, 4.0)  # base_sigma is not among them
  for mask in (np.zeros(M, bool), np.arange(M) == 3):
    assert float(kde.contrast_sigma(x, base_sigma=SIGMA, factors=factors, mask=mask)) == \
        np.float32(SIGMA)
  for standardize in (True, False):
    assert float(kde.contrast_sigma(np.ones((M, D), np.float32) * 7, base_sigma=SIGMA,
                                    factors=factors, standardize_features=standardize)) == \
        np.float32(SIGMA)
  chosen = float(kde.contrast_sigma(x, base_sigma=SIGMA, factors=factors))
  assert chosen in [np.float32(f * np.float32(SIGMA)) for f in factors]
