"""The training step of section 4.2: in-step batch synthesis, RE/SNP/BU loss, AMSGrad.

One pure step ``(state, corpus) -> (state, metrics)``, jitted once with the
state donated:

1. keys: ``step_key = fold_in(seed_key, step)`` and, for global mixture ``i``,
   ``fold_in(step_key, i)`` (``bu_jax.batch``), so the batch does not depend
   on the number of devices and a resumed run draws the same batches;
2. ``mixtures_per_step`` mixtures of ``segments_per_mixture`` normal segments
   with one something-else clip each at a random ANR (section 4.2.1, eq. 8),
   featurized, with a mask of the anomalous frames;
3. per-frame scores A(x) (eq. 5) of all frames, and the loss chosen by name:
   ``re`` (eq. 7), ``snp`` (eq. 9) or ``bu`` (eq. 16);
4. gradients and an AMSGrad update (section 4.2.2).

Data parallel: ``jax.jit`` of a ``jax.shard_map`` over the ``'data'`` axis of a
1-D mesh. Each device synthesizes and scores its share of the mixtures; the
parameters, optimizer state and corpus are replicated; every mean, the KDE and
the BU normalizer run over the global batch (``axis_name``), so loss, gradients
and parameters equal the single-device ones up to floating-point rounding.

RE (the conventional AE of Fig. 1) trains on the concatenated normal segments
without an added clip: every frame is normal. SNP and BU use the mixtures.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Mapping, Optional, Union

from absl import logging
import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P
import numpy as np
import optax

from bu_jax import batch as batch_lib
from bu_jax import features as features_lib
from bu_jax import fileio
from bu_jax import kde
from bu_jax import losses
from bu_jax import models
from bu_jax import parallel
from bu_jax import progress as progress_lib

LOSSES = losses.LOSSES  # ("re", "snp", "bu")
COMPUTE_DTYPES = ("float32", "bfloat16")
BANDWIDTHS = ("fixed", "contrast")
KDE_EXCLUDE = ("none", "segment")
# The settings a loss does not read: eq. (7) has no simulated anomaly and no
# weights, eq. (9) no weights. A model trained with any value of them is the
# same model (``runner.check_resumable`` does not compare them).
_WEIGHT_SETTINGS = ("sigma", "bandwidth", "kde_memory", "kde_memory_rows", "kde_exclude", "eps",
                    "tilt")
UNUSED_SETTINGS = {
    "re": ("anr_range_db", "max_clip_seconds", "lam") + _WEIGHT_SETTINGS,
    "snp": _WEIGHT_SETTINGS,
    "bu": (),
}
MAX_STEPS = 2**31 - 1  # optax's schedules count steps in int32
# BU's kde_memory x kde_memory_rows: 0.46 GB of frames at D = 440, and each batch's pairwise
# distances to them grow with it (a 100,000-step memory asked for 45 GB and hung the machine).
MAX_MEMORY_FRAMES = 262144
CompilerOptions = Optional[Mapping[str, Any]]


# ------------------------------------------------------------------ config


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Training hyperparameters; the defaults are the paper's (sections 4.2.1-4.2.2).

  Attributes:
    loss: "re" (eq. 7), "snp" (eq. 9) or "bu" (eq. 16).
    model: a preset name of ``models.PRESETS`` or a ``models.ModelPreset``.
    learning_rate: initial AMSGrad learning rate (1e-4).
    epochs: training length in epochs (200); ``epochs`` x ``steps_per_epoch``
      is at most ``MAX_STEPS``.
    steps_per_epoch: mini-batches per epoch (500).
    decay_start_epoch: the rate is constant for this many epochs (100), then
      decays linearly to ``final_lr_factor`` times itself at ``epochs``.
    final_lr_factor: 1/100.
    segment_seconds: length of a normal segment (3 s); the corpus must match.
    segments_per_mixture: normal segments concatenated per mixture (10).
    mixtures_per_step: mixtures per global mini-batch (1); a multiple of the
      number of devices.
    max_clip_seconds: longest something-else clip (5 s); longer ones are
      rejected.
    anr_range_db: the uniform ANR range of the added clip, dB ((-30, 10)).
    sigma: KDE band-width sigma of eq. (15); None: 1/(2D).
    bandwidth: "fixed" (the paper: ``sigma`` in every batch) or "contrast":
      per batch, ``sigma`` times the factor of ``kde.CONTRAST_FACTORS`` at
      which the batch's log-densities vary most (``kde.contrast_sigma``; no
      labels involved). BU only.
    kde_memory: BU only; 0 (the paper) or the number of recent steps whose
      normal frames (``kde_memory_rows`` evenly spaced ones per step) the KDE
      also sums over (``kde.kde_weights_with_memory``); kept in the train
      state (and its checkpoints), the same on every device.
    kde_memory_rows: rows remembered per step; ``kde_memory`` x
      ``kde_memory_rows`` is at most ``MAX_MEMORY_FRAMES``.
    kde_exclude: BU only; "none" (eq. 15) or "segment": a frame's KDE sum
      skips the other frames of its own 3-s normal segment (``kde_density``'s
      ``groups``), so only recurrence in other recordings makes it common.
    tilt: BU only; 0 (the paper) or t > 0: eq. (16)'s weights are multiplied
      by ``losses.tilted_weights`` (exp(t (A_i - max A) / mean A)), leaning the
      normal term towards the frames the model fits worst (section 3.1's
      maximum, smoothed).
    segment_sampling: 0 (the paper: normal segments drawn uniformly) or a
      temperature t > 0: segment s is drawn with probability proportional to
      K(s)^(-t), K eq. (15) over the segments' mean feature vectors at the
      band-width ``kde.contrast_sigma`` picks (``segment_probabilities``):
      eq. (16)'s reciprocal density applied to the draw, so rare-mode segments
      fill more of each batch. Any loss.
    lam: clipping parameter lambda of eq. (10); None: 2M (M mel bands).
    eps: epsilon of the BU weight 1/(K + eps) (eq. 16).
    seed: seeds the parameter initialization and every batch; in [0, 2**32).
    steps_per_call: steps run per device call by ``train`` (``lax.scan``); it
      changes the speed, not the results.
    compute_dtype: "float32" (default) or "bfloat16": the autoencoder's
      matrix products in the training step. Parameters, optimizer state,
      features, the decoder's output layer, the per-frame scores (eq. 5,
      summed in float32) and the KDE stay float32. bfloat16 is for GPUs/TPUs; on CPU it is slower.
  """

  loss: str = "bu"
  model: Union[str, models.ModelPreset] = "fcn64-large"
  learning_rate: float = 1e-4
  epochs: int = 200
  steps_per_epoch: int = 500
  decay_start_epoch: int = 100
  final_lr_factor: float = 0.01
  segment_seconds: float = 3.0
  segments_per_mixture: int = 10
  mixtures_per_step: int = 1
  max_clip_seconds: float = 5.0
  anr_range_db: tuple[float, float] = (-30.0, 10.0)
  sigma: Optional[float] = None
  bandwidth: str = "fixed"
  kde_memory: int = 0
  kde_memory_rows: int = 256
  kde_exclude: str = "none"
  tilt: float = 0.0
  segment_sampling: float = 0.0
  lam: Optional[float] = None
  eps: float = 1e-6
  seed: int = 0
  steps_per_call: int = 1
  compute_dtype: str = "float32"

  def __post_init__(self):
    if self.loss not in LOSSES:
      raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
    if isinstance(self.model, str):
      models.preset(self.model)  # raises for an unknown name
    if self.bandwidth not in BANDWIDTHS:
      raise ValueError(f"bandwidth must be one of {BANDWIDTHS}, got {self.bandwidth!r}")
    if self.compute_dtype not in COMPUTE_DTYPES:
      raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got "
                       f"{self.compute_dtype!r}")
    if self.kde_exclude not in KDE_EXCLUDE:
      raise ValueError(f"kde_exclude must be one of {KDE_EXCLUDE}, got {self.kde_exclude!r}")
    if self.kde_memory < 0:
      raise ValueError(f"kde_memory must be >= 0, got {self.kde_memory}")
    for name in ("epochs", "steps_per_epoch", "segments_per_mixture", "mixtures_per_step",
                 "steps_per_call", "kde_memory_rows"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if not 0 <= self.decay_start_epoch <= self.epochs:
      raise ValueError(f"decay_start_epoch must lie in [0, epochs={self.epochs}], got "
                       f"{self.decay_start_epoch}")
    for name, low_ok, none_ok in (  # (field, smallest value allowed or None for > 0, None allowed)
        ("learning_rate", None, False), ("final_lr_factor", 0.0, False),
        ("segment_seconds", None, False), ("max_clip_seconds", None, False),
        ("sigma", None, True), ("lam", None, True), ("eps", 0.0, False),
        ("tilt", 0.0, False), ("segment_sampling", 0.0, False)):
      value = getattr(self, name)
      if value is None and none_ok:
        continue
      number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
          value, (bool, np.bool_))
      if not (number and math.isfinite(value)
              and (value > 0 if low_ok is None else value >= low_ok)):
        raise ValueError(f"{name} must be a finite number {'> 0' if low_ok is None else '>= 0'}"
                         f"{' or None' if none_ok else ''}, got {value!r}")
    for name in ("learning_rate", "sigma", "lam", "eps", "tilt",
                 "segment_sampling"):  # float32: 1e-50 is 0 there
      if getattr(self, name) is not None:
        kde._check_hyperparameter(name, getattr(self, name),
                                  allow_zero=name in ("eps", "tilt", "segment_sampling"))
    if self.total_steps > MAX_STEPS:
      raise ValueError(f"epochs x steps_per_epoch = {self.epochs} x {self.steps_per_epoch} = "
                       f"{self.total_steps} steps; at most {MAX_STEPS}")
    if not (isinstance(self.seed, (int, np.integer)) and not isinstance(self.seed, bool)
            and 0 <= self.seed < 2**32):
      raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
    if self.loss == "bu" and self.kde_memory * self.kde_memory_rows > MAX_MEMORY_FRAMES:
      raise ValueError(
          f"kde_memory x kde_memory_rows = {self.kde_memory} x {self.kde_memory_rows} = "
          f"{self.kde_memory * self.kde_memory_rows} remembered frames; at most "
          f"{MAX_MEMORY_FRAMES} (the memory and its pairwise distances to each batch grow "
          "with it)")
    low, high = self.anr_range_db
    if not (math.isfinite(low) and math.isfinite(high)):
      raise ValueError(f"anr_range_db must be finite, got {self.anr_range_db}")
    if not low <= high:
      raise ValueError(f"anr_range_db must be (low, high) with low <= high, got "
                       f"{self.anr_range_db}")
    if self.segment_length < 1:
      raise ValueError(f"segment_seconds={self.segment_seconds} gives no samples")
    object.__setattr__(self, "anr_range_db", (float(low), float(high)))

  @property
  def model_preset(self) -> models.ModelPreset:
    return models.preset(self.model) if isinstance(self.model, str) else self.model

  def build_model(self):
    """The configured autoencoder, computing in ``compute_dtype``."""
    dtype = None if self.compute_dtype == "float32" else jnp.dtype(self.compute_dtype)
    return self.model_preset.build(dtype=dtype)

  @property
  def feature_config(self):
    return self.model_preset.features

  @property
  def sample_rate(self) -> int:
    return self.feature_config.sample_rate

  @property
  def segment_length(self) -> int:
    """Samples per normal segment."""
    return int(round(self.segment_seconds * self.feature_config.sample_rate))

  @property
  def mixture_length(self) -> int:
    return self.segments_per_mixture * self.segment_length

  @property
  def frames_per_mixture(self) -> int:
    return self.feature_config.num_frames(self.mixture_length)

  @property
  def total_steps(self) -> int:
    return self.epochs * self.steps_per_epoch

  @property
  def loss_hyperparameters(self) -> dict[str, float]:
    """sigma and lambda, with the paper's values where not set.

    With ``standardize_input`` the scores are in units of the feature
    variance and lambda = 2M saturates eq. (10)'s tanh (L_a constant); lambda
    = D (``lam=``) then activates L_a, which helped on one real-recording set
    and collapsed detection on the embedded synthetic set (README, "Real
    recordings"), so the default stays the paper's.
    """
    feat = self.feature_config
    paper = losses.paper_hyperparameters(dim=feat.dim, n_mels=feat.n_mels)
    return {"sigma": paper["sigma"] if self.sigma is None else float(self.sigma),
            "lam": paper["lam"] if self.lam is None else float(self.lam)}


