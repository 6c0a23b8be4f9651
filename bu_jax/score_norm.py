"""Local normalization of frame scores by the scores of the nearest training frames in code space.

A rare operating mode of a machine keeps a higher reconstruction error than the
frequent ones however its frames are weighted in training: they are spread over
more dimensions. At scoring time, without labels, each frame's anomaly score
A(x_t) is divided by the mean score of its k nearest *training* frames in the
model's code space (the AE's encoder output, or the PCA coefficients):

    A~(x_t) = A(x_t) / mean_{j in kNN(c_t)} A(x_j),

so a frame scores about 1 when it reconstructs as well as the training frames
that look like it, whatever their absolute level (kind "knn").

Kind "knn_z" also allows for the local *spread*: a rare operating mode's frames
vary more in how well they reconstruct, so the mean alone leaves their maxima
(eq. 11) above the frequent mode's. With g and sigma the mean and standard
deviation of ln A over the k neighbours, z = (ln A(x_t) - g) / sigma is a
local z-score of the log score, and

    A~(x_t) = exp(sigma_ref * z) = (A(x_t) / e^g) ^ (sigma_ref / sigma),

where sigma_ref is the median of sigma over the bank's own frames: the score
of a frame whose neighbours spread as usual is its score over their geometric
mean, as "knn" (on the same scale, so φ and the held-out spread read alike),
and a frame among widely spread neighbours is pulled toward 1. Normal frames of
every mode then get about the same distribution of scores, which is what
batch uniformization aims at in training. The bank (codes and scores of
at most ``max_frames`` training frames, evenly spaced) is fitted on the interior
frames of the training clips (``fit_from_clips``) or of the held-out normal
clips, which the model never trained on (``fit_heldout_banks``), saved next to the model
(``LocalNormalizer.save``, ``load_local_normalizer``) and applied by wrapping a
scorer (``NormalizedScorer``), so evaluation and ``experiments.score`` compute
the same normalized scores.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import zipfile
from typing import Any, Optional, Sequence

import numpy as np
from sklearn import neighbors as neighbors_lib

from bu_jax import artifact
from bu_jax import fileio

KIND = "knn"  # the score over the neighbours' mean
KIND_Z = "knn_z"  # the local z-score of the log score (see the module doc)
KINDS = (KIND, KIND_Z)
TRAINING_BANK = "training"  # --normalization_bank: the frames of the clips trained on
HELDOUT_BANK = "heldout"  # the held-out clips' frames (``fit_heldout_banks``)
CROSSFIT_BANK = "crossfit"  # the training frames scored by fold models that did not train on them
AUTO_BANK = "auto"  # the training or the cross-fitted bank, chosen by the pseudo-anomaly AUC
BANKS = (TRAINING_BANK, HELDOUT_BANK, CROSSFIT_BANK, AUTO_BANK)


def bank_candidates(bank: str) -> tuple[str, ...]:
  """The banks a ``--normalization_bank`` value stands for: ``auto`` the training and
  the cross-fitted bank (``heldout.choose_scoring`` keeps one), any other itself."""
  return (TRAINING_BANK, CROSSFIT_BANK) if bank == AUTO_BANK else (bank,)


def needs_fold_models(bank: str) -> bool:
  """Whether ``--normalization_bank`` needs the cross-fitted bank's fold models."""
  return CROSSFIT_BANK in bank_candidates(bank)
FILE_NAME = "score_normalizer.npz"
MAX_FRAMES = 16384  # a bank keeps at most this many frames (evenly spaced)
_RELATIVE_FLOOR = 1e-6  # times the median bank score
_ABSOLUTE_FLOOR = 1e-12  # when every bank score is 0
AUTO = 0  # --normalization_neighbors=0: k chosen by ``choose_neighbors``
AUTO_KIND = "auto"  # experiments.toycar: "none" or KIND_Z, by the pseudo-anomaly AUC
CANDIDATES = (5, 10, 20, 40, 80, 160)  # the k that ``choose_neighbors`` tries
_SPREAD_FLOOR = 1e-3  # the smallest local sigma of ln A (neighbours of equal scores)
_MAX_EXPONENT = 80.0  # |sigma_ref * z| is clipped here: exp stays finite in float32


