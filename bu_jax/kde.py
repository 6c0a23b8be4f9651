"""Kernel density estimate over a mini-batch and batch-uniformization weights.

Eq. (15): K(x_i) = 1/M sum_j exp(-sigma ||x_i - x_j||^2), and the weight of
eq. (16), w_i = 1 / (K(x_i) + eps). Before the KDE the normal frames of the
batch are standardized per dimension (section 4.2.2).

Pairwise squared distances go through the Gram matrix,
``||a||^2 + ||b||^2 - 2 a b^T`` clamped at 0: memory O(M^2 + M D), one
M x D x M matrix product, and never an M x M x D tensor. Distances are computed
in float32 at ``Precision.HIGHEST`` whatever the model's dtype. On one device
every frame is probed against every frame, and the distances are symmetric:
the sums are then taken from the upper triangle of a grid of blocks
(``_all_mean_kernels``), 10 of 16 block products.

Data parallelism: with ``axis_name`` set (inside ``jax.shard_map``), each
device holds a shard of the batch. The features (and mask) are all-gathered,
the standardization statistics and the density of every local frame are taken
over the *global* batch, so the result equals the single-device computation.

Every density here (``kde_density``, ``contrast_sigma``,
``kde_weights_with_memory``) is one computation: the global reference rows
(``_global_rows``: gathered, masked, grouped, optionally with a memory,
standardized or centred) and the kernel means of some probe rows against them
(``_mean_kernels``).
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

_HIGHEST = jax.lax.Precision.HIGHEST


def _check_hyperparameter(name: str, value: Any, *, allow_zero: bool = False) -> Any:
  """``value`` if it is finite and > 0 (>= 0) in float32, the precision it is used in.

  A Python / NumPy number out of range raises ValueError naming ``name`` (1e39
  overflows; 1e-50 is 0 there, and a positive value below the smallest normal
  float32, 1.2e-38, is refused); a bool is refused (``sigma=True`` is a slip,
  not 1), and so is anything but a number or a 0-d numeric array (a string, None,
  a list, an array of several values). A 0-d NumPy or concrete JAX array is
  checked as its number. A traced
  value cannot be inspected under ``jax.jit``: it is returned as a float32
  array that is NaN where it is out of range, so every weight or loss computed
  from it is NaN and the training loop's non-finite loss check
  (``train.raise_if_non_finite``) stops the run, instead of a negative
  band-width silently giving zero weights.
  """
  if isinstance(value, (bool, np.bool_)) or getattr(value, "dtype", None) == np.bool_:
    raise ValueError(f"{name} must be a number, got {value!r}")
  if not isinstance(value, numbers.Real) and not (
      hasattr(value, "dtype") and np.ndim(value) == 0
      and np.issubdtype(np.dtype(value.dtype), np.number)):
    # a string, None, a list or an array of several values: once a string or a list passed
    # as its number and an array failed in a broadcast deep inside the loss
    shape = f" of shape {np.shape(value)}" if hasattr(value, "shape") else ""
    raise ValueError(f"{name} must be a number (a scalar), got {type(value).__name__}"
                     f"{shape}: {value!r}")
  if not isinstance(value, numbers.Real):
    try:
      value = float(value)  # a 0-d array with a value now: checked below
    except TypeError:  # a tracer (jax.errors.ConcretizationTypeError): NaN where out of range
      pass
  if not isinstance(value, numbers.Real):
    value = jnp.asarray(value, jnp.float32)
    ok = jnp.isfinite(value) & ((value >= 0) if allow_zero else (value > 0))
    return jnp.where(ok, value, jnp.nan)
  number = float(value)
  fits = math.isfinite(number) and abs(number) <= float(np.finfo(np.float32).max)
  tiny = float(np.finfo(np.float32).tiny)  # below it float32 loses precision, then rounds to 0
  if fits and 0 < number < tiny:
    raise ValueError(f"{name}={number!r} is below float32's smallest normal number {tiny:.3g} "
                     f"(it would be 0 or lose its precision there); give "
                     f"{'0 or ' if allow_zero else ''}at least {tiny:.3g}")
  if not (fits and (number > 0 or (allow_zero and number == 0))):
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"{name} must be finite and {bound} in float32, got {number!r}")
  return value


def _all_gather(x: jax.Array, axis_name: Optional[str]) -> jax.Array:
  if axis_name is None:
    return x
  return jax.lax.all_gather(x, axis_name, tiled=True)


def _local_start(m_local: int, axis_name: Optional[str]) -> jax.Array:
  """Global index of this device's first row in an all-gathered array."""
  if axis_name is None:
    return jnp.zeros((), jnp.int32)
  return jax.lax.axis_index(axis_name) * m_local


