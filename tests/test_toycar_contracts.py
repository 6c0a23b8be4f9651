"""The toy-car experiment's contracts under bad input: flags, resume, run directories."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from bu_jax import detector
from bu_jax import heldout
from bu_jax import toycar

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tiny runs below train at XLA's backend optimization level 0 (conftest).
pytestmark = pytest.mark.usefixtures("fast_training")


# ------------------------------------------------------------------ flag validation


@pytest.mark.parametrize("overrides, message", [
    (dict(epochs=0), r"--epochs must be >= 1, got 0"),
    (dict(epochs=2), r"--decay_start_epoch=6 must lie in \[0, --epochs=2\].*demo preset"),
    (dict(epochs=4, decay_start_epoch=5), r"--decay_start_epoch=5 must lie in \[0, --epochs=4\]"),
    (dict(steps_per_epoch=0), r"--steps_per_epoch must be >= 1"),
    (dict(checkpoint_every=0), r"--checkpoint_every must be >= 1, got 0"),
    (dict(segments_per_mixture=0), r"--segments_per_mixture must be >= 1, got 0"),
    (dict(steps_per_call=0), r"--steps_per_call must be >= 1, got 0"),
    (dict(mixtures_per_step=0), r"--mixtures_per_step must be >= 1, got 0"),
    (dict(num_devices=0), r"--num_devices must be >= 1, got 0"),
    (dict(num_devices=jax.device_count() + 1), r"--num_devices=\d+: this machine has"),
    (dict(num_devices=2, mixtures_per_step=3), r"--mixtures_per_step=3 is not divisible .*\(2\)"),
    (dict(sigma=float("nan")), r"--sigma must be finite and > 0, got nan"),
    (dict(sigma=-1.0), r"--sigma must be finite and > 0, got -1"),
    (dict(sigma=float("inf")), r"--sigma must be finite"),
    (dict(eps=-1.0), r"--eps must be finite and >= 0, got -1"),
    (dict(eps=float("nan")), r"--eps must be finite"),
    (dict(learning_rate=-0.001), r"--learning_rate must be finite and > 0, got -0.001"),
    (dict(learning_rate=0.0), r"--learning_rate must be finite and > 0"),
    (dict(lam=-5.0), r"--lam must be finite and > 0, got -5"),
    (dict(lam=0.0), r"--lam must be finite and > 0, got 0"),
    (dict(reference_components=-1), r"--reference_components must be >= 0, got -1"),
    (dict(normalization_neighbors=-1), r"--normalization_neighbors must be >= 0, got -1"),
    (dict(normalization_neighbors=0, score_normalization="knn"),
     r"--normalization_neighbors=0 \(chosen from the held-out clips\) applies to "
     r"--score_normalization=knn_z or auto only, got knn"),
    (dict(score_normalization="pca"), r"--score_normalization must be one of"),
    (dict(normalization_bank="test"), r"--normalization_bank must be one of"),
    (dict(normalization_bank="heldout"), r"--normalization_bank=heldout applies to "
     r"--score_normalization=knn, knn_z or auto, got none"),
    (dict(normalization_bank="auto"), r"--normalization_bank=auto applies to "
     r"--score_normalization=knn, knn_z or auto, got none"),
    (dict(score_normalization="knn_z", normalization_neighbors=1),
     r"--score_normalization=knn_z needs --normalization_neighbors >= 2"),
    (dict(snr_db=float("nan")), r"--snr_db must be finite"),
    (dict(model="fcn99"), r"--model must be one of"),
    (dict(reduce="median"), r"--reduce must be one of"),
    (dict(threshold_quantile=1.0), r"--threshold_quantile must lie in \(0, 1\)"),
])
def test_every_range_check_names_the_flag(overrides, message):
  with pytest.raises(ValueError, match=message):
    toycar.Settings(workdir="unused", preset="demo", **overrides)


def test_valid_edge_values_are_accepted():
  toycar.Settings(workdir="unused", preset="demo", epochs=1, decay_start_epoch=0, eps=0.0,
                  reference_components=0, checkpoint_every=1)
  toycar.Settings(workdir="unused", preset="demo", epochs=6)  # decay_start_epoch == epochs


def test_explicit_mixtures_per_step_is_kept():
  settings = toycar.Settings(workdir="unused", preset="demo", mixtures_per_step=2,
                             num_devices=2)
  assert settings.train_config("re").mixtures_per_step == 2


@pytest.mark.parametrize("flag, message", [
    ("--epochs=2", "--decay_start_epoch=6 must lie in [0, --epochs=2]"),
    ("--sigma=nan", "--sigma must be finite and > 0, got nan"),
    # absl's own parsing errors in the same form (were "FATAL Flags parsing error: ...")
    ("--batch=3", "Unknown command line flag 'batch'"),
    ("--loss=pca", "flag --loss=pca: value should be one of <re|snp|bu|all>"),
])
def test_entry_point_usage_error_is_one_line(tmp_path, flag, message):
  workdir = tmp_path / "w"
  cmd = [sys.executable, "-m", "experiments.toycar", "--preset=demo",
         f"--workdir={workdir}", flag]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith(f"Usage error: {message}")
  assert "Traceback" not in proc.stderr and not workdir.exists()


@pytest.mark.parametrize("module, flag", [("experiments.toycar", "--help"),
                                          ("experiments.score", "--helpfull")])
def test_help_asked_for_exits_with_status_0(module, flag):
  """absl exits with status 1 after --help; a tool asked for its help has not failed."""
  proc = subprocess.run([sys.executable, "-m", module, flag], cwd=REPO, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert "--workdir" in proc.stdout and "Traceback" not in proc.stderr


# ------------------------------------------------------------------ resume with other settings


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
  from bu_jax import synthetic  # pylint: disable=g-import-not-at-top
  root = str(tmp_path_factory.mktemp("synth") / "set")
  synthetic.generate(root, seed=1, num_train=6, num_test=6, clip_seconds=4.0,
                     num_noise=1, noise_seconds=5.0, num_anomaly=5,
                     num_something_else=5, rare_seconds=1.5)
  return root


def _settings(workdir, data_dir, **kw):
  base = dict(workdir=str(workdir), losses=("re",), preset="demo", data_dir=data_dir,
              something_else_dir=os.path.join(data_dir, "something_else"), epochs=1,
              steps_per_epoch=2, decay_start_epoch=0, segments_per_mixture=2,
              steps_per_call=2, checkpoint_every=2, progress=False, num_devices=1)
  base.update(kw)
  return toycar.Settings(**base)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_data):
  """A finished tiny RE run (2 steps); tests copy it before changing it."""
  workdir = tmp_path_factory.mktemp("finished") / "run"
  toycar.run(_settings(workdir, tiny_data))
  return workdir


def _copy(run_dir, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  return shutil.copytree(run_dir, tmp_path / "run")


def test_a_window_longer_than_the_clips_is_recorded(finished_run, tiny_data, tmp_path, caplog):
  """Every test clip shorter than --score_window is scored by its mean: warned, and counted
  in results.json's clip_score record."""
  workdir = _copy(finished_run, tmp_path)
  toycar.run(_settings(workdir, tiny_data, score_window=10**6))
  record = json.loads((workdir / "results.json").read_text())["re"]["clip_score"]
  tests = len(toycar.load_data(_settings(workdir, tiny_data)).dataset.test)
  assert record["window_frames"] == 10**6 and record["clips_shorter_than_window"] == tests
  assert any(f"{tests} of {tests} clips have fewer interior frames" in r.getMessage()
             for r in caplog.records)


@pytest.fixture(scope="module")
def knn_run(tmp_path_factory, finished_run, tiny_data):
  """A copy of ``finished_run`` re-evaluated with --score_normalization=knn."""
  workdir = _copy(finished_run, tmp_path_factory.mktemp("knn"))
  toycar.run(_settings(workdir, tiny_data, score_normalization="knn",
                       normalization_neighbors=5))
  return workdir


