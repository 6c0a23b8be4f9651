"""``benchmarks/train_step.py``'s command line (run in a subprocess: its absl flags are
not defined in the test process)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_help_exits_with_status_0_and_says_what_quick_runs():
  """absl's app.run exits with status 1 after --help; cli.run_app exits with 0."""
  proc = subprocess.run([sys.executable, "benchmarks/train_step.py", "--help"], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert "Traceback" not in proc.stderr
  # --quick's help names the repeats main() uses (it said 2 where 3 were run)
  assert "--[no]quick: Smoke run: FCN40-small, M = 1024, 3 repeats, 1 warm-up call." in proc.stdout
