"""Autoencoder architectures of sections 4.1.1 and 4.2.2, and the score of eq. (5)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bu_jax import models


def _kernel_shapes(params):
  return [tuple(params[k]["kernel"].shape) for k in sorted(params, key=lambda n: (n[:3] != "enc", int(n.split("_")[1])))]


@pytest.mark.parametrize("name,dims", [
    ("fcn40-small", [(440, 128), (128, 128), (128, 128), (128, 40),
                     (40, 128), (128, 128), (128, 128), (128, 440)]),
    ("fcn64-large", [(1344, 512)] + [(512, 512)] * 4 + [(512, 128), (128, 512)]
     + [(512, 512)] * 4 + [(512, 1344)]),
])
def test_fcn_preset_layer_sizes(name, dims):
  p = models.preset(name)
  params = p.build().init(jax.random.key(0), jnp.zeros((1, p.features.dim)))["params"]
  assert _kernel_shapes(params) == dims


def test_relu_everywhere_except_decoder_output():
  model = models.FCNAutoencoder(dim=6, hidden_layers=1, units=8, bottleneck=3)
  params = model.init(jax.random.key(1), jnp.zeros((1, 6)))["params"]
  x = jax.random.normal(jax.random.key(2), (64, 6))
  z = model.apply({"params": params}, x, method=model.encode)
  assert (z >= 0).all()  # encoder output passes a ReLU
  # The decoder output is linear: it takes negative values.
  y = model.apply({"params": params}, x)
  assert (y < 0).any()
  # Bias-only check: negating the output layer negates the output exactly.
  flipped = jax.tree_util.tree_map(lambda a: a, params)
  flipped["dec_2"] = {k: -v for k, v in params["dec_2"].items()}
  np.testing.assert_allclose(model.apply({"params": flipped}, x), -y, rtol=1e-6)


def test_glorot_uniform_init():
  p = models.preset("fcn64-large")
  params = p.build().init(jax.random.key(0), jnp.zeros((1, 1344)))["params"]
  k = np.asarray(params["enc_0"]["kernel"])
  limit = np.sqrt(6.0 / (1344 + 512))
  assert np.abs(k).max() <= limit
  assert np.abs(k).max() > 0.95 * limit  # uniform fills the range
  np.testing.assert_allclose(k.std(), limit / np.sqrt(3), rtol=0.02)
  assert not np.asarray(params["enc_0"]["bias"]).any()


def test_verification_ae():
  model = models.VerificationAE()
  params = model.init(jax.random.key(0), jnp.zeros((1, 2)))["params"]
  assert [tuple(params[f"dense_{i}"]["kernel"].shape) for i in range(4)] == [
      (2, 20), (20, 10), (10, 20), (20, 2)]
  y = model.apply({"params": params}, 100 * jax.random.normal(jax.random.key(1), (32, 2)))
  # sigmoid hidden layers bound the output by sum |W_out| + |b|
  bound = np.abs(np.asarray(params["dense_3"]["kernel"])).sum(0) + 1e-6
  assert (np.abs(np.asarray(y)) <= bound).all()


def test_anomaly_score_is_squared_l2():
  x = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
  r = jnp.array([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
  np.testing.assert_allclose(models.anomaly_score(x, r), [13.0, 3.0])


def test_anomaly_score_of_bfloat16_inputs_is_summed_in_float32():
  """Eq. (5) summed in float32 whatever the inputs' dtype: a bfloat16 sum of 440 squared
  log-mel errors keeps 8 bits (about 0.3 % off, thousands on dB-scale frames)."""
  x = jnp.asarray(np.random.default_rng(0).uniform(-80, -10, (2, 440)), jnp.bfloat16)
  r = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 440)), jnp.bfloat16)
  score = models.anomaly_score(x, r)
  assert score.dtype == jnp.float32
  want = np.sum(np.square(np.asarray(x, np.float64) - np.asarray(r, np.float64)), axis=-1)
  np.testing.assert_allclose(score, want, rtol=1e-5)


def test_unknown_preset_error_lists_choices():
  with pytest.raises(ValueError, match="fcn64-large"):
    models.preset("fcn128")


def test_bfloat16_ae_reconstructs_in_float32():
  """A bfloat16 AE's hidden layers run in bfloat16 but its reconstruction is float32, so
  A(x) of a frame it reproduces exactly is 0, not a bfloat16 rounding floor (about 2^-9 |x|
  per dimension: 3 per frame on dB-scale log-mels)."""
  dim = 440
  model = models.FCNAutoencoder(dim=dim, hidden_layers=1, units=16, bottleneck=4,
                                dtype=jnp.bfloat16)
  params = model.init(jax.random.key(0), jnp.zeros((1, dim)))["params"]
  frame = np.random.default_rng(0).uniform(-80, -10, dim).astype(np.float32)
  out = dict(params)  # the output is its bias alone: every kernel of the last layer 0
  last = f"dec_{len([k for k in params if k.startswith('dec_')]) - 1}"
  out[last] = {"kernel": jnp.zeros_like(params[last]["kernel"]), "bias": jnp.asarray(frame)}
  recon = model.apply({"params": out}, frame[None])
  assert recon.dtype == jnp.float32
  assert float(models.anomaly_score(frame[None], recon)[0]) == 0.0
  hidden = model.apply({"params": out}, frame[None], method=model.encode)
  assert hidden.dtype == jnp.bfloat16  # the rest of the AE did run in bfloat16


def test_standardized_ae_scores_by_score_fn_and_weight_decay_needs_a_mask():
  """What the class docstring says: eq. (5) of a standardize_input AE is ``score``'s (the
  error of z), and optax.adamw moves the statistics unless its mask leaves them out."""
  import optax  # pylint: disable=import-outside-toplevel
  x = np.random.default_rng(0).normal(3.0, 2.0, (16, 6)).astype(np.float32)
  ae = models.FCNAutoencoder(dim=6, hidden_layers=1, units=8, bottleneck=2,
                             standardize_input=True)
  params = models.set_input_statistics(ae.init(jax.random.key(0), x)["params"],
                                       x.mean(0), x.std(0))
  z = (x - x.mean(0)) / x.std(0)
  recon = ae.apply({"params": params}, x)
  np.testing.assert_allclose(models.score_fn(ae)(params, x), models.anomaly_score(z, recon),
                             rtol=1e-5)
  assert not np.allclose(models.anomaly_score(x, recon), models.anomaly_score(z, recon))
  grads = jax.grad(lambda p: models.score_fn(ae)(p, x).sum())(params)
  stats = ("input_mean", "input_scale")
  for mask, moved in ((None, True), ({k: k not in stats for k in params}, False)):
    opt = optax.adamw(1e-2, weight_decay=0.1, mask=mask)
    updates, _ = opt.update(grads, opt.init(params), params)
    after = optax.apply_updates(params, updates)
    assert (not np.array_equal(after["input_scale"], params["input_scale"])) == moved
