"""Data set loaders: three directory layouts, one ``Dataset`` structure.

Layouts (``<dir>`` is one machine type, e.g. ``dev_data/ToyCar``)::

  "dcase2020"  DCASE 2020 Task 2
    <dir>/train/normal_id_00_00000000.wav ...
    <dir>/test/normal_id_00_00000000.wav, anomaly_id_00_00000000.wav ...
    condition = machine id, "id_00"
    (several test folders <dir>/test*/, e.g. test_anr-10dB/ and test_anr-20dB/,
    give one condition each: "test_anr-10dB_id_00", ...; also for dcase2021)

  "dcase2021"  DCASE 2021 Task 2 and later (attribute suffixes allowed)
    <dir>/train/section_00_source_train_normal_0000.wav ...
    <dir>/test/section_00_target_test_anomaly_0000.wav ...
    (the domain part is optional: section_00_test_normal_0000.wav)
    condition = "section_00_source" / "section_00_target" / "section_00"

  "mixing"  the paper's protocol (section 4.2.1)
    <dir>/train/*.wav     clean normal machine recordings (or .flac, .ogg, .opus, .mp3, .aiff, .w64, .rf64)
    <dir>/test/*.wav      clean normal machine recordings
    <dir>/metadata.json   optional: {"rare_test_clips": ["<name>.wav", ...]}
    noise_dir/*.wav       mixed into every train and test clip at snr_db
                          (default <dir>/noise if it exists)
    anomaly_dir/*.wav     mixed into the (noisy) normal test clips at each ANR
                          (default <dir>/anomaly)
    condition = "anr_-10dB", ...: every test clip appears in every condition,
    once normal (label 0) and once with an anomaly added (label 1).

Determinism of the "mixing" layout: the noise clip and its (circular) offset,
and the anomaly sound and its position, are drawn from
``np.random.default_rng([seed, split, index])``, so they depend only on the
seed and the clip's index in sorted order. The same anomaly and position are
used at every ANR, so conditions differ only in level. The ANR is eq. (8)
taken literally over the whole clip: the anomaly is zero-padded to the clip's
length at its position, and 10 log10(P(alpha a) / P(x_normal)) = ANR with
both powers averaged over all samples of the (noisy) normal clip. (A short
event is therefore locally louder than the ANR; a 0.5 s event in a 10 s clip
at -20 dB is ~-7 dB over its own extent. An anomaly longer than the clip is
cropped.)

Files unrelated to a DCASE layout (names that do not parse) are skipped with a
logged warning; everything else that is wrong raises ``DataError`` (or
``audio.AudioError`` for a bad file), naming the path.
"""

from __future__ import annotations

import dataclasses
import filecmp
import hashlib
import json
import os
import re
from typing import Any, Optional, Sequence

from absl import logging
import numpy as np

from bu_jax import audio

LAYOUTS = ("dcase2020", "dcase2021", "mixing")
PAPER_ANRS_DB = (-10.0, -15.0, -20.0)  # the paper's test ANRs (dB), toy-car experiment

_DCASE2020 = re.compile(r"^(?P<label>normal|anomaly)_(?P<id>id_\d+)_")
_DCASE2021 = re.compile(
    r"^(?P<section>section_\d+)_(?:(?P<domain>source|target)_)?"
    r"(?P<split>train|test)_(?P<label>normal|anomaly)_"
)
_LABELS = {"normal": 0, "anomaly": 1}


class DataError(ValueError):
  """A data directory that cannot be loaded; the message names the path."""


