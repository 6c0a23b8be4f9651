"""Autoencoders of the paper (Flax Linen) and the per-frame anomaly score (eq. 5)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bu_jax import features as features_lib

_glorot = nn.initializers.glorot_uniform()


class FCNAutoencoder(nn.Module):
  """FCN autoencoder of section 4.2.2.

  Encoder: input dense layer (U) -> H hidden dense layers (U) -> output dense
  layer (Z). The decoder mirrors it back to D. ReLU after every layer except
  the decoder's output; Glorot-uniform weights, zero biases. With ``dtype``
  (e.g. bfloat16) every layer but the decoder's output computes in it; the
  reconstruction is float32.

  With ``standardize_input`` the AE works on standardized features
  z = (x - mean) * scale, with per-dimension statistics of the normal
  training frames held in the parameters ``input_mean`` and ``input_scale``
  (set by ``set_input_statistics``; they receive no gradient, so an optimizer
  without weight decay, such as the project's AMSGrad, never moves them, while
  a decoupled weight decay (``optax.adamw``) shrinks them unless its ``mask``
  leaves them out; they travel with every checkpoint). The anomaly score
  (eq. 5) is then the reconstruction error of z, i.e. every feature dimension
  counts in units of its normal spread: take it from ``score`` (or
  ``score_fn``), not ``anomaly_score(x, model(x))``, which compares x with the
  reconstruction of z.
  """

  dim: int  # D
  hidden_layers: int = 4  # H
  units: int = 512  # U
  bottleneck: int = 128  # Z
  dtype: jnp.dtype | None = None  # computation dtype (e.g. bfloat16)
  standardize_input: bool = False

  def setup(self):
    dense = lambda n, name, dtype=self.dtype: nn.Dense(n, kernel_init=_glorot, dtype=dtype,
                                                       name=name)
    enc = [self.units] * (self.hidden_layers + 1) + [self.bottleneck]
    dec = [self.units] * (self.hidden_layers + 1)
    self.encoder = [dense(n, f"enc_{i}") for i, n in enumerate(enc)]
    # The output layer computes in float32 whatever ``dtype`` is: a bfloat16
    # reconstruction would put a rounding floor under A(x) (eq. 5) of about
    # 2^-9 |x| per dimension (3 per frame on dB-scale log-mels, D = 440).
    output = dense(self.dim, f"dec_{len(dec)}",
                   None if self.dtype is None else jnp.float32)
    self.decoder = [dense(n, f"dec_{i}") for i, n in enumerate(dec)] + [output]
    if self.standardize_input:
      self.input_mean = self.param("input_mean", nn.initializers.zeros, (self.dim,))
      self.input_scale = self.param("input_scale", nn.initializers.ones, (self.dim,))

  def normalize(self, x):
    """The AE's input space: x, or (x - mean) * scale with ``standardize_input``."""
    if not self.standardize_input:
      return x
    mean = jax.lax.stop_gradient(self.input_mean)
    scale = jax.lax.stop_gradient(self.input_scale)
    return (x.astype(jnp.float32) - mean) * scale

  def score(self, x):
    """A(x) = ||z - D(E(z))||^2 with z = ``normalize(x)`` (eq. 5), float32."""
    z = self.normalize(x)
    return anomaly_score(z, self.decode(self.encode(z)))

  def score_and_code(self, x):
    """(A(x), E(z)) with z = ``normalize(x)``: ``score``'s value and the code it passes
    through (the encoder's output, (..., Z))."""
    z = self.normalize(x)
    code = self.encode(z)
    return anomaly_score(z, self.decode(code)), code

  def encode(self, x):
    for layer in self.encoder:
      x = nn.relu(layer(x))
    return x

  def decode(self, z):
    for layer in self.decoder[:-1]:
      z = nn.relu(layer(z))
    return self.decoder[-1](z)

  def __call__(self, x):
    """The reconstruction of ``normalize(x)`` (of x itself by default)."""
    z = self.normalize(x)
    return self.decode(self.encode(z))


