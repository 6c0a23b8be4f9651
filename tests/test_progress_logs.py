"""Entry points are quiet by default: INFO logs only with an explicit --verbosity."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_APP = """
import logging
from absl import app, logging as absl_logging
from bu_jax import progress

def main(argv):
  progress.quiet_library_logs()
  absl_logging.info("absl-info")          # what Orbax does
  logging.getLogger("jax._src.x").info("jax-info")
  absl_logging.warning("a-warning")

app.run(main)
"""
_INFO_LINE = re.compile(r"^I\d{4} ", re.M)


@pytest.mark.parametrize("args,loud", [((), False), (("--verbosity=0",), True),
                                       (("-v", "0"), True), (("--verbosity=-1",), False)])
def test_info_logs_only_with_explicit_verbosity(args, loud):
  proc = subprocess.run([sys.executable, "-c", _APP, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert "a-warning" in proc.stderr
  assert bool(_INFO_LINE.search(proc.stderr)) == loud
  assert ("absl-info" in proc.stderr) == loud and ("jax-info" in proc.stderr) == loud


def test_every_entry_point_calls_it_first():
  for name in ("toycar", "dcase", "score", "ring"):
    source = open(os.path.join(REPO, "experiments", f"{name}.py")).read()
    main = source.split("def main(argv):\n", 1)[1]
    assert main.lstrip().startswith("progress.quiet_library_logs()"), name