def _local_block(z: jax.Array, m_local: int, axis_name: Optional[str]):
  """This device's rows of the all-gathered ``z`` and their global indices.

  ``(None, None)`` when they are all of ``z`` (one device, no memory):
  ``_mean_kernels`` then takes the symmetric all-pairs path. Otherwise a
  contiguous block, taken with a dynamic slice, not a gather: in the training
  step XLA's CPU fusion of a gathered (M, D) operand into the Gram product cost
  about a third of the KDE's time.
  """
  if z.shape[0] == m_local:
    return None, None
  start = _local_start(m_local, axis_name)
  return jax.lax.dynamic_slice_in_dim(z, start, m_local), start + jnp.arange(m_local)


def _as_mask(mask: Optional[jax.Array], m: int, name: str = "mask") -> jax.Array:
  if mask is None:
    return jnp.ones((m,), jnp.bool_)
  mask = jnp.asarray(mask)
  if mask.shape != (m,):
    raise ValueError(f"{name} must have shape ({m},), one entry per row, got {mask.shape}")
  return mask.astype(jnp.bool_)


def _rows(x: jax.Array, name: str = "x") -> jax.Array:
  """``x`` as (M, D) float32 rows, or a ValueError naming it (a 1-D array would be
  M points of one dimension, or one point: say which by reshaping)."""
  x = jnp.asarray(x, jnp.float32)
  if x.ndim != 2:
    raise ValueError(f"{name} must be (M, D) feature rows, got shape {x.shape} "
                     "(one frame per row; reshape a single dimension to (M, 1))")
  if x.shape[1] == 0:  # every distance 0: uniform weights, BU as SNP in silence
    raise ValueError(f"{name} must be (M, D) feature rows with D >= 1, got shape {x.shape}")
  return x


def pairwise_sq_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """Squared Euclidean distances ||a_i - b_j||^2, the exponent of eq. (15).

  Both sets are first shifted by the mean of ``b`` (distances do not change),
  then computed through the Gram matrix ``||a||^2 + ||b||^2 - 2 a b^T`` in
  float32 at ``Precision.HIGHEST`` and clamped at 0. The Gram form cancels
  terms of the size of ||a||^2 + ||b||^2, and its absolute error is about 1e-7
  to 1e-6 times that: unshifted, on raw log-mel frames (band means -80..-10,
  D = 440) distances of about 1 came out up to 34 % off; shifted, the norms
  are those of the spread about the mean, and the error fell to under 1 %.

  Args:
    a: (Ma, D) array.
    b: (Mb, D) array.

  Returns:
    (Ma, Mb) float32 array, >= 0.
  """
  a = _rows(a, "a")
  b = _rows(b, "b")
  down, up = _pow2_scale(a, b)  # exact: the shift's sum cannot overflow
  a, b = a * down, b * down
  centre = _shift(b, jnp.ones((b.shape[0],), jnp.bool_))
  # in the scaled units every difference fits; scaled back, a distance beyond float32 is inf
  return _sq_distances(a - centre, b - centre) * up * up


def _pow2_scale(*arrays: jax.Array, axis_name: Optional[str] = None
                ) -> tuple[jax.Array, jax.Array]:
  """``(down, up)``: powers of two, ``down * up = 1``, with every finite |value| of
  ``arrays`` times ``down`` below 2 (below 4 for values of 2^127 or more; on every
  device of ``axis_name``, if given).
  Multiplying by them is exact, so sums of squares of the scaled values neither
  overflow (values beyond ~1e19) nor underflow (below ~1e-19), ordinary data give
  the same bits as unscaled, and a squared distance scaled back as
  ``(d * up) * up`` is inf where it exceeds float32 (its kernel exp(-sigma inf) =
  0) and 0 where it is 0 (``up`` is finite). ``losses.weighted_mean`` scales eq.
  (16)'s weights by it."""
  largest = [jnp.max(jnp.where(jnp.isfinite(x), jnp.abs(x), 0.0), initial=0.0) for x in arrays]
  # piecewise constant in the values: no gradient (pmax has no differentiation rule)
  largest = jax.lax.stop_gradient(functools.reduce(jnp.maximum, largest))
  if axis_name is not None:
    largest = jax.lax.pmax(largest, axis_name)
  _, exponent = jnp.frexp(largest)
  # Both powers normal float32 numbers: 2^-127 would be subnormal, which XLA on CPU
  # flushes to 0 (values at 2^127..3.4e38 were once all scaled to 0). The top binade
  # then scales to below 4, not 2.
  exponent = jnp.clip(exponent - 1, -126, 126)
  one = jnp.float32(1.0)
  return jnp.ldexp(one, -exponent), jnp.ldexp(one, exponent)


def _sq_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """``pairwise_sq_distances`` of float32 rows already centred (``_global_rows``'s z),
  taken on the rows scaled by ``_pow2_scale`` and scaled back: never NaN from
  inf - inf, whatever the rows' magnitude."""
  down, up = _pow2_scale(a, b)
  a, b = a * down, b * down
  aa = jnp.sum(a * a, axis=-1)
  bb = jnp.sum(b * b, axis=-1)
  gram = jnp.matmul(a, b.T, precision=_HIGHEST)
  return jnp.maximum(aa[:, None] + bb[None, :] - 2.0 * gram, 0.0) * up * up


