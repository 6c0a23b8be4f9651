"""DCASE Task 2 mode: file-name grammars, loader, ground truth, metrics, files."""

import csv
import os
import re
import warnings

import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as sk_metrics
import soundfile

from bu_jax import data as data_lib
from bu_jax import dcase, dcase_metrics, dcase_run


def _write_tree(root, machine, files, *, seconds=0.2, sr=16000):
  """Writes tiny WAVs: files = {"train": [names], "test": [names]}."""
  for split, names in files.items():
    folder = os.path.join(root, machine, split)
    os.makedirs(folder, exist_ok=True)
    for i, name in enumerate(names):
      wave = 0.1 * np.sin(2 * np.pi * (200 + 10 * i) * np.arange(int(seconds * sr)) / sr)
      soundfile.write(os.path.join(folder, name), wave.astype(np.float32), sr, subtype="PCM_16")


# ------------------------------------------------------------------ names


@pytest.mark.parametrize("name, want", [
    ("normal_id_00_00000000.wav", ("2020", "00", None, 0, {})),
    ("anomaly_id_04_00000123.wav", ("2020", "04", None, 1, {})),
    ("id_02_00000005.wav", ("eval", "02", None, None, {})),
    ("section_00_source_train_normal_0000.wav", ("2021", "00", "source", 0, {})),
    ("section_01_target_test_anomaly_0003.wav", ("2021", "01", "target", 1, {})),
    ("section_02_test_normal_0001.wav", ("2021", "02", None, 0, {})),
    ("section_00_source_train_normal_0000_car_A1_spd_28V_mic_1.wav",
     ("2022+", "00", "source", 0, {"car": "A1", "spd": "28V", "mic": "1"})),
    ("section_00_target_test_anomaly_0049_vel_6_loc_A_noise_1.wav",
     ("2022+", "00", "target", 1, {"vel": "6", "loc": "A", "noise": "1"})),
    ("section_00_source_train_normal_0007_noAttribute.wav",
     ("2022+", "00", "source", 0, {})),
    ("section_03_0000.wav", ("eval", "03", None, None, {})),
    ("section_00_0199.WAV", ("eval", "00", None, None, {})),
])
def test_parse_name_every_grammar(name, want):
  got = dcase.parse_name(name)
  assert (got.grammar, got.section, got.domain, got.label, got.attributes) == want
  assert got.name == name


@pytest.mark.parametrize("name", [
    "normal_00000000.wav", "section_xx_source_train_normal_0000.wav", "readme.txt",
    "section_00_source_train_broken_0000.wav", "clip.wav", "section_00_source.wav"])
def test_malformed_names_do_not_parse(name):
  assert dcase.parse_name(name) is None


def test_year_restricts_the_grammar():
  assert dcase.parse_name("normal_id_00_00000000.wav", year="2022") is None
  assert dcase.parse_name("section_00_source_train_normal_0000.wav", year="2020") is None
  # 2022+ requires attribute pairs or noAttribute; 2021 allows any suffix.
  assert dcase.parse_name("section_00_source_train_normal_0000.wav", year="2023") is None
  assert dcase.parse_name("section_00_source_train_normal_0000_odd.wav", year="2024") is None
  assert dcase.parse_name("section_00_source_train_normal_0000_odd.wav", year="2021") is not None
  assert dcase.parse_name("section_00_0000.wav", year="2025").grammar == "eval"
  with pytest.raises(ValueError, match="year"):
    dcase.parse_name("x.wav", year="1999")


def test_detect_and_metric_year():
  names = lambda *ns: [dcase.parse_name(n) for n in ns]
  assert dcase.detect_year(names("normal_id_00_00000000.wav")) == "2020"
  assert dcase.detect_year(names("section_00_source_train_normal_0000.wav")) == "2021"
  assert dcase.detect_year(names("section_00_source_train_normal_0000_a_1.wav")) == "2022"
  assert [dcase.metric_year(y) for y in dcase.YEARS] == ["2020", "2021"] + ["2022"] * 4


# ------------------------------------------------------------------ loader


@pytest.mark.parametrize("year, train, test", [
    ("2020", ["normal_id_00_00000000.wav", "normal_id_02_00000000.wav"],
     ["normal_id_00_00000000.wav", "anomaly_id_00_00000000.wav", "normal_id_02_00000001.wav"]),
    ("2021", ["section_00_source_train_normal_0000.wav", "section_00_target_train_normal_0000.wav"],
     ["section_00_source_test_normal_0000.wav", "section_00_target_test_anomaly_0000.wav"]),
    ("2023", ["section_00_source_train_normal_0000_a_1.wav",
              "section_00_target_train_normal_0000_noAttribute.wav"],
     ["section_00_source_test_normal_0000_a_1.wav", "section_00_target_test_anomaly_0000_a_2.wav"]),
])
def test_loader_reads_each_year(tmp_path, year, train, test):
  _write_tree(tmp_path, "fan", {"train": train, "test": test})
  md = dcase.load_machine_type(str(tmp_path), "fan", year=year)
  assert [c.name for c in md.train] == sorted(train)
  assert [c.name for c in md.test] == sorted(test)
  assert all(c.wave is not None and c.wave.dtype == np.float32 for c in md.train + md.test)
  assert {c.label for c in md.test} == {0, 1}
  assert dcase.detect_year([c.meta for c in md.train]) == dcase.metric_year(year)
  assert dcase.discover_machine_types(str(tmp_path)) == ["fan"]


def test_silent_training_clip_is_named(tmp_path):
  _write_tree(tmp_path, "fan", {"train": ["normal_id_00_00000000.wav"],
                                "test": ["normal_id_00_00000000.wav", "anomaly_id_00_00000000.wav"]})
  silent = os.path.join(tmp_path, "fan", "train", "normal_id_00_00000001.wav")
  soundfile.write(silent, np.zeros(3200, np.float32), 16000, subtype="PCM_16")
  with pytest.raises(data_lib.DataError, match=f"{silent}: silent training clip"):
    dcase.load_machine_type(str(tmp_path), "fan")


