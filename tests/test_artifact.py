"""Tests for bu_jax.artifact: the typed checkpoint metadata and the two ways to restore."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from bu_jax import artifact, checkpoint, models, parallel, train

STD_PRESET = dataclasses.replace(models.preset("fcn40-small"), name="fcn40-small+std",
                                 standardize_input=True)
CALIBRATION = artifact.Calibration(threshold=12.5, reduce="mean", quantile=0.9,
                                   heldout_clip_scores=(10.0, 11.5, 13.0),
                                   heldout_paths=("a.wav", "b.wav", "c.wav"))


def _config(**kw):
  base = dict(loss="bu", model="fcn40-small", epochs=1, steps_per_epoch=2, decay_start_epoch=0)
  return train.TrainConfig(**{**base, **kw})


def _toycar_record():
  """As bu_jax.toycar writes it: a custom preset, the data settings, a calibration."""
  return dataclasses.replace(
      artifact.ModelMetadata.for_training(_config(model=STD_PRESET),
                                          data={"data_dir": "/d", "data_seed": 0}),
      calibration=CALIBRATION)


def _write_metadata(model_dir, entries, step=1):
  """A checkpoint's metadata file alone (``read_metadata`` reads nothing else)."""
  path = artifact.metadata_path(model_dir, step)
  os.makedirs(os.path.dirname(path))
  with open(path, "w") as f:
    f.write(entries if isinstance(entries, str) else json.dumps(entries))
  return path


NORMALIZED = dataclasses.replace(CALIBRATION, normalization=artifact.ScoreNormalization(
    kind="knn", neighbors=10, file="score_normalizer.npz"))


WINDOWED = dataclasses.replace(NORMALIZED, reduce="max", window=62)
LOC0 = dataclasses.replace(CALIBRATION, fit=artifact.GAMMA_LOC0)


@pytest.mark.parametrize("record", [
    _toycar_record(),
    dataclasses.replace(_toycar_record(), calibration=NORMALIZED),
    dataclasses.replace(_toycar_record(), calibration=WINDOWED),
    dataclasses.replace(_toycar_record(), calibration=LOC0),
    dataclasses.replace(_toycar_record(), calibration=dataclasses.replace(
        NORMALIZED, normalization=dataclasses.replace(NORMALIZED.normalization,
                                                      fingerprint="fe0adc37baba5f97"))),
    artifact.ModelMetadata.for_training(_config(loss="re"), tag="SynthFan/section_00"),
])
def test_json_round_trip(record, tmp_path):
  entries = json.loads(json.dumps(record.to_json(), allow_nan=False))
  assert artifact.ModelMetadata.from_json(entries) == record
  assert entries["version"] == artifact.VERSION
  _write_metadata(tmp_path, entries, step=7)
  assert artifact.read_metadata(tmp_path) == record


def test_the_threshold_fit_is_recorded_and_described():
  entries = dataclasses.replace(_toycar_record(), calibration=LOC0).to_json()
  assert entries["threshold_fit"] == "gamma_loc0"
  assert "(location 0)" in artifact.ModelMetadata.from_json(entries).calibration.describe()
  # Written before the key: phi came from the three-parameter fit, and says so.
  older = {k: v for k, v in entries.items() if k != "threshold_fit"}
  assert "three-parameter" in artifact.ModelMetadata.from_json(older).calibration.describe()
  with pytest.raises(artifact.ArtifactError, match="threshold_fit"):
    artifact.ModelMetadata.from_json({**entries, "threshold_fit": "normal"}, where="m.json")


def test_metadata_written_before_the_record_still_loads(tmp_path):
  """The keys toycar and dcase_run wrote before this module (no ``version``)."""
  config = _config(model=STD_PRESET)
  old = {"loss": "bu", "model": "fcn40-small+std",
         "features": dataclasses.asdict(STD_PRESET.features),
         "train_config": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
         "data": {"data_dir": "/d"}, "threshold": 3.5, "reduce": "max",
         "threshold_quantile": 0.9, "heldout_clip_scores": [1.0, 2.0], "heldout_paths": ["x"],
         "note": "kept"}
  record = artifact.ModelMetadata.from_json(old)
  assert record.preset == STD_PRESET and record.version == 1
  assert record.calibration.normalization is None
  assert record.calibration.threshold == 3.5 and record.calibration.heldout_paths == ("x",)
  assert record.to_json() == {**old, "version": 1}
  dcase = {"tag": "SynthFan", "loss": "re", "model": "fcn40-small",
           "features": dataclasses.asdict(models.preset("fcn40-small").features),
           "train_config": {"model": "fcn40-small", "seed": 0}}
  record = artifact.ModelMetadata.from_json(dcase)
  assert record.preset == models.preset("fcn40-small") and record.calibration is None
  assert record.tag == "SynthFan"


