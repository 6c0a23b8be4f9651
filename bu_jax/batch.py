"""In-step mini-batch synthesis of section 4.2.1, on device, with static shapes.

One *mixture* is built from one PRNG key:

1. ``segments_per_mixture`` (paper: 10) normal segments (paper: 3 s) drawn
   uniformly with replacement from the corpus and concatenated: x_u, N samples.
   (A corpus with ``segment_cdf`` draws them by its probabilities instead:
   ``with_segment_probabilities``, uniformization by sampling.)
2. One something-else clip a (paper: DCASE2018 task 2 files < 5 s) drawn
   uniformly, placed at a uniform random start in [0, N - len(a)] so that it
   lies wholly inside the mixture.
3. The ANR drawn uniformly from ``anr_range_db`` (paper: [-30, 10] dB) and
   x_a = x_u + alpha a (eq. 8). **ANR convention**: the power of alpha a over
   its own extent divided by the power of x_u over the *same samples* (the
   overlapped part), i.e. alpha = sqrt(P_u / P_a 10^(ANR / 10)): a local
   ANR, independent of the mixture's length. NB: ``bu_jax.data`` states the
   *test* ANRs of the mixing layout over the whole test clip instead (eq. 8
   on the clip), so a short test anomaly is locally louder than its nominal
   ANR (a 0.5-s event at -20 dB in a 10-s clip is about -7 dB locally); the
   training range [-30, 10] dB covers those local levels. A silent clip or a
   silent overlapped part gives alpha = 0.
4. Features of x_a (``bu_jax.features``) and a boolean mask of the frames whose
   feature vector x_t depends on any sample of the clip (the anomalous set
   {x^(a)}); the other frames are the normal set {x^(u)}.

Which frames are anomalous: ``features`` uses a centered STFT (zero padding of
n_fft / 2, periodic Hann window, whose first coefficient is 0) and context
stacking with edge padding. STFT frame t therefore depends on samples
(t hop - n_fft/2, t hop + n_fft/2) (open interval), and feature frame t on STFT
frames clip(t - C .. t + C). A frame is anomalous iff that support meets the
clip's samples [start, start + len): the normal frames are exactly (bit for
bit) the features of x_u alone, and no frame that contains the clip is
counted as normal.

Everything is a pure function of the key and the corpus, so a batch built from
``fold_in(step_key, global_mixture_index)`` keys is the same on any number of
devices. All random choices of a mixture come from one ``jax.random.bits``
draw (integers by modulo: bias below bound / 2^32; the ANR with 24-bit
resolution), which keeps the step quick to compile.
"""

from __future__ import annotations

from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from bu_jax import features as features_lib
from bu_jax import parallel


# ------------------------------------------------------------------ corpus


@flax.struct.dataclass
class Corpus:
  """The on-device training corpus.

  Attributes:
    segments: float32 (S, L) normal segments (paper: 3 s at 16 kHz).
    clips: float32 (E, Lmax) something-else clips, zero after each clip's end.
    clip_lengths: int32 (E,) true lengths, in [1, Lmax].
    min_clip_length: the shortest clip (static, host-known): it bounds the
      number of normal frames a mixture can have, which sizes the KDE buffer.
    segment_cdf: None (segments drawn uniformly, the paper) or float32 (S,)
      cumulative draw probabilities (``with_segment_probabilities``).
  """

  segments: jax.Array
  clips: jax.Array
  clip_lengths: jax.Array
  min_clip_length: int = flax.struct.field(pytree_node=False, default=1)
  segment_cdf: Optional[jax.Array] = None

  @property
  def num_clips(self) -> int:
    return int(self.clips.shape[0])