def test_malformed_name_is_reported_with_the_file_and_skipped(tmp_path, caplog):
  _write_tree(tmp_path, "pump", {
      "train": ["section_00_source_train_normal_0000_a_1.wav", "garbage_0000.wav",
                "section_00_source_train_anomaly_0001_a_1.wav"],
      "test": ["section_00_source_test_normal_0000_a_1.wav", "section_00_oops_test.wav"]})
  with caplog.at_level("WARNING"):
    md = dcase.load_machine_type(str(tmp_path), "pump")
  assert [c.name for c in md.train] == ["section_00_source_train_normal_0000_a_1.wav"]
  assert [c.name for c in md.test] == ["section_00_source_test_normal_0000_a_1.wav"]
  assert len(md.skipped) == 3
  text = caplog.text
  assert "garbage_0000.wav" in text and "section_00_oops_test.wav" in text
  assert "anomalous clip in the training folder" in text


def test_a_clip_named_for_the_other_split_is_skipped(tmp_path, caplog):
  # A training clip copied into test/ (its name says train) is not scored as a test clip.
  _write_tree(tmp_path, "pump", {
      "train": ["section_00_source_train_normal_0000.wav"],
      "test": ["section_00_source_test_normal_0000.wav", "section_00_source_test_anomaly_0000.wav",
               "section_00_source_train_normal_0000.wav"]})
  with caplog.at_level("WARNING"):
    md = dcase.load_machine_type(str(tmp_path), "pump", load_audio=False)
  assert [c.name for c in md.test] == ["section_00_source_test_anomaly_0000.wav",
                                       "section_00_source_test_normal_0000.wav"]
  assert md.skipped == [str(tmp_path / "pump" / "test" / "section_00_source_train_normal_0000.wav")]
  assert "is a train clip in the test folder" in caplog.text


def test_a_few_names_of_another_year_do_not_switch_a_machine_type(tmp_path, caplog):
  """--year=auto: two 2020 names copied into a 2023 test folder are skipped, named, and
  the machine type keeps its 2022+ grammar (they once made it a 2020 machine type, its
  clips merged into one "section 00"); --year=2023 skips them as before."""
  names = [f"section_00_{d}_test_{k}_{i:04d}_noAttribute.wav" for d in ("source", "target")
           for k in ("normal", "anomaly") for i in range(2)]
  _write_tree(tmp_path, "gearbox", {
      "train": [f"section_00_source_train_normal_{i:04d}_noAttribute.wav" for i in range(3)],
      "test": names + ["normal_id_00_00000000.wav", "anomaly_id_00_00000001.wav"]})
  with caplog.at_level("WARNING"):
    md = dcase.load_machine_type(str(tmp_path), "gearbox", load_audio=False)
  assert sorted(c.name for c in md.test) == sorted(names)
  assert dcase.detect_year([c.meta for c in md.train + md.test]) == "2022"
  assert sorted(os.path.basename(p) for p in md.skipped) == [
      "anomaly_id_00_00000001.wav", "normal_id_00_00000000.wav"]
  assert "skipped 2 file(s) named by the DCASE 2020 grammar among 11" in caplog.text
  assert len(dcase.load_machine_type(str(tmp_path), "gearbox", year="2023",
                                     load_audio=False).test) == len(names)


def test_test_folders_per_condition_are_read_one_by_one(tmp_path):
  """A machine type with test_anr-10dB/ etc. but no test/ (realaudio-dev's layout):
  each folder's clips, by folder; clips of the same name in two folders stay apart."""
  _write_tree(tmp_path, "engine", {"train": ["normal_id_00_00000000.wav"],
                                   "test_anr-10dB": ["anomaly_id_00_00000000.wav",
                                                     "normal_id_00_00000001.wav"],
                                   "test_anr-20dB": ["anomaly_id_00_00000000.wav"]})
  md = dcase.load_machine_type(str(tmp_path), "engine")
  assert list(md.test_folders) == ["test_anr-10dB", "test_anr-20dB"]
  assert [len(v) for v in md.test_folders.values()] == [2, 1] and len(md.test) == 3
  assert {os.path.basename(os.path.dirname(c.path)) for c in md.test_folders["test_anr-20dB"]} \
      == {"test_anr-20dB"}
  assert [c.label for c in md.test_folders["test_anr-10dB"]] == [1, 0]


def test_a_test_folder_beside_condition_folders_is_one_of_them(tmp_path):
  """As the toy-car job reads them (data.test_folders): every test*/ folder."""
  _write_tree(tmp_path, "engine", {"train": ["normal_id_00_00000000.wav"],
                                   "test": ["anomaly_id_00_00000000.wav"],
                                   "test_anr-10dB": ["anomaly_id_00_00000001.wav"]})
  md = dcase.load_machine_type(str(tmp_path), "engine")
  assert list(md.test_folders) == ["test", "test_anr-10dB"] and len(md.test) == 2
  _write_tree(tmp_path / "plain", "engine", {"train": ["normal_id_00_00000000.wav"],
                                             "test": ["anomaly_id_00_00000000.wav"]})
  md = dcase.load_machine_type(str(tmp_path / "plain"), "engine")
  assert md.test_folders == {} and len(md.test) == 1


