"""benchmarks.uniform_control: BU against its own uniform-weight control."""

import json
import os
import sys

import pytest

from benchmarks import uniform_control
from bu_jax import data as data_lib
from bu_jax import toycar

# The tiny runs below train at XLA's backend optimization level 0 (conftest).
pytestmark = pytest.mark.usefixtures("fast_training")


def _results(aucs: dict[str, float], **extra) -> dict:
  """A finished run's results.json: per method one condition "c" and its mean."""
  return {m: {"auc": {"c": a, "mean": a}, "pauc": {"c": 0.5, "mean": 0.5}, **extra}
          for m, a in aucs.items()}


def test_paired_differences_are_against_the_control():
  seed = _results({"re": 0.90, "snp": 0.91, "bu": 0.88})
  control = _results({"bu": 0.92})
  got = uniform_control.paired(seed, control)
  assert set(got) == {"c", "mean"}
  row = got["mean"]
  assert row["uniform"] == 0.92 and row["bu"] == 0.88
  assert row["bu_minus_uniform"] == pytest.approx(-0.04)
  assert row["snp_minus_uniform"] == pytest.approx(-0.01)
  assert row["re_minus_uniform"] == pytest.approx(-0.02)
  assert row["bu_minus_re"] == pytest.approx(-0.02)
  assert row["bu_minus_snp"] == pytest.approx(-0.03)
  assert not any("/" in k for k in row)  # no rare-normal labels: AUC only
  missing = uniform_control.paired(_results({"bu": 0.88}), control)["c"]
  assert "snp" not in missing and missing["bu_minus_uniform"] == pytest.approx(-0.04)
  assert "bu_minus_snp" not in missing


def _rare(vs_rare: float, bias: float, vs_frequent: float = 0.95, fpr_rare: float = 0.25) -> dict:
  return {"rare_normal": {"auc_vs_rare": {"c": vs_rare, "mean": vs_rare},
                          "auc_vs_frequent": {"c": vs_frequent, "mean": vs_frequent},
                          "rare_vs_frequent": {"c": bias, "mean": bias},
                          "fpr_rare_by_condition": {"c": fpr_rare, "mean": fpr_rare},
                          "fpr_frequent_by_condition": {"c": 0.05, "mean": 0.05},
                          "fpr_rare": fpr_rare, "fpr_frequent": 0.05}}


def test_rare_normal_metrics_are_paired_too():
  """With rare-normal labels the AUC against rare normals and the rare-vs-frequent AUC
  (the bias BU is for) get the same differences; the PCA is shown, not differenced."""
  seed = {"re": {**_results({"re": 0.90})["re"], **_rare(0.80, 0.70)},
          "bu": {**_results({"bu": 0.88})["bu"], **_rare(0.85, 0.60)},
          "pca": {**_results({"pca": 0.84})["pca"], **_rare(0.75, 0.90)}}
  control = {"bu": {**_results({"bu": 0.89})["bu"],
                    **_rare(0.82, 0.65, vs_frequent=0.97, fpr_rare=0.5)}}
  row = uniform_control.paired(seed, control)["mean"]
  # A lower bias can come from frequent normals scored higher: their AUC is paired too,
  # and the false alarms at phi on each kind of normal clip.
  assert row["bu_minus_uniform/auc_vs_frequent"] == pytest.approx(-0.02)
  assert row["bu_minus_uniform/fpr_rare"] == pytest.approx(-0.25)
  assert row["bu_minus_uniform/fpr_frequent"] == pytest.approx(0.0)
  assert uniform_control._label("bu_minus_re/fpr_rare") == (
      "BU - RE, false positives at phi, rare normals")
  assert row["pca"] == 0.84 and row["pca/rare_vs_frequent"] == 0.90
  assert row["bu_minus_uniform/auc_vs_rare"] == pytest.approx(0.03)
  assert row["bu_minus_uniform/rare_vs_frequent"] == pytest.approx(-0.05)
  assert row["bu_minus_re/rare_vs_frequent"] == pytest.approx(-0.10)
  assert row["bu_minus_re"] == pytest.approx(-0.02)
  assert not any(k.startswith("pca_minus") for k in row)
  assert uniform_control._label("bu_minus_re/rare_vs_frequent") == "BU - RE, rare vs frequent"
  # A BU variant (--bandwidth) is one more method, differenced against the control, BU and RE.
  seed["variant"] = {**_results({"bu": 0.87})["bu"], **_rare(0.86, 0.50)}
  row = uniform_control.paired(seed, control)["mean"]
  assert row["variant_minus_bu/rare_vs_frequent"] == pytest.approx(-0.10)
  assert row["variant_minus_uniform"] == pytest.approx(-0.02)
  assert uniform_control._label("variant_minus_uniform") == "BU variant - uniform BU"