def _drop(key):
  return lambda m: m.pop(key)


def _set(key, value):
  return lambda m: m.__setitem__(key, value)


def _set_in(group, key, value):
  return lambda m: m[group].__setitem__(key, value)


@pytest.mark.parametrize("damage, named", [
    (_drop("loss"), "'loss' is missing"),
    (_drop("features"), "'features' is missing"),
    (_set("loss", "pca"), "'loss' must be one of"),
    (_set("model", 3), "'model' must be a string"),
    (lambda m: m.update(model="fcn99", train_config={"model": "fcn99"}),
     "'model' names an unknown preset 'fcn99'"),
    (_set_in("features", "n_mels", "many"), "'features' 'n_mels' must be an integer"),
    (_set_in("features", "window", "hann"), "'features' has unknown entries ['window']"),
    (_set_in("train_config", "model", {"name": "x", "units": 8}), "lacks 'hidden_layers'"),
    (_set("threshold", "high"), "'threshold' must be a number"),
    (_set("threshold", None), "'threshold' must be a number"),
    (_set("reduce", "median"), "'reduce' must be one of"),
    (_set("score_window", 0), "'score_window' must be >= 1 frames"),
    (_set("score_window", 1.5), "'score_window' must be an integer"),
    (_set("score_window", 3), "'score_window' must be >= 1 frames (1 with reduce 'mean')"),
    (_set("heldout_clip_scores", [1.0, "x"]), "'heldout_clip_scores' holds a bad value"),
    (_set("train_config", [1, 2]), "'train_config' must be a JSON object"),
    (_set("version", 99), "written by a newer bu_jax"),
    (_set("version", 0), "'version' must be >= 1, got 0"),
    (_set("version", True), "'version' must be an integer"),
    (_set("threshold", float("nan")), "'threshold' must be a number"),  # Python's json reads NaN
    (_set("threshold", float("inf")), "'threshold' must be a number"),
    (_set("heldout_clip_scores", [1.0, float("-inf")]), "'heldout_clip_scores' holds a bad value"),
    (lambda m: m.update(reduce="max", score_window=0), "'score_window' must be >= 1 frames"),
    (lambda m: m.update(reduce="max", score_window=True), "'score_window' must be an integer"),
    (_set("score_normalization", "knn"), "'score_normalization' must be a JSON object"),
    (_set("score_normalization", {"kind": "pca", "neighbors": 3, "file": "n.npz"}),
     "'score_normalization' 'kind' must be one of ('knn', 'knn_z')"),
    (_set("score_normalization", {"kind": "knn", "neighbors": 0, "file": "n.npz"}),
     "'neighbors' must be >= 1"),
    (_set("score_normalization", {"kind": "knn", "neighbors": 3}), "lacks 'file'"),
    (_set("score_normalization", {"kind": "knn", "neighbors": 3, "file": "../n.npz"}),
     "'file' must be a path inside the model directory"),
    (_set("score_normalization", {"kind": "knn", "neighbors": 3, "file": "n.npz",
                                  "fingerprint": 7}), "'fingerprint' must be a string"),
])
def test_bad_entry_is_a_checkpoint_error_naming_the_file(tmp_path, damage, named):
  entries = _toycar_record().to_json()
  damage(entries)
  path = _write_metadata(tmp_path, entries)
  with pytest.raises(checkpoint.CheckpointError) as error:
    artifact.read_metadata(tmp_path)
  assert path in str(error.value) and named in str(error.value)