@pytest.fixture(scope="module")
def heldout_bank_run(tmp_path_factory, tiny_data):
  """A tiny RE run with 3 of 6 clips held out, scored with knn on the held-out clips' bank."""
  workdir = tmp_path_factory.mktemp("heldout_bank") / "run"
  toycar.run(_settings(workdir, tiny_data, heldout_fraction=0.5, score_normalization="knn",
                       normalization_neighbors=5, normalization_bank="heldout"))
  return workdir


def test_the_heldout_bank_holds_the_heldout_clips_frames(heldout_bank_run, finished_run,
                                                          tiny_data, tmp_path):
  from bu_jax import score_norm  # pylint: disable=g-import-not-at-top
  results = json.loads((heldout_bank_run / "results.json").read_text())
  record = results["re"]["score_normalization"]
  assert record["bank"] == "heldout" and results["settings"]["normalization_bank"] == "heldout"
  note = toycar._normalization_note(results["re"])  # pylint: disable=protected-access
  assert "knn-normalized scores (k=5, held-out bank)" in note  # the line printed per loss
  settings = _settings(heldout_bank_run, tiny_data, heldout_fraction=0.5)
  data, config = toycar.load_data(settings), settings.model_preset().features
  assert len(data.heldout_waves) == 3 and len(results["re"]["heldout_clip_scores"]) == 3
  bank = score_norm.load_local_normalizer(heldout_bank_run / "re" / "score_normalizer.npz")
  assert bank.frames == record["frames"] == sum(
      len(range(config.num_frames(len(w)))[config.interior(len(w))]) for w in data.heldout_waves)
  # One held-out clip cannot be normalized by the others: one clear error.
  workdir = _copy(finished_run, tmp_path)
  with pytest.raises(ValueError, match=r"at least 2 held-out clips, got 1 \(raise "
                     r"--heldout_fraction\)"):
    toycar.run(_settings(workdir, tiny_data, score_normalization="knn",
                         normalization_neighbors=5, normalization_bank="heldout"))


@pytest.fixture(scope="module")
def crossfit_run(tmp_path_factory, tiny_data):
  """A tiny RE + BU run scored with knn on the cross-fitted bank (PCA reference too)."""
  workdir = tmp_path_factory.mktemp("crossfit") / "run"
  toycar.run(_crossfit_settings(workdir, tiny_data))
  return workdir


