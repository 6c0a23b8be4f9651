"""DCASE benchmark mode end to end on a tiny embedded DCASE-style set (shortened)."""

import csv
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from bu_jax import artifact
from bu_jax import data as data_lib
from bu_jax import dcase, dcase_metrics, dcase_run, evaluate, heldout, synthetic_dcase
from bu_jax import detector as detector_lib
from bu_jax import reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tiny runs below train at XLA's backend optimization level 0 (conftest).
pytestmark = pytest.mark.usefixtures("fast_training")
TINY = dict(num_source_train=6, num_target_train=2, num_test_per_group=3,
            num_something_else=4, machines=("SynthFan",))


def _settings(workdir, **kw):
  base = dict(workdir=str(workdir), losses=("re", "bu"), preset="demo", epochs=1,
              steps_per_epoch=4, decay_start_epoch=0, segments_per_mixture=2,
              steps_per_call=2, checkpoint_every=2, progress=False, num_devices=1,
              synthetic_kwargs=TINY)
  base.update(kw)
  return dcase_run.Settings(**base)


def test_embedded_set_ensure_reuses_only_a_set_of_the_same_arguments(tmp_path):
  small = {**TINY, "num_source_train": 1, "num_target_train": 1, "num_test_per_group": 1,
           "num_something_else": 1}
  root = tmp_path / "set"
  assert synthetic_dcase.ensure(0, root=root, **small) == str(root)
  stamp = os.path.getmtime(root / "metadata.json")
  assert synthetic_dcase.ensure(0, root=root, **small) == str(root)  # machines: a tuple
  assert os.path.getmtime(root / "metadata.json") == stamp  # reused, not regenerated
  with pytest.raises(ValueError, match="other arguments.*num_source_train"):
    synthetic_dcase.ensure(0, root=root, **{**small, "num_source_train": 2})
  with pytest.raises(ValueError, match="other arguments.*seed"):
    synthetic_dcase.ensure(1, root=root, **small)
  with pytest.raises(ValueError, match="root="):
    synthetic_dcase.ensure(0, num_source_train=2)


def test_embedded_set_is_deterministic_and_loads(tmp_path):
  a = synthetic_dcase.generate(str(tmp_path / "a"), **{**TINY, "num_source_train": 2})
  b = synthetic_dcase.generate(str(tmp_path / "b"), **{**TINY, "num_source_train": 2})
  md = dcase.load_machine_type(a, "SynthFan", year="2023")
  assert md.sections == ["00", "01"] and not md.skipped
  assert sum(c.domain == "target" for c in md.train) == 4  # 2 per section
  assert md.train[0].meta.attributes.keys() == {"spd", "noise"}
  assert {c.label for c in md.test} == {0, 1}
  for clip in md.train + md.test:
    rel = os.path.relpath(clip.path, a)
    assert open(clip.path, "rb").read() == open(os.path.join(b, rel), "rb").read()
  assert len(os.listdir(os.path.join(a, "something_else"))) == 4


@pytest.mark.slow
def test_run_writes_challenge_files_and_resumes(tmp_path, capsys):
  settings = _settings(tmp_path / "run")
  results = dcase_run.run(settings)
  out = capsys.readouterr().out
  assert "official score" in out and "h-mean AUC (target)" in out
  run = tmp_path / "run"
  stored = json.loads((run / "results.json").read_text())
  assert stored["metric_year"] == "2022"
  for loss in ("re", "bu"):
    dev = stored[loss]["dev"]
    assert set(dev["machine_types"]["SynthFan"]["sections"]) == {"00", "01"}
    for values in dev["machine_types"]["SynthFan"]["sections"].values():
      assert list(values) == list(dcase_metrics.COLUMNS["2022"])
      assert all(0.0 <= v <= 1.0 for v in values.values())
    assert 0.0 < dev["official_score"] <= 1.0
    for section in ("00", "01"):
      scores = list(csv.reader(open(run / loss / f"anomaly_score_SynthFan_section_{section}_test.csv")))
      decisions = list(csv.reader(open(run / loss / f"decision_result_SynthFan_section_{section}_test.csv")))
      assert len(scores) == len(decisions) == 12
      assert [r[0] for r in scores] == [r[0] for r in decisions]
      assert all(r[0].startswith(f"section_{section}_") and np.isfinite(float(r[1]))
                 for r in scores)
      assert {r[1] for r in decisions} <= {"0", "1"}
    rows = list(csv.reader(open(run / loss / "result.csv")))
    assert rows[0] == ["SynthFan"] and rows[-1][0] == "official score"
    assert float(rows[-1][1]) == pytest.approx(dev["official_score"])
  summary = list(csv.reader(open(run / "summary.csv")))
  assert summary[0][:4] == ["loss", "set", "machine_type", "section"]
  assert (run / "score_histogram_SynthFan.png").stat().st_size > 1000

  # experiments.score's loader reads a dcase_run model (bu_jax.artifact) and scores alike.
  detector = detector_lib.load_detector(run / "bu" / "models" / "SynthFan")
  assert detector.metadata.tag == "bu/SynthFan"
  assert detector.threshold == stored["bu"]["thresholds"]["bu/SynthFan"]  # phi travels along
  clip = next(c for c in dcase.load_machine_type(stored["data"]["data_root"], "SynthFan").test
              if c.section == "00")
  scores = {r[0]: float(r[1]) for r in csv.reader(
      open(run / "bu" / "anomaly_score_SynthFan_section_00_test.csv"))}
  assert detector.score(clip.wave, threshold=1.0).clip_score == pytest.approx(
      scores[os.path.basename(clip.path)], rel=1e-4)
  decisions = {r[0]: int(r[1]) for r in csv.reader(
      open(run / "bu" / "decision_result_SynthFan_section_00_test.csv"))}
  assert int(detector.score(clip.wave).decision) == decisions[os.path.basename(clip.path)]

  # The PCA reference (--loss=all's, here two losses): fitted on the same training clips,
  # scored alike (eq. 11 over interior frames), reported next to the AEs.
  assert 0.0 < stored["pca"]["dev"]["official_score"] <= 1.0
  assert re.search(r"^ +RE +BU +PCA$", out, re.M)  # the comparison table's header
  train = dcase.load_machine_type(stored["data"]["data_root"], "SynthFan").train
  pca = reference.PCADetector(detector.feature_config, components=16).fit(
      [c.wave for c in train])
  pca_scores = {r[0]: float(r[1]) for r in csv.reader(
      open(run / "pca" / "anomaly_score_SynthFan_section_00_test.csv"))}
  frames = pca.frame_scores(clip.wave)[detector.feature_config.interior(len(clip.wave))]
  assert pca_scores[os.path.basename(clip.path)] == pytest.approx(float(frames.max()), rel=1e-5)
  assert not (run / "pca" / "models" / "SynthFan" / "checkpoints").exists()  # nothing trained

  # An evaluation set (unlabelled names) with the organisers' ground truth: the
  # dev test clips renamed, so its metrics must equal the dev ones.
  eval_root, gt = tmp_path / "eval", tmp_path / "gt"
  os.makedirs(eval_root / "SynthFan" / "test")
  for sub in ("ground_truth_data", "ground_truth_domain"):
    os.makedirs(gt / sub)
  md = dcase.load_machine_type(stored["data"]["data_root"], "SynthFan", load_audio=False)
  for section in ("00", "01"):
    rows = []
    for i, clip in enumerate(c for c in md.test if c.section == section):
      name = f"section_{section}_{i:04d}.wav"
      shutil.copy(clip.path, eval_root / "SynthFan" / "test" / name)
      rows.append((name, clip.label, int(clip.domain == "target")))
    for sub, col in (("ground_truth_data", 1), ("ground_truth_domain", 2)):
      with open(gt / sub / f"ground_truth_SynthFan_section_{section}_test.csv", "w") as f:
        f.writelines(f"{r[0]},{r[col]}\n" for r in rows)
  again = dcase_run.run(dataclasses.replace(settings, eval_root=str(eval_root),
                                            ground_truth_dir=str(gt)))
  out = capsys.readouterr().out
  assert "already trained" in out  # found finished, only re-evaluated
  # the evaluation set's metrics are printed and written like the development set's
  assert "== BU (evaluation set, DCASE 2022+ metrics) ==" in out and "-- evaluation set" in out
  eval_rows = list(csv.reader(open(run / "bu" / "eval" / "result.csv")))
  assert float(eval_rows[-1][1]) == pytest.approx(again["bu"]["eval"]["official_score"])
  assert "-- evaluation set" in (run / "results.txt").read_text()
  assert again["bu"]["dev"]["official_score"] == pytest.approx(
      results["bu"]["dev"]["official_score"])
  assert again["bu"]["eval"]["official_score"] == pytest.approx(
      results["bu"]["dev"]["official_score"])
  rows = list(csv.reader(open(run / "bu" / "eval" / "anomaly_score_SynthFan_section_00_test.csv")))
  assert [r[0] for r in rows] == [f"section_00_{i:04d}.wav" for i in range(12)]