def test_dcase2021_source_test_and_target_test_are_one_test_set(tmp_path, caplog):
  """The organisers' 2021 layout (no test/): both folders read together, as test/
  is (one test set, not one per folder), each clip's domain its folder's."""
  _write_tree(tmp_path, "fan", {
      "train": ["section_00_source_train_normal_0000.wav", "section_00_target_train_normal_0000.wav"],
      "source_test": ["section_00_source_test_normal_0000.wav",
                      "section_00_source_test_anomaly_0000.wav",
                      "section_00_target_test_normal_0009.wav"],  # the other domain's name
      "target_test": ["section_00_target_test_anomaly_0003.wav"]})
  assert dcase.discover_machine_types(str(tmp_path)) == ["fan"]
  md = dcase.load_machine_type(str(tmp_path), "fan", load_audio=False)
  assert md.test_folders == {}
  assert [(c.name, c.label, c.domain) for c in md.test] == [
      ("section_00_source_test_anomaly_0000.wav", 1, "source"),
      ("section_00_source_test_normal_0000.wav", 0, "source"),
      ("section_00_target_test_anomaly_0003.wav", 1, "target")]
  assert md.skipped == [str(tmp_path / "fan" / "source_test" /
                            "section_00_target_test_normal_0009.wav")]
  assert "its name says target domain, its folder source_test" in caplog.text
  # The evaluation set: unlabelled names with the domain, no train/ needed.
  _write_tree(tmp_path / "eval", "fan", {"source_test": ["section_03_source_test_0000.wav"],
                                         "target_test": ["section_03_target_test_0000.wav"]})
  assert dcase.discover_machine_types(str(tmp_path / "eval")) == ["fan"]
  ev = dcase.load_machine_type(str(tmp_path / "eval"), "fan", need_train=False, load_audio=False)
  assert [(c.section, c.label, c.domain) for c in ev.test] == [("03", None, "source"),
                                                                ("03", None, "target")]
  _write_tree(tmp_path, "fan", {"test": ["section_00_source_test_normal_0001.wav"]})
  with pytest.raises(dcase.DataError, match=re.escape(
      f"{tmp_path / 'fan'}: holds both test/ and source_test/, target_test/ (DCASE 2021's "
      "test folders); keep one layout")):
    dcase.load_machine_type(str(tmp_path), "fan", load_audio=False)


def test_loader_errors_name_the_folder(tmp_path):
  with pytest.raises(dcase.DataError, match="no such directory"):
    dcase.discover_machine_types(str(tmp_path / "nope"))
  with pytest.raises(dcase.DataError, match="no machine-type folders"):
    dcase.discover_machine_types(str(tmp_path))
  _write_tree(tmp_path, "fan", {"test": ["section_00_0000.wav"]})
  # a machine type that is not there: the ones that are, and a case slip named
  with pytest.raises(dcase.DataError, match=r"Fan: no such machine-type directory \(did you "
                     r"mean fan\? names are case-sensitive\); .* holds fan$"):
    dcase.load_machine_type(str(tmp_path), "Fan")
  with pytest.raises(dcase.DataError, match=r"pump: no such machine-type directory; .* holds fan$"):
    dcase.load_machine_type(str(tmp_path), "pump")
  with pytest.raises(dcase.DataError, match="fan/train: training directory does not exist"):
    dcase.load_machine_type(str(tmp_path), "fan")
  _write_tree(tmp_path, "fan", {"train": ["junk.wav"]})
  with pytest.raises(dcase.DataError, match="no normal training clips"):
    dcase.load_machine_type(str(tmp_path), "fan")


def test_a_machine_type_without_test_clips_is_named(tmp_path, caplog):
  _write_tree(tmp_path, "fan", {"train": ["section_00_source_train_normal_0000_a.wav"]})
  md = dcase.load_machine_type(str(tmp_path), "fan", load_audio=False)  # trained, not evaluated
  assert md.test == []
  assert any(f"{tmp_path / 'fan' / 'test'}: no test clips with DCASE names; this machine type "
             "is trained but not evaluated" in r.getMessage() for r in caplog.records)
  _write_tree(tmp_path / "eval", "fan", {"test": ["notes.wav"]})  # nothing to score there
  with pytest.raises(dcase.DataError, match=re.escape(
      f"{tmp_path / 'eval' / 'fan' / 'test'}: no test clips with DCASE names to score")):
    dcase.load_machine_type(str(tmp_path / "eval"), "fan", need_train=False, load_audio=False)


def test_evaluation_names_and_ground_truth(tmp_path):
  names = ["section_00_0000.wav", "section_00_0001.wav", "section_00_0002.wav"]
  _write_tree(tmp_path / "eval", "ToyDrone", {"test": names})
  md = dcase.load_machine_type(str(tmp_path / "eval"), "ToyDrone", need_train=False,
                               load_audio=False)
  assert [c.label for c in md.test] == [None] * 3 and md.test[0].meta.grammar == "eval"
  gt = tmp_path / "gt"
  for sub, values in (("ground_truth_data", (0, 1, 1)), ("ground_truth_domain", (1, 0, 1))):
    os.makedirs(gt / sub)
    with open(gt / sub / "ground_truth_ToyDrone_section_00_test.csv", "w") as f:
      f.writelines(f"{n},{v}\n" for n, v in zip(names, values))
  assert dcase.apply_ground_truth(md, str(gt)) == 3
  assert [(c.label, c.domain) for c in md.test] == [(0, "target"), (1, "source"), (1, "target")]
  with pytest.raises(dcase.DataError, match="no such ground-truth file"):
    other = dcase.MachineData("fan", "", [], [dcase.Clip("x", md.test[0].meta, None, None)], [])
    dcase.apply_ground_truth(other, str(gt))


def test_ground_truth_labels_only_the_unlabelled_clips(tmp_path):
  # A labelled (development-named) clip beside evaluation names keeps its label; the
  # ground-truth file need not list it.
  names = ["section_00_0000.wav", "section_00_0001.wav", "section_00_source_test_anomaly_0002.wav"]
  _write_tree(tmp_path / "eval", "ToyDrone", {"test": names})
  md = dcase.load_machine_type(str(tmp_path / "eval"), "ToyDrone", need_train=False,
                               load_audio=False)
  gt = tmp_path / "gt" / "ground_truth_data"
  os.makedirs(gt)
  (gt / "ground_truth_ToyDrone_section_00_test.csv").write_text(
      "section_00_0000.wav,0\nsection_00_0001.wav,1\n")
  assert dcase.apply_ground_truth(md, str(tmp_path / "gt")) == 2
  assert {c.name: c.label for c in md.test} == {
      "section_00_0000.wav": 0, "section_00_0001.wav": 1,
      "section_00_source_test_anomaly_0002.wav": 1}