@pytest.mark.parametrize("winner", ["none", "training", "crossfit", "tie", "raw_tie"])
def test_auto_bank_keeps_the_bank_of_the_higher_pseudo_anomaly_auc(
    winner, crossfit_run, tiny_data, tmp_path, monkeypatch):
  """--normalization_bank=auto: raw scores, knn_z on the training bank and knn_z on the
  cross-fitted bank are the candidates (the fold models found trained); the winner's bank
  is recorded and is the file experiments.score applies. The training bank must win by
  more than one pair of clips ("tie": ahead by less, the cross-fitted bank is kept) and
  by more than its lead's standard error (0 here: test_heldout has the SE's case), and so
  must raw scores over the cross-fitted bank ("raw_tie": ahead by less, knn_z on the
  cross-fitted bank is kept)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from bu_jax import score_norm  # pylint: disable=g-import-not-at-top
  workdir = _copy(crossfit_run, tmp_path)
  banks, fingerprints = {}, {}
  normalize = heldout.normalize

  def tagged(scorer, params, held, out_dir, *, kind, neighbors, bank, bank_scores=None):
    normalized, record, loco = normalize(scorer, params, held, out_dir, kind=kind,
                                         neighbors=neighbors, bank=bank, bank_scores=bank_scores)
    banks[id(normalized)] = "none" if kind == "none" else bank
    fingerprints.setdefault(out_dir, {})[banks[id(normalized)]] = record.get("fingerprint")
    return normalized, record, loco

  pair = []  # one pair of clips in the mean AUC: 1 / (held-out x pseudo per ANR x ANRs)
  aucs = {"none": 0.8, "training": 0.8, "crossfit": 0.8}
  if winner == "tie":
    aucs["training"] = 0.9
  if winner == "raw_tie":
    aucs["none"] = 0.9

  def check(scorer, params, held, *, reduce, windows, heldout_scorers=None):
    del params, reduce, heldout_scorers
    per_anr = len(next(iter(held.pseudo_waves.values())))
    pair[:] = [1.0 / (len(held.waves) * per_anr * len(held.pseudo_waves))]
    if winner in ("tie", "raw_tie"):  # the training bank or raw scores ahead by 0.9 of a pair
      aucs["crossfit"] = 0.9 - 0.9 * pair[0]
    else:
      aucs[winner] = 0.9
    pseudo = {f"{anr:g}dB": np.ones(len(w)) for anr, w in held.pseudo_waves.items()}
    return {w: (np.zeros(len(held.waves)), {"mean": aucs[banks[id(scorer)]]}, pseudo)
            for w in windows}

  monkeypatch.setattr(heldout, "normalize", tagged)
  monkeypatch.setattr(heldout, "check", check)
  results = toycar.run(_crossfit_settings(workdir, tiny_data, score_normalization="auto",
                                          normalization_bank="auto"))
  kept_bank = "crossfit" if winner in ("tie", "raw_tie") else winner
  assert 0 < pair[0] < 0.1  # below the 0.1 by which "training" wins
  raw_led = {"none": 0.1, "raw_tie": 0.9 * pair[0]}.get(winner)  # raw scores the first maximum
  for method in ("re", "bu", "pca"):
    record = results[method]["score_normalization"]
    assert record["chosen_by"] == {"rule": "pseudo_anomaly_auc", **{
        c: round(aucs[c.split("/")[-1]], 4) for c in ("none", "knn_z/training", "knn_z/crossfit")},
        "training_bank_needs_margin": round(pair[0], 6), "bank_lead_se": 0.0, **({} if (
            raw_led is None) else {"raw_lead": round(raw_led, 6),
                                   "raw_needs_margin": round(pair[0], 6), "raw_lead_se": 0.0})}
    assert record["kind"] == ("none" if kept_bank == "none" else "knn_z")
    assert record.get("bank") == (None if kept_bank == "none" else kept_bank)
    kept = workdir / method / score_norm.FILE_NAME
    assert kept.exists() == (kept_bank != "none")
    if kept_bank != "none":  # the kept bank, rewritten after the cross-fitted one was tried
      found = fingerprints[str(workdir / method)]
      assert found["training"] != found["crossfit"]
      assert score_norm.load_local_normalizer(kept).fingerprint == found[kept_bank]
      assert record["fingerprint"] == found[kept_bank]
  if kept_bank != "none":
    text = (workdir / "results.txt").read_text()
    assert "knn bank" in text
    other = {"training": "crossfit", "crossfit": "training"}[kept_bank]
    margin = round(round(aucs[kept_bank], 4) - round(aucs[other], 4), 4)
    assert heldout.bank_margin(results["re"]["score_normalization"]) == margin
    assert [line.split()[-3:] for line in text.splitlines()
            if line.strip().startswith("by pseudo-anomaly AUC")] == [[f"{margin:+.4f}"] * 3]
    assert [line.split()[-3:] for line in text.splitlines()
            if line.strip().startswith("training bank needs")] == [[f">{pair[0]:.4f}"] * 3]
  raw_rows = [line.split()[-9:] for line in (workdir / "results.txt").read_text().splitlines()
              if line.startswith("raw lead / needs")]
  assert raw_rows == ([] if raw_led is None else [[f"{raw_led:+.4f}", "/", f">{pair[0]:.4f}"] * 3])


def _crossfit_settings(workdir, data_dir, **kw):
  """The tiny run of ``crossfit_run``: 4 steps, so its fold models train 1 (short)."""
  return _settings(workdir, data_dir, **{
      "losses": ("re", "bu"), "score_normalization": "knn", "normalization_neighbors": 5,
      "normalization_bank": "crossfit", "steps_per_epoch": 4, **kw})


def test_the_crossfit_bank_scores_each_training_clip_by_a_model_that_did_not_train_on_it(
    crossfit_run, tiny_data):
  from bu_jax import checkpoint, crossfit, data as data_lib, detector, frame_scores, reference, score_norm  # pylint: disable=g-import-not-at-top
  results = json.loads((crossfit_run / "results.json").read_text())
  settings = _settings(crossfit_run, tiny_data, losses=("re", "bu"))
  data = toycar.load_data(settings)
  folds = crossfit.split(len(data.fit_waves), seed=settings.data_seed)
  # BU's bank comes from RE's fold models (--crossfit_bu_folds=re, the default): trained
  # once, for RE's bank, and not again for BU's.
  assert not (crossfit_run / "bu" / "crossfit").exists()
  assert results["re"]["crossfit"]["train_seconds"] > 0
  assert results["bu"]["crossfit"]["train_seconds"] is None
  for loss in ("re", "bu"):
    record = results[loss]["score_normalization"]
    assert record["bank"] == "crossfit" and results[loss]["crossfit"]["folds"] == 2
    assert results[loss]["crossfit"]["fold_models"] == "re"
    assert "k=5, cross-fitted bank" in toycar._normalization_note(results[loss])  # pylint: disable=protected-access
    main = detector.load_detector(crossfit_run, loss=loss)
    raw = lambda det: frame_scores.FrameScorer(det.model, det.preset.features)
    fold_models = []
    for k in range(2):
      fold_dir = crossfit_run / "re" / "crossfit" / f"fold{k}"
      assert checkpoint.read_metadata(str(fold_dir))["train_config"]["loss"] == "re"
      stored = checkpoint.read_metadata(str(fold_dir))["data"]
      trained_on = [data.fit_paths[i] for i in crossfit.others(folds, k)]
      assert stored["train_clips"] == data_lib.clips_fingerprint(trained_on)
      assert stored["crossfit_fold"] == f"{k + 1} of 2"
      assert not set(trained_on) & {data.fit_paths[i] for i in folds[k]}  # never its own clips
      # Half the clips, a quarter of the steps per epoch (--crossfit_schedule=short, the
      # default), same epochs.
      assert checkpoint.read_metadata(str(fold_dir))["train_config"]["steps_per_epoch"] == 1
      assert checkpoint.committed_steps(str(fold_dir))[-1] == 1
      det = detector.load_detector(fold_dir)
      fold_models.append((raw(det), det.params))
    expected = crossfit.out_of_fold_scores(fold_models, data.fit_waves, folds,
                                           scales=results[loss]["crossfit"]["scales"])
    bank = score_norm.load_local_normalizer(crossfit_run / loss / "score_normalizer.npz")
    np.testing.assert_allclose(bank.scores, expected, rtol=2e-4)  # scales stored to 4 digits
    codes, _ = score_norm.clip_frames(raw(main), main.params, data.fit_waves)
    np.testing.assert_allclose(bank.codes, codes, rtol=1e-5, atol=1e-5)  # the main model's
  pca = results["pca"]
  assert pca["score_normalization"]["bank"] == "crossfit" and pca["crossfit"]["folds"] == 2
  table = (crossfit_run / "results.txt").read_text().splitlines()
  assert [line.split() for line in table if line.startswith("knn bank")] == [
      ["knn", "bank", "crossfit", "crossfit", "crossfit"]]
  fold_pcas = [(reference.PCAScorer(reference.PCADetector(
      settings.model_preset().features, components=16).fit(
          [data.fit_waves[i] for i in crossfit.others(folds, k)])), None) for k in range(2)]
  bank = score_norm.load_local_normalizer(crossfit_run / "pca" / "score_normalizer.npz")
  np.testing.assert_allclose(bank.scores, crossfit.out_of_fold_scores(
      fold_pcas, data.fit_waves, folds, scales=pca["crossfit"]["scales"]), rtol=2e-4)


def test_a_crossfit_rerun_finds_the_fold_models_trained(crossfit_run, tiny_data, tmp_path,
                                                         capsys):
  workdir = _copy(crossfit_run, tmp_path)
  before = json.loads((workdir / "results.json").read_text())
  capsys.readouterr()
  toycar.run(_crossfit_settings(workdir, tiny_data))
  out = capsys.readouterr().out
  # 2 models + RE's 2 fold models, which serve BU's bank too
  assert "] training fcn" not in out and out.count("already trained") == 4
  assert "(trained before; fold models" in out and "(trained before; RE's fold models)" in out
  after = json.loads((workdir / "results.json").read_text())
  for loss in ("re", "bu", "pca"):
    assert after[loss]["auc"] == before[loss]["auc"]
    assert after[loss]["crossfit"] == before[loss]["crossfit"]  # train_seconds kept


def test_fold_models_of_another_schedule_name_the_flag(crossfit_run, tiny_data, tmp_path):
  """Fold models trained with the main model's steps per epoch (before
  --crossfit_schedule) are re-evaluated with --crossfit_schedule=full, those of
  the earlier default with scaled; a mismatch in any direction says so."""
  from bu_jax import checkpoint, runner  # pylint: disable=g-import-not-at-top
  workdir = _copy(crossfit_run, tmp_path)
  with pytest.raises(runner.SettingsMismatchError,
                     match=r"--steps_per_epoch: 1 in the checkpoint, 4 now.*fold model of "
                     r"--normalization_bank=crossfit.*--crossfit_schedule: short"):
    toycar.run(_crossfit_settings(workdir, tiny_data, crossfit_schedule="full"))
  with pytest.raises(runner.SettingsMismatchError,  # scaled: half of the main model's 4
                     match=r"--steps_per_epoch: 1 in the checkpoint, 2 now.*--crossfit_schedule"):
    toycar.run(_crossfit_settings(workdir, tiny_data, crossfit_schedule="scaled"))
  for k in range(2):  # the main models are untouched; the fold models train in full
    shutil.rmtree(workdir / "re" / "crossfit" / f"fold{k}")
  toycar.run(_crossfit_settings(workdir, tiny_data, crossfit_schedule="full"))
  assert checkpoint.committed_steps(str(workdir / "re" / "crossfit" / "fold1"))[-1] == 4
  assert checkpoint.committed_steps(str(workdir / "bu"))[-1] == 4


def test_bu_s_own_fold_models_on_request_and_re_s_for_bu_alone(crossfit_run, tiny_data,
                                                                tmp_path, capsys):
  """--crossfit_bu_folds=bu trains BU's own fold models (in bu/crossfit), whose bank
  differs from RE's fold models'; --loss=bu alone with the default trains RE's fold
  models for its bank, where a later RE run finds them."""
  from bu_jax import checkpoint, score_norm  # pylint: disable=g-import-not-at-top
  workdir = _copy(crossfit_run, tmp_path / "own")
  before = json.loads((workdir / "results.json").read_text())
  capsys.readouterr()
  after = toycar.run(_crossfit_settings(workdir, tiny_data, losses=("bu",),
                                        crossfit_bu_folds="bu"))
  assert "[bu fold 1/2] training fcn" in capsys.readouterr().out
  assert after["bu"]["crossfit"]["fold_models"] == "bu"
  assert after["bu"]["crossfit"]["train_seconds"] > 0
  for k in range(2):
    meta = checkpoint.read_metadata(str(workdir / "bu" / "crossfit" / f"fold{k}"))
    assert meta["train_config"]["loss"] == "bu"
  own = score_norm.load_local_normalizer(workdir / "bu" / "score_normalizer.npz")
  shared = score_norm.load_local_normalizer(crossfit_run / "bu" / "score_normalizer.npz")
  np.testing.assert_allclose(own.codes, shared.codes)  # the same main model's codes
  assert not np.allclose(own.scores, shared.scores)  # other fold models' scores
  assert after["bu"]["crossfit"]["scales"] != before["bu"]["crossfit"]["scales"]
  alone = tmp_path / "alone"
  toycar.run(_crossfit_settings(alone, tiny_data, losses=("bu",)))
  assert sorted(p.name for p in alone.iterdir() if p.is_dir()) == ["bu", "re"]
  assert not (alone / "bu" / "crossfit").exists()
  assert checkpoint.committed_steps(str(alone / "re" / "crossfit" / "fold0"))[-1] == 1
  capsys.readouterr()
  toycar.run(_crossfit_settings(alone, tiny_data, losses=("re",)))
  out = capsys.readouterr().out  # RE's main model trains; its fold models were trained
  assert "[re] training fcn" in out and "fold 1/2] training" not in out


def test_borrowed_fold_models_are_checked_before_any_training(crossfit_run, tiny_data,
                                                               tmp_path):
  """A BU run borrows RE's fold models for its bank: settings that shape them are
  refused before BU's main model trains; BU's own settings (sigma, lambda, eps)
  do not shape RE's models and are accepted."""
  workdir = _copy(crossfit_run, tmp_path)
  shutil.rmtree(workdir / "bu")
  with pytest.raises(toycar.SettingsMismatchError,
                     match=r"re/crossfit/fold0 holds a model \(step 1\) trained with other "
                           r"settings: --learning_rate: 0.001 in the checkpoint, 0.01 now"):
    toycar.run(_crossfit_settings(workdir, tiny_data, losses=("bu",), learning_rate=0.01))
  assert not (workdir / "bu").exists()  # nothing trained
  alone = dict(losses=("bu",), mixtures_per_step=1)  # as run() resolves it
  toycar.check_fold_models(_crossfit_settings(workdir, tiny_data, sigma=0.5, lam=3.0, eps=0.1,
                                              **alone))
  toycar.check_fold_models(  # BU's own fold models are not there yet: nothing to refuse
      _crossfit_settings(workdir, tiny_data, learning_rate=0.01, crossfit_bu_folds="bu",
                         **alone))


