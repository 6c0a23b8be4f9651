"""Score new recordings frame by frame with a trained model (eqs. 4, 5, 11).

  python -m experiments.score --workdir=runs/toycar --loss=bu rec1.wav recordings/
  python -m experiments.score --workdir=runs/toycar/bu --fpr=0.05 --plots rec.wav

--workdir is a model directory (holding checkpoints/) or a toycar workdir with
one <loss>/checkpoints per loss. The model, its features and its calibrated
threshold phi come from the latest checkpoint. Prints a table, writes
scores.csv (in the model's folder, or --out) and with --plots one PNG per
recording into plots/ next to it. Exits with status 1 if some recording could
not be scored.
"""

import sys


from bu_jax import checkpoint
from bu_jax import cli
from bu_jax import detector
from bu_jax import progress

cli.define_flags(detector.ScoreSettings)  # every setting's flag, help and default


def main(argv):
  progress.quiet_library_logs()  # third-party INFO logs only with --verbosity
  cli.sigterm_as_interrupt()
  settings = cli.usage_error(lambda: cli.settings_from_flags(detector.ScoreSettings,
                                                             paths=argv[1:]))
  report = cli.exit_on_errors(lambda: detector.run(settings),
                              errors=(checkpoint.CheckpointError, ValueError, OSError),
                              on_interrupt="no file is left half-written")
  print(report.summary(), flush=True)
  for _, message in report.failures:
    print(f"score: FAILED {message}", file=sys.stderr)
  return report.exit_status


if __name__ == "__main__":
  cli.run_app(main)