# ------------------------------------------------------------------ optimizer and state


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
  """Constant for ``decay_start_epoch`` epochs, then linear to ``final_lr_factor`` x.

  Paper: 1e-4 for epochs 0-100, linear decay to 1e-6 at epoch 200 (and 1e-6
  after that).
  """
  lr = config.learning_rate
  boundary = config.decay_start_epoch * config.steps_per_epoch
  decay_steps = (config.epochs - config.decay_start_epoch) * config.steps_per_epoch
  return optax.join_schedules(
      [optax.constant_schedule(lr),
       optax.linear_schedule(lr, lr * config.final_lr_factor, max(decay_steps, 1))],
      boundaries=[boundary])


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
  """AMSGrad (section 4.2.2) with ``learning_rate_schedule``.

  Wrapped in ``optax.flatten``: the moments are single flat vectors, so the
  update is a few large kernels instead of a few per parameter array (it
  matters for the small, overhead-bound models); the result is identical.
  """
  return optax.flatten(optax.amsgrad(learning_rate_schedule(config)))


@flax.struct.dataclass
class TrainState:
  """Everything that evolves during training; the RNG is derived from seed and step."""

  step: jax.Array  # int32 scalar: number of updates applied
  params: Any
  opt_state: Any


@flax.struct.dataclass
class MemoryTrainState:
  """``TrainState`` plus BU's KDE memory (``TrainConfig.kde_memory`` > 0).

  A separate class, so that states (and checkpoints) of every other
  configuration keep exactly the fields they always had.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  memory: Any  # recent normal frames (``init_memory``)


def _keys(seed: int) -> tuple[jax.Array, jax.Array]:
  """(initialization key, seed key of the batches) of ``seed``."""
  init_key, seed_key = jax.random.split(jax.random.key(seed))
  return init_key, seed_key


def step_key(seed: int, step) -> jax.Array:
  """The key of a step's batch, ``fold_in(seed_key, step)``."""
  return jax.random.fold_in(_keys(seed)[1], step)