def test_ground_truth_files_as_spreadsheets_write_them(tmp_path):
  names = ["section_00_0000.wav", "section_00_0001.wav"]
  _write_tree(tmp_path / "eval", "ToyDrone", {"test": names})

  def machine():
    return dcase.load_machine_type(str(tmp_path / "eval"), "ToyDrone", need_train=False,
                                   load_audio=False)
  gt = tmp_path / "gt"
  for sub in ("ground_truth_data", "ground_truth_domain"):
    os.makedirs(gt / sub, exist_ok=True)
  label_file = gt / "ground_truth_data" / "ground_truth_ToyDrone_section_00_test.csv"
  domain_file = gt / "ground_truth_domain" / "ground_truth_ToyDrone_section_00_test.csv"
  # A BOM and a header row (as Excel and pandas write them), CRLF, 1.0 for 1.
  label_file.write_bytes("\ufefffile,label\r\nsection_00_0000.wav,0\r\n"
                         "section_00_0001.wav,1.0\r\n".encode("utf-8"))
  domain_file.write_text("section_00_0000.wav,0\nsection_00_0001.wav,1\n")
  md = machine()
  assert dcase.apply_ground_truth(md, str(gt), need_domains=True) == 2
  assert [(c.label, c.domain) for c in md.test] == [(0, "source"), (1, "target")]
  for value in ("2", "-1", "0.6", "inf"):  # once an IndexError, a silent "target" or a 0
    label_file.write_text(f"section_00_0000.wav,0\nsection_00_0001.wav,{value}\n")
    with pytest.raises(dcase.DataError, match=re.escape(
        f"{label_file}:2: the value must be 0 or 1, got '{value}'")):
      dcase.apply_ground_truth(machine(), str(gt))
  label_file.write_text("section_00_0000.wav,0\nsection_00_0001.wav,1\n")
  domain_file.write_text("section_00_0000.wav,0\n")  # a clip without its domain row
  with pytest.raises(dcase.DataError, match=re.escape(f"{domain_file}: no row for "
                                                      "section_00_0001.wav")):
    dcase.apply_ground_truth(machine(), str(gt))
  os.remove(domain_file)  # DCASE 2020 has no domains; 2021 on needs them
  assert dcase.apply_ground_truth(machine(), str(gt)) == 2
  with pytest.raises(dcase.DataError, match="no such ground-truth file"):
    dcase.apply_ground_truth(machine(), str(gt), need_domains=True)


def test_dcase2021_ground_truth_one_file_per_section_and_domain(tmp_path):
  """dcase2021_task2_evaluator's ground_truth_data/ground_truth_<m>_section_<XX>_
  {source,target}_test.csv (no ground_truth_domain/): a clip named with its domain
  is looked up in that domain's file; one without, in both."""
  _write_tree(tmp_path / "eval", "fan", {
      "source_test": ["section_03_source_test_0000.wav", "section_03_source_test_0001.wav"],
      "target_test": ["section_03_target_test_0000.wav"]})

  def machine():
    return dcase.load_machine_type(str(tmp_path / "eval"), "fan", need_train=False,
                                   load_audio=False)
  gt = tmp_path / "gt"
  os.makedirs(gt / "ground_truth_data")
  source = gt / "ground_truth_data" / "ground_truth_fan_section_03_source_test.csv"
  target = gt / "ground_truth_data" / "ground_truth_fan_section_03_target_test.csv"
  source.write_text("section_03_source_test_0000.wav,1\nsection_03_source_test_0001.wav,0\n")
  target.write_text("section_03_target_test_0000.wav,1\nsection_03_0007.wav,0\n")
  md = machine()
  assert dcase.apply_ground_truth(md, str(gt), need_domains=True, year="2021") == 3
  assert [(c.name, c.label, c.domain) for c in md.test] == [
      ("section_03_source_test_0000.wav", 1, "source"),
      ("section_03_source_test_0001.wav", 0, "source"),
      ("section_03_target_test_0000.wav", 1, "target")]
  nameless = dcase.Clip("x", dcase.parse_name("section_03_0007.wav"), None, None)
  other = dcase.MachineData("fan", "", [], [nameless], [])
  assert dcase.apply_ground_truth(other, str(gt), year="2021") == 1
  assert (nameless.label, nameless.domain) == (0, "target")
  source.write_text("section_03_source_test_0000.wav,1\n")
  with pytest.raises(dcase.DataError, match=re.escape(
      f"{source}: no row for section_03_source_test_0001.wav")):
    dcase.apply_ground_truth(machine(), str(gt), year="2021")
  os.remove(target)
  with pytest.raises(dcase.DataError, match=re.escape(f"{target}: no such ground-truth file")):
    dcase.apply_ground_truth(machine(), str(gt), year="2021")