def standardize(x: jax.Array, *, mask: Optional[jax.Array] = None,
                rel_tol: float = 1e-5) -> jax.Array:
  """Zero mean, unit variance per dimension over the rows where ``mask``.

  The per-dimension standardization of the normal frames before eq. (15)
  (section 4.2.2). Dimensions whose spread is below ``rel_tol`` of their
  magnitude (constant dimensions, or differences at float32 rounding level)
  map to 0 instead of dividing by ~0. The data are first shifted by a valid
  row, so a constant dimension has exactly zero variance.

  Args:
    x: (M, D) features.
    mask: optional (M,) booleans, True for the rows that define the statistics.
      Masked-out rows may hold anything (NaN, inf): they never enter a sum.
    rel_tol: relative spread below which a dimension counts as constant.

  Returns:
    (M, D) float32 array; masked-out rows are 0. An empty batch (M = 0) is
    returned as is.
  """
  x = _rows(x)
  if x.shape[0] == 0:
    return x
  valid = _as_mask(mask, x.shape[0])
  w = valid.astype(jnp.float32)[:, None]
  n = jnp.maximum(jnp.sum(w), 1.0)
  # Each dimension divided by a power of two near its magnitude first: exact in floating
  # point, so ordinary data give the same bits as without it, while squares of values
  # beyond ~1e19 no longer overflow to inf (which made such a dimension 0: uniform
  # weights) and values below ~1e-19 no longer underflow to 0.
  _, exponent = jnp.frexp(jnp.max(jnp.where(w > 0, jnp.abs(x), 0.0), axis=0))
  x = jnp.where(w > 0, jnp.ldexp(x, -exponent), 0.0)
  ref = x[jnp.argmax(valid)]  # first valid row
  d = jnp.where(w > 0, x - ref, 0.0)
  mean = jnp.sum(d, axis=0) / n
  centered = jnp.where(w > 0, d - mean, 0.0)
  var = jnp.sum(centered * centered, axis=0) / n
  std = jnp.where(var > 0, jnp.sqrt(jnp.where(var > 0, var, 1.0)), 0.0)  # finite gradient at 0
  magnitude = jnp.max(jnp.where(w > 0, jnp.abs(x), 0.0), axis=0)
  keep = std > rel_tol * magnitude  # in the rescaled units: 0 spread stays 0 at any scale
  inv = jnp.where(keep, 1.0 / jnp.where(keep, std, 1.0), 0.0)
  return centered * inv


def _shift(x: jax.Array, valid: jax.Array, up: Optional[jax.Array] = None) -> jax.Array:
  """The (D,) shift of ``_center`` for rows already scaled by ``_pow2_scale``'s
  ``down`` (so the sum cannot overflow): per dimension the mean of the valid rows.
  Given ``up``, a dimension where some valid row lies beyond float32 of the mean
  once scaled back (rows near +-3.4e38 of both signs) takes its midrange
  instead: half a float32 range always fits."""
  w = valid[:, None]
  n = jnp.maximum(jnp.sum(valid.astype(jnp.float32)), 1.0)
  mean = jnp.sum(jnp.where(w, x, 0.0), axis=0) / n
  if up is None:
    return mean
  top = jnp.max(jnp.where(w, x, 0.0), axis=0, initial=0.0)
  bottom = jnp.min(jnp.where(w, x, 0.0), axis=0, initial=0.0)
  fits = jnp.isfinite(jnp.maximum(top - mean, mean - bottom) * up)
  return jnp.where(fits, mean, top * 0.5 + bottom * 0.5)


def _center(x: jax.Array, valid: jax.Array) -> jax.Array:
  """x minus the mean of its valid rows; masked-out rows set to 0. The mean is
  taken in units of a power of two near the rows' magnitude (exact), so its sum
  cannot overflow for any finite float32 rows; a dimension whose rows lie
  beyond float32 of their mean is centred on its midrange (``_shift``)."""
  if x.shape[0] == 0:
    return x
  w = valid[:, None]
  x = jnp.where(w, x, 0.0)
  down, up = _pow2_scale(x)
  x = x * down
  return jnp.where(w, (x - _shift(x, valid, up)) * up, 0.0)


