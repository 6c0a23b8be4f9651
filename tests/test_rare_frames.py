"""``benchmarks.rare_frames``: bad flags end in one ``Error:`` line, not in silence or a
traceback."""

import sys

import pytest

from benchmarks import rare_frames


def _main(monkeypatch, capsys, *argv):
  monkeypatch.setattr(sys, "argv", ["rare_frames", *argv])
  with pytest.raises(SystemExit) as exit_info:
    rare_frames.main()
  out, err = capsys.readouterr()
  assert exit_info.value.code == 1 and out == ""
  assert len(err.strip().splitlines()) == 1, err
  return err.strip()


def test_a_missing_workdir_or_root_is_one_error_line(tmp_path, monkeypatch, capsys):
  root = tmp_path / "set"
  root.mkdir()
  assert _main(monkeypatch, capsys, f"--root={root}", f"--workdir={tmp_path / 'no'}") == (
      f"Error: --workdir={tmp_path / 'no'}: no such directory")
  assert _main(monkeypatch, capsys, f"--root={tmp_path / 'no'}", "--pca_sweep=16") == (
      f"Error: --root={tmp_path / 'no'}: no such directory")
  assert _main(monkeypatch, capsys, f"--root={root}", "--pca_sweep=16") == (
      f"Error: --root={root}: no metadata.csv (not a built realaudio-dev set)")


def test_a_workdir_without_a_trained_loss_says_what_it_expects(tmp_path, monkeypatch, capsys):
  """A benchmarks.realaudio workdir W holds its models in W/cpu/seed<N>/<loss>: given W,
  the command used to skip every loss and print nothing, with status 0."""
  root, workdir = tmp_path / "set", tmp_path / "ra"
  root.mkdir()
  (workdir / "cpu" / "seed0" / "re" / "checkpoints").mkdir(parents=True)
  (workdir / "bu").mkdir()  # a loss folder without a model does not count
  err = _main(monkeypatch, capsys, f"--root={root}", f"--workdir={workdir}")
  assert err == (f"Error: --workdir={workdir}: no trained model of re,snp,bu (no "
                 "<loss>/checkpoints); give a toy-car workdir, such as W/cpu/seed0 of a "
                 "benchmarks.realaudio workdir W")
  assert rare_frames.trained_losses(str(workdir / "cpu" / "seed0"), ["re", "snp", "bu"]) == ["re"]
