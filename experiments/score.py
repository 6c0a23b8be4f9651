"""Score new recordings frame by frame with a trained model (eqs. 4, 5, 11).

  python -m experiments.score --workdir=runs/toycar --loss=bu rec1.wav recordings/
  python -m experiments.score --workdir=runs/toycar/bu --fpr=0.05 --plots rec.wav

--workdir is a model directory (holding checkpoints/) or a toycar workdir with
one <loss>/checkpoints per loss. The model, its features and its calibrated
threshold phi come from the latest checkpoint. Prints a table, writes
scores.csv (--out) and with --plots one PNG per recording into plots/ next to
it. Exits with status 1 if some recording could not be scored.
"""

import sys

from absl import app
from absl import flags

from bu_jax import checkpoint
from bu_jax import detect
from bu_jax import losses
from bu_jax import progress

_WORKDIR = flags.DEFINE_string("workdir", None, "Model dir or toycar workdir.", required=True)
_LOSS = flags.DEFINE_enum("loss", None, list(losses.LOSSES),
                          "Model of a toycar workdir (needed if it holds several).")
_THRESHOLD = flags.DEFINE_float("threshold", None, "Threshold phi (default: the stored one).")
_FPR = flags.DEFINE_float("fpr", None, "Recalibrate phi for this false-positive rate on the "
                          "stored held-out normal clip scores (gamma fit).")
_OUT = flags.DEFINE_string("out", None, "CSV path (default: <workdir>/scores.csv).")
_PLOTS = flags.DEFINE_bool("plots", False, "One PNG per recording in plots/ next to the CSV.")
_MERGE_GAP = flags.DEFINE_float("merge_gap_s", 0.1, "Merge events closer than this (s).")
_CHUNK = flags.DEFINE_integer("chunk_frames", 4096, "Frames per scoring call (memory bound).")


def main(argv):
  progress.quiet_library_logs()  # third-party INFO logs only with --verbosity
  if len(argv) < 2:
    raise app.UsageError("give one or more WAV files or directories to score")
  settings = detect.ScoreSettings(
      workdir=_WORKDIR.value, paths=argv[1:], loss=_LOSS.value, threshold=_THRESHOLD.value,
      fpr=_FPR.value, out=_OUT.value, plots=_PLOTS.value, merge_gap_s=_MERGE_GAP.value,
      chunk_frames=_CHUNK.value)
  try:
    report = detect.run(settings)
  except (checkpoint.CheckpointError, ValueError) as e:  # DetectorError included.
    sys.exit(f"score: error: {e}")
  except KeyboardInterrupt:
    print("Interrupted: stopped by Ctrl-C; nothing was written", file=sys.stderr)
    sys.exit(130)
  print(report.summary(), flush=True)
  for _, message in report.failures:
    print(f"score: FAILED {message}", file=sys.stderr)
  return report.exit_status


if __name__ == "__main__":
  app.run(main)