def test_dcase2020_ground_truth_is_eval_data_list(tmp_path):
  """dcase2020_task2_evaluator's eval_data_list.csv at the top of --ground_truth_dir:
  a machine-type line, then its clips' rows (eval name, dev-style name, label);
  clips matched by name within their machine type (the names repeat across them)."""
  names = ["id_01_00000000.wav", "id_01_00000001.wav", "id_03_00000000.wav"]
  _write_tree(tmp_path / "eval", "ToyCar", {"test": names})
  _write_tree(tmp_path / "eval", "fan", {"test": names[:1]})

  def machine(name="ToyCar"):
    return dcase.load_machine_type(str(tmp_path / "eval"), name, need_train=False,
                                   load_audio=False)
  gt = tmp_path / "gt"
  os.makedirs(gt)
  listing = gt / "eval_data_list.csv"
  listing.write_text("fan\nid_01_00000000.wav,anomaly_id_01_00000000.wav,1\n"
                     "ToyCar\nid_01_00000000.wav,normal_id_01_00000000.wav,0\n"
                     "id_01_00000001.wav,anomaly_id_01_00000000.wav,1\n"
                     "id_03_00000000.wav,normal_id_03_00000000.wav,0\n")
  md = machine()
  assert dcase.apply_ground_truth(md, str(gt), year="2020") == 3
  assert [(c.section, c.label, c.domain) for c in md.test] == [("01", 0, None), ("01", 1, None),
                                                                ("03", 0, None)]
  fan = machine("fan")
  assert dcase.apply_ground_truth(fan, str(gt), year="2020") == 1 and fan.test[0].label == 1
  listing.write_text("ToyCar\nid_01_00000000.wav,normal_id_01_00000000.wav,0\n"
                     "id_01_00000001.wav,anomaly_id_01_00000000.wav,1\n"
                     "fan\nid_03_00000000.wav,normal_id_03_00000000.wav,0\n")
  with pytest.raises(dcase.DataError, match=re.escape(
      f"{listing}: no row for id_03_00000000.wav under ToyCar")):
    dcase.apply_ground_truth(machine(), str(gt), year="2020")
  listing.write_text("fan\nid_01_00000000.wav,anomaly_id_01_00000000.wav,2\n")
  with pytest.raises(dcase.DataError, match=re.escape(
      f"{listing}:2: the label must be 0 or 1, got '2'")):
    dcase.apply_ground_truth(machine("fan"), str(gt), year="2020")
  with pytest.raises(dcase.DataError, match=re.escape(f"{listing}: no ToyCar line (it lists fan)")):
    listing.write_text("fan\n")
    dcase.apply_ground_truth(machine(), str(gt), year="2020")
  os.remove(listing)
  with pytest.raises(dcase.DataError, match=re.escape(
      f"{listing}: no such ground-truth file (DCASE 2020's)")):
    dcase.apply_ground_truth(machine(), str(gt), year="2020")


# ------------------------------------------------------------------ metrics


def test_section_metrics_by_hand():
  # 2 source normals, 2 target normals, 1 source and 1 target anomaly.
  labels = [0, 0, 0, 0, 1, 1]
  domains = ["source", "source", "target", "target", "source", "target"]
  scores = [0.1, 0.4, 0.5, 0.9, 0.6, 0.3]
  decisions = [0, 0, 1, 1, 1, 0]
  m = dcase_metrics.section_metrics(labels, scores, decisions, domains, year="2022")
  # AUC source: normals {0.1, 0.4} vs anomalies {0.6, 0.3}: pairs won 2 + 1 = 3 of 4.
  assert m["AUC (source)"] == pytest.approx(0.75)
  # AUC target: normals {0.5, 0.9} vs {0.6, 0.3}: only 0.6 > 0.5 wins: 1 of 4.
  assert m["AUC (target)"] == pytest.approx(0.25)
  assert m["pAUC"] == pytest.approx(sk_metrics.roc_auc_score(labels, scores, max_fpr=0.1))
  # Source decisions: clips 0, 1, 4 -> tp 1, fp 0, fn 0; target: clips 2, 3, 5 -> tp 0, fp 2, fn 1.
  assert (m["precision (source)"], m["recall (source)"], m["F1 score (source)"]) == (1, 1, 1)
  assert m["precision (target)"] == 0 and m["recall (target)"] == 0
  assert m["F1 score (target)"] == 0
  assert list(m) == list(dcase_metrics.COLUMNS["2022"])

  m21 = dcase_metrics.section_metrics(labels, scores, decisions, domains, year="2021")
  assert m21["AUC (source)"] == pytest.approx(1.0)  # {0.1, 0.4} vs {0.6}
  assert m21["AUC (target)"] == pytest.approx(0.0)  # {0.5, 0.9} vs {0.3}
  m20 = dcase_metrics.section_metrics(labels, scores, decisions, [None] * 6, year="2020")
  assert m20["AUC"] == pytest.approx(sk_metrics.roc_auc_score(labels, scores))


def test_precision_recall_f1_tell_false_alarms_from_misses():
  # tp 2, fp 1, fn 3: precision 2/3, recall 2/5, F1 = 2 p r / (p + r) = 1/2.
  labels = [1, 1, 1, 1, 1, 0, 0, 0]
  decisions = [1, 1, 0, 0, 0, 1, 0, 0]
  p, r, f = dcase_metrics.precision_recall_f1(labels, decisions)
  assert (p, r, f) == pytest.approx((2 / 3, 2 / 5, 0.5))
  m = dcase_metrics.section_metrics(labels, [0.0] * 8, decisions, ["source"] * 8, year="2022")
  assert m["precision (source)"] == pytest.approx(2 / 3)
  assert m["recall (source)"] == pytest.approx(2 / 5)


def test_arithmetic_means_over_sections_are_means_not_medians():
  cols = dcase_metrics.COLUMNS["2022"]
  sections = {"00": {c: 0.5 for c in cols}, "01": {c: 0.6 for c in cols},
              "02": {c: 1.0 for c in cols}}
  summary = dcase_metrics.summarize({"fan": sections}, year="2022")
  assert summary["machine_types"]["fan"]["arithmetic mean"]["AUC (source)"] == pytest.approx(0.7)
  assert summary["overall"]["arithmetic mean"]["pAUC"] == pytest.approx(0.7)
  assert summary["machine_types"]["fan"]["harmonic mean"]["pAUC"] == pytest.approx(
      3 / (1 / 0.5 + 1 / 0.6 + 1 / 1.0))


