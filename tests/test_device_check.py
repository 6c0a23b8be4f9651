"""``benchmarks/device_check.sh``'s command line and time limits, without a device."""

import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "device_check.sh")


def _run(*args, env=None, cwd=None):
  return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=120,
                        cwd=cwd, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_prints_the_usage_and_exits_with_status_0(flag, tmp_path):
  proc = _run(flag, cwd=tmp_path)
  assert proc.returncode == 0 and proc.stderr == ""
  assert proc.stdout.startswith("The one prepared run for a lent GPU/TPU machine")
  for name in ("SKIP_PROJECTION", "SKIP_DEMO", "PAPER_LOSSES", "PAPER_TIMEOUT",
               "TOTAL_TIMEOUT (540)", "600 s"):
    assert name in proc.stdout
  assert not (tmp_path / flag).exists()  # --help was once taken for the output folder


def test_an_option_or_a_second_argument_is_refused_in_one_line(tmp_path):
  proc = _run("--out", cwd=tmp_path)
  assert proc.returncode == 1 and proc.stdout == ""
  assert proc.stderr == ("Error: benchmarks/device_check.sh: unknown option --out (the one "
                         "argument is the output folder; see --help)\n")
  assert _run(str(tmp_path / "a"), str(tmp_path / "b")).returncode == 1
  assert not (tmp_path / "a").exists()
  proc = _run(env={"DEMO_TIMEOUT": "3m"})
  assert proc.returncode == 1
  assert proc.stderr == ("Error: benchmarks/device_check.sh: DEMO_TIMEOUT=3m: not a whole "
                         "number of seconds\n")


def test_a_part_without_time_left_of_the_total_is_skipped_with_a_line(tmp_path):
  """Each part gets at most what is left of TOTAL_TIMEOUT (the device tool stops a command
  at 600 s; the parts' own limits add up to 920 s): with none left, only the versions run."""
  pytest.importorskip("librosa")
  pytest.importorskip("soundfile")
  out = tmp_path / "out"
  # (the parts' own limits of 1 s bound the run where TOTAL_TIMEOUT were not read)
  proc = _run(str(out), env={"TOTAL_TIMEOUT": "0", "PROJECTION_TIMEOUT": "1", "DEMO_TIMEOUT": "1",
                             "PAPER_TIMEOUT": "1"})
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith("limits: projection 1 s, demo 1 s, paper preset 1 s")
  assert "all within TOTAL_TIMEOUT=0 s" in proc.stdout.splitlines()[0]
  assert "projection: skipped" in proc.stdout and "demo: skipped" in proc.stdout
  assert "==" not in proc.stdout  # no part started
  assert sorted(os.listdir(out)) == ["versions.txt"]
