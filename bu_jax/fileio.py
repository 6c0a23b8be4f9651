"""The files a run writes, written so that a crash never leaves half of one.

* ``atomic_write``: any file, via a temporary file in the same folder and
  ``os.replace``; a reader sees the old file or the new one.
* ``to_json`` / ``write_json``: the one JSON writer (NumPy values, paths and
  dataclasses converted; NaN and infinities written as null).
* ``csv_text`` / ``write_csv`` / ``write_dcase_csvs``: CSV files, among them the
  DCASE baseline's ``anomaly_score_*.csv`` and ``decision_result_*.csv``.
* ``MetricsWriter`` / ``read_metrics`` / ``truncate_metrics``: ``metrics.jsonl``,
  one JSON object per training step. Lines are appended with flush and fsync;
  a damaged line (e.g. half-written when a run was killed) is dropped with a
  warning naming the file, never a reason to stop.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import math
import os
import pathlib
import re
import secrets
import time
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from absl import logging
import numpy as np

PathLike = str | os.PathLike


def atomic_write(path: PathLike, data: bytes | str) -> str:
  """Writes ``data`` to ``path`` via a temporary file, fsync and ``os.replace``.

  Parent folders are created. On any error the temporary file is removed and
  an existing ``path`` is left as it was; an ``OSError`` (a full disk, a
  read-only folder) names ``path``. Returns ``path`` as a string.
  """
  path = pathlib.Path(path)
  payload = data.encode("utf-8") if isinstance(data, str) else data
  tmp = None
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its file is 0600; created with 0666, the umask applies as for open().
    name = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    tmp = name
    with os.fdopen(fd, "wb") as file:
      file.write(payload)
      file.flush()
      os.fsync(file.fileno())
    os.replace(tmp, path)
  except BaseException as e:
    if tmp is not None and os.path.exists(tmp):
      os.remove(tmp)
    if isinstance(e, OSError):  # name the file meant, not the temporary one
      raise OSError(e.errno, e.strerror, str(path)) from e
    raise
  return str(path)


# --------------------------------------------------------------------------
# JSON.
# --------------------------------------------------------------------------


def to_json(obj: Any, *, default: Optional[Callable[[Any], Any]] = None) -> Any:
  """``obj`` as plain JSON values: dicts, lists, str, int, float, bool, None.

  NumPy and JAX scalars and arrays become Python numbers and lists, paths
  become strings, dataclasses become dicts, tuples and other iterables become
  lists, non-string keys are converted with ``str``, and NaN / infinities
  become None (strict JSON).

  Args:
    obj: the value to convert.
    default: applied to a value of any other type (e.g. ``str``); without it
      such a value raises ``TypeError``.
  """
  if isinstance(obj, Mapping):
    return {k if isinstance(k, str) else str(to_json(k, default=default)):
            to_json(v, default=default) for k, v in obj.items()}
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return to_json(dataclasses.asdict(obj), default=default)
  if isinstance(obj, float):  # also np.float64
    return float(obj) if math.isfinite(obj) else None
  if isinstance(obj, (bool, int, str)) or obj is None:
    return obj
  if isinstance(obj, (np.ndarray, np.generic)) or hasattr(obj, "__array__"):
    value = np.asarray(obj)
    return to_json(value.tolist() if value.ndim else value.item(), default=default)
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  if isinstance(obj, Iterable) and not isinstance(obj, (bytes, bytearray)):
    return [to_json(v, default=default) for v in obj]
  if default is not None:
    return to_json(default(obj))
  raise TypeError(f"cannot convert {type(obj).__name__} to JSON: {obj!r}")


def write_json(path: PathLike, obj: Any, *, indent: int = 2, sort_keys: bool = False) -> str:
  """Writes ``to_json(obj)`` to ``path`` atomically, with a final newline.

  Parent folders are created; on any error (e.g. a value ``to_json`` cannot
  convert) an existing file is left as it was. Returns ``path`` as a string.
  """
  text = json.dumps(to_json(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)
  return atomic_write(path, text + "\n")


# --------------------------------------------------------------------------
# CSV.
# --------------------------------------------------------------------------


def csv_text(rows: Iterable[Sequence[Any]], *, header: Optional[Sequence[str]] = None) -> str:
  """Rows as CSV text with ``\\n`` line ends (and ``header`` first, if given)."""
  buffer = io.StringIO(newline="")
  writer = csv.writer(buffer, lineterminator="\n")
  if header is not None:
    writer.writerow(header)
  writer.writerows(rows)
  return buffer.getvalue()


def write_csv(path: PathLike, rows: Iterable[Sequence[Any]], *,
              header: Optional[Sequence[str]] = None) -> str:
  """Writes ``csv_text(rows, header=header)`` to ``path`` atomically; returns ``path``."""
  return atomic_write(path, csv_text(rows, header=header))


def _safe_filename_part(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._+-]+", "_", text) or "_"


def write_dcase_csvs(
    workdir: PathLike,
    clips: Sequence[Any],
    clip_scores: Any,
    *,
    threshold: float,
    prefix: str = "",
) -> list[pathlib.Path]:
  """Writes DCASE-baseline-style score and decision CSV files per condition.

  For each condition (grouped as in ``evaluate.evaluate_conditions``), writes
  to ``workdir``, atomically:
    <prefix>anomaly_score_<condition>.csv    rows: file basename, clip score
    <prefix>decision_result_<condition>.csv  rows: file basename, 1 if
        score ≥ threshold else 0 (eq. 4, ``evaluate.decide``)
  without header, in the order of ``clips``. A basename that occurs more than
  once in a condition (the "mixing" layout uses the same file for a clip's
  normal and anomalous versions) is written as "normal_<basename>" or
  "anomaly_<basename>". Characters other than letters, digits and ``._+-``
  in the condition are replaced by "_".

  Args:
    workdir: output directory (created if missing).
    clips: records with attributes path, label, condition, rare.
    clip_scores: 1-D array of clip scores, one per clip.
    threshold: the decision threshold φ.
    prefix: prepended to every file name.

  Returns:
    The paths written, two per condition.
  """
  from bu_jax import evaluate  # pylint: disable=g-import-not-at-top
  labels, scores, groups = evaluate.condition_groups(clips, clip_scores)
  paths = [str(clip.path) for clip in clips]
  workdir = pathlib.Path(workdir)
  written = []
  for condition, index in groups.items():
    index = np.sort(index)
    names = [os.path.basename(paths[i]) for i in index]
    counts = collections.Counter(names)
    names = [(f"{'anomaly' if labels[i] else 'normal'}_{name}"
              if counts[name] > 1 else name) for name, i in zip(names, index)]
    suffix = _safe_filename_part(condition)
    score_rows = [(name, repr(float(scores[i]))) for name, i in zip(names, index)]
    decision_rows = [(name, int(evaluate.decide(scores[i], threshold)))
                     for name, i in zip(names, index)]
    for kind, rows in (("anomaly_score", score_rows),
                       ("decision_result", decision_rows)):
      path = workdir / f"{prefix}{kind}_{suffix}.csv"
      write_csv(path, rows)
      written.append(path)
  logging.info("Wrote %d DCASE CSV files to %s.", len(written), workdir)
  return written


# --------------------------------------------------------------------------
# metrics.jsonl: one JSON object per training step.
# --------------------------------------------------------------------------


def _metric_lines(path: PathLike) -> tuple[bytes, list[tuple[int, bytes, Optional[dict]]]]:
  """The file's bytes and its non-blank lines: (number, line, record or None).

  A line's record is None when it is not a JSON object with an integer "step"
  (e.g. half-written when a run was killed).
  """
  with open(path, "rb") as file:
    content = file.read()
  lines = []
  for number, line in enumerate(content.splitlines(keepends=True), start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError:
      record = None
    if not (isinstance(record, dict) and type(record.get("step")) is int):  # pylint: disable=unidiomatic-typecheck
      record = None
    lines.append((number, line, record))
  return content, lines


def _warn_damaged(path: PathLike, damaged: Sequence[int], action: str) -> None:
  shown = ", ".join(map(str, damaged[:5])) + (", ..." if len(damaged) > 5 else "")
  logging.warning("%s: %s %d damaged line(s) (line %s): not a JSON record with a step, "
                  "e.g. half-written when a run was killed", os.fspath(path), action,
                  len(damaged), shown)


def read_metrics(path: PathLike, *, strict: bool = False) -> list[dict[str, Any]]:
  """The records of a ``metrics.jsonl`` file, in order; [] if there is none.

  Damaged lines are skipped with one warning naming the file and the lines;
  the file is not changed (``truncate_metrics`` and ``MetricsWriter`` repair it).
  With ``strict`` a damaged line raises ``ValueError`` naming the file and the
  first such line instead (for readers that must not miss a record, e.g. a
  comparison of two runs).
  """
  if not os.path.exists(path):
    return []
  _, lines = _metric_lines(path)
  damaged = [number for number, _, record in lines if record is None]
  if damaged and strict:
    raise ValueError(f"{os.fspath(path)}:{damaged[0]}: not a JSON record with a step "
                     f"({len(damaged)} damaged line(s))")
  if damaged:
    _warn_damaged(path, damaged, "skipping")
  return [record for _, _, record in lines if record is not None]


def truncate_metrics(path: PathLike, start: int) -> None:
  """Keeps the records of steps < ``start`` (e.g. the step a run resumes from).

  Records of later steps (written after the last checkpoint) and damaged lines
  are dropped, the latter with a warning naming the file and the lines. The
  file is rewritten (atomically) only if it changes, so a finished run that
  re-evaluates leaves it untouched.
  """
  if not os.path.exists(path):
    return
  content, lines = _metric_lines(path)
  damaged = [number for number, _, record in lines if record is None]
  if damaged:
    _warn_damaged(path, damaged, "dropping")
  kept = b"".join(line if line.endswith(b"\n") else line + b"\n"
                  for _, line, record in lines if record is not None and record["step"] < start)
  if kept != content:
    atomic_write(path, kept)


def _repair_last_line(path: PathLike) -> None:
  """Makes ``path`` end with a complete line, so that appending starts a new one.

  A damaged last line (cut off while it was written) is removed with a
  warning naming the file; a complete record that only lacks its line end
  gets one, as do blanks after the last line (or in a file of nothing else).
  Damage further up is left to the readers, which skip it.
  """
  content, lines = _metric_lines(path)
  if not content or content.endswith(b"\n") and (not lines or lines[-1][2] is not None):
    return
  number, line, record = lines[-1] if lines else (0, b"", {})  # only blanks: end them
  if record is None:
    _warn_damaged(path, [number], "cutting off")
    os.truncate(path, content.rindex(line))
  else:
    with open(path, "ab") as file:
      file.write(b"\n")


class MetricsWriter:
  """Appends one JSON object per step to a file: ``{"step": s, "loss": ...}``.

  Values are converted with ``to_json`` (NaN and infinities become null).
  Each line is flushed, so a killed process keeps every line it wrote, and
  fsync'ed at most every ``fsync_interval_s`` seconds and on ``close`` (so a
  machine that goes down loses at most that much; the next ``MetricsWriter``
  or ``truncate_metrics`` repairs a line it cut off). Opening a file whose last line was cut off (a run killed while
  writing) first removes that line, with a warning, so that the next record
  starts on a line of its own. Use as a context manager or call ``close``.
  """

  def __init__(self, path: PathLike, *, append: bool = True, fsync_interval_s: float = 1.0):
    self.path = os.fspath(path)
    self._fsync_interval_s = fsync_interval_s
    self._last_fsync = time.monotonic()
    directory = os.path.dirname(self.path)
    if directory:
      os.makedirs(directory, exist_ok=True)
    if append and os.path.exists(self.path):
      _repair_last_line(self.path)
    self._file = open(self.path, "ab" if append else "wb")

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Appends ``{"step": step, **metrics}`` as one line."""
    record = {"step": int(step), **to_json(dict(metrics))}
    try:
      self._file.write((json.dumps(record, allow_nan=False) + "\n").encode("utf-8"))
      self._file.flush()
      if time.monotonic() - self._last_fsync >= self._fsync_interval_s:
        os.fsync(self._file.fileno())
        self._last_fsync = time.monotonic()
    except OSError as e:  # e.g. a full disk: name the file
      raise OSError(e.errno, e.strerror, self.path) from e

  def close(self) -> None:
    if not self._file.closed:
      try:
        self._file.flush()
        os.fsync(self._file.fileno())
      except OSError as e:
        raise OSError(e.errno, e.strerror, self.path) from e
      finally:
        try:
          self._file.close()
        except OSError:  # the same failure again; the first one is raised
          pass

  def __enter__(self) -> "MetricsWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
