"""Does a trained AE reconstruct normal sound at least as well as a PCA of its size?

The AE of eq. (5) is trained to reconstruct normal frames; a nonlinear AE
whose code has Z units can reconstruct them at least as well as a PCA with Z
components fitted on the same frames. One far below a PCA much smaller than
its code is under-trained (schedule, learning rate or input scaling), whatever
its loss. Reaching the PCA of the full code size is a diagnostic of fit, not a
detection target: a closer fit of normal frames can also reconstruct anomalies
better (README, toy-car section, "Does the AE model normal sound ..."). The
check needs no test clip and no label: the held-out normal training clips.

* ``interior_frames``: the feature frames a model trains on (interior frames).
* ``explained``: the share of the held-out frames' error of predicting the
  training frames' mean (a PCA with 0 components) that a reconstruction removes.
* ``FitCheck``: built once per run from the fit / held-out clips; ``ae``
  measures one trained AE in its own input space (raw or standardized) and
  ``pca`` PCAs of given sizes in that space.

``experiments.toycar`` stores ``ae``'s record per loss (``results[L]["fit"]``)
with the PCA of the AE's code size; ``benchmarks.ae_fit`` prints it for a
finished workdir.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from bu_jax import features as features_lib
from bu_jax import reference as reference_lib

# Frames of the fit clips used (every k-th of each clip when there are more; a
# DCASE machine type's 1,000 clips of 10 s hold about 300,000); held-out frames: all.
MAX_FIT_FRAMES = 100_000


def interior_frames(waves: Sequence[np.ndarray], config: features_lib.FeatureConfig, *,
                    max_frames: Optional[int] = None) -> np.ndarray:
  """The interior feature frames of ``waves`` (float32 (T, D)); with
  ``max_frames``, every k-th interior frame of each clip, k the smallest step
  that keeps at most about that many (memory stays bounded: the frames are
  taken clip by clip)."""
  if not waves:
    raise ValueError("no clips to take frames from")
  total = sum(config.interior_count(len(w)) for w in waves)
  step = 1 if max_frames is None else max(1, -(-total // max_frames))
  return np.concatenate([np.asarray(features_lib.extract(w, config=config), np.float32)
                         [config.interior(len(w))][::step] for w in waves])


def mean_error(x: np.ndarray, reconstruction: np.ndarray) -> float:
  """The mean over frames of the squared reconstruction error (eq. 5), float64."""
  return float(np.mean(np.sum(np.square(np.asarray(x, np.float64) - reconstruction), axis=1)))


def explained(error: float, baseline: float) -> float:
  """1 - error / baseline (0: no better than the training mean; 1: exact)."""
  return 1.0 - error / baseline if baseline > 0 else float("nan")


class FitCheck:
  """The fit and held-out frames of one run, for AEs and PCAs alike.

  Args:
    fit_waves: the clips the models trained on.
    heldout_waves: normal clips they did not train on.
    config: the feature configuration of the models.
    max_fit_frames: at most about this many fit frames are used (``interior_frames``).
  """

  def __init__(self, fit_waves: Sequence[np.ndarray], heldout_waves: Sequence[np.ndarray],
               config: features_lib.FeatureConfig, *, max_fit_frames: int = MAX_FIT_FRAMES):
    self.fit = interior_frames(fit_waves, config, max_frames=max_fit_frames)
    self.heldout = interior_frames(heldout_waves, config)
    self._spaces: dict[tuple, tuple] = {}
    self._pca_cache: dict[tuple, float] = {}

  @classmethod
  def from_frames(cls, fit: np.ndarray, heldout: np.ndarray) -> "FitCheck":
    """A check on given feature frames (T, D) instead of clips."""
    check = cls.__new__(cls)
    check.fit, check.heldout = np.asarray(fit, np.float32), np.asarray(heldout, np.float32)
    check._spaces, check._pca_cache = {}, {}
    return check

  def _space(self, model, params) -> tuple[tuple, np.ndarray, np.ndarray, float]:
    """(key, fit frames, held-out frames, baseline) in the AE's input space
    (``FCNAutoencoder.normalize``: raw, or standardized with the statistics in
    ``params``, which are the key), computed once per input space."""
    key = tuple(np.asarray(params[n]).tobytes() for n in ("input_mean", "input_scale")
                if n in params)
    if key not in self._spaces:
      norm = lambda x: np.asarray(model.apply({"params": params}, jnp.asarray(x),
                                              method="normalize"))
      z_fit, z_held = norm(self.fit), norm(self.heldout)
      self._spaces[key] = (z_fit, z_held, mean_error(z_held, z_fit.mean(axis=0)[None]))
    return (key, *self._spaces[key])

  def ae(self, model, params) -> dict[str, Any]:
    """The record of one trained ``models.FCNAutoencoder`` (host ``params``):
    ``error`` (mean frame score, eq. 5, on fit / held-out frames, and the
    held-out ``baseline``: the error of the fit frames' mean), ``explained_heldout``,
    ``code_units`` and ``dead_code_units`` (codes that are 0 on every fit frame)."""
    _, _, _, baseline = self._space(model, params)
    apply = lambda x, method: model.apply({"params": params}, jnp.asarray(x), method=method)
    fit_scores, codes = (np.asarray(a) for a in apply(self.fit, "score_and_code"))
    held = float(np.mean(np.asarray(apply(self.heldout, "score"), np.float64)))
    return {"error": {"fit": round(float(np.mean(fit_scores, dtype=np.float64)), 4),
                      "heldout": round(held, 4), "baseline": round(baseline, 4)},
            "explained_heldout": round(explained(held, baseline), 4),
            "code_units": int(codes.shape[1]),
            "dead_code_units": int(np.sum(np.all(codes <= 0, axis=0)))}

  def pca(self, model, params, components: Sequence[int]) -> dict[str, float]:
    """``{str(k): explained_heldout}`` of PCAs with k components fitted on the fit
    frames in the AE's input space (cached per input space and k)."""
    key, z_fit, z_held, baseline = self._space(model, params)
    out = {}
    for k in components:
      k = int(min(k, z_fit.shape[1], len(z_fit)))
      if (key, k) not in self._pca_cache:
        pca = reference_lib.fit_pca(z_fit, k)
        held = mean_error(z_held, pca.inverse_transform(pca.transform(z_held)))
        self._pca_cache[key, k] = round(explained(held, baseline), 4)
      out[str(k)] = self._pca_cache[key, k]
    return out


def model_fit(check: FitCheck, preset, params) -> dict[str, Any]:
  """``check.ae``'s record of the AE of ``preset`` (a ``models.ModelPreset``) with
  host ``params``, and ``pca_components`` / ``pca_explained_heldout``: a PCA with
  as many components as the AE has code units, in its input space."""
  model = preset.build()
  record = check.ae(model, params)
  (components, share), = check.pca(model, params, [record["code_units"]]).items()
  record["pca_components"], record["pca_explained_heldout"] = int(components), share
  return record


def describe(record: dict[str, Any]) -> str:
  """E.g. "held-out explained 61.4 % (PCA-40: 59.8 %)"."""
  pct = lambda v: "n/a" if v is None else f"{100 * v:.1f} %"
  return (f"held-out explained {pct(record.get('explained_heldout'))} "
          f"(PCA-{record.get('pca_components')}: {pct(record.get('pca_explained_heldout'))})")