def _finite(array: np.ndarray, what: str, name: str) -> None:
  """Raises ``ValueError`` naming ``what`` (and ``name``) if ``array`` holds NaN or inf."""
  bad = ~np.isfinite(array)
  if np.any(bad):
    kind = "NaN" if np.any(np.isnan(array)) else "infinite"
    raise ValueError(f"{name}: {what} hold {kind} values ({int(np.sum(bad))} entries)")


def _check_bank(codes: np.ndarray, scores: np.ndarray, neighbors: int, *,
                name: str, kind: str = KIND) -> None:
  """The shape and value rules of a bank of training codes and scores."""
  if kind not in KINDS:
    raise ValueError(f"{name}: kind must be one of {KINDS}, got {kind!r}")
  if codes.ndim != 2 or scores.ndim != 1 or codes.shape[0] != scores.shape[0]:
    raise ValueError(f"{name}: expected codes (N, Z) and scores (N,), got {codes.shape} "
                     f"and {scores.shape}")
  if codes.shape[0] < 2:
    raise ValueError(f"{name}: {codes.shape[0]} training frame(s); need at least 2")
  if isinstance(neighbors, bool) or not isinstance(neighbors, (int, np.integer)):
    raise ValueError(f"{name}: neighbors must be an integer, got {neighbors!r}")
  if kind == KIND_Z and codes.shape[0] < 3:  # sigma_ref: a spread over >= 2 *other* frames
    raise ValueError(f"{name}: {codes.shape[0]} training frames; kind {kind!r} needs at "
                     "least 3")
  lowest = 2 if kind == KIND_Z else 1  # a spread needs two neighbours
  if not lowest <= neighbors <= codes.shape[0]:
    raise ValueError(f"{name}: neighbors must lie in [{lowest}, {codes.shape[0]}] (the frames "
                     f"kept) for kind {kind!r}, got {neighbors}")
  _finite(codes, "the codes", name)
  _finite(scores, "the scores", name)
  if np.any(scores < 0):
    raise ValueError(f"{name}: the scores must be >= 0 (squared errors), got min "
                     f"{float(scores.min())}")


def resolve_neighbors(kind: str, neighbors: Optional[int]) -> int:
  """``--normalization_neighbors`` as given, else its default: ``AUTO`` (k chosen on
  the held-out clips) for knn_z and auto, 10 for knn (and unused "none")."""
  if neighbors is not None:
    return neighbors
  return AUTO if kind in (KIND_Z, AUTO_KIND) else 10


def check_setting(kind: str, neighbors: int) -> None:
  """The rule of ``--score_normalization`` and ``--normalization_neighbors`` that
  the experiments' settings share ("none", a kind or "auto"; knn_z and auto's
  knn_z need k >= 2, or 0: k chosen by ``choose_neighbors``).

  Raises:
    ValueError: naming both flags.
  """
  if neighbors == AUTO:
    if kind not in (KIND_Z, AUTO_KIND):
      raise ValueError("--normalization_neighbors=0 (chosen from the held-out clips) applies "
                       f"to --score_normalization=knn_z or auto only, got {kind}")
  elif kind in (KIND_Z, AUTO_KIND) and neighbors < 2:
    raise ValueError(f"--score_normalization={kind} needs --normalization_neighbors >= 2 "
                     f"(a spread of scores) or 0 (chosen), got {neighbors}")


