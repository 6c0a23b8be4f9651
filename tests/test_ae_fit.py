"""``bu_jax.fit_check`` and ``benchmarks.ae_fit``: the AE's reconstruction of normal
frames against PCAs of its size."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import ae_fit
from bu_jax import detector as detector_lib
from bu_jax import fit_check
from bu_jax import models
from bu_jax import synthetic
from bu_jax import toycar


def test_pcas_and_aes_are_measured_against_the_training_mean():
  rng = np.random.default_rng(0)
  basis = rng.normal(size=(3, 12))
  fit = 5.0 + rng.normal(size=(400, 3)) @ basis  # rank 3 around a mean of 5
  held = 5.0 + rng.normal(size=(100, 3)) @ basis
  check = fit_check.FitCheck.from_frames(fit, held)
  model = models.FCNAutoencoder(dim=12, hidden_layers=1, units=8, bottleneck=4)
  params = model.init(jax.random.key(0), jnp.zeros((1, 12)))["params"]
  got = check.pca(model, params, [1, 3])
  assert got["3"] == pytest.approx(1.0, abs=1e-4)  # data of rank 3: exact
  assert 0.0 < got["1"] < got["3"]
  record = check.ae(model, params)  # an untrained AE: worse than the training mean
  assert record["error"]["baseline"] == pytest.approx(
      fit_check.mean_error(held, fit.mean(axis=0)[None]), rel=1e-5)
  assert record["explained_heldout"] < 0.0 and record["code_units"] == 4
  assert fit_check.explained(1.0, 4.0) == 0.75 and np.isnan(fit_check.explained(1.0, 0.0))


def test_dead_code_units_are_the_code_units_that_are_zero_on_every_fit_frame():
  rng = np.random.default_rng(2)
  fit, held = rng.normal(size=(300, 12)), rng.normal(size=(50, 12))
  model = models.FCNAutoencoder(dim=12, hidden_layers=1, units=8, bottleneck=4)
  params = model.init(jax.random.key(1), jnp.zeros((1, 12)))["params"]
  enc = params["enc_2"]
  # Units 0 and 1 can never fire (ReLU of a very negative pre-activation); 2 and 3 always do.
  bias = jnp.asarray([-1e4, -1e4, 1e4, 1e4], enc["bias"].dtype)
  params = {**params, "enc_2": {**enc, "bias": bias}}
  record = fit_check.FitCheck.from_frames(fit, held).ae(model, params)
  assert record["code_units"] == 4 and record["dead_code_units"] == 2
  bias = jnp.asarray([-1e4, 1e4, 1e4, 1e4], enc["bias"].dtype)
  params = {**params, "enc_2": {**enc, "bias": bias}}
  assert fit_check.FitCheck.from_frames(fit, held).ae(model, params)["dead_code_units"] == 1


def test_fit_frames_are_bounded_clip_by_clip():
  config = models.preset("fcn40-small").features
  rng = np.random.default_rng(1)
  waves = [rng.normal(scale=0.1, size=16000).astype(np.float32) for _ in range(3)]
  every = fit_check.interior_frames(waves, config)
  assert len(every) == sum(len(range(config.num_frames(16000))[config.interior(16000)])
                           for _ in waves)
  fewer = fit_check.interior_frames(waves, config, max_frames=len(every) // 4)
  assert len(every) // 8 <= len(fewer) <= len(every) // 4
  np.testing.assert_array_equal(fewer[0], every[0])  # every k-th frame, from each clip's first
  with pytest.raises(ValueError, match="no clips"):
    fit_check.interior_frames([], config)


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
  assert [r["loss"] for r in lines] == ["re"]
  (ae,) = lines
  assert ae["standardized_input"]  # the demo preset's AE
  assert 0 <= ae["dead_code_units"] <= ae["code_units"] == 40
  assert ae["explained_heldout"] == pytest.approx(
      1.0 - ae["error"]["heldout"] / ae["error"]["baseline"], abs=1e-3)
  pca = ae["pca_explained_heldout"]
  assert set(pca) == {"2", "4"} and 0.0 < pca["2"] <= pca["4"] < 1.0
  # The held-out error is the model's own frame score (eq. 5) on the interior frames of the
  # run's held-out clips; the run stored the same record, with the PCA of its code size.
  detector = detector_lib.load_detector(workdir, loss="re")
  held = toycar.load_data(ae_fit.stored_settings(workdir)).heldout_waves
  config = detector.feature_config
  scores = np.concatenate([detector.frame_scores(w)[config.interior(len(w))] for w in held])
  assert ae["error"]["heldout"] == pytest.approx(float(scores.mean()), rel=1e-3)
  stored = json.loads(open(os.path.join(workdir, "results.json")).read())["re"]["fit"]
  assert stored["explained_heldout"] == pytest.approx(ae["explained_heldout"], abs=1e-4)
  assert stored["pca_components"] == 40 and 0.0 < stored["pca_explained_heldout"] < 1.0


def test_a_folder_without_results_is_refused(tmp_path):
  with pytest.raises(SystemExit, match="no results.json"):
    ae_fit.main([f"--workdir={tmp_path}"])
  assert not os.listdir(tmp_path)
