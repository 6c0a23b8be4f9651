"""Where the rare-normal clips' scores come from: frame scores inside and outside the rare segment.

    python -m benchmarks.rare_frames --workdir=runs/realaudio/cpu/seed0 [--root=/tmp/realaudio-dev]

For every trained loss of a toy-car workdir on the realaudio-dev set (one seed's
``W/<preset>/seed<N>`` of a ``benchmarks.realaudio`` workdir W), scores the normal clips of ``train/`` and of one
test folder with the saved model and prints one JSON line per (loss, split):
the mean over clips of the clip score (max over interior frames, eq. 11) of
frequent-mode and rare-mode clips, their ratio, the median frame score inside
the rare segment and outside it, and the fraction of rare clips whose
highest frame lies inside the rare segment (``metadata.csv``'s
``rare_start_s`` / ``rare_dur_s``). It says whether a rare-vs-frequent AUC
comes from the rare mode itself (max inside the segment) or from scores that
are high everywhere, and whether the gap is one of fit (``train``) or of
generalization (the test folder).

``--weights`` adds one line per batch of 10 random 3-s training segments: the
share of the BU weights (eq. 16) that falls on rare-segment frames, with the
paper's band-width and with ``kde.contrast_sigma``, on the standardized frames,
and with the contrast band-width on the frames' first 16 principal components
(whitened; the issue's "KDE in a lower-dimensional space").

``--pca_sweep=16,40,160,300`` needs no trained model: it fits a PCA with all
components to the standardized interior frames of the training clips and
prints, per k, how much more squared reconstruction error (k components) the
rare-segment frames keep than the frequent ones, *on the frames it was fitted
to*, and the mel bands that hold the rare frames' excess. A ratio that stays
above 1 as k grows says the rare mode is not under-trained but spread over
more dimensions than the frequent one (more irreducible error per frame).
"""

import argparse
import csv
import os

import numpy as np
from sklearn import decomposition

from benchmarks._common import emit
from bu_jax import audio
from bu_jax import checkpoint
from bu_jax import cli
from bu_jax import data as data_lib
from bu_jax import detector as detector_lib
from bu_jax import features as features_lib
from bu_jax import kde
from bu_jax import models


def _rare_mask(row: dict, times_s: np.ndarray) -> np.ndarray:
  if row["rare"] != "1":
    return np.zeros(len(times_s), bool)
  start, duration = float(row["rare_start_s"]), float(row["rare_dur_s"])
  return (times_s >= start) & (times_s <= start + duration)


def frame_summary(detector, rows, root: str, machine: str) -> dict:
  """Clip and frame statistics of one split's normal clips (see the module doc)."""
  feat = detector.preset.features
  out = {"frequent_max": [], "rare_max": [], "rare_in_median": [], "rare_out_median": [],
         "frequent_median": [], "rare_max_in_segment": []}
  for row in rows:
    wave = audio.load_wav(os.path.join(root, "dev_data", machine, row["file"]),
                          sr=feat.sample_rate)
    result = detector.score(wave, name=row["file"])
    inner = feat.interior(len(wave))
    scores, times = np.asarray(result.frame_scores)[inner], np.asarray(result.times_s)[inner]
    rare = _rare_mask(row, times)
    if rare.any():
      out["rare_max"].append(scores.max())
      out["rare_in_median"].append(np.median(scores[rare]))
      out["rare_out_median"].append(np.median(scores[~rare]))
      out["rare_max_in_segment"].append(float(rare[np.argmax(scores)]))
    else:
      out["frequent_max"].append(scores.max())
      out["frequent_median"].append(np.median(scores))
  summary = {k: round(float(np.mean(v)), 3) for k, v in out.items() if v}
  if "rare_max" in summary and "frequent_max" in summary:
    summary["rare_over_frequent_max"] = round(summary["rare_max"] / summary["frequent_max"], 3)
  return summary


def _training_frames(rows, root: str, machine: str, feat):
  """Interior frames of each clip and the mask of its rare-segment frames."""
  frames, rare = [], []
  for row in rows:
    wave = audio.load_wav(os.path.join(root, "dev_data", machine, row["file"]),
                          sr=feat.sample_rate)
    x = np.asarray(features_lib.extract(wave, config=feat))
    inner = feat.interior(len(wave))
    times = np.arange(x.shape[0]) * feat.hop_length / feat.sample_rate
    frames.append(x[inner])
    rare.append(_rare_mask(row, times[inner]))
  return frames, rare


def pca_sweep(rows, root: str, machine: str, *, components: list[int]):
  """Rare over frequent squared PCA residual, in-sample, per number of components."""
  feat = models.preset("fcn40-small").features
  frames, rare = _training_frames(rows, root, machine, feat)
  x, r = np.concatenate(frames).astype(np.float64), np.concatenate(rare)
  z = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
  pca = decomposition.PCA(svd_solver="full").fit(z)
  coefficients = (z - pca.mean_) @ pca.components_.T  # all D components
  energy = np.square(coefficients)
  for k in components:
    residual = energy[:, k:].sum(axis=1)
    recon = coefficients[:, :k] @ pca.components_[:k]
    per_band = np.square(z - pca.mean_ - recon).reshape(len(z), -1, feat.n_mels).mean(axis=1)
    band_ratio = per_band[r].mean(0) / np.maximum(per_band[~r].mean(0), 1e-12)
    emit(benchmark="rare_frames", pca_components=k,
         explained_variance=round(float(pca.explained_variance_ratio_[:k].sum()), 3),
         rare_frame_fraction=round(float(r.mean()), 3),
         median_residual_rare=round(float(np.median(residual[r])), 1),
         median_residual_frequent=round(float(np.median(residual[~r])), 1),
         median_ratio=round(float(np.median(residual[r]) / np.median(residual[~r])), 2),
         p99_ratio=round(float(np.percentile(residual[r], 99)
                               / np.percentile(residual[~r], 99)), 2),
         bands_with_2x_excess=[int(b) for b in np.flatnonzero(band_ratio >= 2)])


