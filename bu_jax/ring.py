"""Verification experiment (section 4.1): ring data, Table 1, Figs. 2-3.

Data (section 4.1.1): x = r (cos psi, sin psi) with psi ~ U[0, 2 pi); normal
samples have r ~ U[0, 2], anomalous ones r ~ U(2, 3]; N = 10^4 of each. The
normal density is p(x) = 1 / (4 pi |x|) on |x| <= 2 (r uniform, so p falls off
as 1/r: frequent-normal samples near the origin, rare-normal ones near the rim
r = 2), and the oracle target of batch uniformization is U(x) = 1 / (4 pi) on
the same disc (eq. 12). The actual anomalous samples form the anomalous
mini-batch (no anomaly simulation, eq. 8 is not used).

Training: the 2-20-10-20-2 sigmoid AE of ``models.VerificationAE``, AMSGrad
with step size 1e-3, mini-batches M_u = M_a = 500, 5,000 updates, and the same
initial parameters and the same sequence of mini-batches for RE (eq. 7), SNP
(eq. 9) and BU (eq. 16), with sigma = lambda = 2D = 4. One jitted function runs
a chunk of updates of all methods with ``lax.scan``; mini-batches are drawn from
``fold_in(data_key, epoch)`` permutations, so a run is a pure function of the
seed.

Evaluation: q_theta(x) = exp(-A(x)) / Z (eq. 6) on a cell-centred grid over
[-3, 3]^2, Z by the midpoint rule on that grid, and the KL divergences
D(p || q) and D(U || q) of Table 1, see ``kl_divergences``. The absolute KLDs
depend strongly on the training length: at 5,000 updates the rim r ~ 2 is
not yet reconstructed well by SNP or BU, and D(U || q) of both keeps falling
to 20,000 and 50,000 updates (``RingConfig.updates``).

The paper leaves two details of the KDE (eq. 15) open for this experiment:
whether the samples are standardized first (as in section 4.2.2) and the value
of eps in w_i = 1 / (K(x_i) + eps). Both are fields of ``RingConfig``; the
defaults are raw samples and eps = 1e-6. Section 4.2.2 mentions the
standardization for the audio features only, and sigma = 2D is motivated by
the conditioning of the Gram matrix of the (raw) normal samples. Standardizing
(about sigma = 6 on raw samples, since each coordinate of x has variance 2/3)
gives the same KLDs within the seed-to-seed spread; eps only matters once it
is comparable to K (K >= 1/M_u = 0.002 here), and larger eps (1e-2, 1e-1)
flattens the weights towards SNP and moves D(U || q) away from the paper.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
import time
from typing import Any, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bu_jax import cli
from bu_jax import fileio
from bu_jax import kde
from bu_jax import losses
from bu_jax import models
from bu_jax import plots
from bu_jax import train as train_lib

DIM = 2  # D
NORMAL_RADIUS = 2.0
ANOMALOUS_RADIUS = 3.0
METHODS = ("re", "snp", "bu")
GRID_CELLS_MIN, GRID_CELLS_MAX = 100, 2000  # the evaluation grid's cells per side
_PAPER = losses.paper_hyperparameters(dim=DIM)  # sigma = lambda = 2D

# Table 1 of the paper: D(p || q_theta) and D(U || q_theta).
PAPER_TABLE1 = {
    "re": {"kld_p_q": 1.395, "kld_u_q": 0.913},
    "snp": {"kld_p_q": 0.222, "kld_u_q": 0.333},
    "bu": {"kld_p_q": 0.403, "kld_u_q": 0.083},
}

# Closed-form differential entropies (negated) of the oracle densities:
#   int p ln p = int_0^2 (1/2) ln(1 / (4 pi r)) dr = 1 - ln(8 pi),
#   int U ln U = -ln(4 pi).
NEG_ENTROPY_P = 1.0 - math.log(8.0 * math.pi)
NEG_ENTROPY_U = -math.log(4.0 * math.pi)


@dataclasses.dataclass(frozen=True)
class RingConfig:
  """Hyperparameters of section 4.1.1 (defaults) and of the evaluation.

  Attributes:
    methods: which of "re", "snp", "bu" to train (from the same initial
      parameters and on the same mini-batches).
    updates: number of parameter updates.
    num_samples: N, normal and anomalous samples each.
    batch_size: M_u = M_a.
    learning_rate: AMSGrad step size.
    sigma: KDE band-width parameter sigma of eq. 15 (paper: 2D).
    lam: clipping parameter lambda of eq. 10 (paper: 2D).
    eps: epsilon of w_i = 1 / (K(x_i) + eps) (eq. 16).
    standardize: standardize the normal mini-batch before the KDE.
    grid_cells: cells per side of the evaluation grid over [-3, 3]^2, in
      [GRID_CELLS_MIN, GRID_CELLS_MAX] (at 100 the KLDs are within 5e-4 of
      their value at 600 or 2,000; fewer bias them, 3 reverses RE and SNP).
    log_every: updates per jitted chunk (one progress line per chunk).
  """

  methods: tuple[str, ...] = METHODS
  updates: int = 5000
  num_samples: int = 10_000
  batch_size: int = 500
  learning_rate: float = 1e-3
  sigma: float = _PAPER["sigma"]
  lam: float = _PAPER["lam"]
  eps: float = 1e-6
  standardize: bool = False
  grid_cells: int = 600
  log_every: int = 500

  def __post_init__(self):
    unknown = set(self.methods) - set(METHODS)
    if not self.methods or unknown:
      raise ValueError(f"methods must be a non-empty subset of {METHODS}, "
                       f"got {self.methods}")
    if self.num_samples % self.batch_size:
      raise ValueError(f"num_samples={self.num_samples} is not a multiple of "
                       f"batch_size={self.batch_size}")
    if self.updates < 1 or self.log_every < 1:
      raise ValueError("updates, log_every must be >= 1")
    if not GRID_CELLS_MIN <= self.grid_cells <= GRID_CELLS_MAX:
      raise ValueError(f"grid_cells must lie in [{GRID_CELLS_MIN}, {GRID_CELLS_MAX}] (fewer "
                       "cells bias the KLDs; more do not change them and need gigabytes), "
                       f"got {self.grid_cells}")
    for name in ("learning_rate", "sigma", "lam"):  # finite and > 0
      kde._check_hyperparameter(name, getattr(self, name))
    kde._check_hyperparameter("eps", self.eps, allow_zero=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
  """What ``run`` does, and the flags of ``experiments.ring`` (``cli.define_flags``).

  The defaults are ``RingConfig``'s (the paper's), so none is stated twice;
  ``ring_config`` is the one mapping to it.
  """

  workdir: str = cli.setting(
      help="Output folder (results.json, fig2_pdf.png, fig3_scores.png; created if missing).")
  methods: Sequence[str] = cli.setting(
      RingConfig.methods, flag="loss", choices=(*METHODS, "all"),
      help="Cost function to train; 'all' trains RE, SNP and BU from the same initial "
      "parameters.",
      from_flag=lambda v: METHODS if v == "all" else (v,),
      to_flag=lambda v: "all" if tuple(v) == METHODS else v[0])
  seeds: int = cli.setting(1, minimum=1, help="Number of seeds: runs seeds 0, 1, ..., N-1.")
  updates: int = cli.setting(RingConfig.updates, minimum=1,
                             help="Parameter updates per method.")
  standardize: bool = cli.setting(
      RingConfig.standardize, help="Standardize the normal mini-batch before the KDE of eq. 15.")
  eps: float = cli.setting(RingConfig.eps, minimum=0,
                           help="epsilon of the BU weights 1 / (K(x) + eps), eq. 16.")
  grid_cells: int = cli.setting(RingConfig.grid_cells, minimum=GRID_CELLS_MIN,
                                help="Evaluation grid cells per side of [-3, 3], at most "
                                f"{GRID_CELLS_MAX}.")
  log_every: int = cli.setting(RingConfig.log_every, minimum=1,
                               help="Updates between progress lines (one jitted chunk).")

  def __post_init__(self):
    """Checks every setting once; a ``ValueError`` names the flag (the entry
    point turns it into a usage error)."""
    bad = [m for m in self.methods if m not in METHODS]
    if bad or not self.methods:
      raise ValueError(f"--loss must be one of {METHODS} or 'all', got {list(self.methods)}")
    cli.check(self)
    if self.grid_cells > GRID_CELLS_MAX:
      raise ValueError(f"--grid_cells must be <= {GRID_CELLS_MAX} (more do not change the "
                       f"KLDs and need gigabytes), got {self.grid_cells}")
    self.ring_config()  # anything else RingConfig refuses, before any work

  def ring_config(self) -> RingConfig:
    """The experiment: these settings, ``RingConfig``'s defaults for the rest."""
    return RingConfig(methods=tuple(self.methods), updates=self.updates,
                      standardize=self.standardize, eps=self.eps,
                      grid_cells=self.grid_cells, log_every=self.log_every)