def test_partial_aucs_by_hand():
  """pAUC (max FPR 0.1, McClish-standardized as the evaluators' sklearn call) computed
  by hand: with 10 normals the ROC's first step is at FPR 0.1, so the partial area is
  0.1 * t0 (t0: the share of anomalies above every normal), standardized to
  (1 + (area - 0.005) / 0.095) / 2."""
  def standardized(t0, step):  # the area over FPR [0, 0.1] when the first normal is at `step`
    assert step >= 0.1  # else the area would need the ROC's later steps
    area = 0.1 * t0
    return 0.5 * (1 + (area - 0.005) / 0.095)
  source_n, target_n = [0.10, 0.20, 0.30, 0.40, 0.50], [0.15, 0.25, 0.35, 0.45, 0.80]
  source_a, target_a = [0.90, 0.05], [0.60, 0.70]  # only 0.90 is above every normal
  scores = source_n + target_n + source_a + target_a
  labels = [0] * 10 + [1] * 4
  domains = ["source"] * 5 + ["target"] * 5 + ["source"] * 2 + ["target"] * 2
  decisions = [0] * 14
  m22 = dcase_metrics.section_metrics(labels, scores, decisions, domains, year="2022")
  assert m22["pAUC"] == pytest.approx(standardized(1 / 4, 0.1))  # every clip: 0.6053
  assert m22["AUC (source)"] == pytest.approx(15 / 20)  # 0.9, 0.6, 0.7 above all 5; 0.05 none
  assert m22["AUC (target)"] == pytest.approx(13 / 20)  # 0.9 above 5, 0.6 and 0.7 above 4
  m21 = dcase_metrics.section_metrics(labels, scores, decisions, domains, year="2021")
  assert m21["pAUC (source)"] == pytest.approx(standardized(1 / 2, 0.2))  # 0.7368
  assert m21["pAUC (target)"] == pytest.approx(standardized(0, 0.2))  # 0.4737
  m20 = dcase_metrics.section_metrics(labels, scores, decisions, [None] * 14, year="2020")
  assert m20["pAUC"] == pytest.approx(standardized(1 / 4, 0.1))


def test_a_value_that_needs_a_missing_class_is_nan():
  """NaN from the module's own guard, with no warning and whatever sklearn does with one
  class (older versions raise, newer warn)."""
  labels = [0, 0, 1, 1]
  domains = ["source", "source", "source", "target"]  # no target normal
  scores, decisions = [0.1, 0.2, 0.9, 0.8], [0, 0, 1, 1]
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    m22 = dcase_metrics.section_metrics(labels, scores, decisions, domains, year="2022")
    m21 = dcase_metrics.section_metrics(labels, scores, decisions, domains, year="2021")
  assert np.isnan(m22["AUC (target)"]) and m22["AUC (source)"] == pytest.approx(1.0)
  assert np.isnan(m21["AUC (target)"]) and np.isnan(m21["pAUC (target)"])
  assert m21["pAUC (source)"] == pytest.approx(1.0)


def test_max_fpr_sets_every_partial_auc():
  """max_fpr reaches the pAUC of every convention (the sklearn reference at p = 0.3)."""
  labels = np.array([0] * 10 + [1] * 4)
  scores = np.array([0.10, 0.20, 0.30, 0.40, 0.50, 0.15, 0.25, 0.35, 0.45, 0.80,
                     0.90, 0.05, 0.60, 0.70])
  domains = np.array(["source"] * 5 + ["target"] * 5 + ["source"] * 2 + ["target"] * 2)
  decisions = [0] * 14
  want = sk_metrics.roc_auc_score(labels, scores, max_fpr=0.3)
  assert want != pytest.approx(sk_metrics.roc_auc_score(labels, scores, max_fpr=0.1))
  m22 = dcase_metrics.section_metrics(labels, scores, decisions, domains, year="2022",
                                      max_fpr=0.3)
  assert m22["pAUC"] == pytest.approx(want)
  m20 = dcase_metrics.section_metrics(labels, scores, decisions, [None] * 14, year="2020",
                                      max_fpr=0.3)
  assert m20["pAUC"] == pytest.approx(want)
  m21 = dcase_metrics.section_metrics(labels, scores, decisions, domains, year="2021",
                                      max_fpr=0.3)
  for domain in ("source", "target"):
    own = domains == domain
    assert m21[f"pAUC ({domain})"] == pytest.approx(
        sk_metrics.roc_auc_score(labels[own], scores[own], max_fpr=0.3))


def test_section_metrics_refuse_clip_lists_of_different_lengths():
  labels, scores, domains = [0, 0, 1, 1], [0.1, 0.2, 0.9, 0.8], ["source"] * 4
  for year in ("2020", "2021", "2022"):
    with pytest.raises(ValueError, match="lengths differ"):
      dcase_metrics.section_metrics(labels, scores, [1], domains, year=year)
    with pytest.raises(ValueError, match="lengths differ"):
      dcase_metrics.section_metrics(labels, scores[:-1], [0] * 4, domains, year=year)


