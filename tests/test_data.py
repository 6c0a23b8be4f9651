"""Tests for bu_jax.audio, bu_jax.data and bu_jax.synthetic (small, CPU, seconds)."""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil

import numpy as np
import pytest
import soundfile

from bu_jax import audio
from bu_jax import data
from bu_jax import dcase as dcase_lib
from bu_jax import synthetic

SR = audio.SAMPLE_RATE


def _tone(seconds=0.25, *, sr=SR, freq=440.0, amp=0.3, seed=0):
  """A tone plus a little noise (never silent, so every mixing ratio is defined)."""
  t = np.arange(int(seconds * sr)) / sr
  noise = 0.01 * np.random.default_rng(seed).standard_normal(t.size)
  return (amp * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def _write(path, wave=None, *, sr=SR, seed=0, seconds=0.25):
  path = str(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  soundfile.write(path, _tone(seconds, sr=sr, seed=seed) if wave is None else wave, sr)
  return path


def _ratio_db(other, base):
  other, base = np.asarray(other, np.float64), np.asarray(base, np.float64)
  return 10 * np.log10(np.mean(other**2) / np.mean(base**2))


# ----------------------------------------------------------------------------
# audio
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("source_sr", [8000, 22050])
def test_load_wav_resamples_to_16k(tmp_path, source_sr, caplog):
  path = _write(tmp_path / "a.wav", _tone(0.5, sr=source_sr), sr=source_sr)
  wave = audio.load_wav(path)
  assert wave.dtype == np.float32 and wave.ndim == 1
  assert abs(wave.size - 8000) <= 1
  assert 0.25 < np.max(np.abs(wave[100:-100])) < 0.35  # amplitude kept
  # A recording below the features' rate has an empty upper band: named in a warning.
  warned = [r.getMessage() for r in caplog.records if "below the 16000 Hz" in r.getMessage()]
  assert warned == ([f"{path}: recorded at 8000 Hz, below the 16000 Hz it is resampled to: it "
                     "holds nothing above 4 kHz, which a model of 16000-Hz recordings may score "
                     "as anomalous"] if source_sr < 16000 else [])


def test_load_wav_averages_stereo(tmp_path):
  tone = _tone(0.25)
  path = _write(tmp_path / "stereo.wav", np.stack([tone, 0.5 * tone], axis=1))
  np.testing.assert_allclose(audio.load_wav(path), 0.75 * tone, atol=1e-4)


def test_write_wav_round_trip_and_guards(tmp_path):
  tone = _tone(0.1)
  path = tmp_path / "w.wav"
  audio.write_wav(path, tone)
  assert soundfile.info(str(path)).subtype == "PCM_16"
  np.testing.assert_allclose(audio.load_wav(path), tone, atol=1e-4)
  with pytest.raises(ValueError, match="clip"):
    audio.write_wav(tmp_path / "loud.wav", 2 * np.ones(10))
  with pytest.raises(ValueError, match=r"peak 1\.500 > 1 would clip"):  # a negative peak too
    audio.write_wav(tmp_path / "low.wav", np.array([0.0, -1.5, 0.5]))
  with pytest.raises(ValueError, match="non-finite"):
    audio.write_wav(tmp_path / "nan.wav", np.array([0.0, np.nan]))


def _bad_file(tmp_path, kind):
  path = tmp_path / f"{kind}.wav"
  if kind == "zero_bytes":
    path.write_bytes(b"")
  elif kind == "text":
    path.write_text("this is not audio\n" * 20)
  elif kind == "no_samples":
    soundfile.write(str(path), np.zeros(0, np.float32), SR)
  elif kind == "nan":
    wave = _tone(0.1)
    wave[10] = np.nan
    soundfile.write(str(path), wave, SR, subtype="FLOAT")
  elif kind == "directory":
    path.mkdir()
  return path  # kind == "missing": not created


@pytest.mark.parametrize("kind", ["missing", "zero_bytes", "text", "no_samples", "nan",
                                  "directory"])
def test_load_wav_bad_files_name_the_path(tmp_path, kind):
  path = _bad_file(tmp_path, kind)
  with pytest.raises(audio.AudioError, match=str(path)) as error:
    audio.load_wav(path)
  if kind == "nan":  # the project's message with the time, not librosa's "buffer not finite"
    assert "non-finite (NaN or inf) samples (the first at 0.001 s)" in str(error.value)
    assert "cannot be read" not in str(error.value)


def test_the_first_non_finite_sample_is_timed_past_the_first_block_read(tmp_path):
  """The time is counted over the blocks the file is read in (65536 samples each)."""
  wave = _tone(5.0)
  wave[72000] = np.inf  # 4.5 s: in the second block
  path = tmp_path / "inf.wav"
  soundfile.write(str(path), wave, SR, subtype="FLOAT")
  with pytest.raises(audio.AudioError, match=re.escape(
      f"{path}: audio holds non-finite (NaN or inf) samples (the first at 4.500 s)")):
    audio.load_wav(path)


@pytest.mark.parametrize("ratio_db", [-30.0, -20.0, -15.0, -10.0, 0.0, 7.5])
def test_mix_at_ratio_hits_requested_ratio(ratio_db):
  rng = np.random.default_rng(1)
  base = rng.standard_normal(4000).astype(np.float32)
  other = (3.0 * rng.standard_normal(4000)).astype(np.float32)
  mixed = audio.mix_at_ratio(base, other, ratio_db=ratio_db)
  assert mixed.dtype == np.float32
  added = mixed.astype(np.float64) - base
  assert abs(_ratio_db(added, base) - ratio_db) < 0.01


def test_mix_at_ratio_rejects_zero_power_and_bad_shapes():
  ones = np.ones(10, np.float32)
  with pytest.raises(ValueError, match="base has zero power"):
    audio.mix_at_ratio(np.zeros(10), ones, ratio_db=0.0)
  with pytest.raises(ValueError, match="other has zero power"):
    audio.mix_at_ratio(ones, np.zeros(10), ratio_db=0.0)
  with pytest.raises(ValueError, match="equal length"):
    audio.mix_at_ratio(ones, np.ones(11), ratio_db=0.0)


# ----------------------------------------------------------------------------
# DCASE layouts
# ----------------------------------------------------------------------------


def test_dcase2020_layout(tmp_path):
  for i, name in enumerate(["normal_id_00_00000000", "normal_id_00_00000001",
                            "normal_id_02_00000000"]):
    _write(tmp_path / "train" / f"{name}.wav", seed=i)
  for i, name in enumerate(["normal_id_00_00000000", "anomaly_id_00_00000000",
                            "anomaly_id_02_00000000", "normal_id_02_00000001"]):
    _write(tmp_path / "test" / f"{name}.wav", seed=10 + i)
  _write(tmp_path / "test" / "id_00_00000009.wav")  # unlabelled (eval set): skipped
  assert data.detect_layout(tmp_path) == "dcase2020"
  ds = data.load_dataset(tmp_path)
  assert ds.layout == "dcase2020"
  assert len(ds.train) == len(ds.train_paths) == 3
  assert [os.path.basename(p) for p in ds.train_paths][0] == "normal_id_00_00000000.wav"
  got = sorted((c.condition, c.label) for c in ds.test)
  assert got == [("id_00", 0), ("id_00", 1), ("id_02", 0), ("id_02", 1)]
  assert all(c.rare is None and c.wave.dtype == np.float32 for c in ds.test)


def test_dcase2021_layout_with_and_without_domain(tmp_path):
  for i, name in enumerate(["section_00_source_train_normal_0000",
                            "section_00_target_train_normal_0000",
                            "section_01_train_normal_0000"]):
    _write(tmp_path / "train" / f"{name}.wav", seed=i)
  for i, name in enumerate(["section_00_source_test_normal_0000",
                            "section_00_source_test_anomaly_0000",
                            "section_00_target_test_anomaly_0001_car_A1_spd_28V",
                            "section_01_test_normal_0000"]):
    _write(tmp_path / "test" / f"{name}.wav", seed=10 + i)
  ds = data.load_dataset(tmp_path)
  assert ds.layout == "dcase2021" and len(ds.train) == 3
  got = sorted((c.condition, c.label) for c in ds.test)
  assert got == [("section_00_source", 0), ("section_00_source", 1),
                 ("section_00_target", 1), ("section_01", 0)]


def test_dcase_training_folder_anomalies_are_not_trained_on(tmp_path):
  # An anomalous clip left in train/ (a DCASE name says so) is skipped, never learnt as normal.
  _write(tmp_path / "train" / "anomaly_id_00_00000000.wav", seed=1)
  _write(tmp_path / "train" / "normal_id_00_00000000.wav", seed=2)
  _write(tmp_path / "test" / "normal_id_00_00000000.wav", seed=3)
  _write(tmp_path / "test" / "anomaly_id_00_00000000.wav", seed=4)
  ds = data.load_dataset(tmp_path)
  assert [os.path.basename(p) for p in ds.train_paths] == ["normal_id_00_00000000.wav"]
  assert len(ds.train) == 1


def test_a_lone_condition_test_folder_names_its_conditions(tmp_path):
  # Only a plain test/ keeps the plain names; a lone test_anr-10dB/ names its conditions.
  _write(tmp_path / "train" / "normal_id_00_00000000.wav")
  _write(tmp_path / "test_anr-10dB" / "normal_id_00_00000000.wav", seed=1)
  _write(tmp_path / "test_anr-10dB" / "anomaly_id_00_00000000.wav", seed=2)
  ds = data.load_dataset(tmp_path)
  assert {c.condition for c in ds.test} == {"test_anr-10dB_id_00"}


def test_dcase_layout_rejects_mixing_options(tmp_path):
  _write(tmp_path / "train" / "normal_id_00_00000000.wav")
  _write(tmp_path / "test" / "anomaly_id_00_00000000.wav")
  with pytest.raises(data.DataError, match="only to layout 'mixing'"):
    data.load_dataset(tmp_path, noise_dir=tmp_path)


def test_a_linked_test_folder_is_evaluated_once_by_its_own_name(tmp_path, caplog):
  # realaudio-dev's README suggests `test -> test_anr-15dB` for one-folder code: scored
  # under both names, the -15 dB folder would count twice in the conditions' mean.
  _write(tmp_path / "train" / "normal_id_00_00000000.wav")
  for folder, seed in (("test_anr-10dB", 2), ("test_anr-15dB", 3)):
    _write(tmp_path / folder / "normal_id_00_00000000.wav", seed=1)
    _write(tmp_path / folder / "anomaly_id_00_00000000.wav", seed=seed)
  os.symlink("test_anr-15dB", tmp_path / "test")
  ds = data.load_dataset(tmp_path)
  assert sorted({c.condition for c in ds.test}) == ["test_anr-10dB_id_00", "test_anr-15dB_id_00"]
  assert len(ds.test) == 4
  assert any(f"{tmp_path / 'test'}: the same folder as test_anr-15dB/" in r.getMessage()
             for r in caplog.records)
  assert data.list_test_folders(str(tmp_path)) == ["test_anr-10dB", "test_anr-15dB"]


def test_a_copied_test_folder_is_evaluated_once(tmp_path, caplog):
  # The same advice followed with `cp -r` instead of `ln -s`: the copy is found by its bytes.
  _write(tmp_path / "train" / "normal_id_00_00000000.wav")
  for folder, seed in (("test_anr-10dB", 2), ("test_anr-15dB", 3)):
    _write(tmp_path / folder / "normal_id_00_00000000.wav", seed=1)  # the same normal clip
    _write(tmp_path / folder / "anomaly_id_00_00000000.wav", seed=seed)
  shutil.copytree(tmp_path / "test_anr-15dB", tmp_path / "test")
  ds = data.load_dataset(tmp_path)
  assert sorted({c.condition for c in ds.test}) == ["test_anr-10dB_id_00", "test_anr-15dB_id_00"]
  assert any(f"{tmp_path / 'test'}: a copy of test_anr-15dB/" in r.getMessage()
             for r in caplog.records)
  # One byte changed, or one file more, and the folder is a condition of its own.
  path = tmp_path / "test" / "anomaly_id_00_00000000.wav"
  raw = bytearray(path.read_bytes())
  raw[-1] ^= 1
  path.write_bytes(bytes(raw))
  assert data.list_test_folders(str(tmp_path)) == ["test", "test_anr-10dB", "test_anr-15dB"]
  path.write_bytes(bytes(raw[:-1]) + bytes([raw[-1] ^ 1]))  # the copy again
  assert data.list_test_folders(str(tmp_path)) == ["test_anr-10dB", "test_anr-15dB"]
  _write(tmp_path / "test" / "anomaly_id_00_00000001.wav", seed=4)
  assert data.list_test_folders(str(tmp_path)) == ["test", "test_anr-10dB", "test_anr-15dB"]


# ----------------------------------------------------------------------------
# The paper's mixing layout
# ----------------------------------------------------------------------------


def _mixing_tree(root, *, metadata=True):
  for i in range(3):
    _write(root / "train" / f"clip_{i}.wav", seed=i, seconds=0.5)
  for i in range(2):
    _write(root / "test" / f"clip_{i}.wav", seed=10 + i, seconds=0.5)
  rng = np.random.default_rng(0)
  # Noise shorter than a clip (it is tiled) at 8 kHz (resampled).
  _write(root / "noise" / "n0.wav", (0.1 * rng.standard_normal(1600)).astype(np.float32),
         sr=8000)
  _write(root / "anomaly" / "a0.wav", (0.5 * rng.standard_normal(800)).astype(np.float32))
  _write(root / "anomaly" / "a1.wav", _tone(0.1, freq=3000.0))
  if metadata:
    (root / "metadata.json").write_text(json.dumps({"rare_test_clips": ["clip_1.wav"]}))
  return root


def test_mixing_layout_counts_labels_conditions_rare(tmp_path):
  root = _mixing_tree(tmp_path)
  assert data.detect_layout(root) == "mixing"
  ds = data.load_dataset(root, seed=3)
  assert ds.layout == "mixing" and len(ds.train) == 3
  assert len(ds.test) == 2 * 3 * 2  # clips x ANRs x (normal, anomalous)
  assert {c.condition for c in ds.test} == {"anr_-10dB", "anr_-15dB", "anr_-20dB"}
  for condition in ("anr_-10dB", "anr_-15dB", "anr_-20dB"):
    clips = [c for c in ds.test if c.condition == condition]
    assert sorted(c.label for c in clips) == [0, 0, 1, 1]
  for clip in ds.test:
    assert clip.rare == (os.path.basename(clip.path) == "clip_1.wav")
    assert (clip.anomaly_path is not None) == (clip.label == 1)


def test_mixing_layout_levels_match_snr_and_anr(tmp_path):
  root = _mixing_tree(tmp_path)
  ds = data.load_dataset(root, snr_db=5.0, anrs_db=(-10.0, -20.0), seed=1)
  for path, noisy in zip(ds.train_paths, ds.train):
    clean = audio.load_wav(path)
    assert abs(_ratio_db(noisy.astype(np.float64) - clean, clean) - (-5.0)) < 0.01
  normals = {(c.path, c.condition): c.wave for c in ds.test if c.label == 0}
  for clip in (c for c in ds.test if c.label == 1):
    normal = normals[(clip.path, clip.condition)]
    added = clip.wave.astype(np.float64) - normal
    anr = float(clip.condition[len("anr_"):-len("dB")])
    assert abs(_ratio_db(added, normal) - anr) < 0.01  # eq. (8), powers over the clip


def test_mixing_layout_is_deterministic_in_seed(tmp_path):
  root = _mixing_tree(tmp_path)
  first = data.load_dataset(root, seed=0)
  again = data.load_dataset(root, seed=0)
  other = data.load_dataset(root, seed=1)
  for a, b in zip(first.train + [c.wave for c in first.test],
                  again.train + [c.wave for c in again.test]):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(first.train, other.train))


def test_mixing_layout_draws_train_and_test_noise_apart(tmp_path):
  # The same recording as training clip 0 and test clip 0 gets other noise in each split:
  # a test clip must not be a copy of a training clip.
  root = _mixing_tree(tmp_path)
  shutil.copy(root / "train" / "clip_0.wav", root / "test" / "clip_0.wav")
  ds = data.load_dataset(root, seed=2)
  test0 = next(c.wave for c in ds.test if c.label == 0 and c.path.endswith("clip_0.wav"))
  assert ds.train[0].shape == test0.shape
  assert not np.allclose(ds.train[0], test0, atol=1e-3)


def test_mixing_layout_without_metadata_or_noise(tmp_path):
  root = _mixing_tree(tmp_path, metadata=False)
  (root / "noise" / "n0.wav").unlink()
  (root / "noise").rmdir()
  ds = data.load_dataset(root, anrs_db=(-15,))
  assert all(c.rare is None for c in ds.test)
  assert {c.condition for c in ds.test} == {"anr_-15dB"}
  np.testing.assert_array_equal(ds.train[0], audio.load_wav(ds.train_paths[0]))  # clean


def test_mixing_layout_rejects_unknown_rare_names(tmp_path):
  root = _mixing_tree(tmp_path)
  (root / "metadata.json").write_text(json.dumps({"rare_test_clips": ["nope.wav"]}))
  with pytest.raises(data.DataError, match="metadata.json"):
    data.load_dataset(root)


# ----------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------


def test_missing_and_empty_directories_name_the_path(tmp_path):
  missing = tmp_path / "nowhere"
  with pytest.raises(data.DataError, match=str(missing)):
    data.load_dataset(missing)
  with pytest.raises(data.DataError, match=str(tmp_path / "train")):
    data.load_dataset(tmp_path)  # no train/
  (tmp_path / "train").mkdir()
  with pytest.raises(data.DataError, match="no training clips"):
    data.load_dataset(tmp_path)  # empty train/
  with pytest.raises(data.DataError, match=str(tmp_path / "x")):
    data.load_something_else(tmp_path / "x")


@pytest.mark.parametrize("kind", ["zero_bytes", "text", "nan"])
def test_bad_training_file_names_the_file(tmp_path, kind):
  root = _mixing_tree(tmp_path)
  bad = _bad_file(root / "train", kind)
  with pytest.raises(audio.AudioError, match=str(bad)):
    data.load_dataset(root)


def test_unknown_layout_and_mixed_names(tmp_path):
  root = _mixing_tree(tmp_path)
  with pytest.raises(data.DataError, match="unknown layout"):
    data.load_dataset(root, layout="dcase2099")
  _write(root / "train" / "normal_id_00_00000000.wav")
  with pytest.raises(data.DataError, match=r"clip_0.wav is not a DCASE 2020 name\); name the layout "
                     r"\(--layout=dcase2020 or --layout=dcase2021"):
    data.detect_layout(root)


def test_mixed_names_name_a_file_that_does_not_parse(tmp_path):
  # A stray macOS "._" file beside DCASE clips: the error names it and the flag.
  for i in range(3):
    _write(tmp_path / "train" / f"normal_id_00_0000000{i}.wav", seed=i)
  _write(tmp_path / "train" / "._normal_id_00_00000000.wav")
  with pytest.raises(data.DataError, match=r"e\.g\. \._normal_id_00_00000000\.wav is not a DCASE "
                     r"2020 name\); name the layout \(--layout="):
    data.detect_layout(tmp_path)


@pytest.mark.parametrize("test_folder", ["test_anr-10dB", "test"])
def test_names_that_are_not_dcase_names_are_named_when_no_mixing_tree_fits(tmp_path, test_folder):
  # DCASE-like folders, but clips named otherwise: "mixing" is guessed, and the error
  # says why and names a clip, not only that test/ or anomaly/ is missing.
  _write(tmp_path / "train" / "clip_0000.wav")
  _write(tmp_path / test_folder / "anomaly_0000.wav")
  with pytest.raises(data.DataError) as info:
    data.load_dataset(tmp_path)
  message = str(info.value)
  assert f"{tmp_path / 'train'}/clip_0000.wav is not" in message
  assert "taken as 'mixing', which needs" in message and "--layout=dcase2020" in message
  assert "(layout=)" not in message
  assert "give the anomalous sounds (--anomaly_dir" in message  # anomaly/ is missing here
  assert ("test/ and anomaly/ (missing)" if test_folder != "test" else "anomaly/ (missing)") in message
  assert ("look like a DCASE tree" in message) == (test_folder != "test")
  # With anomaly sounds given, a plain test/ is a mixing tree: no hint.
  if test_folder == "test":
    anomalies = tmp_path / "sounds"
    _write(anomalies / "a.wav")
    assert data.load_dataset(tmp_path, anomaly_dir=anomalies).layout == "mixing"


# ----------------------------------------------------------------------------
# Something-else sounds, segmentation, padding
# ----------------------------------------------------------------------------


def test_load_something_else_skips_long_clips(tmp_path):
  _write(tmp_path / "short.wav", seconds=0.25)
  _write(tmp_path / "long.wav", seconds=1.0)
  waves = data.load_something_else(tmp_path, max_seconds=0.5)
  assert [w.size for w in waves] == [4000]
  with pytest.raises(data.DataError, match="longer than"):
    data.load_something_else(tmp_path, max_seconds=0.1)


@pytest.mark.parametrize("suffix", [".flac", ".ogg", ".mp3"])
def test_something_else_in_other_formats_is_read(tmp_path, suffix):
  soundfile.write(str(tmp_path / f"bark{suffix}"), _tone(0.25, freq=880.0), SR)
  _write(tmp_path / "beep.wav")
  waves = data.load_something_else(tmp_path)
  assert len(waves) == 2  # bark.* sorts before beep.wav
  assert abs(waves[0].size - 4000) <= 1200  # MP3 pads its start and end
  np.testing.assert_allclose(waves[1], _tone(0.25), atol=1e-4)  # 16-bit PCM
  # The bark is the 880-Hz tone: its spectrum peaks there, not at the beep's 440 Hz.
  spectrum = np.abs(np.fft.rfft(waves[0]))
  assert abs(np.argmax(spectrum) * SR / waves[0].size - 880.0) < 20.0


def test_mixing_layout_reads_flac_and_refuses_a_dcase_tree_of_flacs(tmp_path, caplog):
  root = _mixing_tree(tmp_path / "mix")
  for folder in ("train", "test", "anomaly", "noise"):
    for wav in sorted((root / folder).glob("*.wav")):
      wave, rate = soundfile.read(str(wav))
      soundfile.write(str(wav.with_suffix(".flac")), wave, rate)
      wav.unlink()
  (root / "metadata.json").write_text(json.dumps({"rare_test_clips": ["clip_1.flac"]}))
  assert data.detect_layout(root) == "mixing"
  flac = data.load_dataset(root)
  wav = data.load_dataset(_mixing_tree(tmp_path / "wav"))
  assert [c.condition for c in flac.test] == [c.condition for c in wav.test]
  assert [c.rare for c in flac.test] == [c.rare for c in wav.test]
  for a, b in zip(flac.train + [c.wave for c in flac.test], wav.train + [c.wave for c in wav.test]):
    np.testing.assert_allclose(a, b, atol=1e-6)  # lossless: the same clips, mixed alike
  # A DCASE tree is read from its WAVs only: one of FLACs is refused, saying why.
  dcase = tmp_path / "dcase"
  _write(dcase / "train" / "normal_id_00_00000000.flac")
  _write(dcase / "test" / "normal_id_00_00000000.flac")
  with pytest.raises(data.DataError, match=r"train: no normal training clips \(dcase2020 "
                     r"names\); it holds 1 sound file\(s\) of other types than WAV \(e\.g\. "
                     r"normal_id_00_00000000\.flac\), which a DCASE layout does not read"):
    data.load_dataset(dcase)
  with pytest.raises(data.DataError, match=r"no normal training clips with DCASE names; it "
                     r"holds 1 sound file\(s\) of other types than WAV"):
    dcase_lib.load_machine_type(str(tmp_path), "dcase")
  # WAVs beside the FLACs: the WAVs decide the layout, the FLACs are not read (a warning
  # counts them, per folder).
  _write(dcase / "train" / "normal_id_00_00000001.wav")
  assert data.detect_layout(dcase) == "dcase2020"
  with pytest.raises(data.DataError, match=r"test: no labelled test clips \(dcase2020 names\); "
                     r"it holds 1 sound file\(s\) of other types than WAV"):
    data.load_dataset(dcase)
  _write(dcase / "test" / "anomaly_id_00_00000000.wav")
  _write(dcase / "test" / "normal_id_00_00000001.wav")
  caplog.clear()
  assert len(data.load_dataset(dcase).train) == 1
  assert len(dcase_lib.load_machine_type(str(tmp_path), "dcase").test) == 2
  for folder in ("train", "test"):
    assert sum(f"{dcase / folder}: 1 sound file(s) of other types than WAV left out" in
               r.getMessage() for r in caplog.records) == 2  # once by each loader
  # FLACs with DCASE names and one WAV of another name: a mixing tree whose hint names the WAV.
  shutil.rmtree(dcase / "test")
  (dcase / "train" / "normal_id_00_00000001.wav").rename(dcase / "train" / "recording.wav")
  with pytest.raises(data.DataError, match=r"e\.g\. .*train/recording\.wav is not"):
    data.load_dataset(dcase)


def test_one_recording_in_several_types_is_read_once(tmp_path, caplog):
  root = _mixing_tree(tmp_path / "mix")
  reference = data.load_dataset(root)
  for folder in ("train", "test", "anomaly"):  # a conversion that kept the originals
    for wav in sorted((root / folder).glob("*.wav")):
      wave, rate = soundfile.read(str(wav))
      soundfile.write(str(wav.with_suffix(".flac")), wave, rate)
  ds = data.load_dataset(root)
  assert ds.train_paths == reference.train_paths  # the WAVs, each once
  assert [(c.path, c.label, c.rare) for c in ds.test] == [
      (c.path, c.label, c.rare) for c in reference.test]
  assert data.clips_fingerprint(ds.train_paths) == data.clips_fingerprint(reference.train_paths)
  assert any(f"{root / 'train'}: 3 recording(s) in more than one file type (e.g. clip_0.flac, "
             "clip_0.wav); each is read once, as its .wav" in r.getMessage()
             for r in caplog.records)
  # Without the WAV the FLAC is read.
  (root / "train" / "clip_0.wav").unlink()
  assert [os.path.basename(p) for p in data.load_dataset(root).train_paths] == [
      "clip_0.flac", "clip_1.wav", "clip_2.wav"]


@pytest.mark.parametrize("suffix, fmt", [(".flac", "FLAC"), (".ogg", "OGG")])
def test_damaged_flac_and_ogg_are_truncated_clips(tmp_path, caplog, suffix, fmt):
  path = tmp_path / f"cut{suffix}"
  soundfile.write(str(path), _tone(1.0), SR, format=fmt)
  raw = path.read_bytes()
  path.write_bytes(raw[: len(raw) // 2])
  with pytest.raises(audio.TruncatedAudioError, match=f"{path}: damaged or cut short"):
    audio.load_wav(path)
  # In the mixing layout such a clip is skipped with its name, like a truncated WAV.
  root = _mixing_tree(tmp_path / "mix")
  (root / "train" / f"clip_9{suffix}").write_bytes(raw[: len(raw) // 2])
  assert len(data.load_dataset(root).train) == 3
  assert f"clip_9{suffix}: damaged or cut short" in caplog.text


def test_opus_is_read(tmp_path):
  path = tmp_path / "a.opus"
  soundfile.write(str(path), _tone(0.5), SR, format="OGG", subtype="OPUS")
  wave = audio.load_wav(path)
  assert abs(wave.size - 8000) < 400
  spectrum = np.abs(np.fft.rfft(wave))
  assert abs(np.argmax(spectrum) * SR / wave.size - 440.0) < 10.0
  assert data.list_sounds(tmp_path) == [str(path)]


def test_no_sound_file_names_every_type_read(tmp_path):
  (tmp_path / "notes.txt").write_text("x")
  with pytest.raises(data.DataError, match=r"no something-else sounds "
                     r"\(\*\.wav/\*\.flac/\*\.ogg/\*\.oga/\*\.opus/\*\.mp3/\*\.aif/\*\.aiff/\*\.w64/\*\.rf64\)"):
    data.load_something_else(tmp_path)


def test_training_corpus_cuts_segments_and_skips_short_clips():
  waves = [np.arange(7000, dtype=np.float32), np.ones(2000, np.float32),
           np.full(3000, 2.0, np.float32)]
  corpus = data.training_corpus(waves, segment_seconds=3.0, sr=1000)
  assert corpus.shape == (3, 3000) and corpus.dtype == np.float32
  np.testing.assert_array_equal(corpus[1], np.arange(3000, 6000))
  np.testing.assert_array_equal(corpus[2], 2.0)
  with pytest.raises(data.DataError, match="at least"):
    data.training_corpus([np.ones(10)], segment_seconds=3.0, sr=1000)


def test_pad_clips():
  waves, lengths = data.pad_clips([np.ones(3), 2 * np.ones(5)], max_len=6)
  assert waves.shape == (2, 6) and waves.dtype == np.float32
  assert lengths.dtype == np.int32 and list(lengths) == [3, 5]
  np.testing.assert_array_equal(waves[0], [1, 1, 1, 0, 0, 0])
  assert data.pad_clips([np.ones(3), np.ones(5)])[0].shape == (2, 5)
  with pytest.raises(ValueError, match="max_len"):
    data.pad_clips([np.ones(7)], max_len=6)


# ----------------------------------------------------------------------------
# Synthetic data set
# ----------------------------------------------------------------------------

SMALL = dict(num_train=3, num_test=4, clip_seconds=2.0, num_noise=1, noise_seconds=1.0,
             num_anomaly=5, num_something_else=4, rare_fraction=0.3, rare_seconds=1.0,
             rare_test_fraction=0.5)


def _all_files(root):
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, _, files in os.walk(root) for f in files)


def test_synthetic_is_deterministic(tmp_path):
  a = synthetic.generate(tmp_path / "a", seed=0, **SMALL)
  b = synthetic.generate(tmp_path / "b", seed=0, **SMALL)
  c = synthetic.generate(tmp_path / "c", seed=1, **SMALL)
  files = _all_files(a)
  assert files == _all_files(b) and len(files) == 3 + 4 + 1 + 5 + 4 + 1
  for name in files:
    assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False), name
  assert not filecmp.cmp(os.path.join(a, "train", "normal_0000.wav"),
                         os.path.join(c, "train", "normal_0000.wav"), shallow=False)


def test_synthetic_set_loads_and_is_well_formed(tmp_path):
  root = synthetic.generate(tmp_path / "s", **SMALL)
  meta = json.loads((tmp_path / "s" / "metadata.json").read_text())
  assert len(meta["rare_test_clips"]) == 2
  assert meta["rare_train_fraction"] == pytest.approx(1 / 3)  # SMALL's 1-s episodes, 2 of 6 s
  ds = data.load_dataset(root)
  assert ds.layout == "mixing" and len(ds.train) == 3 and len(ds.test) == 4 * 3 * 2
  assert {os.path.basename(c.path) for c in ds.test if c.rare} == set(meta["rare_test_clips"])
  something_else = data.load_something_else(os.path.join(root, "something_else"))
  assert len(something_else) == 4
  for name in _all_files(root):
    if name.endswith(".wav"):
      wave, sr = soundfile.read(os.path.join(root, name))
      assert sr == SR and 0.0 < np.max(np.abs(wave)) <= 0.9 + 1e-4, name
      if name.startswith(("something_else", "anomaly")):
        assert wave.size < 5 * SR, name
  families = {name.split(os.sep)[1].rsplit("_", 1)[0] for name in _all_files(root)
              if name.startswith("anomaly")}
  assert families == set(synthetic.ANOMALY_FAMILIES)
  assert not families & set(synthetic.SOMETHING_ELSE_FAMILIES)


def _mean_log_spectrum(wave, n_fft=512):
  frames = wave[: wave.size // n_fft * n_fft].reshape(-1, n_fft) * np.hanning(n_fft)
  return np.log(np.mean(np.abs(np.fft.rfft(frames)) ** 2, axis=0) + 1e-10)


def test_rare_mode_is_spectrally_different():
  freqs = np.fft.rfftfreq(512, 1 / SR)
  centroid = lambda log_spec: np.sum(freqs * np.exp(log_spec)) / np.sum(np.exp(log_spec))
  for seed in range(3):
    wave = synthetic.machine_sound(np.random.default_rng(seed), num_samples=6 * SR, sr=SR,
                                   rare_spans=[(4 * SR, 6 * SR)])
    frequent_a = _mean_log_spectrum(wave[: 2 * SR])
    frequent_b = _mean_log_spectrum(wave[2 * SR: 4 * SR])
    rare = _mean_log_spectrum(wave[4 * SR + 2400: 6 * SR - 2400])  # inside the ramps
    within = np.mean(np.abs(frequent_a - frequent_b))
    between = np.mean(np.abs(rare - frequent_b))
    assert between > 3 * within, (seed, between, within)
    assert centroid(rare) > 1.1 * centroid(frequent_b), seed


def _centroids(wave, n_fft=512):
  """Spectral centroid (Hz) of each non-overlapping n_fft-sample frame."""
  frames = wave[: wave.size // n_fft * n_fft].reshape(-1, n_fft) * np.hanning(n_fft)
  power = np.abs(np.fft.rfft(frames)) ** 2
  return power @ np.fft.rfftfreq(n_fft, 1 / SR) / np.sum(power, axis=1)


def test_rare_intervals_in_metadata_are_where_the_rare_mode_sounds(tmp_path):
  # rare_seconds above half a clip: episodes are half a clip long, and so are their intervals.
  root = synthetic.generate(tmp_path / "s", **{**SMALL, "rare_seconds": 1.5})
  meta = json.loads((tmp_path / "s" / "metadata.json").read_text())
  assert meta["rare_intervals"] and meta["rare_train_fraction"] == pytest.approx(1 / 3)
  for name, intervals in meta["rare_intervals"].items():
    ((start, stop),) = intervals
    assert 0.0 <= start and stop <= 2.0 and stop - start == pytest.approx(1.0), name
    wave, _ = soundfile.read(os.path.join(root, name))
    centroid = _centroids(wave)
    t = (np.arange(centroid.size) + 0.5) * 512 / SR
    inside = (t > start + 0.2) & (t < stop - 0.2)  # inside the ramps
    outside = (t < start - 0.05) | (t > stop + 0.05)
    assert np.median(centroid[inside]) > 1.1 * np.median(centroid[outside]), name


def test_frequent_mode_level_does_not_depend_on_a_rare_episode():
  # RMS ~0.1 over the frequent-mode part: a clip with a rare episode has, outside it,
  # the level of the same clip without one (same random stream).
  for seed in range(3):
    span = (3 * SR, 6 * SR)
    with_rare = synthetic.machine_sound(np.random.default_rng(seed), num_samples=8 * SR,
                                        sr=SR, rare_spans=[span])
    without = synthetic.machine_sound(np.random.default_rng(seed), num_samples=8 * SR, sr=SR)
    outside = np.r_[0:span[0], span[1]:8 * SR]
    rms = lambda w: np.sqrt(np.mean(np.square(w[outside], dtype=np.float64)))
    assert rms(with_rare) == pytest.approx(rms(without), rel=0.01), seed


def test_ensure_generates_once_atomically(tmp_path, monkeypatch):
  monkeypatch.setenv("BU_JAX_DATA", str(tmp_path / "cache"))
  assert synthetic.default_cache_dir(3) == str(tmp_path / "cache" / "synthetic-v1-seed3")
  with pytest.raises(ValueError, match="root="):
    synthetic.ensure(0, num_train=2)
  root = tmp_path / "cache" / "small"
  path = synthetic.ensure(0, root=root, **SMALL)
  assert path == str(root) and (root / "metadata.json").exists()
  assert os.listdir(tmp_path / "cache") == ["small"]  # no temporary directory left
  stamp = os.path.getmtime(root / "metadata.json")
  assert synthetic.ensure(0, root=root, **SMALL) == str(root)
  assert os.path.getmtime(root / "metadata.json") == stamp  # not regenerated
  with pytest.raises(ValueError, match="other arguments"):
    synthetic.ensure(0, root=root, **{**SMALL, "num_train": 4})
  with pytest.raises(ValueError, match="not an empty directory"):
    synthetic.generate(root)


# ----------------------------------------------------------------------------
# Bad audio is named rightly
# ----------------------------------------------------------------------------


def _truncated(path, seconds=0.5):
  """A valid WAV cut to a third of its bytes (the header still declares the whole)."""
  full = _write(path, seconds=seconds)
  raw = open(full, "rb").read()
  with open(full, "wb") as f:
    f.write(raw[: len(raw) // 3])
  return full


def test_text_file_named_wav_gives_a_real_reason(tmp_path):
  path = tmp_path / "notes.wav"
  path.write_text("this is not audio\n" * 20)
  with pytest.raises(audio.AudioError) as info:
    audio.load_wav(path)
  message = str(info.value)
  assert str(path) in message and "not a recognised audio format" in message
  assert "NoBackendError: )" not in message and "b'this'" in message
  # libsndfile's reason, without its own "Error opening '<path>'" in front: the file once.
  assert "Format not recognised" in message and message.count(str(path)) == 1


@pytest.mark.parametrize("size, readable", [(0, False), (0xFFFFFFFF, True)])
def test_wav_whose_header_was_never_finished(tmp_path, size, readable):
  # A recorder stopped before writing the sizes: 0xFFFFFFFF is read (libsndfile takes it as
  # "to the end"); 0 reads as no samples at all, which is said with the bytes that follow.
  path = _write(tmp_path / "rec.wav", seconds=0.5)
  raw = bytearray(open(path, "rb").read())
  at = raw.find(b"data")
  raw[at + 4: at + 8] = size.to_bytes(4, "little")
  raw[4:8] = size.to_bytes(4, "little")
  open(path, "wb").write(bytes(raw))
  if readable:
    assert audio.load_wav(path).size == 8000
  else:
    with pytest.raises(audio.AudioError, match=re.escape(
        f"{path}: its WAV header declares 0 bytes of samples, but 16000 bytes follow")):
      audio.load_wav(path)


def test_truncated_wav_is_its_own_error_naming_the_file(tmp_path):
  path = _truncated(tmp_path / "cut.wav")
  with pytest.raises(audio.TruncatedAudioError, match=f"{path}: truncated WAV"):
    audio.load_wav(path)
  assert audio.load_wav(_write(tmp_path / "whole.wav")).size == 4000  # untouched


def _wav_with_an_odd_chunk(path, wave, *, keep_bytes=None):
  """A 16-bit WAV with a 3-byte chunk (and its pad byte, RIFF's rule) before its samples,
  as some recorders write; cut to ``keep_bytes`` if given."""
  pcm = np.round(np.asarray(wave) * 32767).astype("<i2").tobytes()
  fmt = (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + SR.to_bytes(4, "little") \
      + (2 * SR).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
  body = (b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt
          + b"note" + (3).to_bytes(4, "little") + b"abc\x00"
          + b"data" + len(pcm).to_bytes(4, "little") + pcm)
  raw = b"RIFF" + len(body).to_bytes(4, "little") + body
  path.write_bytes(raw[:keep_bytes])
  return path


def test_a_truncated_wav_with_an_odd_sized_chunk_is_still_found(tmp_path):
  """The data chunk is found past a chunk of odd size (followed by a pad byte)."""
  wave = _tone(0.25)
  assert audio.load_wav(_wav_with_an_odd_chunk(tmp_path / "whole.wav", wave)).size == 4000
  path = _wav_with_an_odd_chunk(tmp_path / "cut.wav", wave, keep_bytes=3000)
  with pytest.raises(audio.TruncatedAudioError, match=re.escape(
      f"{path}: truncated WAV file (its header declares 8000 bytes of samples, the file "
      "holds 2944)")):
    audio.load_wav(path)


@pytest.mark.parametrize("sr, frames", [(SR, 4800), (22050, 6615), (44100, 13230),
                                       (22050, 1001), (44100, 1003)])
def test_probe_gives_load_wav_length_without_decoding(tmp_path, sr, frames):
  # 1001 samples at 22.05 kHz are 726.3 at 16 kHz: rounded up, as the resampler does (727).
  path = _write(tmp_path / "a.wav", _tone(1.0, sr=sr)[:frames], sr=sr)
  assert audio.probe(path) == audio.load_wav(path).size == int(np.ceil(frames * SR / sr))


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "no such file"),
    (lambda p: (p.write_bytes(b""), p)[1], r"empty file \(0 bytes\)"),
    (lambda p: (p.write_text("this is not audio\n" * 20), p)[1],
     r"cannot be read as audio \(not a recognised audio format"),
    (lambda p: _truncated(p), "truncated WAV"),
    (lambda p: _write(p, np.zeros(0, np.float32)), "audio file holds no samples"),
])
def test_probe_raises_what_load_wav_raises_naming_the_file(tmp_path, make, message):
  path = str(make(tmp_path / "bad.wav"))
  for read in (audio.probe, audio.load_wav):
    with pytest.raises(audio.AudioError, match=f"{path}: {message}"):
      read(path)


def test_very_loud_file_is_loaded_with_a_warning_naming_it(tmp_path, caplog):
  path = str(tmp_path / "loud.wav")
  soundfile.write(path, np.full(800, 1e6, np.float32), SR, subtype="FLOAT")
  with caplog.at_level("WARNING"):
    wave = audio.load_wav(path)
  assert wave.max() == pytest.approx(1e6)
  assert path in caplog.text and "peak amplitude" in caplog.text
  caplog.clear()
  with caplog.at_level("WARNING"):
    audio.load_wav(_write(tmp_path / "quiet.wav"))
  assert "peak amplitude" not in caplog.text


def test_silent_noise_file_is_named_not_the_clip(tmp_path):
  root = _mixing_tree(tmp_path)
  silent = _write(root / "noise" / "n1.wav", np.zeros(1600, np.float32))
  with pytest.raises(data.DataError, match=f"{silent}: silent noise clip") as info:
    data.load_dataset(root)
  assert "train" not in str(info.value)


def test_silent_stretch_of_noise_names_the_noise_file(tmp_path):
  root = _mixing_tree(tmp_path)
  os.remove(root / "noise" / "n0.wav")
  noise = np.zeros(SR * 4, np.float32)
  noise[:80] = 0.1  # almost all silent: every 0.5-s excerpt but one is silent
  path = _write(root / "noise" / "n0.wav", noise)
  with pytest.raises(data.DataError, match=f"{path}: the noise excerpt mixed into"):
    data.load_dataset(root)


def test_silent_training_clip_is_named(tmp_path):
  root = _mixing_tree(tmp_path)
  silent = _write(root / "train" / "clip_9.wav", np.zeros(8000, np.float32))
  with pytest.raises(data.DataError, match=f"{silent}: silent clip"):
    data.load_dataset(root)


def test_silent_training_clip_of_a_dcase_layout_is_named(tmp_path):
  _write(tmp_path / "train" / "normal_id_00_00000000.wav")
  silent = _write(tmp_path / "train" / "normal_id_00_00000001.wav", np.zeros(8000, np.float32))
  _write(tmp_path / "test" / "normal_id_00_00000000.wav")
  _write(tmp_path / "test" / "anomaly_id_00_00000000.wav")
  with pytest.raises(data.DataError, match=f"{silent}: silent training clip"):
    data.load_dataset(tmp_path)
  for sr in (SR, 48000):  # a constant offset is no sound either, also once resampled
    soundfile.write(silent, np.full(sr // 2, 0.25, np.float32), sr)
    with pytest.raises(data.DataError, match=f"{silent}: silent training clip \\(every sample "
                       "is 0.25, a constant offset\\)"):
      data.load_dataset(tmp_path)
  # A silent *test* clip is scored (it is what it is), not refused.
  os.remove(silent)
  _write(tmp_path / "test" / "normal_id_00_00000009.wav", np.zeros(8000, np.float32))
  assert len(data.load_dataset(tmp_path).test) == 3


@pytest.mark.parametrize("missing, present", [(0, 1), (1, 0)])
def test_check_conditions_names_the_folder_without_one_label(tmp_path, missing, present):
  clips = [data.TestClip(path=str(tmp_path / "test_b" / f"c{i}.wav"), wave=np.ones(4), label=present,
                         condition="test_b_id_00") for i in range(3)]
  clips += [data.TestClip(path=str(tmp_path / "test_a" / f"c{i}.wav"), wave=np.ones(4), label=i % 2,
                          condition="test_a_id_00") for i in range(2)]
  name = "normal" if missing == 0 else "anomalous"
  with pytest.raises(data.DataError,
                     match=f"{tmp_path / 'test_b'}: test condition 'test_b_id_00' has no {name} clips"):
    data.check_conditions(clips)
  data.check_conditions(clips[3:])  # both labels: no error


@pytest.mark.parametrize("snr_db", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_snr_names_the_flag(tmp_path, snr_db):
  root = _mixing_tree(tmp_path)
  with pytest.raises(data.DataError, match="--snr_db must be a finite"):
    data.load_dataset(root, snr_db=snr_db)


def test_truncated_clips_are_skipped_with_their_name(tmp_path, caplog):
  root = _mixing_tree(tmp_path)
  reference = data.load_dataset(root, seed=3)
  train_cut = _truncated(root / "train" / "clip_1b.wav")
  test_cut = _truncated(root / "test" / "clip_0b.wav")
  anomaly_cut = _truncated(root / "anomaly" / "a0b.wav")
  with caplog.at_level("WARNING"):
    ds = data.load_dataset(root, seed=3)
  for path in (train_cut, test_cut, anomaly_cut):
    assert path in caplog.text
  assert "truncated" in caplog.text
  assert ds.train_paths == reference.train_paths and len(ds.train) == 3
  # the other clips get the noise they got before (indices are file positions)
  np.testing.assert_array_equal(ds.train[0], reference.train[0])
  assert [c.path for c in ds.test] == [c.path for c in reference.test]


def test_a_truncated_anomaly_leaves_the_anomaly_paths_right(tmp_path):
  # Skipping a damaged anomalous sound must not shift which file each clip names as its anomaly.
  root = _mixing_tree(tmp_path)
  reference = data.load_dataset(root, seed=3)
  _truncated(root / "anomaly" / "a0b.wav")  # sorted between a0.wav and a1.wav
  ds = data.load_dataset(root, seed=3)
  assert [c.anomaly_path for c in ds.test] == [c.anomaly_path for c in reference.test]
  assert "a1.wav" in {os.path.basename(c.anomaly_path) for c in ds.test if c.label == 1}
  for clip, ref in zip(ds.test, reference.test):
    np.testing.assert_array_equal(clip.wave, ref.wave)


def test_something_else_silent_and_truncated_clips_skipped_with_their_name(tmp_path, caplog):
  _write(tmp_path / "good.wav", seconds=0.25)
  silent = _write(tmp_path / "silent.wav", np.zeros(2000, np.float32))
  cut = _truncated(tmp_path / "cut.wav")
  with caplog.at_level("WARNING"):
    waves = data.load_something_else(tmp_path)
  assert [w.size for w in waves] == [4000]
  assert silent in caplog.text and cut in caplog.text
  os.remove(tmp_path / "good.wav")
  with pytest.raises(data.DataError, match="silent or truncated"):
    data.load_something_else(tmp_path)


def test_something_else_clip_with_zero_padding_is_trimmed_with_a_warning(tmp_path, caplog):
  """Exact zeros at a clip's ends (padded exports) would be trained as anomalous frames
  and inflate its ANR: the clip is trimmed to its sound, and the warning names it; a few
  padding samples, or sound at a low level, are kept as they are, without a word. A
  padded clip longer than max_seconds whose sound is shorter is kept."""
  tone = _tone(0.5)
  padded = _write(tmp_path / "padded.wav", np.concatenate([np.zeros(SR // 8), tone,
                                                           np.zeros(SR // 4)]))
  _write(tmp_path / "tight.wav", np.concatenate([np.zeros(40), tone, np.zeros(40)]))
  _write(tmp_path / "quiet.wav", 1e-3 * tone)
  with caplog.at_level("WARNING"):
    waves = data.load_something_else(tmp_path)
  assert [w.size for w in waves] == [tone.size, tone.size, tone.size + 80]  # padded, quiet, tight
  assert data.silent_edges(waves[0]) == (0, 0) and np.abs(waves[0]).max() > 0.1
  (message,) = [r.getMessage() for r in caplog.records]
  assert message.startswith(f"something-else clip {padded}: 0.38 s of its 0.88 s are digital "
                            "silence at its start and end (zero padding); trimmed to its 0.50 s")
  assert len(data.load_something_else(tmp_path, max_seconds=0.6)) == 3  # 0.88 s padded
  assert data.silent_edges(np.zeros(5)) == (5, 0)
  assert data.silent_edges(np.array([0, 0, 1.0, 0])) == (2, 1)


def test_corpus_and_clips_refuse_stereo_and_integer_samples():
  """A (N, 2) array would be cut into interleaved L/R samples and int16 PCM read as
  amplitudes in the thousands: both refused, naming the clip (load_wav gives mono floats)."""
  stereo, pcm = np.zeros((3000, 2), np.float32), np.ones(3000, np.int16)
  for call, name in ((lambda w: data.training_corpus([w], segment_seconds=1.0, sr=1000,
                                                      paths=["train/a.wav"]), "train/a.wav"),
                     (lambda w: data.pad_clips([np.ones(5, np.float32), w]), "pad_clips: clip 1")):
    with pytest.raises(ValueError, match=f"{name}: a mono waveform is 1-D, got shape"):
      call(stereo)
    with pytest.raises(ValueError, match=f"{name}: waveform of int16 samples"):
      call(pcm)
  assert data.training_corpus([np.ones(3000)], segment_seconds=1.0, sr=1000).shape == (3, 1000)


def test_training_corpus_names_the_short_clips(caplog):
  waves = [np.ones(7000, np.float32), np.ones(100, np.float32), np.ones(2999, np.float32)]
  paths = ["train/long.wav", "train/tiny.wav", "train/almost.wav"]
  with caplog.at_level("WARNING"):
    corpus = data.training_corpus(waves, segment_seconds=3.0, sr=1000, paths=paths)
  assert corpus.shape == (2, 3000)
  assert "train/tiny.wav (0.10 s)" in caplog.text and "train/almost.wav" in caplog.text
  assert "train/long.wav" not in caplog.text
  caplog.clear()
  with caplog.at_level("WARNING"):
    data.training_corpus(waves, segment_seconds=3.0, sr=1000)
  assert "clip #1" in caplog.text and "clip #2" in caplog.text
  with pytest.raises(ValueError, match="paths"):
    data.training_corpus(waves, segment_seconds=3.0, sr=1000, paths=paths[:2])


def test_list_wavs_names_what_it_skips(tmp_path, caplog):
  good = _write(tmp_path / "b.WAV")
  os.symlink(tmp_path / "gone.wav", tmp_path / "a.wav")  # a broken link
  (tmp_path / "c.wav").mkdir()
  (tmp_path / "notes.txt").write_text("x")
  assert data.list_wavs(tmp_path) == [good]
  warned = sorted(r.getMessage() for r in caplog.records)
  assert warned == [f"skipped {tmp_path / 'a.wav'}: a broken link",
                    f"skipped {tmp_path / 'c.wav'}: not a regular file"]


def test_a_skipped_entry_is_named_once_per_load(tmp_path, caplog):
  _write(tmp_path / "train" / "normal_id_00_00000000.wav")
  (tmp_path / "train" / "normal_id_00_00000001.wav").mkdir()  # not a file
  _write(tmp_path / "test" / "normal_id_00_00000000.wav")
  _write(tmp_path / "test" / "anomaly_id_00_00000000.wav")
  data.load_dataset(tmp_path)  # detects the layout, then lists the folder again
  skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
  assert skipped == [f"skipped {tmp_path / 'train' / 'normal_id_00_00000001.wav'}: "
                     "not a regular file"]
  os.remove(tmp_path / "train" / "normal_id_00_00000000.wav")
  caplog.clear()
  with pytest.raises(data.DataError, match="no training clips"):  # still named when nothing is left
    data.load_dataset(tmp_path)
  assert any("normal_id_00_00000001.wav: not a regular file" in r.getMessage()
             for r in caplog.records)