def init_params(config: TrainConfig) -> Any:
  """Glorot-initialized parameters of the configured autoencoder."""
  model = config.build_model()  # parameters are float32 whatever the compute dtype
  dummy = jnp.zeros((1, config.feature_config.dim), jnp.float32)
  return model.init(_keys(config.seed)[0], dummy)["params"]


def create_state(config: TrainConfig, *, mesh: Mesh,
                 compiler_options: CompilerOptions = None) -> TrainState:
  """The initial state (step 0), built by one jitted call, replicated on ``mesh``."""
  config = dataclasses.replace(config, steps_per_call=1)  # one compiled init per setup
  return _init_fn(config, mesh, _frozen(compiler_options))()


@functools.lru_cache(maxsize=8)
def _init_fn(config: TrainConfig, mesh: Mesh, compiler_options: Optional[tuple]) -> Callable:

  def init():
    params = init_params(config)
    step = jnp.zeros((), jnp.int32)
    opt_state = make_optimizer(config).init(params)
    memory = init_memory(config)
    if memory is None:
      return TrainState(step=step, params=params, opt_state=opt_state)
    return MemoryTrainState(step=step, params=params, opt_state=opt_state, memory=memory)

  return jax.jit(init, out_shardings=parallel.replicated(mesh),
                 compiler_options=None if compiler_options is None else dict(compiler_options))


