"""``benchmarks.reproducibility``: two runs compared step by step and clip by clip."""

import json
import shutil
import subprocess

import pytest

from benchmarks import reproducibility


def _write_run(root, *, losses=(1.0, 0.5, 0.25, 0.2), heldout=(9.0, 4.0), scores=(1.0, 2.0),
               methods=("re", "bu"), auc=0.9, seconds_per_step=1.0):
  results = {}
  for m in methods:
    d = root / m
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text("".join(  # with the wall time a run records
        json.dumps({"step": i, "loss": v, "w_max": 2.0, "train_seconds": seconds_per_step * i})
        + "\n" for i, v in enumerate(losses)))
    (d / "validation.jsonl").write_text("".join(
        json.dumps({"step": 2 * i, "heldout_error": v}) + "\n" for i, v in enumerate(heldout)))
    (d / "anomaly_score_test_id_00.csv").write_text("".join(
        f"clip_{i}.wav,{v}\n" for i, v in enumerate(scores)))
    results[m] = {"auc": {"mean": auc}}
  (root / "results.json").write_text(json.dumps(results))
  return root


def _lines(capsys):
  return [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]


def test_identical_runs_are_bit_identical(tmp_path, capsys):
  """The same numbers in another wall time: identical (the time is not a result)."""
  a, b = _write_run(tmp_path / "a"), _write_run(tmp_path / "b", seconds_per_step=1.3)
  assert reproducibility.main([f"--compare={a},{b}"]) == 0
  *per_method, summary = _lines(capsys)
  assert [r["method"] for r in per_method] == ["re", "bu"]
  for r in per_method:
    assert (r["steps"], r["identical_steps"], r["first_different_step"]) == (4, 4, None)
    assert r["clips"] == 2 and r["max_abs_diff_clip_score"] == 0.0 and r["bit_identical"]
  assert summary["summary"] and summary["bit_identical"]


def test_a_different_step_is_found_and_measured(tmp_path, capsys):
  a = _write_run(tmp_path / "a")
  b = _write_run(tmp_path / "b", losses=(1.0, 0.5, 0.3, 0.2), heldout=(9.0, 4.5))
  assert reproducibility.main([f"--compare={a},{b}"]) == 1
  bu = [r for r in _lines(capsys) if r.get("method") == "bu"][0]
  assert bu["first_different_step"] == 2 and bu["identical_steps"] == 3
  assert bu["max_rel_diff_loss"] == pytest.approx(0.05 / 0.25)
  assert bu["first_different_validation_step"] == 2
  assert bu["max_rel_diff_heldout_error"] == pytest.approx(0.5 / 4.0)
  assert not bu["training_identical"] and not bu["bit_identical"]


def test_same_training_other_scores_is_told_apart(tmp_path, capsys):
  """The same models evaluated with other settings: training identical, scores not."""
  a = _write_run(tmp_path / "a")
  b = _write_run(tmp_path / "b", scores=(1.0, 2.5), auc=0.8)
  assert reproducibility.main([f"--compare={a},{b}"]) == 1
  re = _lines(capsys)[0]
  assert re["training_identical"] and not re["bit_identical"]
  assert re["max_abs_diff_clip_score"] == pytest.approx(0.5)
  assert (re["auc_a"], re["auc_b"]) == (0.9, 0.8)


def test_a_missing_step_or_clip_is_not_identical(tmp_path, capsys):
  a = _write_run(tmp_path / "a")
  b = _write_run(tmp_path / "b", losses=(1.0, 0.5, 0.25))  # one step fewer
  assert reproducibility.main([f"--compare={a},{b}"]) == 1
  r = _lines(capsys)[0]
  assert r["only_in_one"] == 1 and r["identical_steps"] == r["steps"] == 3
  assert not r["bit_identical"]


def test_only_methods_in_both_are_compared(tmp_path, capsys):
  a = _write_run(tmp_path / "a", methods=("re", "snp"))
  b = _write_run(tmp_path / "b", methods=("snp", "bu"))
  assert reproducibility.main([f"--compare={a},{b}"]) == 0
  assert [r.get("method") for r in _lines(capsys)] == ["snp", None]


