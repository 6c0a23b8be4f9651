"""RE, SNP and batch-uniformization (BU) losses: eqs. (7), (9), (10), (16).

Model-agnostic pure functions of per-frame anomaly scores A(x) (eq. 5, any
model) and, for BU, the normal frames' features. Every function takes:

- optional boolean masks ``mask_u`` / ``mask_a`` marking the valid normal /
  anomalous frames, so a variable number of frames keeps static shapes;
- an optional ``axis_name``: inside ``jax.shard_map`` over that mesh axis every
  mean, the KDE and the BU normalizer sum_i w_i run over the global batch, and
  the returned loss is the global loss on every device (equal to the
  single-device value on the concatenated batch).

Masks are applied to the scores before any nonlinearity (``jnp.where``), so
garbage in a masked-out row (NaN, inf, huge values) of the scores and features
changes neither the loss nor any gradient (a model's backward pass through such
an input row is NaN: zero the rows before the model). With no valid normal frame (M_u = 0: an empty array or an
all-False ``mask_u``) the normal term of every loss is 0, and with no valid
anomalous frame L_a is 0; the losses are then finite (RE: 0; SNP and BU: -L_a).

Hyperparameters are keyword-only and, when given as numbers (Python, NumPy or a
0-d array with a value), checked (lambda and sigma finite and > 0, eps finite
and >= 0; a ValueError names the argument); a traced value out of range under
``jax.jit`` makes the loss NaN instead (``kde._check_hyperparameter``). Paper defaults (see ``paper_hyperparameters``):
sigma = 1/(2D) on standardized features and lambda = 2M (M mel bands) for audio
(section 4.2.2); sigma = 2D and lambda = 2D for the verification experiment
(section 4.1.1).
"""

from __future__ import annotations

import numbers
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from bu_jax import kde


def _vector(values: jax.Array, name: str, length: Optional[int] = None) -> jax.Array:
  """``values`` as an (M,) float32 vector, or a ValueError naming it."""
  values = jnp.asarray(values)
  if values.ndim != 1 or (length is not None and values.shape[0] != length):
    want = "(M,)" if length is None else f"({length},)"
    raise ValueError(f"{name} must have shape {want}, one value per frame, got {values.shape}")
  return values


def _scores_and_mask(scores: jax.Array, mask: Optional[jax.Array], names: str
                     ) -> tuple[jax.Array, Optional[jax.Array]]:
  """``scores`` (M,) and ``mask`` (M,) or None, or a ValueError naming the argument
  (``names``: "u" for scores_u / mask_u, "a" for scores_a / mask_a)."""
  scores = _vector(scores, f"scores_{names}")
  if mask is not None:
    mask = _vector(mask, f"mask_{names}", scores.shape[0])
  return scores, mask