def place_corpus(segments, clips=None, clip_lengths=None, *, mesh: Mesh,
                 config: Optional[TrainConfig] = None) -> batch_lib.Corpus:
  """Checks the training corpus and replicates it on ``mesh`` (once per run).

  Args:
    segments: (S, L) normal segments.
    clips: (E, Lmax) zero-padded something-else clips (None: RE only).
    clip_lengths: (E,) their lengths.
    mesh: the 'data' mesh.
    config: when given, also checks L against ``config.segment_seconds`` and
      Lmax against ``config.max_clip_seconds``, and sets the segments' draw
      probabilities of ``config.segment_sampling`` (``sampled_corpus``).
  """
  corpus = batch_lib.make_corpus(segments, clips, clip_lengths,
                                 sharding=parallel.replicated(mesh))
  if config is not None:
    corpus = sampled_corpus(config, corpus)
    check_corpus(config, corpus)
  return corpus


def segment_summaries(segments: jax.Array, *, config: TrainConfig) -> jax.Array:
  """(S, D): each normal segment's mean feature vector over its interior frames."""
  feat = config.feature_config
  inner = feat.interior(int(segments.shape[-1]))
  return _segment_summaries_jit(jnp.asarray(segments, jnp.float32), feat, inner.start,
                                inner.stop)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _segment_summaries_jit(segments, feat, start, stop):
  return jax.lax.map(lambda w: jnp.mean(features_lib.features(w, config=feat)[start:stop], axis=0),
                     segments)


def segment_probabilities(config: TrainConfig, corpus: batch_lib.Corpus) -> Optional[np.ndarray]:
  """The segments' draw probabilities for ``config.segment_sampling`` (None: uniform).

  Eq. (15) over the segments' summaries (``segment_summaries``), standardized
  per dimension, at the band-width ``kde.contrast_sigma`` picks from 1/(2D)
  (no labels), then ``kde.sampling_probabilities`` at temperature
  ``config.segment_sampling``. A pure function of the corpus and the config.
  """
  if not config.segment_sampling:
    return None
  summaries = segment_summaries(corpus.segments, config=config)
  feat = config.feature_config
  paper_sigma = losses.paper_hyperparameters(dim=feat.dim, n_mels=feat.n_mels)["sigma"]
  sigma = kde.contrast_sigma(summaries, base_sigma=paper_sigma,
                             probe_rows=int(summaries.shape[0]))
  return np.asarray(jax.device_get(kde.sampling_probabilities(
      summaries, sigma=sigma, temperature=config.segment_sampling)))


def sampled_corpus(config: TrainConfig, corpus: batch_lib.Corpus) -> batch_lib.Corpus:
  """``corpus`` drawing its segments as ``config.segment_sampling`` asks.

  ``train`` applies it to every corpus it is given (a tenth of a second for
  300 segments), so a corpus placed for another config cannot carry another
  temperature's draw into a run. ``make_train_step`` and ``make_grad_fn`` take
  the corpus as given; they check only that it draws by probabilities exactly
  when the config asks for it.
  """
  return batch_lib.with_segment_probabilities(corpus, segment_probabilities(config, corpus))