@pytest.mark.slow
def test_per_section_models(tmp_path):
  results = dcase_run.run(_settings(tmp_path / "sec", losses=("re",), per="section",
                                    steps_per_epoch=2))
  assert set(results["re"]["thresholds"]) == {"re/SynthFan/section_00", "re/SynthFan/section_01"}
  assert (tmp_path / "sec" / "re" / "models" / "SynthFan" / "section_01").is_dir()


def test_test_folders_are_evaluated_one_by_one(finished_dcase, tmp_path, capsys):
  """A machine type with test_a/ and test_b/ instead of test/ (realaudio-dev's
  test_anr-*dB layout): one training, each folder scored, written and evaluated as
  its own test set; the same clips in both give the same metrics. (test_b holds
  them as float WAVs: a byte-for-byte copy would be evaluated once.)"""
  root = tmp_path / "data"
  shutil.copytree(os.path.join(finished_dcase.workdir, "synthetic_data"), root)
  machine = root / "SynthFan"
  os.rename(machine / "test", machine / "test_a")
  (machine / "test_b").mkdir()
  for clip in sorted((machine / "test_a").iterdir()):
    wave, rate = soundfile.read(str(clip), dtype="float32")
    soundfile.write(str(machine / "test_b" / clip.name), wave, rate, subtype="FLOAT")
  results = dcase_run.run(dataclasses.replace(
      finished_dcase, workdir=str(tmp_path / "run"), data_root=str(root), synthetic_kwargs=None))
  out = capsys.readouterr().out
  assert results["test_folders"] == ["test_a", "test_b"] and "dev" not in results["re"]
  a, b = results["re"]["test_a"], results["re"]["test_b"]
  assert 0.0 < a["official_score"] <= 1.0 and a == b
  assert results["data"]["machine_types"]["SynthFan"]["test_folders"] == {
      "test_a": 24, "test_b": 24}
  for folder in ("test_a", "test_b"):
    rows = list(csv.reader(open(tmp_path / "run" / "re" / folder /
                                "anomaly_score_SynthFan_section_00_test.csv")))
    assert len(rows) == 12 and all(np.isfinite(float(r[1])) for r in rows)
    assert (tmp_path / "run" / "re" / folder / "result.csv").exists()
  # Printed: one comparison per folder; the per-section tables only in results.txt.
  assert "-- test folder test_b" in out and "No labelled test clips" not in out
  assert "== RE (test folder" not in out and "results.txt)" in out
  text = (tmp_path / "run" / "results.txt").read_text()
  for folder in ("test_a", "test_b"):
    assert f"== RE (test folder {folder}, DCASE 2022+ metrics) ==" in text
    assert f"-- test folder {folder}" in text
  summary = list(csv.reader(open(tmp_path / "run" / "summary.csv")))
  assert {r[1] for r in summary[1:]} == {"test_a", "test_b"}


def test_rare_clips_add_rare_normal_metrics(finished_dcase, tmp_path, capsys):
  """--rare_clips (realaudio-dev's metadata.csv format): per test set, machine type
  and section the anomalies against the rare / frequent normals, rare vs frequent
  and the FPRs at phi, as the written scores and decisions give them; the other
  metrics unchanged; a file that names no test clip refused before any work."""
  root = os.path.join(finished_dcase.workdir, "synthetic_data")
  md = dcase.load_machine_type(root, "SynthFan", load_audio=False)
  normals = [c for c in md.test if c.section == "00" and c.label == 0]
  rare_names = {os.path.basename(c.path) for c in normals[:2]}
  listing = tmp_path / "metadata.csv"
  listing.write_text("file,split,rare\n" + "".join(
      f"test/{os.path.basename(c.path)},test,{int(os.path.basename(c.path) in rare_names)}\n"
      for c in md.test))
  before = json.load(open(os.path.join(finished_dcase.workdir, "results.json")))
  run = tmp_path / "run"
  shutil.copytree(finished_dcase.workdir, run)
  results = dcase_run.run(dataclasses.replace(finished_dcase, workdir=str(run),
                                              rare_clips=str(listing)))
  out = capsys.readouterr().out
  assert "already trained" in out and "AUC vs rare normals" in out and "FPR rare@phi" in out
  assert results["re"]["dev"]["official_score"] == before["re"]["dev"]["official_score"]
  assert results["data"]["machine_types"]["SynthFan"]["test_rare_normal"] == 2
  rare = results["re"]["dev"]["rare_normal"]
  assert set(rare["machine_types"]["SynthFan"]) == {"00"}  # section 01 has no rare normal
  got = rare["machine_types"]["SynthFan"]["00"]
  scores = {r[0]: float(r[1]) for r in csv.reader(
      open(run / "re" / "anomaly_score_SynthFan_section_00_test.csv"))}
  decisions = {r[0]: int(r[1]) for r in csv.reader(
      open(run / "re" / "decision_result_SynthFan_section_00_test.csv"))}
  section = [c for c in md.test if c.section == "00"]
  anomalies = [scores[os.path.basename(c.path)] for c in section if c.label == 1]
  rare_s = [scores[n] for n in rare_names]
  frequent = [n for n in (os.path.basename(c.path) for c in normals) if n not in rare_names]
  auc = lambda pos, neg: evaluate.metrics(np.r_[np.ones(len(pos)), np.zeros(len(neg))],
                                          np.r_[pos, neg])["auc"]
  assert got["auc_vs_rare"] == pytest.approx(auc(anomalies, rare_s))
  assert got["auc_vs_frequent"] == pytest.approx(auc(anomalies, [scores[n] for n in frequent]))
  assert got["rare_vs_frequent"] == pytest.approx(auc(rare_s, [scores[n] for n in frequent]))
  assert got["fpr_rare"] == pytest.approx(np.mean([decisions[n] for n in rare_names]))
  assert got["fpr_frequent"] == pytest.approx(np.mean([decisions[n] for n in frequent]))
  assert rare["mean"]["auc_vs_rare"] == got["auc_vs_rare"]
  stored = json.load(open(run / "results.json"))
  assert stored["re"]["dev"]["rare_normal"]["mean"] == pytest.approx(rare["mean"])
  assert "AUC vs rare normals" in (run / "results.txt").read_text()
  table = list(csv.DictReader(open(run / "summary.csv")))
  row = next(r for r in table if r["loss"] == "re" and r["section"] == "00")
  assert float(row["AUC vs rare normals"]) == pytest.approx(got["auc_vs_rare"])
  assert float(row["FPR rare@phi"]) == pytest.approx(got["fpr_rare"])
  other = next(r for r in table if r["loss"] == "re" and r["section"] == "01")
  assert other["AUC vs rare normals"] == ""  # no rare normal in section 01
  mean = next(r for r in table if r["loss"] == "re" and r["machine_type"] == "all"
              and r["section"] == "arithmetic mean")
  assert float(mean["rare vs frequent AUC"]) == pytest.approx(rare["mean"]["rare_vs_frequent"])

  wrong = tmp_path / "wrong.csv"
  wrong.write_text("file,rare\nsomewhere/else.wav,1\n")
  with pytest.raises(data_lib.DataError, match=r"--rare_clips=.*wrong.csv: none of its 1 "
                     r"entries names a test clip"):
    dcase_run.run(dataclasses.replace(finished_dcase, workdir=str(run), rare_clips=str(wrong)))
  with pytest.raises(data_lib.DataError, match=r"--rare_clips=.*missing.csv: no such file"):
    dcase_run.run(dataclasses.replace(finished_dcase, workdir=str(run),
                                      rare_clips=str(tmp_path / "missing.csv")))