def bank_frames(lengths: Sequence[int], config, *, max_frames: int = MAX_FRAMES,
                leave_one_out: bool = False) -> int:
  """The frames a bank of clips of ``lengths`` samples keeps (their interior
  frames, ``clip_frames``, at most ``max_frames``, ``fit_local_normalizer``):
  known before any model scores them. ``leave_one_out``: the smallest of the
  banks that leave one clip out (``fit_heldout_banks``)."""
  counts = [config.interior_count(n) for n in lengths]
  total = sum(counts)
  kept = [total - c for c in counts] if leave_one_out else [total]
  return min(max_frames, min(kept, default=0))


def check_bank_size(kind: str, neighbors: int, lengths: Sequence[int], config, *,
                    leave_one_out: bool = False) -> None:
  """Refuses, before any training, a bank of clips of ``lengths`` samples
  (``bank_frames``) that cannot serve ``--score_normalization=kind`` with
  ``--normalization_neighbors=neighbors``: too few frames for the kind, for
  choosing k (``AUTO``: at least the smallest of ``CANDIDATES``), or fewer
  frames than k. "none" needs no bank.

  Raises:
    ValueError: naming the flag and the bank's size.
  """
  if kind == "none":
    return
  frames = bank_frames(lengths, config, leave_one_out=leave_one_out)
  lowest = 3 if kind in (KIND_Z, AUTO_KIND) else 2  # knn_z: a spread over >= 2 other frames
  if neighbors == AUTO:
    lowest = max(lowest, min(CANDIDATES))
  what = "is empty" if frames == 0 else f"holds {frames} frame{'s' * (frames != 1)}"
  if frames < lowest:
    raise ValueError(f"the knn bank {what}; --score_normalization={kind}"
                     + (" with --normalization_neighbors=0 (k chosen)" if neighbors == AUTO
                        else "") + f" needs at least {lowest} (more or longer clips)")
  if neighbors != AUTO and neighbors > frames:
    raise ValueError(f"--normalization_neighbors={neighbors} exceeds the {frames} frames of "
                     "the knn bank; give at most that many (or 0 to choose k, with knn_z or "
                     "auto)")


def _check_frames(codes: np.ndarray, scores: np.ndarray, code_dim: int, name: str) -> None:
  """Frames to normalize (or to choose k on): codes (T, code_dim), scores (T,), finite."""
  if codes.ndim != 2 or codes.shape[1] != code_dim or scores.shape != codes.shape[:1]:
    raise ValueError(f"{name}: expected codes (T, {code_dim}) and scores (T,), got "
                     f"{codes.shape} and {scores.shape}")
  _finite(codes, "the codes", name)
  _finite(scores, "the scores", name)


def _others(index: np.ndarray) -> np.ndarray:
  """(N, k) of the (N, k + 1) nearest bank frames of each bank frame, itself left out.

  A frame is usually its own first neighbour, but where several share its code
  exactly (identical frames, or an all-zero ReLU code) the index may list
  another copy first and itself later, or not at all: the frame itself is
  removed wherever it stands, else the farthest neighbour.
  """
  own = index == np.arange(index.shape[0])[:, None]
  keep = ~own
  keep[~own.any(axis=1), -1] = False
  return index[keep].reshape(index.shape[0], index.shape[1] - 1)