def test_crossfit_with_too_few_clips_is_refused_before_training(tiny_data, tmp_path):
  from bu_jax import data  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  with pytest.raises(data.DataError, match=r"--normalization_bank=crossfit \(or auto\): 3 training "
                     r"clip\(s\) for 2 folds; need at least 4"):
    toycar.run(_settings(workdir, tiny_data, heldout_fraction=0.5, score_normalization="knn",
                         normalization_neighbors=5, normalization_bank="crossfit"))
  assert not (workdir / "re" / "checkpoints").exists()


@pytest.mark.parametrize("bank", ["training", "heldout"])
def test_a_k_larger_than_the_bank_is_refused_before_training(tiny_data, tmp_path, bank):
  from bu_jax import data  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  with pytest.raises(data.DataError, match=r"--normalization_neighbors=1000000 exceeds the "
                     r"\d+ frames of the knn bank"):
    toycar.run(_settings(workdir, tiny_data, heldout_fraction=0.5, score_normalization="knn",
                         normalization_neighbors=10**6, normalization_bank=bank))
  assert not (workdir / "re" / "checkpoints").exists()


@pytest.mark.parametrize("bank", ["training", "heldout"])
def test_a_k_equal_to_the_bank_passes_the_check_and_one_more_does_not(tiny_data, bank):
  from bu_jax import data, score_norm  # pylint: disable=g-import-not-at-top
  settings = _settings("unused", tiny_data, heldout_fraction=0.5, score_normalization="knn",
                       normalization_neighbors=5, normalization_bank=bank)
  loaded = toycar.load_data(settings)
  config = settings.model_preset().features
  waves = loaded.heldout_waves if bank == "heldout" else loaded.fit_waves
  counts = [config.interior_count(len(w)) for w in waves]
  frames = min(sum(counts) - c for c in counts) if bank == "heldout" else sum(counts)
  assert score_norm.bank_frames([len(w) for w in waves], config,
                                leave_one_out=bank == "heldout") == frames
  toycar._check_bank(  # pylint: disable=protected-access
      dataclasses.replace(settings, normalization_neighbors=frames), loaded)
  with pytest.raises(data.DataError, match=f"--normalization_neighbors={frames + 1} exceeds"):
    toycar._check_bank(  # pylint: disable=protected-access
        dataclasses.replace(settings, normalization_neighbors=frames + 1), loaded)


def test_crossfit_is_refused_where_it_cannot_apply(tiny_data):
  from bu_jax import dcase_run  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="--normalization_bank=crossfit applies to "
                     "--score_normalization=knn, knn_z or auto, got none"):
    _settings("unused", tiny_data, normalization_bank="crossfit")
  with pytest.raises(ValueError, match=r"crossfit: .*so --heldout_fraction must be > 0"):
    dcase_run.Settings(workdir="unused", preset="demo", normalization_bank="crossfit",
                       score_normalization="knn")  # dcase: only with held-out clips


@pytest.mark.parametrize("overrides, named", [
    (dict(seed=1), "--seed: 0 in the checkpoint, 1 now"),
    (dict(learning_rate=1e-2, sigma=0.5), "--learning_rate: 0.001 in the checkpoint, 0.01 now"),
    (dict(epochs=2), "--epochs: 1 in the checkpoint, 2 now"),
    (dict(model="fcn40-large"), "--model: 'fcn40-small' in the checkpoint, 'fcn40-large' now"),
    (dict(standardize_input=False), "--standardize_input: True in the checkpoint, False now"),
    (dict(data_seed=3), "--data_seed: 0 in the checkpoint, 3 now"),
])
def test_resume_with_other_training_settings_is_refused(finished_run, tiny_data, tmp_path,
                                                       overrides, named):
  from bu_jax import checkpoint  # pylint: disable=g-import-not-at-top
  workdir = _copy(finished_run, tmp_path)
  before = (workdir / "results.json").read_text()
  with pytest.raises(toycar.SettingsMismatchError, match=r"holds a model .*trained with other"):
    toycar.run(_settings(workdir, tiny_data, **overrides))
  with pytest.raises(checkpoint.CheckpointError) as info:  # the CLI's "Error:" class
    toycar.run(_settings(workdir, tiny_data, **overrides))
  assert named in str(info.value) and "new --workdir" in str(info.value)
  assert (workdir / "results.json").read_text() == before  # nothing rewritten


def test_a_changed_training_folder_is_refused(finished_run, tiny_data, tmp_path):
  """The run stores which clips the training folder held (``data.clips_fingerprint``);
  re-evaluating after clips were added would calibrate phi on a held-out split that
  includes clips the model trained on, so it is refused with both counts."""
  from bu_jax import checkpoint, data  # pylint: disable=g-import-not-at-top
  settings = _settings(finished_run, tiny_data, mixtures_per_step=1)  # as run() resolves it
  paths = toycar.load_data(settings).dataset.train_paths
  stored = checkpoint.read_metadata(str(finished_run / "re"))["data"]["train_clips"]
  assert stored == data.clips_fingerprint(paths) and stored.startswith(f"{len(paths)} clips")
  toycar.check_resumable(settings, "re", train_clips=stored)  # unchanged: accepted
  grown = data.clips_fingerprint(list(paths) + ["/elsewhere/normal_id_00_99999999.wav"])
  with pytest.raises(toycar.SettingsMismatchError,
                     match=rf"the training folder's clips: '{stored}' in the checkpoint, "
                           rf"'{len(paths) + 1} clips, names sha1 [0-9a-f]{{12}}' now"):
    toycar.check_resumable(settings, "re", train_clips=grown)


