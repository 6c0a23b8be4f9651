"""Tests for bu_jax.fileio: atomic files, the JSON writer, CSV files, metrics.jsonl."""

from __future__ import annotations

import dataclasses
import json
import math
import os

from absl import logging
import jax.numpy as jnp
import numpy as np
import pytest

from bu_jax import fileio


@pytest.fixture
def warnings(monkeypatch):
  """The absl warnings logged by the test, formatted."""
  logged = []
  monkeypatch.setattr(logging, "warning", lambda msg, *a: logged.append(msg % a))
  return logged


# ------------------------------------------------------------------ atomic files


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
  path = tmp_path / "f.txt"
  fileio.atomic_write(path, "old")

  def fail(*args):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(os, "replace", fail)
  with pytest.raises(OSError, match="No space") as error:
    fileio.atomic_write(path, "new")
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]
  assert error.value.filename == str(path)  # the file meant, not the temporary one


def test_atomic_write_syncs_the_new_file_before_it_replaces_the_old_one(tmp_path, monkeypatch):
  """A machine that goes down just after the replace finds the new contents, not an empty
  file: the temporary file is on disk (fsync) before it takes the name."""
  calls = []
  fsync, replace = os.fsync, os.replace
  monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), fsync(fd))[1])
  monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), replace(a, b))[1])
  fileio.atomic_write(tmp_path / "f.txt", "new")
  assert calls == ["fsync", "replace"] and (tmp_path / "f.txt").read_text() == "new"


def test_atomic_write_gives_the_permissions_of_a_plain_open(tmp_path):
  """The result file gets 0666 & ~umask as open() would (mkstemp's would be 0600)."""
  old = os.umask(0o022)
  try:
    path = fileio.atomic_write(tmp_path / "r.json", "{}")
    assert os.stat(path).st_mode & 0o777 == 0o644
    os.umask(0o077)
    assert os.stat(fileio.atomic_write(tmp_path / "s.json", "{}")).st_mode & 0o777 == 0o600
  finally:
    os.umask(old)


# ------------------------------------------------------------------ JSON


@dataclasses.dataclass
class _Config:
  name: str = "bu"
  shape: tuple = (2, 3)
  sigma: float = 1.0


def test_to_json_handles_nan_inf_numpy_jax_paths_and_dataclasses(tmp_path):
  obj = {"nan": float("nan"), "inf": np.float32(np.inf), "-inf": -math.inf,
         "f32": np.float32(0.75), "i64": np.int64(3), "bool": np.bool_(True),
         "array": np.array([[1.0, np.nan], [np.inf, 2.0]]), "jax": jnp.arange(3),
         "jax_scalar": jnp.float32(0.5), 7: (1, 2), "set": {4}, "where": tmp_path,
         "config": _Config(), "none": None}
  assert fileio.to_json(obj) == {
      "nan": None, "inf": None, "-inf": None, "f32": 0.75, "i64": 3, "bool": True,
      "array": [[1.0, None], [None, 2.0]], "jax": [0, 1, 2], "jax_scalar": 0.5,
      "7": [1, 2], "set": [4], "where": str(tmp_path),
      "config": {"name": "bu", "shape": [2, 3], "sigma": 1.0}, "none": None}
  assert type(fileio.to_json(np.int64(3))) is int  # pylint: disable=unidiomatic-typecheck
  with pytest.raises(TypeError, match="object"):
    fileio.to_json({"bad": object()})
  assert fileio.to_json({"bad": object}, default=lambda o: o.__name__) == {"bad": "object"}


def test_write_json_is_strict_json_and_atomic(tmp_path):
  path = tmp_path / "nested" / "report.json"
  assert fileio.write_json(path, {"auc": np.float64(0.75), "bad": np.nan}) == str(path)
  text = path.read_text()
  assert text == '{\n  "auc": 0.75,\n  "bad": null\n}\n'
  json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
  fileio.write_json(path, {"b": 1, "a": [1]}, indent=1, sort_keys=True)
  assert path.read_text() == '{\n "a": [\n  1\n ],\n "b": 1\n}\n'
  assert os.listdir(path.parent) == ["report.json"]  # no leftover tmp files


def test_write_json_failure_keeps_old_file(tmp_path):
  path = tmp_path / "report.json"
  fileio.write_json(path, {"ok": 1})
  with pytest.raises(TypeError):
    fileio.write_json(path, {"bad": object()})
  assert json.loads(path.read_text()) == {"ok": 1}
  assert os.listdir(tmp_path) == ["report.json"]


# ------------------------------------------------------------------ CSV


def test_write_csv_with_and_without_header(tmp_path):
  path = tmp_path / "sub" / "scores.csv"
  fileio.write_csv(path, [("a,b.wav", 0.5), ("c.wav", 1)], header=("path", "score"))
  assert path.read_bytes() == b'path,score\n"a,b.wav",0.5\nc.wav,1\n'
  assert fileio.csv_text([(1, 2)]) == "1,2\n"


