"""Run reporting on the terminal: a progress bar and quiet library logs.

The per-step ``metrics.jsonl`` file is written by ``bu_jax.fileio.MetricsWriter``.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Mapping, Optional, TextIO


def format_duration(seconds: float) -> str:
  """``1:02:03`` / ``2:03`` style; ``?`` when unknown."""
  if not math.isfinite(seconds) or seconds < 0:
    return "?"
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _si(value: float) -> str:
  for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(value) >= scale:
      return f"{value / scale:.1f}{unit}"
  return f"{value:.1f}"


class ProgressBar:
  """``step 1200/100000 [##-----] 1.2% 3.4 steps/s 10.2k frames/s ETA 8:12:40 loss 12.3``.

  Rates and ETA are measured from the first ``update`` (which usually follows
  compilation), so start-up does not distort them. On a terminal the line is
  redrawn in place at most every ``min_interval_s``; on a file or pipe a full
  line is written at most every ``file_interval_s``.
  """

  def __init__(self, total: int, *, initial: int = 0, stream: Optional[TextIO] = None,
               width: int = 24, min_interval_s: float = 0.5,
               file_interval_s: float = 30.0, unit: str = "step"):
    """``unit`` names what is counted ("step 12/100 ... 3.1 steps/s"); ``"audio"``
    counts seconds of audio ("audio 1:00:00/24:00:00 ... 3693x real time")."""
    self.total = int(total)
    self.unit = unit
    self.stream = sys.stderr if stream is None else stream
    self.width = width
    self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
    self._interval = min_interval_s if self._tty else file_interval_s
    self._step = int(initial)
    self._t0: Optional[float] = None
    self._step0 = int(initial)
    self._frames = 0.0
    self._last_draw = -math.inf
    self._drawn_done = False
    self.last_line = ""

  def rates(self) -> tuple[float, float]:
    """(steps/s, frames/s) since the first update; NaN before two updates."""
    if self._t0 is None:
      return math.nan, math.nan
    elapsed = time.perf_counter() - self._t0
    if elapsed <= 0 or self._step == self._step0:
      return math.nan, math.nan
    return (self._step - self._step0) / elapsed, self._frames / elapsed

  def update(self, step: int, *, frames: float = 0.0, force: bool = False,
             **postfix: float) -> None:
    """Reports that ``step`` steps are done, ``frames`` of them since the last call."""
    now = time.perf_counter()
    if self._t0 is None:
      # The first report starts the clock; what it reports is not timed.
      self._t0, self._step0, self._step = now, int(step), int(step)
    else:
      self._step = int(step)
      self._frames += float(frames)
    done = self._step >= self.total
    if not force and (now - self._last_draw < self._interval and not done
                      or done and self.last_line and self._drawn_done):
      return  # the completed line is drawn once
    self._drawn_done = done
    self._last_draw = now
    self.last_line = self._render(postfix)
    if self._tty:
      self.stream.write("\r" + self.last_line + "\x1b[K")
    else:
      self.stream.write(self.last_line + "\n")
    self.stream.flush()

  def _render(self, postfix: Mapping[str, float]) -> str:
    frac = min(max(self._step / self.total, 0.0), 1.0) if self.total > 0 else 1.0
    filled = int(round(frac * self.width))
    bar = "#" * filled + "-" * (self.width - filled)
    steps_s, frames_s = self.rates()
    eta = (self.total - self._step) / steps_s if steps_s > 0 else math.nan
    if self.unit == "audio":
      count = f"audio {format_duration(self._step)}/{format_duration(self.total)}"
      rate = f"{steps_s:.0f}x real time"
    else:
      count, rate = f"{self.unit} {self._step}/{self.total}", f"{steps_s:.2f} {self.unit}s/s"
    parts = [count, f"[{bar}]", f"{100 * frac:.1f}%"]
    if math.isfinite(steps_s):  # audio: frames/s would say x real time again
      parts += [rate] if self.unit == "audio" else [rate, f"{_si(frames_s)} frames/s"]
    parts.append(f"ETA {format_duration(eta)}")
    parts += [f"{k} {float(v):.4g}" for k, v in postfix.items()]
    return " ".join(parts)

  def close(self) -> None:
    if self._tty and self.last_line:
      self.stream.write("\n")
      self.stream.flush()


def quiet_library_logs() -> None:
  """Hides INFO logs (Orbax, JAX, absl) unless ``--verbosity`` was given.

  ``absl.app.run`` turns INFO logs on by default, which floods the terminal
  with hundreds of Orbax / JAX lines around the progress bar. Entry points call
  this first thing in ``main()``: warnings and errors still show, as
  ``WARNING: <message>`` (absl's ``W1207 13:57:50.205 140430760897408
  detector.py:644]`` prefix is for logs, not for a user reading a terminal), and
  ``--verbosity=0`` (or ``-v 0``) brings the INFO lines and absl's format back.
  """
  import logging as python_logging  # pylint: disable=g-import-not-at-top
  from absl import flags, logging  # pylint: disable=g-import-not-at-top
  if flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present:
    return
  logging.set_verbosity(logging.WARNING)
  logging.get_absl_handler().setFormatter(
      python_logging.Formatter("%(levelname)s: %(message)s"))