def weight_shares(rows, root: str, machine: str, *, batches: int, seed: int = 0):
  """Share of eq. (16)'s weights on rare-segment frames, per random training batch."""
  feat = models.preset("fcn40-small").features
  frames, rare = _training_frames(rows, root, machine, feat)
  stacked = np.concatenate(frames)
  mean, std = stacked.mean(0), stacked.std(0)
  projection = decomposition.PCA(16, whiten=True).fit((stacked - mean) / std)
  rng = np.random.default_rng(seed)
  length = int(round(3.0 * feat.sample_rate / feat.hop_length))
  for batch in range(batches):
    xs, rs = [], []
    for i in rng.choice(len(frames), 10, replace=False):
      start = rng.integers(0, len(frames[i]) - length)
      xs.append(frames[i][start:start + length])
      rs.append(rare[i][start:start + length])
    x, r = (np.concatenate(xs) - mean) / std, np.concatenate(rs)
    if not r.any():
      continue
    base = 1.0 / (2 * feat.dim)
    low = projection.transform(x)  # the KDE in a 16-dimensional PCA space
    variants = (("paper", x, base),
                ("contrast", x, float(kde.contrast_sigma(x, base_sigma=base))),
                ("pca16_contrast", low,
                 float(kde.contrast_sigma(low, base_sigma=1.0 / (2 * low.shape[1])))))
    for name, points, sigma in variants:
      w = np.asarray(kde.kde_weights(points.astype(np.float32), sigma=sigma, eps=1e-6))
      emit(benchmark="rare_frames", batch=batch, bandwidth=name,
           sigma_times_2d=round(sigma * 2 * points.shape[1], 2),
           rare_frame_fraction=round(float(r.mean()), 3),
           rare_weight_share=round(float(w[r].sum() / w.sum()), 3),
           weight_max_over_min=round(float(w.max() / w.min()), 1),
           ess_fraction=round(float(w.sum() ** 2 / (w ** 2).sum() / len(w)), 3))


def trained_losses(workdir: str, losses: list[str]) -> list[str]:
  """The ``losses`` with a model (``<workdir>/<loss>/checkpoints``) in ``workdir``
  (``data_lib.DataError`` when none has one: a realaudio workdir W instead of one of its
  seeds ``W/cpu/seed<N>``, say)."""
  found = [loss for loss in losses if os.path.isdir(checkpoint.checkpoint_dir(
      os.path.join(workdir, loss)))]
  if not found:
    raise data_lib.DataError(
        f"--workdir={workdir}: no trained model of {','.join(losses)} (no <loss>/checkpoints); "
        "give a toy-car workdir, such as W/cpu/seed0 of a benchmarks.realaudio workdir W")
  return found


def normal_rows(root: str) -> list[dict]:
  """The normal clips of the set's ``metadata.csv`` (``data_lib.DataError`` naming the
  file when it is missing)."""
  path = os.path.join(root, "metadata.csv")
  try:
    with open(path, newline="") as f:
      return [r for r in csv.DictReader(f) if r["label"] == "normal"]
  except FileNotFoundError:
    raise data_lib.DataError(f"--root={root}: no metadata.csv (not a built realaudio-dev "
                             "set)") from None


def run(args) -> None:
  """Prints the JSON lines that the flags ask for (see the module doc)."""
  data_lib.flag_dirs(args, ("root", "workdir"))
  losses = trained_losses(args.workdir, args.losses.split(",")) if args.workdir else []
  meta = normal_rows(args.root)
  splits = {split: [r for r in meta if r["split"] == split] for split in ("train", args.test_folder)}
  if args.pca_sweep:
    pca_sweep(splits["train"], args.root, args.machine,
              components=[int(k) for k in args.pca_sweep.split(",")])
  for loss in losses:
    detector = detector_lib.load_detector(args.workdir, loss=loss)
    for split, rows in splits.items():
      emit(benchmark="rare_frames", workdir=args.workdir, loss=loss, split=split,
           **frame_summary(detector, rows, args.root, args.machine))
  if args.weights:
    weight_shares(splits["train"], args.root, args.machine, batches=args.weights)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", help="a toy-car workdir trained on the set: W/cpu/seed<N> "
                      "of a benchmarks.realaudio workdir W")
  parser.add_argument("--root", default="/tmp/realaudio-dev", help="built realaudio-dev set")
  parser.add_argument("--machine", default="engine_b")
  parser.add_argument("--test_folder", default="test_anr-10dB")
  parser.add_argument("--losses", default="re,snp,bu")
  parser.add_argument("--weights", type=int, default=0, help="batches for the weight shares")
  parser.add_argument("--pca_sweep", default="",
                      help="comma-separated k: in-sample PCA residual, rare over frequent")
  args = parser.parse_args()
  if not (args.workdir or args.pca_sweep or args.weights):
    parser.error("give --workdir (a trained run), --weights or --pca_sweep")
  cli.exit_on_errors(lambda: run(args), errors=(data_lib.DataError, detector_lib.DetectorError))


if __name__ == "__main__":
  main()