def test_a_moved_data_folder_is_refused_with_the_way_to_reuse_the_model(finished_run, tiny_data,
                                                                      tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  moved = tmp_path / "moved"
  shutil.copytree(tiny_data, moved)
  workdir = _copy(finished_run, tmp_path)
  from bu_jax import checkpoint  # pylint: disable=g-import-not-at-top
  meta_files = list((workdir / "re" / "checkpoints").glob("*/metadata/metadata.json"))
  for path in meta_files:  # as if the data had been in a folder that no longer exists
    meta = json.loads(path.read_text())
    meta["data"]["data_dir"] = str(tmp_path / "gone")
    path.write_text(json.dumps(meta))
  assert checkpoint.read_metadata(str(workdir / "re"))["data"]["data_dir"].endswith("gone")
  with pytest.raises(toycar.SettingsMismatchError,
                     match=rf"{tmp_path / 'gone'} no longer exists: if the data moved, a "
                           "symbolic link from the stored path to the new one"):
    toycar.check_resumable(_settings(workdir, str(moved)), "re")


def test_clips_fingerprint_depends_on_the_names_only():
  from bu_jax import data  # pylint: disable=g-import-not-at-top
  a = data.clips_fingerprint(["/x/train/a.wav", "/x/train/b.wav"])
  assert a == data.clips_fingerprint(["/y/b.wav", "/y/a.wav"])  # folder and order do not count
  assert a != data.clips_fingerprint(["/x/train/a.wav", "/x/train/c.wav"])  # a renamed clip
  assert a.startswith("2 clips, names sha1 ")


def test_model_of_another_loss_is_refused(finished_run, tiny_data, tmp_path):
  """A model trained with RE, placed where the BU model belongs."""
  workdir = _copy(finished_run, tmp_path)
  os.rename(workdir / "re", workdir / "bu")
  with pytest.raises(toycar.SettingsMismatchError, match=r"--loss: 're' in the checkpoint"):
    toycar.check_resumable(_settings(workdir, tiny_data, losses=("bu",)), "bu")


def test_evaluation_settings_may_change(finished_run, tiny_data, tmp_path, capsys):
  from bu_jax import checkpoint  # pylint: disable=g-import-not-at-top
  workdir = _copy(finished_run, tmp_path)
  results = toycar.run(_settings(workdir, tiny_data, reduce="mean", steps_per_call=1,
                                 threshold_quantile=0.8))
  assert "already trained" in capsys.readouterr().out
  assert results["settings"]["reduce"] == "mean"
  meta = checkpoint.read_metadata(str(workdir / "re"))
  assert meta["reduce"] == "mean" and meta["threshold_quantile"] == 0.8
  assert meta["train_config"]["seed"] == 0


def test_knn_normalization_is_an_evaluation_setting(knn_run, tiny_data, tmp_path):
  """A finished run re-evaluated with knn (``knn_run``: no SettingsMismatchError) writes
  the bank and records it in results.json and the calibration; back to "none" removes it."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from bu_jax import checkpoint, score_norm  # pylint: disable=g-import-not-at-top
  results = json.loads((knn_run / "results.json").read_text())
  record = results["re"]["score_normalization"]
  assert record["kind"] == "knn" and record["neighbors"] == 5 and record["frames"] > 100
  assert results["settings"]["score_normalization"] == "knn"
  bank = score_norm.load_local_normalizer(knn_run / "re" / "score_normalizer.npz")
  assert bank.neighbors == 5 and bank.frames == record["frames"]
  meta = checkpoint.read_metadata(str(knn_run / "re"))
  assert meta["score_normalization"] == {"kind": "knn", "neighbors": 5,
                                         "file": "score_normalizer.npz",
                                         "fingerprint": bank.fingerprint}
  assert record["fingerprint"] == bank.fingerprint
  # Held-out normalized clip scores sit near 1 (the frames look like their neighbours').
  assert 0.5 < np.median(results["re"]["heldout_clip_scores"]) < 20
  workdir = _copy(knn_run, tmp_path)
  results = toycar.run(_settings(workdir, tiny_data))
  assert results["re"]["score_normalization"] == {"kind": "none"}
  assert not (workdir / "re" / "score_normalizer.npz").exists()
  assert "score_normalization" not in checkpoint.read_metadata(str(workdir / "re"))


@pytest.mark.parametrize("preset, overrides, expected", [
    ("cpu", {}, ("auto", 0)),  # the preset's: raw or knn_z, k chosen
    ("cpu", dict(score_normalization="knn"), ("knn", 10)),
    ("cpu", dict(score_normalization="none"), ("none", 10)),
    ("demo", {}, ("none", 10)),
    ("demo", dict(score_normalization="knn_z"), ("knn_z", 0)),
    ("demo", dict(score_normalization="auto", normalization_neighbors=7), ("auto", 7)),
])
def test_normalization_defaults(preset, overrides, expected):
  assert toycar.Settings(workdir="unused", preset=preset, **overrides).normalization() == expected


@pytest.mark.parametrize("preset, overrides, expected", [
    ("cpu", {}, "auto"),  # the preset's: the training or the cross-fitted bank, chosen
    ("cpu", dict(normalization_bank="training"), "training"),
    ("cpu", dict(score_normalization="knn"), "auto"),
    ("cpu", dict(score_normalization="none"), "training"),  # no bank to choose: no error
    ("demo", {}, "training"),
    ("paper", dict(score_normalization="knn_z", normalization_bank="crossfit"), "crossfit"),
])
def test_bank_defaults(preset, overrides, expected):
  assert toycar.Settings(workdir="unused", preset=preset, **overrides).bank() == expected


def test_a_bank_flag_without_normalization_is_refused():
  with pytest.raises(ValueError, match=r"--normalization_bank=auto applies to "
                     r"--score_normalization=knn, knn_z or auto, got none"):
    toycar.Settings(workdir="unused", preset="cpu", score_normalization="none",
                    normalization_bank="auto")


def test_cpu_preset_trains_bu_with_the_papers_band_width():
  config = toycar.Settings(workdir="unused", preset="cpu").train_config("bu")
  assert config.bandwidth == "fixed" and config.model_preset.standardize_input


def test_auto_normalization_needs_something_else_sounds(tiny_data, tmp_path):
  from bu_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  settings = _settings(tmp_path / "w", tiny_data, something_else_dir=None,
                       score_normalization="auto")
  with pytest.raises(data_lib.DataError, match="auto needs --something_else_dir"):
    toycar.load_data(settings)


def test_chosen_score_window_needs_something_else_sounds(tiny_data, tmp_path):
  from bu_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  settings = _settings(tmp_path / "w", tiny_data, something_else_dir=None, score_window=0)
  with pytest.raises(data_lib.DataError, match="--score_window=0 needs --something_else_dir"):
    toycar.load_data(settings)


def test_score_window_settings():
  assert toycar.Settings(workdir="unused", preset="cpu").clip_window() == 0  # chosen
  assert toycar.Settings(workdir="unused", preset="demo").clip_window() == 1  # eq. (11)
  assert toycar.Settings(workdir="unused", preset="paper").clip_window() == 1
  assert toycar.Settings(workdir="unused", preset="cpu", score_window=31).clip_window() == 31
  with pytest.raises(ValueError, match="--reduce=mean .* takes --score_window=1, got 0"):
    toycar.Settings(workdir="unused", preset="cpu", reduce="mean")
  toycar.Settings(workdir="unused", preset="cpu", reduce="mean", score_window=1)


def test_auto_normalization_keeps_the_higher_pseudo_anomaly_auc(finished_run, tiny_data,
                                                               tmp_path):
  """auto evaluates raw and knn_z scores (k chosen) and keeps the one whose pseudo-anomaly
  AUC is higher, raw on ties; the record names both AUCs, as separate runs measure them."""
  from bu_jax import checkpoint  # pylint: disable=g-import-not-at-top
  workdir = _copy(finished_run, tmp_path)
  measured = {kind: toycar.run(_settings(workdir, tiny_data, score_normalization=kind))["re"]
              for kind in ("none", "knn_z")}
  results = toycar.run(_settings(workdir, tiny_data, score_normalization="auto"))["re"]
  chosen_by = results["score_normalization"]["chosen_by"]
  assert chosen_by == {"rule": "pseudo_anomaly_auc", **{
      k: round(m["pseudo_anomaly_auc"], 4) for k, m in measured.items()}}
  best = ("knn_z" if measured["knn_z"]["pseudo_anomaly_auc"] >
          measured["none"]["pseudo_anomaly_auc"] else "none")
  assert results["score_normalization"]["kind"] == best
  assert results["auc"] == measured[best]["auc"]
  assert results["pseudo_anomaly_auc"] == measured[best]["pseudo_anomaly_auc"]
  assert (workdir / "re" / "score_normalizer.npz").exists() == (best == "knn_z")
  by_anr = results["pseudo_anomaly_auc_by_anr"]  # one AUC per ANR of the run, and the mean
  assert set(by_anr) == {"mean", "-10dB", "-15dB", "-20dB"}
  assert by_anr["mean"] == pytest.approx(sum(v for k, v in by_anr.items() if k != "mean") / 3)
  meta = checkpoint.read_metadata(str(workdir / "re"))
  assert meta.get("score_normalization", {"kind": "none"})["kind"] == best


@pytest.mark.parametrize("winner", ["none", "knn_z"])
def test_auto_normalization_stores_what_it_chose(winner, tiny_data, tmp_path, monkeypatch):
  """Whichever candidate wins, its bank (or none) is what the run leaves for
  experiments.score; a tie keeps raw scores."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  settings = _settings(tmp_path / "w", tiny_data, losses=("re", "snp"), reference_components=3,
                       score_normalization="auto")
  data = toycar.load_data(settings)
  auc = {"none": 0.8, "knn_z": 0.9 if winner == "knn_z" else 0.8}

  def check(scorer, params, held, *, reduce, windows, heldout_scorers=None):  # raw: no bank
    del params, held, reduce
    assert heldout_scorers is None  # the training clips' bank: one scorer for every clip
    assert windows == (1,)  # the default window: eq. (11)
    return {1: (np.ones(2), {"mean": auc["knn_z" if hasattr(scorer, "normalizer") else "none"]},
                {})}

  monkeypatch.setattr(heldout, "check", check)
  config = settings.train_config("re").feature_config
  results, _ = toycar.evaluate_reference(settings, config, data)
  assert results["score_normalization"]["kind"] == winner
  assert results["score_normalization"]["chosen_by"] == {"rule": "pseudo_anomaly_auc", **auc}
  assert results["pseudo_anomaly_auc"] == auc[winner]
  assert (tmp_path / "w" / "pca" / "score_normalizer.npz").exists() == (winner == "knn_z")
  assert results["clip_score"] == {"reduce_over_windows": "max", "window_frames": 1,
                                   "window_s": 0.016}


