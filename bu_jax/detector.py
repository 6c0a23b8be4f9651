"""Frame-wise anomaly detection in new recordings with a trained autoencoder.

``load_detector(workdir)`` restores the parameters of a model trained by
``bu_jax.toycar`` (any loss) together with its feature settings and its
calibrated threshold φ from the latest checkpoint (``bu_jax.artifact``);
``Detector.score(wave)``
then gives, for one recording of any length,

- the frame scores A(x_t) (eq. 5), computed in chunks with bounded memory
  (``bu_jax.frame_scores.FrameScorer``); normalized by the scores of the k
  nearest training frames in code space if the model was calibrated on such
  normalized scores (``--score_normalization=knn`` or ``knn_z``:
  ``bu_jax.score_norm``, the bank ``score_normalizer.npz`` stored next to the
  checkpoints);
- the clip decision: anomalous if any frame's score reaches φ (eq. 4), i.e. if
  the clip score max_t A(x_t) (eq. 11) is >= φ (or the mean over frames, if the
  model was calibrated with ``reduce="mean"``; or the mean of W consecutive
  frames, if it was calibrated with a clip-score window of W frames,
  ``evaluate.clip_score``);
- the time ranges of the frames whose score (window mean) reaches φ, merged
  into events (``window_flags``, ``events_from_flags``).

``run(ScoreSettings(...))`` is the whole ``experiments.score`` job: it scores
sound files (WAV, FLAC, Ogg, Opus, MP3, AIFF, W64, RF64) and folders of them, skips (and
reports) unreadable ones, and writes
``scores.csv`` and optionally one plot per recording.

Frame t is centred at t * hop / sr seconds (centred STFT, ``features``).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import math
import os
import tempfile
from typing import Any, Callable, Iterable, NamedTuple, Optional, Sequence

from absl import logging
import numpy as np

from bu_jax import artifact
from bu_jax import audio
from bu_jax import cli
from bu_jax import evaluate
from bu_jax import fileio
from bu_jax import features as features_lib
from bu_jax import losses as losses_lib
from bu_jax import models
from bu_jax import plots
from bu_jax import progress as progress_lib
from bu_jax import frame_scores
from bu_jax import score_norm

CSV_COLUMNS = ("path", "max_score", "clip_score", "decision", "events",
               "threshold", "start_s", "duration_s", "note")
# One row per event (write_events_csv): where, how long, and the highest score in it.
EVENT_COLUMNS = ("path", "start_s", "end_s", "duration_s", "peak", "threshold")
AUDIO_SUFFIXES = audio.SOUND_SUFFIXES
# A recording this many times as long as the clips φ was set on gets a note.
LONG_FACTOR = 2.0

# No usable trained model: no checkpoint, an ambiguous choice, bad metadata, a
# mismatch, or no threshold to decide with.
DetectorError = artifact.ArtifactError


class Failure(tuple):
  """A recording, or a piece of one, that could not be scored: the pair
  ``(path, message)`` (it unpacks and compares as that pair), and for a piece
  its ``start_s`` and ``duration_s`` in the recording (else None)."""

  def __new__(cls, path: str, message: str, *, start_s: Optional[float] = None,
              duration_s: Optional[float] = None) -> "Failure":
    failure = super().__new__(cls, (path, message))
    failure.start_s, failure.duration_s = start_s, duration_s
    return failure

  def __getnewargs_ex__(self):  # copy, deepcopy and pickle rebuild it through __new__
    return (self[0], self[1]), {"start_s": self.start_s, "duration_s": self.duration_s}

  @property
  def path(self) -> str:
    return self[0]

  @property
  def message(self) -> str:
    return self[1]


class Event(NamedTuple):
  """A time range [start_s, end_s] of frames whose score reaches φ."""

  start_s: float
  end_s: float


@dataclasses.dataclass(frozen=True)
class FrameResult:
  """Detection result of one recording.

  Attributes:
    frame_scores: A(x_t) for every frame t (eq. 5), float32 (T,).
    times_s: the centre of each frame, t * hop / sr, float64 (T,).
    clip_score: max_t A(x_t) (eq. 11), the mean for ``reduce="mean"``, or the
      maximum of the means of ``window`` consecutive frames.
    decision: True if anomalous, clip_score >= threshold (eq. 4).
    events: merged time ranges of the frames with A(x_t) >= threshold (of the
      windows whose mean is, with a clip-score window).
    threshold: the φ used.
    max_score: max_t A(x_t).
    duration_s: length of the recording (or piece) in seconds.
    window: frames per mean of the clip score (1: eq. 11).
    window_times_s, window_means: with ``window`` > 1, the means of every
      ``window`` consecutive interior frames (what φ applies to) and the
      centre time of each window; None otherwise.
    note: why the decision is weaker than usual (a recording too short for one
      frame with its context or for one clip-score window, or much longer than
      the clips φ was set on), or "".
    start_s: where this piece starts in its recording (``--piece_s``; 0 for a
      whole recording); ``times_s``, ``events`` and ``window_times_s`` are then
      times in the recording, and ``duration_s`` is the piece's length.
    scored_frames: the frames the clip score and the events use (the interior
      ones, ``features.FeatureConfig.interior``: the frames at the ends see
      padding); None: all.
  """

  frame_scores: np.ndarray
  times_s: np.ndarray
  clip_score: float
  decision: bool
  events: tuple[Event, ...]
  threshold: float
  max_score: float
  duration_s: float
  window: int = 1
  window_times_s: Optional[np.ndarray] = None
  window_means: Optional[np.ndarray] = None
  note: str = ""
  start_s: float = 0.0
  scored_frames: Optional[slice] = None

  @property
  def label(self) -> str:
    return "anomalous" if self.decision else "normal"


# ------------------------------------------------------------------ events


def window_flags(scores: Any, threshold: float, *, window: int) -> np.ndarray:
  """The frames of every window of ``window`` consecutive frames whose mean
  score reaches ``threshold`` (the windows of ``evaluate.window_means``;
  ``window=1``: the frames with A(x_t) >= threshold, eq. 4). A window holding a
  NaN is never flagged.

  Returns:
    A boolean array of the scores' length.
  """
  scores = np.asarray(scores, dtype=np.float64).ravel()
  if not math.isfinite(threshold):
    raise ValueError(f"threshold must be finite, got {threshold}")
  evaluate.check_window(window)
  w = min(int(window), scores.size)
  if w <= 1:
    return scores >= threshold
  with np.errstate(invalid="ignore"):  # +inf and -inf in one window: NaN, not flagged
    means = np.convolve(scores, np.ones(w), mode="valid") / w
    hit = means >= threshold
  return np.convolve(hit.astype(np.float64), np.ones(w), mode="full") > 0


def events_from_flags(flags: Any, *, hop_s: float, merge_gap_s: float = 0.1,
                      duration_s: Optional[float] = None) -> list[Event]:
  """Merged time ranges of the flagged frames.

  Frame t is centred at ``t * hop_s``. A run of consecutive flagged frames
  a..b spans [a hop_s - hop_s/2, b hop_s + hop_s/2]; runs separated by a gap
  shorter than ``merge_gap_s`` seconds are merged into one event. Ranges are
  clipped to [0, duration_s] (the end only if ``duration_s`` is given).

  Args:
    flags: booleans, one per frame, shape (T,).
    hop_s: frame hop in seconds (hop_length / sample_rate).
    merge_gap_s: runs closer than this (end to start) are merged; 0 merges
      nothing but touching runs cannot occur, so 0 keeps every run.
    duration_s: length of the recording, to clip the last event.

  Returns:
    Events (start_s, end_s), in time order, non-overlapping.
  """
  if not hop_s > 0:
    raise ValueError(f"hop_s must be > 0, got {hop_s}")
  if not merge_gap_s >= 0:
    raise ValueError(f"merge_gap_s must be >= 0, got {merge_gap_s}")
  hits = np.asarray(flags, dtype=bool).ravel()
  flagged = np.zeros(hits.size + 2, np.int8)
  flagged[1:-1] = hits
  edges = np.diff(flagged)
  first = np.flatnonzero(edges == 1)  # first frame of each run
  last = np.flatnonzero(edges == -1) - 1  # last frame of each run
  if first.size == 0:
    return []
  starts = np.maximum(first * hop_s - hop_s / 2, 0.0)
  ends = last * hop_s + hop_s / 2
  if duration_s is not None:
    ends = np.minimum(ends, max(float(duration_s), 0.0))
  separate = starts[1:] - ends[:-1] >= merge_gap_s
  starts = starts[np.concatenate([[True], separate])]
  ends = ends[np.concatenate([separate, [True]])]
  return [Event(float(s), float(e)) for s, e in zip(starts, ends)]


def events_from_scores(scores: Any, threshold: float, *, hop_s: float,
                       merge_gap_s: float = 0.1,
                       duration_s: Optional[float] = None, window: int = 1) -> list[Event]:
  """Merged time ranges of the frames whose score reaches ``threshold`` (eq. 4):
  ``events_from_flags`` of ``window_flags``.

  Args:
    scores: frame scores A(x_t), shape (T,). NaN or -inf never counts as flagged.
    threshold: φ; a frame is anomalous when its score is >= φ.
    hop_s, merge_gap_s, duration_s: see ``events_from_flags``.
    window: flag the frames of each window of this many frames whose mean
      score reaches φ (``window_flags``; 1: each frame on its own).

  Returns:
    Events (start_s, end_s), in time order, non-overlapping.
  """
  return events_from_flags(window_flags(scores, threshold, window=window), hop_s=hop_s,
                           merge_gap_s=merge_gap_s, duration_s=duration_s)


def event_decimals(start_s: float, end_s: float, decimals: int = 3) -> int:
  """The decimals to show an event with: ``decimals``, or more (up to 6, a
  microsecond) where its start and end would print alike (an event of a
  recording shorter than the precision shown, e.g. one sample long)."""
  while decimals < 6 and end_s > start_s and f"{start_s:.{decimals}f}" == f"{end_s:.{decimals}f}":
    decimals += 1
  return decimals


def format_events(events: Iterable[Event], *, decimals: int = 3) -> str:
  """``"start-end;start-end"`` in seconds (empty string for no events); an event
  shorter than ``decimals`` show gets more (``event_decimals``)."""
  return ";".join(f"{s:.{d}f}-{e:.{d}f}" for s, e in events
                  for d in [event_decimals(s, e, decimals)])


def parse_events(text: str) -> list[Event]:
  """Inverse of ``format_events``."""
  if not text.strip():
    return []
  return [Event(*map(float, part.split("-"))) for part in text.split(";")]


def quantile_text(fpr: float) -> str:
  """The quantile 1 - ``fpr`` as printed: ``fpr``'s 6 significant digits, without
  the float noise of the subtraction (``fpr=0.999999``: "0.000001", not
  "1.00000000003e-06"; ``fpr=1e-7``: "0.9999999", not "1")."""
  decimals = max(0, -math.floor(math.log10(fpr))) + 5
  return f"{1.0 - fpr:.{decimals}f}".rstrip("0").rstrip(".")


# ------------------------------------------------------------------ detector


@dataclasses.dataclass
class Detector:
  """A trained autoencoder with its features and calibration, ready to score.

  Attributes:
    metadata: the checkpoint's record (``artifact.ModelMetadata``: loss,
      features and AE size, and the calibration φ, ``reduce``, held-out clip
      scores, which is None for an uncalibrated model).
    params: the AE parameters.
    model_dir: where it was loaded from (None if built in memory).
    step: the checkpoint step.
    chunk_frames: frames scored per device call (bounds memory).
    normalizer: the bank that normalizes the frame scores; required exactly
      when the calibration records a score normalization (``load_detector``
      reads it).

  Raises:
    DetectorError: a normalizer missing, unexpected or of another code size.
  """

  metadata: artifact.ModelMetadata
  params: Any
  model_dir: Optional[str] = None
  step: Optional[int] = None
  chunk_frames: int = 4096
  normalizer: Optional[score_norm.LocalNormalizer] = None

  def __post_init__(self):
    self.model = self.preset.build()
    self.scorer = frame_scores.FrameScorer(self.model, self.preset.features,
                                           chunk_frames=self.chunk_frames)
    wanted = self.normalization
    if (wanted is None) != (self.normalizer is None):
      raise DetectorError(
          f"{self.describe()}: the calibration " + (
              f"applies to {wanted.describe()}, but no normalizer was given" if wanted else
              "applies to raw scores, but a score normalizer was given"))
    if self.normalizer is not None:
      if self.normalizer.code_dim != self.preset.bottleneck:
        raise DetectorError(f"{self.describe()}: the score normalizer holds codes of size "
                            f"{self.normalizer.code_dim}, the model's are "
                            f"{self.preset.bottleneck}")
      self.scorer = score_norm.NormalizedScorer(self.scorer, self.normalizer)

  @property
  def preset(self) -> models.ModelPreset:
    """Features and AE size."""
    return self.metadata.preset

  @property
  def feature_config(self) -> features_lib.FeatureConfig:
    return self.preset.features

  @property
  def sample_rate(self) -> int:
    return self.feature_config.sample_rate

  @property
  def hop_s(self) -> float:
    return self.feature_config.hop_length / self.feature_config.sample_rate

  @property
  def loss(self) -> str:
    return self.metadata.loss

  @property
  def calibration(self) -> Optional[artifact.Calibration]:
    """The stored φ and how it was set (None for an uncalibrated model)."""
    return self.metadata.calibration

  @property
  def normalization(self) -> Optional[artifact.ScoreNormalization]:
    """How the frame scores are normalized before φ applies (None: raw scores)."""
    return self.calibration.normalization if self.calibration else None

  @property
  def reduce(self) -> str:
    return self.calibration.reduce if self.calibration else "max"

  @property
  def window(self) -> int:
    """Frames per mean of the clip score (1: eq. 11)."""
    return self.calibration.window if self.calibration else 1

  @property
  def threshold(self) -> Optional[float]:
    """The stored φ (calibrated on held-out normal clips), or None."""
    return self.calibration.threshold if self.calibration else None

  def describe(self) -> str:
    where = f"{self.model_dir} (step {self.step})" if self.model_dir else "in memory"
    how = f", {self.normalization.describe()}" if self.normalization else ""
    return f"{self.loss} / {self.preset.name}{how}, {where}"

  def resolve_threshold(self, *, threshold: Optional[float] = None,
                        fpr: Optional[float] = None) -> tuple[float, str]:
    """φ to use, and where it comes from.

    Args:
      threshold: an explicit φ (overrides the stored one).
      fpr: recalibrate φ as the (1 - fpr) quantile of a gamma distribution
        fitted to the stored held-out normal clip scores
        (``evaluate.fit_threshold``), for a target false-positive rate.

    Raises:
      ValueError: both given, or values out of range (a threshold at or below 0
        would flag every clip: scores, raw or normalized, are never negative).
      DetectorError: the checkpoint lacks what is needed (no stored φ, or no
        held-out scores for ``fpr``).
    """
    if threshold is not None and fpr is not None:
      raise ValueError("give either a threshold or a false-positive rate (fpr), not both")
    if threshold is not None:
      if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
      if threshold <= 0:  # squared errors (eq. 5), their ratios or exp(...): all positive
        raise ValueError(
            f"threshold {threshold:g} would flag every clip: the scores of "
            f"{self.describe()} are never negative; give a positive threshold (the stored "
            f"one is {'none' if self.threshold is None else f'{self.threshold:.6g}'})")
      return float(threshold), "given"
    if fpr is not None:
      if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must lie in (0, 1), got {fpr}")
      held = self.calibration.heldout_clip_scores if self.calibration else ()
      if not held:
        raise DetectorError(f"{self.describe()}: no held-out normal clip scores stored, "
                            "cannot recalibrate for a false-positive rate; give a threshold")
      held = np.asarray(held, np.float64)
      phi = evaluate.fit_threshold(held, quantile=1.0 - fpr)
      fit = ("gamma fit, location 0" if evaluate.gamma_fit_applies(held) else
             "empirical: too few or non-positive scores for a gamma fit")
      return phi, (f"recalibrated: {quantile_text(fpr)} quantile of {held.size} held-out normal "
                   f"clip scores, {fit}")
    if self.threshold is None:
      held = self.calibration.heldout_clip_scores if self.calibration else ()
      config = self.metadata.train_config or {}
      try:
        total = int(config["epochs"]) * int(config["steps_per_epoch"])
      except (KeyError, TypeError, ValueError):
        total = None
      stopped = (f"it stopped at step {self.step} of {total}, before " if total
                 and self.step is not None and self.step < total else "it stopped before ")
      raise DetectorError(
          f"{self.describe()}: the checkpoint holds no calibrated threshold: {stopped}the "
          "evaluation that calibrates one on held-out normal clips. Run its training "
          "command again on the same workdir (it resumes, or only evaluates a finished "
          "model), or give a threshold (--threshold)"
          + (" or a false-positive rate (--fpr)" if held else ""))
    how = self.calibration.describe()
    return self.threshold, "stored" + (f": {how}" if how else "")

  def frame_scores(self, wave: Any, *, name: str = "waveform") -> np.ndarray:
    """A(x_t) (eq. 5) of every frame of a mono waveform at ``sample_rate``
    (normalized, for a model calibrated on normalized scores)."""
    return self.scorer(self.params, wave, name=name)

  def score(self, wave: Any, *, name: str = "waveform", threshold: Optional[float] = None,
            merge_gap_s: float = 0.1) -> FrameResult:
    """Frame scores, clip decision (eqs. 4, 11) and events of one recording.

    Args:
      wave: mono float waveform at ``sample_rate`` Hz, any length, or an
        ``audio.Recording`` (read range by range).
      name: names the recording in error messages.
      threshold: φ; default the stored one.
      merge_gap_s: see ``events_from_flags``.

    Raises:
      ValueError: an unusable waveform (the message includes ``name``).
      DetectorError: no threshold given and none stored.
    """
    phi = self.resolve_threshold(threshold=threshold)[0]
    if not isinstance(wave, audio.Recording):  # never read whole
      wave = np.asarray(wave)
    scores = self.frame_scores(wave, name=name)
    # Frames whose STFT window or context reaches past the recording's ends see
    # zero padding and score high on every recording: clip score and events
    # use the interior frames only (features.FeatureConfig.interior).
    inner = self.preset.features.interior(wave.shape[-1])
    clip = evaluate.interior_clip_score(scores, num_samples=wave.shape[-1],
                                        feature_config=self.preset.features,
                                        reduce=self.reduce, window=self.window)
    flagged = np.zeros(scores.shape, bool)  # interior frames only, as the clip score
    flagged[inner] = window_flags(scores[inner], phi, window=self.window)
    duration = wave.shape[-1] / self.sample_rate
    curve = {}
    if self.window > 1:  # what phi applies to, at each window's centre
      first = np.arange(scores.size)[inner]
      means = evaluate.window_means(scores[inner], window=self.window)
      centres = first[0] + (first.size - means.size) / 2 + np.arange(means.size)
      curve = dict(window_times_s=centres * self.hop_s, window_means=means)
    return FrameResult(
        frame_scores=scores,
        times_s=np.arange(scores.size) * self.hop_s,
        clip_score=clip,
        decision=evaluate.decide(clip, phi),
        events=tuple(events_from_flags(flagged, hop_s=self.hop_s, merge_gap_s=merge_gap_s,
                                       duration_s=duration)),
        threshold=float(phi),
        max_score=float(np.max(scores[inner])),
        duration_s=float(duration), window=self.window, scored_frames=inner, **curve)


def load_detector(workdir: os.PathLike | str, *, loss: Optional[str] = None,
                  chunk_frames: int = 4096) -> Detector:
  """Loads the latest checkpoint of a trained model for scoring.

  Args:
    workdir: a model directory (with ``checkpoints/``) or a ``bu_jax.toycar``
      workdir holding ``<loss>/checkpoints``; see ``artifact.find_model_dir``.
    loss: picks the model of a toycar workdir ("re", "snp", "bu").
    chunk_frames: frames per scoring call (memory bound; results don't change).

  Returns:
    A ``Detector`` with the parameters, the features and the metadata of the
    latest checkpoint.

  Raises:
    DetectorError: no checkpoint, an ambiguous choice, metadata that does
      not match the stored parameters, or a score normalizer (that the
      calibration names) missing, damaged or not matching (naming the file).
  """
  trained = artifact.load_for_scoring(artifact.find_model_dir(workdir, loss=loss), loss=loss)
  logging.info("Loaded %s / %s from step %d of %s.", trained.metadata.loss, trained.preset.name,
               trained.step, trained.model_dir)
  calibration = trained.metadata.calibration
  normalizer = None
  if calibration is not None and calibration.normalization is not None:
    normalizer = _load_normalizer(trained.model_dir, calibration.normalization,
                                  code_dim=trained.preset.bottleneck)
  return Detector(metadata=trained.metadata, params=trained.params,
                  model_dir=trained.model_dir, step=trained.step, chunk_frames=chunk_frames,
                  normalizer=normalizer)


def _load_normalizer(model_dir: str, wanted: artifact.ScoreNormalization, *,
                     code_dim: int) -> score_norm.LocalNormalizer:
  """The bank the calibration names, checked against it and the model.

  Raises:
    DetectorError: the file is missing, damaged, holds another kind, k or code
      size, or (when the calibration stored its fingerprint) another bank.
  """
  path = os.path.join(model_dir, wanted.file)
  normalizer = score_norm.load_local_normalizer(path)
  if (normalizer.kind != wanted.kind or normalizer.neighbors != wanted.neighbors
      or normalizer.code_dim != code_dim):
    raise DetectorError(
        f"{path}: a {normalizer.kind} score normalizer of {normalizer.neighbors} neighbours "
        f"and codes of size {normalizer.code_dim}, but the calibration names {wanted.kind} "
        f"of {wanted.neighbors} neighbours and the model's codes have size {code_dim}; "
        f"re-run the evaluation with --score_normalization={wanted.kind}")
  if wanted.fingerprint is not None and normalizer.fingerprint != wanted.fingerprint:
    raise DetectorError(
        f"{path}: not the bank this model was calibrated with (its contents hash to "
        f"{normalizer.fingerprint}, the calibration names {wanted.fingerprint}); it was "
        "replaced or written by another model. Re-run the evaluation to refit it")
  logging.info("Loaded the score normalizer %s (%s).", path, normalizer.describe())
  return normalizer


# ------------------------------------------------------------------ many files


def expand_paths(paths: Sequence[os.PathLike | str]) -> tuple[list[str], list[tuple[str, str]]]:
  """Files to score, and (path, problem) for paths that give none.

  A directory contributes its sound files (``AUDIO_SUFFIXES``: WAV, FLAC, Ogg,
  Opus, MP3, AIFF, W64, RF64; any case, recursively, sorted);
  a file is taken as given (``audio.load_wav`` decides whether it is audio).
  Duplicates (the same file, or a link to it) are scored once, with a warning
  counting them.
  """
  files, failures, seen, repeated = [], [], {}, []
  for path in map(os.fspath, paths):
    if os.path.isdir(path):
      found = _audio_below(path)
      if not found:
        failures.append((path, f"{path}: directory holds no {'/'.join(AUDIO_SUFFIXES)} files"))
      candidates = found
    elif os.path.exists(path):
      candidates = [path]
    else:
      failures.append((path, f"{path}: no such file or directory"))
      candidates = []
    for file in candidates:
      key = os.path.realpath(file)
      if key not in seen:
        seen[key] = file
        files.append(file)
      else:
        repeated.append(f"{file} (= {seen[key]})")
  if repeated:
    logging.warning("%d path(s) named a recording already listed (the same file, or a link to "
                    "it): each recording is scored once; %s", len(repeated),
                    ", ".join(repeated[:3]) + (", ..." if len(repeated) > 3 else ""))
  return files, failures


def _audio_below(top: str) -> list[str]:
  """The audio files below ``top``, sorted; linked folders are followed (each real
  folder once, so a link back up the tree ends the descent)."""
  found, visited = [], set()
  for root, dirs, names in os.walk(top, followlinks=True):
    real = os.path.realpath(root)
    if real in visited:
      dirs[:] = []
      continue
    visited.add(real)
    found += [os.path.join(root, n) for n in names if n.lower().endswith(AUDIO_SUFFIXES)]
  return sorted(found)


def pieces(num_samples: int, piece_samples: int) -> list[tuple[int, int]]:
  """``[start, end)`` sample ranges cutting a recording into consecutive pieces of
  ``piece_samples`` (0: one piece, the whole); a last piece shorter than half of
  one joins the piece before it, so every piece is 0.5-1.5 pieces long."""
  if piece_samples <= 0 or num_samples <= piece_samples:
    return [(0, num_samples)]
  starts = list(range(0, num_samples, piece_samples))
  if num_samples - starts[-1] < piece_samples / 2:
    starts.pop()
  return list(zip(starts, starts[1:] + [num_samples]))


def _shifted(result: FrameResult, start_s: float) -> FrameResult:
  """``result`` of a piece starting ``start_s`` into its recording, its times
  made times in the recording."""
  if not start_s:
    return result
  return dataclasses.replace(
      result, start_s=start_s, times_s=result.times_s + start_s,
      events=tuple(Event(a + start_s, b + start_s) for a, b in result.events),
      window_times_s=(None if result.window_times_s is None
                      else np.asarray(result.window_times_s) + start_s))


UNCHANGING_NOTE = ("every frame scores alike: its sound never changes (silence or a constant "
                   "level: a dead microphone, a muted or unplugged input?)")


def _unchanging(result: FrameResult) -> bool:
  """Whether every frame the clip score uses has the same score, to the bit: what
  a constant input (all samples 0, or one DC level) gives, and recorded sound never
  does over two frames or more."""
  scores = (result.frame_scores if result.scored_frames is None
            else result.frame_scores[result.scored_frames])
  return scores.size >= 2 and bool(np.all(scores == scores[0]))


def iter_scores(detector: Detector, files: Sequence[str], *, threshold: float,
                merge_gap_s: float = 0.1, piece_s: float = 0.0,
                on_read: Optional[Callable[[str, float], None]] = None,
                on_done: Optional[Callable[[str], None]] = None,
                ) -> Iterable[tuple[str, Optional[FrameResult], Optional[Failure]]]:
  """Scores ``files`` one by one: ``(path, FrameResult, None)`` for each scored
  file (for each of its pieces of ``piece_s`` seconds, ``pieces``, when given,
  each as soon as it is scored), ``(path, None, Failure)`` for each unreadable
  or unusable one (its message also logged as a warning), or piece: a piece
  that cannot be scored (NaN samples an hour into a long recording) is reported
  with its start and length, and the pieces after it are scored. A generator, so a caller keeps
  what was scored when it is interrupted. ``on_read(path, seconds)`` is told
  how far into a long recording (one read range by range, ``audio.Recording``)
  the scoring has read, and where a failed piece ends (``inf`` for a file that
  failed whole); ``on_done(path)`` when a file's last row has been taken."""
  sr = detector.sample_rate
  told_how: set[str] = set()  # recording_notes' warnings given: each once per run
  for path in files:
    try:
      # A long recording is read range by range (audio.Recording); of a
      # WAV cut short, the samples present are scored, with a note.
      wave = audio.open_recording(path, sr=sr, cut_short_ok=True)
    except (ValueError, OSError) as e:  # AudioError and FeatureInputError are ValueErrors.
      if on_read is not None:
        on_read(path, math.inf)  # all of it is done with
      yield path, None, Failure(path, _skipped(path, e))
      if on_done is not None:
        on_done(path)
      continue
    recording = isinstance(wave, audio.Recording)
    # Channels that cancel in the mono mix (logged once): of a file loaded whole, by
    # reading its channels; of a long one, over the ranges its pieces have read.
    cancel = "" if recording else audio.channel_note(path, wave)
    told = _tell(path, cancel, False)
    # How it was made (its rate, a lossy codec), on each of its rows (logged once).
    made = audio.recording_notes(path, sr=sr, told=told_how)
    if on_read is not None and recording:
      wave.on_read = lambda end, path=path: on_read(path, end / sr)
    cuts = pieces(len(wave), int(round(piece_s * sr)))
    for a, b in cuts:
      try:
        notes = [n for n in (detector.feature_config.short_clip_note(b - a),
                             features_lib.short_window_note([b - a], detector.feature_config,
                                                            window=detector.window)[1]) if n]
        for note in notes:
          logging.warning("%s: %s", path, note)
        notes = made + notes
        if (a, b) == cuts[-1] and getattr(wave, "note", ""):
          notes.append(wave.note)  # a file cut short, on its last row (logged when opened)
        # A Recording's piece is read range by range too (never whole).
        piece = wave if (a, b) == (0, len(wave)) else (
            wave.section(a, b) if recording else wave[a:b])
        result = detector.score(piece, name=path, threshold=threshold,
                                merge_gap_s=merge_gap_s)
      except (ValueError, OSError) as e:
        if on_read is not None:
          on_read(path, b / sr)
        if len(cuts) > 1:
          yield path, None, Failure(path, _skipped(path, e, where=f"the piece from {a / sr:g} s"),
                                    start_s=a / sr, duration_s=(b - a) / sr)
        else:
          yield path, None, Failure(path, _skipped(path, e))
        continue
      if recording:
        cancel = audio.channel_note(path, wave)
        told = _tell(path, cancel, told)
      if cancel:  # what makes every frame alike, if they are: no dead microphone
        notes.insert(0, cancel)
      elif _unchanging(result):
        logging.warning("%s: %s", path, UNCHANGING_NOTE)
        notes.insert(0, UNCHANGING_NOTE)
      result = _shifted(dataclasses.replace(result, note="; ".join(notes)), a / sr)
      logging.info("%s: %s, max score %.4g, %d event(s)", path, result.label, result.max_score,
                   len(result.events))
      yield path, result, None
    if on_done is not None:
      on_done(path)


def _tell(path: str, note: str, told: bool) -> bool:
  """Logs ``note`` (if any) as a warning unless one was ``told`` already (a note on
  every piece of a recording is logged once); whether one has been."""
  if note and not told:
    logging.warning("%s: %s", path, note)
  return told or bool(note)


def _skipped(path: str, error: Exception, *, where: str = "") -> str:
  """The message (logged as a warning) of a file, or piece, that was not scored."""
  message = str(error) if path in str(error) else f"{path}: {error}"
  message += f" ({where})" if where else ""
  logging.warning("Skipping %s", message)
  return message


def _expand_and_report(paths: Sequence[os.PathLike | str]
                       ) -> tuple[list[str], list[tuple[str, str]]]:
  """``expand_paths``, each path that gives no file logged as a warning."""
  files, failures = expand_paths(paths)
  for _, message in failures:
    logging.warning("Skipping %s", message)
  return files, failures


def score_paths(detector: Detector, paths: Sequence[os.PathLike | str], *,
                threshold: Optional[float] = None, merge_gap_s: float = 0.1,
                piece_s: float = 0.0,
                ) -> tuple[list[tuple[str, FrameResult]], list[tuple[str, str]]]:
  """Scores sound files (WAV, FLAC, Ogg, Opus, MP3, AIFF, W64, RF64) and folders of them;
  unreadable ones are skipped.

  Args:
    detector: from ``load_detector``.
    paths: files and directories (see ``expand_paths``).
    threshold: φ (default: the detector's stored one).
    merge_gap_s: see ``events_from_flags``.
    piece_s: score each file in pieces of this many seconds (``pieces``; 0:
      whole files), one result per piece.

  Returns:
    ``(results, failures)``: ``[(path, FrameResult)]`` of the scored files (or
    pieces) in order, and ``[(path, message)]`` of the missing, unreadable or unusable
    ones (each also logged as a warning; a ``Failure``, with its start, for a piece).
  """
  phi = detector.resolve_threshold(threshold=threshold)[0]
  files, failures = _expand_and_report(paths)
  results = []
  for path, result, failure in iter_scores(detector, files, threshold=phi,
                                           merge_gap_s=merge_gap_s, piece_s=piece_s):
    if result is None:
      failures.append(failure)
    else:
      results.append((path, result))
  return results, failures


# ------------------------------------------------------------------ outputs


def write_csv(path: os.PathLike | str, results: Sequence[tuple[str, FrameResult]],
              failures: Sequence[tuple[str, str]] = (), *,
              threshold: Optional[float] = None) -> str:
  """One row per recording: ``CSV_COLUMNS`` (events as "start-end;start-end" s).

  A recording that could not be scored (``failures``: ``(path, message)``) gets
  a row too, with ``decision`` "failed", empty scores and the message as its
  ``note``; ``threshold`` is written in those rows, and a piece's start and
  length (a ``Failure`` of a piece). Written atomically (temporary file +
  rename); parent folders are created.
  """
  phi = "" if threshold is None else repr(float(threshold))
  seconds = lambda s: "" if s is None else f"{s:.3f}"
  return fileio.write_csv(path, [
      [name, repr(r.max_score), repr(r.clip_score), r.label, format_events(r.events),
       repr(r.threshold), f"{r.start_s:.3f}", f"{r.duration_s:.3f}", r.note]
      for name, r in results] + [
          [failure[0], "", "", "failed", "", phi,
           seconds(getattr(failure, "start_s", None)),
           seconds(getattr(failure, "duration_s", None)), failure[1]] for failure in failures],
      header=CSV_COLUMNS)


def event_peaks(result: FrameResult) -> list[float]:
  """The highest value, within each of ``result.events``, of the curve φ applies
  to: the scored frames' scores, or the window means (at their centres) of a
  model with a clip-score window."""
  if result.window_means is not None:
    times, curve = np.asarray(result.window_times_s), np.asarray(result.window_means)
  else:
    inner = result.scored_frames if result.scored_frames is not None else slice(None)
    times, curve = result.times_s[inner], result.frame_scores[inner]
  peaks = []
  for start, end in result.events:
    a = np.searchsorted(times, start - 1e-9, side="left")
    b = np.searchsorted(times, end + 1e-9, side="right")
    peaks.append(float(np.max(curve[a:b])) if b > a else math.nan)
  return peaks


def events_csv_path(csv_path: os.PathLike | str) -> str:
  """Where ``run`` writes the events next to the scores: ``scores.csv`` ->
  ``scores_events.csv``."""
  return os.path.splitext(os.fspath(csv_path))[0] + "_events.csv"


def write_events_csv(path: os.PathLike | str, results: Sequence[tuple[str, FrameResult]]) -> str:
  """One row per event of every recording (or piece): ``EVENT_COLUMNS``, times
  in seconds in the recording, ``peak`` from ``event_peaks``; in the recordings'
  order, then by time (sort by ``peak`` to review the strongest first).
  Written atomically."""
  rows = []
  for name, result in results:
    for (start, end), peak in zip(result.events, event_peaks(result)):
      d = event_decimals(start, end)
      rows.append([name, f"{start:.{d}f}", f"{end:.{d}f}", f"{end - start:.{d}f}", repr(peak),
                   repr(result.threshold)])
  return fileio.write_csv(path, rows, header=EVENT_COLUMNS)


def read_csv(path: os.PathLike | str) -> list[dict[str, str]]:
  """The rows of a ``write_csv`` file as dicts."""
  with open(path, newline="", encoding="utf-8") as file:
    return list(csv.DictReader(file))


# Beyond this many rows the printed table lists the anomalous and failed ones only
# (a day in 10-s pieces would print 8,640 rows); the CSV keeps every row.
MAX_TABLE_ROWS = 50


def format_table(results: Sequence[tuple[str, FrameResult]],
                 failures: Sequence[tuple[str, str]] = (), *, max_events: int = 4,
                 max_rows: int = MAX_TABLE_ROWS) -> str:
  """A terminal table: path, clip score (what φ applies to: eq. 11's max score,
  or the maximum window mean), decision, events (the first few). Over
  ``max_rows`` rows, the normal ones are left out, with a line counting them."""
  rows, hidden = [], 0
  if len(results) + len(failures) > max_rows:
    hidden = sum(not r.decision for _, r in results)
    results = [(name, r) for name, r in results if r.decision]
  for name, r in results:
    shown = format_events(r.events[:max_events], decimals=2).replace(";", ", ")
    if len(r.events) > max_events:
      shown += f", ... (+{len(r.events) - max_events} more)"
    where = f" @{r.start_s:g} s" if r.start_s else ""
    rows.append((name + where, f"{r.clip_score:.4g}", r.label, shown or "-"))
  rows += [(name, "-", "FAILED", "-") for name, _ in failures]
  head = ("path", "clip score", "decision", "events [s]")
  widths = [max(len(row[i]) for row in [head, *rows]) for i in range(3)]
  lines = ["  ".join(c.ljust(w) for c, w in zip(head[:3], widths)) + "  " + head[3]]
  lines.append("-" * len(lines[0]))
  lines += ["  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3]
            for row in rows]
  if hidden:
    lines.append(f"({hidden} normal row(s) not shown: over {max_rows} rows; all are in the CSV)")
  return "\n".join(lines)


# ------------------------------------------------------------------ the job


@dataclasses.dataclass(frozen=True)
class ScoreSettings:
  """What ``run`` does, and the flags of ``experiments.score`` (``cli.define_flags``);
  ``paths`` are its arguments."""

  workdir: str = cli.setting(help="Model dir or toycar workdir.")
  paths: Sequence[str] = ()
  loss: Optional[str] = cli.setting(None, choices=losses_lib.LOSSES,
                                    help="Model of a toycar workdir (needed if it holds several).")
  threshold: Optional[float] = cli.setting(None,
                                           help="Threshold phi (default: the stored one).")
  fpr: Optional[float] = cli.setting(
      None, help="Recalibrate phi for this false-positive rate on the stored "
      "held-out normal clip scores (gamma fit).")
  out: Optional[str] = cli.setting(
      None, help="CSV path (default: scores.csv in the model's folder, <workdir>/<loss>/ for a "
      "toycar workdir).")
  plots: bool = cli.setting(False, help="One PNG per recording in plots/ next to the CSV.")
  merge_gap_s: float = cli.setting(0.1, minimum=0, help="Merge events closer than this (s).")
  piece_s: float = cli.setting(
      0.0, minimum=0, help="Score each recording in consecutive pieces of this many seconds, "
      "one CSV row per piece (0: whole recordings). phi is a threshold per clip of the held-out "
      "clips' length: pieces of that length keep --fpr's rate on long recordings.")
  chunk_frames: int = cli.setting(4096, minimum=1,
                                  help="Frames per scoring call (memory bound).")

  def __post_init__(self):
    """Checks every setting once; a ``ValueError`` names the flag."""
    if not self.paths:
      raise ValueError("give one or more sound files (WAV, FLAC, Ogg, Opus, MP3, AIFF, W64, RF64) or directories "
                       "to score")
    cli.check(self)
    if self.fpr is not None and not 0 < self.fpr < 1:
      raise ValueError(f"--fpr must lie in (0, 1), got {self.fpr}")
    if self.threshold is not None and self.fpr is not None:
      raise ValueError("give either --threshold or --fpr, not both")
    if self.out and self.out.lower().endswith(audio.SOUND_SUFFIXES):
      raise ValueError(f"--out={self.out} names a sound file: the scores are a CSV table "
                       "(e.g. --out=scores.csv); a recording given there would be overwritten")


@dataclasses.dataclass
class Report:
  """Outcome of ``run``."""

  detector: Detector
  threshold: float
  threshold_source: str
  results: list[tuple[str, FrameResult]]
  failures: list[tuple[str, str]]
  csv_path: str
  plot_paths: list[str]
  events_path: Optional[str] = None
  calibration_s: Optional[float] = None
  piece_s: float = 0.0  # --piece_s (0: whole recordings)
  # PNGs in the plots' folder that this run did not write (an earlier run's).
  earlier_plots: list[str] = dataclasses.field(default_factory=list)

  def _length_note(self) -> Optional[str]:
    """A line on the recordings much longer than the clips φ was set on."""
    if not self.calibration_s:
      return None
    long = [r for _, r in self.results if r.duration_s > LONG_FACTOR * self.calibration_s]
    if not long:
      return None
    what, advice = (("piece(s)", "use shorter pieces") if self.piece_s
                    else ("recording(s)", "score it in pieces"))
    return (f"Note: {len(long)} {what} are over {LONG_FACTOR:g}x as long as the "
            f"{self.calibration_s:.3g}-s clips phi was set on: phi is a threshold per clip of "
            f"that length, and a long normal recording crosses it more often ({advice}, "
            f"--piece_s={self.calibration_s:.3g}, to keep --fpr's rate per piece)")

  def _counts(self) -> str:
    """E.g. "40 recording(s) scored, 3 anomalous, 0 failed." (in pieces: of them,
    and the pieces that failed in recordings otherwise scored)."""
    scored = {path for path, _ in self.results}
    anomalous = sum(r.decision for _, r in self.results)
    failed = len({path for path, _ in self.failures if path not in scored})
    if not self.piece_s and len(self.results) == len(scored):
      return f"{len(scored)} recording(s) scored, {anomalous} anomalous, {failed} failed."
    failed_pieces = sum(path in scored for path, _ in self.failures)
    return (f"{len(scored)} recording(s) scored in {len(self.results)} pieces, {anomalous} "
            f"pieces anomalous, {failed} failed"
            + (f", and {failed_pieces} piece(s) of them failed." if failed_pieces else "."))

  def _clip_score_note(self) -> str:
    """E.g. "clip score: max over frames"."""
    d = self.detector
    how = d.normalization.describe() if d.normalization else None
    if d.window > 1:
      return (f"clip score: max over the means of {d.window} consecutive frames "
              f"({d.window * d.hop_s:g} s) of the " + (how or "frame scores"))
    return f"clip score: {d.reduce} over " + (f"{how} of the frames" if how else "frames")

  @property
  def exit_status(self) -> int:
    """0 if every path was scored, 1 if some failed."""
    return 1 if self.failures else 0

  def summary(self) -> str:
    """Model, threshold, the table and where the outputs are."""
    lines = [f"Model: {self.detector.describe()}",
             f"Threshold phi = {self.threshold:.6g} ({self.threshold_source}); "
             + self._clip_score_note(),
             format_table(self.results, self.failures),
             self._counts() + f" Scores: {self.csv_path}"
             + (f"; events: {self.events_path}" if self.events_path else "")]
    length_note = self._length_note()
    if length_note:
      lines.insert(-1, length_note)
    if self.plot_paths:
      lines.append(f"Plots: {os.path.dirname(self.plot_paths[0])}" + (
          f" (and {len(self.earlier_plots)} PNG(s) there from an earlier run, of recordings "
          "not in this run's scores)" if self.earlier_plots else ""))
    return "\n".join(lines)


def check_writable(path: os.PathLike | str, *, what: str = "the scores file") -> None:
  """Raises ``ValueError`` naming ``path`` if a file cannot be written there.

  Creates the missing parent folders and a temporary file in them (removed).
  ``what`` says what the file is for in the message.
  """
  path = os.fspath(path)
  if os.path.isdir(path) or path.endswith(("/", os.sep)):
    raise ValueError(f"cannot write {what} {path}: it is a directory; give a file "
                     "name with --out")
  parent = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(parent, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=parent, prefix=".write-test-"):
      pass
  except OSError as e:
    raise ValueError(f"cannot write {what} {path} ({e.strerror or e}); choose "
                     "another --out") from e


def check_piece_length(detector: Detector, piece_s: float) -> None:
  """Raises ``ValueError`` naming ``--piece_s`` for pieces too short for one clip
  score (one frame with its context, and one clip-score window): every piece
  would be scored from zero-padded frames, which score high on any clip."""
  cfg = detector.feature_config
  shortest = (cfg.min_interior_samples + (detector.window - 1) * cfg.hop_length) / cfg.sample_rate
  if 0 < piece_s < shortest:
    what = "one frame with its context" + (
        f" and one clip-score window of {detector.window} frames" if detector.window > 1 else "")
    raise ValueError(f"--piece_s={piece_s:g} is shorter than the {shortest:.3g} s that {what} "
                     "needs; give at least that (the held-out clips' length keeps --fpr's rate "
                     "per piece)")


def _header_seconds(path: str) -> float:
  """A sound file's length in seconds from its header (0 where it has none that
  soundfile reads: the scoring reports such a file)."""
  try:
    info = audio.sound_info(path)  # (an MP3's decoder notes kept off the progress line)
  except Exception:  # pylint: disable=broad-except
    return 0.0
  if not info.samplerate or info.frames >= audio.UNKNOWN_LENGTH_FRAMES:  # (refused when read)
    return 0.0
  return max(info.frames, 0) / info.samplerate


def calibration_seconds(detector: Detector) -> Optional[float]:
  """The median length in seconds of the held-out clips φ was set on, read from
  their headers (``audio.probe``), or None when none of them can be read."""
  calibration = detector.calibration
  lengths = []
  for path in calibration.heldout_paths if calibration else ():
    try:
      lengths.append(audio.probe(path, sr=detector.sample_rate) / detector.sample_rate)
    except (ValueError, OSError):
      continue
  return float(np.median(lengths)) if lengths else None


def run(settings: ScoreSettings) -> Report:
  """Loads the model, scores every path, writes the CSV, the events CSV
  (``events_csv_path``) and, with ``settings.plots``, the plots.

  A progress line counts the recordings, or their audio when one is long
  enough to be read range by range. Interrupted (Ctrl-C, SIGTERM), it writes
  the CSVs of the recordings (and pieces) scored so far, then lets the
  interrupt on, saying where they are.

  Raises:
    DetectorError: no usable model in ``settings.workdir``.
    ValueError: an output path that cannot be written, or ``--piece_s`` too
      short for one clip score (both checked before scoring).
  """
  detector = load_detector(settings.workdir, loss=settings.loss,
                           chunk_frames=settings.chunk_frames)
  check_piece_length(detector, settings.piece_s)
  # In the model's own folder by default: each loss's scores apart from the others'.
  csv_path = settings.out or os.path.join(detector.model_dir, "scores.csv")
  check_writable(csv_path)  # before the scoring work, not after it
  check_writable(events_csv_path(csv_path), what="the events file")
  plot_dir = os.path.join(os.path.dirname(csv_path), "plots")
  if settings.plots:
    check_writable(os.path.join(plot_dir, "plot.png"), what="the plots")
  phi, source = detector.resolve_threshold(threshold=settings.threshold, fpr=settings.fpr)
  calibration_s = calibration_seconds(detector)
  files, failures = _expand_and_report(settings.paths)
  results, total, done, last = [], len(files) + len(failures), 0, None
  # A recording long enough to be read range by range: the line counts audio.
  length = {path: _header_seconds(path) for path in files}
  by_audio = max(length.values(), default=0.0) > audio.STREAM_SECONDS
  bar, on_read, finished = None, None, set()
  if by_audio:
    # The audio of the files before each file, and where in it a read has come
    # (rounded alike, so the last file's end is the total).
    ends = np.cumsum([length[p] for p in files])
    before = dict(zip(files, np.concatenate([[0.0], ends[:-1]])))
    bar = progress_lib.ProgressBar(max(1, round(ends[-1])), unit="audio")
    at = lambda path, s: round(before[path] + min(s, length[path]))

    def on_read(path, s):
      try:  # a progress line that cannot be written must not fail a piece
        bar.update(at(path, s))
      except (OSError, ValueError):
        pass
  elif len(files) > 1:
    bar = progress_lib.ProgressBar(len(files), unit="file")
  try:
    for path, result, failure in iter_scores(detector, files, threshold=phi,
                                             merge_gap_s=settings.merge_gap_s,
                                             piece_s=settings.piece_s, on_read=on_read,
                                             on_done=finished.add):
      if result is None:
        failures.append(failure)
      else:
        if calibration_s and result.duration_s > LONG_FACTOR * calibration_s:
          longer = (f"{result.duration_s / calibration_s:.3g}x as long as the "
                    f"{calibration_s:.3g}-s clips phi was set on")
          result = dataclasses.replace(result, note="; ".join(filter(None, (result.note,
                                                                            longer))))
        results.append((path, result))
      if path != last:  # a recording is counted with its first row
        last, done = path, done + 1
      if by_audio and result is not None:  # where this row ends in the recordings' audio
        bar.update(at(path, result.start_s + result.duration_s),
                   frames=len(result.frame_scores))
      elif bar and not by_audio:  # (a failure was counted by on_read, to its end)
        bar.update(done, frames=0 if result is None else len(result.frame_scores))
  except KeyboardInterrupt as e:
    if bar:
      bar.close()
    if not results and not failures:
      raise
    write_csv(csv_path, results, failures, threshold=phi)
    write_events_csv(events_csv_path(csv_path), results)
    by = e.args[0] if e.args else "SIGINT"
    done_paths = {p for p, _ in results + failures}
    # The recording being scored in pieces, if it was stopped before its last one.
    part = ""
    if last is not None and last not in finished:
      done_paths.discard(last)
      rows = sum(p == last for p, _ in results + failures)
      end = max((r.start_s + r.duration_s for p, r in results if p == last), default=0.0)
      part = (f", and {rows} piece(s) of {last} (up to {progress_lib.format_duration(end)}),")
    raise KeyboardInterrupt(f"{by}; the {len(done_paths)} of {total} recording(s) done before "
                            f"it{part} are in {csv_path}") from e
  if bar:
    bar.close()
  csv_path = write_csv(csv_path, results, failures, threshold=phi)
  events_path = write_events_csv(events_csv_path(csv_path), results)
  plot_paths = (plots.write_frame_score_plots(plot_dir, results, failures) if settings.plots
                else [])
  written = {os.path.abspath(p) for p in plot_paths}
  earlier = sorted(p for p in glob.glob(os.path.join(glob.escape(plot_dir), "*.png"))
                   if os.path.abspath(p) not in written) if plot_paths else []
  return Report(detector=detector, threshold=phi, threshold_source=source, results=results,
                failures=failures, csv_path=csv_path, events_path=events_path,
                plot_paths=plot_paths, calibration_s=calibration_s,
                piece_s=settings.piece_s, earlier_plots=earlier)