def set_input_statistics(params, mean, std, *, floor: float = 1e-3):
  """``params`` of a ``standardize_input`` AE with the training statistics set.

  ``scale = 1 / max(std, floor * max(std))``: a constant dimension is not
  blown up. Returns a new params dict; raises ValueError on a shape mismatch
  or non-finite statistics, for statistics of features that do not vary at
  all (every std 0 or at float rounding of the mean: silent or identical
  training frames, or one frame), or for an AE without ``standardize_input``.
  """
  if "input_mean" not in params:
    raise ValueError("the model has no input statistics (standardize_input=False)")
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  dim = params["input_mean"].shape
  if mean.shape != dim or std.shape != dim:
    raise ValueError(f"input statistics of shape {mean.shape}/{std.shape}, expected {dim}")
  if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std >= 0)):
    raise ValueError("input statistics must be finite with std >= 0")
  largest = float(std.max())
  if largest <= 1e-6 * max(1.0, float(np.abs(mean).max())):
    raise ValueError(f"input statistics with no spread (largest std {largest:.3g}): the "
                     "training frames are all alike (silent or identical clips?), so there "
                     "is nothing to standardize by")
  scale = 1.0 / np.maximum(std, floor * largest)
  out = dict(params)
  out["input_mean"] = jnp.asarray(mean)
  out["input_scale"] = jnp.asarray(scale, jnp.float32)
  return out


class VerificationAE(nn.Module):
  """The 2 -> 20 -> 10 -> 20 -> 2 AE of section 4.1.1 (sigmoid except output)."""

  sizes: tuple[int, ...] = (20, 10, 20, 2)

  @nn.compact
  def __call__(self, x):
    for i, n in enumerate(self.sizes):
      x = nn.Dense(n, kernel_init=_glorot, name=f"dense_{i}")(x)
      if i < len(self.sizes) - 1:
        x = nn.sigmoid(x)
    return x


def anomaly_score(x: jax.Array, reconstruction: jax.Array) -> jax.Array:
  """A(x) = ||x - AE(x)||_2^2 per frame (eq. 5), summed over the last axis in float32."""
  diff = x.astype(jnp.float32) - reconstruction.astype(jnp.float32)
  return jnp.sum(jnp.square(diff), axis=-1)


def score_fn(model: nn.Module) -> Callable[..., jax.Array]:
  """Returns ``f(params, x) -> A(x)`` for a Flax autoencoder ``model``.

  Uses the model's own ``score`` method where it has one (the FCN AE, which
  may standardize its input first), else ``anomaly_score(x, model(x))``.
  """

  if hasattr(model, "score"):
    def f(params, x):
      return model.apply({"params": params}, x, method="score")
  else:
    def f(params, x):
      return anomaly_score(x, model.apply({"params": params}, x))

  return f


def score_and_code_fn(model: nn.Module) -> Callable[..., tuple[jax.Array, jax.Array]]:
  """Returns ``f(params, x) -> (A(x), code)`` for a model with ``score_and_code``
  (``FCNAutoencoder``): the anomaly score of eq. (5) and the encoder's output.

  Raises:
    TypeError: ``model`` has no encoder to take codes from.
  """
  if not hasattr(model, "score_and_code"):
    raise TypeError(f"{type(model).__name__} has no score_and_code method (no encoder "
                    "codes); use an FCNAutoencoder")

  def f(params, x):
    return model.apply({"params": params}, x, method="score_and_code")

  return f


@dataclasses.dataclass(frozen=True)
class ModelPreset:
  """A named combination of input features and AE size (section 4.2.2)."""

  name: str
  features: features_lib.FeatureConfig
  hidden_layers: int
  units: int
  bottleneck: int
  standardize_input: bool = False

  def build(self, dtype=None) -> FCNAutoencoder:
    return FCNAutoencoder(dim=self.features.dim, hidden_layers=self.hidden_layers,
                          units=self.units, bottleneck=self.bottleneck,
                          dtype=dtype, standardize_input=self.standardize_input)


# Appended to a preset's name when its AE standardizes its input ("fcn40-small+std").
STANDARDIZED_SUFFIX = "+std"

_SIZES = {"large": (4, 512, 128), "small": (2, 128, 40)}
PRESETS = {
    f"{feat}-{size}": ModelPreset(f"{feat}-{size}", features_lib.PRESETS[feat],
                                  *_SIZES[size])
    for feat in ("fcn40", "fcn64") for size in ("small", "large")
}


def preset(name: str) -> ModelPreset:
  """``fcn40-small``, ``fcn40-large``, ``fcn64-small`` or ``fcn64-large``."""
  try:
    return PRESETS[name]
  except KeyError:
    raise ValueError(
        f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}"
    ) from None
