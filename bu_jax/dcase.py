"""DCASE Task 2 data sets (2020 to 2025): file names, loader, ground truth.

Layout: ``<root>/<machine_type>/{train,test}/*.wav`` (the development set;
the organisers' ``dev_data/raw/<machine_type>`` or ``dev_data/<machine_type>``
folders are both such roots); DCASE 2021's sets hold ``source_test/`` and
``target_test/`` instead of ``test/``, read together as the test set.
File-name grammars, by year:

==========  ===================================================================
2020        ``{normal,anomaly}_id_00_00000000.wav``; evaluation test set:
            ``id_00_00000000.wav``. The machine id plays the role of a section.
2021        ``section_00_{source,target}_{train,test}_{normal,anomaly}_0000``
            ``[_<anything>].wav`` (the domain part may be missing).
2022-2025   ``section_00_{source,target}_{train,test}_{normal,anomaly}_0000``
            ``_<key>_<value>[_<key>_<value>...].wav`` or ``..._noAttribute.wav``;
            attributes are parsed into a dict.
eval sets   ``section_00_0000.wav`` (2021-2025): no label, no domain; scored
            and written, evaluated only with ``--ground_truth_dir``.
==========  ===================================================================

``parse_name`` returns a ``ClipName`` or ``None`` (a name that fits no
grammar); ``load_machine_type`` logs every skipped file by name and never
guesses. Ground truth of evaluation sets uses the organisers' layout
(``<dir>/ground_truth_data/ground_truth_<machine>_section_<XX>_test.csv`` with
rows ``wavname,0|1`` and ``<dir>/ground_truth_domain/...`` with rows
``wavname,0|1`` for source / target; DCASE 2021:
``<dir>/ground_truth_data/ground_truth_<machine>_section_<XX>_{source,target}_test.csv``,
the domain in the file name; DCASE 2020: ``<dir>/eval_data_list.csv``, a
machine-type line, then ``eval name,dev-style name,0|1`` rows, and so on).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from typing import Optional, Sequence

from absl import logging
import numpy as np

from bu_jax import audio
from bu_jax import data as data_lib

YEARS = ("2020", "2021", "2022", "2023", "2024", "2025")
DataError = data_lib.DataError
# DCASE 2021's test folders, one per domain (its sets hold no test/).
DOMAIN_TEST_FOLDERS = {"source_test": "source", "target_test": "target"}
# DCASE 2020's ground truth, at the top of --ground_truth_dir (dcase2020_task2_evaluator's).
EVAL_DATA_LIST = "eval_data_list.csv"

_LABELS = {"normal": 0, "anomaly": 1}
_RE_2020 = re.compile(r"^(?P<label>normal|anomaly)_id_(?P<section>\d+)_(?P<index>\d+)$")
_RE_2020_EVAL = re.compile(r"^id_(?P<section>\d+)_(?P<index>\d+)$")
_RE_SECTION = re.compile(
    r"^section_(?P<section>\d+)_(?:(?P<domain>source|target)_)?(?P<split>train|test)_"
    r"(?P<label>normal|anomaly)_(?P<index>\d+)(?:_(?P<rest>.+))?$")
_RE_SECTION_EVAL = re.compile(
    r"^section_(?P<section>\d+)_(?:(?P<domain>source|target)_)?(?:(?P<split>train|test)_)?"
    r"(?P<index>\d+)(?:_(?P<rest>.+))?$")


@dataclasses.dataclass(frozen=True)
class ClipName:
  """What a DCASE file name says.

  Attributes:
    name: the base name, e.g. ``section_00_target_test_anomaly_0003_car_A1.wav``.
    section: two-digit section (or, for 2020, machine id), e.g. "00".
    domain: "source", "target" or None (2020, evaluation names).
    split: "train", "test" or None (not in the name).
    label: 0 normal, 1 anomalous, None (evaluation set).
    index: the clip number as written.
    attributes: {key: value} of 2022+ names ({} for ``noAttribute`` or none).
    grammar: "2020", "2021", "2022+" or "eval".
  """

  name: str
  section: str
  domain: Optional[str]
  split: Optional[str]
  label: Optional[int]
  index: str
  attributes: dict
  grammar: str


def parse_attributes(text: Optional[str]) -> Optional[dict]:
  """``car_A1_spd_28V`` -> {"car": "A1", "spd": "28V"}; ``noAttribute`` -> {}.

  Returns None for text that is not key/value pairs (an odd number of parts).
  """
  if not text or text == "noAttribute":
    return {}
  parts = text.split("_")
  if len(parts) % 2:
    return None
  return dict(zip(parts[0::2], parts[1::2]))


def parse_name(name: str, *, year: str = "auto") -> Optional[ClipName]:
  """Parses one file name (with or without directory) by the grammar of ``year``.

  Args:
    name: a file name ending in ``.wav`` (any case).
    year: "auto" (any grammar) or one of ``YEARS``: 2020 accepts only 2020
      names; 2021 section names with any suffix; 2022+ section names whose
      suffix is key/value attribute pairs or ``noAttribute``. Evaluation-set
      names (no label) are accepted for every year.

  Returns:
    A ``ClipName``, or None if the name fits no grammar of ``year``.
  """
  base = os.path.basename(name)
  stem, ext = os.path.splitext(base)
  if ext.lower() != ".wav":
    return None
  if year not in ("auto", *YEARS):
    raise ValueError(f"year must be 'auto' or one of {YEARS}, got {year!r}")
  if year in ("auto", "2020"):
    m = _RE_2020.match(stem)
    if m:
      return ClipName(base, f"{int(m['section']):02d}", None, None, _LABELS[m["label"]],
                      m["index"], {}, "2020")
    m = _RE_2020_EVAL.match(stem)
    if m:
      return ClipName(base, f"{int(m['section']):02d}", None, None, None, m["index"], {}, "eval")
    if year == "2020":
      return None
  m = _RE_SECTION.match(stem)
  if m:
    rest = m["rest"]
    attributes = parse_attributes(rest)
    if year == "2021" or (year == "auto" and rest is None):
      grammar = "2021"
      attributes = attributes or {}
    else:  # 2022+: the suffix must be attribute pairs or noAttribute
      if rest is None or attributes is None:
        if year != "auto":
          return None
        grammar, attributes = "2021", {}  # auto: a free-form 2021 suffix
      else:
        grammar = "2022+"
    return ClipName(base, m["section"], m["domain"], m["split"], _LABELS[m["label"]],
                    m["index"], attributes, grammar)
  m = _RE_SECTION_EVAL.match(stem)
  if m:
    attributes = parse_attributes(m["rest"]) or {}
    return ClipName(base, m["section"], m["domain"], m["split"], None, m["index"], attributes,
                    "eval")
  return None


def detect_year(names: Sequence[ClipName]) -> str:
  """The metric convention that fits parsed names: "2020", "2021" or "2022".

  2022 stands for 2022-2025 (same metrics and official score).
  """
  grammars = {n.grammar for n in names}
  if "2020" in grammars or (grammars == {"eval"} and all(n.domain is None and
                                                         n.name.startswith("id_")
                                                         for n in names)):
    return "2020"
  if "2022+" in grammars:
    return "2022"
  return "2021"


def metric_year(year: str) -> str:
  """The metric convention of a year: "2020", "2021" or "2022" (for 2022-2025)."""
  if year in ("2020", "2021"):
    return year
  if year in YEARS[2:]:
    return "2022"
  raise ValueError(f"year must be one of {YEARS}, got {year!r}")


@dataclasses.dataclass
class Clip:
  """One clip of a machine type: its parsed name, path, (lazily) its wave and,
  from ``--rare_clips`` (evaluation only), whether it holds a rare operating
  mode (None: not known)."""

  path: str
  meta: ClipName
  label: Optional[int]
  domain: Optional[str]
  wave: Optional[np.ndarray] = None
  rare: Optional[bool] = None

  @property
  def name(self) -> str:
    return self.meta.name

  @property
  def section(self) -> str:
    return self.meta.section


@dataclasses.dataclass
class MachineData:
  """Training and test clips of one machine type."""

  machine_type: str
  directory: str
  train: list
  test: list
  skipped: list
  # With several test*/ folders: each (e.g. test_anr-10dB) -> its clips, one
  # test set each; ``test`` then holds them all. Empty with a lone test/.
  test_folders: dict = dataclasses.field(default_factory=dict)

  @property
  def sections(self) -> list[str]:
    return sorted({c.section for c in self.test} | {c.section for c in self.train})


def discover_machine_types(root: str) -> list[str]:
  """Sub-folders of ``root`` that hold a ``train``, ``test``, ``source_test`` or
  ``target_test`` folder, sorted."""
  if not os.path.isdir(root):
    raise DataError(f"{root}: no such directory (--data_root)")
  found = sorted(d for d in os.listdir(root)
                 if any(os.path.isdir(os.path.join(root, d, f))
                        for f in ("train", "test", *DOMAIN_TEST_FOLDERS)))
  if not found:
    raise DataError(f"{root}: no machine-type folders (<root>/<machine_type>/train, test)")
  return found


def _parse_folder(folder: str, split: str, year: str) -> tuple[list, list]:
  clips, skipped = [], []
  data_lib.warn_non_wav(folder)
  for path in data_lib.list_wavs(folder):
    meta = parse_name(path, year=year)
    if meta is None or (meta.split is not None and meta.split != split):
      reason = "does not fit the DCASE file-name grammar" + (
          "" if year == "auto" else f" of {year}") if meta is None else (
              f"is a {meta.split} clip in the {split} folder")
      logging.warning("skipped %s: its name %s", path, reason)
      skipped.append(path)
      continue
    if split == "train" and meta.label == 1:
      logging.warning("skipped %s: an anomalous clip in the training folder", path)
      skipped.append(path)
      continue
    clips.append(Clip(path=path, meta=meta, label=meta.label, domain=meta.domain))
  return clips, skipped


def _domain_test_clips(directory: str, folders: Sequence[str],
                       year: str) -> tuple[list, list]:
  """The clips of DCASE 2021's ``source_test/`` and ``target_test/`` (``folders``,
  those of them that exist), one test set: each clip's domain is its folder's;
  a clip whose name says the other domain is skipped with a warning."""
  clips, skipped = [], []
  for name in folders:
    domain = DOMAIN_TEST_FOLDERS[name]
    found, sk = _parse_folder(os.path.join(directory, name), "test", year)
    skipped += sk
    for clip in found:
      if clip.domain not in (None, domain):
        logging.warning("skipped %s: its name says %s domain, its folder %s", clip.path,
                        clip.domain, name)
        skipped.append(clip.path)
        continue
      clip.domain = domain
      clips.append(clip)
  return clips, skipped


def load_machine_type(root: str, machine_type: str, *, year: str = "auto",
                      load_audio: bool = True, need_train: bool = True,
                      sr: int = audio.SAMPLE_RATE) -> MachineData:
  """Lists (and loads) the clips of ``<root>/<machine_type>/{train,test}``.

  A machine type with several ``test*/`` folders (one per condition, e.g.
  ``test_anr-10dB``, ``test_anr-20dB``; a ``test/`` beside them is one of them)
  gets each of them in ``test_folders`` (and all their clips in ``test``), as
  ``data.test_folders`` reads them for the toy-car job. DCASE 2021's
  ``source_test/`` and ``target_test/`` are read together as one test set (in
  ``test``), each clip's domain its folder's; beside ``test*/`` folders they are
  an error (the same clips twice, or two test sets: which is meant is not guessed).

  Files whose names fit no grammar are logged (each by path) and skipped.

  A machine type without test clips is trained but not evaluated (a warning
  names the folder); with ``need_train=False`` (an evaluation root) it is an error.

  Raises:
    DataError: a missing folder, or no usable clip, naming the folder.
    audio.AudioError: an unreadable file, naming it.
  """
  directory = os.path.join(root, machine_type)
  if not os.path.isdir(directory):
    try:
      found = discover_machine_types(root)
    except DataError:
      found = []
    near = [m for m in found if m.lower() == machine_type.lower()]
    raise DataError(f"{directory}: no such machine-type directory"
                    + (f" (did you mean {near[0]}? names are case-sensitive)" if near else "")
                    + (f"; {root} holds {', '.join(found)}" if found else ""))
  train, test, skipped = [], [], []
  train_dir, test_dir = os.path.join(directory, "train"), os.path.join(directory, "test")
  if need_train or os.path.isdir(train_dir):
    if not os.path.isdir(train_dir):
      raise DataError(f"{train_dir}: training directory does not exist")
    train, sk = _parse_folder(train_dir, "train", year)
    skipped += sk
    if need_train and not train:
      raise DataError(f"{train_dir}: no normal training clips with DCASE names"
                      + data_lib.non_wav_note(train_dir))
  test_folders = {}
  folders = data_lib.list_test_folders(directory)
  domain_folders = [n for n in DOMAIN_TEST_FOLDERS if os.path.isdir(os.path.join(directory, n))]
  if domain_folders and folders:
    raise DataError(f"{directory}: holds both {', '.join(f + '/' for f in folders)} and "
                    f"{', '.join(f + '/' for f in domain_folders)} (DCASE 2021's test folders); "
                    "keep one layout")
  if domain_folders:
    test, sk = _domain_test_clips(directory, domain_folders, year)
    skipped += sk
  elif folders == ["test"]:
    test, sk = _parse_folder(test_dir, "test", year)
    skipped += sk
  else:  # e.g. test_anr-10dB/, test_anr-20dB/: one test folder per condition
    for name in folders:
      clips, sk = _parse_folder(os.path.join(directory, name), "test", year)
      skipped += sk
      test_folders[name] = clips
      test += clips
    if test_folders:
      logging.info("%s: the test folders %s are evaluated one by one", directory,
                   ", ".join(test_folders))
  if year == "auto":  # one naming family per machine type: the larger, never a mix
    train, test, test_folders, strays = _one_family(train, test, test_folders)
    skipped += strays
  if skipped:
    logging.warning("%s: skipped %d file(s) with unusable names", directory, len(skipped))
  if not test:
    where = (", ".join(os.path.join(directory, f) for f in domain_folders) if domain_folders else
             os.path.join(directory, folders[0] if len(folders) == 1 else
                          "test*" if folders else "test"))
    if not need_train:  # an evaluation root is there to be scored
      raise DataError(f"{where}: no test clips with DCASE names to score")
    logging.warning("%s: no test clips with DCASE names; this machine type is trained but "
                    "not evaluated", where)
  md = MachineData(machine_type, directory, train, test, skipped, test_folders)
  return load_audio_of(md, sr=sr) if load_audio else md


def _family(meta: ClipName) -> str:
  """"2020" (machine ids: ``normal_id_00_...``, ``id_00_...``) or "section" (2021+)."""
  return "2020" if meta.grammar == "2020" or (meta.grammar == "eval" and meta.domain is None
                                              and meta.name.startswith("id_")) else "section"


def _one_family(train: list, test: list, test_folders: dict) -> tuple[list, list, dict, list]:
  """With ``--year=auto``, the clips of a machine type's larger naming family
  (``_family``); a few files of the other (strays, e.g. 2020 names copied into a
  2023 test folder) would switch the whole machine type's metric convention, so
  they are skipped with a warning naming them. Returns (train, test,
  test_folders, skipped paths)."""
  counts: dict[str, int] = {}
  for clip in train + test:
    counts[_family(clip.meta)] = counts.get(_family(clip.meta), 0) + 1
  if len(counts) < 2:
    return train, test, test_folders, []
  keep = max(counts, key=lambda f: (counts[f], f == "section"))
  strays = [c.path for c in train + test if _family(c.meta) != keep]
  logging.warning("skipped %d file(s) named by the DCASE %s grammar among %d of the %s one "
                  "(pass --year to choose): %s%s", len(strays),
                  "2020" if keep == "section" else "2021+ section", counts[keep],
                  "2021+ section" if keep == "section" else "2020", ", ".join(strays[:3]),
                  ", ..." if len(strays) > 3 else "")
  pick = lambda clips: [c for c in clips if _family(c.meta) == keep]
  return (pick(train), pick(test), {k: pick(v) for k, v in test_folders.items()}, strays)


def load_audio_of(md: MachineData, *, sr: int = audio.SAMPLE_RATE) -> MachineData:
  """Loads the waves of a machine type listed with ``load_audio=False`` (in place).

  Raises:
    audio.AudioError: an unreadable file, naming it.
    DataError: a training clip without sound (silent or constant), naming it.
  """
  for clip in md.train:
    clip.wave = data_lib.require_sound(audio.load_wav(clip.path, sr=sr), clip.path)
  for clip in md.test:
    clip.wave = audio.load_wav(clip.path, sr=sr)
  return md


def _read_two_column_csv(path: str) -> dict[str, int]:
  """``wavname,0|1`` rows (the organisers' ground truth); a first row whose value is
  not a number is a header and skipped; a BOM (as Excel writes) is dropped.

  Raises:
    DataError: a row with one column or with a value other than 0 or 1, naming
      the file and line.
  """
  out = {}
  with open(path, encoding="utf-8-sig", newline="") as f:
    for line_no, row in enumerate(csv.reader(f), 1):
      if not row or not "".join(row).strip():
        continue
      if len(row) < 2:
        raise DataError(f"{path}:{line_no}: expected 'wavname,value', got {row}")
      value = row[1].strip()
      try:
        number = float(value)
      except ValueError:
        if not out and line_no == 1:  # a header such as "file,label"
          continue
        raise DataError(f"{path}:{line_no}: not a number: {row[1]!r}") from None
      if number not in (0.0, 1.0):
        raise DataError(f"{path}:{line_no}: the value must be 0 or 1, got {row[1]!r}")
      out[row[0].strip()] = int(number)
  return out


def apply_ground_truth(machine: MachineData, ground_truth_dir: str, *,
                       need_domains: bool = False, year: Optional[str] = None) -> int:
  """Fills label and domain of unlabelled test clips from the organisers' CSVs.

  Reads ``ground_truth_data/ground_truth_<machine>_section_<XX>_test.csv``
  (``wavname,0|1``: normal / anomalous) and ``ground_truth_domain/...``
  (``wavname,0|1``: source / target) under ``ground_truth_dir``; for ``year``
  "2021", DCASE 2021's files instead (``_domain_ground_truth``), for "2020" its
  ``eval_data_list.csv`` (``read_eval_data_list``; no domains). Returns the
  number of clips that received a label. ``need_domains`` (the metrics of DCASE
  2021 on, which score each domain): every labelled clip must then have a
  domain, from its name or the domain file.

  Raises:
    DataError: a missing directory or file, a clip missing from a file (the
      domain file too, when it exists or ``need_domains``), or a value other
      than 0 or 1 (naming the file and line).
  """
  if not os.path.isdir(ground_truth_dir):
    raise DataError(f"{ground_truth_dir}: no such directory (--ground_truth_dir)")
  if year == "2021":
    return _domain_ground_truth(machine, ground_truth_dir)
  if year == "2020":
    return _eval_data_list_ground_truth(machine, ground_truth_dir)
  count = 0
  for section in sorted({c.section for c in machine.test if c.label is None}):
    fname = f"ground_truth_{machine.machine_type}_section_{section}_test.csv"
    label_path = os.path.join(ground_truth_dir, "ground_truth_data", fname)
    domain_path = os.path.join(ground_truth_dir, "ground_truth_domain", fname)
    if not os.path.isfile(label_path):
      raise DataError(f"{label_path}: no such ground-truth file")
    labels = _read_two_column_csv(label_path)
    domains = _read_two_column_csv(domain_path) if os.path.isfile(domain_path) else {}
    for clip in machine.test:
      if clip.section != section or clip.label is not None:
        continue
      if clip.name not in labels:
        raise DataError(f"{label_path}: no row for {clip.name}")
      clip.label = labels[clip.name]
      if clip.name in domains:
        clip.domain = ("source", "target")[domains[clip.name]]
      elif clip.domain is None and (domains or need_domains):
        raise DataError(f"{domain_path}: " + (
            f"no row for {clip.name}" if domains else "no such ground-truth file") + (
            " (the metrics of DCASE 2021 on score each domain)" if need_domains else ""))
      count += 1
  return count


def _domain_ground_truth(machine: MachineData, ground_truth_dir: str) -> int:
  """DCASE 2021's ground truth: ``ground_truth_data/ground_truth_<machine>_section_<XX>_``
  ``{source,target}_test.csv`` (``wavname,0|1``), the domain in the file name, as
  ``dcase2021_task2_evaluator`` reads it. A clip whose name gives its domain is
  looked up in that domain's file, another one in both (its domain: the file
  that holds it). Returns the number of clips that received a label.

  Raises:
    DataError: a missing file (of a domain some clip of the section needs), a
      clip missing from it, or a value other than 0 or 1 (naming the file and line).
  """
  count = 0
  for section in sorted({c.section for c in machine.test if c.label is None}):
    clips = [c for c in machine.test if c.section == section and c.label is None]
    paths = {d: os.path.join(ground_truth_dir, "ground_truth_data",
                             f"ground_truth_{machine.machine_type}_section_{section}_{d}_test.csv")
             for d in ("source", "target")}
    needed = {c.domain for c in clips}
    tables = {}
    for domain in paths:
      if domain in needed or None in needed:
        if not os.path.isfile(paths[domain]):
          raise DataError(f"{paths[domain]}: no such ground-truth file")
        tables[domain] = _read_two_column_csv(paths[domain])
    for clip in clips:
      found = [d for d in tables if (clip.domain in (None, d)) and clip.name in tables[d]]
      if not found:
        raise DataError(f"{paths[clip.domain or 'source']}: no row for {clip.name}"
                        + ("" if clip.domain else f" (nor in {paths['target']})"))
      if len(found) > 1:
        raise DataError(f"{paths['target']}: a row for {clip.name}, which "
                        f"{paths['source']} holds too")
      clip.domain, clip.label = found[0], tables[found[0]][clip.name]
      count += 1
  return count


def read_eval_data_list(path: str) -> dict[str, dict[str, int]]:
  """DCASE 2020's ground truth (``eval_data_list.csv``, as ``dcase2020_task2_evaluator``
  reads it): a line with one column names a machine type; the rows after it,
  ``id_01_00000000.wav,normal_id_01_00000000.wav,0`` (evaluation name, dev-style
  name, 0|1: normal / anomalous), are its clips. Returns {machine type: {name: 0|1}}.

  Raises:
    DataError: a clip row before any machine-type line, a row with two columns, or
      a label other than 0 or 1, naming the file and line.
  """
  out: dict[str, dict[str, int]] = {}
  machine = None
  with open(path, encoding="utf-8-sig", newline="") as f:
    for line_no, row in enumerate(csv.reader(f), 1):
      row = [cell.strip() for cell in row]
      if not "".join(row):
        continue
      if not "".join(row[1:]):  # a machine-type line
        machine = row[0]
        out.setdefault(machine, {})
        continue
      if machine is None:
        raise DataError(f"{path}:{line_no}: a clip row before any machine-type line")
      if len(row) < 3:
        raise DataError(f"{path}:{line_no}: expected 'eval name,dev-style name,label', "
                        f"got {row}")
      try:
        number = float(row[2])
      except ValueError:
        raise DataError(f"{path}:{line_no}: not a number: {row[2]!r}") from None
      if number not in (0.0, 1.0):
        raise DataError(f"{path}:{line_no}: the label must be 0 or 1, got {row[2]!r}")
      out[machine][row[0]] = int(number)
  return out


def _eval_data_list_ground_truth(machine: MachineData, ground_truth_dir: str) -> int:
  """DCASE 2020's ground truth: the unlabelled test clips of ``machine`` take their
  labels from ``<ground_truth_dir>/eval_data_list.csv``, matched by file name
  among its machine type's rows. Returns the number of clips that received a label.

  Raises:
    DataError: no such file, no such machine type in it, a clip missing from it,
      or a bad row (``read_eval_data_list``), naming the file.
  """
  path = os.path.join(ground_truth_dir, EVAL_DATA_LIST)
  if not os.path.isfile(path):
    raise DataError(f"{path}: no such ground-truth file (DCASE 2020's)")
  table = read_eval_data_list(path)
  if machine.machine_type not in table:
    raise DataError(f"{path}: no {machine.machine_type} line (it lists "
                    f"{', '.join(table) or 'no machine type'})")
  labels = table[machine.machine_type]
  count = 0
  for clip in machine.test:
    if clip.label is not None:
      continue
    if clip.name not in labels:
      raise DataError(f"{path}: no row for {clip.name} under {machine.machine_type}")
    clip.label = labels[clip.name]
    count += 1
  return count
