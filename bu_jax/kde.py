"""Kernel density estimate over a mini-batch and batch-uniformization weights.

Eq. (15): K(x_i) = 1/M sum_j exp(-sigma ||x_i - x_j||^2), and the weight of
eq. (16), w_i = 1 / (K(x_i) + eps). Before the KDE the normal frames of the
batch are standardized per dimension (section 4.2.2).

Pairwise squared distances go through the Gram matrix,
``||a||^2 + ||b||^2 - 2 a b^T`` clamped at 0: memory O(M^2 + M D), one
M x D x M matrix product, and never an M x M x D tensor. Distances are computed
in float32 at ``Precision.HIGHEST`` whatever the model's dtype.

Data parallelism: with ``axis_name`` set (inside ``jax.shard_map``), each
device holds a shard of the batch. The features (and mask) are all-gathered,
the standardization statistics and the density of every local frame are taken
over the *global* batch, so the result equals the single-device computation.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def _all_gather(x: jax.Array, axis_name: Optional[str]) -> jax.Array:
  if axis_name is None:
    return x
  return jax.lax.all_gather(x, axis_name, tiled=True)


def _local_rows(x_global: jax.Array, m_local: int,
                axis_name: Optional[str]) -> tuple[jax.Array, jax.Array]:
  """This device's rows of an all-gathered array, and their global offset."""
  if axis_name is None:
    return x_global, jnp.zeros((), jnp.int32)
  offset = jax.lax.axis_index(axis_name) * m_local
  return jax.lax.dynamic_slice_in_dim(x_global, offset, m_local), offset


def _as_mask(mask: Optional[jax.Array], m: int) -> jax.Array:
  if mask is None:
    return jnp.ones((m,), jnp.bool_)
  return mask.astype(jnp.bool_)


def pairwise_sq_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """||a_i - b_j||^2 for a (Ma, D), b (Mb, D) -> (Ma, Mb), via the Gram matrix, >= 0."""
  a = a.astype(jnp.float32)
  b = b.astype(jnp.float32)
  aa = jnp.sum(a * a, axis=-1)
  bb = jnp.sum(b * b, axis=-1)
  gram = jnp.matmul(a, b.T, precision=_HIGHEST)
  return jnp.maximum(aa[:, None] + bb[None, :] - 2.0 * gram, 0.0)


def standardize(x: jax.Array, *, mask: Optional[jax.Array] = None,
                rel_tol: float = 1e-5) -> jax.Array:
  """Zero mean, unit variance per dimension over the rows where ``mask``.

  Dimensions whose spread is below ``rel_tol`` of their magnitude (constant
  dimensions, or differences at float32 rounding level) map to 0 instead of
  dividing by ~0. The data are first shifted by a valid row, so a constant
  dimension has exactly zero variance. Masked-out rows are returned as 0.
  """
  x = x.astype(jnp.float32)
  valid = _as_mask(mask, x.shape[0])
  w = valid.astype(jnp.float32)[:, None]
  n = jnp.maximum(jnp.sum(w), 1.0)
  ref = x[jnp.argmax(valid)]  # first valid row
  d = jnp.where(w > 0, x - ref, 0.0)
  mean = jnp.sum(d, axis=0) / n
  centered = jnp.where(w > 0, d - mean, 0.0)
  std = jnp.sqrt(jnp.sum(centered * centered, axis=0) / n)
  magnitude = jnp.max(jnp.where(w > 0, jnp.abs(x), 0.0), axis=0)
  keep = std > rel_tol * magnitude + 1e-30
  inv = jnp.where(keep, 1.0 / jnp.where(keep, std, 1.0), 0.0)
  return centered * inv


def kde_density(x: jax.Array, *, sigma: float,
                mask: Optional[jax.Array] = None,
                axis_name: Optional[str] = None,
                standardize_features: bool = True) -> jax.Array:
  """Eq. (15) for every local row of ``x`` (M_local, D) -> (M_local,).

  The sum runs over the valid rows of the global batch (all devices along
  ``axis_name``) and is divided by their number. Rows where ``mask`` is False
  are excluded from the estimate and get density 0.
  """
  m_local = x.shape[0]
  valid_local = _as_mask(mask, m_local)
  x_all = _all_gather(x.astype(jnp.float32), axis_name)
  valid_all = _all_gather(valid_local, axis_name)
  if standardize_features:
    x_all = standardize(x_all, mask=valid_all)
  x_loc, offset = _local_rows(x_all, m_local, axis_name)
  dist = pairwise_sq_distances(x_loc, x_all)  # (M_local, M)
  # A frame's distance to itself is exactly 0 (the Gram form leaves rounding).
  cols = jnp.arange(x_all.shape[0])[None, :]
  rows = jnp.arange(m_local)[:, None] + offset
  dist = jnp.where(cols == rows, 0.0, dist)
  kern = jnp.where(valid_all[None, :], jnp.exp(-sigma * dist), 0.0)
  count = jnp.maximum(jnp.sum(valid_all.astype(jnp.float32)), 1.0)
  return jnp.where(valid_local, jnp.sum(kern, axis=1) / count, 0.0)


def kde_weights(x: jax.Array, *, sigma: float, eps: float = 1e-6,
                mask: Optional[jax.Array] = None,
                axis_name: Optional[str] = None,
                standardize_features: bool = True) -> jax.Array:
  """w_i = 1 / (K(x_i) + eps) (eqs. 15-16), 0 for masked rows; no gradient.

  K(x_i) >= 1/M for a valid row (its own kernel term), so weights are finite
  and at most M for any input, including duplicated frames and constant
  dimensions.
  """
  density = kde_density(x, sigma=sigma, mask=mask, axis_name=axis_name,
                        standardize_features=standardize_features)
  valid = _as_mask(mask, x.shape[0])
  w = jnp.where(valid, 1.0 / (density + eps), 0.0)
  return jax.lax.stop_gradient(w)


def weight_stats(weights: jax.Array, *, mask: Optional[jax.Array] = None,
                 axis_name: Optional[str] = None) -> dict[str, jax.Array]:
  """Max / min weight and effective sample size (sum w)^2 / sum w^2 (global)."""
  valid = _as_mask(mask, weights.shape[0])
  w = jnp.where(valid, weights, 0.0)
  s1, s2 = jnp.sum(w), jnp.sum(w * w)
  wmax = jnp.max(jnp.where(valid, weights, -jnp.inf))
  wmin = jnp.min(jnp.where(valid, weights, jnp.inf))
  if axis_name is not None:
    s1, s2 = jax.lax.psum(s1, axis_name), jax.lax.psum(s2, axis_name)
    wmax = jax.lax.pmax(wmax, axis_name)
    wmin = jax.lax.pmin(wmin, axis_name)
  return {"w_max": wmax, "w_min": wmin,
          "ess": s1 * s1 / jnp.maximum(s2, 1e-30)}