@pytest.fixture(scope="module")
def finished_dcase(tmp_path_factory):
  """A finished tiny RE run (2 steps, one machine type)."""
  settings = _settings(tmp_path_factory.mktemp("dcase") / "run", losses=("re",),
                       steps_per_epoch=2)
  dcase_run.run(settings)
  return settings


@pytest.mark.parametrize("overrides, named", [
    (dict(seed=1), "--seed: 0 in the checkpoint, 1 now"),
    (dict(learning_rate=0.01, sigma=0.5), "--learning_rate: 0.001 in the checkpoint, 0.01 now"),
    (dict(epochs=2, steps_per_epoch=1), "--epochs: 1 in the checkpoint, 2 now; "
     "--steps_per_epoch: 2 in the checkpoint, 1 now"),
    (dict(data_seed=3), "--data_seed: 0 in the checkpoint, 3 now"),  # other training data
    # trained on every clip: holding some out now would fit phi to clips the model trained on
    (dict(heldout_fraction=0.25), "--heldout_fraction: 0.0 in the checkpoint, 0.25 now"),
])
def test_resume_with_other_training_settings_is_refused(finished_dcase, overrides, named):
  results = os.path.join(finished_dcase.workdir, "results.json")
  before = open(results).read()
  with pytest.raises(dcase_run.SettingsMismatchError,
                     match=r"models/SynthFan holds a model \(step 2\) trained with other"):
    dcase_run.run(dataclasses.replace(finished_dcase, **overrides))
  with pytest.raises(dcase_run.SettingsMismatchError) as info:  # a CheckpointError
    changed = dataclasses.replace(finished_dcase, **overrides)
    dcase_run.check_resumable(changed, {"re": changed.train_config("re", 1)})
  assert f"settings: {named}. " in str(info.value) and "new --workdir" in str(info.value)
  assert open(results).read() == before  # nothing rewritten
  assert "--sigma" not in str(info.value)  # RE's model does not depend on it


def test_held_out_split_settings_are_stored_for_any_data_root(tmp_path):
  """heldout_fraction (0 too) and data_seed, which draws the held-out split and the fold
  models' halves, are training settings with a --data_root as with the embedded set; a
  record without heldout_fraction (older checkpoints stored it only above 0) reads as 0."""
  settings = _settings(tmp_path / "w", data_root=str(tmp_path), data_seed=5)
  config = settings.train_config("re", 1)
  data = dcase_run._training_metadata(settings, config).data  # pylint: disable=protected-access
  assert data["heldout_fraction"] == 0.0 and data["data_seed"] == 5
  held = dcase_run._training_metadata(  # pylint: disable=protected-access
      dataclasses.replace(settings, heldout_fraction=0.25), config)
  older = dataclasses.replace(held, data={k: v for k, v in held.data.items()
                                          if k != "heldout_fraction"})
  assert older.training_differences(held) == [("data.heldout_fraction", 0.0, 0.25)]
  assert held.training_differences(dataclasses.replace(
      older, data={**older.data, "heldout_fraction": 0.0})) == [
          ("data.heldout_fraction", 0.25, 0.0)]


def test_settings_re_does_not_read_may_change(finished_dcase):
  """BU's (and SNP's) own settings leave RE's model as it is (``train.UNUSED_SETTINGS``)."""
  changed = dataclasses.replace(finished_dcase, sigma=0.5, lam=3.0, eps=0.1)
  dcase_run.check_resumable(changed, {"re": changed.train_config("re", 1)})  # no error


def test_each_model_records_its_training_clips(finished_dcase):
  """The clips a model trained on (``data.clips_fingerprint``) are stored with it, so
  that a re-evaluation after the training folder changed is refused (``runner``)."""
  from bu_jax import checkpoint  # pylint: disable=import-outside-toplevel
  results = json.load(open(os.path.join(finished_dcase.workdir, "results.json")))
  count = results["data"]["machine_types"]["SynthFan"]["train_clips"]
  stored = checkpoint.read_metadata(
      os.path.join(finished_dcase.workdir, "re", "models", "SynthFan"))["data"]["train_clips"]
  assert re.fullmatch(rf"{count} clips, names sha1 [0-9a-f]{{12}}", stored)