def test_a_longer_window_within_one_se_is_kept_and_shown(tiny_data, tmp_path, monkeypatch):
  """--score_window=0: 0.256-s windows lead 1-s windows by less than one pair of clips
  (the SE is 0: no pseudo-anomaly scores to leave out), so the 1-s windows are kept;
  results.json records the margins and results.txt the best window and its lead."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  settings = _settings(tmp_path / "w", tiny_data, losses=("re",), reference_components=0,
                       score_normalization="none", score_window=0)
  floor = []

  def check(scorer, params, held, *, reduce, windows, heldout_scorers=None):
    del scorer, params, reduce, heldout_scorers
    floor[:] = [heldout.pair_resolution(held)]
    aucs = {16: 0.9, 62: 0.9 - 0.5 * floor[0]}
    return {w: (np.full(2, float(w)), {"mean": aucs.get(w, 0.5)}, {}) for w in windows}

  monkeypatch.setattr(heldout, "check", check)
  results = toycar.run(settings)["re"]
  window = results["clip_score"]
  assert window["window_frames"] == 62
  assert window["chosen_by"]["needs_margin"] == {
      str(w): round(floor[0], 6) for w in (1, 31, 62, 125)}
  lead = round(0.9 - round(0.9 - 0.5 * floor[0], 4), 4)
  assert heldout.window_lead(window) == (0.256, lead)
  rows = [line.split()[-2:] for line in (tmp_path / "w" / "results.txt").read_text().splitlines()
          if line.strip().startswith("best window, lead")]
  assert rows == [["0.256s", f"{lead:+.4f}"]]


@pytest.mark.parametrize("best", [(("none", 1)), ("knn_z", 62), ("none", 125)])
def test_score_window_zero_chooses_normalization_and_window_together(
    best, tiny_data, tmp_path, monkeypatch):
  """--score_window=0 with auto: the (normalization, window) pair of the highest
  pseudo-anomaly AUC wins; the window goes into results.json, the clip scores of
  the test clips and the stored calibration, which experiments.score applies."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from bu_jax import detector  # pylint: disable=g-import-not-at-top
  from bu_jax import evaluate  # pylint: disable=g-import-not-at-top
  settings = _settings(tmp_path / "w", tiny_data, losses=("re",), reference_components=0,
                       score_normalization="auto", score_window=0)
  candidates = evaluate.window_candidates(settings.train_config("re").feature_config)
  assert candidates == (1, 16, 31, 62, 125)  # 1 frame, 0.25, 0.5, 1, 2 s at a 16-ms hop

  def check(scorer, params, held, *, reduce, windows, heldout_scorers=None):
    del params, held, reduce
    assert windows == candidates
    kind = "knn_z" if hasattr(scorer, "normalizer") else "none"
    return {w: (np.full(2, float(w)), {"mean": 0.9 if (kind, w) == best else 0.5}, {})
            for w in windows}

  monkeypatch.setattr(heldout, "check", check)
  results = toycar.run(settings)["re"]
  assert results["score_normalization"]["kind"] == best[0]
  assert results["score_normalization"]["chosen_by"] == {
      "rule": "pseudo_anomaly_auc", "none": 0.9 if best[0] == "none" else 0.5,
      "knn_z": 0.9 if best[0] == "knn_z" else 0.5}
  window = results["clip_score"]
  assert window["window_frames"] == best[1]
  assert window["window_s"] == pytest.approx(best[1] * 0.016)
  margins = window["chosen_by"].pop("needs_margin")
  assert window["chosen_by"] == {"rule": heldout.WINDOW_RULE,
                                 **{str(w): 0.9 if w == best[1] else 0.5 for w in candidates}}
  assert set(margins) == {str(w) for w in candidates if w != best[1]}  # no pseudo scores: SE 0,
  assert len(set(margins.values())) == 1 and 0 < min(margins.values()) < 0.4  # one pair's worth
  assert results["heldout_clip_scores"] == [float(best[1])] * 2
  loaded = detector.load_detector(str(tmp_path / "w"), loss="re")
  assert loaded.window == best[1]
  assert (loaded.normalization is None) == (best[0] == "none")
  # The stored calibration reproduces the run's test clip scores.
  test = toycar.load_data(settings).dataset.test
  condition = [c for c in test if c.condition == test[0].condition]
  path = tmp_path / "w" / "re" / f"anomaly_score_{test[0].condition}.csv"
  rows = [line.split(",") for line in path.read_text().splitlines()]
  assert len(rows) == len(condition)  # one row per clip, in the clips' order
  for clip, row in list(zip(condition, rows))[:2]:
    assert loaded.score(clip.wave).clip_score == pytest.approx(float(row[1]), rel=1e-5)


def test_heldout_fraction_is_a_training_flag(finished_run, tiny_data, tmp_path):
  """More held-out clips for phi and the pseudo-anomalies means less training data: a
  finished model refuses another fraction, naming the flag with both values."""
  workdir = _copy(finished_run, tmp_path)
  with pytest.raises(toycar.SettingsMismatchError) as info:
    toycar.check_resumable(_settings(workdir, tiny_data, heldout_fraction=0.3), "re")
  assert "--heldout_fraction" in str(info.value) and "0.3" in str(info.value)
  data = toycar.load_data(_settings(tmp_path / "new", tiny_data, heldout_fraction=0.3))
  total = len(data.fit_waves) + len(data.heldout_waves)
  assert len(data.heldout_waves) == max(1, round(0.3 * total))


def test_mismatch_message_lists_the_normalization_flags(finished_run, tiny_data, tmp_path):
  workdir = _copy(finished_run, tmp_path)
  with pytest.raises(toycar.SettingsMismatchError) as info:
    toycar.check_resumable(_settings(workdir, tiny_data, seed=1), "re")
  assert ("--score_normalization, --normalization_neighbors, --normalization_bank, "
          "--score_window may differ"
          in str(info.value))