@dataclasses.dataclass(frozen=True, eq=False)
class LocalNormalizer:
  """A bank of training frames: their codes and scores, the k of the kNN and the kind.

  Attributes:
    codes: codes of the training frames, float32 (N, Z).
    scores: their anomaly scores, float32 (N,).
    neighbors: k, the number of nearest bank frames that normalize a frame's
      score (at least 2 for "knn_z").
    kind: "knn" (the score over the neighbours' mean score) or "knn_z" (the
      local z-score of the log score on knn's scale; see the module doc).
    choice: when k was chosen (``fit_from_clips`` with ``AUTO``), the mean
      log density of the held-out frames for each k tried; else None.
  """

  codes: np.ndarray
  scores: np.ndarray
  neighbors: int
  kind: str = KIND
  choice: Optional[dict] = None

  def __post_init__(self):
    object.__setattr__(self, "codes", np.asarray(self.codes, np.float32))
    object.__setattr__(self, "scores", np.asarray(self.scores, np.float32))
    _check_bank(self.codes, self.scores, self.neighbors, name="LocalNormalizer",
                kind=self.kind)
    object.__setattr__(self, "neighbors", int(self.neighbors))
    object.__setattr__(self, "kind", str(self.kind))

  @functools.cached_property
  def fingerprint(self) -> str:
    """A hash of the bank's contents (codes, scores, k, kind): the calibration
    stores it, so a bank file that another model wrote is refused."""
    digest = hashlib.sha256(f"{self.kind}:{self.neighbors}:{self.codes.shape}:".encode())
    digest.update(np.ascontiguousarray(self.codes, "<f4").tobytes())
    digest.update(np.ascontiguousarray(self.scores, "<f4").tobytes())
    return digest.hexdigest()[:16]

  @property
  def frames(self) -> int:
    """N, the number of bank frames."""
    return int(self.scores.shape[0])

  @property
  def code_dim(self) -> int:
    """Z, the dimension of the codes."""
    return int(self.codes.shape[1])

  @functools.cached_property
  def floor(self) -> float:
    """The smallest denominator: 1e-6 times the median bank score (> 0 always)."""
    return max(_RELATIVE_FLOOR * float(np.median(self.scores)), _ABSOLUTE_FLOOR)

  @functools.cached_property
  def _index(self) -> neighbors_lib.NearestNeighbors:
    """The Euclidean nearest-neighbour index of the bank codes (built once, on first use)."""
    return neighbors_lib.NearestNeighbors(n_neighbors=self.neighbors).fit(self.codes)

  @functools.cached_property
  def _log_scores(self) -> np.ndarray:
    """ln max(score, floor) of the bank frames, float64 (N,)."""
    return np.log(np.maximum(self.scores.astype(np.float64), self.floor))

  def _log_spread(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (floored) of ln A over each row of bank ``index``."""
    logs = self._log_scores[index]
    return logs.mean(axis=1), np.maximum(logs.std(axis=1, ddof=1), _SPREAD_FLOOR)

  @functools.cached_property
  def reference_spread(self) -> float:
    """sigma_ref of "knn_z": the median over the bank frames of the spread of ln A
    over their k nearest *other* bank frames (computed once, on first use)."""
    if self.frames <= self.neighbors:  # every frame's other frames are the whole rest
      index = np.array([np.delete(np.arange(self.frames), i) for i in range(self.frames)])
    else:
      index = _others(neighbors_lib.NearestNeighbors(n_neighbors=self.neighbors + 1).fit(
          self.codes).kneighbors(self.codes, return_distance=False))
    return float(np.median(self._log_spread(index)[1]))

  def __call__(self, codes: Any, scores: Any, *, name: str = "frames") -> np.ndarray:
    """Normalized scores: each score divided by the mean bank score of its k nearest codes.

    Args:
      codes: the frames' codes (T, Z), in the bank's code space.
      scores: their anomaly scores (T,).
      name: names the recording in error messages.

    Returns:
      "knn": ``scores / max(mean of the k nearest bank scores, floor)``;
      "knn_z": ``exp(sigma_ref * z)`` with z the local z-score of ``ln scores``
      (module doc; the exponent clipped to +-80); float32 (T,).

    Raises:
      ValueError: shapes that do not fit the bank, or NaN / infinite codes or
        scores (naming which).
    """
    codes = np.asarray(codes, np.float32)
    scores = np.asarray(scores, np.float64)
    _check_frames(codes, scores, self.code_dim, name)
    if not scores.size:
      return np.zeros(0, np.float32)
    index = self._index.kneighbors(codes, return_distance=False)  # (T, k)
    if self.kind == KIND_Z:
      mean, spread = self._log_spread(index)
      z = (np.log(np.maximum(scores, self.floor)) - mean) / spread
      exponent = np.clip(self.reference_spread * z, -_MAX_EXPONENT, _MAX_EXPONENT)
      return np.exp(exponent).astype(np.float32)
    local = np.mean(self.scores[index].astype(np.float64), axis=1)
    return (scores / np.maximum(local, self.floor)).astype(np.float32)

  def save(self, path: os.PathLike | str) -> str:
    """Writes the bank to ``path`` (.npz) atomically (``fileio.atomic_write``); returns it."""
    buffer = io.BytesIO()
    np.savez(buffer, codes=self.codes, scores=self.scores, neighbors=np.int64(self.neighbors),
             kind=np.str_(self.kind))
    return fileio.atomic_write(path, buffer.getvalue())

  def describe(self) -> str:
    """E.g. "knn normalization (10 neighbours, 16384 training frames)"."""
    return f"{self.kind} normalization ({self.neighbors} neighbours, {self.frames} training frames)"


def fit_local_normalizer(codes: Any, scores: Any, *, neighbors: int = 10,
                         max_frames: int = MAX_FRAMES, kind: str = KIND) -> LocalNormalizer:
  """The bank of at most ``max_frames`` training frames (evenly spaced, deterministic).

  Args:
    codes: codes of the training frames (N, Z).
    scores: their anomaly scores (N,), >= 0.
    neighbors: k of the kNN, in [1, frames kept] ([2, ...] for "knn_z").
    max_frames: keep at most this many frames (``np.linspace`` indices, as
      ``reference.PCADetector.fit``), to bound memory and time.
    kind: "knn" or "knn_z" (see ``LocalNormalizer``).

  Returns:
    A ``LocalNormalizer``.

  Raises:
    ValueError: fewer than 2 frames, mismatched shapes, NaN / infinite or
      negative values, or ``neighbors`` out of range (naming the problem).
  """
  if max_frames < 2:
    raise ValueError(f"max_frames must be >= 2, got {max_frames}")
  codes = np.asarray(codes, np.float32)
  scores = np.asarray(scores, np.float32)
  if codes.ndim == 2 and scores.ndim == 1 and len(codes) == len(scores) > max_frames:
    keep = np.linspace(0, codes.shape[0] - 1, max_frames).astype(np.int64)
    codes, scores = codes[keep], scores[keep]
  _check_bank(codes, scores, neighbors, name="fit_local_normalizer", kind=kind)
  return LocalNormalizer(codes=codes, scores=scores, neighbors=neighbors, kind=kind)


def load_local_normalizer(path: os.PathLike | str) -> LocalNormalizer:
  """Reads a bank written by ``LocalNormalizer.save``.

  Raises:
    artifact.ArtifactError: the file is missing, unreadable or malformed (the
      message names it).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise artifact.ArtifactError(f"{path}: the score normalizer of this model is missing "
                                 "(re-run the evaluation with its --score_normalization)")
  try:
    with np.load(path, allow_pickle=False) as stored:
      entries = {key: stored[key] for key in ("codes", "scores", "neighbors")}
      kind = stored["kind"] if "kind" in stored.files else np.str_(KIND)
    neighbors = entries["neighbors"]
    if neighbors.shape != () or neighbors.dtype.kind not in "iu":
      raise ValueError(f"'neighbors' must be an integer, got {neighbors!r}")
    if kind.shape != () or kind.dtype.kind != "U":
      raise ValueError(f"'kind' must be a string, got {kind!r}")
    return LocalNormalizer(codes=entries["codes"], scores=entries["scores"],
                           neighbors=int(neighbors), kind=str(kind))
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    raise artifact.ArtifactError(f"{path}: not a usable score normalizer ({e}); re-run the "
                                 "evaluation with its --score_normalization") from e


class NormalizedScorer:
  """A frame scorer whose scores are normalized by a ``LocalNormalizer``.

  Has ``FrameScorer``'s calling convention (``scorer(params, wave, *, name)``
  -> (T,), and ``.config``); the wrapped scorer must accept ``with_codes=True``
  (``frame_scores.FrameScorer``, or a PCA scorer of ``toycar``).
  """

  def __init__(self, scorer, normalizer: LocalNormalizer):
    self.scorer = scorer
    self.normalizer = normalizer
    self.config = scorer.config

  def __call__(self, params, wave, *, name: str = "waveform") -> np.ndarray:
    """The normalized frame scores of ``wave``, float32 (T,); chunk by chunk
    where the scorer has ``chunks`` (each frame is normalized by its own
    neighbours, so the result is the same, in bounded memory)."""
    chunks = getattr(self.scorer, "chunks", None)
    if chunks is None:
      scores, codes = self.scorer(params, wave, name=name, with_codes=True)
      return self.normalizer(codes, scores, name=name)
    return np.concatenate([self.normalizer(codes, scores, name=name)
                           for scores, codes in chunks(params, wave, name=name,
                                                       with_codes=True)])


def clip_frames(scorer, params, waves: Sequence[np.ndarray], *,
                names: Optional[Sequence[str]] = None) -> tuple[np.ndarray, np.ndarray]:
  """Codes and scores of the interior frames (``config.interior``) of ``waves``,
  concatenated: ((N, Z), (N,)). ``scorer`` accepts ``with_codes=True``."""
  if not waves:
    raise ValueError("at least one clip is needed")
  names = names or [f"training clip {i}" for i in range(len(waves))]
  codes, scores = [], []
  for wave, name in zip(waves, names):
    s, c = scorer(params, wave, name=name, with_codes=True)
    inner = scorer.config.interior(len(wave))
    scores.append(s[inner])
    codes.append(c[inner])
  return np.concatenate(codes), np.concatenate(scores)


def choose_neighbors(bank: LocalNormalizer, codes: Any, scores: Any, *,
                     candidates: Sequence[int] = CANDIDATES) -> tuple[int, dict[int, float]]:
  """k of "knn_z" under which held-out normal frames are most likely.

  "knn_z" models the log score of a frame as normal with the mean and
  standard deviation of its k nearest bank frames' log scores. A small k
  follows the modes closely but estimates the spread from few frames; a large
  k blurs the modes. The k kept is the one of ``candidates`` (those <= the
  bank's frames) that gives held-out normal frames (clips not in the bank)
  the highest mean log density, sum(-z^2 / 2 - ln s) / T: no labels, only
  normal training clips.

  Args:
    bank: the bank (its own ``neighbors`` is not used).
    codes, scores: the held-out frames, (T, Z) and (T,).
    candidates: the k to try.

  Returns:
    ``(k, {k: mean log density})`` (the first k on ties).

  Raises:
    ValueError: no candidate >= 2 fits the bank, or bad held-out frames.
  """
  codes = np.asarray(codes, np.float32)
  scores = np.asarray(scores, np.float64)
  _check_frames(codes, scores, bank.code_dim, "held-out frames")
  usable = sorted({int(k) for k in candidates if 2 <= k <= bank.frames})
  if not usable or not scores.size:
    raise ValueError(f"choose_neighbors: no k in {tuple(candidates)} fits a bank of "
                     f"{bank.frames} frames, or no held-out frames ({scores.size})")
  index = neighbors_lib.NearestNeighbors(n_neighbors=usable[-1]).fit(bank.codes).kneighbors(
      codes, return_distance=False)  # sorted by distance, so [:, :k] are the k nearest
  logs = np.log(np.maximum(scores, bank.floor))
  table = {}
  for k in usable:
    mean, spread = bank._log_spread(index[:, :k])  # pylint: disable=protected-access
    z = (logs - mean) / spread
    table[k] = float(np.mean(-0.5 * np.square(z) - np.log(spread)))
  best = max(usable, key=lambda k: (table[k], -k))
  return best, table


def fit_from_clips(scorer, params, waves: Sequence[np.ndarray], *, neighbors: int,
                   max_frames: int = MAX_FRAMES, kind: str = KIND,
                   names: Optional[Sequence[str]] = None,
                   heldout_waves: Sequence[np.ndarray] = ()) -> LocalNormalizer:
  """The bank of the interior frames of training clips, as evaluation scores them.

  Args:
    scorer: a scorer accepting ``with_codes=True`` (``frame_scores.FrameScorer``).
    params: its parameters.
    waves: the (normal) training clips.
    neighbors: k of the kNN; ``AUTO`` (0, "knn_z" only): chosen by
      ``choose_neighbors`` on ``heldout_waves``.
    max_frames: see ``fit_local_normalizer``.
    kind: "knn" or "knn_z" (see ``LocalNormalizer``).
    names: name the clips in error messages (default "training clip <i>").
    heldout_waves: normal clips not in ``waves``, for ``neighbors=AUTO``.

  Returns:
    A ``LocalNormalizer`` fitted on the codes and scores of the interior
    frames (``config.interior``) of every clip; with ``AUTO`` its
    ``choice`` holds the mean log density of each k tried.
  """
  if not waves:
    raise ValueError("fit_from_clips needs at least one training clip")
  codes, scores = clip_frames(scorer, params, waves, names=names)
  return fit_from_frames(scorer, params, codes, scores, neighbors=neighbors,
                         max_frames=max_frames, kind=kind, heldout_waves=heldout_waves)


def fit_from_frames(scorer, params, codes: Any, scores: Any, *, neighbors: int,
                    max_frames: int = MAX_FRAMES, kind: str = KIND,
                    heldout_waves: Sequence[np.ndarray] = ()) -> LocalNormalizer:
  """The bank of given frames (``codes`` in the model's code space and their
  ``scores``); ``neighbors=AUTO`` chooses k on ``heldout_waves`` scored by
  ``scorer`` (see ``fit_from_clips``, which it completes; the cross-fitted bank
  gives scores of other models, ``crossfit``)."""
  if neighbors != AUTO:
    return fit_local_normalizer(codes, scores, neighbors=neighbors, max_frames=max_frames,
                                kind=kind)
  check_setting(kind, neighbors)
  if not heldout_waves:
    raise ValueError("--normalization_neighbors=0 needs held-out normal clips to choose k")
  first = fit_local_normalizer(codes, scores, neighbors=2, max_frames=max_frames, kind=kind)
  held_codes, held_scores = clip_frames(
      scorer, params, heldout_waves,
      names=[f"held-out clip {i}" for i in range(len(heldout_waves))])
  k, table = choose_neighbors(first, held_codes, held_scores)
  return LocalNormalizer(codes=first.codes, scores=first.scores, neighbors=k, kind=kind,
                         choice=table)


def fit_heldout_banks(scorer, params, waves: Sequence[np.ndarray], *, neighbors: int,
                      kind: str = KIND_Z, max_frames: int = MAX_FRAMES,
                      names: Optional[Sequence[str]] = None
                      ) -> tuple[LocalNormalizer, list[LocalNormalizer]]:
  """The bank of held-out clips' frames, and each clip's leave-one-clip-out bank.

  A model fits its training clips better than sound it has not heard, and not
  equally well everywhere: a loss that weights rare frames up (eq. 16) fits the
  rare training frames more closely than it generalizes to rare test frames.
  A bank of *training* frames then expects too little of rare test frames. The
  held-out clips' frames are scored as test frames will be, by a model that did
  not train on them ("--normalization_bank=heldout"). Held-out clip i itself
  (for phi, the pseudo-anomaly AUC and the choice of k) is normalized by the
  bank of the *other* held-out clips, so that no frame is its own neighbour.

  Args:
    scorer: a scorer accepting ``with_codes=True`` (``frame_scores.FrameScorer``).
    params: its parameters.
    waves: the held-out normal clips (at least 2).
    neighbors: k; ``AUTO``: the k of ``CANDIDATES`` under which each held-out
      clip's frames are most likely given the other clips' bank (mean log
      density over all held-out frames, as ``choose_neighbors``).
    kind: "knn" or "knn_z".
    max_frames: see ``fit_local_normalizer`` (per bank).
    names: name the clips in error messages (default "held-out clip <i>").

  Returns:
    ``(bank of every held-out clip, [bank without clip i for each i])``; with
    ``AUTO`` the first's ``choice`` holds the mean log density of each k.

  Raises:
    ValueError: fewer than 2 clips, or a k that does not fit the banks.
  """
  if len(waves) < 2:
    raise ValueError(f"--normalization_bank=heldout needs at least 2 held-out clips, got "
                     f"{len(waves)} (raise --heldout_fraction)")
  names = list(names or [f"held-out clip {i}" for i in range(len(waves))])
  frames = [clip_frames(scorer, params, [w], names=[n]) for w, n in zip(waves, names)]
  others = [(np.concatenate([c for j, (c, _) in enumerate(frames) if j != i]),
             np.concatenate([s for j, (_, s) in enumerate(frames) if j != i]))
            for i in range(len(frames))]  # the frames of every clip but clip i
  table = None
  if neighbors == AUTO:
    check_setting(kind, neighbors)
    smallest = min(len(scores) for _, scores in others)
    usable = [k for k in CANDIDATES if 2 <= k <= smallest]
    if not usable:
      raise ValueError(f"--normalization_bank=heldout: the held-out clips have too few frames "
                       f"({smallest} without one clip) for any k of {CANDIDATES}")
    total, count = dict.fromkeys(usable, 0.0), 0
    for i, (codes, scores) in enumerate(frames):
      bank = fit_local_normalizer(*others[i], neighbors=2, max_frames=max_frames, kind=kind)
      _, density = choose_neighbors(bank, codes, scores, candidates=usable)
      for k in usable:
        total[k] += density[k] * scores.size
      count += scores.size
    table = {k: v / max(count, 1) for k, v in total.items()}
    neighbors = max(usable, key=lambda k: (table[k], -k))
  full = fit_local_normalizer(np.concatenate([c for c, _ in frames]),
                              np.concatenate([s for _, s in frames]), neighbors=neighbors,
                              max_frames=max_frames, kind=kind)
  loco = [fit_local_normalizer(*rest, neighbors=neighbors, max_frames=max_frames, kind=kind)
          for rest in others]
  return dataclasses.replace(full, choice=table), loco


def prepare(scorer, params, waves: Sequence[np.ndarray], *, kind: str, neighbors: int,
            directory: str, heldout_waves: Sequence[np.ndarray] = (),
            names: Optional[Sequence[str]] = None) -> tuple[Any, Optional[LocalNormalizer]]:
  """What the experiments do with ``--score_normalization``: the scorer to evaluate
  with and its bank, saved as ``<directory>/score_normalizer.npz``.

  "none": ``(scorer, None)``, and an earlier run's bank in ``directory`` is
  removed (no calibration names it any more). "knn" / "knn_z": the bank of
  ``waves`` (``fit_from_clips``; ``heldout_waves`` choose k when ``neighbors``
  is ``AUTO``), saved atomically, and ``(NormalizedScorer, bank)``.
  """
  path = os.path.join(directory, FILE_NAME)
  if kind == "none":
    if os.path.exists(path):
      os.remove(path)
    return scorer, None
  normalizer = fit_from_clips(scorer, params, waves, neighbors=neighbors, kind=kind,
                              names=names, heldout_waves=heldout_waves)
  normalizer.save(path)
  return NormalizedScorer(scorer, normalizer), normalizer