def check_corpus(config: TrainConfig, corpus: batch_lib.Corpus) -> None:
  """Static checks of ``corpus`` against ``config``; raises ValueError."""
  if bool(config.segment_sampling) != (corpus.segment_cdf is not None):
    raise ValueError(
        f"segment_sampling={config.segment_sampling} but the corpus draws its segments "
        f"{'uniformly' if corpus.segment_cdf is None else 'by probabilities'}: pass "
        "train.sampled_corpus(config, corpus) (train() does this itself)")
  seg_len = int(corpus.segments.shape[1])
  if seg_len != config.segment_length:
    raise ValueError(f"corpus segments have {seg_len} samples, but segment_seconds="
                     f"{config.segment_seconds} means {config.segment_length}")
  num_clips, max_len = corpus.clips.shape
  if config.loss != "re":
    if num_clips == 0:
      raise ValueError(f"loss {config.loss!r} needs something-else clips; the corpus has none")
    limit = int(round(config.max_clip_seconds * config.sample_rate))
    if max_len > limit:
      raise ValueError(f"something-else clips are padded to {max_len} samples > "
                       f"max_clip_seconds={config.max_clip_seconds} ({limit} samples)")
    if max_len > config.mixture_length:
      raise ValueError(f"something-else clips of {max_len} samples do not fit in a mixture of "
                       f"{config.mixture_length} samples")


# ------------------------------------------------------------------ the loss


def loss_by_name(loss: str, scores_u: jax.Array, scores_a: Optional[jax.Array] = None, *,
                 lam: float, weights: Optional[jax.Array] = None,
                 mask_u: Optional[jax.Array] = None, mask_a: Optional[jax.Array] = None,
                 axis_name: Optional[str] = None) -> tuple[jax.Array, jax.Array]:
  """The loss chosen by name, with its normal term: eqs. (7), (9) or (16).

  The one dispatch of every training loop (this module's step and
  ``bu_jax.ring``'s). BU takes its weights w_i from the caller (eq. 15's
  ``kde.kde_weights`` or a variant: contrast band-width, memory, groups).

  Args:
    loss: "re" (eq. 7), "snp" (eq. 9) or "bu" (eq. 16).
    scores_u: (M_u,) anomaly scores A(x) (eq. 5) of the normal frames.
    scores_a: (M_a,) scores of the (simulated) anomalous frames; unused
      (may be None) for "re".
    lam: lambda of eq. (10); unused for "re".
    weights: (M_u,) BU weights w_i (eq. 16); required for "bu".
    mask_u, mask_a: optional validity masks of the normal / anomalous frames.
    axis_name: mesh axis inside ``jax.shard_map``, or None.

  Returns:
    ``(loss, normal)``: float32 scalars, the loss and its normal term (the
    mean, or for BU the weighted mean, of the normal frames' scores).

  Raises:
    ValueError: an unknown ``loss``, "snp" or "bu" without ``scores_a``, "bu"
      without ``weights``, or an out-of-range ``lam``.
  """
  if loss not in LOSSES:
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
  if loss != "re" and scores_a is None:
    raise ValueError(f"loss {loss!r} needs scores_a, the anomalous frames' scores (eq. 10's "
                     "L_a); only 're' has none")
  if loss == "bu":
    if weights is None:
      raise ValueError("loss 'bu' needs weights (kde.kde_weights)")
    return losses.bu_loss_from_weights(scores_u, scores_a, weights, lam=lam, mask_u=mask_u,
                                       mask_a=mask_a, axis_name=axis_name)
  normal = losses.re_loss(scores_u, mask_u=mask_u, axis_name=axis_name)
  if loss == "re":
    return normal, normal
  return losses.snp_loss(scores_u, scores_a, lam=lam, mask_u=mask_u, mask_a=mask_a,
                         axis_name=axis_name), normal


