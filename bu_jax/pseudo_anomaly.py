"""Pseudo-anomalies: a label-free check of detection on held-out normal clips.

The held-out normal training clips (those that calibrate phi, eq. 4) show how
evenly a detector scores normal sound, but not whether it still hears an
anomaly. Mixing something-else sounds into them, as eq. (8) mixes anomalies
into normal clips, gives clips that *should* score higher: the AUC of these
pseudo-anomalous clips against the clean held-out clips judges both at once (a
detector that flags a rare normal mode loses AUC through that clip's clean
score, one that misses quiet events through the mixed ones). No test clip or
test label takes part, so two evaluations of one model (raw or normalized
scores) can be compared with it.

The sounds are the run's something-else sounds. SNP and BU see them in
training (eq. 10's L_a), so the check flatters them against RE: compare
evaluations of one model with it, not losses.

* ``mix``: the pseudo-anomalous clips (deterministic in ``seed``).
* ``auc``: their AUC against the clean clips' scores.
* ``mean_auc``: the mean of ``auc`` over the ANRs, the number the runs compare.
* ``difference_se``: how much of a difference between two scorers' mean AUCs
  the held-out clips can resolve (a jackknife over the clips).

One level says little: the experiments mix at each of their ANRs (-10, -15 and
-20 dB, the paper's) and report the mean AUC. On the real set -10 dB is
detected by every setting (AUC ~1) and -20 dB separates them; on the embedded
synthetic set -20 dB is too quiet for its something-else sounds (AUC ~0.54 for
every model) and -10 / -15 dB separate them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from bu_jax import audio
from bu_jax import evaluate

PER_CLIP = 4


def mix(normal_waves: Sequence[np.ndarray], sounds: Sequence[np.ndarray], *,
        anr_db: float, per_clip: int = PER_CLIP, seed: int = 0) -> list[np.ndarray]:
  """Pseudo-anomalous clips: each normal clip with ``per_clip`` sounds mixed in.

  For clip i and draw j a sound is picked at random, cut to the clip's length,
  placed at a random onset and mixed so that its power over the whole clip is
  ``anr_db`` dB relative to the clip's (``audio.mix_at_ratio``, eq. 8).

  Args:
    normal_waves: 1-D float arrays (held-out normal clips), each of nonzero power.
    sounds: 1-D float arrays (something-else sounds), each of nonzero power.
    anr_db: the anomaly-to-normal ratio in dB over the whole clip.
    per_clip: mixtures per normal clip.
    seed: the draws; mixture (i, j) depends only on (seed, i, j).

  Returns:
    ``len(normal_waves) * per_clip`` float32 arrays, clip-major.

  Raises:
    ValueError: no clips or sounds, ``per_clip`` < 1, or a silent clip or sound.
  """
  if not normal_waves or not sounds:
    raise ValueError(f"pseudo-anomalies need normal clips and sounds, got "
                     f"{len(normal_waves)} clip(s) and {len(sounds)} sound(s)")
  if per_clip < 1:
    raise ValueError(f"per_clip must be >= 1, got {per_clip}")
  out = []
  for i, normal in enumerate(normal_waves):
    normal = np.asarray(normal, dtype=np.float32)
    for j in range(per_clip):
      rng = np.random.default_rng([seed, i, j])
      k = int(rng.integers(len(sounds)))
      sound = np.asarray(sounds[k], dtype=np.float32)[: normal.size]
      start = int(rng.integers(normal.size - sound.size + 1))
      placed = np.zeros_like(normal)
      placed[start: start + sound.size] = sound
      try:
        out.append(audio.mix_at_ratio(normal, placed, ratio_db=anr_db))
      except ValueError as error:
        raise ValueError(f"pseudo-anomaly (held-out clip {i}, sound {k}): {error}") from error
  return out


def auc(normal_scores: Sequence[float], pseudo_scores: Sequence[float]) -> float:
  """AUC of pseudo-anomalous against clean clip scores (``evaluate.metrics``)."""
  normal = np.asarray(normal_scores, dtype=np.float64).reshape(-1)
  pseudo = np.asarray(pseudo_scores, dtype=np.float64).reshape(-1)
  labels = np.concatenate([np.zeros(normal.size), np.ones(pseudo.size)])
  return evaluate.metrics(labels, np.concatenate([normal, pseudo]))["auc"]


def mean_auc(normal_scores: Sequence[float], pseudo_scores: Mapping[Any, Sequence[float]]
             ) -> float:
  """The mean over the ANRs of ``auc``: ``pseudo_scores`` maps an ANR to the
  scores of the pseudo-anomalies mixed at it."""
  return float(np.mean([auc(normal_scores, p) for p in pseudo_scores.values()]))


def difference_se(normal_a: Sequence[float], pseudo_a: Mapping[Any, Sequence[float]],
                  normal_b: Sequence[float], pseudo_b: Mapping[Any, Sequence[float]]
                  ) -> float:
  """Jackknife standard error, over the held-out clips, of ``mean_auc`` of
  scorer a minus that of scorer b, both on the same clips.

  The unit of independence is the held-out clip: its clean score and its
  pseudo-anomalies (``mix`` is clip-major: mixture j of an ANR is made from
  clip j // per-clip count) go together. Leaving out clip i, one at a time,
  gives the differences d_(i) and SE = sqrt((n - 1) / n * sum (d_(i) -
  mean d)^2). With ten held-out clips a lead smaller than this is one that a
  different ten clips could reverse. 0.0 with one clip (nothing to leave
  out), or when no clip moves the difference.
  """
  normal_a = np.asarray(normal_a, dtype=np.float64).reshape(-1)
  normal_b = np.asarray(normal_b, dtype=np.float64).reshape(-1)
  n = normal_a.size
  if normal_b.size != n or set(pseudo_a) != set(pseudo_b):
    raise ValueError("difference_se: the two scorers must score the same clips")
  if n < 2:
    return 0.0
  pa = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in pseudo_a.items()}
  pb = {k: np.asarray(pseudo_b[k], dtype=np.float64).reshape(-1) for k in pseudo_a}
  for k in pa:
    if pa[k].size != pb[k].size or pa[k].size % n:
      raise ValueError(f"difference_se: {pa[k].size} and {pb[k].size} pseudo-anomalies at {k} "
                       f"for {n} clips (need the same multiple of the clips for both)")
  pa = {k: v.reshape(n, -1) for k, v in pa.items()}
  pb = {k: v.reshape(n, -1) for k, v in pb.items()}
  keep = ~np.eye(n, dtype=bool)
  d = np.array([
      mean_auc(normal_a[keep[i]], {k: v[keep[i]] for k, v in pa.items()})
      - mean_auc(normal_b[keep[i]], {k: v[keep[i]] for k, v in pb.items()})
      for i in range(n)])
  return float(np.sqrt((n - 1) / n * np.sum((d - d.mean()) ** 2)))
