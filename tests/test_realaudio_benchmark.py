"""The label-free selection rule of ``benchmarks.realaudio --select_from``."""

import pytest

from benchmarks import realaudio


def _res(**spreads):
  return {m: {"heldout_max_over_median": v, "auc": {"mean": 0.5}} for m, v in spreads.items()}


def test_each_method_keeps_the_evaluation_with_the_lowest_heldout_spread():
  candidates = [("raw", _res(re=2.1, bu=1.5, pca=2.8)), ("knn", _res(re=1.4, bu=1.6)),
                ("knn_z", _res(re=1.4, bu=1.2, pca=1.9))]
  got = realaudio.select_by_heldout_spread(candidates)
  assert {m: r["selected_from"] for m, r in got.items()} == {
      "re": "knn", "bu": "knn_z", "pca": "knn_z"}  # a tie keeps the first
  assert got["bu"]["heldout_max_over_median"] == 1.2 and "snp" not in got
  assert "selected_from" not in candidates[2][1]["bu"]  # the inputs are left as they were


def test_results_without_the_criterion_get_it_from_their_heldout_scores():
  old = {"bu": {"heldout_clip_scores": [1.0, 2.0, 3.0, 9.0]}}  # max / median = 9 / 2.5
  got = realaudio.select_by_heldout_spread([("old", old), ("new", _res(bu=3.0))])
  assert got["bu"]["selected_from"] == "new"
  got = realaudio.select_by_heldout_spread([("old", old), ("new", _res(bu=4.0))])
  assert got["bu"]["selected_from"] == "old" and got["bu"]["heldout_max_over_median"] == 3.6


def test_from_results_prints_each_runs_scores_and_window(tmp_path, monkeypatch, capsys):
  """--from_results: one JSON line per (method, condition, seed) naming the scores and
  the clip-score window, and a summary row of what each method was evaluated on."""
  import json  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = tmp_path / "set"
  (root / "dev_data" / "engine_b").mkdir(parents=True)
  for seed, window in ((0, 62), (1, 1)):
    res = {m: {"auc": {"c": 0.9, "mean": 0.9}, "pauc": {"c": 0.8, "mean": 0.8},
               "rare_normal": {"rare_vs_frequent": {"c": 0.7, "mean": 0.7}},
               "pseudo_anomaly_auc": 0.99,
               "score_normalization": {"kind": "knn_z", **({"bank": "heldout"} if seed else {})},
               "clip_score": {"window_frames": window, "window_s": window * 0.016}}
           for m in ("re", "snp", "bu", "pca")}
    seed_dir = tmp_path / "w" / "cpu" / f"seed{seed}"
    seed_dir.mkdir(parents=True)
    (seed_dir / "results.json").write_text(json.dumps(res))
  monkeypatch.setattr(sys, "argv", ["realaudio", f"--root={root}", "--seeds=0,1",
                                    f"--workdir={tmp_path / 'w'}", "--from_results"])
  realaudio.main()
  out = capsys.readouterr().out
  lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
  per_run = [l for l in lines if not l.get("summary")]
  assert len(per_run) == 2 * 4 * 2  # seeds x methods x (condition c, mean)
  assert {(l["seed"], l["score_window_s"]) for l in per_run} == {(0, 0.992), (1, 0.016)}
  assert {(l["seed"], l["normalization_bank"]) for l in per_run} == {(0, None), (1, "heldout")}
  assert "| scores evaluated | knn_z 0.992s 1/2, knn_z 1/2 |" in out
  # The README's rows: mean ± std over the seeds, the PCA (no random state) without.
  assert "| | RE | 0.900 ± 0.000 |  |  | 0.700 ± 0.000 |" in out
  assert "| | PCA | 0.900 |  |  | 0.700 |" in out