def test_rare_normal_metrics_by_hand():
  """--rare_clips' metrics of one section: every domain together; unlisted clips
  (None) in neither group; None where a group is missing."""
  # normals: rare {0.8, 0.9}, frequent {0.1, 0.2}, unknown {0.95}; anomalies {0.5, 0.85}
  labels = [0, 0, 0, 0, 0, 1, 1]
  scores = [0.8, 0.9, 0.1, 0.2, 0.95, 0.5, 0.85]
  decisions = [1, 1, 0, 1, 1, 1, 1]
  rare = [True, True, False, False, None, None, True]  # an anomaly's flag is not read
  m = dcase_metrics.rare_normal_metrics(labels, scores, decisions, rare)
  # anomalies vs rare: 0.5 beats neither, 0.85 beats 0.8: 1 of 4 pairs
  assert m["auc_vs_rare"] == pytest.approx(0.25)
  assert m["auc_vs_frequent"] == pytest.approx(1.0)
  assert m["rare_vs_frequent"] == pytest.approx(1.0)  # every rare normal above every frequent
  assert m["fpr_rare"] == 1.0 and m["fpr_frequent"] == 0.5
  assert (m["rare_normal_clips"], m["frequent_normal_clips"]) == (2, 2)
  assert set(dcase_metrics.RARE_KEYS) <= set(m)
  only_rare = dcase_metrics.rare_normal_metrics(labels, scores, decisions,
                                                [True, True, None, None, None, None, None])
  assert only_rare["auc_vs_frequent"] is None and only_rare["fpr_frequent"] is None
  assert only_rare["auc_vs_rare"] == pytest.approx(0.25)
  # no rare-normal clip, or no anomaly: nothing to report
  assert dcase_metrics.rare_normal_metrics(labels, scores, decisions, [False] * 7) is None
  assert dcase_metrics.rare_normal_metrics([0, 0], [0.1, 0.2], [0, 0], [True, False]) is None
  with pytest.raises(ValueError, match="lengths differ"):
    dcase_metrics.rare_normal_metrics(labels, scores, decisions, rare[:-1])
  summary = dcase_metrics.summarize_rare({"fan": {"00": m, "01": only_rare}})
  assert summary["mean"]["auc_vs_rare"] == pytest.approx(0.25)
  assert summary["mean"]["auc_vs_frequent"] == pytest.approx(1.0)  # the section that has it
  assert summary["machine_types"]["fan"]["00"] == m
  # a key that no section has is None, not a mean of nothing
  alone = dcase_metrics.summarize_rare({"fan": {"01": only_rare}})["mean"]
  assert alone["auc_vs_frequent"] is None and alone["fpr_frequent"] is None


def test_official_score_worked_example():
  # Two machine types, three sections: Omega = hmean of the 3 x 3 values.
  per_machine = {
      "fan": {"00": {"AUC (source)": 0.8, "AUC (target)": 0.5, "pAUC": 0.6},
              "01": {"AUC (source)": 0.9, "AUC (target)": 0.6, "pAUC": 0.7}},
      "pump": {"00": {"AUC (source)": 0.7, "AUC (target)": 0.4, "pAUC": 0.55}},
  }
  values = [0.8, 0.5, 0.6, 0.9, 0.6, 0.7, 0.7, 0.4, 0.55]
  want = len(values) / sum(1 / v for v in values)
  assert want == pytest.approx(0.60525, abs=1e-4)
  assert dcase_metrics.official_score(per_machine, year="2022") == pytest.approx(want)
  assert want == pytest.approx(scipy.stats.hmean(values))
  # 2021: AUC and pAUC of both domains.
  per21 = {"fan": {"00": {"AUC (source)": 0.8, "AUC (target)": 0.5,
                          "pAUC (source)": 0.6, "pAUC (target)": 0.5}}}
  assert dcase_metrics.official_score(per21, year="2021") == pytest.approx(
      4 / (1 / 0.8 + 1 / 0.5 + 1 / 0.6 + 1 / 0.5))
  # A zero is floored at float eps, as the evaluator does (the score collapses).
  zero = {"fan": {"00": {"AUC (source)": 0.0, "AUC (target)": 0.5, "pAUC": 0.6}}}
  assert 0 < dcase_metrics.official_score(zero, year="2022") < 1e-15


def test_summary_means_and_result_rows():
  sections = {"00": {c: 0.5 for c in dcase_metrics.COLUMNS["2022"]},
              "01": {c: 1.0 for c in dcase_metrics.COLUMNS["2022"]}}
  summary = dcase_metrics.summarize({"fan": sections}, year="2022")
  fan = summary["machine_types"]["fan"]
  assert fan["arithmetic mean"]["AUC (source)"] == pytest.approx(0.75)
  assert fan["harmonic mean"]["AUC (source)"] == pytest.approx(2 / 3)
  assert summary["official_score"] == pytest.approx(2 / 3)
  rows = dcase_metrics.result_rows(summary, year="2022")
  assert rows[0] == ["fan"] and rows[1][0] == "section" and rows[2][0] == "00"
  assert rows[-1][0] == "official score"
  assert summary["official_score_terms"] == [6, 6] and summary["official_score_missing"] == []
  # A section without target-domain normals has no AUC (target): left out of the score,
  # which says so, in the summary and in the printed result
  sections["01"] = {**sections["01"], "AUC (target)": float("nan")}
  summary = dcase_metrics.summarize({"fan": sections}, year="2022")
  assert summary["official_score"] == pytest.approx(scipy.stats.hmean([0.5] * 3 + [1.0] * 2))
  assert summary["official_score_terms"] == [5, 6]
  assert summary["official_score_missing"] == ["fan/01: AUC (target)"]
  from bu_jax import dcase_run  # pylint: disable=import-outside-toplevel
  text = dcase_run.format_result(summary, year="2022", title="t")
  assert text.splitlines()[-1] == ("official score: 0.625 (over 5 of its 6 values; n/a: "
                                   "fan/01: AUC (target); not comparable with a score over "
                                   "all of them)")


def test_summary_harmonic_means_per_metric():
  """hmean_auc_source / _target / hmean_pauc: each over its own column of every section."""
  def section(year):
    return dict.fromkeys(dcase_metrics.COLUMNS[year], 0.5)
  s22 = {"fan": {"00": {**section("2022"), "AUC (source)": 0.9, "AUC (target)": 0.6,
                        "pAUC": 0.55},
                 "01": {**section("2022"), "AUC (source)": 0.8, "AUC (target)": 0.4,
                        "pAUC": 0.7}}}
  out = dcase_metrics.summarize(s22, year="2022")
  assert out["hmean_auc_source"] == pytest.approx(scipy.stats.hmean([0.9, 0.8]))
  assert out["hmean_auc_target"] == pytest.approx(scipy.stats.hmean([0.6, 0.4]))
  assert out["hmean_pauc"] == pytest.approx(scipy.stats.hmean([0.55, 0.7]))
  s21 = {"fan": {"00": {**section("2021"), "pAUC (source)": 0.9, "pAUC (target)": 0.6}}}
  assert dcase_metrics.summarize(s21, year="2021")["hmean_pauc"] == pytest.approx(
      scipy.stats.hmean([0.9, 0.6]))
  s20 = {"fan": {"id_00": {**section("2020"), "AUC": 0.9, "pAUC": 0.6},
                 "id_02": {**section("2020"), "AUC": 0.7, "pAUC": 0.8}}}
  out = dcase_metrics.summarize(s20, year="2020")
  assert out["hmean_auc"] == pytest.approx(scipy.stats.hmean([0.9, 0.7]))
  assert out["hmean_pauc"] == pytest.approx(scipy.stats.hmean([0.6, 0.8]))