def _write_tree(root, *, w_min: float):
  seed_dir = root / "cpu" / "seed0"
  control = root / "cpu" / "uniform" / "seed0"
  (control / "bu").mkdir(parents=True)
  seed_dir.mkdir(parents=True)
  (seed_dir / "results.json").write_text(json.dumps(_results({"re": 0.9, "snp": 0.9,
                                                               "bu": 0.85},
                                                              pseudo_anomaly_auc=0.97)))
  (control / "results.json").write_text(json.dumps(_results({"bu": 0.91},
                                                            pseudo_anomaly_auc=0.96)))
  (control / "bu" / "metrics.jsonl").write_text("".join(
      json.dumps({"step": s, "w_max": 1.0, "w_min": w}) + "\n" for s, w in ((0, 1.0), (1, w_min))))
  return control


def test_from_results_prints_the_differences_and_checks_uniformity(tmp_path, monkeypatch,
                                                                    capsys):
  _write_tree(tmp_path, w_min=1.0)
  monkeypatch.setattr(sys, "argv", ["uniform_control", f"--workdir={tmp_path}", "--seeds=0",
                                    "--from_results"])
  uniform_control.main()
  out = capsys.readouterr().out
  lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
  mean = next(l for l in lines if l["condition"] == "mean")
  assert mean["uniform_ok"] and mean["control_weight_max_over_min"] == 1.0
  assert mean["bu_minus_uniform"] == pytest.approx(-0.06)
  assert mean["pseudo_bu"] == 0.97 and mean["pseudo_uniform"] == 0.96
  assert "| BU - uniform BU | -0.060 | -0.060 ± 0.000 |" in out
  assert "| pseudo-anomaly AUC, uniform BU | 0.960 | 0.960 ± 0.000 |" in out
  assert "Warning" not in out


def test_several_workdirs_are_pooled(tmp_path, monkeypatch, capsys):
  """Two draws: a table each, the differences pooled over both runs, and the count of
  runs where the higher pseudo-anomaly AUC marks the better of BU and its control."""
  a, b = tmp_path / "a", tmp_path / "b"
  _write_tree(a, w_min=1.0)  # BU 0.85 below its control's 0.91; pseudo 0.97 above 0.96: wrong
  control = _write_tree(b, w_min=1.0)
  (control / "results.json").write_text(json.dumps(_results({"bu": 0.80},  # BU above: right
                                                            pseudo_anomaly_auc=0.96)))
  monkeypatch.setattr(sys, "argv", ["uniform_control", f"--workdir={a},{b}", "--seeds=0",
                                    "--from_results"])
  uniform_control.main()
  out = capsys.readouterr().out
  assert f"\n{a}:\n" in out and f"\n{b}:\n" in out
  assert "Pooled over 2 runs:" in out
  assert "| BU - uniform BU | -0.005 ± 0.055 | -0.060 to +0.050 | 1 of 2 | 0.75 |" in out
  assert ("marks the better of BU and its control in 1 of 2 runs; keeping it gives AUC 0.850 "
          "(BU 0.850, the control 0.855)") in out


