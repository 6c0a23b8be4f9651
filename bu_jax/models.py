"""Autoencoders of the paper (Flax Linen) and the per-frame anomaly score (eq. 5)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bu_jax import features as features_lib

_glorot = nn.initializers.glorot_uniform()


class FCNAutoencoder(nn.Module):
  """FCN autoencoder of section 4.2.2.

  Encoder: input dense layer (U) -> H hidden dense layers (U) -> output dense
  layer (Z). The decoder mirrors it back to D. ReLU after every layer except
  the decoder's output; Glorot-uniform weights, zero biases.
  """

  dim: int  # D
  hidden_layers: int = 4  # H
  units: int = 512  # U
  bottleneck: int = 128  # Z
  dtype: jnp.dtype | None = None  # computation dtype (e.g. bfloat16)

  def setup(self):
    dense = lambda n, name: nn.Dense(n, kernel_init=_glorot, dtype=self.dtype,
                                     name=name)
    enc = [self.units] * (self.hidden_layers + 1) + [self.bottleneck]
    dec = [self.units] * (self.hidden_layers + 1) + [self.dim]
    self.encoder = [dense(n, f"enc_{i}") for i, n in enumerate(enc)]
    self.decoder = [dense(n, f"dec_{i}") for i, n in enumerate(dec)]

  def encode(self, x):
    for layer in self.encoder:
      x = nn.relu(layer(x))
    return x

  def decode(self, z):
    for layer in self.decoder[:-1]:
      z = nn.relu(layer(z))
    return self.decoder[-1](z)

  def __call__(self, x):
    return self.decode(self.encode(x))


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
  """Returns ``f(params, x) -> A(x)`` for a Flax autoencoder ``model``."""

  def f(params, x):
    return anomaly_score(x, model.apply({"params": params}, x))

  return f


@dataclasses.dataclass(frozen=True)
class ModelPreset:
  """A named combination of input features and AE size (section 4.2.2)."""

  name: str
  features: features_lib.FeatureConfig
  hidden_layers: int
  units: int
  bottleneck: int

  def build(self, dtype=None) -> FCNAutoencoder:
    return FCNAutoencoder(dim=self.features.dim, hidden_layers=self.hidden_layers,
                          units=self.units, bottleneck=self.bottleneck,
                          dtype=dtype)


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
