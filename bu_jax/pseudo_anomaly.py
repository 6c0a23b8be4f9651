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

One level says little: the experiments mix at each of their ANRs (-10, -15 and
-20 dB, the paper's) and report the mean AUC. On the real set -10 dB is
detected by every setting (AUC ~1) and -20 dB separates them; on the embedded
synthetic set -20 dB is too quiet for its something-else sounds (AUC ~0.54 for
every model) and -10 / -15 dB separate them.
"""

from __future__ import annotations

from typing import Sequence

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