def test_bad_input_ends_in_one_error_line(tmp_path, capsys):
  a = _write_run(tmp_path / "a")
  assert reproducibility.main([f"--compare={a},{tmp_path / 'missing'}"]) == 1
  err = capsys.readouterr().err
  assert "Error: --compare:" in err and "missing is not a directory" in err
  (tmp_path / "empty").mkdir()
  assert reproducibility.main([f"--compare={a},{tmp_path / 'empty'}"]) == 1
  assert "no method directory" in capsys.readouterr().err
  b = _write_run(tmp_path / "b")
  with open(b / "bu" / "metrics.jsonl", "a") as f:
    f.write("{not json\n")
  assert reproducibility.main([f"--compare={a},{b}"]) == 1
  err = capsys.readouterr().err
  assert "metrics.jsonl:5: not a JSON record" in err and "Traceback" not in err
  c = _write_run(tmp_path / "c")
  with open(c / "re" / "anomaly_score_test_id_00.csv", "a") as f:
    f.write("clip_9.wav\n")
  assert reproducibility.main([f"--compare={a},{c}"]) == 1
  err = capsys.readouterr().err
  assert "anomaly_score_test_id_00.csv:3: not a 'clip,score' row" in err
  with pytest.raises(SystemExit):
    reproducibility.main([f"--compare={a}"])
  assert "needs two workdirs" in capsys.readouterr().err


@pytest.mark.parametrize("second_differs", [False, True])
def test_train_runs_the_same_command_twice_in_fresh_processes(tmp_path, capsys, monkeypatch,
                                                              second_differs):
  calls = []

  def fake_run(cmd, **kwargs):
    calls.append(cmd)
    workdir = [c for c in cmd if c.startswith("--workdir=")][0].split("=", 1)[1]
    other = second_differs and len(calls) == 2  # the second process trained otherwise
    _write_run(tmp_path / "template" / str(len(calls)),
               **({"losses": (1.0, 0.5, 0.3, 0.2)} if other else {}))
    shutil.copytree(tmp_path / "template" / str(len(calls)), workdir)
    return subprocess.CompletedProcess(cmd, 0, "", "")

  monkeypatch.setattr(reproducibility.subprocess, "run", fake_run)
  assert reproducibility.main(["--train", "--loss=snp", "--steps=7", "--seed=3",
                               f"--workdir={tmp_path / 'w'}"]) == int(second_differs)
  if second_differs:  # the two workdirs are compared, not one with itself
    lines = _lines(capsys)
    assert not lines[-1]["bit_identical"]
    assert all(r["first_different_step"] == 2 for r in lines if r.get("method"))
    return
  assert len(calls) == 2
  strip = lambda cmd: [c for c in cmd if not c.startswith("--workdir=")]
  assert strip(calls[0]) == strip(calls[1])
  assert {"--loss=snp", "--steps_per_epoch=7", "--seed=3", "--epochs=1"} <= set(calls[0])
  assert calls[0][1:3] == ["-m", "experiments.toycar"]
  assert (tmp_path / "w" / "a").is_dir() and (tmp_path / "w" / "b").is_dir()
  assert _lines(capsys)[-1]["bit_identical"]


def test_train_refuses_a_workdir_with_an_earlier_run(tmp_path, capsys, monkeypatch):
  """Its models would be found trained and re-evaluated: nothing would be trained twice."""
  monkeypatch.setattr(reproducibility.subprocess, "run",
                      lambda *a, **k: pytest.fail("trained into an earlier run's folder"))
  _write_run(tmp_path / "w" / "b")
  assert reproducibility.main(["--train", f"--workdir={tmp_path / 'w'}"]) == 1
  err = capsys.readouterr().err
  assert "holds an earlier run" in err and "give an empty --workdir" in err


def test_a_failed_training_is_reported_with_its_last_lines(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(
      reproducibility.subprocess, "run",
      lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "noise\nError: --data_dir x"))
  assert reproducibility.main(["--train", f"--workdir={tmp_path}"]) == 1
  err = capsys.readouterr().err
  assert "training a failed (status 1)" in err and "Error: --data_dir x" in err