def test_overall_means_cover_every_machine_type_s_sections():
  """Sections of the same name under two machine types are two sections of the overall
  means; a score with no value to average is n/a (NaN), not 0."""
  cols = dcase_metrics.COLUMNS["2022"]
  per_machine = {"fan": {"00": dict.fromkeys(cols, 0.5)},
                 "pump": {"00": dict.fromkeys(cols, 1.0), "01": dict.fromkeys(cols, 1.0)}}
  out = dcase_metrics.summarize(per_machine, year="2022")
  assert out["overall"]["arithmetic mean"]["AUC (source)"] == pytest.approx(2.5 / 3)
  assert out["hmean_auc_source"] == pytest.approx(scipy.stats.hmean([0.5, 1.0, 1.0]))
  missing = {"fan": {"00": dict.fromkeys(cols, float("nan"))}}
  assert np.isnan(dcase_metrics.official_score(missing, year="2022"))


def test_result_rows_cells():
  """Each mean row holds its own mean, full precision (repr); n/a is an empty cell."""
  cols = dcase_metrics.COLUMNS["2022"]
  sections = {"00": dict.fromkeys(cols, 0.5),
              "01": {**dict.fromkeys(cols, 1.0), "AUC (target)": float("nan")}}
  rows = dcase_metrics.result_rows(dcase_metrics.summarize({"fan": sections}, year="2022"),
                                   year="2022")
  by_name = {}
  for row in rows:
    if row:
      by_name.setdefault(row[0], row[1:])
  assert by_name["01"][cols.index("AUC (target)")] == ""
  assert by_name["01"][cols.index("AUC (source)")] == "1.0"
  auc_source = cols.index("AUC (source)")
  assert by_name["arithmetic mean"][auc_source] == repr(0.75)
  assert by_name["harmonic mean"][auc_source] == repr(float(scipy.stats.hmean([0.5, 1.0])))
  overall = "over all machine types, sections, and domains"
  assert by_name[f"arithmetic mean {overall}"][auc_source] == repr(0.75)
  assert by_name[f"harmonic mean {overall}"][auc_source] == repr(
      float(scipy.stats.hmean([0.5, 1.0])))
  assert by_name["harmonic mean"][cols.index("AUC (target)")] == "0.5"  # the n/a left out


# ------------------------------------------------------------------ files


def test_submission_files_exact_format(tmp_path):
  names = ["section_00_0000.wav", "section_00_0001.wav"]
  paths = dcase_run.write_submission(str(tmp_path), "ToyCar", "00", names,
                                     np.array([1.5, 0.25]), np.array([1, 0]))
  assert [os.path.basename(p) for p in paths] == [
      "anomaly_score_ToyCar_section_00_test.csv", "decision_result_ToyCar_section_00_test.csv"]
  assert open(paths[0], "rb").read() == b"section_00_0000.wav,1.5\nsection_00_0001.wav,0.25\n"
  assert open(paths[1], "rb").read() == b"section_00_0000.wav,1\nsection_00_0001.wav,0\n"
  rows = list(csv.reader(open(paths[0])))  # what the evaluator reads back
  assert [float(r[1]) for r in rows] == [1.5, 0.25]
  paths = dcase_run.write_submission(str(tmp_path), "fan", "02", ["normal_id_02_00000000.wav"],
                                     [3.0], [0], year="2020")
  assert [os.path.basename(p) for p in paths] == ["anomaly_score_fan_id_02.csv",
                                                 "decision_result_fan_id_02.csv"]
  assert open(paths[0]).read() == "normal_id_02_00000000.wav,3.0\n"


def test_dcase2021_submission_files_one_per_section_and_domain(tmp_path):
  """dcase2021_task2_evaluator reads anomaly_score_<m>_section_<XX>_{source,target}_test.csv
  (and decision_result_...): 2021's clips are written by section and domain, other
  years' by section."""
  names = ["section_00_source_test_0000.wav", "section_00_target_test_0000.wav",
           "section_01_source_test_0000.wav", "section_00_source_test_0001.wav"]
  clips = [dcase.Clip(n, dcase.parse_name(n), None, dcase.parse_name(n).domain) for n in names]
  assert dcase_run.submission_groups(clips, "2021") == [
      ("00", "source", [0, 3]), ("00", "target", [1]), ("01", "source", [2])]
  assert dcase_run.submission_groups(clips, "2022") == [("00", None, [0, 1, 3]),
                                                        ("01", None, [2])]
  paths = dcase_run.write_submission(str(tmp_path), "fan", "00", [names[1]], [0.5], [1],
                                     year="2021", domain="target")
  assert [os.path.basename(p) for p in paths] == [
      "anomaly_score_fan_section_00_target_test.csv",
      "decision_result_fan_section_00_target_test.csv"]
  assert open(paths[1]).read() == "section_00_target_test_0000.wav,1\n"


def test_settings_reject_bad_flags():
  with pytest.raises(ValueError, match="--year"):
    dcase_run.Settings(workdir="w", year="1999")
  with pytest.raises(ValueError, match="--per"):
    dcase_run.Settings(workdir="w", per="clip")
  with pytest.raises(ValueError, match="--loss"):
    dcase_run.Settings(workdir="w", losses=("mse",))