def test_plot_names_each_workdir_and_pools_the_runs(tmp_path, monkeypatch, capsys):
  """--plot writes the forest plot of the paired differences, a row per workdir named
  by name=workdir (or by its last folder), a pooled row."""
  a, b = tmp_path / "a", tmp_path / "b"
  _write_tree(a, w_min=1.0)
  _write_tree(b, w_min=1.0)
  assert uniform_control.parse_workdirs(f" first={a}, {b}/,") == [("first", str(a)),
                                                                  ("b", f"{b}/")]
  drawn = {}
  monkeypatch.setattr(uniform_control.plots, "plot_paired_differences",
                      lambda path, draws, **kw: drawn.update(path=path, draws=draws, **kw) or path)
  png = tmp_path / "d.png"
  monkeypatch.setattr(sys, "argv", ["uniform_control", f"--workdir=first={a},{b}", "--seeds=0",
                                    "--from_results", f"--plot={png}"])
  uniform_control.main()
  assert f"Wrote {png}" in capsys.readouterr().out
  assert list(drawn["draws"]) == ["first", "b"]
  assert drawn["draws"]["first"][0]["bu_minus_uniform"] == pytest.approx(-0.06)
  assert ("bu_minus_uniform", "BU - uniform BU") in drawn["differences"]
  assert drawn["title"].endswith("scored as each run chose")
  for entries, message in ((f"x={a},x={b}", "a workdir or a name is given twice"),
                           (f"{a},{a}", "a workdir or a name is given twice"),
                           (f"x=,{b}", "an entry without a name or a path"),
                           (f"pooled={a}", "'pooled' names the plot's row of every run")):
    monkeypatch.setattr(sys, "argv", ["uniform_control", f"--workdir={entries}", "--seeds=0",
                                      "--from_results"])
    with pytest.raises(SystemExit):
      uniform_control.main()
    assert message in capsys.readouterr().err


def test_raw_scores_are_a_scoring_of_their_own(tmp_path, monkeypatch):
  """--score_normalization=none reaches the re-evaluation with the window, in copies
  named by both settings (never the normalized copies')."""
  seen = {}
  monkeypatch.setattr(uniform_control, "run", lambda workdirs, seeds, **kw: seen.update(kw) or {})
  monkeypatch.setattr(sys, "argv", ["uniform_control", f"--workdir={tmp_path}", "--seeds=0",
                                    "--score_normalization=none", "--score_window=125"])
  uniform_control.main()
  assert seen["scoring"] == {"score_normalization": "none", "score_window": 125}
  seed_dir = str(tmp_path / "cpu" / "seed0")
  assert uniform_control.alike_dir(seed_dir, seen["scoring"]) == str(
      tmp_path / "cpu" / "uniform" / "score_normalization-none_score_window-125" / "seed0")
  settings = uniform_control.toycar.Settings(workdir="w", preset="cpu", **seen["scoring"])
  assert settings.normalization()[0] == "none"
  assert settings.bank() == "training"  # no fold models are trained for raw scores


def test_a_control_whose_weights_varied_is_flagged(tmp_path, monkeypatch, capsys):
  _write_tree(tmp_path, w_min=0.5)
  monkeypatch.setattr(sys, "argv", ["uniform_control", f"--workdir={tmp_path}", "--seeds=0",
                                    "--from_results"])
  uniform_control.main()
  out = capsys.readouterr().out
  assert "seed 0: the control's weights were not uniform (max / min 2.000000)" in out
  assert '"uniform_ok": false' in out