def _local_loss(params, step, corpus: batch_lib.Corpus, memory, *, config: TrainConfig,
                mixtures_per_device: int):
  """Loss, metrics and the next KDE memory (None without one) inside ``shard_map``:
  this device's mixtures, global reductions."""
  axis = parallel.DATA_AXIS
  feat = config.feature_config
  hyper = config.loss_hyperparameters
  model = config.build_model()

  first = jax.lax.axis_index(axis) * mixtures_per_device
  keys = batch_lib.mixture_keys(step_key(config.seed, step),
                                first + jnp.arange(mixtures_per_device))
  batch = batch_lib.make_batch(
      keys, corpus, feature_config=feat, segments_per_mixture=config.segments_per_mixture,
      anr_range_db=config.anr_range_db, simulate_anomaly=config.loss != "re")
  num_frames = batch.frames.shape[-2]
  x = batch.frames.reshape(-1, feat.dim)
  anomalous = batch.anomalous_mask.reshape(-1)
  normal = batch.normal_mask.reshape(-1)
  scores = models.score_fn(model)(params, x)

  count_u = jax.lax.psum(jnp.sum(normal, dtype=jnp.float32), axis)
  count_a = jax.lax.psum(jnp.sum(anomalous, dtype=jnp.float32), axis)
  la = losses.anomaly_term(scores, lam=hyper["lam"], mask_a=anomalous, axis_name=axis)
  if config.loss == "bu":
    # The KDE runs on a buffer of the normal frames only (static size: the most
    # normal frames a mixture can have), not on all frames with a mask.
    fewest_anomalous = batch_lib.min_anomalous_frames(
        config.mixture_length, corpus.min_clip_length, config=feat)
    capacity = mixtures_per_device * (num_frames - fewest_anomalous)
    (rows,) = jnp.nonzero(normal, size=capacity, fill_value=0)
    valid = jnp.arange(capacity) < jnp.sum(normal)
    sigma = hyper["sigma"]
    groups = None
    if config.kde_exclude == "segment":  # the normal segment each frame comes from
      mixture = first + rows // num_frames
      segment = jnp.minimum((rows % num_frames) * feat.hop_length // config.segment_length,
                            config.segments_per_mixture - 1)
      groups = mixture * config.segments_per_mixture + segment
    if config.bandwidth == "contrast":
      sigma = kde.contrast_sigma(x[rows], base_sigma=sigma, mask=valid, axis_name=axis,
                                 groups=groups)
    if memory is None:
      weights = kde.kde_weights(x[rows], sigma=sigma, eps=config.eps, mask=valid,
                                axis_name=axis, groups=groups)
    else:
      weights = kde.kde_weights_with_memory(
          x[rows], memory["frames"], sigma=sigma, eps=config.eps, mask=valid,
          memory_mask=memory["valid"], axis_name=axis, groups=groups)
      frames, mem_valid = kde.memory_update(
          memory["frames"], memory["valid"], x[rows], slot=step,
          rows_per_slot=config.kde_memory_rows, mask=valid, axis_name=axis)
      memory = {"frames": frames, "valid": mem_valid}
    if config.tilt:
      weights = weights * losses.tilted_weights(scores[rows], tilt=config.tilt, mask_u=valid,
                                                axis_name=axis)
    loss, normal_term = loss_by_name("bu", scores[rows], scores, lam=hyper["lam"],
                                     weights=weights, mask_u=valid, mask_a=anomalous,
                                     axis_name=axis)
    stats = kde.weight_stats(weights, mask=valid, axis_name=axis)
    stats["sigma"] = jnp.asarray(sigma, jnp.float32)
  else:
    loss, normal_term = loss_by_name(config.loss, scores, scores, lam=hyper["lam"],
                                     mask_u=normal, mask_a=anomalous, axis_name=axis)
    one = jnp.ones((), jnp.float32)
    stats = {"w_max": one, "w_min": one, "ess": count_u, "sigma": jnp.zeros((), jnp.float32)}
  metrics = {"loss": loss, "normal": normal_term, "la": la, **stats,
             "frames_normal": count_u, "frames_anomalous": count_a}
  return loss, (jax.tree.map(jax.lax.stop_gradient, metrics), memory)


def _loss_and_grad_fn(config: TrainConfig, mesh: Mesh) -> Callable:
  """Unjitted ``(params, step, corpus, memory) -> ((loss, (metrics, memory)), grads)``."""
  per_device = parallel.check_divisible(config.mixtures_per_step, mesh)
  local = functools.partial(_local_loss, config=config, mixtures_per_device=per_device)
  sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P(), P()),
                          out_specs=(P(), (P(), P())))
  return jax.value_and_grad(sharded, has_aux=True)


def init_memory(config: TrainConfig) -> Optional[dict]:
  """An empty KDE memory ({"frames": (B, D), "valid": (B,)}) or None without one."""
  if config.loss != "bu" or not config.kde_memory:
    return None
  rows = config.kde_memory * config.kde_memory_rows
  return {"frames": jnp.zeros((rows, config.feature_config.dim), jnp.float32),
          "valid": jnp.zeros((rows,), jnp.bool_)}


def _check_inputs(config: TrainConfig, corpus: batch_lib.Corpus) -> None:
  if not isinstance(corpus, batch_lib.Corpus):
    raise TypeError(f"corpus must be a batch.Corpus (see place_corpus), got {type(corpus)}")
  check_corpus(config, corpus)


def _train_step_fn(config: TrainConfig, mesh: Mesh) -> Callable:
  """The pure step ``(state, corpus) -> (state, metrics)`` (unjitted)."""
  loss_and_grad = _loss_and_grad_fn(config, mesh)
  optimizer = make_optimizer(config)
  schedule = learning_rate_schedule(config)

  def train_step(state: TrainState, corpus: batch_lib.Corpus):
    _check_inputs(config, corpus)
    (_, (metrics, memory)), grads = loss_and_grad(state.params, state.step, corpus,
                                                  getattr(state, "memory", None))
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "grad_norm": optax.tree.norm(grads),
               "learning_rate": jnp.asarray(schedule(state.step), jnp.float32)}
    extra = {} if memory is None else {"memory": memory}
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              **extra)
    return new_state, metrics

  return train_step


