"""Does the trained autoencoder reconstruct normal sound at least as well as a PCA of its size?

    python -m benchmarks.ae_fit --workdir=runs/demo [--components=16,20,40]

For every trained loss of an ``experiments.toycar`` workdir, loads the saved
model (``detector.load_detector``) and the run's own training clips
(``toycar.load_data`` with the settings stored in ``results.json``: the same
held-out split, and on the embedded set the same noise mixed in), and prints
one JSON line per loss (``bu_jax.fit_check``) with the mean frame error (eq. 5) in
the AE's input space (standardized when the model standardizes its input) on
the clips it trained on (``fit``; at most about 100,000 frames) and on the
held-out normal clips (``heldout``), the error of predicting the training
frames' mean (``baseline``, a PCA with 0 components), the share of that
baseline the AE explains, the code units that never fire (ReLU outputs that
are 0 on every training frame), and the share explained by PCAs with
``--components`` components fitted on the training frames in the same input
space. ``experiments.toycar`` stores the same record for each run
(``results[L]["fit"]``, with the PCA of the AE's code size).

An AE far below a PCA much smaller than its code (Z units) is under-trained:
its schedule, learning rate or input scaling is the gap, not the loss (the
demo's raw-input AE: 14 % against a 16-component PCA's 33 %). The PCA with Z
components is the fit a nonlinear AE of that size can reach (issue 10, item
5); reaching it is a diagnostic, not a detection target. Needs no test clip
and no label.
"""

import argparse
import dataclasses
import json
import os

from benchmarks._common import emit
from bu_jax import detector as detector_lib
from bu_jax import fit_check
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


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
  parser.add_argument("--workdir", required=True, help="An experiments.toycar workdir.")
  parser.add_argument("--components", default="16,20,40",
                      help="PCA sizes to compare with (comma-separated).")
  args = parser.parse_args(argv)
  components = [int(k) for k in args.components.split(",") if k]
  settings = stored_settings(args.workdir)
  losses = [l for l in losses_lib.LOSSES if os.path.isdir(os.path.join(args.workdir, l))]
  if not losses:
    raise SystemExit(f"--workdir={args.workdir}: no trained model (re/, snp/ or bu/)")
  data = toycar.load_data(settings)
  check = None
  for loss in losses:
    detector = detector_lib.load_detector(args.workdir, loss=loss)
    model = detector.preset.build()
    if check is None:
      check = fit_check.FitCheck(data.fit_waves, data.heldout_waves, detector.preset.features)
    emit(workdir=args.workdir, loss=loss,
         standardized_input=bool(detector.preset.standardize_input),
         frames={"fit": int(len(check.fit)), "heldout": int(len(check.heldout))},
         **check.ae(model, detector.params),
         pca_explained_heldout=check.pca(model, detector.params, components))


if __name__ == "__main__":
  main()