@dataclasses.dataclass(frozen=True)
class TestClip:
  """One labelled test clip.

  Attributes:
    path: the clip's file (for the "mixing" layout: the normal clip).
    wave: float32 mono waveform at the loader's sampling rate.
    label: 0 normal, 1 anomalous.
    condition: evaluation group, e.g. "id_00", "section_01_source", "anr_-10dB".
    rare: whether the normal content contains the rare operating mode; None
      when unknown (DCASE layouts, or no metadata.json).
    anomaly_path: for a synthesized anomalous clip, the anomaly file mixed in.
  """

  __test__ = False  # not a pytest test class, despite the name

  path: str
  wave: np.ndarray
  label: int
  condition: str
  rare: bool | None = None
  anomaly_path: str | None = None


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Training waves (normal only) and labelled test clips."""

  train: list[np.ndarray]
  train_paths: list[str]
  test: list[TestClip]
  layout: str


# ----------------------------------------------------------------------------
# Directory helpers
# ----------------------------------------------------------------------------


def flag_dirs(settings: Any, flags: Sequence[str]) -> list[Optional[str]]:
  """The directories that ``settings`` give for ``flags`` (None where unset), each
  checked to exist: a ``DataError`` names the flag ("--data_dir=x: no such
  directory")."""
  paths = [getattr(settings, flag) for flag in flags]
  for flag, path in zip(flags, paths):
    if path is not None and not os.path.isdir(path):
      raise DataError(f"--{flag}={path}: no such directory")
  return paths


def _require_dir(path: str, what: str) -> str:
  if not os.path.exists(path):
    raise DataError(f"{path}: {what} directory does not exist")
  if not os.path.isdir(path):
    raise DataError(f"{path}: {what} is not a directory")
  return path


def list_wavs(directory: str | os.PathLike, *, warn: bool = True,
              suffixes: tuple[str, ...] = (".wav",)) -> list[str]:
  """Sorted paths of the ``*.wav`` files (any case; ``suffixes``) directly in
  ``directory``; an entry of such a name that is not a file (a broken link, a
  folder) is skipped with a warning naming it (``warn``; off where the folder is
  listed again later)."""
  directory = _require_dir(os.fspath(directory), "audio")
  names, others = [], []
  for name in sorted(os.listdir(directory)):
    if name.lower().endswith(suffixes):
      (names if os.path.isfile(os.path.join(directory, name)) else others).append(name)
  for name in others if warn else ():
    path = os.path.join(directory, name)
    logging.warning("skipped %s: %s", path, "a broken link" if os.path.islink(path)
                    else "not a regular file")
  return [os.path.join(directory, name) for name in names]


def list_sounds(directory: str | os.PathLike, *, warn: bool = True) -> list[str]:
  """``list_wavs`` for every type in ``audio.SOUND_SUFFIXES`` (WAV, FLAC, Ogg,
  Opus, MP3, AIFF, W64, RF64): the folders of the mixing layout and of the something-else sounds.

  A recording there in several types (``a.wav`` and ``a.flac``, as a conversion
  that kept the originals leaves them) is listed once, in the first type of
  ``audio.SOUND_SUFFIXES``, with a warning (``warn``): read twice it would count
  twice, and could be held out for calibration while its copy is trained on."""
  paths = list_wavs(directory, warn=warn, suffixes=audio.SOUND_SUFFIXES)
  by_stem: dict[str, list[str]] = {}
  for path in paths:
    by_stem.setdefault(os.path.splitext(path)[0], []).append(path)
  if len(by_stem) == len(paths):
    return paths

  def rank(path: str) -> int:  # WAV first, then the order of SOUND_SUFFIXES
    return audio.SOUND_SUFFIXES.index(os.path.splitext(path)[1].lower())

  kept = sorted(min(group, key=rank) for group in by_stem.values())
  doubled = [group for group in by_stem.values() if len(group) > 1]
  if warn:
    logging.warning("%s: %d recording(s) in more than one file type (e.g. %s); each is read "
                    "once, as its %s", os.fspath(directory), len(doubled),
                    ", ".join(os.path.basename(p) for p in doubled[0]),
                    os.path.splitext(min(doubled[0], key=rank))[1])
  return kept


def non_wav_sounds(directory: str) -> list[str]:
  """The sound files of other types than WAV directly in ``directory`` (names,
  sorted; [] for a missing folder): what a DCASE layout, which reads WAVs only,
  leaves out."""
  if not os.path.isdir(directory):
    return []
  return sorted(n for n in os.listdir(directory)
                if n.lower().endswith(audio.SOUND_SUFFIXES) and not n.lower().endswith(".wav"))


def non_wav_note(directory: str) -> str:
  """"; it holds N sound file(s) ... convert them to WAV" for an error about a
  DCASE folder, or "" when it holds none."""
  others = non_wav_sounds(directory)
  return (f"; it holds {len(others)} sound file(s) of other types than WAV (e.g. {others[0]}), "
          "which a DCASE layout does not read: convert them to WAV" if others else "")


def warn_non_wav(directory: str) -> None:
  """A warning counting the sound files a DCASE layout leaves out of ``directory``."""
  others = non_wav_sounds(directory)
  if others:
    logging.warning("%s: %d sound file(s) of other types than WAV left out (e.g. %s): a DCASE "
                    "layout reads WAV files; convert them to use them", directory, len(others),
                    others[0])


_SOUNDS = "/".join(f"*{s}" for s in audio.SOUND_SUFFIXES)


def detect_layout(data_dir: str | os.PathLike) -> str:
  """Guesses the layout of ``data_dir`` from the names in ``data_dir/train``.

  Returns "dcase2021" if every training file name parses as
  ``section_XX_...``, "dcase2020" if every one parses as ``normal_id_XX_...``,
  and "mixing" if none parses as either.

  Raises:
    DataError: missing directories, no training clips (``audio.SOUND_SUFFIXES``),
      or a mixture of naming schemes among the WAVs (pass ``layout=`` explicitly
      then).
  """
  data_dir = _require_dir(os.fspath(data_dir), "data")
  train_dir = _require_dir(os.path.join(data_dir, "train"), "training")
  names = [os.path.basename(p) for p in list_sounds(train_dir, warn=False)]  # warned on loading
  if not names:
    list_sounds(train_dir)  # warns of any sound-named entries that are not files
    raise DataError(f"{train_dir}: no training clips ({_SOUNDS})")
  # DCASE sets are WAV: their names are counted among the WAVs (a DCASE loader
  # reads only those); a folder with no WAV is judged by all its names (DCASE
  # names in FLACs: the DCASE loader then says to convert them).
  wavs = [n for n in names if n.lower().endswith(".wav")] or names
  n2021 = sum(bool(_DCASE2021.match(n)) for n in wavs)
  n2020 = sum(bool(_DCASE2020.match(n)) for n in wavs)
  if n2021 == len(wavs):
    return "dcase2021"
  if n2020 == len(wavs):
    return "dcase2020"
  if n2021 == 0 and n2020 == 0:
    return "mixing"
  majority = _DCASE2020 if n2020 >= n2021 else _DCASE2021
  odd = next(n for n in wavs if not majority.match(n))
  raise DataError(
      f"{train_dir}: cannot detect the layout ({n2020} DCASE 2020 names, {n2021} DCASE 2021+"
      f" names, {len(wavs)} files; e.g. {odd} is not a "
      f"{'DCASE 2020' if majority is _DCASE2020 else 'DCASE 2021+'} name); name the layout "
      "(--layout=dcase2020 or --layout=dcase2021; load_dataset's layout=): a DCASE layout "
      "skips the files whose names it cannot read"
  )


def _not_dcase_hint(data_dir: str, anomaly_dir: Optional[str]) -> Optional[str]:
  """Why a tree taken as the "mixing" layout (no training name is a DCASE name)
  cannot be one, when it is more likely a DCASE tree with other names: no
  ``test/`` folder, or no anomalous sounds (``anomaly/`` nor ``anomaly_dir``)."""
  missing = [what for what, gone in (
      ("test/", not os.path.isdir(os.path.join(data_dir, "test"))),
      ("anomaly/", anomaly_dir is None and not os.path.isdir(os.path.join(data_dir, "anomaly"))))
      if gone]
  if not missing:
    return None
  train_dir = os.path.join(data_dir, "train")
  listed = list_sounds(train_dir, warn=False)
  example = os.path.basename(next((p for p in listed if p.lower().endswith(".wav")), listed[0]))
  folders = list_test_folders(data_dir)
  return (f"{data_dir}: no training clip's name is a DCASE name (normal_id_XX_... or "
          f"section_XX_..._normal_..., e.g. {train_dir}/{example} is not), so the layout was "
          f"taken as 'mixing', which needs {' and '.join(missing)} (missing)"
          + (f"; its test folders ({', '.join(folders)}) look like a DCASE tree: name the "
             "clips as DCASE does" if folders and folders != ["test"] else "")
          + ("; or give the anomalous sounds (--anomaly_dir; load_dataset's anomaly_dir=)"
             if "anomaly/" in missing else "")
          + "; or name the layout (--layout=dcase2020 or --layout=dcase2021; "
          "load_dataset's layout=)")


# ----------------------------------------------------------------------------
# DCASE layouts
# ----------------------------------------------------------------------------


def list_test_folders(data_dir: str) -> list[str]:
  """The ``test*`` folders of ``data_dir`` (``test``, ``test_anr-10dB``, ...), sorted;
  [] if none. Shared by this module's DCASE loader and ``dcase.load_machine_type``.

  A folder that is the same folder as another one (a link such as ``test ->
  test_anr-15dB``, which the real-recording set's README suggests for one-folder
  code) is listed once, by its own name rather than the link's, with a warning:
  evaluated under both names it would count twice in the conditions' mean. So is
  a copy of another (the same WAV names, every file byte for byte the same),
  by the name that is not ``test`` (else the first in sorted order)."""
  names = sorted(n for n in os.listdir(data_dir)
                 if n.startswith("test") and os.path.isdir(os.path.join(data_dir, n)))
  kept: dict[str, str] = {}  # real path -> the name kept
  for name in sorted(names, key=lambda n: (os.path.islink(os.path.join(data_dir, n)), n)):
    real = os.path.realpath(os.path.join(data_dir, name))
    if real in kept:
      logging.warning("%s: the same folder as %s/; evaluated once, as %s",
                      os.path.join(data_dir, name), kept[real], kept[real])
      continue
    kept[real] = name
  unique: list[str] = []
  for name in sorted(kept.values(), key=lambda n: (n == "test", n)):
    original = next((u for u in unique if _same_files(os.path.join(data_dir, u),
                                                      os.path.join(data_dir, name))), None)
    if original is not None:
      logging.warning("%s: a copy of %s/ (the same files, byte for byte); evaluated once, as "
                      "%s", os.path.join(data_dir, name), original, original)
      continue
    unique.append(name)
  return sorted(unique)


def _same_files(first: str, second: str) -> bool:
  """Whether two folders hold the same WAV names with the same bytes (compared
  in name order, stopping at the first difference: size, then content)."""
  names = [os.path.basename(p) for p in list_wavs(first, warn=False)]
  if not names or names != [os.path.basename(p) for p in list_wavs(second, warn=False)]:
    return False
  pairs = [(os.path.join(first, n), os.path.join(second, n)) for n in names]
  if any(os.path.getsize(a) != os.path.getsize(b) for a, b in pairs):
    return False
  return all(filecmp.cmp(a, b, shallow=False) for a, b in pairs)


def test_folders(data_dir: str) -> list[str]:
  """The test folders of a DCASE-layout ``data_dir``: ``test`` or ``test*`` (sorted).

  A data set may hold several test folders, e.g. ``test_anr-10dB``,
  ``test_anr-15dB``, ``test_anr-20dB``: each gives its own conditions, named
  ``<folder>_<id or section>``, so one training is evaluated on all of them.
  A plain ``test/`` alone keeps the conditions' plain names.
  """
  names = list_test_folders(data_dir)
  if not names:
    raise DataError(f"{os.path.join(data_dir, 'test')}: test directory does not exist "
                    "(expected test/ or test*/ folders)")
  return names


def _parse_dcase(name: str, layout: str) -> tuple[int, str] | None:
  """(label, condition) from a DCASE file name, or None if it does not parse."""
  if layout == "dcase2020":
    match = _DCASE2020.match(name)
    return (_LABELS[match["label"]], match["id"]) if match else None
  match = _DCASE2021.match(name)
  if not match:
    return None
  condition = match["section"] + (f"_{match['domain']}" if match["domain"] else "")
  return _LABELS[match["label"]], condition


def require_sound(wave: np.ndarray, path: str) -> np.ndarray:
  """``wave`` of the training clip ``path``, or a DataError naming it if every
  sample is 0, or every sample is the same (a DC offset, no sound): a model of
  normal sound must not learn silence."""
  if not np.any(wave):
    raise DataError(f"{path}: silent training clip (every sample is 0); remove it, a model "
                    "of normal sound must not learn silence")
  # Away from the ends, where resampling a constant rings; only a non-zero offset counts
  # (a clip that is digital zero in the middle but not at its ends is kept, as before).
  middle = np.asarray(wave[wave.size // 20: wave.size - wave.size // 20], np.float64)
  if middle.size > 1 and np.ptp(middle) <= 1e-6 and abs(middle.mean()) > 1e-6:
    raise DataError(f"{path}: silent training clip (every sample is {middle.mean():.4g}, a "
                    "constant offset); remove it, a model of normal sound must not learn "
                    "silence")
  return wave


def clips_fingerprint(paths: Sequence[str]) -> str:
  """The training clips a model was fitted on, in a few characters: their
  count and a hash of their sorted file names (the held-out split depends on
  both). Stored with a model so that a re-evaluation on a training folder that
  has since changed is refused rather than calibrated on clips it trained on."""
  names = "\n".join(sorted(os.path.basename(p) for p in paths))
  return f"{len(paths)} clips, names sha1 {hashlib.sha1(names.encode()).hexdigest()[:12]}"


def missing_label(clips: Sequence[Any]) -> Optional[tuple[str, str]]:
  """For labelled clips (anything with ``label`` 0/1 and ``path``) of one
  condition or section: None if both labels occur (its AUC is defined), else
  (the missing label's name, their folders)."""
  labels = {c.label for c in clips}
  if labels == {0, 1}:
    return None
  folders = ", ".join(sorted({os.path.dirname(c.path) for c in clips}))
  return ("normal" if 0 not in labels else "anomalous"), folders


def check_conditions(test: Sequence[TestClip]) -> None:
  """Every test condition must hold normal and anomalous clips (its AUC needs
  both); a DataError names the folder of the one that does not."""
  for condition in sorted({c.condition for c in test}):
    clips = [c for c in test if c.condition == condition]
    missing = missing_label(clips)
    if missing:
      present = "anomalous" if missing[0] == "normal" else "normal"
      raise DataError(f"{missing[1]}: test condition {condition!r} has no {missing[0]} "
                      f"clips ({len(clips)} {present}); its AUC needs both")


def _load_dcase(data_dir: str, layout: str, sr: int) -> Dataset:
  train_paths, train, skipped = [], [], []
  for path in list_wavs(_require_dir(os.path.join(data_dir, "train"), "training")):
    parsed = _parse_dcase(os.path.basename(path), layout)
    if parsed is None or parsed[0] != 0:
      skipped.append(path)
      continue
    train_paths.append(path)
    train.append(require_sound(audio.load_wav(path, sr=sr), path))
  train_dir = os.path.join(data_dir, "train")
  if not train:
    raise DataError(f"{train_dir}: no normal training clips ({layout} names)"
                    + non_wav_note(train_dir))
  warn_non_wav(train_dir)
  test = []
  folders = test_folders(data_dir)
  for folder in folders:
    warn_non_wav(os.path.join(data_dir, folder))
    for path in list_wavs(os.path.join(data_dir, folder)):
      parsed = _parse_dcase(os.path.basename(path), layout)
      if parsed is None:
        skipped.append(path)
        continue
      label, condition = parsed
      if folders != ["test"]:
        condition = f"{folder}_{condition}"
      test.append(TestClip(path=path, wave=audio.load_wav(path, sr=sr), label=label,
                           condition=condition))
  if not test:
    raise DataError(f"{os.path.join(data_dir, folders[0] if len(folders) == 1 else 'test*')}: "
                    f"no labelled test clips ({layout} names)"
                    + non_wav_note(os.path.join(data_dir, folders[0])))
  if skipped:
    logging.warning("%s: skipped %d files whose names are not %s normal/anomaly clips, e.g. %s",
                    data_dir, len(skipped), layout, skipped[0])
  return Dataset(train=train, train_paths=train_paths, test=test, layout=layout)


# ----------------------------------------------------------------------------
# The paper's mixing protocol
# ----------------------------------------------------------------------------

_TRAIN, _TEST = 0, 1


def _circular_excerpt(wave: np.ndarray, start: int, length: int) -> np.ndarray:
  """``length`` samples of ``wave`` from ``start``, wrapping around (tiling)."""
  return wave[(start + np.arange(length)) % wave.size]


def _add_noise(clean: np.ndarray, noises: Sequence[np.ndarray], *, snr_db: float,
               seed: int, split: int, index: int, path: str,
               noise_paths: Sequence[str]) -> np.ndarray:
  rng = np.random.default_rng([seed, split, index])
  choice = rng.integers(len(noises))
  noise = noises[choice]
  excerpt = _circular_excerpt(noise, int(rng.integers(noise.size)), clean.size)
  # Name the file that is at fault: the clip, or the noise (a silent stretch).
  if audio.power(clean) <= 0.0:
    raise DataError(f"{path}: silent clip (every sample is 0); noise cannot be mixed into it "
                    f"at an SNR")
  if audio.power(excerpt) <= 0.0:
    raise DataError(f"{noise_paths[choice]}: the noise excerpt mixed into {path} is silent "
                    "(every sample 0); remove the silent stretch or the file")
  try:
    return audio.mix_at_ratio(clean, excerpt, ratio_db=-snr_db)
  except ValueError as error:
    raise DataError(f"{path} + noise {noise_paths[choice]}: cannot mix ({error})") from error


def _load_or_skip(path: str, sr: int, what: str) -> np.ndarray | None:
  """The wave of ``path``, or None (with a warning naming it) if it is truncated."""
  try:
    return audio.load_wav(path, sr=sr)
  except audio.TruncatedAudioError as error:
    logging.warning("skipped %s: %s", what, error)
    return None


def _read_rare_list(data_dir: str, test_paths: Sequence[str]) -> set[str] | None:
  """File names listed as rare in ``metadata.json``, or None without one."""
  meta_path = os.path.join(data_dir, "metadata.json")
  if not os.path.exists(meta_path):
    return None
  try:
    with open(meta_path, encoding="utf-8") as f:
      rare = json.load(f).get("rare_test_clips", [])
  except (OSError, ValueError, AttributeError) as error:
    raise DataError(f"{meta_path}: unreadable metadata ({error})") from error
  if not isinstance(rare, list) or not all(isinstance(n, str) for n in rare):
    raise DataError(f"{meta_path}: rare_test_clips must be a list of file names")
  unknown = set(rare) - {os.path.basename(p) for p in test_paths}
  if unknown:
    raise DataError(f"{meta_path}: rare_test_clips names clips not in test/: {sorted(unknown)[:5]}")
  return set(rare)


def _condition_name(anr_db: float) -> str:
  return f"anr_{anr_db:g}dB"


def _load_mixing(data_dir: str, *, noise_dir: str | None, anomaly_dir: str | None,
                 snr_db: float, anrs_db: Sequence[float], seed: int, sr: int) -> Dataset:
  train_dir = _require_dir(os.path.join(data_dir, "train"), "training")
  test_dir = _require_dir(os.path.join(data_dir, "test"), "test")
  if noise_dir is None and os.path.isdir(os.path.join(data_dir, "noise")):
    noise_dir = os.path.join(data_dir, "noise")
  if anomaly_dir is None:
    anomaly_dir = os.path.join(data_dir, "anomaly")
    if not os.path.isdir(anomaly_dir):
      raise DataError(f"{data_dir}: layout 'mixing' needs anomaly_dir (no {anomaly_dir})")
  if not anrs_db:
    raise DataError("layout 'mixing' needs at least one ANR in anrs_db")

  train_paths = list_sounds(train_dir)
  test_paths = list_sounds(test_dir)
  if not train_paths:
    raise DataError(f"{train_dir}: no training clips ({_SOUNDS})")
  if not test_paths:
    raise DataError(f"{test_dir}: no test clips ({_SOUNDS})")
  anomaly_paths = list_sounds(anomaly_dir)
  if not anomaly_paths:
    raise DataError(f"{anomaly_dir}: no anomalous sounds ({_SOUNDS})")
  loaded = [(p, _load_or_skip(p, sr, "anomalous sound")) for p in anomaly_paths]
  anomaly_paths = [p for p, w in loaded if w is not None]
  anomalies = [w for _, w in loaded if w is not None]
  if not anomalies:
    raise DataError(f"{anomaly_dir}: no usable anomalous sounds (every file is truncated)")
  noises = None
  if noise_dir is not None:
    noise_paths = list_sounds(noise_dir)
    if not noise_paths:
      raise DataError(f"{noise_dir}: no noise clips ({_SOUNDS})")
    noises = [audio.load_wav(p, sr=sr) for p in noise_paths]
    for noise_path, noise in zip(noise_paths, noises):
      if audio.power(noise) <= 0.0:
        raise DataError(f"{noise_path}: silent noise clip (every sample is 0); it cannot be "
                        "mixed at an SNR (remove it from the noise directory)")
    logging.info("%s: %d noise clips, mixed at %g dB SNR", noise_dir, len(noises), snr_db)
  else:
    logging.warning("%s: no noise_dir and no noise/ directory; clips are used clean", data_dir)

  def observed(path: str, split: int, index: int) -> np.ndarray | None:
    clean = _load_or_skip(path, sr, "training clip" if split == _TRAIN else "test clip")
    if noises is None or clean is None:
      return clean
    return _add_noise(clean, noises, snr_db=snr_db, seed=seed, split=split, index=index,
                      path=path, noise_paths=noise_paths)

  # Indices are file positions, so a skipped clip changes no other clip's noise.
  loaded = [(p, observed(p, _TRAIN, i)) for i, p in enumerate(train_paths)]
  train_paths = [p for p, w in loaded if w is not None]
  train = [w for _, w in loaded if w is not None]
  if not train:
    raise DataError(f"{train_dir}: no usable training clips (every file is truncated)")
  rare_names = _read_rare_list(data_dir, test_paths)
  test = []
  for index, path in enumerate(test_paths):
    normal = observed(path, _TEST, index)
    if normal is None:
      continue
    rare = None if rare_names is None else os.path.basename(path) in rare_names
    # Which anomaly, and where: fixed per clip, shared by all ANRs.
    rng = np.random.default_rng([seed, _TEST, index, 1])
    choice = int(rng.integers(len(anomalies)))
    anomaly = anomalies[choice][: normal.size]
    start = int(rng.integers(normal.size - anomaly.size + 1))
    placed = np.zeros_like(normal)
    placed[start: start + anomaly.size] = anomaly
    for anr_db in anrs_db:
      condition = _condition_name(anr_db)
      try:
        anomalous = audio.mix_at_ratio(normal, placed, ratio_db=anr_db)
      except ValueError as error:
        raise DataError(f"{path} + {anomaly_paths[choice]}: cannot mix ({error})") from error
      test.append(TestClip(path=path, wave=normal, label=0, condition=condition, rare=rare))
      test.append(TestClip(path=path, wave=anomalous, label=1, condition=condition, rare=rare,
                           anomaly_path=anomaly_paths[choice]))
  logging.info("%s: %d anomalous sounds, ANRs %s dB", anomaly_dir, len(anomalies),
               list(anrs_db))
  return Dataset(train=train, train_paths=train_paths, test=test, layout="mixing")


# ----------------------------------------------------------------------------
# Public loaders
# ----------------------------------------------------------------------------


def load_dataset(
    data_dir: str | os.PathLike,
    *,
    layout: str = "auto",
    noise_dir: str | os.PathLike | None = None,
    anomaly_dir: str | os.PathLike | None = None,
    snr_db: float = 0.0,
    anrs_db: Sequence[float] = PAPER_ANRS_DB,
    seed: int = 0,
    sr: int = audio.SAMPLE_RATE,
) -> Dataset:
  """Loads training and test clips of one machine type.

  Args:
    data_dir: directory holding ``train/`` and ``test/`` (see module docstring).
    layout: "auto" (``detect_layout``), "dcase2020", "dcase2021" or "mixing".
    noise_dir: "mixing" only; noise clips (default ``<data_dir>/noise`` if it
      exists, else the clips are used clean).
    anomaly_dir: "mixing" only; anomalous sounds (default ``<data_dir>/anomaly``).
    snr_db: "mixing" only; signal-to-noise ratio of machine sound to noise
      (paper: 0 dB).
    anrs_db: "mixing" only; anomaly-to-normal ratios, one condition each
      (paper: -10, -15, -20 dB).
    seed: "mixing" only; selects noise clips/offsets and anomaly sounds/positions.
    sr: sampling rate of the returned waves.

  Returns:
    A ``Dataset``. Training clips keep their sorted file order; test clips
    are in sorted file order (for "mixing": per clip, per ANR, normal then
    anomalous).

  Raises:
    DataError: missing directories, no clips, undetectable layout, bad
      metadata, mixing options given for a DCASE layout, a non-finite
      ``snr_db`` or ANR, or a silent noise clip or clip (the message names
      the file at fault).
    audio.AudioError: an unreadable, empty or non-finite audio file. In the
      mixing layout a truncated WAV is skipped with a warning naming it.
  """
  if not np.isfinite(snr_db):
    raise DataError(f"--snr_db must be a finite number of dB, got {snr_db}")
  bad_anrs = [a for a in anrs_db if not np.isfinite(a)]
  if bad_anrs:
    raise DataError(f"the ANRs must be finite numbers of dB, got {list(anrs_db)}")
  data_dir = _require_dir(os.fspath(data_dir), "data")
  if layout == "auto":
    layout = detect_layout(data_dir)
    hint = _not_dcase_hint(data_dir, None if anomaly_dir is None else os.fspath(anomaly_dir)
                           ) if layout == "mixing" else None
    if hint:
      raise DataError(hint)
  if layout not in LAYOUTS:
    raise DataError(f"unknown layout {layout!r}; expected 'auto' or one of {LAYOUTS}")
  if layout == "mixing":
    dataset = _load_mixing(
        data_dir,
        noise_dir=None if noise_dir is None else os.fspath(noise_dir),
        anomaly_dir=None if anomaly_dir is None else os.fspath(anomaly_dir),
        snr_db=snr_db, anrs_db=tuple(anrs_db), seed=seed, sr=sr)
  else:
    if noise_dir is not None or anomaly_dir is not None:
      raise DataError(f"{data_dir}: noise_dir/anomaly_dir apply only to layout 'mixing', "
                      f"not {layout!r}")
    dataset = _load_dcase(data_dir, layout, sr)
  labels = np.array([clip.label for clip in dataset.test])
  logging.info(
      "%s (%s): %d training clips (%.1f s), %d test clips (%d normal, %d anomalous) in %d"
      " conditions", data_dir, layout, len(dataset.train),
      sum(w.size for w in dataset.train) / sr, len(dataset.test), np.sum(labels == 0),
      np.sum(labels == 1), len({clip.condition for clip in dataset.test}))
  return dataset


_SILENT_EDGE_S = 0.25  # a something-else clip with this much zero padding is trimmed,
_SILENT_EDGE_SHARE = 0.25  # or with this share of it (a few zeros at the ends are sound's own)


def silent_edges(wave: np.ndarray) -> tuple[int, int]:
  """(samples, samples) of exact zeros at the start and the end of ``wave`` (zero
  padding; all of it for a silent wave)."""
  nonzero = np.flatnonzero(wave)
  if nonzero.size == 0:
    return wave.size, 0
  return int(nonzero[0]), int(wave.size - 1 - nonzero[-1])


def load_something_else(
    directory: str | os.PathLike,
    *,
    max_seconds: float = 5.0,
    sr: int = audio.SAMPLE_RATE,
) -> list[np.ndarray]:
  """Loads the something-else sounds a_n of eq. (8) (paper: clips < 5 s).

  Clips longer than ``max_seconds`` are SKIPPED (not cropped), as the paper
  selected short files; the number skipped is logged. Silent clips (their
  frames would count as anomalous while holding no sound) and truncated WAVs
  are skipped with a warning naming each file; a clip whose start and end hold
  0.25 s or a quarter of it of exact zeros (zero padding) is trimmed to its
  sound, with a warning naming it: the padding's frames would be trained as
  anomalous although nothing is added there, and the clip's level (the ANR)
  set as if its sound filled it. Clips are then kept up to ``max_seconds`` of
  sound. WAV, FLAC, Ogg, Opus, MP3, AIFF, W64 and RF64 files are read
  (``audio.SOUND_SUFFIXES``; ``list_sounds``).

  Args:
    directory: directory of sound files (sorted by name).
    max_seconds: longest clip kept.
    sr: sampling rate of the returned waves.

  Returns:
    List of float32 mono waves, each at most ``max_seconds * sr`` samples.

  Raises:
    DataError: missing directory, no sound files, or none short enough.
    audio.AudioError: an unreadable, empty or non-finite file.
  """
  directory = os.fspath(directory)
  paths = list_sounds(directory)
  if not paths:
    raise DataError(f"{directory}: no something-else sounds ({_SOUNDS})")
  max_len = int(round(max_seconds * sr))
  waves = []
  for path in paths:
    wave = _load_or_skip(path, sr, "something-else clip")
    if wave is None:
      continue
    if audio.power(wave) <= 0.0:
      logging.warning("skipped something-else clip %s: silent (every sample is 0)", path)
      continue
    edges = silent_edges(wave)
    if sum(edges) >= min(_SILENT_EDGE_S * sr, _SILENT_EDGE_SHARE * wave.size):
      logging.warning(
          "something-else clip %s: %.2f s of its %.2f s are digital silence at its start and "
          "end (zero padding); trimmed to its %.2f s of sound, so that no frame of the padding "
          "is trained as anomalous and its level (the ANR) is that of its sound",
          path, sum(edges) / sr, wave.size / sr, (wave.size - sum(edges)) / sr)
      wave = wave[edges[0]:wave.size - edges[1]]
    waves.append(wave)
  kept = [w for w in waves if w.size <= max_len]
  skipped = len(waves) - len(kept)
  if skipped:
    logging.info("%s: skipped %d of %d something-else clips longer than %g s", directory,
                 skipped, len(waves), max_seconds)
  if not kept:
    raise DataError(f"{directory}: no usable something-else clip (each is longer than "
                    f"{max_seconds} s, silent or truncated)")
  logging.info("%s: loaded %d something-else clips", directory, len(kept))
  return kept


def training_corpus(
    train_waves: Sequence[np.ndarray],
    *,
    segment_seconds: float = 3.0,
    sr: int = audio.SAMPLE_RATE,
    paths: Sequence[str] | None = None,
) -> np.ndarray:
  """Cuts every training clip into consecutive segments (paper: 3 s).

  Each clip gives ``len // segment_len`` non-overlapping segments from its
  start; the remainder (shorter than a segment) is dropped, and a clip
  shorter than one segment is SKIPPED (zero padding would teach the model
  that silence is normal). Both are logged.

  Args:
    train_waves: 1-D waves.
    segment_seconds: segment length in seconds.
    sr: sampling rate of the waves.
    paths: optional file of each wave, to name the skipped clips in the
      warning (without it they are named by position).

  Returns:
    float32 array (S, segment_seconds * sr), clip order then time order.

  Raises:
    DataError: no clip is long enough for a single segment.
  """
  segment_len = int(round(segment_seconds * sr))
  if segment_len <= 0:
    raise ValueError(f"segment_seconds must be positive, got {segment_seconds}")
  if paths is not None and len(paths) != len(train_waves):
    raise ValueError(f"training_corpus: {len(paths)} paths for {len(train_waves)} waves")
  segments, too_short, dropped = [], [], 0
  for index, wave in enumerate(train_waves):
    name = paths[index] if paths is not None else f"clip #{index}"
    wave = _mono_samples(wave, name)
    count = wave.size // segment_len
    if count == 0:
      too_short.append(f"{name} ({wave.size / sr:.2f} s)")
      continue
    dropped += wave.size - count * segment_len
    segments.append(wave[: count * segment_len].reshape(count, segment_len))
  if too_short:
    logging.warning("training_corpus: skipped %d clip(s) shorter than a %g-s segment: %s%s",
                    len(too_short), segment_seconds, ", ".join(too_short[:10]),
                    ", ..." if len(too_short) > 10 else "")
  if not segments:
    raise DataError(f"training_corpus: none of {len(train_waves)} clips is at least "
                    f"{segment_seconds} s long")
  corpus = np.concatenate(segments, axis=0)
  logging.info("training_corpus: %d segments of %g s (%.1f s of remainders dropped)",
               corpus.shape[0], segment_seconds, dropped / sr)
  return corpus


def _mono_samples(wave, name: str) -> np.ndarray:
  """``wave`` as float32 samples, or a ValueError naming it: a (N, 2) stereo array
  would be read as interleaved samples, and int16 PCM unscaled as amplitudes of
  thousands (``audio.load_wav`` gives mono floats in [-1, 1])."""
  raw = np.asarray(wave)
  if raw.ndim != 1:
    raise ValueError(f"{name}: a mono waveform is 1-D, got shape {raw.shape} (mix the "
                     "channels down first, e.g. wave.mean(axis=1))")
  if raw.dtype.kind not in "f":
    raise ValueError(f"{name}: waveform of {raw.dtype} samples; pass floats in [-1, 1] "
                     "(e.g. int16 PCM / 32768)")
  return raw.astype(np.float32, copy=False)


def pad_clips(clips: Sequence[np.ndarray], *, max_len: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
  """Stacks variable-length clips into a zero-padded array with lengths.

  Args:
    clips: 1-D waves (e.g. the something-else sounds).
    max_len: padded length; default the longest clip.

  Returns:
    ``(waves, lengths)``: float32 (E, max_len), zeros after each clip's end,
    and int32 (E,) true lengths.

  Raises:
    ValueError: no clips, an empty clip, or a clip longer than ``max_len``.
  """
  if not clips:
    raise ValueError("pad_clips: no clips")
  clips = [_mono_samples(c, f"pad_clips: clip {i}") for i, c in enumerate(clips)]
  lengths = np.array([c.size for c in clips], dtype=np.int32)
  if np.any(lengths == 0):
    raise ValueError(f"pad_clips: clip {int(np.argmin(lengths))} is empty")
  if max_len is None:
    max_len = int(lengths.max())
  too_long = np.flatnonzero(lengths > max_len)
  if too_long.size:
    raise ValueError(f"pad_clips: clip {int(too_long[0])} has {lengths[too_long[0]]} samples"
                     f" > max_len={max_len}")
  waves = np.zeros((len(clips), max_len), dtype=np.float32)
  for row, clip in enumerate(clips):
    waves[row, : lengths[row]] = clip
  return waves, lengths


# ----------------------------------------------------------------------------
# Rare-normal labels for evaluation (--rare_clips)
# ----------------------------------------------------------------------------


# The values of a --rare_clips CSV's 'rare' column (1.0 / 0.0: as pandas writes a
# column of integers that has gaps).
_RARE_VALUES = {"1": True, "0": False, "1.0": True, "0.0": False, "true": True,
                "false": False, "yes": True, "no": False}


def read_rare_clips(path: str | os.PathLike) -> dict[tuple[str, ...], bool]:
  """Reads which clips hold a rare operating mode, for evaluation only.

  Two formats:

  * a CSV with a header, a file-name column (``file``, ``filename``, ``name``,
    ``path`` or ``wav``) and a 0/1 column ``rare`` (e.g. realaudio-dev's
    ``metadata.csv``, whose ``file`` column holds paths relative to the set);
    separated by commas, semicolons or tabs (whichever names the ``rare``
    column); ``rare`` may also read 1.0 / 0.0, true / false or yes / no, and a
    clip whose ``rare`` cell is empty is left unknown (in neither group);
  * a plain list of file names (or relative paths), one per line: the listed
    clips are rare; every other clip is not.

  Returns:
    {path components: rare}. An entry ``test_anr-10dB/normal_id_00_0.wav``
    matches a clip whose path ends with these components; a bare name matches
    by file name (see ``mark_rare``). For a plain list the dict holds only
    True values and the key ``()`` -> False (the default for other clips).

  Raises:
    DataError: a missing or unreadable file, a CSV without the needed
      columns (or a first line of several columns, none of them those), a
      ``rare`` value that is not one of those, or a clip marked both rare and
      not rare (naming the file's line).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"--rare_clips={path}: no such file")
  try:
    with open(path, encoding="utf-8-sig", newline="") as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"--rare_clips={path}: cannot read ({e})") from None
  lines = [l for l in text.splitlines() if l.strip()]
  if not lines:
    raise DataError(f"--rare_clips={path}: empty file")
  import csv  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  # The delimiter whose split of the first line names a 'rare' column (',' else).
  delimiter = next((d for d in (",", ";", "\t") if "rare" in
                    [h.strip().lower() for h in next(csv.reader([lines[0]], delimiter=d))]), ",")
  header = next(csv.reader([lines[0]], delimiter=delimiter))
  lowered = [h.strip().lower() for h in header]
  labels: dict[tuple[str, ...], bool] = {}
  name_columns = ("file", "filename", "file_name", "name", "path", "wav")
  if "rare" not in lowered and len(header) > 1 and any(c in lowered for c in name_columns):
    raise DataError(f"--rare_clips={path}: the CSV has a file-name column but no 'rare' "
                    f"column (0/1; its columns: {', '.join(h.strip() for h in header)})")
  if "rare" not in lowered and len(header) > 1 and not any(
      h.strip().lower().endswith(audio.SOUND_SUFFIXES) for h in header):
    raise DataError(f"--rare_clips={path}: its first line has {len(header)} columns "
                    f"({', '.join(h.strip() for h in header)}) but neither a file-name column "
                    f"({', '.join(name_columns)}) nor a 'rare' column; give a CSV with both, or a "
                    "plain list of the rare clips' names, one per line")
  if "rare" in lowered and (len(header) > 1 or lowered == ["rare"]):
    name_col = next((lowered.index(c) for c in name_columns if c in lowered), None)
    if name_col is None:
      raise DataError(f"--rare_clips={path}: the CSV has a 'rare' column but no file-name "
                      f"column ({', '.join(name_columns)})")
    rare_col = lowered.index("rare")
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    for row in reader:  # the header: the first row that is not blank
      if any(cell.strip() for cell in row):
        break
    for row in reader:
      number = reader.line_num  # the file's line (a quoted field's last)
      if not any(cell.strip() for cell in row):
        continue
      if len(row) <= max(name_col, rare_col):
        raise DataError(f"--rare_clips={path}, line {number}: too few columns")
      value = row[rare_col].strip().lower()
      if not value:  # not given: the clip stays unknown, in neither group
        continue
      if value not in _RARE_VALUES:
        raise DataError(f"--rare_clips={path}, line {number}: rare must be 0 or 1 (or true / "
                        f"false, yes / no), got {row[rare_col]!r}")
      key, rare = _components(row[name_col]), _RARE_VALUES[value]
      if labels.get(key, rare) != rare:
        raise DataError(f"--rare_clips={path}, line {number}: {row[name_col].strip()} is "
                        "marked both rare and not rare")
      labels[key] = rare
  else:
    labels[()] = False
    for line in lines:
      labels[_components(line)] = True
  return labels


def _components(name: str) -> tuple[str, ...]:
  return tuple(p for p in name.strip().replace("\\", "/").split("/") if p not in ("", "."))


def rare_flags(paths: Sequence[str], labels: dict[tuple[str, ...], bool]
               ) -> tuple[list[Optional[bool]], int]:
  """Each clip's rare flag from ``read_rare_clips`` labels, and how many matched.

  A path takes the label of the longest entry whose components end it (so
  ``train/x.wav`` and ``test/x.wav`` stay apart when the file lists them with
  their folders, and a bare ``x.wav`` matches by name); a path that no entry
  matches gets None ("unknown"), or False when the labels come from a plain
  list.

  Returns:
    (one flag per path, the number of paths an entry matched).
  """
  default = labels.get((), None)
  longest = max((len(k) for k in labels), default=0)
  flags, matched = [], 0
  for path in paths:
    parts = _components(os.path.abspath(path))
    rare = None
    for n in range(min(longest, len(parts)), 0, -1):
      if parts[-n:] in labels:
        rare = labels[parts[-n:]]
        matched += 1
        break
    flags.append(default if rare is None else rare)
  return flags, matched


def mark_rare(dataset: Dataset, labels: dict[tuple[str, ...], bool], *,
              source: str = "--rare_clips") -> Dataset:
  """The dataset with ``TestClip.rare`` set from ``read_rare_clips`` labels.

  Each clip takes its flag as ``rare_flags`` matches it (None: "unknown"; a
  plain list marks unlisted clips not rare). Only evaluation reads these
  labels; training never sees them.

  Raises:
    DataError: when no test clip matches any entry (a wrong file).
  """
  flags, matched = rare_flags([clip.path for clip in dataset.test], labels)
  out = [dataclasses.replace(clip, rare=rare) for clip, rare in zip(dataset.test, flags)]
  if not matched:
    raise DataError(f"{source}: none of its {len(labels)} entries names a test clip of "
                    f"this data set (e.g. {os.path.basename(dataset.test[0].path)})")
  warn_unlisted(out, source=source)
  return dataclasses.replace(dataset, test=out)


def unlisted_normals(clips) -> tuple[int, int]:
  """(normal test clips whose rare flag is unknown, normal test clips), each file
  counted once however many conditions hold it: what a ``--rare_clips`` list
  leaves out (an anomalous clip's flag is never used)."""
  normal = {}
  for clip in clips:
    if clip.label == 0:
      normal[os.path.abspath(clip.path)] = normal.get(os.path.abspath(clip.path), False) or (
          clip.rare is None)
  return sum(normal.values()), len(normal)


def warn_unlisted(clips, *, source: str, where: str = "") -> None:
  """Warns how many normal test clips a rare-clip list leaves in neither group."""
  unknown, normal = unlisted_normals(clips)
  if unknown:
    logging.warning("%s: %d of the %d normal test clips%s are not listed: in neither the "
                    "rare nor the frequent group", source, unknown, normal, where)
