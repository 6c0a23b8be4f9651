"""Tests for bu_jax.signals: SIGTERM / Ctrl-C as stop requests."""

import os
import signal
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