def make_corpus(segments, clips=None, clip_lengths=None, *,
                sharding: Optional[jax.sharding.Sharding] = None) -> Corpus:
  """Checks host arrays and builds a ``Corpus`` (placed with ``sharding``).

  Args:
    segments: (S, L) normal segments, e.g. ``data.training_corpus(...)``.
    clips: (E, Lmax) zero-padded something-else clips, e.g. from
      ``data.pad_clips``; None for a corpus without any (RE training only).
    clip_lengths: (E,) lengths of ``clips``; default: all Lmax.
    sharding: where to place the arrays, e.g. ``parallel.replicated(mesh)``;
      None leaves them on the default device.

  Raises:
    ValueError: wrong ranks, no segments, non-finite samples, or lengths
      outside [1, Lmax].
  """
  segments = np.asarray(segments, np.float32)
  if segments.ndim != 2 or segments.shape[0] == 0 or segments.shape[1] == 0:
    raise ValueError(f"segments must be a non-empty (S, L) array, got shape {segments.shape}")
  if not np.all(np.isfinite(segments)):
    raise ValueError("segments contain non-finite samples")
  if clips is None:
    clips = np.zeros((0, 1), np.float32)
    clip_lengths = np.zeros((0,), np.int32)
  clips = np.asarray(clips, np.float32)
  if clips.ndim != 2 or clips.shape[1] == 0:
    raise ValueError(f"clips must be an (E, Lmax) array, got shape {clips.shape}")
  if clip_lengths is None:
    clip_lengths = np.full((clips.shape[0],), clips.shape[1], np.int32)
  clip_lengths = np.asarray(clip_lengths, np.int32)
  if clip_lengths.shape != (clips.shape[0],):
    raise ValueError(f"clip_lengths has shape {clip_lengths.shape}, expected "
                     f"({clips.shape[0]},)")
  if clip_lengths.size and (clip_lengths.min() < 1 or clip_lengths.max() > clips.shape[1]):
    raise ValueError(f"clip_lengths must lie in [1, {clips.shape[1]}], got "
                     f"[{clip_lengths.min()}, {clip_lengths.max()}]")
  if not np.all(np.isfinite(clips)):
    raise ValueError("clips contain non-finite samples")
  min_len = int(clip_lengths.min()) if clip_lengths.size else 1
  arrays = (segments, clips, clip_lengths)
  arrays = (parallel.put(arrays, sharding) if sharding is not None
            else jax.device_put(arrays))
  return Corpus(*arrays, min_clip_length=min_len)


def with_segment_probabilities(corpus: Corpus, probabilities) -> Corpus:
  """``corpus`` whose mixtures draw segment s with probability ``probabilities[s]``.

  Args:
    corpus: the corpus (its segments' placement is kept).
    probabilities: (S,) non-negative, finite, with a positive sum (normalized
      here), e.g. ``kde.sampling_probabilities`` of the segments' summaries;
      None draws uniformly again.

  Raises:
    ValueError: a wrong shape, a negative or non-finite entry, or a zero sum.
  """
  if probabilities is None:
    return corpus.replace(segment_cdf=None)
  p = np.asarray(jax.device_get(probabilities), np.float64)
  num_segments = int(corpus.segments.shape[0])
  if p.shape != (num_segments,):
    raise ValueError(f"segment probabilities have shape {p.shape}, expected ({num_segments},), "
                     "one per segment")
  if not np.all(np.isfinite(p)) or np.any(p < 0) or not p.sum() > 0:
    raise ValueError("segment probabilities must be finite, >= 0 and not all 0")
  cdf = np.cumsum(p / p.sum())
  cdf[-1] = 1.0
  sharding = getattr(corpus.segments, "sharding", None)
  cdf = jnp.asarray(cdf, jnp.float32)
  return corpus.replace(segment_cdf=jax.device_put(cdf, sharding) if sharding else cdf)


def _draw_segments(words: jax.Array, corpus: Corpus) -> jax.Array:
  """Segment indices from random words: uniform, or by ``corpus.segment_cdf``."""
  num_segments = corpus.segments.shape[0]
  if corpus.segment_cdf is None:
    return _below(words, num_segments)
  u = _unit_interval(words)  # in [0, 1): the first index whose cdf exceeds u
  idx = jnp.searchsorted(corpus.segment_cdf, u, side="right")
  return jnp.minimum(idx, num_segments - 1).astype(jnp.int32)


# ------------------------------------------------------------------ frame masks