def _global_rows(x: jax.Array, mask: Optional[jax.Array], axis_name: Optional[str], *,
                 standardize_features: bool, groups: Optional[jax.Array] = None,
                 memory: Optional[jax.Array] = None,
                 memory_mask: Optional[jax.Array] = None):
  """The reference rows of eq. (15)'s sum, ready for the distances.

  All-gathers ``x``, its mask and ``groups`` along ``axis_name``, appends the
  ``memory`` rows (the same on every device; a group of their own), then
  standardizes (section 4.2.2) or only centres all of them over the valid rows.

  Returns:
    ``(z, valid, groups, valid_local)``: (N, D) float32 rows, (N,) booleans,
    (N,) group ids or None, and this device's (M_local,) mask.
  """
  x = _rows(x)
  valid_local = _as_mask(mask, x.shape[0])
  z = _all_gather(x, axis_name)
  valid = _all_gather(valid_local, axis_name)
  if groups is not None:
    if jnp.shape(groups) != (x.shape[0],):
      raise ValueError(f"groups must have shape ({x.shape[0]},), one id per row, got "
                       f"{jnp.shape(groups)}")
    groups = _all_gather(jnp.asarray(groups), axis_name)
  if memory is not None:
    memory = _rows(memory, "memory")
    if memory.shape[1] != x.shape[1]:
      raise ValueError(f"memory rows have {memory.shape[1]} dimensions, x rows {x.shape[1]}")
    z = jnp.concatenate([z, memory])
    valid = jnp.concatenate([valid, _as_mask(memory_mask, memory.shape[0], "memory_mask")])
    if groups is not None:  # one id no batch row has
      own = jnp.max(groups, initial=0) + 1
      groups = jnp.concatenate([groups, jnp.full((memory.shape[0],), own, groups.dtype)])
  z = standardize(z, mask=valid) if standardize_features else _center(z, valid)
  return z, valid, groups, valid_local


def _mean_kernels(z: jax.Array, valid: jax.Array, probe: Optional[jax.Array] = None, *,
                  sigmas: Sequence[Any],
                  groups: Optional[jax.Array] = None,
                  probe_rows: Optional[jax.Array] = None) -> list[jax.Array]:
  """Eq. (15)'s K(z_p) for the probe rows ``z[probe]`` against the valid rows of ``z``.

  The one computation behind ``kde_density``, ``contrast_sigma`` and
  ``kde_weights_with_memory``: the (P, N) distances once, then one kernel
  mean per band-width. A probe row's distance to itself is exactly 0 (the
  Gram form leaves rounding). ``probe_rows`` is ``z[probe]`` when the caller
  has it without a gather (``_local_block``); ``probe=None`` probes every
  row of ``z`` (``_all_mean_kernels``). With ``groups`` a probe row skips the
  other rows of its own group and K is the mean over the rows it keeps;
  without, the mean over all valid rows.

  Returns:
    One (P,) float32 array per entry of ``sigmas``.
  """
  if probe is None:
    return _all_mean_kernels(z, valid, sigmas=sigmas, groups=groups)
  if probe_rows is None:
    probe_rows = z[probe]
  is_self = probe[:, None] == jnp.arange(z.shape[0])[None, :]
  dist = jnp.where(is_self, 0.0, _sq_distances(probe_rows, z))  # (P, N)
  use = valid[None, :]
  if groups is None:
    count = jnp.maximum(jnp.sum(valid.astype(jnp.float32)), 1.0)
  else:
    use = use & ((groups[probe][:, None] != groups[None, :]) | is_self)
    count = jnp.maximum(jnp.sum(use.astype(jnp.float32), axis=1), 1.0)
  return [jnp.sum(jnp.where(use, jnp.exp(-sigma * dist), 0.0), axis=1) / count
          for sigma in sigmas]


# Every row against every row (one device): the distance matrix is symmetric,
# so ``_all_mean_kernels`` computes the blocks on and above the diagonal of a
# B x B grid only, B(B+1)/2 of B^2 (10 of 16 for B = 4), and uses each
# off-diagonal block for the row sums of both of its block rows. Blocks have at
# least ``_SYMMETRIC_BLOCK_ROWS`` rows, so the products stay large enough for
# the matrix unit.
_SYMMETRIC_MAX_BLOCKS = 4
_SYMMETRIC_BLOCK_ROWS = 256