def _masked_sum_count(values: jax.Array, mask: Optional[jax.Array],
                      axis_name: Optional[str]) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The sum of the valid ``values`` in units of ``up`` (a power of two near their
  largest |value| over every device: exact, and the sum of values near 3.4e38 does
  not overflow), their count, and ``up``."""
  values = _vector(values, "scores").astype(jnp.float32)
  if mask is not None:
    mask = _vector(mask, "mask", values.shape[0])
  if mask is None:
    count = jnp.asarray(values.size, jnp.float32)
  else:
    mask = mask.astype(jnp.bool_)
    values = jnp.where(mask, values, 0.0)
    count = jnp.sum(mask.astype(jnp.float32))
  down, up = kde._pow2_scale(values, axis_name=axis_name)
  total = jnp.sum(values * down)
  if axis_name is not None:
    total = jax.lax.psum(total, axis_name)
    count = jax.lax.psum(count, axis_name)
  return total, count, up


def masked_mean(values: jax.Array, *, mask: Optional[jax.Array] = None,
                axis_name: Optional[str] = None) -> jax.Array:
  """Mean over the valid entries of the (global) batch, as in eqs. (7) and (10).

  Args:
    values: (M,) values.
    mask: optional (M,) booleans, True for valid entries; the others may hold
      anything and get zero gradient.
    axis_name: mesh axis to reduce over inside ``jax.shard_map``, or None.

  Returns:
    float32 scalar; 0 if there is no valid entry. The sum is taken in units of a
    power of two (exact), so a mean of finite values is finite (values near
    3.4e38 once summed to inf).
  """
  total, count, up = _masked_sum_count(values, mask, axis_name)
  return total / jnp.maximum(count, 1.0) * up


def re_loss(scores_u: jax.Array, *, mask_u: Optional[jax.Array] = None,
            axis_name: Optional[str] = None) -> jax.Array:
  """Reconstruction-error loss J_RE = 1/M_u sum_i A(x_i^(u)) (eq. 7).

  Args:
    scores_u: (M_u,) anomaly scores A(x) (eq. 5) of the normal frames.
    mask_u: optional (M_u,) booleans, True for valid normal frames.
    axis_name: mesh axis to reduce over inside ``jax.shard_map``, or None.

  Returns:
    float32 scalar; 0 when there is no valid normal frame.
  """
  scores_u, mask_u = _scores_and_mask(scores_u, mask_u, "u")
  return masked_mean(scores_u, mask=mask_u, axis_name=axis_name)


def anomaly_term(scores_a: jax.Array, *, lam: float,
                 mask_a: Optional[jax.Array] = None,
                 axis_name: Optional[str] = None) -> jax.Array:
  """L_a = 1/M_a sum_j lambda tanh(A(x_j^(a)) / lambda) (eq. 10).

  The mask is applied before the tanh, so a NaN or inf score in a masked-out
  row gives neither a NaN loss nor a NaN gradient.

  Args:
    scores_a: (M_a,) anomaly scores of the (simulated) anomalous frames.
    lam: lambda > 0 (finite), the clipping level; paper: 2M (M mel bands).
    mask_a: optional (M_a,) booleans, True for valid anomalous frames.
    axis_name: mesh axis to reduce over inside ``jax.shard_map``, or None.

  Returns:
    float32 scalar, 0 <= L_a <= lambda for non-negative scores (tanh reaches 1
    in float32 beyond about 9 lambda); 0 when there is
    no valid anomalous frame.

  Raises:
    ValueError: ``lam`` is a number that is not finite and > 0.
  """
  lam = kde._check_hyperparameter("lam", lam)
  scores_a, mask_a = _scores_and_mask(scores_a, mask_a, "a")
  scores_a = scores_a.astype(jnp.float32)
  if mask_a is not None:
    scores_a = jnp.where(mask_a.astype(jnp.bool_), scores_a, 0.0)
  clipped = lam * jnp.tanh(scores_a / lam)
  return masked_mean(clipped, mask=mask_a, axis_name=axis_name)


def snp_loss(scores_u: jax.Array, scores_a: jax.Array, *, lam: float,
             mask_u: Optional[jax.Array] = None,
             mask_a: Optional[jax.Array] = None,
             axis_name: Optional[str] = None) -> jax.Array:
  """Simulated-negative-prior loss J_SNP = J_RE - L_a (eq. 9).

  Args:
    scores_u: (M_u,) anomaly scores of the normal frames.
    scores_a: (M_a,) anomaly scores of the simulated anomalous frames.
    lam: lambda > 0 (finite) of eq. (10).
    mask_u: optional (M_u,) booleans, True for valid normal frames.
    mask_a: optional (M_a,) booleans, True for valid anomalous frames.
    axis_name: mesh axis to reduce over inside ``jax.shard_map``, or None.

  Returns:
    float32 scalar; -L_a when there is no valid normal frame.

  Raises:
    ValueError: ``lam`` is a number that is not finite and > 0.
  """
  return (re_loss(scores_u, mask_u=mask_u, axis_name=axis_name)
          - anomaly_term(scores_a, lam=lam, mask_a=mask_a, axis_name=axis_name))


def weighted_mean(scores: jax.Array, *, weights: jax.Array,
                  mask: Optional[jax.Array] = None,
                  axis_name: Optional[str] = None) -> jax.Array:
  """The normal term of eq. (16): sum_i w_i A_i / sum_i w_i over valid entries.

  ``weights`` is keyword-only (as in ``np.average``): two (M,) vectors given by
  position are too easily swapped.

  Args:
    scores: (M,) anomaly scores.
    weights: (M,) non-negative weights (``kde.kde_weights``); a negative one
      makes the result NaN.
    mask: optional (M,) booleans, True for valid entries; the scores of the
      others are replaced by 0 before any arithmetic (zero gradient).
    axis_name: mesh axis to reduce over inside ``jax.shard_map``, or None.

  Returns:
    float32 scalar, the same for any positive scale of the weights; 0 when no
    valid entry has a positive weight.
  """
  scores = _vector(scores, "scores")
  w = _vector(weights, "weights", scores.shape[0]).astype(jnp.float32)
  if mask is not None:
    w = jnp.where(_vector(mask, "mask", scores.shape[0]).astype(jnp.bool_), w, 0.0)
  # A negative weight makes the result NaN (it once entered the normalizer but not the
  # numerator). The weights are taken in units of a power of two near their largest
  # (exact: ordinary weights give the same bits), so their scale cannot overflow the
  # sums (weights near 1e37) or underflow the products (weights near 1e-37).
  w = jnp.where(w < 0, jnp.nan, w)
  w = w * kde._pow2_scale(w, axis_name=axis_name)[0]
  scores = jnp.where(w > 0, scores.astype(jnp.float32), 0.0)
  num, den = jnp.sum(w * scores), jnp.sum(w)
  if axis_name is not None:
    num, den = jax.lax.psum(num, axis_name), jax.lax.psum(den, axis_name)
  return num / jnp.where(den > 0, den, 1.0)


def bu_loss(scores_u: jax.Array, scores_a: jax.Array, features_u: jax.Array,
            *, lam: float, sigma: Optional[float] = None, eps: float = 1e-6,
            mask_u: Optional[jax.Array] = None,
            mask_a: Optional[jax.Array] = None,
            axis_name: Optional[str] = None,
            standardize_features: bool = True) -> jax.Array:
  """Batch-uniformization loss J_BU = sum_i w_i A(x_i^(u)) / sum_i w_i - L_a (eq. 16).

  w_i = 1 / (K(x_i^(u)) + eps) with the Gaussian KDE of eq. (15) over the
  normal frames of the batch (``kde.kde_weights``); the weights carry no
  gradient. ``bu_loss_with_aux`` also returns the weights and both terms.

  Args:
    scores_u: (M_u,) anomaly scores A(x) (eq. 5) of the normal frames.
    scores_a: (M_a,) anomaly scores of the simulated anomalous frames.
    features_u: (M_u, D) features of the normal frames (the KDE's input).
    lam: lambda > 0 (finite) of eq. (10); paper: 2M (M mel bands).
    sigma: sigma > 0 (finite) of eq. (15); None for the paper's 1/(2D).
    eps: epsilon >= 0 (finite) of eq. (16).
    mask_u: optional (M_u,) booleans, True for valid normal frames.
    mask_a: optional (M_a,) booleans, True for valid anomalous frames.
    axis_name: mesh axis to reduce over inside ``jax.shard_map``, or None.
    standardize_features: standardize the features per dimension before the
      KDE (True, the paper's section 4.2.2) or only centre them.

  Returns:
    float32 scalar; -L_a when there is no valid normal frame (M_u = 0).

  Raises:
    ValueError: ``lam``, ``sigma`` or ``eps`` is a number out of range.
  """
  return bu_loss_with_aux(scores_u, scores_a, features_u, lam=lam, sigma=sigma, eps=eps,
                          mask_u=mask_u, mask_a=mask_a, axis_name=axis_name,
                          standardize_features=standardize_features)[0]


def bu_loss_with_aux(scores_u: jax.Array, scores_a: jax.Array, features_u: jax.Array,
                     *, lam: float, sigma: Optional[float] = None, eps: float = 1e-6,
                     mask_u: Optional[jax.Array] = None,
                     mask_a: Optional[jax.Array] = None,
                     axis_name: Optional[str] = None,
                     standardize_features: bool = True,
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """J_BU (eq. 16) and its parts, for logging and ``value_and_grad(has_aux=True)``.

  Args:
    scores_u: (M_u,) anomaly scores A(x) (eq. 5) of the normal frames.
    scores_a: (M_a,) anomaly scores of the simulated anomalous frames.
    features_u: (M_u, D) features of the normal frames (the KDE's input).
    lam: lambda > 0 (finite) of eq. (10); paper: 2M (M mel bands).
    sigma: sigma > 0 (finite) of eq. (15); None for the paper's 1/(2D).
    eps: epsilon >= 0 (finite) of eq. (16).
    mask_u: optional (M_u,) booleans, True for valid normal frames.
    mask_a: optional (M_a,) booleans, True for valid anomalous frames.
    axis_name: mesh axis to reduce over inside ``jax.shard_map``, or None.
    standardize_features: standardize the features per dimension before the
      KDE (True, the paper's section 4.2.2) or only centre them.

  Returns:
    ``(loss, aux)``: the float32 scalar of ``bu_loss`` and a dict with
    ``weights`` ((M_u,) w_i of eq. 16, 0 for masked-out frames), ``normal``
    (the weighted normal term, 0 when M_u = 0) and ``la`` (L_a of eq. 10).

  Raises:
    ValueError: ``lam``, ``sigma`` or ``eps`` is a number out of range.
  """
  kde._check_hyperparameter("lam", lam)
  eps = kde._check_hyperparameter("eps", eps, allow_zero=True)
  scores_u, mask_u = _scores_and_mask(scores_u, mask_u, "u")
  features_u = jnp.asarray(features_u)
  if (jnp.ndim(features_u) != 2 or jnp.shape(features_u)[0] != scores_u.shape[0]
      or jnp.shape(features_u)[1] == 0):
    raise ValueError(f"features_u must be ({scores_u.shape[0]}, D), one row per score of "
                     f"scores_u, got {jnp.shape(features_u)}")
  if sigma is None:
    sigma = 1.0 / (2.0 * features_u.shape[-1])
  sigma = kde._check_hyperparameter("sigma", sigma)
  weights = kde.kde_weights(features_u, sigma=sigma, eps=eps, mask=mask_u,
                            axis_name=axis_name,
                            standardize_features=standardize_features)
  loss, normal, la = _weighted_loss_parts(scores_u, scores_a, weights, lam=lam, mask_u=mask_u,
                                          mask_a=mask_a, axis_name=axis_name)
  return loss, {"weights": weights, "normal": normal, "la": la}


def _weighted_loss_parts(scores_u, scores_a, weights, *, lam, mask_u, mask_a, axis_name):
  """Eq. (16) from given weights: (J_BU, weighted normal term, L_a)."""
  scores_u, mask_u = _scores_and_mask(scores_u, mask_u, "u")
  normal = weighted_mean(scores_u, weights=jax.lax.stop_gradient(weights), mask=mask_u,
                         axis_name=axis_name)
  la = anomaly_term(scores_a, lam=lam, mask_a=mask_a, axis_name=axis_name)
  return normal - la, normal, la


def bu_loss_from_weights(scores_u: jax.Array, scores_a: jax.Array, weights: jax.Array, *,
                         lam: float, mask_u: Optional[jax.Array] = None,
                         mask_a: Optional[jax.Array] = None,
                         axis_name: Optional[str] = None) -> tuple[jax.Array, jax.Array]:
  """J_BU (eq. 16) with weights computed elsewhere: sum w A / sum w - L_a.

  For weightings other than eq. (15) on the batch alone, e.g.
  ``kde.kde_weights`` at a band-width from ``kde.contrast_sigma``, or
  ``kde.kde_weights_with_memory``. The weights get no gradient.

  Args:
    scores_u: (M_u,) anomaly scores A(x) (eq. 5) of the normal frames.
    scores_a: (M_a,) anomaly scores of the simulated anomalous frames.
    weights: (M_u,) non-negative weights w_i (a negative one makes the loss NaN).
    lam: lambda > 0 (finite) of eq. (10).
    mask_u, mask_a: optional validity masks.
    axis_name: mesh axis to reduce over inside ``jax.shard_map``, or None.

  Returns:
    ``(loss, normal)``: the float32 scalar J_BU and its weighted normal term;
    ``normal`` is 0 and ``loss`` is -L_a when no valid normal frame has a
    positive weight (M_u = 0).

  Raises:
    ValueError: ``lam`` is a number that is not finite and > 0.
  """
  kde._check_hyperparameter("lam", lam)
  loss, normal, _ = _weighted_loss_parts(scores_u, scores_a, weights, lam=lam, mask_u=mask_u,
                                         mask_a=mask_a, axis_name=axis_name)
  return loss, normal


def tilted_weights(scores_u: jax.Array, *, tilt: float,
                   mask_u: Optional[jax.Array] = None,
                   axis_name: Optional[str] = None) -> jax.Array:
  """Weights that lean the normal term towards the batch's largest scores (section 3.1).

  w_i = exp(t (A_i - max_j A_j) / mean_j A_j) over the valid normal frames of the
  (global) batch. Section 3.1 wants the maximum of A(x) over normal data minimized,
  and rejects minimizing it directly because its gradient comes from one frame;
  with these weights the weighted normal term of eq. (16) has the gradient of the
  tilted mean (1/t') ln mean_i exp(t' A_i), t' = t / mean A, which runs from the
  mean (t = 0: uniform weights, J_SNP) to the maximum (t -> inf) while every frame
  keeps a share of the gradient. Unlike eq. (15)'s density weights, they ask the
  model which frames it fits worst, rather than which are rare in the features.
  Multiply them into ``kde.kde_weights`` (or use them alone) and pass the product
  to ``bu_loss_from_weights``. They carry no gradient; dividing by the batch's mean
  score makes them independent of the scores' unit, and subtracting the maximum
  keeps every exponent <= 0 (no overflow; the largest weight is 1).

  Args:
    scores_u: (M_u,) anomaly scores A(x) (eq. 5) of the normal frames, >= 0.
    tilt: t >= 0 (finite); 0 gives uniform weights.
    mask_u: optional (M_u,) booleans, True for valid normal frames; the others
      get weight 0 and their scores are not read.
    axis_name: mesh axis to reduce over inside ``jax.shard_map``, or None: the
      maximum and the mean are then those of the global batch.

  Returns:
    (M_u,) float32 weights in (0, 1], 0 for masked-out frames; all 1 when every
    valid score is 0 (or below float32's smallest normal number, 1.2e-38); exact
    up to float32's largest score; all NaN when a valid score is NaN or inf (the loss is then
    NaN, which training stops on, rather than a plausible number).

  Raises:
    ValueError: ``tilt`` is a number that is not finite and >= 0.
  """
  tilt = kde._check_hyperparameter("tilt", tilt, allow_zero=True)
  scores_u, mask_u = _scores_and_mask(scores_u, mask_u, "u")
  scores = jax.lax.stop_gradient(scores_u).astype(jnp.float32)
  valid = (jnp.ones(scores.shape, jnp.bool_) if mask_u is None
           else mask_u.astype(jnp.bool_))
  scores = jnp.where(valid, scores, 0.0)
  top = jnp.max(jnp.where(valid, scores, -jnp.inf), initial=-jnp.inf)
  if axis_name is not None:
    top = jax.lax.pmax(top, axis_name)
  # In units of the largest score: (A_i - max A) / mean A = (r_i - 1) / mean r with
  # r = A / max A in [0, 1], so the mean cannot overflow for scores near float32's
  # maximum. XLA divides by multiplying with the reciprocal, which is flushed to 0
  # for a divisor above 2**126, so scores above 2**64 are first scaled by 2**-64
  # (exact). A largest score of 0 or below the smallest normal float (which XLA may
  # flush to 0) counts as every score 0: uniform weights. A NaN or inf score makes
  # every weight NaN, visibly.
  usable = top >= jnp.finfo(jnp.float32).tiny
  shrink = jnp.where(top > 2.0 ** 64, 2.0 ** -64, 1.0)
  divisor = jnp.where(usable, top * shrink, 1.0)
  ratio = jnp.where(valid & usable,
                    jnp.where(scores == top, 1.0, (scores * shrink) / divisor), 0.0)
  mean = masked_mean(ratio, mask=valid, axis_name=axis_name)
  exponent = jnp.where(valid & (mean != 0),
                       tilt * (ratio - 1.0) / jnp.where(mean == 0, 1.0, mean), 0.0)
  weights = jnp.where(top < jnp.inf, jnp.exp(jnp.minimum(exponent, 0.0)), jnp.nan)
  return jnp.where(valid, weights, 0.0)


def paper_hyperparameters(*, dim: int, n_mels: Optional[int] = None) -> dict:
  """sigma (eq. 15) and lambda (eq. 10) as in the paper.

  Audio (section 4.2.2, ``n_mels`` given): sigma = 1/(2D), lambda = 2M.
  Verification experiment (section 4.1.1, ``n_mels`` None): sigma = 2D,
  lambda = 2D.

  Args:
    dim: feature dimension D (the autoencoder's input size).
    n_mels: number of mel bands M for audio, or None for the verification
      experiment.

  Returns:
    ``{"sigma": float, "lam": float}``.

  Raises:
    ValueError: ``dim`` or ``n_mels`` is not a positive integer.
  """
  for name, value in (("dim", dim), ("n_mels", n_mels)):
    if value is None and name == "n_mels":
      continue
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
      raise ValueError(f"{name} must be a positive integer, got {value!r}")
  if n_mels is None:
    return {"sigma": 2.0 * dim, "lam": 2.0 * dim}
  return {"sigma": 1.0 / (2.0 * dim), "lam": 2.0 * n_mels}


LOSSES = ("re", "snp", "bu")