def _stft_frame_interval(start, length, *, config: features_lib.FeatureConfig):
  """First and last STFT frame whose (nonzero) window meets [start, start + length)."""
  half = config.n_fft // 2
  hop = config.hop_length
  # Frame t sees samples t hop - half + 1 ... t hop + half - 1 (w[0] = 0).
  first = -((-(start - half + 1)) // hop)  # ceil
  last = (start + length - 1 + half - 1) // hop
  return first, last


def anomalous_frame_range(start, length, *, num_frames: int,
                          config: features_lib.FeatureConfig, xp=jnp):
  """[lo, hi] of the feature frames that depend on samples [start, start + length)."""
  first, last = _stft_frame_interval(start, length, config=config)
  lo = xp.maximum(first - config.context, 0)
  hi = xp.minimum(last + config.context, num_frames - 1)
  return lo, hi


def anomalous_frames(start: jax.Array, length: jax.Array, *, num_frames: int,
                     config: features_lib.FeatureConfig) -> jax.Array:
  """Bool (num_frames,): frame t's feature vector contains a clip sample.

  ``length == 0`` (no clip) gives all False.
  """
  lo, hi = anomalous_frame_range(start, length, num_frames=num_frames, config=config)
  t = jnp.arange(num_frames)
  return (t >= lo) & (t <= hi) & (length > 0)


def min_anomalous_frames(num_samples: int, clip_length: int, *,
                         config: features_lib.FeatureConfig) -> int:
  """Fewest anomalous frames a clip of ``clip_length`` can give at any start (host)."""
  if clip_length > num_samples:
    raise ValueError(f"a something-else clip of {clip_length} samples does not fit in a "
                     f"mixture of {num_samples} samples")
  num_frames = config.num_frames(num_samples)
  starts = np.arange(num_samples - clip_length + 1, dtype=np.int64)
  lo, hi = anomalous_frame_range(starts, clip_length, num_frames=num_frames, config=config,
                                 xp=np)
  return int(np.min(hi - lo + 1))


# ------------------------------------------------------------------ mixtures


def _below(words: jax.Array, bound) -> jax.Array:
  """Integers uniform in [0, bound) from uint32 words (bias < bound / 2^32)."""
  return (words % jnp.asarray(bound, jnp.uint32)).astype(jnp.int32)


def _unit_interval(words: jax.Array) -> jax.Array:
  """Floats uniform in [0, 1) from uint32 words (24-bit resolution)."""
  return (words >> 8).astype(jnp.float32) * jnp.float32(2.0 ** -24)


@flax.struct.dataclass
class Mixture:
  """One synthesized mixture (waveform level; section 4.2.1, eq. 8).

  Attributes:
    wave: (N,) x_a = x_u + alpha a (x_u alone without a clip).
    normal: (N,) x_u, the concatenated normal segments.
    anomaly: (N,) alpha a placed at ``start`` (zeros elsewhere).
    segment_indices: (segments_per_mixture,) rows of ``corpus.segments``.
    clip_index: the something-else clip (0 without a clip).
    start: first sample of the clip in the mixture.
    length: the clip's length in samples (0 without a clip).
    anr_db: the drawn ANR (NaN without a clip).
    alpha: the gain of eq. (8).
  """

  wave: jax.Array
  normal: jax.Array
  anomaly: jax.Array
  segment_indices: jax.Array
  clip_index: jax.Array
  start: jax.Array
  length: jax.Array
  anr_db: jax.Array
  alpha: jax.Array


def synthesize_mixture(key: jax.Array, corpus: Corpus, *, segments_per_mixture: int,
                       anr_range_db: tuple[float, float],
                       simulate_anomaly: bool = True) -> Mixture:
  """Draws one mixture from ``key`` (see the module docstring). Pure, jittable.

  Args:
    key: PRNG key of this mixture.
    corpus: the training corpus.
    segments_per_mixture: normal segments concatenated (paper: 10).
    anr_range_db: (low, high) of the uniform ANR in dB (paper: (-30, 10)).
    simulate_anomaly: False returns x_u alone (the RE baseline of Fig. 1).

  Returns:
    A ``Mixture``.
  """
  num_segments, segment_length = corpus.segments.shape
  n = segments_per_mixture * segment_length
  # One draw of random words for the whole mixture (cheap to compile): the
  # segments, the clip, its start and the ANR.
  words = jax.random.bits(key, (segments_per_mixture + 3,), jnp.uint32)
  seg_idx = _draw_segments(words[:segments_per_mixture], corpus)
  normal = corpus.segments[seg_idx].reshape(n).astype(jnp.float32)
  zero_i = jnp.zeros((), jnp.int32)
  if not simulate_anomaly:
    return Mixture(wave=normal, normal=normal, anomaly=jnp.zeros_like(normal),
                   segment_indices=seg_idx, clip_index=zero_i, start=zero_i, length=zero_i,
                   anr_db=jnp.full((), jnp.nan, jnp.float32),
                   alpha=jnp.zeros((), jnp.float32))
  num_clips, max_len = corpus.clips.shape
  if num_clips == 0:
    raise ValueError("the corpus has no something-else clips; SNP and BU need them")
  if max_len > n:
    raise ValueError(f"something-else clips of up to {max_len} samples do not fit in a mixture "
                     f"of {segments_per_mixture} x {segment_length} samples")
  clip_idx = _below(words[segments_per_mixture], num_clips)
  length = corpus.clip_lengths[clip_idx].astype(jnp.int32)
  start = _below(words[segments_per_mixture + 1], n - length + 1)
  low, high = anr_range_db
  anr_db = low + (high - low) * _unit_interval(words[segments_per_mixture + 2])

  buffer = jnp.zeros((n + max_len,), jnp.float32)
  placed = jax.lax.dynamic_update_slice(buffer, corpus.clips[clip_idx].astype(jnp.float32),
                                        (start,))[:n]
  t = jnp.arange(n)
  inside = (t >= start) & (t < start + length)
  placed = jnp.where(inside, placed, 0.0)
  # ANR over the clip's extent: alpha^2 P_a / P_u = 10^(ANR / 10).
  power_u = jnp.sum(jnp.where(inside, normal * normal, 0.0))
  power_a = jnp.sum(placed * placed)
  ok = (power_u > 0) & (power_a > 0)
  ratio = jnp.where(ok, power_u / jnp.where(ok, power_a, 1.0), 0.0)
  alpha = jnp.sqrt(ratio * 10.0 ** (anr_db / 10.0))
  anomaly = alpha * placed
  return Mixture(wave=normal + anomaly, normal=normal, anomaly=anomaly,
                 segment_indices=seg_idx, clip_index=clip_idx, start=start, length=length,
                 anr_db=anr_db, alpha=alpha)


@flax.struct.dataclass
class Batch:
  """Features of mixtures and their anomalous-frame masks.

  Attributes:
    frames: (..., T, D) features x_t.
    anomalous: (..., T) True for frames that the something-else clip touches.
    interior: (..., T) True for frames that see only the mixture's own samples
      (``FeatureConfig.interior``): the first and last C + 1 frames see the
      centered STFT's zero padding and edge-replicated context, so they are
      neither normal nor anomalous training frames (and are not scored at test
      time either).
    added: (..., T) True in a mixture whose clip was added with alpha > 0.
      Where alpha = 0 (the normal sound under the clip, or the clip, is
      digitally silent) the frames the clip touches hold no anomaly: they are
      then neither anomalous (they would be trained to score high while
      holding normal sound) nor normal.
  """

  frames: jax.Array
  anomalous: jax.Array
  interior: jax.Array
  added: jax.Array

  @property
  def normal_mask(self) -> jax.Array:
    """{x^(u)}: interior frames that the clip does not touch."""
    return self.interior & ~self.anomalous

  @property
  def anomalous_mask(self) -> jax.Array:
    """{x^(a)}: interior frames that the clip touches, where it added sound."""
    return self.interior & self.anomalous & self.added


def mixture_keys(step_key: jax.Array, indices: jax.Array) -> jax.Array:
  """``fold_in(step_key, i)`` for each global mixture index ``i``."""
  return jax.vmap(lambda i: jax.random.fold_in(step_key, i))(indices)


def make_batch(keys: jax.Array, corpus: Corpus, *,
               feature_config: features_lib.FeatureConfig,
               segments_per_mixture: int, anr_range_db: tuple[float, float],
               simulate_anomaly: bool = True) -> Batch:
  """Synthesizes one mixture per key and featurizes it: (B,) keys -> (B, T, D) frames."""
  mixtures = jax.vmap(lambda k: synthesize_mixture(
      k, corpus, segments_per_mixture=segments_per_mixture, anr_range_db=anr_range_db,
      simulate_anomaly=simulate_anomaly))(keys)
  frames = features_lib.features(mixtures.wave, config=feature_config)
  num_frames = frames.shape[-2]
  anomalous = jax.vmap(lambda s, n: anomalous_frames(
      s, n, num_frames=num_frames, config=feature_config))(mixtures.start, mixtures.length)
  inner = feature_config.interior(mixtures.wave.shape[-1])
  interior = jnp.zeros((num_frames,), jnp.bool_).at[inner].set(True)
  interior = jnp.broadcast_to(interior, anomalous.shape)
  added = jnp.broadcast_to((mixtures.alpha > 0)[..., None], anomalous.shape)
  return Batch(frames=frames, anomalous=anomalous, interior=interior, added=added)