def _frozen(options: CompilerOptions) -> Optional[tuple]:
  return None if options is None else tuple(sorted(options.items()))


def make_grad_fn(config: TrainConfig, *, mesh: Mesh,
                 compiler_options: CompilerOptions = None) -> Callable:
  """Jitted ``(params, step, corpus) -> ((loss, metrics), grads)``, no update.

  The global loss, metrics (as in ``make_train_step``, without ``grad_norm``
  and ``learning_rate``) and gradient for the batch of ``step``; for tests
  and diagnostics. Inputs must be replicated on ``mesh``.

  Raises:
    ValueError: ``mixtures_per_step`` is not divisible by the device count.
  """
  return _jitted(config, mesh, "grad", 1, _frozen(compiler_options))


def make_train_step(config: TrainConfig, *, mesh: Mesh,
                    compiler_options: CompilerOptions = None) -> Callable:
  """Jitted ``step_fn(state, corpus) -> (state, metrics)``, state donated.

  ``state`` and ``corpus`` must be replicated on ``mesh`` (``create_state``,
  ``place_corpus``). ``metrics`` is a dict of global float32 scalars: ``loss``,
  ``normal`` (the normal term: the mean, or for BU the weighted mean, of the
  normal frames' scores), ``la`` (L_a, eq. 10; 0 for RE), ``w_max``,
  ``w_min``, ``ess`` (BU weight statistics; uniform weights 1, 1, M_u for
  RE/SNP), ``frames_normal``, ``frames_anomalous``, ``grad_norm`` and
  ``learning_rate`` (the rate used by this update).

  Built once per (config, mesh, compiler_options) and cached, so it compiles
  once. ``compiler_options`` go to ``jax.jit`` (e.g. tests use
  ``{"xla_backend_optimization_level": 0}`` to compile faster).

  Raises:
    ValueError: ``mixtures_per_step`` is not divisible by the device count.
  """
  return _jitted(config, mesh, "step", 1, _frozen(compiler_options))


def make_train_steps(config: TrainConfig, *, mesh: Mesh, num_steps: int,
                     compiler_options: CompilerOptions = None) -> Callable:
  """Like ``make_train_step`` but ``num_steps`` steps per call (``lax.scan``).

  Returns ``(state, metrics)`` with every metric stacked to shape (num_steps,).
  Results equal ``num_steps`` calls of the single step.
  """
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  return _jitted(config, mesh, "steps", int(num_steps), _frozen(compiler_options))


def _jitted(config: TrainConfig, mesh: Mesh, kind: str, num_steps: int,
            compiler_options: Optional[tuple]) -> Callable:
  # steps_per_call only matters to ``train``: one compiled step serves all.
  return _jitted_cached(dataclasses.replace(config, steps_per_call=1), mesh, kind, num_steps,
                        compiler_options)


@functools.lru_cache(maxsize=32)
def _jitted_cached(config: TrainConfig, mesh: Mesh, kind: str, num_steps: int,
                   compiler_options: Optional[tuple]) -> Callable:
  rep = parallel.replicated(mesh)
  options = None if compiler_options is None else dict(compiler_options)
  if kind == "grad":
    fn = _loss_and_grad_fn(config, mesh)

    def grad_fn(params, step, corpus):
      _check_inputs(config, corpus)
      (loss, (metrics, _)), grads = fn(params, step, corpus, init_memory(config))
      return (loss, metrics), grads

    return jax.jit(grad_fn, in_shardings=(rep, rep, rep), out_shardings=rep,
                   compiler_options=options)
  step = _train_step_fn(config, mesh)
  if kind == "steps":
    one_step = step

    def step(state, corpus):  # pylint: disable=function-redefined
      return jax.lax.scan(lambda s, _: one_step(s, corpus), state, None, length=num_steps)

  return jax.jit(step, in_shardings=(rep, rep), out_shardings=(rep, rep), donate_argnums=0,
                 compiler_options=options)


# ------------------------------------------------------------------ guard rails


class NonFiniteLossError(FloatingPointError):
  """The loss of step ``step`` is NaN or infinite.

  ``step`` is the 0-based index of the failing update: the state with
  ``state.step == step`` (and any checkpoint at or before it) is the last good
  one; states returned by the failing call are not.
  """

  def __init__(self, step: int, loss: float, *, what: str = "loss",
               checkpoints: bool = True):
    self.step = int(step)
    self.loss = loss
    hint = (f"; resume from the last checkpoint at or before step {self.step}"
            if checkpoints else "")
    super().__init__(f"non-finite {what} {loss} at step {self.step}{hint}")


