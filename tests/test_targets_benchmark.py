"""``benchmarks.targets``: issue #10's targets, checked on finished benchmark workdirs."""

import json
import sys

import pytest

from benchmarks import targets


def _result(auc, vs_rare, vs_frequent, rare_vs_frequent, fpr_rare=None, fpr_frequent=None,
            conditions=("a", "b")):
  """One method's results.json entry: the same value in every condition and the mean."""
  per = lambda v: {**{c: v for c in conditions}, "mean": v}
  return {"auc": per(auc), "pauc": per(0.5),
          "rare_normal": {"auc_vs_rare": per(vs_rare), "auc_vs_frequent": per(vs_frequent),
                          "rare_vs_frequent": per(rare_vs_frequent), "fpr_rare": fpr_rare,
                          "fpr_frequent": fpr_frequent}}


def _write_draw(root, seeds):
  """``seeds``: per seed, {method: (auc, vs_rare, vs_frequent, rare_vs_frequent)}."""
  for seed, methods in enumerate(seeds):
    seed_dir = root / "cpu" / f"seed{seed}"
    seed_dir.mkdir(parents=True)
    (seed_dir / "results.json").write_text(
        json.dumps({m: _result(*v) for m, v in methods.items()}))
  return root


def test_margins_are_the_issues_four_targets_on_the_seed_means():
  seeds = [dict(re=(0.90, 0.80, 0.95, 0.9), snp=(0.92, 0.8, 0.9, 0.9), pca=(0.85, 0.7, 0.9, 0.8),
                bu=(0.94, 0.96, 0.93, 0.60)),
           dict(re=(0.90, 0.80, 0.95, 0.9), snp=(0.92, 0.8, 0.9, 0.9), pca=(0.85, 0.7, 0.9, 0.8),
                bu=(0.90, 0.92, 0.92, 0.80))]
  means = targets.draw_means([{m: _result(*v) for m, v in s.items()} for s in seeds])
  assert means["bu"]["a"]["auc"] == pytest.approx(0.92)
  got = targets.margins(means, "mean")
  assert got["auc"] == pytest.approx(0.92 - 0.92)  # the best rival is SNP's
  assert got["vs_rare"] == pytest.approx(0.94 - (0.80 + 0.15))
  assert got["rare_vs_frequent"] == pytest.approx(0.85 - 0.70)
  assert got["vs_frequent"] == pytest.approx(0.925 - (0.95 - 0.02))
  # A missing method or value leaves its margin unknown, not zero.
  partial = targets.draw_means([{"bu": _result(0.9, 0.9, 0.9, 0.9)}])
  assert targets.margins(partial, "mean")["vs_rare"] is None
  assert targets.margins(partial, "mean")["rare_vs_frequent"] == pytest.approx(-0.05)


def test_room_at_uniform_is_bu_frequent_against_re_rare_plus_the_gain():
  """The vs_rare margin BU would have if its rare normals scored like its frequent ones:
  it reads BU's AUC against frequent normals and RE's against rare ones, nothing else."""
  base = dict(re=(0.90, 0.70, 0.95, 0.9), snp=(0.92, 0.8, 0.9, 0.9), bu=(0.94, 0.80, 0.90, 0.7))
  means = targets.draw_means([{m: _result(*v) for m, v in base.items()}])
  assert targets.room_at_uniform(means, "a") == pytest.approx(0.90 - (0.70 + 0.15))
  # BU's own AUC against rare normals does not enter it; RE's against frequent ones neither.
  other = dict(base, re=(0.90, 0.70, 0.60, 0.9), bu=(0.94, 0.99, 0.90, 0.1))
  means2 = targets.draw_means([{m: _result(*v) for m, v in other.items()}])
  assert targets.room_at_uniform(means2, "a") == pytest.approx(targets.room_at_uniform(means, "a"))
  assert targets.room_at_uniform(targets.draw_means([{"bu": _result(*base["bu"])}]), "a") is None


