"""Does the trained autoencoder reconstruct normal sound at least as well as a PCA of its size?

    python -m benchmarks.ae_fit --workdir=runs/demo [--components=16,20,40]

For every trained loss of an ``experiments.toycar`` workdir, loads the saved
model (``detector.load_detector``) and the run's own training clips
(``toycar.load_data`` with the settings stored in ``results.json``: the same
held-out split, and on the embedded set the same noise mixed in), and prints
one JSON line per loss with the mean frame error (eq. 5) in the AE's input
space (standardized when the model standardizes its input) on the clips it
trained on (``fit``) and on the held-out normal clips (``heldout``), the error
of predicting the training frames' mean (``baseline``, a PCA with 0
components), the share of that baseline the AE explains, and the code units
that never fire (ReLU outputs that are 0 on every training frame). A last
line gives the same numbers for PCAs with ``--components`` components fitted
on the training frames in the same input space.

An AE whose code has Z units that explains less of the held-out baseline than
a PCA with Z (or fewer) components is under-trained: its schedule, learning
rate or input scaling is the gap, not the loss. The PCA is the reference a
nonlinear AE of that size should at least reach (issue 10, item 5). Needs no
test clip and no label.
"""

import argparse
import dataclasses
import json
import os

import jax.numpy as jnp
import numpy as np
from sklearn import decomposition

from benchmarks._common import emit
from bu_jax import detector as detector_lib
from bu_jax import features as features_lib
from bu_jax import losses as losses_lib
from bu_jax import toycar


def stored_settings(workdir: str) -> toycar.Settings:
  """The ``toycar.Settings`` of a workdir's run, from its ``results.json``."""
  path = os.path.join(workdir, "results.json")
  if not os.path.isfile(path):
    raise SystemExit(f"--workdir={workdir}: no results.json (not an experiments.toycar run)")
  with open(path) as f:
    stored = json.load(f).get("settings") or {}
  fields = {f.name for f in dataclasses.fields(toycar.Settings)}
  values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in stored.items()
            if k in fields}
  values["workdir"] = workdir
  return toycar.Settings(**values)


def interior_frames(waves, config: features_lib.FeatureConfig) -> np.ndarray:
  """The interior feature frames of ``waves`` (those the training and the PCA see)."""
  return np.concatenate([np.asarray(features_lib.extract(w, config=config), np.float32)
                         [config.interior(len(w))] for w in waves])


def mean_error(x: np.ndarray, reconstruction: np.ndarray) -> float:
  """Mean over frames of the squared reconstruction error (eq. 5)."""
  return float(np.mean(np.sum(np.square(x - reconstruction, dtype=np.float64), axis=1)))


def ae_fit(detector, fit_waves, heldout_waves) -> tuple[dict, np.ndarray, np.ndarray]:
  """The JSON record of one trained AE, and its input-space fit / held-out frames."""
  config = detector.preset.features
  model = detector.preset.build()
  apply = lambda x, method=None: np.asarray(model.apply(
      {"params": detector.params}, jnp.asarray(x), method=method))
  x_fit, x_held = interior_frames(fit_waves, config), interior_frames(heldout_waves, config)
  z_fit, z_held = apply(x_fit, "normalize"), apply(x_held, "normalize")
  mean = z_fit.mean(axis=0)
  baseline = mean_error(z_held, mean[None])
  held = mean_error(z_held, apply(x_held))
  codes = apply(z_fit, "encode")
  record = {
      "loss": detector.loss,
      "standardized_input": bool(detector.preset.standardize_input),
      "frames": {"fit": int(len(z_fit)), "heldout": int(len(z_held))},
      "error": {"fit": round(mean_error(z_fit, apply(x_fit)), 3), "heldout": round(held, 3),
                "baseline": round(baseline, 3)},
      "explained_heldout": round(1.0 - held / baseline, 4),
      "code_units": int(codes.shape[1]),
      "dead_code_units": int(np.sum(np.all(codes <= 0, axis=0))),
  }
  return record, z_fit, z_held


def pca_fit(z_fit: np.ndarray, z_held: np.ndarray, components, *,
            max_frames: int = 40000) -> dict:
  """Held-out error and explained share of PCAs fitted on ``z_fit`` (every k in ``components``)."""
  sample = z_fit[np.linspace(0, len(z_fit) - 1, min(len(z_fit), max_frames)).astype(int)]
  baseline = mean_error(z_held, z_fit.mean(axis=0)[None])
  out = {}
  for k in components:
    pca = decomposition.PCA(n_components=k, svd_solver="full").fit(sample)
    held = mean_error(z_held, pca.inverse_transform(pca.transform(z_held)))
    out[str(k)] = {"heldout": round(held, 3), "explained_heldout": round(1.0 - held / baseline, 4)}
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
  parser.add_argument("--workdir", required=True, help="An experiments.toycar workdir.")
  parser.add_argument("--components", default="16,20,40",
                      help="PCA sizes to compare with (comma-separated).")
  args = parser.parse_args(argv)
  components = [int(k) for k in args.components.split(",") if k]
  settings = stored_settings(args.workdir)
  data = toycar.load_data(settings)
  z = None
  for loss in losses_lib.LOSSES:
    if not os.path.isdir(os.path.join(args.workdir, loss)):
      continue
    detector = detector_lib.load_detector(args.workdir, loss=loss)
    record, z_fit, z_held = ae_fit(detector, data.fit_waves, data.heldout_waves)
    emit(workdir=args.workdir, **record)
    if z is None or detector.preset.standardize_input != z[0]:
      z = (detector.preset.standardize_input, z_fit, z_held)
  if z is None:
    raise SystemExit(f"--workdir={args.workdir}: no trained model (re/, snp/ or bu/)")
  emit(workdir=args.workdir, loss="pca", standardized_input=bool(z[0]),
       pca=pca_fit(z[1], z[2], components))


if __name__ == "__main__":
  main()
