r"""Verification experiment of section 4.1 (Table 1, Figs. 2-3).

  python -m experiments.ring --loss=all --workdir=/tmp/ring [--seeds=3] \
      [--updates=5000] [--standardize] [--eps=1e-6]

Writes results.json, fig2_pdf.png and fig3_scores.png to --workdir and prints
the table beside the paper's Table 1. The logic is in ``bu_jax.ring``.
"""

import os
import sys

from absl import app
from absl import flags

from bu_jax import progress
from bu_jax import ring

_LOSS = flags.DEFINE_enum("loss", "all", ["re", "snp", "bu", "all"],
                          "Cost function to train; 'all' trains RE, SNP and BU "
                          "from the same initial parameters.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Number of seeds (0, 1, ...).")
_UPDATES = flags.DEFINE_integer("updates", ring.RingConfig.updates,
                                "Parameter updates per method.")
_STANDARDIZE = flags.DEFINE_bool(
    "standardize", ring.RingConfig.standardize,
    "Standardize the normal mini-batch before the KDE of eq. 15.")
_EPS = flags.DEFINE_float("eps", ring.RingConfig.eps,
                          "epsilon of the BU weights 1 / (K(x) + eps).")
_GRID_CELLS = flags.DEFINE_integer("grid_cells", ring.RingConfig.grid_cells,
                                   "Evaluation grid cells per side of [-3, 3].")
_LOG_EVERY = flags.DEFINE_integer("log_every", ring.RingConfig.log_every,
                                  "Updates between progress lines.")

flags.mark_flag_as_required("workdir")


def main(argv):
  progress.quiet_library_logs()  # third-party INFO logs only with --verbosity
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  methods = ring.METHODS if _LOSS.value == "all" else (_LOSS.value,)
  if _SEEDS.value < 1:
    raise app.UsageError(f"--seeds must be >= 1, got {_SEEDS.value}")
  try:
    config = ring.RingConfig(methods=methods, updates=_UPDATES.value,
                             standardize=_STANDARDIZE.value, eps=_EPS.value,
                             grid_cells=_GRID_CELLS.value,
                             log_every=_LOG_EVERY.value)
  except ValueError as e:  # --updates, --log_every, --grid_cells, --eps
    raise app.UsageError(str(e)) from None
  try:
    os.makedirs(_WORKDIR.value, exist_ok=True)
  except OSError as e:
    print(f"Error: --workdir={_WORKDIR.value}: {e.strerror}", file=sys.stderr)
    sys.exit(1)
  results = ring.train_and_evaluate(config, _WORKDIR.value,
                                    seeds=range(_SEEDS.value))
  print(ring.format_table(results))


if __name__ == "__main__":
  app.run(main)
