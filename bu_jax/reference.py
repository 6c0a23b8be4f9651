"""A simple reference detector: PCA reconstruction error on the AE's features.

A comparison of losses (RE, SNP, BU) should always carry a plain method
beside it, or a weak model goes unnoticed. ``PCADetector`` uses the same
features as the autoencoder (``features.extract``: log-mel with context,
eq. 5's x_t), standardizes them per dimension with the statistics of the
normal training frames, keeps ``k`` principal components fitted on those
frames (scikit-learn's ``PCA``), and scores a frame by the squared
reconstruction error of its standardized vector, the linear analogue of
eq. (5). Clip scores and thresholds then go through the same code as the AE's
(interior frames, eq. 11), so the numbers are comparable.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn import decomposition

from bu_jax import features as features_lib


def fit_pca(z: np.ndarray, components: int) -> decomposition.PCA:
  """scikit-learn's ``PCA`` with ``components`` fitted on the rows of ``z``.

  With at least 10 rows per dimension (training frames: tens of thousands of
  440-dimensional rows) it diagonalizes the D x D covariance
  (``svd_solver="covariance_eigh"``, about 8x faster than the full SVD on 20,000
  x 440), else it takes the full SVD; both are exact and deterministic.
  """
  solver = "covariance_eigh" if z.shape[0] >= 10 * z.shape[1] else "full"
  return decomposition.PCA(n_components=components, svd_solver=solver).fit(z)


class PCADetector:
  """Squared reconstruction error of a k-component PCA of standardized frames.

  Args:
    config: the feature configuration (the AE's, e.g. ``models.preset(...).features``).
    components: k, the number of principal components (at most D).
    max_frames: fit on at most this many training frames (a deterministic,
      evenly spaced subset), to bound memory and time.
  """

  def __init__(self, config: features_lib.FeatureConfig, *, components: int,
               max_frames: int = 200_000):
    if not 1 <= components <= config.dim:
      raise ValueError(f"components must lie in [1, D={config.dim}], got {components}")
    if max_frames < 2:
      raise ValueError(f"max_frames must be >= 2, got {max_frames}")
    self.config = config
    self.components = int(components)
    self.max_frames = int(max_frames)
    self.mean = self.scale = self._pca = None
    self.explained_variance = None

  def _frames(self, wave: np.ndarray, name: str, *, interior: bool) -> np.ndarray:
    x = np.asarray(features_lib.extract(wave, config=self.config, name=name), np.float64)
    return x[self.config.interior(len(wave))] if interior else x

  def fit(self, waves: Sequence[np.ndarray], *,
          names: Sequence[str] | None = None) -> "PCADetector":
    """Fits the statistics and components on normal training clips (interior frames)."""
    if not waves:
      raise ValueError("PCADetector.fit needs at least one training clip")
    names = names or [f"training clip {i}" for i in range(len(waves))]
    x = np.concatenate([self._frames(w, n, interior=True) for w, n in zip(waves, names)])
    if x.shape[0] < 2:
      raise ValueError(f"PCADetector.fit: {x.shape[0]} training frame(s); need at least 2")
    if x.shape[0] > self.max_frames:
      x = x[np.linspace(0, x.shape[0] - 1, self.max_frames).astype(np.int64)]
    self.mean = x.mean(axis=0)
    std = x.std(axis=0)
    self.scale = 1.0 / np.maximum(std, 1e-3 * max(float(std.max()), 1e-12))
    z = (x - self.mean) * self.scale
    k = min(self.components, z.shape[0])
    self._pca = fit_pca(z, k)
    self.explained_variance = float(np.sum(self._pca.explained_variance_ratio_))
    return self

  def frame_scores(self, wave: np.ndarray, *, name: str = "waveform",
                   with_codes: bool = False):
    """||z_t - P P^T z_t||^2 for every frame t of ``wave``.

    Args:
      wave: a mono waveform (N,).
      name: names the recording in error messages.
      with_codes: also return each frame's code, its k principal-component
        coefficients P^T z_t.

    Returns:
      The scores, float32 (T,); with ``with_codes`` the pair ``(scores (T,),
      codes (T, k))``, both float32.
    """
    if self._pca is None:
      raise RuntimeError("PCADetector: call fit() first")
    z = (self._frames(wave, name, interior=False) - self.mean) * self.scale
    coefficients = self._pca.transform(z)
    recon = self._pca.inverse_transform(coefficients)
    scores = np.sum(np.square(z - recon), axis=-1).astype(np.float32)
    return (scores, coefficients.astype(np.float32)) if with_codes else scores


class PCAScorer:
  """``frame_scores.FrameScorer``'s calling convention for a fitted ``PCADetector``
  (no parameters; codes: the PCA coefficients), so that the AEs' scoring,
  score normalization and held-out choices apply to the reference unchanged."""

  def __init__(self, detector: PCADetector):
    self.detector = detector
    self.config = detector.config

  def __call__(self, params, wave, *, name: str = "waveform", with_codes: bool = False):
    del params
    return self.detector.frame_scores(wave, name=name, with_codes=with_codes)