def test_missing_runs_and_bad_flags_are_one_line(tmp_path, monkeypatch, capsys):
  for argv, message in ((["--seeds=x"], "--seeds=x: give comma-separated integers"),
                        ([f"--workdir={tmp_path}", "--seeds=0"],
                         "seed0/results.json: no such file"),
                        (["--score_window=-1"], "--score_window must be >= 0, got -1"),
                        (["--bandwidth=contrast"], "--bandwidth: give --normalization_bank"),
                        (["--tilt=2"], "--tilt: give --normalization_bank"),
                        (["--tilt=0", "--score_window=125"], "--tilt=0.0: give t > 0"),
                        (["--segment_sampling=1"], "--segment_sampling: give --normalization_bank"),
                        (["--segment_sampling=0", "--score_window=125"],
                         "--segment_sampling=0.0: give t > 0"),
                        (["--crossfit_bu_folds=bu", "--score_window=31"],
                         "--crossfit_bu_folds: give --normalization_bank=crossfit too"),
                        (["--score_normalization=none", "--normalization_bank=crossfit"],
                         "--normalization_bank=crossfit applies to --score_normalization=knn"),
                        (["--score_normalization=zscore"], "invalid choice: 'zscore'")):
    monkeypatch.setattr(sys, "argv", ["uniform_control", *argv])
    with pytest.raises(SystemExit):
      uniform_control.main()
    assert message in capsys.readouterr().err
  control = _write_tree(tmp_path, w_min=1.0)
  os.remove(control / "bu" / "metrics.jsonl")
  with pytest.raises(data_lib.DataError, match=r"metrics.jsonl: no BU weight statistics"):
    uniform_control.run([str(tmp_path)], [0], preset="cpu", from_results=True)


@pytest.mark.slow
def test_the_control_trains_bu_with_uniform_weights_and_the_seeds_settings(tmp_path, capsys):
  """End to end on a tiny set: the control is BU with the seed's settings and sigma
  1e-12, its weights uniform, its cross-fitted bank from the seed's RE fold models."""
  from bu_jax import checkpoint, synthetic  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path / "set")
  synthetic.generate(data_dir, seed=1, num_train=6, num_test=6, clip_seconds=4.0,
                     num_noise=1, noise_seconds=5.0, num_anomaly=5, num_something_else=5,
                     rare_seconds=1.5)
  seed_dir = tmp_path / "w" / "cpu" / "seed0"
  toycar.run(toycar.Settings(
      workdir=str(seed_dir), losses=("re", "snp", "bu"), preset="demo", data_dir=data_dir,
      something_else_dir=os.path.join(data_dir, "something_else"), epochs=1, steps_per_epoch=4,
      decay_start_epoch=0, segments_per_mixture=2, steps_per_call=2, checkpoint_every=2,
      progress=False, num_devices=1, score_normalization="knn", normalization_neighbors=5,
      normalization_bank="crossfit", reference_components=4))
  table = uniform_control.run([str(tmp_path / "w")], [0], preset="cpu",
                              from_results=False)[str(tmp_path / "w")]
  control = tmp_path / "w" / "cpu" / "uniform" / "seed0"
  results = json.loads((control / "results.json").read_text())
  seed = json.loads((seed_dir / "results.json").read_text())
  assert results["settings"]["sigma"] == uniform_control.UNIFORM_SIGMA
  assert results["settings"]["losses"] == ["bu"]
  for key, value in seed["settings"].items():
    if key not in ("workdir", "losses", "sigma"):
      assert results["settings"][key] == value, key
  assert uniform_control.weight_spread(str(control)) - 1 <= uniform_control.UNIFORM_TOLERANCE
  assert uniform_control.weight_spread(str(seed_dir)) > 1.01  # the paper's sigma: not uniform
  assert results["bu"]["crossfit"]["fold_models"] == "re"
  assert not checkpoint.committed_steps(str(control / "re"))  # RE's main model not needed
  assert table[0]["mean"]["uniform"] == results["bu"]["auc"]["mean"]
  # Scored alike: both models re-evaluated in copies with the given scoring; the seed's
  # results stay as they were, the control keeps its own scoring.
  before = (seed_dir / "results.json").read_text()
  again = uniform_control.run([str(tmp_path / "w")], [0], preset="cpu", from_results=False,
                              scoring={"score_window": 1},
                              bandwidth="contrast", tilt=2.0)[str(tmp_path / "w")]
  copies = control.parent / "score_window-1" / "seed0"
  for which, sigma in (("bu", None), ("uniform", uniform_control.UNIFORM_SIGMA)):
    rescored = json.loads((copies / which / "results.json").read_text())
    assert rescored["bu"]["clip_score"]["window_frames"] == 1
    assert rescored["settings"]["sigma"] == sigma
  # RE and SNP re-evaluated together in one copy, with their own fold models and the
  # PCA reference scored the same way beside them.
  others = json.loads((copies / "re_snp" / "results.json").read_text())
  for method in ("re", "snp", "pca"):
    assert others[method]["clip_score"]["window_frames"] == 1, method
    assert again[0]["mean"][method] == others[method]["auc"]["mean"], method
  assert others["snp"]["crossfit"]["fold_models"] == "snp"
  assert again[0]["mean"]["bu_minus_re"] == pytest.approx(
      json.loads((copies / "bu" / "results.json").read_text())["bu"]["auc"]["mean"]
      - others["re"]["auc"]["mean"])
  assert again[0]["mean"]["uniform"] == json.loads(
      (copies / "uniform" / "results.json").read_text())["bu"]["auc"]["mean"]
  # The BU variant: the seed's settings but its band-width and tilt, scored alike.
  variant = json.loads((copies / "bandwidth-contrast_tilt-2" / "results.json").read_text())
  assert variant["settings"]["bandwidth"] == "contrast" and variant["settings"]["sigma"] is None
  assert variant["settings"]["tilt"] == 2.0 and seed["settings"]["tilt"] is None
  assert variant["bu"]["clip_score"]["window_frames"] == 1
  assert again[0]["mean"]["variant"] == variant["bu"]["auc"]["mean"]
  assert uniform_control.weight_spread(str(copies / "bandwidth-contrast_tilt-2")) > 1.01
  # Scored a second way, the variant is re-evaluated from its trained model, not trained again.
  capsys.readouterr()
  uniform_control.run([str(tmp_path / "w")], [0], preset="cpu", from_results=False,
                      scoring={"score_window": 2}, bandwidth="contrast", tilt=2.0)
  second = control.parent / "score_window-2" / "seed0" / "bandwidth-contrast_tilt-2"
  assert json.loads((second / "results.json").read_text())["bu"]["clip_score"][
      "window_frames"] == 2
  printed = capsys.readouterr().out
  assert "[bu] already trained" in printed and "[bu] training" not in printed
  assert (seed_dir / "results.json").read_text() == before
  assert json.loads((control / "results.json").read_text())["bu"]["auc"] == results["bu"]["auc"]


