"""The toy-car experiment end to end on a tiny synthetic data set (shortened)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bu_jax import checkpoint, data, evaluate, synthetic, toycar

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The runs in this process train at XLA's backend optimization level 0 (conftest).
pytestmark = pytest.mark.usefixtures("fast_training")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("synth") / "set")
  synthetic.generate(root, seed=1, num_train=6, num_test=6, clip_seconds=4.0,
                     num_noise=1, noise_seconds=5.0, num_anomaly=5,
                     num_something_else=5, rare_seconds=1.5)
  return root


def _settings(workdir, data_dir, **kw):
  base = dict(workdir=str(workdir), losses=("re", "bu"), preset="demo", data_dir=data_dir,
              something_else_dir=os.path.join(data_dir, "something_else"), epochs=1,
              steps_per_epoch=4, decay_start_epoch=0, segments_per_mixture=2,
              steps_per_call=2, checkpoint_every=2, progress=False, num_devices=1)
  base.update(kw)
  return toycar.Settings(**base)


@pytest.mark.slow
def test_run_writes_well_formed_outputs_and_resumes(tmp_path, tiny_data, capsys):
  settings = _settings(tmp_path / "run", tiny_data)
  results = toycar.run(settings)
  out = capsys.readouterr().out
  assert "condition" in out and "anr_-20dB" in out  # the Figure-4-like table
  assert "held-out max/median" in out
  assert "held-out explained" in out and "by PCA-40" in out  # the AEs' fit (fit_check)
  table = (tmp_path / "run" / "results.txt").read_text()  # the printed table, kept
  assert table.startswith("condition") and table in out

  stored = json.loads((tmp_path / "run" / "results.json").read_text())
  for loss in ("re", "bu"):
    res = stored[loss]
    assert set(res["auc"]) == {"anr_-10dB", "anr_-15dB", "anr_-20dB", "mean"}
    for key in ("auc", "pauc"):
      assert all(0.0 <= v <= 1.0 for v in res[key].values())
    assert np.isfinite(res["threshold"])
    held = np.asarray(res["heldout_clip_scores"])
    assert res["heldout_max_over_median"] == pytest.approx(held.max() / np.median(held))
    assert set(res["rare_normal"]) >= {"auc_vs_rare", "fpr_frequent", "fpr_rare"}
    model_dir = tmp_path / "run" / loss
    rows = list(csv.reader(open(model_dir / "anomaly_score_anr_-20dB.csv")))
    assert len(rows) == 12 and all(np.isfinite(float(r[1])) for r in rows)
    decisions = list(csv.reader(open(model_dir / "decision_result_anr_-20dB.csv")))
    assert {r[1] for r in decisions} <= {"0", "1"}
    meta = checkpoint.read_metadata(str(model_dir))
    assert meta["threshold"] == pytest.approx(res["threshold"])
    assert meta["model"] == "fcn40-small+std" and len(meta["heldout_clip_scores"]) >= 1
    assert meta["threshold_fit"] == "gamma_loc0"
    assert meta["threshold"] == pytest.approx(evaluate.fit_threshold(meta["heldout_clip_scores"]))
    steps = [json.loads(l)["step"] for l in open(model_dir / "metrics.jsonl")]
    assert steps == list(range(4))
    # The validation curve: the held-out clips' mean frame score at 0, every 2 steps, the end.
    curve = [json.loads(l) for l in open(model_dir / "validation.jsonl")]
    assert [r["step"] for r in curve] == [0, 2, 4]
    assert res["validation"]["heldout_error"] == [r["heldout_error"] for r in curve]
    assert all(np.isfinite(v) and v > 0 for v in res["validation"]["heldout_error"])
    assert res["validation"]["last_quarter_change"] == pytest.approx(
        curve[2]["heldout_error"] / curve[1]["heldout_error"] - 1)
  assert "held-out error trend" in out
  for png in ("roc.png", "scores_over_time.png", "score_histogram.png"):
    assert (tmp_path / "run" / png).stat().st_size > 1000
  assert stored["data"]["test_rare_normal"] > 0

  # Same command again: both losses are found finished, nothing retrained.
  again = toycar.run(settings)
  assert "already trained" in capsys.readouterr().out
  assert again["bu"]["auc"] == pytest.approx(results["bu"]["auc"])


@pytest.mark.slow
def test_entry_point_runs(tmp_path, tiny_data):
  cmd = [sys.executable, "-m", "experiments.toycar", "--loss=snp", "--preset=demo",
         f"--workdir={tmp_path / 'w'}", f"--data_dir={tiny_data}",
         f"--something_else_dir={os.path.join(tiny_data, 'something_else')}",
         "--epochs=1", "--steps_per_epoch=2", "--decay_start_epoch=0",
         "--segments_per_mixture=2", "--steps_per_call=1", "--num_devices=2",
         "--mixtures_per_step=2"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "SNP AUC" in proc.stdout
  assert (tmp_path / "w" / "results.json").exists()
  info = [l for l in proc.stderr.splitlines()
          if l.startswith("INFO") or (l[:1] == "I" and l[1:5].isdigit())]
  assert not info, info[:5]  # quiet by default: no absl INFO lines (Orbax, JAX)


def test_heldout_paths_are_absolute_for_a_relative_data_dir(tmp_path, tiny_data, monkeypatch):
  """The calibration stores the held-out files phi was set on; experiments.score reads
  their lengths from anywhere, so a relative --data_dir is stored absolute."""
  monkeypatch.chdir(os.path.dirname(tiny_data))
  data = toycar.load_data(_settings(tmp_path, os.path.basename(tiny_data)))
  assert data.heldout_paths and all(os.path.isabs(p) and os.path.exists(p)
                                    for p in data.heldout_paths)


def test_missing_data_dir_is_a_clear_error(tmp_path):
  with pytest.raises(data.DataError, match="--data_dir=.*no such directory"):
    toycar.load_data(_settings(tmp_path, str(tmp_path / "nope")))


def test_test_folder_without_normal_clips_stops_before_training(tmp_path, tiny_data):
  import soundfile  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  root = tmp_path / "engine"
  files = {"train": ["normal_id_00_00000000", "normal_id_00_00000001", "normal_id_00_00000002"],
           "test_a": ["normal_id_00_00000000", "anomaly_id_00_00000000"],
           "test_b": ["anomaly_id_00_00000000", "anomaly_id_00_00000001"]}
  for folder, names in files.items():
    (root / folder).mkdir(parents=True)
    for name in names:
      soundfile.write(str(root / folder / f"{name}.wav"),
                      (0.1 * rng.standard_normal(16000 * 4)).astype(np.float32), 16000)
  settings = _settings(tmp_path / "w", str(root),
                       something_else_dir=os.path.join(tiny_data, "something_else"))
  with pytest.raises(data.DataError,
                     match=f"{root / 'test_b'}: test condition 'test_b_id_00' has no normal clips"):
    toycar.load_data(settings)


def test_something_else_required_with_real_data(tmp_path, tiny_data):
  with pytest.raises(data.DataError, match="--something_else_dir is required"):
    toycar.load_data(_settings(tmp_path, tiny_data, something_else_dir=None))


def test_unknown_preset_and_loss():
  with pytest.raises(ValueError, match="--preset"):
    toycar.Settings(workdir="x", preset="huge")
  with pytest.raises(ValueError, match="--loss"):
    toycar.Settings(workdir="x", losses=("mse",))


@pytest.mark.parametrize("values, message", [
    ({"losses": ("bu",), "sigma": 1e39}, r"--sigma must be finite and > 0 in float32, got 1e\+39"),
    ({"lam": 1e-50}, r"--lam=1e-50 is below float32's smallest normal number 1.18e-38"),
    ({"learning_rate": 1e-40}, r"--learning_rate=1e-40 is below float32's smallest normal "
                               r"number 1.18e-38 .*; give at least 1.18e-38"),
    ({"eps": 1e-50}, r"--eps=1e-50 is below .*; give 0 or at least 1.18e-38"),
    ({"epochs": 3_000_000, "steps_per_epoch": 1000, "decay_start_epoch": 1},
     r"--epochs x steps_per_epoch = 3000000 x 1000 = 3000000000 steps; at most 2147483647"),
    ({"seed": 10**20}, r"--seed must be an integer in \[0, 2\*\*32\)"),
    ({"seed": -1}, r"--seed must be an integer in \[0, 2\*\*32\)"),
    ({"data_seed": -5}, r"--data_seed must be >= 0, got -5"),
    ({"kde_memory": 100_000}, r"--kde_memory x kde_memory_rows = 100000 x 256 .* at most 262144"),
    ({"reference_components": 100_000},
     r"--reference_components=100000 exceeds the 440 feature dimensions of --model=fcn40-small"),
])
def test_values_that_would_fail_inside_training_are_refused_by_the_settings(values, message):
  """Each of these used to pass the flag checks and end in a traceback (or, for a
  learning rate of 0 in float32, a model that never trained)."""
  with pytest.raises(ValueError, match=message):
    toycar.Settings(workdir="x", preset="demo", **values)


def _entry(tmp_path, tiny_data, *extra):
  return [sys.executable, "-m", "experiments.toycar", "--preset=demo", "--num_devices=1",
          f"--data_dir={tiny_data}",
          f"--something_else_dir={os.path.join(tiny_data, 'something_else')}",
          "--segments_per_mixture=2", "--steps_per_call=1", *extra]


def test_entry_point_bad_input_is_one_clear_line(tmp_path, tiny_data):
  cmd = _entry(tmp_path, tiny_data, f"--workdir={tmp_path / 'w'}", "--noise_dir=/no/such/dir")
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert "Error: --noise_dir=/no/such/dir: no such directory" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "w").exists()  # no empty workdir left behind by a typo


@pytest.mark.slow
def test_sigterm_saves_and_the_same_command_resumes(tmp_path, tiny_data):
  import signal
  import time
  workdir = tmp_path / "w"
  cmd = _entry(tmp_path, tiny_data, f"--workdir={workdir}", "--loss=re", "--epochs=1",
               "--steps_per_epoch=100000", "--decay_start_epoch=0", "--checkpoint_every=1000")
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  metrics = workdir / "re" / "metrics.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline and (not metrics.exists() or
                                    len(metrics.read_text().splitlines()) < 5):
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err[-2000:]
  assert "Interrupted: stopped by SIGTERM after step" in err and "Traceback" not in err
  saved = checkpoint.Checkpointer(str(workdir / "re")).latest_step()
  assert saved is not None and saved >= 5  # saved on the signal, not only every 1000 steps
  # The same command finds the checkpoint and resumes (another schedule would be refused);
  # stop it again a few steps later.
  proc2 = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
  deadline = time.time() + 240
  while time.time() < deadline and len(metrics.read_text().splitlines()) < saved + 3:
    time.sleep(0.5)
  proc2.send_signal(signal.SIGTERM)
  out2, err2 = proc2.communicate(timeout=120)
  assert proc2.returncode == 130, err2[-2000:]
  assert f"resuming from the checkpoint of step {saved}" in out2
  saved2 = checkpoint.Checkpointer(str(workdir / "re")).latest_step()
  assert saved2 > saved
  steps = [json.loads(l)["step"] for l in open(metrics)]
  assert steps == list(range(len(steps))) and len(steps) >= saved2  # nothing lost or repeated


def _dcase_real_like(root):
  """A DCASE-2020 tree with two test folders, a rare-clip CSV and something-else clips."""
  import soundfile  # pylint: disable=g-import-not-at-top
  sr = 16000
  rng = np.random.default_rng(3)

  def tone(seconds, freq, noise=0.02):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(t.size)).astype(
        np.float32)

  def write(rel, wave):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, wave, sr)

  for i in range(6):
    write(f"m/train/normal_id_00_{i:08d}.wav", tone(3.5, 300 + 5 * i))
  rows = ["file,split,rare"]
  for folder in ("test_anr-10dB", "test_anr-20dB"):
    for i in range(3):
      write(f"m/{folder}/normal_id_00_{i:08d}.wav", tone(3.5, 300 + (200 if i == 2 else 7 * i)))
      write(f"m/{folder}/anomaly_id_00_{i:08d}.wav", tone(3.5, 300, noise=0.3))
      rows.append(f"m/{folder}/normal_id_00_{i:08d}.wav,test,{int(i == 2)}")
  for i in range(3):
    write(f"se/clip_{i}.wav", tone(0.5, 1000 + 100 * i))
  with open(os.path.join(root, "metadata.csv"), "w") as f:
    f.write("\n".join(rows) + "\n")
  return root


@pytest.mark.slow
def test_cpu_preset_rare_clips_reference_and_scoring_agree(tmp_path, capsys):
  """--preset=cpu on a DCASE tree with test*/ folders and --rare_clips: rare-normal
  metrics per folder, the PCA reference, training.png, and experiments.score's
  clip scores equal to the results' (the standardized input travels with the model)."""
  from bu_jax import detector  # pylint: disable=g-import-not-at-top
  root = _dcase_real_like(str(tmp_path / "set"))
  settings = toycar.Settings(
      workdir=str(tmp_path / "run"), losses=("re", "bu"), preset="cpu",
      data_dir=os.path.join(root, "m"), something_else_dir=os.path.join(root, "se"),
      rare_clips=os.path.join(root, "metadata.csv"), epochs=1, steps_per_epoch=4,
      decay_start_epoch=0, segments_per_mixture=2, steps_per_call=2, checkpoint_every=2,
      progress=False, num_devices=1, reference_components=4,
      bandwidth="contrast")  # the option; the preset keeps the paper's
  results = toycar.run(settings)
  out = capsys.readouterr().out
  assert "rare vs frequent AUC" in out and "PCA AUC" in out and "pseudo-anomaly AUC" in out
  conds = {"test_anr-10dB_id_00", "test_anr-20dB_id_00", "mean"}
  for method in ("re", "bu", "pca"):
    rare = results[method]["rare_normal"]
    assert set(results[method]["auc"]) == conds
    for key in ("auc_vs_rare", "auc_vs_frequent", "rare_vs_frequent"):
      assert set(rare[key]) == conds and all(0 <= v <= 1 for v in rare[key].values())
    assert (tmp_path / "run" / method / "anomaly_score_test_anr-20dB_id_00.csv").exists()
  assert results["bu"]["train_config"]["bandwidth"] == "contrast"
  assert results["bu"]["train_config"]["model"]["standardize_input"] is True
  for method in ("re", "bu", "pca"):  # the preset's auto: raw or knn_z, by pseudo-anomalies
    record = results[method]["score_normalization"]
    assert record["kind"] in ("none", "knn_z") and record["chosen_by"]["rule"] == "pseudo_anomaly_auc"
    window = results[method]["clip_score"]  # and the clip-score window, with it
    assert window["window_frames"] in (1, 16, 31, 62, 125)
    assert set(window["chosen_by"]) == {"rule", "needs_margin", "1", "16", "31", "62", "125"}
    tried = {int(w): a for w, a in window["chosen_by"].items() if w.isdigit()}
    best = max(tried, key=tried.get)  # kept, or a longer window within its margin
    assert window["window_frames"] >= best and (window["window_frames"] == best or tried[best] - tried[
        window["window_frames"]] <= window["chosen_by"]["needs_margin"][str(window["window_frames"])] + 1e-4)
  assert (tmp_path / "run" / "training.png").stat().st_size > 1000
  rows = [json.loads(l) for l in open(tmp_path / "run" / "bu" / "metrics.jsonl")]
  base = 1.0 / (2 * 440)
  assert all(any(abs(r["sigma"] - f * base) < 1e-9 for f in (0.5, 1, 2, 4, 8, 16, 32))
             for r in rows)
  # The scorer restores the standardization with the parameters: same clip scores.
  det = detector.load_detector(str(tmp_path / "run"), loss="bu")
  stored = {r[0]: float(r[1]) for r in csv.reader(
      open(tmp_path / "run" / "bu" / "anomaly_score_test_anr-10dB_id_00.csv"))}
  path = os.path.join(root, "m", "test_anr-10dB", "anomaly_id_00_00000001.wav")
  wave = data.audio.load_wav(path)
  assert det.score(wave).clip_score == pytest.approx(stored[os.path.basename(path)], rel=1e-4)


