"""``benchmarks.ae_fit``: the AE's reconstruction of normal frames against PCAs of its size."""

import json
import os

import numpy as np
import pytest

from benchmarks import ae_fit
from bu_jax import detector as detector_lib
from bu_jax import synthetic
from bu_jax import toycar


def test_pca_fit_explains_data_of_its_own_rank():
  rng = np.random.default_rng(0)
  basis = rng.normal(size=(3, 12))
  fit = 5.0 + rng.normal(size=(400, 3)) @ basis  # rank 3 around a mean of 5
  held = 5.0 + rng.normal(size=(100, 3)) @ basis
  got = ae_fit.pca_fit(fit, held, [1, 3])
  assert got["3"]["explained_heldout"] == pytest.approx(1.0, abs=1e-4)
  assert 0.0 < got["1"]["explained_heldout"] < got["3"]["explained_heldout"]
  # the baseline is the error of predicting the training mean
  assert ae_fit.mean_error(held, fit.mean(axis=0)[None]) > got["1"]["heldout"] > 0.0


@pytest.mark.slow
def test_reports_each_model_in_its_own_input_space(tmp_path, capsys):
  data = str(tmp_path / "set")
  synthetic.generate(data, seed=2, num_train=6, num_test=4, clip_seconds=3.0, num_noise=1,
                     noise_seconds=4.0, num_anomaly=2, num_something_else=3,
                     rare_seconds=1.0)
  workdir = str(tmp_path / "run")
  toycar.run(toycar.Settings(
      workdir=workdir, losses=("re",), preset="demo", data_dir=data, epochs=1,
      steps_per_epoch=2, decay_start_epoch=0, segments_per_mixture=2, steps_per_call=2,
      progress=False, num_devices=1))
  capsys.readouterr()
  ae_fit.main([f"--workdir={workdir}", "--components=2,4"])
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
           if line.startswith("{")]
  assert [r["loss"] for r in lines] == ["re", "pca"]
  ae, pca = lines
  assert ae["standardized_input"] and pca["standardized_input"]  # the demo preset's AE
  assert 0 <= ae["dead_code_units"] <= ae["code_units"] == 40
  assert ae["explained_heldout"] == pytest.approx(
      1.0 - ae["error"]["heldout"] / ae["error"]["baseline"], abs=1e-3)
  assert set(pca["pca"]) == {"2", "4"}
  assert pca["pca"]["4"]["explained_heldout"] >= pca["pca"]["2"]["explained_heldout"]
  # The held-out error is the model's own frame score (eq. 5) on the interior frames of the
  # run's held-out clips.
  detector = detector_lib.load_detector(workdir, loss="re")
  held = toycar.load_data(ae_fit.stored_settings(workdir)).heldout_waves
  config = detector.feature_config
  scores = np.concatenate([detector.frame_scores(w)[config.interior(len(w))] for w in held])
  assert ae["error"]["heldout"] == pytest.approx(float(scores.mean()), rel=1e-3)


def test_a_folder_without_results_is_refused(tmp_path):
  with pytest.raises(SystemExit, match="no results.json"):
    ae_fit.main([f"--workdir={tmp_path}"])
  assert not os.listdir(tmp_path)
