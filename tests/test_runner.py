"""bu_jax.runner: one tiny RE model stopped, resumed, found finished; the settings check."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from bu_jax import artifact, features, models, parallel, runner, train

TINY = models.ModelPreset("tiny", features.FeatureConfig(n_mels=8, context=1),
                          hidden_layers=1, units=16, bottleneck=4)
SEGMENT = 2048  # samples


def _config(**overrides):
  kwargs = dict(loss="re", model=TINY, segment_seconds=SEGMENT / 16000, segments_per_mixture=2,
                mixtures_per_step=1, epochs=1, steps_per_epoch=3, decay_start_epoch=0,
                steps_per_call=1)
  kwargs.update(overrides)
  return train.TrainConfig(**kwargs)


class _StopAtOnce:
  """``signals.GracefulStop`` with a SIGTERM already received."""
  requested = True
  signal_name = "SIGTERM"

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    pass


def test_stop_resume_and_finished(tmp_path, monkeypatch, capsys, caplog):
  config = _config()
  mesh = parallel.data_mesh(jax.devices()[:1])
  segments = np.random.default_rng(0).standard_normal((4, SEGMENT)).astype(np.float32)
  corpus = train.place_corpus(segments, mesh=mesh, config=config)
  model_dir = str(tmp_path / "model")
  metadata = artifact.ModelMetadata.for_training(config, tag="t")
  kwargs = dict(mesh=mesh, model_dir=model_dir, metadata=metadata, checkpoint_every=100,
                tag="t", progress=False)

  with monkeypatch.context() as patch:
    patch.setattr(runner.signals, "GracefulStop", _StopAtOnce)
    with pytest.raises(runner.Interrupted, match=r"^stopped by SIGTERM after step 1; the "
                       r"checkpoint is in .*model/checkpoints: run the same command again"):
      runner.train_or_resume(config, corpus, **kwargs)
  assert artifact.latest_step(model_dir) == 1  # saved on the stop, not every 100 steps
  assert "[t] training tiny for 3 steps (1 epochs x 3) from step 0" in capsys.readouterr().out

  # What a run killed after its checkpoint leaves: records of steps it did not save.
  with open(tmp_path / "model" / "metrics.jsonl", "a") as f:
    f.write('{"step": 1, "loss": -1.0}\n{"step": 2, "loss": -1.0}\n')
  state, trained = runner.train_or_resume(config, corpus, **kwargs)
  assert "[t] resuming from the checkpoint of step 1 in" in capsys.readouterr().out
  assert trained == 2 and int(state.step) == 3 and artifact.latest_step(model_dir) == 3
  records = [json.loads(line) for line in open(tmp_path / "model" / "metrics.jsonl")]
  assert [r["step"] for r in records] == [0, 1, 2]  # each once: the resumed run's
  assert all(r["loss"] != -1.0 for r in records)
  assert artifact.read_metadata(model_dir).tag == "t"

  _, trained = runner.train_or_resume(config, corpus, **kwargs)
  assert trained == 0 and "[t] already trained (3 steps)" in capsys.readouterr().out

  # Settings RE does not read: found finished under them, its record kept, nothing logged.
  quiet = _config(sigma=0.5, eps=0.5, lam=3.0)
  caplog.clear()
  _, trained = runner.train_or_resume(
      quiet, corpus, **{**kwargs, "metadata": artifact.ModelMetadata.for_training(quiet, tag="t")})
  assert trained == 0 and "differs from this run's" not in caplog.text
  assert artifact.read_metadata(model_dir).train_config["sigma"] is None
  # ... and what a run records for the model (results.json) is what it was trained with.
  recorded = runner.recorded_train_config(model_dir, quiet)
  assert (recorded["sigma"], recorded["eps"], recorded["lam"]) == (None, config.eps, config.lam)
  assert recorded["loss"] == "re" and recorded["seed"] == 0
  assert runner.recorded_train_config(str(tmp_path / "none"), quiet)["sigma"] == 0.5

  # The settings check against that checkpoint.
  runner.check_resumable(model_dir, metadata, flag_names={"seed"})
  runner.check_resumable(model_dir, artifact.ModelMetadata.for_training(
      _config(steps_per_call=3)), flag_names={"seed"})  # speed only
  runner.check_resumable(str(tmp_path / "empty"), metadata, flag_names=())
  runner.check_resumable(model_dir, artifact.ModelMetadata.for_training(
      _config(sigma=0.5, eps=0.5, lam=3.0)), flag_names={"seed"})  # settings RE does not read
  other = artifact.ModelMetadata.for_training(_config(seed=1, learning_rate=0.5, eps=0.5))
  with pytest.raises(runner.SettingsMismatchError) as info:
    runner.check_resumable(model_dir, other, flag_names={"seed"},
                           evaluation_flags=("reduce", "rare_clips"))
  message = str(info.value)
  assert "(step 3) trained with other settings: " in message
  assert "--seed: 0 in the checkpoint, 1 now" in message
  assert "learning_rate: 0.0001 in the checkpoint, 0.5 now" in message  # not a flag here
  assert "eps" not in message
  assert "such as --reduce, --rare_clips may differ" in message and "new --workdir" in message
  # a setting left to its rule (sigma = 1/(2D)) is stored as None: said so, not "None"
  monkeypatch.setattr(artifact.ModelMetadata, "training_differences",
                      lambda self, wanted, ignore=(): [("sigma", None, 0.01)])
  with pytest.raises(runner.SettingsMismatchError,
                     match=r"--sigma: unset \(the default rule\) in the checkpoint, 0.01 now"):
    runner.check_resumable(model_dir, other, flag_names={"sigma"})


def test_settings_are_checked_against_the_newest_checkpoint(tmp_path):
  """The newest checkpoint is the one a resume restores (its metadata alone is read)."""
  for step, seed in ((1, 0), (3, 1)):
    path = artifact.metadata_path(tmp_path, step)
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
      json.dump(artifact.ModelMetadata.for_training(_config(seed=seed)).to_json(), f)
  runner.check_resumable(str(tmp_path), artifact.ModelMetadata.for_training(_config(seed=1)),
                         flag_names={"seed"})
  with pytest.raises(runner.SettingsMismatchError,
                     match=r"\(step 3\) trained with other settings: --seed: 1 in the checkpoint, "
                     r"0 now"):
    runner.check_resumable(str(tmp_path), artifact.ModelMetadata.for_training(_config()),
                           flag_names={"seed"})


def test_validation_curve_is_recorded_and_kept_on_resume(tmp_path, monkeypatch):
  """``validate`` runs at the start, every ``checkpoint_every`` steps and at the end; a
  stopped run keeps its records up to its checkpoint, and the resume goes on from there."""
  config = _config(steps_per_epoch=5)
  mesh = parallel.data_mesh(jax.devices()[:1])
  segments = np.random.default_rng(0).standard_normal((4, SEGMENT)).astype(np.float32)
  corpus = train.place_corpus(segments, mesh=mesh, config=config)
  model_dir = str(tmp_path / "model")
  seen = []

  def validate(params):  # the step is not passed: count calls, return a changing value
    assert isinstance(jax.tree_util.tree_leaves(params)[0], np.ndarray)  # host parameters
    seen.append(1)
    return 10.0 / len(seen)

  kwargs = dict(mesh=mesh, model_dir=model_dir, checkpoint_every=2, tag="t", progress=False,
                metadata=artifact.ModelMetadata.for_training(config, tag="t"), validate=validate)
  with monkeypatch.context() as patch:
    patch.setattr(runner.signals, "GracefulStop", _StopAtOnce)
    with pytest.raises(runner.Interrupted):
      runner.train_or_resume(config, corpus, **kwargs)
  path = tmp_path / "model" / runner.VALIDATION_FILE
  assert [json.loads(l)["step"] for l in open(path)] == [0]  # stopped after step 1
  runner.train_or_resume(config, corpus, **kwargs)
  records = [json.loads(l) for l in open(path)]
  # Resumed at 1 (a stop between two checkpoints): not recorded there, so the steps are
  # those of an uninterrupted run: the start, every 2, the end.
  assert [r["step"] for r in records] == [0, 2, 4, 5]
  assert [r["heldout_error"] for r in records] == [10.0, 5.0, 10 / 3, 2.5]
  runner.train_or_resume(config, corpus, **kwargs)  # finished: nothing recomputed or dropped
  assert len(seen) == 4 and [json.loads(l)["step"] for l in open(path)] == [0, 2, 4, 5]
  uninterrupted = dict(kwargs, model_dir=str(tmp_path / "whole"))
  runner.train_or_resume(config, corpus, **uninterrupted)
  assert [json.loads(l)["step"] for l in open(tmp_path / "whole" / runner.VALIDATION_FILE)] == [
      0, 2, 4, 5]
  # Stopped (between two checkpoints) without a curve, resumed with one: it starts there.
  late = dict(kwargs, model_dir=str(tmp_path / "late"), validate=None)
  with monkeypatch.context() as patch:
    patch.setattr(runner.signals, "GracefulStop", _StopAtOnce)
    with pytest.raises(runner.Interrupted):
      runner.train_or_resume(config, corpus, **late)
  runner.train_or_resume(config, corpus, **dict(late, validate=validate))
  assert [json.loads(l)["step"] for l in open(tmp_path / "late" / runner.VALIDATION_FILE)] == [
      1, 2, 4, 5]


def test_training_time_is_summed_over_resumes_and_read_from_the_model_folder(tmp_path,
                                                                            monkeypatch):
  """Each metrics record carries the training time up to its step, continued across a
  stop and resume; ``train_seconds`` reads the total from the folder, wherever it is."""
  clock = iter(range(0, 10_000, 10))  # each reading 10 s after the one before
  monkeypatch.setattr(runner, "time", type("Clock", (), {"perf_counter": lambda: next(clock)}))
  config = _config()
  mesh = parallel.data_mesh(jax.devices()[:1])
  segments = np.random.default_rng(0).standard_normal((4, SEGMENT)).astype(np.float32)
  corpus = train.place_corpus(segments, mesh=mesh, config=config)
  model_dir = tmp_path / "model"
  kwargs = dict(mesh=mesh, model_dir=str(model_dir), checkpoint_every=100, tag="t",
                progress=False, metadata=artifact.ModelMetadata.for_training(config, tag="t"))
  with monkeypatch.context() as patch:
    patch.setattr(runner.signals, "GracefulStop", _StopAtOnce)
    with pytest.raises(runner.Interrupted):
      runner.train_or_resume(config, corpus, **kwargs)
  first = [json.loads(l)[runner.TIME_KEY] for l in open(model_dir / runner.METRICS_FILE)]
  assert len(first) == 1 and first[0] > 0
  assert runner.train_seconds(str(model_dir)) == first[0]
  runner.train_or_resume(config, corpus, **kwargs)  # resumed from step 1
  times = [json.loads(l)[runner.TIME_KEY] for l in open(model_dir / runner.METRICS_FILE)]
  assert times[0] == first[0] and times[0] < times[1] < times[2]  # the first run's share kept
  assert times[1] - times[0] < times[2]  # the resume adds its own time to the kept total
  moved = tmp_path / "elsewhere"
  model_dir.rename(moved)
  assert runner.train_seconds(str(moved)) == times[2]
  # A model trained before the field was written: unknown.
  lines = [json.loads(l) for l in open(moved / runner.METRICS_FILE)]
  (moved / runner.METRICS_FILE).write_text(
      "".join(json.dumps({k: v for k, v in r.items() if k != runner.TIME_KEY}) + "\n"
              for r in lines[:1]))
  assert runner.train_seconds(str(moved)) is None
  assert runner.train_seconds(str(tmp_path / "none")) is None


def test_training_inputs_segment_the_clips_and_take_statistics_only_when_standardized():
  rng = np.random.default_rng(0)
  waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (5000, 7000)]
  paths = ["a.wav", "b.wav"]
  mesh = parallel.data_mesh(jax.devices()[:1])
  corpus, stats = runner.training_inputs(_config(), waves, paths, mesh=mesh)
  assert stats is None and corpus.clips.shape[0] == 0  # no something-else clips
  segments = np.asarray(corpus.segments)
  assert segments.shape[1] == SEGMENT and segments.shape[0] == 5000 // SEGMENT + 7000 // SEGMENT
  np.testing.assert_array_equal(segments[0], waves[0][:SEGMENT])
  standardized = dataclasses.replace(TINY, standardize_input=True)
  _, stats = runner.training_inputs(_config(model=standardized), waves, paths, mesh=mesh)
  for got, want in zip(stats, features.statistics(waves, config=TINY.features)):
    np.testing.assert_allclose(got, want)


def test_a_standardizing_ae_without_statistics_is_refused(monkeypatch):
  """A clear error, not a TypeError from unpacking None (the model is not even built)."""
  monkeypatch.setattr(runner.train_lib, "create_state", lambda config, mesh: None)
  standardized = _config(model=dataclasses.replace(TINY, standardize_input=True))
  with pytest.raises(ValueError, match="standardize_input needs the training feature statistics"):
    runner.initial_state(standardized, mesh=parallel.data_mesh(jax.devices()[:1]))