def test_a_variant_names_its_folder_by_its_settings():
  assert uniform_control.variant_name({"bandwidth": "contrast"}) == "bandwidth-contrast"
  assert uniform_control.variant_name({"tilt": 4.0}) == "tilt-4"
  assert uniform_control.variant_name({"segment_sampling": 1.0}) == "segment_sampling-1"
  assert uniform_control.variant_name({"tilt": 0.5, "bandwidth": "contrast"}) == (
      "bandwidth-contrast_tilt-0.5")


def test_the_sign_test_is_exact_and_one_sided():
  """P(at least k of n below 0) under a fair coin, ties left out."""
  assert uniform_control.sign_test(12, 0) == pytest.approx(1 / 4096)
  assert uniform_control.sign_test(13, 2) == pytest.approx((1 + 15 + 105) / 2 ** 15)
  assert uniform_control.sign_test(0, 5) == 1.0
  assert uniform_control.sign_test(0, 0) == 1.0


def test_the_held_out_spread_is_a_second_label_free_check(capsys):
  """The lower held-out max / median (the paper's aim: even normal scores) is counted
  like the pseudo-anomaly AUC: right when it prefers the model with the higher AUC."""
  rows = [dict(bu=0.85, uniform=0.90, heldout_bu=1.2, heldout_uniform=1.1),  # right
          dict(bu=0.92, uniform=0.90, heldout_bu=1.3, heldout_uniform=1.1),  # wrong
          dict(bu=0.88, uniform=0.86, heldout_bu=1.1, heldout_uniform=1.1)]  # tie keeps BU: right
  uniform_control._pooled(rows)
  out = capsys.readouterr().out
  assert ("The lower held-out max / median marks the better of BU and its control in 2 of 3 "
          "runs; keeping it gives AUC 0.893 (BU 0.883, the control 0.887)") in out
  assert "pseudo-anomaly" not in out
  assert uniform_control._label("heldout_uniform") == "held-out max / median, uniform BU"
