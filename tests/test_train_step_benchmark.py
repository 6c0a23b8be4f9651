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


def test_the_mixtures_interior_frames_give_the_requested_m():
  """The loss trains on a mixture's interior frames (FeatureConfig.interior): M = 2048 used
  to give m = 1960 with FCN64-large (490 of 512 per mixture), now 512 per mixture (RE) and
  768 = 512 normal + 256 anomalous (SNP, BU), whatever the preset's context."""
  code = """
import sys
sys.argv = ["train_step"]
sys.path.insert(0, "benchmarks")
import train_step
for model in ("fcn40-small", "fcn64-large"):
  for loss, per_mixture in (("re", 512), ("snp", 768), ("bu", 768)):
    config, _, clips = train_step._setup(model, loss, 2048, 1)
    feat = config.feature_config
    assert config.mixtures_per_step == 4
    assert feat.interior_count(config.mixture_length) == per_mixture, (model, loss)
    assert config.frames_per_mixture > per_mixture  # the frames left out at the ends
print("ok")
"""
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=300, env={**os.environ, "PYTHONPATH": REPO})
  assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