# --------------------------------------------------------------------------
# Data.
# --------------------------------------------------------------------------


def sample_ring(key: jax.Array, num: int, *, r_min: float, r_max: float,
                include_min: bool) -> jax.Array:
  """num points x = r (cos psi, sin psi), r ~ U[r_min, r_max], psi ~ U[0, 2 pi).

  ``include_min=False`` draws r from (r_min, r_max] instead (as r_max - u,
  u ~ U[0, r_max - r_min)).
  """
  key_r, key_psi = jax.random.split(key)
  u = jax.random.uniform(key_r, (num,), minval=0.0, maxval=r_max - r_min)
  r = r_min + u if include_min else r_max - u
  psi = jax.random.uniform(key_psi, (num,), minval=0.0, maxval=2.0 * jnp.pi)
  return r[:, None] * jnp.stack([jnp.cos(psi), jnp.sin(psi)], axis=-1)


@functools.partial(jax.jit, static_argnames=("num_samples",))
def make_dataset(key: jax.Array, *,
                 num_samples: int) -> dict[str, jax.Array]:
  """N normal (r ~ U[0, 2]) and N anomalous (r ~ U(2, 3]) samples (sec. 4.1.1)."""
  key_u, key_a = jax.random.split(key)
  return {
      "normal": sample_ring(key_u, num_samples, r_min=0.0,
                            r_max=NORMAL_RADIUS, include_min=True),
      "anomalous": sample_ring(key_a, num_samples, r_min=NORMAL_RADIUS,
                               r_max=ANOMALOUS_RADIUS, include_min=False),
  }