def test_bad_rare_clips_file_is_named(tmp_path):
  root = _dcase_real_like(str(tmp_path / "set"))
  (tmp_path / "other.csv").write_text("file,rare\nsomewhere/else.wav,1\n")
  for path, match in ((tmp_path / "missing.csv", "no such file"),
                      (tmp_path / "other.csv", "names a test clip")):
    settings = toycar.Settings(
        workdir=str(tmp_path / "run"), losses=("re",), preset="cpu",
        data_dir=os.path.join(root, "m"), rare_clips=str(path), progress=False,
        num_devices=1, score_normalization="none",  # auto would need something-else sounds,
        score_window=1)  # and so would a chosen window
    with pytest.raises(data.DataError, match=f"--rare_clips=.*{match}"):
      toycar.load_data(settings)


def _wait_for_sigterm_handler(proc, timeout=60.0):
  """Returns once ``proc`` catches SIGTERM, i.e. ``experiments/__init__.py``
  has installed its start-up handlers (Linux: ``SigCgt`` in /proc; elsewhere
  half a second)."""
  import signal  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  status = f"/proc/{proc.pid}/status"
  if not os.path.exists(status):
    time.sleep(0.5)
    return
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline and proc.poll() is None:
    with open(status) as f:
      caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    if caught >> (signal.SIGTERM - 1) & 1:
      return
    time.sleep(0.005)
  raise AssertionError(f"the entry point installed no SIGTERM handler within {timeout} s")


@pytest.mark.parametrize("delay", [0.3, 3.0])
def test_an_early_ctrl_c_ends_in_one_line(tmp_path, delay):
  """Ctrl-C during the imports (before the main: "while starting") or just after
  ends in one Interrupted: line and status 130, never an import traceback."""
  import signal  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.toycar", "--loss=re", "--preset=demo",
       f"--workdir={tmp_path / 'w'}"], cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  # The delay counts from the entry package's import: a Ctrl-C inside the
  # interpreter's own start-up (site, runpy; 0.1 s idle, longer on a loaded
  # machine) is Python's, before any line of ours has run.
  _wait_for_sigterm_handler(proc)
  time.sleep(delay)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 130, err[-2000:]
  assert err.strip().splitlines()[-1].startswith("Interrupted: stopped by SIGINT"), err[-2000:]
  assert "Traceback" not in err, err[-3000:]