def test_pca_reference_train_seconds_leave_out_its_evaluation(tiny_data, tmp_path, monkeypatch):
  """The PCA's train_seconds time its fit (as an AE's its training, and as experiments.dcase
  records it), not the evaluation that follows."""
  import time  # pylint: disable=g-import-not-at-top
  settings = _settings(tmp_path / "w", tiny_data, losses=("re", "snp"), reference_components=3)
  data = toycar.load_data(settings)
  evaluate = toycar._evaluate_scorer  # pylint: disable=protected-access

  def slow_evaluation(*args, **kwargs):
    time.sleep(5.0)  # far above the fit's own time, even on a loaded 2-core machine
    return evaluate(*args, **kwargs)

  monkeypatch.setattr(toycar, "_evaluate_scorer", slow_evaluation)
  results, _ = toycar.evaluate_reference(settings, settings.train_config("re").feature_config,
                                         data)
  assert 0 <= results["train_seconds"] < 5.0


@pytest.mark.parametrize("kind, neighbors", [("knn", 3), ("knn_z", 3), ("knn_z", 0)])
def test_pca_reference_with_knn_normalization(kind, neighbors, tiny_data, tmp_path):
  """The PCA reference: the bank of its coefficients in pca/, its test scores normalized."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from bu_jax import reference, score_norm  # pylint: disable=g-import-not-at-top
  settings = _settings(tmp_path / "w", tiny_data, losses=("re", "snp"), reference_components=4,
                       score_normalization=kind, normalization_neighbors=neighbors)
  data = toycar.load_data(settings)
  config = settings.train_config("re").feature_config
  results, material = toycar.evaluate_reference(settings, config, data)
  record = results["score_normalization"]
  assert record["kind"] == kind
  bank = score_norm.load_local_normalizer(tmp_path / "w" / "pca" / "score_normalizer.npz")
  assert bank.code_dim == 4 and bank.kind == kind and bank.neighbors == record["neighbors"]
  if neighbors:
    assert bank.neighbors == neighbors and "neighbors_heldout_log_density" not in record
  else:  # chosen on the held-out clips: the k of the highest mean log density
    density = record["neighbors_heldout_log_density"]
    assert max(density, key=density.get) == str(bank.neighbors)
  pca = reference.PCADetector(config, components=4).fit(data.fit_waves)
  clip = data.dataset.test[0]
  scores, codes = pca.frame_scores(clip.wave, with_codes=True)
  np.testing.assert_allclose(material["frames"][0], bank(codes, scores), rtol=1e-5)


# ------------------------------------------------------------------ one decision rule (eq. 4)


@pytest.mark.parametrize("run", ["finished_run", "knn_run", "heldout_bank_run", "crossfit_run"])
def test_results_and_experiments_score_decide_alike(run, tiny_data, tmp_path, request):
  """The toy-car run's decision CSVs (results.json's phi) and experiments.score's job,
  on the same test clips written as WAV files, give the same clip scores and decisions
  (also on knn-normalized scores: the bank stored with the model is applied)."""
  import csv  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import soundfile  # pylint: disable=g-import-not-at-top
  from bu_jax import detector, evaluate  # pylint: disable=g-import-not-at-top
  finished_run = request.getfixturevalue(run)
  settings = _settings(finished_run, tiny_data)
  test = toycar.load_data(settings).dataset.test
  clips_dir = tmp_path / "clips"
  clips_dir.mkdir()
  for i, clip in enumerate(test):
    soundfile.write(clips_dir / f"{i:03d}.wav", np.asarray(clip.wave, np.float32), 16000,
                    subtype="FLOAT")
  report = detector.run(detector.ScoreSettings(workdir=str(finished_run), paths=[str(clips_dir)],
                                           loss="re", out=str(tmp_path / "scores.csv")))
  assert not report.failures
  assert (report.detector.normalization is not None) == (run != "finished_run")
  rows = detector.read_csv(tmp_path / "scores.csv")
  scored = {os.path.basename(r["path"]): r for r in rows}
  results = json.loads((finished_run / "results.json").read_text())
  assert float(rows[0]["threshold"]) == pytest.approx(results["re"]["threshold"])
  for cond in sorted({c.condition for c in test}):
    index = [i for i, c in enumerate(test) if c.condition == cond]
    decisions = list(csv.reader(open(finished_run / "re" / f"decision_result_{cond}.csv")))
    stored = list(csv.reader(open(finished_run / "re" / f"anomaly_score_{cond}.csv")))
    assert len(decisions) == len(index)
    for i, (_, decision), (_, score) in zip(index, decisions, stored):
      row = scored[f"{i:03d}.wav"]
      assert float(row["clip_score"]) == pytest.approx(float(score), rel=1e-4)
      assert (row["decision"] == "anomalous") == (decision == "1")
      assert evaluate.decide(float(score), results["re"]["threshold"]) == (decision == "1")


def test_decision_rule_and_interior_clip_score():
  from bu_jax import evaluate, features  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  assert evaluate.decide(1.0, 1.0) is True and evaluate.decide(0.999, 1.0) is False
  np.testing.assert_array_equal(evaluate.decide([0.5, 1.0, 2.0], 1.0), [False, True, True])
  config = features.FeatureConfig(n_mels=40, context=5)
  n = 16000
  frames = np.zeros(config.num_frames(n))
  inner = config.interior(n)
  frames[: inner.start] = 100.0  # edge frames (zero padding) never count
  frames[inner.start + 3] = 2.0
  assert evaluate.interior_clip_score(frames, num_samples=n, feature_config=config) == 2.0
  with pytest.raises(ValueError, match="frames"):
    evaluate.interior_clip_score(frames[:-1], num_samples=n, feature_config=config)


# ------------------------------------------------------------------ unusable run directories


def test_workdir_that_is_a_file_is_an_error(tmp_path, tiny_data):
  from bu_jax import data  # pylint: disable=g-import-not-at-top
  path = tmp_path / "afile"
  path.write_text("not a directory")
  with pytest.raises(data.DataError, match=r"--workdir=.*afile: is a file"):
    toycar.run(_settings(path, tiny_data))
  assert path.read_text() == "not a directory"


def test_half_written_metrics_line_does_not_stop_a_resume(finished_run, tiny_data, tmp_path):
  workdir = _copy(finished_run, tmp_path)
  metrics = workdir / "re" / "metrics.jsonl"
  metrics.write_text(metrics.read_text() + '{"step": 2, "loss": 0.')
  (workdir / "results.json").write_text("{ this is not JSON")
  results = toycar.run(_settings(workdir, tiny_data))
  assert [json.loads(l)["step"] for l in metrics.read_text().splitlines()] == [0, 1]
  assert (workdir / "results.json.damaged").read_text() == "{ this is not JSON"
  assert json.loads((workdir / "results.json").read_text())["re"]["auc"] == results["re"]["auc"]


def test_results_with_a_loss_entry_that_is_not_an_object_are_moved_aside(tmp_path):
  path = tmp_path / "results.json"
  path.write_text('{"re": 3, "bu": {"auc": {"mean": 0.9}}}')
  assert toycar._read_results(str(path)) == {}  # pylint: disable=protected-access
  assert (tmp_path / "results.json.damaged").read_text() == '{"re": 3, "bu": {"auc": {"mean": 0.9}}}'
  path.write_text('{"bu": {"auc": {"mean": 0.9}}, "settings": 3}')  # other keys are not read
  assert toycar._read_results(str(path)) == {"bu": {"auc": {"mean": 0.9}}}  # pylint: disable=protected-access


def test_score_output_that_cannot_be_written_fails_before_scoring(finished_run, tmp_path,
                                                                  monkeypatch):
  scored = []
  monkeypatch.setattr(detector, "iter_scores", lambda *a, **k: scored.append(1) or iter(()))
  blocker = tmp_path / "file"
  blocker.write_text("x")
  for out, message in ((blocker / "scores.csv", r"cannot write the scores file .*file/scores"),
                       (tmp_path, r"it is a directory"),
                       (f"{tmp_path}/results/", r"results/: it is a directory")):  # not yet made
    with pytest.raises(ValueError, match=message):
      detector.run(detector.ScoreSettings(workdir=str(finished_run), paths=[str(tmp_path)],
                                      loss="re", out=str(out)))
  assert not scored


def test_read_only_workdir_is_one_error_before_any_work(finished_run, tiny_data, tmp_path,
                                                        monkeypatch):
  """Where files cannot be written (root ignores permissions, so the probe fails here as
  on a read-only mount), even a finished run stops before loading, naming --workdir."""
  import errno, tempfile  # pylint: disable=g-import-not-at-top,multiple-imports
  from bu_jax import cli  # pylint: disable=g-import-not-at-top
  workdir = _copy(finished_run, tmp_path)
  before = (workdir / "results.json").read_text()

  def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(workdir))
  monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
  monkeypatch.setattr(toycar, "load_data", lambda *a: pytest.fail("loaded data"))
  with pytest.raises(cli.WorkdirError, match=r"--workdir=.*/run: cannot be written "
                     r"\(Read-only file system\).*copy the folder"):
    toycar.run(_settings(workdir, tiny_data))
  assert (workdir / "results.json").read_text() == before


def test_full_disk_is_one_error_naming_the_file_and_loses_nothing(finished_run, tiny_data,
                                                                  tmp_path, monkeypatch, capsys):
  import errno  # pylint: disable=g-import-not-at-top
  from bu_jax import cli  # pylint: disable=g-import-not-at-top
  workdir = _copy(finished_run, tmp_path)
  before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}

  def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(os, "fsync", full)  # every atomic write fails at its fsync
  with pytest.raises(SystemExit) as info:
    cli.exit_on_errors(lambda: toycar.run(_settings(workdir, tiny_data)), errors=(OSError,))
  assert info.value.code == 1
  line = capsys.readouterr().err.strip()
  assert line.startswith(f"Error: {workdir}/") and "No space left on device" in line
  assert "run the same command again" in line and "\n" not in line
  after = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
  assert after == before  # no temporary file left, nothing half-written


_INTERRUPTED = """
import os, signal, sys, time
from absl import app
from experiments import {entry} as entry
from bu_jax import {module} as module
def stop(*args, **kwargs):
  if {sigterm}:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
  raise KeyboardInterrupt