def raise_if_non_finite(metrics: Mapping[str, Any], *, first_step: int, what: str = "loss",
                        checkpoints: bool = True) -> None:
  """Raises ``NonFiniteLossError`` for the first non-finite ``metrics["loss"]``.

  ``metrics["loss"]`` is a scalar (one step) or a (k,) array (k steps starting
  at ``first_step``); host values (``jax.device_get``) avoid one transfer per
  check. ``what`` names the loss in the message; ``checkpoints=False`` drops
  the hint to resume from a checkpoint, for loops that write none.
  """
  loss = np.atleast_1d(np.asarray(metrics["loss"]))
  bad = np.flatnonzero(~np.isfinite(loss))
  if bad.size:
    raise NonFiniteLossError(first_step + int(bad[0]), float(loss[bad[0]]), what=what,
                             checkpoints=checkpoints)


# ------------------------------------------------------------------ the loop


def _rows(metrics: Mapping[str, np.ndarray], count: int) -> list[dict[str, float]]:
  if count == 1 and all(np.ndim(v) == 0 for v in metrics.values()):
    return [{k: float(v) for k, v in metrics.items()}]
  return [{k: float(v[i]) for k, v in metrics.items()} for i in range(count)]


def train(config: TrainConfig, corpus: batch_lib.Corpus, *, mesh: Optional[Mesh] = None,
          state: Optional[TrainState] = None, until_step: Optional[int] = None,
          on_step: Optional[Callable[[int, TrainState, Mapping[str, float]], None]] = None,
          metrics_writer: Optional[fileio.MetricsWriter] = None,
          progress: Union[bool, progress_lib.ProgressBar] = False,
          compiler_options: CompilerOptions = None) -> TrainState:
  """Runs the training step from ``state.step`` to ``until_step``.

  Args:
    config: the configuration.
    corpus: the replicated corpus (``place_corpus``).
    mesh: the 'data' mesh; default all devices.
    state: the state to continue (e.g. restored from a checkpoint; it is
      donated); default ``create_state``.
    until_step: stop when ``state.step`` reaches it; default
      ``config.total_steps``.
    on_step: called after every device call (every ``config.steps_per_call``
      steps) as ``on_step(step, state, metrics)`` with the number of completed
      steps, the new state and the last step's metrics (floats). The state is
      donated to the next call: read or copy it before returning (e.g. an
      Orbax save that fetches to host first). Checkpointing belongs here.
    metrics_writer: receives one record per step, keyed by the 0-based index
      of the step that produced it.
    progress: True for a progress bar on stderr, or a ``ProgressBar``.
    compiler_options: passed to ``jax.jit`` (see ``make_train_step``).

  Returns:
    The final state.

  Raises:
    NonFiniteLossError: a step's loss is not finite (raised after its call;
      ``on_step`` is not called for that call).
    ValueError: ``mixtures_per_step`` not divisible by the device count, or a
      corpus that does not fit ``config``.
  """
  mesh = parallel.data_mesh() if mesh is None else mesh
  parallel.log_devices(mesh)
  if isinstance(corpus, batch_lib.Corpus):  # the draw of this config, whatever the corpus had
    corpus = sampled_corpus(config, corpus)
  _check_inputs(config, corpus)
  parallel.check_divisible(config.mixtures_per_step, mesh)
  if state is None:
    state = create_state(config, mesh=mesh, compiler_options=compiler_options)
  else:
    state = parallel.replicate(state, mesh)  # e.g. restored to one device; no-op if placed
  step = int(jax.device_get(state.step))
  until = config.total_steps if until_step is None else int(until_step)
  logging.info("training %s (%s) from step %d to %d: %d mixtures of %d x %g s per step, "
               "%d steps per call", config.loss, config.model_preset.name, step, until,
               config.mixtures_per_step, config.segments_per_mixture, config.segment_seconds,
               config.steps_per_call)
  bar = progress if isinstance(progress, progress_lib.ProgressBar) else (
      progress_lib.ProgressBar(until, initial=step) if progress else None)
  k = config.steps_per_call
  single = make_train_step(config, mesh=mesh, compiler_options=compiler_options)
  multi = (make_train_steps(config, mesh=mesh, num_steps=k, compiler_options=compiler_options)
           if k > 1 else None)
  started = time.perf_counter()
  first_step = step
  while step < until:
    count = k if multi is not None and until - step >= k else 1
    state, metrics = (multi if count > 1 else single)(state, corpus)
    host = jax.device_get(metrics)
    raise_if_non_finite(host, first_step=step)
    rows = _rows(host, count)
    if metrics_writer is not None:
      for i, row in enumerate(rows):
        metrics_writer.write(step + i, row)
    step += count
    if bar is not None:
      frames = sum(r["frames_normal"] + r["frames_anomalous"] for r in rows)
      bar.update(step, frames=frames, loss=rows[-1]["loss"])
    if on_step is not None:
      on_step(step, state, rows[-1])
  if bar is not None:
    bar.close()
  elapsed = time.perf_counter() - started
  if step > first_step:
    logging.info("trained %d steps in %.1f s (%.2f steps/s, including compilation)",
                 step - first_step, elapsed, (step - first_step) / max(elapsed, 1e-9))
  return state
