"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import pathlib
import tempfile


def atomic_write(path: os.PathLike | str, data: bytes | str) -> str:
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