setattr(module, {where!r}, stop)
sys.argv = [{entry!r}] + sys.argv[1:]
app.run(entry.main)
"""


def _interrupted(entry, module, where, sigterm, *args):
  """Runs ``python -m experiments.<entry> args`` with ``bu_jax.<module>.<where>`` replaced
  by a Ctrl-C (or a SIGTERM)."""
  code = _INTERRUPTED.format(entry=entry, module=module, where=where, sigterm=sigterm)
  return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300)


@pytest.mark.parametrize("where, sigterm, by", [
    ("load_data", False, "SIGINT"),        # Ctrl-C while loading
    ("evaluate_one", False, "SIGINT"),     # Ctrl-C while evaluating
    ("load_data", True, "SIGTERM"),        # SIGTERM outside training
])
def test_interrupt_outside_training_is_one_line_and_130(finished_run, tiny_data, tmp_path,
                                                        where, sigterm, by):
  workdir = _copy(finished_run, tmp_path)
  proc = _interrupted(
      "toycar", "toycar", where, sigterm, "--preset=demo", "--loss=re", f"--workdir={workdir}",
      f"--data_dir={tiny_data}", "--epochs=1", "--steps_per_epoch=2", "--decay_start_epoch=0",
      "--segments_per_mixture=2", "--steps_per_call=2", "--checkpoint_every=2",
      "--num_devices=1")
  assert proc.returncode == 130, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(f"Interrupted: stopped by {by}")


@pytest.mark.parametrize("entry, module, where, sigterm, by", [
    ("score", "detector", "load_detector", False, "SIGINT"),   # while loading the model
    ("score", "detector", "iter_scores", True, "SIGTERM"),     # while scoring
    ("dcase", "dcase_run", "_resolve_data", False, "SIGINT"),  # while loading the data
    ("dcase", "dcase_run", "_resolve_data", True, "SIGTERM"),
])
def test_interrupted_score_and_dcase_are_one_line_and_130(finished_run, tmp_path, entry,
                                                          module, where, sigterm, by):
  args = ([f"--workdir={finished_run}", "--loss=re", f"--out={tmp_path / 's.csv'}",
           str(tmp_path)] if entry == "score" else
          [f"--workdir={tmp_path / 'w'}", "--loss=re", "--preset=demo"])
  proc = _interrupted(entry, module, where, sigterm, *args)
  assert proc.returncode == 130, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(f"Interrupted: stopped by {by}")
  if where == "iter_scores":  # what was done before the interrupt is kept: here one failure
    assert f"the 1 of 1 recording(s) done before it are in {tmp_path / 's.csv'}" in proc.stderr
    assert [r["decision"] for r in detector.read_csv(tmp_path / "s.csv")] == ["failed"]
  else:
    assert not (tmp_path / "s.csv").exists()


def test_results_hold_one_evaluation_across_runs(finished_run, tiny_data, tmp_path, caplog,
                                                  monkeypatch):
  """results.json (and results.txt, written from it) holds only entries made with its own
  settings: another loss's entry from a run with other settings is dropped, with a warning;
  an entry is dropped before its files are rewritten, so a run stopped there leaves none;
  a model found trained takes its training time from its own folder."""
  from bu_jax import runner  # pylint: disable=g-import-not-at-top
  workdir = _copy(finished_run, tmp_path)
  path = workdir / "results.json"
  stored = json.loads(path.read_text())
  stored["re"]["train_seconds"] = 12345.0  # as if another model's (moved away) time
  path.write_text(json.dumps(stored))
  results = toycar.run(_settings(workdir, tiny_data))
  assert results["re"]["train_seconds"] == runner.train_seconds(str(workdir / "re")) > 0
  assert results["re"]["train_seconds"] != 12345.0

  caplog.clear()
  toycar.run(_settings(workdir, tiny_data, losses=("snp",), reduce="mean"))
  assert sorted(k for k in json.loads(path.read_text()) if k in ("re", "snp", "bu")) == ["snp"]
  assert any("dropped the entries of RE" in r.getMessage() and "reduce" in r.getMessage()
             and "--loss=re" in r.getMessage() for r in caplog.records)
  assert (workdir / "re" / "checkpoints").is_dir()  # the model stays
  assert "RE AUC" not in (workdir / "results.txt").read_text()

  both = toycar.run(_settings(workdir, tiny_data, losses=("re",), reduce="mean"))
  assert "snp" in both and "re" in both  # same settings: SNP's entry kept
  assert "RE AUC" in (workdir / "results.txt").read_text()
  assert "SNP AUC" in (workdir / "results.txt").read_text()
  caplog.clear()  # a setting RE does not read (BU's sigma): RE's entry stands
  toycar.run(_settings(workdir, tiny_data, losses=("snp",), reduce="mean", sigma=0.5))
  assert json.loads(path.read_text())["re"]["auc"] == both["re"]["auc"]
  assert not any("dropped" in r.getMessage() for r in caplog.records)

  def stopped(*args, **kwargs):
    raise KeyboardInterrupt  # stopped after the files, before the entry is written
  monkeypatch.setattr(toycar, "_store_threshold", stopped)
  with pytest.raises(KeyboardInterrupt):
    toycar.run(_settings(workdir, tiny_data, losses=("snp",), reduce="mean"))
  stored = json.loads(path.read_text())
  assert "snp" not in stored and stored["re"]["auc"] == both["re"]["auc"]
  text = (workdir / "results.txt").read_text()
  assert "RE AUC" in text and "SNP AUC" not in text