def test_command_prints_margins_per_draw_and_counts(tmp_path, monkeypatch, capsys):
  met = _write_draw(tmp_path / "met", [dict(re=(0.8, 0.6, 0.9, 0.9), snp=(0.8, 0.6, 0.9, 0.9),
                                            pca=(0.7, 0.5, 0.8, 0.8), bu=(0.85, 0.8, 0.9, 0.7))])
  missed = _write_draw(tmp_path / "missed", [dict(re=(0.9, 0.9, 0.9, 0.5),
                                                  snp=(0.95, 0.9, 0.9, 0.5),
                                                  pca=(0.7, 0.5, 0.8, 0.8),
                                                  bu=(0.9, 0.9, 0.85, 0.9))])
  demo = tmp_path / "demo"
  demo.mkdir()
  (demo / "results.json").write_text(json.dumps({"bu": _result(0.93, 0.5, 0.5, 0.5)}))
  monkeypatch.setattr(sys, "argv", ["targets", f"--draws=one={met},two={missed}",
                                    f"--demo={demo}"])
  targets.main()
  out = capsys.readouterr().out
  lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
  alarms = [l for l in lines if l.get("diagnostic") == "fpr_at_phi"]
  assert len(alarms) == 2 * 4  # draws x methods; no rates in these results: unknown
  assert all(l["fpr_rare"] is None and l["fpr_frequent"] is None for l in alarms)
  lines = [l for l in lines if l not in alarms]
  # draws x (a, b, mean) x (targets and the diagnostic), and the demo
  assert len(lines) == 2 * 3 * (4 + 1) + 1
  row = {(l["draw"], l["condition"], l.get("target", l.get("diagnostic"))): l for l in lines}
  assert row[("one", "b", "room_at_uniform")]["value"] == pytest.approx(0.9 - (0.6 + 0.15))
  assert row[("two", "mean", "room_at_uniform")]["value"] == pytest.approx(0.85 - 1.05)
  assert row[("one", "a", "vs_rare")]["margin"] == pytest.approx(0.05)
  assert row[("two", "mean", "auc")]["met"] is False
  assert "| one | +0.050 (2/2 folders) | +0.050 (2/2 folders) |" in out
  assert "| two | -0.050 (0/2 folders) | -0.150 (0/2 folders) | -0.050 (0/2 folders) |" in out
  assert "auc: met on 1 of 2 draws" in out and "vs_rare: met on 1 of 2 draws" in out
  assert "| +0.150 (2/2 folders) |\n" in out and "| -0.200 (0/2 folders) |\n" in out
  assert "room_at_uniform: >= 0 on 1 of 2 draws" in out
  assert "demo: BU's mean AUC 0.930 over 1 run(s), margin +0.020" in out


def test_false_alarms_at_phi_are_seed_means_and_bu_is_compared_with_re(tmp_path, monkeypatch,
                                                                      capsys):
  seeds = [dict(re=(0.8, 0.6, 0.9, 0.9, 0.50, 0.00), bu=(0.8, 0.7, 0.9, 0.8, 0.25, 0.10)),
           dict(re=(0.8, 0.6, 0.9, 0.9, 0.30, 0.04), bu=(0.8, 0.7, 0.9, 0.8, 0.25, 0.00))]
  rates = targets.false_alarms([{m: _result(*v) for m, v in s.items()} for s in seeds])
  assert rates["re"] == pytest.approx({"fpr_rare": 0.40, "fpr_frequent": 0.02})
  assert rates["bu"] == pytest.approx({"fpr_rare": 0.25, "fpr_frequent": 0.05})
  fewer = _write_draw(tmp_path / "fewer", seeds)
  more = _write_draw(tmp_path / "more", [dict(re=(0.8, 0.6, 0.9, 0.9, 0.1, 0.1),
                                              bu=(0.8, 0.7, 0.9, 0.8, 0.2, 0.1))])
  monkeypatch.setattr(sys, "argv", ["targets", f"--draws=f={fewer},m={more}"])
  targets.main()
  out = capsys.readouterr().out
  assert "| f | 0.400 / 0.020 | 0.250 / 0.050 | -0.150 / +0.030 |" in out
  assert "| m | 0.100 / 0.100 | 0.200 / 0.100 | +0.100 / +0.000 |" in out
  assert ("fpr_at_phi: BU flags fewer rare normals than RE on 1 of 2 draws; more frequent "
          "normals on 1 of 2") in out