def epoch_permutations(key: jax.Array, first_epoch: jax.Array, *,
                       num_epochs: int, num_samples: int) -> jax.Array:
  """Row orders of epochs first_epoch .. + num_epochs - 1 -> (num_epochs, N).

  Epoch e is shuffled by ``fold_in(key, e)``, so any step's mini-batch can be
  recomputed without saved RNG state.
  """
  epochs = first_epoch + jnp.arange(num_epochs)
  return jax.vmap(lambda e: jax.random.permutation(
      jax.random.fold_in(key, e), num_samples))(epochs)


def minibatch(data: Mapping[str, jax.Array], key: jax.Array, step: jax.Array,
              *, batch_size: int) -> dict[str, jax.Array]:
  """Mini-batch ``step`` of epoch-wise shuffling (reference for ``train_chunk``).

  Each set of ``data`` is permuted once per epoch of N / M mini-batches, with
  ``fold_in(key, i)`` for the i-th set in sorted order; mini-batch ``step`` is
  the (step mod N/M)-th block of M rows of its epoch's permutation.
  """
  out = {}
  for i, (name, x) in enumerate(sorted(data.items())):
    epoch, index = jnp.divmod(step, x.shape[0] // batch_size)
    perm = epoch_permutations(jax.random.fold_in(key, i), epoch, num_epochs=1,
                              num_samples=x.shape[0])[0]
    rows = jax.lax.dynamic_slice_in_dim(perm, index * batch_size, batch_size)
    out[name] = x[rows]
  return out


# --------------------------------------------------------------------------
# Training.
# --------------------------------------------------------------------------


def _optimizer(config: RingConfig) -> optax.GradientTransformation:
  return optax.amsgrad(config.learning_rate)


def method_loss(method: str, params, batch: Mapping[str, jax.Array], *,
                config: RingConfig) -> jax.Array:
  """J_RE (eq. 7), J_SNP (eq. 9) or J_BU (eq. 16) of ``VerificationAE``.

  The loss comes from the training engine's dispatch (``train.loss_by_name``);
  BU's weights are eq. (15)'s KDE over the normal mini-batch.
  """
  score = models.score_fn(models.VerificationAE())
  scores_u = score(params, batch["normal"])
  scores_a = None if method == "re" else score(params, batch["anomalous"])
  weights = None
  if method == "bu":
    weights = kde.kde_weights(batch["normal"], sigma=config.sigma, eps=config.eps,
                              standardize_features=config.standardize)
  loss, _ = train_lib.loss_by_name(method, scores_u, scores_a, lam=config.lam,
                                   weights=weights)
  return loss


@functools.partial(jax.jit, static_argnames=("config",))
def init_state(key: jax.Array, *, config: RingConfig) -> train_lib.TrainState:
  """The same Glorot-initialized parameters for every method (sec. 4.1.1)."""
  params = models.VerificationAE().init(key, jnp.zeros((1, DIM)))["params"]
  tx = _optimizer(config)
  return train_lib.TrainState(
      step=jnp.zeros((), jnp.int32),
      params={m: params for m in config.methods},
      opt_state={m: tx.init(params) for m in config.methods})


def train_step(state: train_lib.TrainState, batch: Mapping[str, jax.Array], *,
               config: RingConfig) -> tuple[train_lib.TrainState, dict[str, jax.Array]]:
  """One AMSGrad update of every method on the same mini-batch."""
  tx = _optimizer(config)
  params, opt_state, metrics = {}, {}, {}
  for m in config.methods:
    loss, grads = jax.value_and_grad(
        functools.partial(method_loss, m, config=config))(state.params[m], batch)
    updates, opt_state[m] = tx.update(grads, state.opt_state[m],
                                      state.params[m])
    params[m] = optax.apply_updates(state.params[m], updates)
    metrics[m] = loss
  return train_lib.TrainState(step=state.step + 1, params=params,
                    opt_state=opt_state), metrics


def chunk_batches(data: Mapping[str, jax.Array], key: jax.Array,
                  first_step: jax.Array, *, num_steps: int,
                  batch_size: int) -> dict[str, jax.Array]:
  """Mini-batches of steps first_step .. + num_steps - 1 -> (num_steps, M, D).

  Equal to ``minibatch`` step by step, but each epoch's permutation is drawn
  once per chunk instead of once per step.
  """
  out = {}
  steps = first_step + jnp.arange(num_steps)
  for i, (name, x) in enumerate(sorted(data.items())):
    per_epoch = x.shape[0] // batch_size
    first_epoch = first_step // per_epoch
    perms = epoch_permutations(jax.random.fold_in(key, i), first_epoch,
                               num_epochs=num_steps // per_epoch + 2,
                               num_samples=x.shape[0])
    epoch, index = jnp.divmod(steps, per_epoch)
    flat = ((epoch - first_epoch)[:, None] * x.shape[0]
            + index[:, None] * batch_size + jnp.arange(batch_size))
    out[name] = x[perms.reshape(-1)[flat]]
  return out


@functools.partial(jax.jit, static_argnames=("config", "num_steps"))
def train_chunk(state: train_lib.TrainState, data: Mapping[str, jax.Array],
                data_key: jax.Array, *, config: RingConfig, num_steps: int
                ) -> tuple[train_lib.TrainState, dict[str, jax.Array]]:
  """``num_steps`` updates with ``lax.scan``; metrics have a leading step axis.

  The mini-batches are those of ``minibatch`` (see ``chunk_batches``), so a
  run split into chunks anywhere gives the same parameters.
  """
  batches = chunk_batches(data, data_key, state.step, num_steps=num_steps,
                          batch_size=config.batch_size)
  return jax.lax.scan(functools.partial(train_step, config=config), state,
                      batches)


def train(seed: int, *, config: RingConfig, progress: tuple[int, int] = (0, 1)
          ) -> tuple[dict[str, Any], dict[str, float]]:
  """Trains every method of ``config`` for one seed.

  Args:
    seed: seeds the data set, the initial parameters and the mini-batches.
    config: the experiment.
    progress: (index of this run, number of runs), for the logged ETA.

  Returns:
    ({method: params}, {method: final training loss}).
  """
  key = jax.random.PRNGKey(seed)
  data = make_dataset(jax.random.fold_in(key, 0),
                      num_samples=config.num_samples)
  state = init_state(jax.random.fold_in(key, 1), config=config)
  data_key = jax.random.fold_in(key, 2)
  done, start = 0, time.perf_counter()
  run, runs = progress
  last = {}
  while done < config.updates:
    n = min(config.log_every, config.updates - done)
    state, metrics = train_chunk(state, data, data_key, config=config,
                                 num_steps=n)
    metrics = jax.tree.map(np.asarray, metrics)
    for m, values in metrics.items():  # the training engine's guard
      train_lib.raise_if_non_finite({"loss": values}, first_step=done, what=f"J_{m.upper()}",
                                    checkpoints=False)
    done += n
    last = {m: float(v[-1]) for m, v in metrics.items()}
    elapsed = time.perf_counter() - start
    remaining = (config.updates - done) + (runs - run - 1) * config.updates
    eta = elapsed / done * remaining
    print(f"seed {seed}: update {done}/{config.updates}  "
          + "  ".join(f"J_{m.upper()}={last[m]:.4f}" for m in config.methods)
          + f"  ({elapsed:.1f} s, ETA {eta:.0f} s)", flush=True)
  return state.params, last


# --------------------------------------------------------------------------
# Evaluation grid and KL divergences.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EvaluationGrid:
  """A cell-centred grid over [-half_width, half_width]^2 and the oracle masses.

  Attributes:
    edges: (n + 1,) cell edges along each axis.
    centers: (n, n, 2) cell centres, [i, j] = (x1_j, x2_i) (image layout).
    cell_area: h^2.
    p_mass: (n, n) probability of each cell under p(x) = 1 / (4 pi |x|),
      |x| <= 2; sums to 1.
    u_mass: (n, n) probability of each cell under U(x) = 1 / (4 pi), |x| <= 2;
      sums to 1.
  """

  edges: np.ndarray
  centers: np.ndarray
  cell_area: float
  p_mass: np.ndarray
  u_mass: np.ndarray


def _inverse_radius_integral(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """int_0^x int_0^y du dv / sqrt(u^2 + v^2) (signed), elementwise, float64.

  = X asinh(Y / X) + Y asinh(X / Y) for X = |x|, Y = |y|, times sign(x y);
  0 when x or y is 0.
  """
  ax, ay = np.abs(x), np.abs(y)
  with np.errstate(divide="ignore", invalid="ignore"):
    value = (np.where(ax > 0, ax * np.arcsinh(ay / np.where(ax > 0, ax, 1.0)),
                      0.0)
             + np.where(ay > 0, ay * np.arcsinh(ax / np.where(ay > 0, ay, 1.0)),
                        0.0))
  return np.sign(x) * np.sign(y) * value


@functools.lru_cache(maxsize=4)
def evaluation_grid(*, cells: int = 600, half_width: float = ANOMALOUS_RADIUS,
                    subsamples: int = 32) -> EvaluationGrid:
  """Grid over [-3, 3]^2 and the exact cell masses of p and U.

  The normal density p(x) = 1 / (4 pi r) has an integrable singularity at the
  origin, so it is never evaluated at a point. Instead each cell gets its exact
  probability: the integral of 1/r over a rectangle has the closed form of
  ``_inverse_radius_integral`` (evaluated at the cell corners), which is
  exact for cells inside the disc r <= 2. For cells that the circle r = 2
  crosses, the part of the cell outside the disc (where 1/r is smooth, r > 2)
  is subtracted with a ``subsamples`` x ``subsamples`` midpoint rule. U's
  masses are the cells' areas inside the disc, by the same midpoint rule on
  the crossed cells. Both mass arrays are then renormalized to sum to 1 (the
  correction is below 1e-5 for the default grid).
  """
  n = cells
  edges = np.linspace(-half_width, half_width, n + 1)
  h = edges[1] - edges[0]
  mid = 0.5 * (edges[1:] + edges[:-1])
  x1, x2 = np.meshgrid(mid, mid)
  centers = np.stack([x1, x2], axis=-1)
  # Exact integral of 1/r over every cell (rows: x2, columns: x1).
  ex1, ex2 = np.meshgrid(edges, edges)
  corner = _inverse_radius_integral(ex1, ex2)
  inv_r = corner[1:, 1:] - corner[1:, :-1] - corner[:-1, 1:] + corner[:-1, :-1]
  # Classify cells: inside (all corners in the disc), outside, crossed.
  corner_r2 = ex1**2 + ex2**2
  far_r2 = np.maximum.reduce([corner_r2[1:, 1:], corner_r2[1:, :-1],
                              corner_r2[:-1, 1:], corner_r2[:-1, :-1]])
  near1 = np.clip(0.0, edges[:-1], edges[1:])
  nx1, nx2 = np.meshgrid(near1, near1)
  near_r2 = nx1**2 + nx2**2
  radius2 = NORMAL_RADIUS**2
  inside = far_r2 <= radius2
  crossed = ~inside & (near_r2 < radius2)
  p_mass = np.where(inside, inv_r, 0.0)
  u_mass = np.where(inside, h * h, 0.0)
  rows, cols = np.nonzero(crossed)
  offsets = (np.arange(subsamples) + 0.5) / subsamples * h
  s1 = edges[:-1][cols][:, None, None] + offsets[None, None, :]
  s2 = edges[:-1][rows][:, None, None] + offsets[None, :, None]
  r = np.sqrt(s1**2 + s2**2)
  sub_area = (h / subsamples)**2
  outside_inv_r = np.sum(np.where(r > NORMAL_RADIUS, 1.0 / r, 0.0),
                         axis=(1, 2)) * sub_area
  p_mass[rows, cols] = inv_r[rows, cols] - outside_inv_r
  u_mass[rows, cols] = np.sum(r <= NORMAL_RADIUS, axis=(1, 2)) * sub_area
  p_mass = p_mass / (4.0 * np.pi)
  u_mass = u_mass / (4.0 * np.pi)
  p_mass, u_mass = p_mass / p_mass.sum(), u_mass / u_mass.sum()
  for array in (edges, centers, p_mass, u_mass):
    array.setflags(write=False)
  return EvaluationGrid(edges=edges, centers=centers, cell_area=float(h * h),
                        p_mass=p_mass, u_mass=u_mass)


def log_q(scores: np.ndarray, *, cell_area: float) -> np.ndarray:
  """ln q_theta(x) = -A(x) - ln Z (eq. 6), Z = h^2 sum_cells exp(-A) (float64).

  ``scores`` are A at the cell centres of the whole grid; +inf gives q = 0.
  """
  neg = -np.asarray(scores, np.float64)
  peak = np.max(neg)
  log_z = peak + np.log(np.sum(np.exp(neg - peak)) * cell_area)
  return neg - log_z


def kl_divergences(scores: np.ndarray,
                   grid: EvaluationGrid) -> dict[str, float]:
  """D(p || q_theta) and D(U || q_theta) of Table 1 on ``grid``.

  D(f || q) = int f ln f - int f ln q, with the first term in closed form
  (``NEG_ENTROPY_P``, ``NEG_ENTROPY_U``) and the cross-entropy as
  sum_cells F_cell ln q(centre), where F_cell is f's exact cell mass
  (``evaluation_grid``) and q = exp(-A) / Z is normalized on the grid (eq. 6).
  ln q is smooth, so this midpoint rule converges as the grid is refined, and
  the 1/r singularity of p only enters through exact cell masses.

  Args:
    scores: (n, n) anomaly scores A(x) at ``grid.centers``.
    grid: from ``evaluation_grid``.

  Returns:
    {"kld_p_q": D(p || q), "kld_u_q": D(U || q)} in nats.
  """
  lq = log_q(scores, cell_area=grid.cell_area)

  def cross_entropy(mass):
    with np.errstate(invalid="ignore"):
      return -float(np.sum(np.where(mass > 0, mass * lq, 0.0)))

  return {"kld_p_q": NEG_ENTROPY_P + cross_entropy(grid.p_mass),
          "kld_u_q": NEG_ENTROPY_U + cross_entropy(grid.u_mass)}


@jax.jit
def _scores(params, x: jax.Array) -> jax.Array:
  return models.score_fn(models.VerificationAE())(params, x)


def grid_scores(params, grid: EvaluationGrid) -> np.ndarray:
  """A(x) (eq. 5) at every cell centre of ``grid`` -> (n, n) float64."""
  flat = grid.centers.reshape(-1, DIM).astype(np.float32)
  return np.asarray(_scores(params, flat), np.float64).reshape(
      grid.centers.shape[:2])


def line_scores(params, x1: np.ndarray) -> np.ndarray:
  """A(x) along the line x2 = 0 through the origin (Fig. 3)."""
  x = np.stack([x1, np.zeros_like(x1)], axis=-1).astype(np.float32)
  return np.asarray(_scores(params, x), np.float64)


def score_summary(scores: np.ndarray,
                  grid: EvaluationGrid) -> dict[str, float]:
  """Max of A over grid cells with r <= 2, and mean of A over 2 < r <= 3."""
  r = np.linalg.norm(grid.centers, axis=-1)
  normal = r <= NORMAL_RADIUS
  anomalous = (r > NORMAL_RADIUS) & (r <= ANOMALOUS_RADIUS)
  return {"max_score_normal": float(scores[normal].max()),
          "mean_score_normal": float(scores[normal].mean()),
          "mean_score_anomalous": float(scores[anomalous].mean())}


# --------------------------------------------------------------------------
# Outputs.
# --------------------------------------------------------------------------


def format_table(results: Mapping[str, Any]) -> str:
  """Table 1 of the run (mean +- std over seeds) beside the paper's."""
  seeds = len(results["seeds"])
  spread = "(mean +- std)" if seeds > 1 else "(no spread with one seed)"
  lines = [f"KL divergences, {results['settings']['updates']} updates, "
           f"{seeds} seed(s) {spread}, paper's Table 1 beside:",
           f"{'method':<7}{'D(p||q)':>18}{'paper':>8}"
           f"{'D(U||q)':>18}{'paper':>8}"]
  for m, r in results["methods"].items():
    row = f"{m.upper():<7}"
    for key in ("kld_p_q", "kld_u_q"):
      std = f" +- {r[key + '_std']:.3f}" if seeds > 1 else " " * 9  # one seed: no std
      row += f"{r[key]:>10.3f}{std}{results['paper'][m][key]:>8.3f}"
    lines.append(row)
  return "\n".join(lines)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
  values = np.asarray(values, np.float64)
  std = float(values.std(ddof=1)) if values.size > 1 else 0.0
  return float(values.mean()), std


def train_and_evaluate(config: RingConfig, workdir: str | os.PathLike, *,
                       seeds: Sequence[int] = (0,)) -> dict[str, Any]:
  """Runs the verification experiment for each seed and writes the outputs.

  Writes, atomically, to ``workdir``: ``results.json`` (per-method mean and
  sample standard deviation of both KLDs over seeds, every seed's values, the
  paper's Table 1 and the settings), ``fig2_pdf.png`` and ``fig3_scores.png``
  (both for the first seed).

  Returns:
    The content of ``results.json``.
  """
  workdir = pathlib.Path(workdir)
  logging.info("devices: %s; methods %s, %d seed(s), %d updates",
               jax.devices(), config.methods, len(seeds), config.updates)
  start = time.perf_counter()
  grid = evaluation_grid(cells=config.grid_cells)
  per_seed = {m: [] for m in config.methods}
  first_params, first_scores = None, {}
  for i, seed in enumerate(seeds):
    params, final_loss = train(seed, config=config, progress=(i, len(seeds)))
    for m in config.methods:
      scores = grid_scores(params[m], grid)
      per_seed[m].append({"seed": int(seed), **kl_divergences(scores, grid),
                          **score_summary(scores, grid),
                          "final_loss": final_loss[m]})
      logging.info("seed %d %s: D(p||q)=%.4f D(U||q)=%.4f", seed, m,
                   per_seed[m][-1]["kld_p_q"], per_seed[m][-1]["kld_u_q"])
      if first_params is None:
        first_scores[m] = scores
    if first_params is None:
      first_params = params
  methods = {}
  for m, rows in per_seed.items():
    entry = {}
    for key in ("kld_p_q", "kld_u_q"):
      entry[key], entry[f"{key}_std"] = _mean_std([r[key] for r in rows])
    entry["per_seed"] = rows
    methods[m] = entry
  results = {
      "methods": methods,
      "paper": {m: PAPER_TABLE1[m] for m in config.methods},
      "seeds": [int(s) for s in seeds],
      "settings": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in dataclasses.asdict(config).items()},
      "wall_time_s": time.perf_counter() - start,
  }
  fileio.write_json(workdir / "results.json", results)
  # The figures show one model per method: the first seed's, said on them.
  note = (f"seed {seeds[0]} of {len(seeds)} (the KLDs of results.json are the seeds' mean)"
          if len(seeds) > 1 else f"seed {seeds[0]}")
  plots.plot_ring_densities(
      workdir / "fig2_pdf.png",
      {m: np.exp(log_q(s, cell_area=grid.cell_area)) for m, s in first_scores.items()},
      extent=(grid.edges[0], grid.edges[-1]), normal_radius=NORMAL_RADIUS, note=note)
  x1 = np.linspace(-ANOMALOUS_RADIUS, ANOMALOUS_RADIUS, 601)
  plots.plot_ring_line_scores(workdir / "fig3_scores.png", x1,
                              {m: line_scores(first_params[m], x1) for m in config.methods},
                              anomalous_band=(NORMAL_RADIUS, ANOMALOUS_RADIUS), note=note)
  print(f"Wrote {workdir} in {time.perf_counter() - start:.1f} s (results.json, "
        "fig2_pdf.png, fig3_scores.png)", flush=True)
  return results


def run(settings: Settings) -> dict[str, Any]:
  """Checks ``--workdir`` (created if missing) and runs ``train_and_evaluate``
  for seeds 0 .. ``settings.seeds`` - 1.

  Raises:
    cli.WorkdirError: ``--workdir`` cannot be created or written.
    train.NonFiniteLossError: a method's loss became NaN or infinite.
    OSError: an output file could not be written (naming it).

  Returns:
    The content of ``results.json``.
  """
  cli.make_workdir(settings.workdir)
  check_earlier_results(settings.workdir, settings.ring_config())
  return train_and_evaluate(settings.ring_config(), settings.workdir,
                            seeds=range(settings.seeds))


def check_earlier_results(workdir: str | os.PathLike, config: RingConfig) -> None:
  """Before any work: refuses a ``workdir`` whose ``results.json`` is not this
  experiment's (another experiment's workdir would get this one's results and
  figures), and warns that an earlier run's results of methods this run does not
  train are replaced (each run's file holds its own methods: ``--loss=all``
  trains all three in one run, from the same initial parameters).

  Raises:
    cli.WorkdirError: naming the file.
  """
  path = os.path.join(os.fspath(workdir), "results.json")
  if not os.path.exists(path):
    return
  try:
    with open(path, encoding="utf-8") as f:
      stored = json.load(f)
  except (OSError, ValueError):
    stored = None
  if not (isinstance(stored, dict) and isinstance(stored.get("methods"), dict)
          and isinstance(stored.get("settings"), dict) and "grid_cells" in stored["settings"]):
    raise cli.WorkdirError(
        f"--workdir={workdir}: its results.json is not a verification experiment's (another "
        "experiment's workdir, or a damaged file); give another --workdir")
  replaced = [m for m in stored["methods"] if m not in config.methods]
  if replaced:
    logging.warning("%s: an earlier run's results of %s are replaced by this run's, which "
                    "holds %s only (--loss=all trains the three methods in one run)", path,
                    ", ".join(m.upper() for m in replaced),
                    ", ".join(m.upper() for m in config.methods))
