r"""Verification experiment of section 4.1 (Table 1, Figs. 2-3).

  python -m experiments.ring --loss=all --workdir=/tmp/ring [--seeds=3] \
      [--updates=5000] [--standardize] [--eps=1e-6]

Writes results.json, fig2_pdf.png and fig3_scores.png to --workdir and prints
the table beside the paper's Table 1. The flags are the fields of
``bu_jax.ring.Settings``; the logic is in ``bu_jax.ring``.
"""

from absl import app

from bu_jax import cli
from bu_jax import progress
from bu_jax import ring
from bu_jax import train as train_lib

cli.define_flags(ring.Settings)  # every setting's flag, help and default


def main(argv):
  progress.quiet_library_logs()  # third-party INFO logs only with --verbosity
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  cli.sigterm_as_interrupt()
  settings = cli.usage_error(lambda: cli.settings_from_flags(ring.Settings))
  results = cli.exit_on_errors(
      lambda: ring.run(settings),
      errors=(cli.WorkdirError, train_lib.NonFiniteLossError, OSError),
      on_interrupt="no file is left half-written; run the same command again")
  print(ring.format_table(results))


if __name__ == "__main__":
  cli.run_app(main)