def test_entry_point_refuses_other_settings_in_one_line(finished_dcase):
  cmd = [sys.executable, "-m", "experiments.dcase", "--loss=re", "--preset=demo",
         f"--workdir={finished_dcase.workdir}", "--epochs=1", "--steps_per_epoch=2",
         "--decay_start_epoch=0", "--segments_per_mixture=2", "--num_devices=1",
         "--learning_rate=0.25"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr[-2000:]
  line = proc.stderr.strip().splitlines()[-1]
  assert line.startswith("Error: ") and "Traceback" not in proc.stderr
  assert "trained with other settings: --learning_rate: 0.001 in the checkpoint, 0.25 now. " in line


def test_evaluation_settings_may_change(finished_dcase, capsys):
  results = dcase_run.run(dataclasses.replace(finished_dcase, reduce="mean", steps_per_call=1))
  assert "[re/SynthFan] already trained (2 steps)" in capsys.readouterr().out
  assert results["settings"]["reduce"] == "mean"


def test_entry_point_bad_input_is_one_clear_line(tmp_path):
  cmd = [sys.executable, "-m", "experiments.dcase", "--loss=re", "--preset=demo",
         f"--workdir={tmp_path / 'w'}", "--data_root=/no/such/dir"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert "Error: --data_root=/no/such/dir: no such directory" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "w").exists()  # no empty workdir left behind by a typo


def test_something_else_required_with_real_data(tmp_path):
  root = synthetic_dcase.generate(str(tmp_path / "d"), **{**TINY, "num_source_train": 1,
                                                         "num_test_per_group": 1})
  with pytest.raises(dcase.DataError, match="--something_else_dir is required"):
    dcase_run.run(_settings(tmp_path / "w", data_root=root))


def test_workdir_that_is_a_file_is_an_error_before_loading(tmp_path):
  path = tmp_path / "afile"
  path.write_text("not a directory")
  with pytest.raises(dcase.DataError, match=r"--workdir=.*afile: is a file"):
    dcase_run.run(_settings(path))
  assert path.read_text() == "not a directory"


@pytest.mark.parametrize("breakage", ["empty training file", "one training clip"])
def test_a_broken_later_machine_type_is_refused_before_any_training(tmp_path, breakage):
  """Every machine type is listed and its files' headers and groups checked
  before the first one trains: an error in the last is not found hours later."""
  root = synthetic_dcase.generate(str(tmp_path / "d"), **{
      **TINY, "num_source_train": 2, "num_test_per_group": 1,
      "machines": ("SynthFan", "SynthPump")})
  train_dir = os.path.join(root, "SynthPump", "train")
  names = sorted(os.listdir(train_dir))
  extra = {}
  if breakage == "empty training file":
    bad = os.path.join(train_dir, names[-1])
    open(bad, "wb").close()
    error, match = dcase.audio.AudioError, re.escape(f"{bad}: empty file (0 bytes)")
  else:  # one training clip left: held-out clips need 2
    for name in names[1:]:
      os.remove(os.path.join(train_dir, name))
    extra = dict(heldout_fraction=0.5)
    error, match = dcase.DataError, (r"SynthPump all: 1 training clip\(s\); "
                                     r"--heldout_fraction=0.5 needs at least 2")
  workdir = tmp_path / "w"
  with pytest.raises(error, match=match):
    dcase_run.run(_settings(workdir, losses=("re",), data_root=root, **extra))
  assert not list(workdir.glob("re/models/**/checkpoints"))  # nothing trained


def _dcase2021_tree(tmp_path):
  """The embedded set in DCASE 2021's layout: 2021 names (no attributes), the test
  clips in source_test/ and target_test/ (no test/); its development root and an
  evaluation root of the same test clips renamed (section_00_source_test_0000.wav)
  with the organisers' 2021 ground truth (one file per section and domain)."""
  embedded = synthetic_dcase.generate(str(tmp_path / "embedded"), **TINY)
  dev, eval_root, gt = tmp_path / "dev", tmp_path / "eval", tmp_path / "gt"
  os.makedirs(gt / "ground_truth_data")
  md = dcase.load_machine_type(embedded, "SynthFan", load_audio=False)
  for clip in md.train:
    os.makedirs(dev / "SynthFan" / "train", exist_ok=True)
    shutil.copy(clip.path, dev / "SynthFan" / "train" /
                f"section_{clip.section}_{clip.domain}_train_normal_{clip.meta.index}.wav")
  rows = {}
  for clip in md.test:
    folder = f"{clip.domain}_test"
    label = ("normal", "anomaly")[clip.label]
    for root, name in ((dev, f"section_{clip.section}_{folder}_{label}_{clip.meta.index}.wav"),
                       (eval_root, f"section_{clip.section}_{folder}_"
                                   f"{len(rows.get((clip.section, folder), [])):04d}.wav")):
      os.makedirs(root / "SynthFan" / folder, exist_ok=True)
      shutil.copy(clip.path, root / "SynthFan" / folder / name)
    rows.setdefault((clip.section, folder), []).append(f"{name},{clip.label}\n")
  for (section, folder), lines in rows.items():
    (gt / "ground_truth_data" / f"ground_truth_SynthFan_section_{section}_{folder}.csv"
     ).write_text("".join(lines))
  return dev, os.path.join(embedded, "something_else"), eval_root, gt


@pytest.mark.slow
def test_dcase2021_layout_is_evaluated_and_written_per_domain(tmp_path):
  """A DCASE 2021 tree (train/, source_test/, target_test/) is trained and evaluated
  with 2021's metrics; its files are the ones dcase2021_task2_evaluator reads (per
  section and domain); its evaluation set, scored with the organisers' 2021 ground
  truth, gives the development set's metrics (the same clips)."""
  dev, something_else, eval_root, gt = _dcase2021_tree(tmp_path)
  results = dcase_run.run(_settings(tmp_path / "run", losses=("re",), steps_per_epoch=2,
                                    data_root=str(dev), something_else_dir=something_else,
                                    eval_root=str(eval_root), ground_truth_dir=str(gt),
                                    synthetic_kwargs=None))
  assert results["metric_year"] == "2021"
  dev_result, eval_result = results["re"]["dev"], results["re"]["eval"]
  assert set(dev_result["machine_types"]["SynthFan"]["sections"]) == {"00", "01"}
  for values in dev_result["machine_types"]["SynthFan"]["sections"].values():
    assert list(values) == list(dcase_metrics.COLUMNS["2021"])
  assert 0.0 < dev_result["official_score"] <= 1.0
  assert eval_result["official_score"] == pytest.approx(dev_result["official_score"])
  for folder in (tmp_path / "run" / "re", tmp_path / "run" / "re" / "eval"):
    assert sorted(p.name for p in folder.glob("*_SynthFan_*.csv")) == sorted(
        f"{kind}_SynthFan_section_{s}_{d}_test.csv" for kind in ("anomaly_score", "decision_result")
        for s in ("00", "01") for d in ("source", "target"))
    for section in ("00", "01"):
      for domain in ("source", "target"):
        rows = list(csv.reader(open(folder / f"anomaly_score_SynthFan_section_{section}_"
                                             f"{domain}_test.csv")))
        assert len(rows) == 6 and all(
            r[0].startswith(f"section_{section}_{domain}_test_") for r in rows)


@pytest.mark.parametrize("fault", ["no domain file", "a label of 2"])
def test_ground_truth_is_checked_before_any_training(tmp_path, fault):
  """The evaluation set's ground truth is read with the listing: a missing domain
  file (DCASE 2021 on scores each domain; without it every section would be left
  out in silence) or a bad value is one error naming the file, before training."""
  root = synthetic_dcase.generate(str(tmp_path / "d"), **{
      **TINY, "num_source_train": 2, "num_test_per_group": 1, "machines": ("SynthFan",)})
  eval_root, gt = tmp_path / "eval", tmp_path / "gt"
  os.makedirs(eval_root / "SynthFan" / "test")
  os.makedirs(gt / "ground_truth_data")
  md = dcase.load_machine_type(root, "SynthFan", load_audio=False)
  rows = []
  for i, clip in enumerate(c for c in md.test if c.section == "00"):
    name = f"section_00_{i:04d}.wav"
    shutil.copy(clip.path, eval_root / "SynthFan" / "test" / name)
    rows.append(f"{name},{2 if fault == 'a label of 2' and i == 1 else clip.label}\n")
  label_file = gt / "ground_truth_data" / "ground_truth_SynthFan_section_00_test.csv"
  label_file.write_text("".join(rows))
  if fault == "no domain file":
    match = re.escape(f"{gt}/ground_truth_domain/ground_truth_SynthFan_section_00_test.csv: "
                      "no such ground-truth file (the metrics of DCASE 2021 on score each domain)")
  else:
    match = re.escape(f"{label_file}:2: the value must be 0 or 1, got '2'")
  workdir = tmp_path / "w"
  with pytest.raises(dcase.DataError, match=match):
    dcase_run.run(_settings(workdir, losses=("re",), data_root=root, eval_root=str(eval_root),
                            ground_truth_dir=str(gt)))
  assert not list(workdir.glob("re/models/**/checkpoints"))  # nothing trained


def test_score_normalization_is_an_evaluation_setting(finished_dcase, tmp_path):
  """A finished run re-evaluated with knn_z: no retraining, the bank of every training
  clip but the held-out tenth in the model directory, φ from the held-out clip on
  normalized scores; re-evaluated without it, the bank is gone."""
  from bu_jax import score_norm  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  shutil.copytree(finished_dcase.workdir, workdir)
  settings = dataclasses.replace(finished_dcase, workdir=str(workdir),
                                 score_normalization="knn_z", normalization_neighbors=3)
  raw = dcase_run.run(dataclasses.replace(settings, score_normalization="none"))
  results = dcase_run.run(settings)
  model_dir = workdir / "re" / "models" / "SynthFan"
  bank = score_norm.load_local_normalizer(model_dir / score_norm.FILE_NAME)
  assert bank.kind == "knn_z" and bank.neighbors == 3
  md = dcase.load_machine_type(str(workdir / "synthetic_data"), "SynthFan")
  cfg = detector_lib.load_detector(model_dir).feature_config
  frames = lambda c: len(range(cfg.num_frames(len(c.wave)))[cfg.interior(len(c.wave))])
  assert len(md.train) == 16  # the 10th clip is held out for phi
  assert bank.frames == sum(frames(c) for i, c in enumerate(md.train) if i != 9)
  assert results["re"]["score_normalization"] == {"kind": "knn_z", "neighbors": 3,
                                                  "file": score_norm.FILE_NAME}
  assert raw["re"]["score_normalization"] == {"kind": "none"}
  assert results["re"]["thresholds"] != raw["re"]["thresholds"]
  assert results["re"]["dev"]["official_score"] is not None
  # The model folder carries phi and the bank: experiments.score decides as the run did.
  detector = detector_lib.load_detector(model_dir)
  assert detector.threshold == results["re"]["thresholds"]["re/SynthFan"]
  assert detector.normalizer.kind == "knn_z" and len(detector.calibration.heldout_paths) == 1
  assert detector.calibration.normalization.fingerprint == bank.fingerprint
  clip = md.test[0]
  rows = dict(csv.reader(open(workdir / "re" /
                              f"anomaly_score_SynthFan_section_{clip.section}_test.csv")))
  assert detector.score(clip.wave).clip_score == pytest.approx(float(rows[clip.name]),
                                                               rel=1e-5)
  again = dcase_run.run(dataclasses.replace(settings, score_normalization="none"))
  assert not (model_dir / score_norm.FILE_NAME).exists()
  assert again["re"]["thresholds"] == raw["re"]["thresholds"]  # raw scores: as before
  detector = detector_lib.load_detector(model_dir)
  assert detector.normalization is None and len(detector.calibration.heldout_paths) == 16
  assert detector.threshold == raw["re"]["thresholds"]["re/SynthFan"]
  assert detector.calibration.fit == artifact.GAMMA_LOC0
  with pytest.raises(ValueError, match="knn_z needs --normalization_neighbors >= 2"):
    dataclasses.replace(settings, normalization_neighbors=1)
  # k chosen on the held-out tenth: recorded per model, and the model folder carries it.
  chosen = dcase_run.run(dataclasses.replace(settings, normalization_neighbors=0))
  record = chosen["re"]["score_normalization"]
  k = record["neighbors_chosen"]["re/SynthFan"]
  assert record["neighbors"] == 0 and k in score_norm.CANDIDATES
  assert detector_lib.load_detector(model_dir).normalizer.neighbors == k


def test_score_window_is_an_evaluation_setting(finished_dcase, tmp_path):
  """--score_window=W: no retraining; phi and the test clip scores are maxima of
  W-frame means, and the model folder carries W, so experiments.score agrees."""
  workdir = tmp_path / "run"
  shutil.copytree(finished_dcase.workdir, workdir)
  settings = dataclasses.replace(finished_dcase, workdir=str(workdir), score_window=8)
  raw = dcase_run.run(dataclasses.replace(settings, score_window=1))
  results = dcase_run.run(settings)
  assert results["re"]["thresholds"] != raw["re"]["thresholds"]
  model_dir = workdir / "re" / "models" / "SynthFan"
  detector = detector_lib.load_detector(model_dir)
  assert detector.window == 8
  md = dcase.load_machine_type(str(workdir / "synthetic_data"), "SynthFan")
  clip = md.test[0]
  rows = dict(csv.reader(open(workdir / "re" /
                              f"anomaly_score_SynthFan_section_{clip.section}_test.csv")))
  scored = detector.score(clip.wave)
  assert scored.clip_score == pytest.approx(float(rows[clip.name]), rel=1e-5)
  inner = detector.feature_config.interior(len(clip.wave))
  assert scored.clip_score < scored.max_score  # a mean of 8 frames, not eq. (11)
  assert scored.clip_score == pytest.approx(
      evaluate.window_means(scored.frame_scores[inner], window=8).max(), rel=1e-6)
  assert scored.window == 8 and scored.window_means.max() == pytest.approx(scored.clip_score)
  assert scored.window_times_s.shape == scored.window_means.shape
  assert scored.window_times_s[0] == pytest.approx(
      (inner.start + 3.5) * detector.hop_s)  # the first window's centre
  table = detector_lib.format_table([(clip.path, scored)])
  assert "clip score" in table and f"{scored.clip_score:.4g}" in table  # what phi applies to
  from bu_jax import plots  # pylint: disable=g-import-not-at-top
  png = plots.plot_frame_scores(tmp_path / "clip.png", clip.path, scored)
  assert os.path.getsize(png) > 1000
  with pytest.raises(ValueError, match="--reduce=mean .* takes --score_window=1"):
    dataclasses.replace(settings, reduce="mean")


def test_a_window_longer_than_the_clips_is_named(finished_dcase, tmp_path, caplog):
  """A clip with fewer interior frames than --score_window has one window, the whole
  clip: scored by its mean. The run and experiments.score say so, with the counts."""
  workdir = tmp_path / "run"
  shutil.copytree(finished_dcase.workdir, workdir)
  dcase_run.run(dataclasses.replace(finished_dcase, workdir=str(workdir), score_window=10**6))
  warned = [r.getMessage() for r in caplog.records if "interior frames" in r.getMessage()]
  assert warned and all("than the clip-score window of 1000000 frames" in m
                        and "scored by its mean over the whole clip" in m for m in warned)
  assert any(re.search(r"^\S+( section \d+)?: (\d+) of \2 clips have fewer", m) for m in warned)
  caplog.clear()
  detector = detector_lib.load_detector(workdir / "re" / "models" / "SynthFan")
  clip = dcase.load_machine_type(str(workdir / "synthetic_data"), "SynthFan").test[0]
  (_, scored), = detector_lib.score_paths(detector, [clip.path])[0]
  inner = detector.feature_config.interior(len(clip.wave))
  assert scored.clip_score == pytest.approx(scored.frame_scores[inner].mean(), rel=1e-6)
  assert [r.getMessage() for r in caplog.records] == [
      f"{clip.path}: 1 of 1 clips have fewer interior frames "
      f"({detector.feature_config.interior_count(len(clip.wave))} at the fewest) than the "
      f"clip-score window of 1000000 frames ({10**6 * detector.hop_s:.3g} s): each is scored "
      "by its mean over the whole clip"]


def test_choosing_the_scoring_needs_held_out_clips(tmp_path):
  with pytest.raises(ValueError, match=r"--score_normalization=auto: the scoring is chosen on "
                     r"clips held out of training, so --heldout_fraction must be > 0"):
    _settings(tmp_path, score_normalization="auto")
  with pytest.raises(ValueError, match=r"--score_normalization=auto and --score_window=0: "
                     r"the scoring .* --heldout_fraction must be > 0"):
    _settings(tmp_path, score_normalization="auto", score_window=0)
  with pytest.raises(ValueError, match=r"--heldout_fraction must lie in \[0, 1\), got 1"):
    _settings(tmp_path, heldout_fraction=1.0)
  with pytest.raises(ValueError, match=r"--normalization_bank=heldout: the bank holds clips "
                     r"held out of training, so --heldout_fraction must be > 0"):
    _settings(tmp_path, score_normalization="knn_z", normalization_bank="heldout")
  with pytest.raises(ValueError, match=r"--normalization_bank=auto: the scoring is chosen on "
                     r"clips held out of training, so --heldout_fraction must be > 0"):
    _settings(tmp_path, score_normalization="knn_z", normalization_bank="auto")
  cmd = [sys.executable, "-m", "experiments.dcase", "--loss=re", "--preset=demo",
         f"--workdir={tmp_path / 'w'}", "--score_window=0"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert "Usage error: --score_window=0: the scoring is chosen on clips held out" in proc.stderr
  root = synthetic_dcase.generate(str(tmp_path / "d"), **{**TINY, "num_source_train": 1,
                                                         "num_test_per_group": 1})
  with pytest.raises(dcase.DataError, match=r"--score_window=0: --something_else_dir is required"):
    dcase_run.run(_settings(tmp_path / "w2", losses=("re",), data_root=root,
                            heldout_fraction=0.2, score_window=0))


@pytest.mark.parametrize("extra", [{}, {"heldout_fraction": 0.5}])
def test_a_k_larger_than_the_bank_is_refused_before_training(tmp_path, extra):
  root = synthetic_dcase.generate(str(tmp_path / "d"), **{**TINY, "num_source_train": 2,
                                                         "num_test_per_group": 1})
  workdir = tmp_path / "w"
  with pytest.raises(dcase.DataError, match=r"--normalization_neighbors=1000000 exceeds the "
                     r"\d+ frames of the knn bank"):
    dcase_run.run(_settings(workdir, losses=("re",), data_root=root, score_normalization="knn",
                            normalization_neighbors=10**6, **extra))
  assert not list(workdir.glob("re/models/*/checkpoints"))


def test_the_crossfit_bank_scores_each_training_clip_by_a_model_that_did_not_train_on_it(
    tmp_path):
  """--normalization_bank=crossfit: per model two fold models (outside models/) on the
  halves of its training clips; the bank holds the main model's codes and the
  out-of-fold scores; a second run trains nothing and keeps the fold times."""
  from bu_jax import checkpoint, crossfit, data as data_lib, frame_scores, heldout, score_norm  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r"crossfit: .*--heldout_fraction must be > 0"):
    _settings(tmp_path, score_normalization="knn", normalization_bank="crossfit")
  settings = _settings(tmp_path / "run", losses=("re", "bu"), steps_per_epoch=2,
                       heldout_fraction=0.25, score_normalization="knn",
                       normalization_neighbors=5, normalization_bank="crossfit")
  results = dcase_run.run(settings)
  md = dcase.load_machine_type(str(tmp_path / "run" / "synthetic_data"), "SynthFan")
  held_idx, fit_idx = heldout.split(len(md.train), fraction=0.25, seed=0)
  fit = [md.train[i] for i in fit_idx]
  held = [md.train[i].wave for i in held_idx]
  folds = crossfit.split(len(fit), seed=0)
  # BU's bank comes from RE's fold models (--crossfit_bu_folds=re, the default): trained
  # once, for RE's bank, and not again for BU's.
  assert not (tmp_path / "run" / "bu" / "crossfit").exists()
  for loss in ("re", "bu"):
    record = results[loss]["crossfit"][f"{loss}/SynthFan"]
    assert record["folds"] == 2 and record["clips_per_fold"] == [len(f) for f in folds]
    assert record["fold_models"] == "re"
    assert (record["train_seconds"] > 0) if loss == "re" else record["train_seconds"] is None
    main = detector_lib.load_detector(tmp_path / "run" / loss / "models" / "SynthFan")
    raw = lambda det: frame_scores.FrameScorer(det.model, det.preset.features)
    fold_models = []
    for k in range(2):
      fold_dir = tmp_path / "run" / "re" / "crossfit" / "SynthFan" / f"fold{k}"
      assert checkpoint.read_metadata(str(fold_dir))["train_config"]["loss"] == "re"
      stored = checkpoint.read_metadata(str(fold_dir))["data"]
      trained_on = [fit[i].path for i in crossfit.others(folds, k)]
      assert stored["train_clips"] == data_lib.clips_fingerprint(trained_on)
      assert stored["crossfit_fold"] == f"{k + 1} of 2"
      # Half the clips, a quarter of the steps per epoch (--crossfit_schedule=short; at
      # least one).
      assert checkpoint.read_metadata(str(fold_dir))["train_config"]["steps_per_epoch"] == 1
      det = detector_lib.load_detector(fold_dir)
      fold_models.append((raw(det), det.params))
    expected = crossfit.out_of_fold_scores(fold_models, [c.wave for c in fit], folds,
                                           scales=record["scales"])
    bank = score_norm.load_local_normalizer(
        tmp_path / "run" / loss / "models" / "SynthFan" / score_norm.FILE_NAME)
    np.testing.assert_allclose(bank.scores, expected, rtol=2e-4)  # scales stored to 4 digits
    codes, _ = score_norm.clip_frames(raw(main), main.params, [c.wave for c in fit])
    np.testing.assert_allclose(bank.codes, codes, rtol=1e-5, atol=1e-5)  # the main model's
    assert crossfit.heldout_scales((raw(main), main.params), fold_models, held) == (
        pytest.approx(record["scales"], rel=1e-3))
  assert results["pca"]["crossfit"]["pca/SynthFan"]["folds"] == 2
  again = dcase_run.run(settings)  # finished: nothing trains, the fold times are kept
  assert again["bu"]["crossfit"] == results["bu"]["crossfit"]
  assert again["bu"]["dev"] == results["bu"]["dev"]
  # A BU run borrows RE's fold models: settings that shape them are refused before
  # anything loads or trains (BU's own model gone), BU's own settings are not.
  shutil.rmtree(tmp_path / "run" / "bu")
  bu_alone = dataclasses.replace(settings, losses=("bu",), learning_rate=0.01)
  with pytest.raises(dcase_run.SettingsMismatchError,
                     match=r"re/crossfit/SynthFan/fold0 holds a model .* --learning_rate: "
                           r"0.001 in the checkpoint, 0.01 now"):
    dcase_run.check_resumable(bu_alone, {"bu": bu_alone.train_config("bu", 1)})
  bu_sigma = dataclasses.replace(settings, losses=("bu",), sigma=0.5)
  dcase_run.check_resumable(bu_sigma, {"bu": bu_sigma.train_config("bu", 1)})


def test_too_few_clips_to_cross_fit_are_refused_before_training(tmp_path):
  root = synthetic_dcase.generate(str(tmp_path / "d"), **{**TINY, "num_source_train": 2,
                                                         "num_test_per_group": 1})
  workdir = tmp_path / "w"  # 8 training clips, 2 held out: 6 to fold, with --per=section 3
  with pytest.raises(dcase.DataError, match=r"SynthFan section_00: --normalization_bank="
                     r"crossfit \(or auto\): \d training clip\(s\) for 2 folds; need at least 4"):
    dcase_run.run(_settings(workdir, losses=("re",), data_root=root, per="section",
                            heldout_fraction=0.25, score_normalization="knn",
                            normalization_neighbors=2, normalization_bank="crossfit"))
  assert not list(workdir.glob("re/**/checkpoints"))


def test_held_out_clips_choose_the_scoring(tmp_path, monkeypatch):
  """--heldout_fraction: the held-out clips are left out of training and of the bank;
  phi is fitted to them, and with auto and --score_window=0 the pseudo-anomaly AUC
  of the (normalization, window) pair decides, recorded per model and stored with
  it, so experiments.score scores as the run did."""
  from bu_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from bu_jax import heldout, score_norm  # pylint: disable=g-import-not-at-top
  trained_on = []
  corpus = data_lib.training_corpus
  monkeypatch.setattr(data_lib, "training_corpus",
                      lambda waves, **kw: trained_on.append(len(waves)) or corpus(waves, **kw))
  settings = _settings(tmp_path / "run", losses=("re",), steps_per_epoch=2,
                       heldout_fraction=0.25, score_normalization="auto", score_window=0)
  results = dcase_run.run(settings)
  md = dcase.load_machine_type(str(tmp_path / "run" / "synthetic_data"), "SynthFan")
  held_idx, fit_idx = heldout.split(len(md.train), fraction=0.25, seed=0)
  assert len(held_idx) == 4 and trained_on == [len(md.train) - 4]
  record = results["re"]["scoring"]["re/SynthFan"]
  assert record["heldout_clips"] == 4
  fit = results["re"]["fit"]["re/SynthFan"]  # fit_check on the same held-out clips
  assert fit["pca_components"] == fit["code_units"] == 40
  assert fit["explained_heldout"] == pytest.approx(
      1.0 - fit["error"]["heldout"] / fit["error"]["baseline"], abs=1e-3)
  curve = [json.loads(l) for l in open(tmp_path / "run" / "re" / "models" / "SynthFan" /
                                       "validation.jsonl")]  # the held-out clips' error
  assert curve[0]["step"] == 0 and curve[-1]["step"] == settings.train_config("re", 1).total_steps
  assert record["validation"]["heldout_error"] == [r["heldout_error"] for r in curve]
  assert all(np.isfinite(r["heldout_error"]) and r["heldout_error"] > 0 for r in curve)
  candidates = evaluate.window_candidates(
      detector_lib.load_detector(tmp_path / "run" / "re" / "models" / "SynthFan").feature_config)
  tried = record["clip_score"]["chosen_by"]
  assert tried["rule"] == heldout.WINDOW_RULE and set(tried) - {"rule", "needs_margin"} == {
      str(w) for w in candidates}
  margins = tried["needs_margin"]  # every window but the best one
  assert len(margins) == len(candidates) - 1 and set(margins) < {str(w) for w in candidates}
  kinds = record["score_normalization"]["chosen_by"]
  assert set(kinds) == {"rule", "none", "knn_z"}
  best = max(("none", "knn_z"), key=lambda k: (kinds[k], k == "none"))  # ties: raw
  assert record["score_normalization"]["kind"] == best
  at = {w: a for w, a in tried.items() if w.isdigit()}  # the kept normalization's, per window
  assert max(at.values()) == pytest.approx(kinds[best], abs=1e-4)
  assert record["pseudo_anomaly_auc"]["mean"] == pytest.approx(  # at the kept window
      at[str(record["clip_score"]["window_frames"])], abs=1e-4)
  assert set(record["pseudo_anomaly_auc"]) == {"mean", "-10dB", "-15dB", "-20dB"}
  model_dir = tmp_path / "run" / "re" / "models" / "SynthFan"
  detector = detector_lib.load_detector(model_dir)
  assert detector.window == record["clip_score"]["window_frames"]
  assert sorted(detector.calibration.heldout_paths) == sorted(md.train[i].path for i in held_idx)
  assert detector.threshold == results["re"]["thresholds"]["re/SynthFan"]
  if best == "knn_z":
    cfg = detector.feature_config
    frames = lambda c: len(range(cfg.num_frames(len(c.wave)))[cfg.interior(len(c.wave))])
    bank = score_norm.load_local_normalizer(model_dir / score_norm.FILE_NAME)
    assert bank.frames == sum(frames(md.train[i]) for i in fit_idx)
  else:
    assert detector.normalization is None
  clip = md.test[0]
  rows = dict(csv.reader(open(tmp_path / "run" / "re" /
                              f"anomaly_score_SynthFan_section_{clip.section}_test.csv")))
  assert detector.score(clip.wave).clip_score == pytest.approx(float(rows[clip.name]), rel=1e-5)
  # The held-out fraction is a training setting: another one is refused, naming it.
  with pytest.raises(dcase_run.SettingsMismatchError,
                     match=r"--heldout_fraction: 0.25 in the checkpoint, 0.5 now"):
    dcase_run.run(dataclasses.replace(settings, heldout_fraction=0.5))
  # Re-evaluated with the held-out clips' bank (evaluation only): the bank holds their
  # frames, and experiments.score applies it as the run did.
  results = dcase_run.run(dataclasses.replace(settings, score_normalization="knn_z",
                                              normalization_bank="heldout"))
  record = results["re"]["scoring"]["re/SynthFan"]["score_normalization"]
  assert record["kind"] == "knn_z" and record["bank"] == "heldout"
  cfg = detector.feature_config
  frames = lambda c: len(range(cfg.num_frames(len(c.wave)))[cfg.interior(len(c.wave))])
  bank = score_norm.load_local_normalizer(model_dir / score_norm.FILE_NAME)
  assert bank.frames == record["frames"] == sum(frames(md.train[i]) for i in held_idx)
  rows = dict(csv.reader(open(tmp_path / "run" / "re" /
                              f"anomaly_score_SynthFan_section_{clip.section}_test.csv")))
  assert detector_lib.load_detector(model_dir).score(clip.wave).clip_score == pytest.approx(
      float(rows[clip.name]), rel=1e-5)


def test_cpu_preset_resolves_and_flags_override(tmp_path):
  settings = dcase_run.Settings(workdir=str(tmp_path), preset="cpu")
  assert settings.held_out() == 0.1 and settings.clip_window() == 0
  assert settings.normalization() == ("auto", 0)
  assert settings.bank() == "auto"  # experiments.toycar's cpu preset's, since the 27th session
  config = settings.train_config("bu", 1)
  assert config.model_preset.name == "fcn40-small+std" and config.total_steps == 9600
  plain = dcase_run.Settings(workdir=str(tmp_path), preset="cpu", score_window=1,
                             score_normalization="none", standardize_input=False)
  assert plain.clip_window() == 1 and plain.normalization()[0] == "none"
  assert not plain.train_config("re", 1).model_preset.standardize_input
  with pytest.raises(ValueError, match=r"--score_window=0 \(the preset's unless given\): the "
                     r"scoring is chosen on clips held out"):
    dcase_run.Settings(workdir=str(tmp_path), preset="cpu", heldout_fraction=0.0,
                       score_normalization="none")
  assert dcase_run.Settings(workdir=str(tmp_path), preset="demo").held_out() == 0.0


def test_standardized_input_uses_the_clips_trained_on(tmp_path):
  """--standardize_input: each model's input statistics are those of the training
  clips it trains on (the held-out ones excluded), stored with the model."""
  from bu_jax import features, heldout  # pylint: disable=g-import-not-at-top
  settings = _settings(tmp_path / "run", losses=("re",), steps_per_epoch=2,
                       standardize_input=True, heldout_fraction=0.25)
  dcase_run.run(settings)
  md = dcase.load_machine_type(str(tmp_path / "run" / "synthetic_data"), "SynthFan")
  _, fit_idx = heldout.split(len(md.train), fraction=0.25, seed=0)
  detector = detector_lib.load_detector(tmp_path / "run" / "re" / "models" / "SynthFan")
  assert detector.preset.standardize_input
  mean, _ = features.statistics([md.train[i].wave for i in fit_idx],
                                config=detector.feature_config)
  np.testing.assert_allclose(np.asarray(detector.params["input_mean"]), mean, rtol=1e-5,
                             atol=1e-5)
  everything, _ = features.statistics([c.wave for c in md.train],
                                      config=detector.feature_config)
  assert not np.allclose(everything, mean, rtol=1e-5, atol=1e-5)


def test_a_section_without_normal_clips_is_explained_once(tmp_path, caplog):
  """Its AUC is n/a; a warning names the folder, the section and the missing label."""
  names = ["anomaly_id_00_00000000.wav", "anomaly_id_00_00000001.wav"]
  clips = [dcase.Clip(path=str(tmp_path / "test_b" / n), meta=dcase.parse_name(n, year="2020"),
                      label=1, domain=None) for n in names]
  dcase_run._warn_one_label_sections(clips)  # at loading, once per test set  # pylint: disable=protected-access
  for _ in range(2):  # scored once per loss in a run: no warning there
    out = dcase_run._section_results(clips, np.array([1.0, 2.0]), np.array([1, 1]),  # pylint: disable=protected-access
                                     "2020")
  assert not np.isfinite(out["00"]["AUC"])
  warned = [r.getMessage() for r in caplog.records if "has no normal test clips" in r.getMessage()]
  assert warned == [f"{tmp_path / 'test_b'}: section 00 has no normal test clips; "
                    "its AUC and pAUC are n/a"]


def test_results_describe_this_run_and_a_stopped_run_leaves_none(tmp_path, caplog, monkeypatch):
  """A run on fewer machine types: results.json holds this run's training times only, and
  names (and warns of) the earlier run's submission files left in the loss folders. A run
  stopped after its first submission files leaves the earlier results as *.previous, never
  beside files they do not describe; the next finished run removes them."""
  from bu_jax import runner  # pylint: disable=g-import-not-at-top
  two = {**TINY, "machines": ("SynthFan", "SynthPump")}
  run = tmp_path / "run"
  first = dcase_run.run(_settings(run, losses=("re",), synthetic_kwargs=two))
  assert first["re"]["train_seconds"] == {
      f"re/{m}": runner.train_seconds(str(run / "re" / "models" / m))
      for m in ("SynthFan", "SynthPump")}
  assert all(v > 0 for v in first["re"]["train_seconds"].values())

  caplog.clear()
  fan = _settings(run, losses=("re",), synthetic_kwargs=two, machines=("SynthFan",))
  second = dcase_run.run(fan)
  assert list(second["re"]["train_seconds"]) == ["re/SynthFan"]
  pump = sorted(f"re/{p.name}" for p in (run / "re").glob("*_SynthPump_*.csv"))
  assert pump and second["earlier_files"] == pump
  assert any(f"{len(pump)} submission file(s)" in r.getMessage()
             and "earlier run's" in r.getMessage() for r in caplog.records)

  def stopped(*args, **kwargs):
    raise KeyboardInterrupt
  with monkeypatch.context() as patch:
    patch.setattr(dcase_run, "_summary_rows", stopped)  # after the files, before results
    with pytest.raises(KeyboardInterrupt):
      dcase_run.run(fan)
  assert not (run / "results.json").exists() and not (run / "results.txt").exists()
  assert json.loads((run / "results.json.previous").read_text())["re"]["dev"] == second["re"]["dev"]
  assert (run / "summary.csv.previous").exists()
  third = dcase_run.run(fan)
  assert third["re"]["dev"] == second["re"]["dev"]
  assert (run / "results.json").exists() and not list(run.glob("*.previous"))


def test_machine_types_of_different_conventions_are_refused_before_training(tmp_path,
                                                                             monkeypatch):
  """--year=auto reads each machine type's convention from its names; a run scores all of
  them by one, so a mix (here 2020 ids beside 2022+ sections) is one error before any
  model trains (it was a KeyError traceback after all the training)."""
  monkeypatch.setattr(dcase_run, "train_model", lambda *a, **k: pytest.fail("trained"))
  sr = 16000
  tone = (0.1 * np.sin(2 * np.pi * 300 * np.arange(sr) / sr)).astype(np.float32)
  trees = {"fan": ([f"section_00_source_train_normal_{i:04d}_noAttribute.wav" for i in range(4)],
                   [f"section_00_source_test_{k}_{i:04d}_noAttribute.wav"
                    for k in ("normal", "anomaly") for i in range(2)]),
           "valve": ([f"normal_id_00_{i:08d}.wav" for i in range(4)],
                     [f"{k}_id_00_{i:08d}.wav" for k in ("normal", "anomaly") for i in range(2)])}
  for machine, (train_names, test_names) in trees.items():
    for split, names in (("train", train_names), ("test", test_names)):
      os.makedirs(tmp_path / "root" / machine / split)
      for name in names:
        soundfile.write(tmp_path / "root" / machine / split / name, tone, sr)
  with pytest.raises(data_lib.DataError, match=r"different DCASE metric conventions \(valve: "
                     r"2020; fan: 2022-2025\); a run scores them all by one: pass --year"):
    dcase_run.run(_settings(tmp_path / "w", data_root=str(tmp_path / "root"),
                            synthetic_kwargs=None, losses=("re",)))


def test_dcase2021_layout_is_scored_by_2021_metrics_under_auto(tmp_path):
  """A 2021 valve's names (``_pattern_00_no_pump``) read as 2022+ attribute pairs; its
  source_test/ and target_test/ folders, which only DCASE 2021's sets hold, say 2021."""
  from bu_jax import dcase  # pylint: disable=g-import-not-at-top
  sr, tone = 16000, np.zeros(1600, np.float32) + 0.1
  suffix = "pattern_00_no_pump"
  names = {"train": [f"section_00_source_train_normal_{i:04d}_{suffix}.wav" for i in range(2)],
           "source_test": [f"section_00_source_test_normal_0000_{suffix}.wav"],
           "target_test": [f"section_00_target_test_anomaly_0000_{suffix}.wav"]}
  for folder, files in names.items():
    os.makedirs(tmp_path / "valve" / folder)
    for name in files:
      soundfile.write(tmp_path / "valve" / folder / name, tone, sr)
  md = dcase.load_machine_type(str(tmp_path), "valve", load_audio=False)
  assert dcase.detect_year([c.meta for c in md.train + md.test]) == "2022"  # names alone
  settings = _settings(tmp_path / "w", data_root=str(tmp_path), synthetic_kwargs=None)
  assert dcase_run._metric_year(settings, md) == "2021"  # pylint: disable=protected-access
  assert dcase_run._metric_year(dataclasses.replace(settings, year="2023"), md) == "2022"  # pylint: disable=protected-access
