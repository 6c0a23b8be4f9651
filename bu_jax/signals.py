"""Stop requests from signals: SIGTERM / Ctrl-C end a training loop cleanly.

The loop polls ``GracefulStop.requested`` after each step, saves a checkpoint
and returns; see ``bu_jax.checkpoint`` for the loop this serves::

  with checkpoint.Checkpointer(workdir) as checkpointer, \\
       signals.GracefulStop() as stop:
    ...
    while step < num_steps and not stop.requested:
      ...
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Sequence

from absl import logging


class GracefulStop:
  """Context manager turning SIGTERM / Ctrl-C into a stop request.

  Inside the block the first signal sets ``requested`` (the loop then stops
  after its current step and saves); a second one of the same kind acts as it
  would without this guard (KeyboardInterrupt for SIGINT, exit for SIGTERM).
  Outside the main thread, signal handlers cannot be set: it logs a warning and
  ``requested`` stays False.
  """

  def __init__(self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)):
    self._signals = tuple(signals)
    self._previous: dict[int, Any] = {}
    self.signal_name: str | None = None

  @property
  def requested(self) -> bool:
    return self.signal_name is not None

  def _handle(self, signum, frame) -> None:
    if self.requested:
      previous = self._previous.get(signum, signal.SIG_DFL)
      self._restore()
      if callable(previous):
        previous(signum, frame)
      elif previous != signal.SIG_IGN:
        signal.raise_signal(signum)
      return
    self.signal_name = signal.Signals(signum).name
    print(f"Received {self.signal_name}: stopping after the current step and saving a "
          "checkpoint (send it again to stop at once).", file=sys.stderr, flush=True)

  def _restore(self) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}

  def __enter__(self) -> "GracefulStop":
    if threading.current_thread() is not threading.main_thread():
      logging.warning("GracefulStop: not in the main thread; signals are not caught.")
      return self
    for signum in self._signals:
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    self._restore()
