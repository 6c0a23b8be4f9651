"""RE, SNP and batch-uniformization (BU) losses: eqs. (7), (9), (10), (16).

Model-agnostic pure functions of per-frame anomaly scores A(x) (eq. 5, any
model) and, for BU, the normal frames' features. Every function takes:

- optional boolean masks ``mask_u`` / ``mask_a`` marking the valid normal /
  anomalous frames, so a variable number of frames keeps static shapes;
- an optional ``axis_name``: inside ``jax.shard_map`` over that mesh axis every
  mean, the KDE and the BU normalizer sum_i w_i run over the global batch, and
  the returned loss is the global loss on every device (equal to the
  single-device value on the concatenated batch).

Hyperparameters are keyword-only. Paper defaults (see ``paper_hyperparameters``):
sigma = 1/(2D) on standardized features and lambda = 2M (M mel bands) for audio
(section 4.2.2); sigma = 2D and lambda = 2D for the verification experiment
(section 4.1.1).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from bu_jax import kde


def _masked_sum_count(values: jax.Array, mask: Optional[jax.Array],
                      axis_name: Optional[str]) -> tuple[jax.Array, jax.Array]:
  values = values.astype(jnp.float32)
  if mask is None:
    total, count = jnp.sum(values), jnp.asarray(values.size, jnp.float32)
  else:
    mask = mask.astype(jnp.bool_)
    total = jnp.sum(jnp.where(mask, values, 0.0))
    count = jnp.sum(mask.astype(jnp.float32))
  if axis_name is not None:
    total = jax.lax.psum(total, axis_name)
    count = jax.lax.psum(count, axis_name)
  return total, count


def masked_mean(values: jax.Array, *, mask: Optional[jax.Array] = None,
                axis_name: Optional[str] = None) -> jax.Array:
  """Mean over the valid entries of the (global) batch; 0 if there are none."""
  total, count = _masked_sum_count(values, mask, axis_name)
  return total / jnp.maximum(count, 1.0)


def re_loss(scores_u: jax.Array, *, mask_u: Optional[jax.Array] = None,
            axis_name: Optional[str] = None) -> jax.Array:
  """J_RE = 1/M_u sum_i A(x_i^(u)) (eq. 7)."""
  return masked_mean(scores_u, mask=mask_u, axis_name=axis_name)


def anomaly_term(scores_a: jax.Array, *, lam: float,
                 mask_a: Optional[jax.Array] = None,
                 axis_name: Optional[str] = None) -> jax.Array:
  """L_a = 1/M_a sum_j lambda tanh(A(x_j^(a)) / lambda) (eq. 10); 0 <= L_a < lambda."""
  clipped = lam * jnp.tanh(scores_a.astype(jnp.float32) / lam)
  return masked_mean(clipped, mask=mask_a, axis_name=axis_name)


def snp_loss(scores_u: jax.Array, scores_a: jax.Array, *, lam: float,
             mask_u: Optional[jax.Array] = None,
             mask_a: Optional[jax.Array] = None,
             axis_name: Optional[str] = None) -> jax.Array:
  """J_SNP = J_RE - L_a (eq. 9)."""
  return (re_loss(scores_u, mask_u=mask_u, axis_name=axis_name)
          - anomaly_term(scores_a, lam=lam, mask_a=mask_a, axis_name=axis_name))


def weighted_mean(scores: jax.Array, weights: jax.Array, *,
                  mask: Optional[jax.Array] = None,
                  axis_name: Optional[str] = None) -> jax.Array:
  """sum_i w_i A_i / sum_i w_i over the valid entries of the (global) batch."""
  w = weights.astype(jnp.float32)
  if mask is not None:
    w = jnp.where(mask, w, 0.0)
  scores = jnp.where(w > 0, scores.astype(jnp.float32), 0.0)
  num, den = jnp.sum(w * scores), jnp.sum(w)
  if axis_name is not None:
    num, den = jax.lax.psum(num, axis_name), jax.lax.psum(den, axis_name)
  return num / jnp.maximum(den, 1e-30)


def bu_loss(scores_u: jax.Array, scores_a: jax.Array, features_u: jax.Array,
            *, lam: float, sigma: Optional[float] = None, eps: float = 1e-6,
            mask_u: Optional[jax.Array] = None,
            mask_a: Optional[jax.Array] = None,
            axis_name: Optional[str] = None,
            standardize_features: bool = True,
            has_aux: bool = False):
  """J_BU = sum_i w_i A(x_i^(u)) / sum_i w_i - L_a (eq. 16).

  w_i = 1 / (K(x_i^(u)) + eps) with the Gaussian KDE of eq. (15) over the
  normal frames ``features_u`` (M_u, D) of the batch, standardized per
  dimension unless ``standardize_features=False``. ``sigma`` defaults to
  1/(2D). The weights carry no gradient. With ``has_aux`` also returns a dict
  with the weights, the weighted normal term and L_a.
  """
  if sigma is None:
    sigma = 1.0 / (2.0 * features_u.shape[-1])
  weights = kde.kde_weights(features_u, sigma=sigma, eps=eps, mask=mask_u,
                            axis_name=axis_name,
                            standardize_features=standardize_features)
  normal = weighted_mean(scores_u, weights, mask=mask_u, axis_name=axis_name)
  la = anomaly_term(scores_a, lam=lam, mask_a=mask_a, axis_name=axis_name)
  loss = normal - la
  if has_aux:
    return loss, {"weights": weights, "normal": normal, "la": la}
  return loss


def paper_hyperparameters(*, dim: int, n_mels: Optional[int] = None) -> dict:
  """sigma and lambda as in the paper.

  Audio (section 4.2.2, ``n_mels`` given): sigma = 1/(2D), lambda = 2M.
  Verification experiment (section 4.1.1, ``n_mels`` None): sigma = 2D,
  lambda = 2D.
  """
  if n_mels is None:
    return {"sigma": 2.0 * dim, "lam": 2.0 * dim}
  return {"sigma": 1.0 / (2.0 * dim), "lam": 2.0 * n_mels}


LOSSES = ("re", "snp", "bu")