def _symmetric_blocks(num_rows: int) -> int:
  """The B of the B x B block grid of an all-pairs KDE over ``num_rows`` rows."""
  return max(1, min(_SYMMETRIC_MAX_BLOCKS, num_rows // _SYMMETRIC_BLOCK_ROWS))


def _all_mean_kernels(z: jax.Array, valid: jax.Array, *, sigmas: Sequence[Any],
                      groups: Optional[jax.Array] = None) -> list[jax.Array]:
  """``_mean_kernels`` with every row of ``z`` a probe row, from the upper block triangle.

  The same sums as the (N, N) computation, in another order (differences at
  float32 rounding), for (B+1)/(2B) of its matrix-product FLOPs and kernels:
  about 0.63 of the time at N = 1,860, D = 440 on a 2-core CPU
  (``benchmarks/kde.py``). Padding rows (to a multiple of B) are invalid.
  """
  n = z.shape[0]
  blocks = _symmetric_blocks(n)
  size = -(-n // blocks)
  pad = size * blocks - n
  zb = jnp.pad(z, ((0, pad), (0, 0))).reshape(blocks, size, z.shape[1])
  vb = jnp.pad(valid, (0, pad)).reshape(blocks, size)
  gb = None if groups is None else jnp.pad(groups, (0, pad)).reshape(blocks, size)
  down, up = _pow2_scale(zb)  # as _sq_distances: exact scaling, no inf - inf
  zb = zb * down
  sq = jnp.sum(zb * zb, axis=-1)
  diagonal = jnp.eye(size, dtype=jnp.bool_)
  sums = [[jnp.zeros((size,), jnp.float32)] * blocks for _ in sigmas]
  counts = [jnp.zeros((size,), jnp.float32)] * blocks
  for i in range(blocks):
    for j in range(i, blocks):
      gram = jnp.matmul(zb[i], zb[j].T, precision=_HIGHEST)
      dist = jnp.maximum(sq[i][:, None] + sq[j][None, :] - 2.0 * gram, 0.0) * up * up
      pair = jnp.ones((size, size), jnp.bool_) if gb is None else gb[i][:, None] != gb[j][None, :]
      if i == j:
        dist = jnp.where(diagonal, 0.0, dist)
        pair = pair | diagonal
      use_row = pair & vb[j][None, :]  # block i's rows against block j's
      use_col = pair & vb[i][:, None]  # block j's rows against block i's
      for k, sigma in enumerate(sigmas):
        kernel = jnp.exp(-sigma * dist)
        sums[k][i] = sums[k][i] + jnp.sum(jnp.where(use_row, kernel, 0.0), axis=1)
        if i != j:
          sums[k][j] = sums[k][j] + jnp.sum(jnp.where(use_col, kernel, 0.0), axis=0)
      if gb is not None:
        counts[i] = counts[i] + jnp.sum(use_row.astype(jnp.float32), axis=1)
        if i != j:
          counts[j] = counts[j] + jnp.sum(use_col.astype(jnp.float32), axis=0)
  if gb is None:
    count = jnp.maximum(jnp.sum(valid.astype(jnp.float32)), 1.0)
  else:
    count = jnp.maximum(jnp.concatenate(counts)[:n], 1.0)
  return [jnp.concatenate(row_sums)[:n] / count for row_sums in sums]


def _weights_from_density(density: jax.Array, valid: jax.Array, eps) -> jax.Array:
  """w = 1 / (K + eps) of eq. (16) for the valid rows, 0 elsewhere; no gradient."""
  return jax.lax.stop_gradient(jnp.where(valid, 1.0 / (density + eps), 0.0))


def kde_density(x: jax.Array, *, sigma: float,
                mask: Optional[jax.Array] = None,
                axis_name: Optional[str] = None,
                standardize_features: bool = True,
                groups: Optional[jax.Array] = None) -> jax.Array:
  """Eq. (15), K(x_i) = 1/M sum_j exp(-sigma ||x_i - x_j||^2), for every local row.

  The sum runs over the valid rows of the global batch (all devices along
  ``axis_name``) and is divided by their number M. With
  ``standardize_features`` the features are standardized per dimension over
  the global batch first (section 4.2.2); without it they are only centred
  (their global masked mean subtracted), which leaves every distance unchanged
  but keeps the Gram-form distances exact when all frames share a large offset.

  Args:
    x: (M_local, D) features of this device's frames.
    sigma: kernel parameter sigma > 0 (finite). Checked when a Python number.
    mask: optional (M_local,) booleans, True for valid rows. Masked-out rows
      may hold anything (NaN, inf) and never enter the estimate.
    axis_name: mesh axis to reduce over inside ``jax.shard_map``, or None.
    standardize_features: standardize (True, the paper) or only centre.
    groups: optional (M_local,) integer ids, e.g. the normal segment each
      frame comes from ("leave one segment out"): a frame's sum then skips
      the other frames of its own group, which share its recording and
      context, and K(x_i) is the mean over its own term and the valid frames
      of other groups. A rare sound then counts as common only if it recurs
      in other recordings of the batch. None: eq. (15) as in the paper.

  Returns:
    (M_local,) float32 densities, 1/M <= K <= 1 for valid rows, 0 for
    masked-out rows.

  Raises:
    ValueError: ``sigma`` is a number that is not finite and > 0.
  """
  sigma = _check_hyperparameter("sigma", sigma)
  x = _rows(x)
  z, valid, groups, valid_local = _global_rows(
      x, mask, axis_name, standardize_features=standardize_features, groups=groups)
  rows, probe = _local_block(z, x.shape[0], axis_name)
  (density,) = _mean_kernels(z, valid, probe, sigmas=[sigma], groups=groups, probe_rows=rows)
  return jnp.where(valid_local, density, 0.0)


def kde_weights(x: jax.Array, *, sigma: float, eps: float = 1e-6,
                mask: Optional[jax.Array] = None,
                axis_name: Optional[str] = None,
                standardize_features: bool = True,
                groups: Optional[jax.Array] = None) -> jax.Array:
  """Batch-uniformization weights w_i = 1 / (K(x_i) + eps) (eqs. 15-16).

  K(x_i) >= 1/M for a valid row (its own kernel term), so weights are finite
  and at most M for any input, including duplicated frames and constant
  dimensions. The weights carry no gradient (``stop_gradient``).

  Args:
    x: (M_local, D) features of this device's normal frames.
    sigma: kernel parameter sigma > 0 (finite) of eq. (15).
    eps: epsilon >= 0 (finite) of eq. (16).
    mask: optional (M_local,) booleans, True for valid rows.
    axis_name: mesh axis to reduce over inside ``jax.shard_map``, or None.
    standardize_features: see ``kde_density``.
    groups: see ``kde_density`` (None: the paper's eq. 15).

  Returns:
    (M_local,) float32 weights, 0 for masked-out rows.

  Raises:
    ValueError: ``sigma`` or ``eps`` is a number out of range (the message
      names the argument).
  """
  sigma = _check_hyperparameter("sigma", sigma)
  eps = _check_hyperparameter("eps", eps, allow_zero=True)
  x = _rows(x)
  density = kde_density(x, sigma=sigma, mask=mask, axis_name=axis_name,
                        standardize_features=standardize_features, groups=groups)
  return _weights_from_density(density, _as_mask(mask, x.shape[0]), eps)


def weight_stats(weights: jax.Array, *, mask: Optional[jax.Array] = None,
                 axis_name: Optional[str] = None) -> dict[str, jax.Array]:
  """Diagnostics of the weights of eq. (16): max, min, effective sample size.

  Args:
    weights: (M_local,) weights from ``kde_weights``.
    mask: optional (M_local,) booleans, True for valid rows.
    axis_name: mesh axis to reduce over inside ``jax.shard_map``, or None.

  Returns:
    dict with ``w_max``, ``w_min`` (over the valid rows of the global batch;
    -inf / inf when there are none) and ``ess`` = (sum w)^2 / sum w^2 (0 when
    there are none).
  """
  valid = _as_mask(mask, weights.shape[0])
  w = jnp.where(valid, weights, 0.0)
  s1, s2 = jnp.sum(w), jnp.sum(w * w)
  wmax = jnp.max(jnp.where(valid, weights, -jnp.inf), initial=-jnp.inf)
  wmin = jnp.min(jnp.where(valid, weights, jnp.inf), initial=jnp.inf)
  if axis_name is not None:
    s1, s2 = jax.lax.psum(s1, axis_name), jax.lax.psum(s2, axis_name)
    wmax = jax.lax.pmax(wmax, axis_name)
    wmin = jax.lax.pmin(wmin, axis_name)
  return {"w_max": wmax, "w_min": wmin,
          "ess": s1 * s1 / jnp.maximum(s2, 1e-30)}


# ----------------------------------------------------------------------------
# Band-width chosen from the batch itself (no labels)
# ----------------------------------------------------------------------------

CONTRAST_FACTORS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def contrast_sigma(x: jax.Array, *, base_sigma: float,
                   factors: Sequence[float] = CONTRAST_FACTORS,
                   mask: Optional[jax.Array] = None,
                   axis_name: Optional[str] = None,
                   probe_rows: int = 256,
                   standardize_features: bool = True,
                   groups: Optional[jax.Array] = None) -> jax.Array:
  """The band-width of eq. (15) at which the batch's densities differ most.

  Eq. (15)'s weights are uniform at both ends of the band-width scale: for a
  small sigma every kernel is ~1, for a large one every frame sees only itself
  (K = 1/M). The paper's sigma = 1/(2D) sits near the first end on audio
  features (weights max/min ~2-4). This picks, per batch and without labels,
  sigma = f * ``base_sigma`` with the factor f of ``factors`` that maximizes
  the variance of ln K(x_i) over the batch: the scale at which the estimate
  tells dense regions (frequent-normal frames) from sparse ones (rare-normal
  frames) most clearly. The variance is taken over ``probe_rows`` evenly
  spaced rows of the global batch (each against all M rows), so the cost is
  len(factors) x probe_rows x M kernels, small next to the M x M of eq. (15).

  Args:
    x: (M_local, D) features of this device's frames.
    base_sigma: the reference band-width, e.g. the paper's 1/(2D).
    factors: candidate multipliers of ``base_sigma`` (positive).
    mask: optional (M_local,) booleans, True for valid rows.
    axis_name: mesh axis inside ``jax.shard_map``; the choice is global
      (every device picks the same sigma).
    probe_rows: rows whose densities are compared (at most M).
    standardize_features: as in ``kde_density``.
    groups: as in ``kde_density`` (the densities compared are then the
      leave-one-group-out ones).

  Returns:
    A float32 scalar sigma (no gradient); ``base_sigma`` itself where no factor
    gives the densities any spread (no valid row, a single one, or all rows
    coincident).

  Raises:
    ValueError: ``base_sigma`` is a number that is not finite and > 0, or a
      factor is not positive and finite.
  """
  base_sigma = _check_hyperparameter("base_sigma", base_sigma)
  if isinstance(probe_rows, bool) or not isinstance(probe_rows, numbers.Integral) or probe_rows < 1:
    raise ValueError(f"probe_rows must be a positive integer, got {probe_rows!r}")
  given = factors
  # a NumPy / JAX array of factors is a sequence too (it once failed on its truth value)
  factors = tuple(np.asarray(factors).tolist()) if hasattr(factors, "shape") else tuple(factors)
  if (np.ndim(given) != 1 or not factors
      or any(isinstance(f, bool) or not isinstance(f, numbers.Real)
             or not (math.isfinite(f) and f > 0) for f in factors)):
    raise ValueError(f"factors must be a sequence of positive finite numbers, got {given!r}")
  z, valid, groups, _ = _global_rows(x, mask, axis_name,
                                     standardize_features=standardize_features, groups=groups)
  m = z.shape[0]
  k = min(probe_rows, m)
  count = jnp.sum(valid.astype(jnp.int32))
  (order,) = jnp.nonzero(valid, size=m, fill_value=0)  # valid rows, in order
  rank = jnp.where(count >= k, (jnp.arange(k) * count) // k, jnp.arange(k))
  probe = order[rank]
  densities = _mean_kernels(z, valid, probe, sigmas=[f * base_sigma for f in factors],
                            groups=groups)
  probe_valid = (jnp.arange(k) < count).astype(jnp.float32)
  n_probe = jnp.maximum(jnp.sum(probe_valid), 1.0)
  spreads = []
  for density in densities:
    log_k = jnp.log(jnp.maximum(density, 1e-30))
    mean = jnp.sum(probe_valid * log_k) / n_probe
    spreads.append(jnp.sum(probe_valid * jnp.square(log_k - mean)) / n_probe)
  spreads = jnp.stack(spreads)
  best = jnp.argmax(spreads)
  sigma = jnp.asarray(factors, jnp.float32)[best] * jnp.float32(base_sigma)
  # no spread at any factor (no valid row, one, or all coincident): nothing to choose by
  sigma = jnp.where(spreads[best] > 0, sigma, jnp.float32(base_sigma))
  if axis_name is not None:  # equal on every device; pmax marks it replicated
    sigma = jax.lax.pmax(sigma, axis_name)
  return jax.lax.stop_gradient(sigma)


# ----------------------------------------------------------------------------
# Density against a memory of normal frames from earlier steps
# ----------------------------------------------------------------------------


def kde_weights_with_memory(x: jax.Array, memory: jax.Array, *, sigma: float,
                            eps: float = 1e-6,
                            mask: Optional[jax.Array] = None,
                            memory_mask: Optional[jax.Array] = None,
                            axis_name: Optional[str] = None,
                            standardize_features: bool = True,
                            groups: Optional[jax.Array] = None) -> jax.Array:
  """Eq. (16)'s weights with eq. (15)'s sum over the batch *and* a memory.

  K(x_i) = 1/N sum_j exp(-sigma ||z_i - z_j||^2), where j runs over the valid
  rows of the global batch and the valid rows of ``memory`` (normal frames
  kept from recent steps, e.g. by ``memory_update``), N is their number, and
  z are the features standardized per dimension over all of them. A
  mini-batch holds only a few segments, so a rare operating mode may fill a
  large part of one batch and be absent from the next; against the memory a
  rare frame is measured against many batches. With an empty memory this
  equals ``kde_weights``.

  Args:
    x: (M_local, D) features of this device's normal frames.
    memory: (B, D) remembered frames, the same on every device.
    sigma: kernel parameter sigma > 0 (finite) of eq. (15); may be traced.
    eps: epsilon >= 0 (finite) of eq. (16).
    mask: optional (M_local,) valid rows of ``x``.
    memory_mask: optional (B,) valid rows of ``memory`` (e.g. not yet filled).
    axis_name: mesh axis inside ``jax.shard_map``.
    standardize_features: see ``kde_density``.
    groups: see ``kde_density``; a batch frame's sum skips the other batch
      frames of its group, never a memory row.

  Returns:
    (M_local,) weights, 0 for masked rows; no gradient.

  Raises:
    ValueError: ``sigma`` or ``eps`` is a number out of range.
  """
  sigma = _check_hyperparameter("sigma", sigma)
  eps = _check_hyperparameter("eps", eps, allow_zero=True)
  x = _rows(x)
  z, valid, groups, valid_local = _global_rows(
      x, mask, axis_name, standardize_features=standardize_features, groups=groups,
      memory=memory, memory_mask=memory_mask)
  rows, probe = _local_block(z, x.shape[0], axis_name)
  (density,) = _mean_kernels(z, valid, probe, sigmas=[sigma], groups=groups, probe_rows=rows)
  return _weights_from_density(density, valid_local, eps)


def memory_update(memory: jax.Array, memory_mask: jax.Array, x: jax.Array, *,
                  slot, rows_per_slot: int, mask: Optional[jax.Array] = None,
                  axis_name: Optional[str] = None) -> tuple[jax.Array, jax.Array]:
  """Writes ``rows_per_slot`` valid rows of the global batch into ring slot ``slot``.

  The memory (B, D), B a multiple of ``rows_per_slot``, is a ring of
  B / rows_per_slot slots; slot ``slot`` (e.g. the step modulo the number of
  slots) is overwritten with rows spread evenly over the valid rows of the
  global batch (all devices), in batch order, so every device computes the
  same memory and it does not depend on the number of devices. The memory
  feeds eq. (15)'s sum in ``kde_weights_with_memory``.

  Args:
    memory: (B, D) remembered frames.
    memory_mask: (B,) booleans, True for filled rows.
    x: (M_local, D) features of this device's normal frames.
    slot: the ring slot to overwrite (taken modulo B / rows_per_slot).
    rows_per_slot: rows written per call; B must be a multiple of it.
    mask: optional (M_local,) valid rows of ``x``.
    axis_name: mesh axis inside ``jax.shard_map``.

  Returns:
    (memory, memory_mask), no gradient.
  """
  x = _rows(x)
  memory = jnp.asarray(memory)
  if rows_per_slot < 1 or memory.shape[0] % rows_per_slot:
    raise ValueError(f"memory of {memory.shape[0]} rows is not a multiple of "
                     f"rows_per_slot={rows_per_slot}")
  x_all = _all_gather(jnp.asarray(x, jnp.float32), axis_name)
  valid_all = _all_gather(_as_mask(mask, x.shape[0]), axis_name)
  count = jnp.sum(valid_all.astype(jnp.int32))
  (order,) = jnp.nonzero(valid_all, size=valid_all.shape[0], fill_value=0)  # valid rows, in order
  rank = jnp.arange(rows_per_slot)
  pick = order[jnp.where(count >= rows_per_slot, (rank * count) // rows_per_slot, rank)]
  rows = x_all[pick]
  rows_valid = jnp.arange(rows_per_slot) < count
  start = (jnp.asarray(slot, jnp.int32) % (memory.shape[0] // rows_per_slot)) * rows_per_slot
  memory = jax.lax.dynamic_update_slice_in_dim(memory, rows.astype(memory.dtype), start, 0)
  memory_mask = jax.lax.dynamic_update_slice_in_dim(memory_mask.astype(jnp.bool_), rows_valid,
                                                    start, 0)
  if axis_name is not None:  # equal on every device; pmax marks them replicated
    memory = jax.lax.pmax(memory, axis_name)
    memory_mask = jax.lax.pmax(memory_mask.astype(jnp.int32), axis_name).astype(jnp.bool_)
  return jax.lax.stop_gradient(memory), memory_mask


# ----------------------------------------------------------------------------
# Uniformization by sampling: which normal segments a batch is drawn from
# ----------------------------------------------------------------------------


def sampling_probabilities(x: jax.Array, *, sigma: float, temperature: float = 1.0,
                           mask: Optional[jax.Array] = None,
                           axis_name: Optional[str] = None,
                           standardize_features: bool = True) -> jax.Array:
  """Draw probabilities p_s proportional to K(x_s)^(-t): eq. (16) as a sampler.

  Eqs. (15)-(16) weight each normal frame of a batch by 1 / K, the reciprocal
  of its density among the batch's frames. This applies the same reciprocal
  to the *draw*: ``x`` holds one row per item of a training corpus (e.g. the
  mean feature vector of each 3-s normal segment, ``train.segment_summaries``),
  K is eq. (15) over all of them, and items in sparse regions (a rare
  operating mode) are drawn more often, so a batch holds rare and frequent
  normal sounds in more even shares before any weight is applied. The
  temperature t tempers it: t = 0 draws uniformly (the paper), t = 1 equalizes
  the estimated density, t in between interpolates geometrically.

  Args:
    x: (S_local, D) one row per item.
    sigma: band-width sigma > 0 of eq. (15), e.g. ``contrast_sigma`` of ``x``.
    temperature: t >= 0 (finite).
    mask: optional (S_local,) booleans; masked-out rows get probability 0.
    axis_name: mesh axis inside ``jax.shard_map``: the probabilities are over
      the global rows (they sum to 1 over all devices).
    standardize_features: as in ``kde_density``.

  Returns:
    (S_local,) float32 probabilities, summing to 1 over the valid rows of the
    global ``x`` (all 0 when there are none); no gradient.

  Raises:
    ValueError: ``sigma`` or ``temperature`` is a number out of range.
  """
  temperature = _check_hyperparameter("temperature", temperature, allow_zero=True)
  density = kde_density(x, sigma=sigma, mask=mask, axis_name=axis_name,
                        standardize_features=standardize_features)
  valid = _as_mask(mask, _rows(x).shape[0])
  # K >= 1/S for a valid row (its own kernel), so the log is finite; work in
  # logs and subtract the global maximum so no power overflows.
  log_p = jnp.where(valid, -temperature * jnp.log(jnp.maximum(density, 1e-30)), -jnp.inf)
  top = jnp.max(log_p, initial=-jnp.inf)
  if axis_name is not None:
    top = jax.lax.pmax(top, axis_name)
  unnorm = jnp.where(valid, jnp.exp(log_p - jnp.where(jnp.isfinite(top), top, 0.0)), 0.0)
  total = jnp.sum(unnorm)
  if axis_name is not None:
    total = jax.lax.psum(total, axis_name)
  return jax.lax.stop_gradient(unnorm / jnp.maximum(total, 1e-30))