def test_bad_flags_and_files_are_one_clear_line(tmp_path, monkeypatch, capsys):
  """Each of these ended in a traceback (or, for --seeds=",", printed nothing). In
  process (a clean exit with the message); the first also as its own process."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  root = tmp_path / "set"
  (root / "dev_data" / "engine_b").mkdir(parents=True)
  seed0 = tmp_path / "w" / "cpu" / "seed0"
  seed0.mkdir(parents=True)
  (seed0 / "results.json").write_text('{"re": {"train_seconds": 3}}')  # training not finished
  seed2 = tmp_path / "w" / "cpu" / "seed2"
  seed2.mkdir(parents=True)
  (seed2 / "results.json").write_text('{"re": {"auc": 0.9, "pauc": 0.7}}')  # not per condition
  seed3 = tmp_path / "w" / "cpu" / "seed3"
  seed3.mkdir(parents=True)
  (seed3 / "results.json").write_text('{"re": {"auc": {"mean": 0.9}, "pauc": {"mean": 0.7}}}')
  base = [sys.executable, "-m", "benchmarks.realaudio", f"--root={root}",
          f"--workdir={tmp_path / 'w'}"]
  cases = {
      ("--seeds=a",): "error: --seeds=a: give comma-separated integers",
      ("--seeds=,",): "error: --seeds=',': no seed given",
      ("--seeds=0", "--epochs=0"): "error: --epochs must be >= 1, got 0",
      ("--seeds=0", "--sigma=1e39"): "error: --sigma must be finite and > 0 in float32",
      ("--seeds=0", "--from_results"):
          f"Error: {seed0 / 'results.json'}: not a finished run's results",
      ("--seeds=1", "--from_results"):
          f"Error: {tmp_path / 'w' / 'cpu' / 'seed1' / 'results.json'}: no such file",
      ("--seeds=0", "--select_from=/no/such/dir"):
          "Error: /no/such/dir/cpu/seed0/results.json: no such file",
      ("--seeds=2", "--from_results"):
          f"Error: {seed2 / 'results.json'}: not a finished run's results",
      ("--seeds=3", f"--select_from={tmp_path / 'w'}"):
          f"Error: {seed3 / 'results.json'}: lacks the held-out clip scores",
  }
  for flags, message in cases.items():
    monkeypatch.setattr(sys, "argv", base[2:] + list(flags))
    with pytest.raises(SystemExit) as exit_info:
      realaudio.main()
    assert exit_info.value.code not in (0, None), flags
    assert message in capsys.readouterr().err, flags
  flags, message = next(iter(cases.items()))
  proc = subprocess.run(base + list(flags), cwd=repo, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
  assert message in proc.stderr, proc.stderr


def test_the_bank_flags_reach_every_seeds_run(tmp_path, monkeypatch):
  """--normalization_bank and --crossfit_schedule are passed to each seed's toy-car
  settings; without the schedule the toy-car default (short) applies."""
  import sys  # pylint: disable=g-import-not-at-top
  root = tmp_path / "set"
  (root / "dev_data" / "engine_b").mkdir(parents=True)
  seen = {}
  monkeypatch.setattr(realaudio, "_benchmark",
                      lambda args, seeds, settings: seen.update(settings))
  for extra, schedule in ((["--crossfit_schedule=scaled"], "scaled"), ([], "short")):
    seen.clear()
    monkeypatch.setattr(sys, "argv", ["realaudio", f"--root={root}", "--seeds=0,2",
                                      f"--workdir={tmp_path / 'w'}",
                                      "--normalization_bank=auto", *extra])
    realaudio.main()
    assert sorted(seen) == [0, 2]
    assert {(s.normalization_bank, s.crossfit_schedule, s.seed) for s in seen.values()} == {
        ("auto", schedule, 0), ("auto", schedule, 2)}
    assert {s.tilt for s in seen.values()} == {None}  # the preset's: eq. (16) alone
  seen.clear()
  monkeypatch.setattr(sys, "argv", ["realaudio", f"--root={root}", "--seeds=1",
                                    f"--workdir={tmp_path / 'w'}", "--tilt=4",
                                    "--segment_sampling=0.5"])
  realaudio.main()
  assert seen[1].tilt == 4.0 and seen[1].segment_sampling == 0.5
  assert seen[1].train_config("re").segment_sampling == 0.5  # every loss draws so