# ------------------------------------------------------------------ metrics.jsonl


def test_metrics_writer_and_reader_round_trip(tmp_path):
  path = tmp_path / "run" / "metrics.jsonl"
  with fileio.MetricsWriter(path) as writer:
    writer.write(0, {"loss": np.float32(1.5), "bad": np.float32(np.nan), "w": jnp.float32(2)})
    writer.write(1, {"loss": 1.0})
  assert fileio.read_metrics(path) == [{"step": 0, "loss": 1.5, "bad": None, "w": 2.0},
                                       {"step": 1, "loss": 1.0}]
  with fileio.MetricsWriter(path, append=False) as writer:
    writer.write(5, {})
  assert fileio.read_metrics(path) == [{"step": 5}]
  assert fileio.read_metrics(tmp_path / "missing.jsonl") == []


def test_reader_skips_damaged_lines_with_a_warning_and_leaves_the_file(tmp_path, warnings):
  path = tmp_path / "metrics.jsonl"
  text = '{"step": 0, "loss": 1.0}\n7\n\n{"step": 1, "loss": 0.5}\n{"step": 2, "lo'
  path.write_text(text)
  assert [r["step"] for r in fileio.read_metrics(path)] == [0, 1]
  assert len(warnings) == 1 and str(path) in warnings[0]
  assert "skipping 2 damaged line(s) (line 2, 5)" in warnings[0]
  assert path.read_text() == text


def test_a_step_that_is_not_an_integer_is_a_damaged_line(tmp_path, warnings):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": true}\n{"step": 1.0}\n{"step": "2"}\n{"step": 3}\n')
  assert fileio.read_metrics(path) == [{"step": 3}]
  assert len(warnings) == 1 and "skipping 3 damaged line(s) (line 1, 2, 3)" in warnings[0]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_a_full_disk_while_writing_metrics_names_the_file():
  writer = fileio.MetricsWriter("/dev/full", append=False)  # every write: ENOSPC
  with pytest.raises(OSError, match="No space") as error:
    writer.write(0, {"loss": 1.0})
  assert error.value.filename == "/dev/full"
  with pytest.raises(OSError, match="No space") as error:
    writer.close()
  assert error.value.filename == "/dev/full"


def test_strict_reader_names_the_first_damaged_line(tmp_path, warnings):
  path = tmp_path / "metrics.jsonl"
  text = '{"step": 0, "loss": 1.0}\n7\n\n{"step": 1, "loss": 0.5}\n{"step": 2, "lo'
  path.write_text(text)
  with pytest.raises(ValueError, match=r"metrics\.jsonl:2: not a JSON record with a step "
                     r"\(2 damaged line\(s\)\)"):
    fileio.read_metrics(path, strict=True)
  assert not warnings and path.read_text() == text
  path.write_text('{"step": 0}\n{"step": 1}\n')
  assert fileio.read_metrics(path, strict=True) == [{"step": 0}, {"step": 1}]


def test_writer_cuts_off_a_half_written_last_line(tmp_path, warnings):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": 0.')
  with fileio.MetricsWriter(path) as writer:
    writer.write(1, {"loss": 0.5})
  assert path.read_text() == '{"step": 0, "loss": 1.0}\n{"step": 1, "loss": 0.5}\n'
  assert len(warnings) == 1 and str(path) in warnings[0] and "cutting off" in warnings[0]
  # A complete last record without its line end is kept and ended.
  path.write_text('{"step": 0}')
  with fileio.MetricsWriter(path) as writer:
    writer.write(1, {})
  assert fileio.read_metrics(path) == [{"step": 0}, {"step": 1}]
  assert len(warnings) == 1
  # Blanks without a line end, alone or after the last record: ended, not a reason to stop.
  for blanks in ("\n  ", '{"step": 0}\n \t'):
    path.write_text(blanks)
    with fileio.MetricsWriter(path) as writer:
      writer.write(1, {})
    assert fileio.read_metrics(path)[-1] == {"step": 1}
    assert path.read_text().endswith('\n{"step": 1}\n')
  assert len(warnings) == 1


def test_truncate_drops_later_steps_and_damaged_lines_with_a_warning(tmp_path, warnings):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": 0.5}\n7\n'
                  '{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
  fileio.truncate_metrics(path, 3)
  assert [json.loads(l)["step"] for l in path.read_text().splitlines()] == [0, 1, 2]
  assert len(warnings) == 1 and "2 damaged line(s) (line 3, 5)" in warnings[0]
  assert str(path) in warnings[0]
  before = path.stat().st_mtime_ns
  fileio.truncate_metrics(path, 3)
  assert path.stat().st_mtime_ns == before  # nothing to drop: not rewritten
  fileio.truncate_metrics(path, 1)  # resuming from an earlier checkpoint
  assert fileio.read_metrics(path) == [{"step": 0, "loss": 1.0}]
  fileio.truncate_metrics(tmp_path / "missing.jsonl", 0)  # no file: nothing to do
  assert not (tmp_path / "missing.jsonl").exists()