@pytest.mark.parametrize("argv, message", [
    (["--draws=nameonly"], "error: --draws: 'nameonly' is not name=workdir"),
    (["--draws=x=/no/such/dir"], "error: --draws: x=/no/such/dir: no such directory"),
])
def test_bad_flags_are_one_line(argv, message, monkeypatch, capsys):
  monkeypatch.setattr(sys, "argv", ["targets", *argv])
  with pytest.raises(SystemExit) as exit_info:
    targets.main()
  assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_workdir_without_results_names_itself(tmp_path, monkeypatch, capsys):
  (tmp_path / "empty").mkdir()
  monkeypatch.setattr(sys, "argv", ["targets", f"--draws=x={tmp_path / 'empty'}"])
  with pytest.raises(SystemExit) as exit_info:
    targets.main()
  assert exit_info.value.code == 1
  assert f"Error: {tmp_path / 'empty'}: no cpu/seed<N>/results.json" in capsys.readouterr().err


def test_only_seed_folders_count_and_a_demo_without_bu_names_its_file(tmp_path, monkeypatch,
                                                                       capsys):
  row = dict(re=(0.8, 0.6, 0.9, 0.9), snp=(0.8, 0.6, 0.9, 0.9), pca=(0.7, 0.5, 0.8, 0.8),
             bu=(0.85, 0.8, 0.9, 0.7))
  draw = _write_draw(tmp_path / "d", [row])
  old = draw / "cpu" / "seed0_old"  # a copy beside the seed: not a seed of the draw
  old.mkdir()
  (old / "results.json").write_text(json.dumps({m: _result(0.1, 0.1, 0.1, 0.1) for m in row}))
  demo = tmp_path / "demo"
  demo.mkdir()
  (demo / "results.json").write_text(json.dumps({"re": _result(0.9, 0.5, 0.5, 0.5)}))
  monkeypatch.setattr(sys, "argv", ["targets", f"--draws=one={draw}"])
  targets.main()
  out = capsys.readouterr().out
  assert "| one | +0.050 (2/2 folders) |" in out
  monkeypatch.setattr(sys, "argv", ["targets", f"--draws=one={draw}", f"--demo={demo}"])
  with pytest.raises(SystemExit) as exit_info:
    targets.main()
  assert exit_info.value.code == 1
  assert f"Error: {demo / 'results.json'}: no BU results" in capsys.readouterr().err


def test_a_seed_lacking_a_method_another_seed_holds_is_refused(tmp_path, monkeypatch, capsys):
  """A seed still running (or interrupted) holds RE and SNP but not yet BU and PCA: BU's
  mean would be seed0's alone against RE's over both seeds, so the draw is refused."""
  full = dict(re=(0.8, 0.6, 0.9, 0.9), snp=(0.8, 0.6, 0.9, 0.9), pca=(0.7, 0.5, 0.8, 0.8),
              bu=(0.85, 0.8, 0.9, 0.7))
  draw = _write_draw(tmp_path / "d", [full, dict(re=full["re"], snp=full["snp"])])
  monkeypatch.setattr(sys, "argv", ["targets", f"--draws=one={draw}"])
  with pytest.raises(SystemExit) as exit_info:
    targets.main()
  assert exit_info.value.code == 1
  out, err = capsys.readouterr()
  assert err.strip() == (f"Error: --draws one={draw}: cpu/seed1/results.json lacks bu, pca, "
                         "which another seed holds (a seed still running or interrupted?); "
                         "every seed of a draw must hold the same methods")
  assert out == ""
  # A method no seed holds is no gap: the draw is read, its margins unknown.
  assert targets.missing_methods([{"re": {}}, {"re": {}}]) == [[], []]
