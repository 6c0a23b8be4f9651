"""Tests for bu_jax.signals: SIGTERM / Ctrl-C as stop requests."""

import os
import signal
import subprocess
import sys
import time

import pytest

from bu_jax import signals


@pytest.mark.usefixtures("no_gc_callbacks")
def test_graceful_stop_turns_sigterm_into_a_request():
  previous = signal.getsignal(signal.SIGTERM)
  with signals.GracefulStop() as stop:
    assert not stop.requested
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(100):
      if stop.requested:
        break
      time.sleep(0.01)
    assert stop.requested and stop.signal_name == "SIGTERM"
  assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.usefixtures("no_gc_callbacks")
def test_graceful_stop_second_ctrl_c_interrupts():
  # Python's own Ctrl-C handler, also where the suite runs in the background (a shell's
  # background job starts with SIGINT ignored, and the guard then keeps it ignored).
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with pytest.raises(KeyboardInterrupt):
      with signals.GracefulStop() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.requested
        signal.raise_signal(signal.SIGINT)
        time.sleep(1)
  finally:
    signal.signal(signal.SIGINT, previous)


_SECOND_SIGTERM = """
import os, signal, sys, time
from bu_jax import signals
signal.signal(signal.SIGTERM, signal.SIG_DFL)
with signals.GracefulStop() as stop:
  os.kill(os.getpid(), signal.SIGTERM)
  while not stop.requested:
    time.sleep(0.01)
  print("requested", flush=True)
  os.kill(os.getpid(), signal.SIGTERM)
  time.sleep(5)
print("still running", flush=True)
sys.exit(3)
"""


def test_graceful_stop_second_sigterm_terminates_as_without_the_guard():
  """The first SIGTERM is a stop request; the second acts as SIGTERM's default would
  (the process ends, killed by the signal), not swallowed and not re-entering the guard."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
      root, os.environ.get("PYTHONPATH")]))}
  done = subprocess.run([sys.executable, "-c", _SECOND_SIGTERM], cwd=root, env=env,
                        capture_output=True, text=True, timeout=60, check=False)
  assert done.stdout.splitlines() == ["requested"], (done.stdout, done.stderr)
  assert done.returncode == -signal.SIGTERM, done.stderr