def test_unreadable_or_missing_metadata_is_a_checkpoint_error(tmp_path):
  _write_metadata(tmp_path / "garbage", "{not json")
  with pytest.raises(checkpoint.CheckpointError, match=r"step 1 in .*garbage.*cannot be read"):
    artifact.read_metadata(tmp_path / "garbage")
  _write_metadata(tmp_path / "list", [1, 2])
  with pytest.raises(checkpoint.CheckpointError, match=r"metadata.json: not a JSON object"):
    artifact.read_metadata(tmp_path / "list")
  with pytest.raises(checkpoint.CheckpointError, match="No checkpoint in"):
    artifact.read_metadata(tmp_path / "none")


def test_training_differences():
  stored = _toycar_record()
  assert stored.training_differences(stored) == []
  wanted = artifact.ModelMetadata.for_training(
      _config(loss="re", model="fcn40-large", seed=3, steps_per_call=5),
      data={"data_dir": "/d", "data_seed": 0, "snr_db": 1.0})
  assert stored.training_differences(wanted, ignore=("steps_per_call",)) == [
      ("loss", "bu", "re"), ("train_config.model", "fcn40-small", "fcn40-large"),
      ("train_config.standardize_input", True, False),
      ("train_config.seed", 0, 3)]  # data.snr_db: not stored, not compared
  # The same AE with and without input standardization: only that is named.
  raw = artifact.ModelMetadata.for_training(
      _config(model="fcn40-small"), data={"data_dir": "/d", "data_seed": 0})
  assert stored.training_differences(raw) == [("train_config.standardize_input", True, False)]


@pytest.mark.parametrize("kde_memory", [0, 2], ids=["TrainState", "MemoryTrainState"])
def test_saved_for_training_restores_for_training_and_for_scoring(tmp_path, kde_memory):
  config = _config(kde_memory=kde_memory, kde_memory_rows=4)
  mesh = parallel.data_mesh()
  state = train.create_state(config, mesh=mesh)
  params = jax.tree.map(lambda p: p + 0.5, jax.device_get(state.params))
  state = state.replace(params=parallel.replicate(params, mesh))
  record = artifact.ModelMetadata.for_training(config, tag="SynthFan")
  with artifact.open_for_training(tmp_path, record, save_interval_steps=1) as ckpt:
    ckpt.maybe_save(2, state, force=True)
  artifact.store_calibration(tmp_path, CALIBRATION, step=2, state=state)

  with artifact.open_for_training(tmp_path, record, save_interval_steps=1) as ckpt:
    restored, step = ckpt.restore_or_init(train.create_state(config, mesh=mesh))
  assert step == 2 and type(restored) is type(state)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))

  before = sorted(os.listdir(checkpoint.checkpoint_dir(tmp_path)))
  trained = artifact.load_for_scoring(tmp_path, loss="bu")
  assert trained.step == 2 and trained.metadata == dataclasses.replace(
      record, calibration=CALIBRATION)
  jax.tree.map(np.testing.assert_array_equal, trained.params, params)
  assert sorted(os.listdir(checkpoint.checkpoint_dir(tmp_path))) == before  # read only
  with pytest.raises(artifact.ArtifactError, match="trained with loss 'bu', not 're'"):
    artifact.load_for_scoring(tmp_path, loss="re")
  on = jax.devices()[3]  # scoring on another device than the first
  placed = artifact.load_for_scoring(tmp_path, device=on).params
  assert {d for leaf in jax.tree_util.tree_leaves(placed) for d in leaf.devices()} == {on}


def test_calibrating_an_older_record_writes_it_in_this_format(tmp_path):
  """φ of normalized scores or over a window stored in a record of version 1 would be
  ignored by a bu_jax that reads version 1: the calibrated record is this VERSION's."""
  older = {k: v for k, v in _toycar_record().to_json().items()
           if k not in ("version", *artifact._CALIBRATION_KEYS)}  # pylint: disable=protected-access
  state = {"w": np.zeros(3, np.float32)}
  with checkpoint.Checkpointer(tmp_path, metadata=older, async_save=False) as ckpt:
    ckpt.maybe_save(4, state, force=True)
  assert artifact.read_metadata(tmp_path).version == 1
  stored = artifact.store_calibration(tmp_path, WINDOWED, step=4, state=state)
  assert stored.version == artifact.VERSION
  entries = checkpoint.read_metadata(tmp_path)
  assert entries["version"] == artifact.VERSION and entries["score_window"] == 62
  assert artifact.read_metadata(tmp_path) == stored
