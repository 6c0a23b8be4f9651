"""Audio I/O and level-controlled mixing.

* ``load_wav``: any file librosa can read -> float32 mono at ``sr`` (16 kHz by
  default; resampled by librosa, channels averaged).
* ``probe``: the length ``load_wav`` would return, from the header, and the
  errors a header alone shows (a check of many files before a long job).
* ``open_recording``: ``load_wav`` for a clip; for a long recording a
  ``Recording`` read range by range (``rec[a:b]``), the same samples without
  the whole recording in memory (scoring a day-long recording). WAV, AIFF and
  FLAC files are read where each range is; Ogg (Vorbis, Opus) and MP3 files,
  which libsndfile decodes exactly only forward, in one forward pass.
* ``write_wav``: float waveform -> WAV via soundfile. The default subtype is
  16-bit PCM: compact, what the DCASE data sets use, and byte-for-byte
  reproducible (libsndfile writes a time-stamped PEAK chunk into float WAVs,
  never into PCM ones). ``subtype="FLOAT"`` keeps full precision.
* ``mix_at_ratio``: ``base + alpha * other`` at a requested power ratio, the
  paper's eq. (8) ``x_n = x_n^(u) + alpha a_n`` with alpha set by the
  anomaly-to-normal ratio (ANR). The same function mixes noise at a given SNR
  (``ratio_db = -snr_db``).

Every failure to read a file raises ``AudioError`` (a ``ValueError``) whose
message names the file and the reason; a WAV file cut short (its data chunk
smaller than its header declares), or a FLAC or Ogg file whose audio decodes
short of its header's length, raises the subclass ``TruncatedAudioError``,
which the data loaders catch to skip that clip with a warning. A file whose
peak amplitude exceeds ``LOUD_PEAK`` is loaded with a warning naming it.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
from typing import Callable, Optional
import warnings

from absl import logging
import librosa
import numpy as np
import soundfile

SAMPLE_RATE = 16000
# The file types read wherever a folder of sounds is listed (the paper's mixing
# layout, something-else, noise and anomaly folders, recordings to score); DCASE
# layouts are WAV by definition. libsndfile (soundfile) decodes each of them.
# Where one recording is there in several types, the first of these is read.
# AIFF, and W64 and RF64 (what recorders write beyond WAV's 4 GB: a day of 48-kHz
# stereo 24-bit is 25 GB) come last.
SOUND_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".w64",
                  ".rf64")
LOUD_PEAK = 1e3  # a peak amplitude above this is almost surely a scaling error


class AudioError(ValueError):
  """A file that cannot be used as audio; the message names the file."""


class TruncatedAudioError(AudioError):
  """A WAV file whose data chunk is shorter than its header declares, or a FLAC
  or Ogg file whose audio decodes short of (or not at all to) the length its
  header declares."""


# Longer recordings are read range by range (open_recording): an hour at 16 kHz is
# 230 MB of float32 samples, a day 5.5 GB (and decoded whole at 44.1 kHz stereo, a
# compressed day is 30 GB in float64 before it is resampled).
STREAM_SECONDS = 600.0
# Types libsndfile seeks in exactly: each range is read where it is.
_SEEKABLE_FORMATS = ("WAV", "WAVEX", "RF64", "W64", "AIFF", "FLAC")
# Compressed types decoded forward: ranges read in order cost one decode of the file,
# keeping the last _FORWARD_KEEP_S seconds for ranges that overlap the one before.
_FORWARD_FORMATS = ("OGG", "MP3", "MPEG")
_FORWARD_KEEP_S = 10.0
_FORWARD_BLOCK_S = 1.0  # (an MP3 decode error loses the block it is in)
# Native-rate samples read beyond each end of a resampled range: the resampler's
# filter then sees what it sees in the whole file (equal to float rounding).
_RESAMPLE_MARGIN_S = 0.1

# Types whose header states the length exactly, so a decode that falls short of
# it is a damaged file (an MP3's length may be an estimate: not checked).
_STREAM_FORMATS = ("FLAC", "OGG")


def _sndfile_reason(error: Exception) -> str:
  """libsndfile's reason, without its "Error ... 'path': " prefix."""
  return str(error).split("': ", 1)[-1] or type(error).__name__


def _is_mp3(info: soundfile._SoundFileInfo | None) -> bool:
  return info is not None and info.format in ("MP3", "MPEG")


@contextlib.contextmanager
def _quiet_decoder(what: soundfile._SoundFileInfo | str | None):
  """While an MP3 (``what``: its info, or its path) is opened or decoded:
  libmpg123 writes notes to the process's stderr itself ("Xing stream size off",
  "part2_3_length ... too large": one every few block reads of some valid
  files, whose samples are right all the same), past Python's logging, into the
  progress line; they go to /dev/null. Decoding errors still raise (and are
  reported with the file's name)."""
  mp3 = what.lower().endswith(".mp3") if isinstance(what, str) else _is_mp3(what)
  try:
    saved = os.dup(2) if mp3 else None
  except OSError:  # no stderr to keep clean
    saved = None
  if saved is None:
    yield
    return
  if sys.stderr is not None:
    sys.stderr.flush()
  try:
    with open(os.devnull, "wb") as null:
      os.dup2(null.fileno(), 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


class _FileBytes:
  """A file's bytes by slices, read a window at a time (headers scanned through a
  day-long file without holding it, nor mapping it: a file cut while mapped
  would kill the process)."""

  def __init__(self, file, window: int = 1 << 20):
    self._file, self._window = file, window
    self._size = os.fstat(file.fileno()).st_size
    self._start, self._data = 0, b""

  def __len__(self) -> int:
    return self._size

  def __getitem__(self, index: slice | int):
    if isinstance(index, int):
      return self[index:index + 1][0]
    a, b = index.start, min(index.stop, self._size)
    if a < self._start or b > self._start + len(self._data):
      self._file.seek(a)
      self._start, self._data = a, self._file.read(max(self._window, b - a))
    return self._data[a - self._start:b - self._start]


# MPEG audio Layer III frame headers (ISO 11172-3, 13818-3): kbit/s by bitrate
# index for MPEG-1 and for MPEG-2/2.5, and sample rates by version.
_MP3_KBPS = {3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
             2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frames(path: str) -> tuple[float | None, bool]:
  """The seconds an MP3 file's Layer III audio frames hold, counted from their
  headers without decoding (None where it does not start with one), and whether
  its first frame is a Xing, Info or VBRI header (whose count libsndfile takes as
  the length; without one, it estimates the length from the first frame's
  bitrate, and stops decoding there: most of a VBR file can go unread)."""
  samples, frames, rate, tagged = 0, 0, None, False
  with open(path, "rb") as f:
    data = _FileBytes(f)
    pos = 0
    if data[0:3] == b"ID3" and len(data) >= 10:  # ID3v2: a syncsafe size, a footer flag
      pos = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(data[6:10]))
      pos += 10 if data[5] & 0x10 else 0
    while pos + 4 <= len(data):
      h = int.from_bytes(data[pos:pos + 4], "big")
      version, layer = (h >> 19) & 3, (h >> 17) & 3
      kbps_index, rate_index = (h >> 12) & 15, (h >> 10) & 3
      if (h >> 21) != 0x7FF or version == 1 or layer != 1 or kbps_index in (0, 15) \
          or rate_index == 3:
        break  # not a Layer III frame (the end, a tag, damage): counted so far
      rate = _MP3_RATES[version][rate_index]
      kbps = _MP3_KBPS[3 if version == 3 else 2][kbps_index]
      per_frame = 1152 if version == 3 else 576
      length = per_frame // 8 * kbps * 1000 // rate + ((h >> 9) & 1)
      if frames == 0 and not tagged and any(
          tag in data[pos:pos + length] for tag in (b"Xing", b"Info", b"VBRI")):
        tagged = True  # a header frame, no audio
      else:
        samples, frames = samples + per_frame, frames + 1
      pos += length
  return (samples / rate if frames else None), tagged


def _mp3_note(path: str, info: soundfile._SoundFileInfo, seconds: float,
              held: float | None, tagged: bool) -> str:
  """What to say where libsndfile decodes an MP3 file to ``seconds``, over a
  second short of the ``held`` seconds its frames hold (``_mp3_frames``)."""
  if held is None or held - seconds <= 1.0:
    return ""
  why = ("its Xing header counts only part of them: MP3 files joined?" if tagged
         else "an MP3 without a Xing header, whose length libsndfile estimates from its "
              "first frame")
  return (f"libsndfile decodes {seconds:.1f} s of the {held:.1f} s its MPEG frames hold "
          f"({why}); convert it, e.g. `ffmpeg -i in.mp3 out.wav`, to read all of it")


def sound_info(path: str | os.PathLike) -> soundfile._SoundFileInfo:
  """``soundfile.info(path)``, without libmpg123's notes on stderr (an MP3)."""
  path = os.fspath(path)
  with _quiet_decoder(path):
    return soundfile.info(path)


def _wav_data_bytes(path: str) -> tuple[int, int] | None:
  """(declared, present) bytes of the data chunk of a RIFF WAV, else None."""
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
      return None
    pos = 12
    while pos + 8 <= size:
      f.seek(pos)
      chunk = f.read(8)
      chunk_id, chunk_size = chunk[:4], int.from_bytes(chunk[4:], "little")
      if chunk_id == b"data":
        return chunk_size, size - pos - 8
      pos += 8 + chunk_size + (chunk_size & 1)
  return None


def _truncated_wav_bytes(path: str) -> tuple[int, int] | None:
  """(declared, present) bytes of the data chunk of a RIFF WAV cut short, else None."""
  data = _wav_data_bytes(path)
  # 0 and 0xFFFFFFFF: sizes left unset by streaming writers.
  if data is not None and data[0] not in (0, 0xFFFFFFFF) and data[0] > data[1]:
    return data
  return None


# libsndfile's count for a stream whose length it cannot tell (SF_COUNT_MAX): a
# chained Ogg file, several recordings joined, of which it decodes only the first.
UNKNOWN_LENGTH_FRAMES = 2**62


def _ogg_links(path: str) -> int:
  """The recordings of an Ogg file one after another (a chained file, several
  joined, has more than one): runs of pages that begin a stream, each after
  pages that do not (streams side by side, multiplexed, begin together)."""
  links, begun = 0, False
  with open(path, "rb") as f:
    data, pos = _FileBytes(f), 0
    while pos + 27 <= len(data) and data[pos:pos + 4] == b"OggS":
      begins = bool(data[pos + 5] & 0x02)  # "beginning of stream"
      links += begins and not begun
      begun = begins
      segments = data[pos + 26]
      pos += 27 + segments + sum(data[pos + 27:pos + 27 + segments])
  return links


def _check_length(path: str, info: soundfile._SoundFileInfo) -> None:
  """Refuses a chained Ogg file: libsndfile decodes only its first recording
  (and where that is short, cannot tell the length at all)."""
  if info.format != "OGG":
    return
  links = _ogg_links(path)
  if info.frames >= UNKNOWN_LENGTH_FRAMES or links > 1:
    raise AudioError(
        f"{path}: a chained Ogg file, {links if links > 1 else 'several'} recordings joined one after "
        f"another, of which libsndfile decodes only the first"
        + (f" (and reports {info.frames} samples)" if info.frames >= UNKNOWN_LENGTH_FRAMES
           else "") + ": convert it, e.g. `ffmpeg -i in.ogg out.wav`")


def _check_file(path: str) -> None:
  """Raises ``load_wav``'s errors that need no decoding: a missing, irregular,
  empty or truncated file."""
  if not os.path.exists(path):
    raise AudioError(f"{path}: no such file")
  if not os.path.isfile(path):
    raise AudioError(f"{path}: not a regular file")
  if os.path.getsize(path) == 0:
    raise AudioError(f"{path}: empty file (0 bytes)")
  truncated = _truncated_wav_bytes(path)
  if truncated is not None:
    declared, present = truncated
    raise TruncatedAudioError(
        f"{path}: truncated WAV file (its header declares {declared} bytes of samples, "
        f"the file holds {present})")


def probe(path: str | os.PathLike, *, sr: int = SAMPLE_RATE) -> int:
  """The length in samples at ``sr`` of what ``load_wav`` would return, from the
  file's header where it can be read (within a sample of the resampled length).

  A check before a long job: it raises, naming the file, what ``load_wav``
  raises for a file whose header already shows it unusable (missing, not a
  regular file, empty, truncated, no samples). A file soundfile cannot open is
  decoded in full, so that librosa's fallback decoders decide as in ``load_wav``.
  Content (NaN samples, silence) is only seen when the file is loaded.

  Raises:
    AudioError: as ``load_wav``.
  """
  path = os.fspath(path)
  _check_file(path)
  try:
    info = sound_info(path)
  except Exception:  # pylint: disable=broad-except
    return len(load_wav(path, sr=sr))
  _check_length(path, info)
  if info.frames <= 0:
    raise AudioError(f"{path}: audio file holds no samples")
  return int(np.ceil(info.frames * sr / info.samplerate))


def load_wav(path: str | os.PathLike, *, sr: int = SAMPLE_RATE) -> np.ndarray:
  """Loads an audio file as a float32 mono waveform at ``sr`` Hz.

  Args:
    path: audio file (WAV, FLAC, ... anything librosa can decode).
    sr: target sampling rate; other rates are resampled by librosa.

  Returns:
    1-D float32 array, channels averaged (``librosa.load(mono=True)``).

  Raises:
    AudioError: the file is missing, not a regular file, zero bytes long, not
      decodable as audio (the message gives the decoder's reason), holds no
      samples, or holds NaN/inf samples.
    TruncatedAudioError: a WAV file whose data chunk was cut short.
  """
  path = os.fspath(path)
  _check_file(path)
  try:
    info = sound_info(path)
    rate = info.samplerate
    sndfile_reason = None
  except Exception as error:  # pylint: disable=broad-except
    info = rate = None
    # e.g. "Error opening 'x.wav': Format not recognised." -> the reason only.
    sndfile_reason = _sndfile_reason(error)
  if info is not None:
    _check_length(path, info)
  try:
    with warnings.catch_warnings():
      # librosa warns before falling back from soundfile to audioread; the
      # outcome (a wave or an exception) is what matters here.
      warnings.simplefilter("ignore")
      with _quiet_decoder(info):
        wave, _ = librosa.load(path, sr=sr, mono=True)
  except Exception as error:  # pylint: disable=broad-except
    if info is not None and "not finite" in str(error):  # librosa's ParameterError
      raise AudioError(f"{path}: audio holds non-finite (NaN or inf) samples"
                       f"{_first_non_finite_at(path, info)}") from error
    if sndfile_reason is not None:  # audioread's NoBackendError has no message
      with open(path, "rb") as f:
        start = f.read(4)
      reason = (f"not a recognised audio format: {sndfile_reason} "
                f"(the file starts with {start!r})")
    else:
      reason = f"{type(error).__name__}: {error or 'no decoder succeeded'}"
      try:  # libsndfile's own reason (librosa's fallback decoder may give none)
        with _quiet_decoder(info):
          soundfile.read(path, dtype="float32")
      except Exception as sf_error:  # pylint: disable=broad-except
        reason = _sndfile_reason(sf_error)
      if info.format in _STREAM_FORMATS:
        raise TruncatedAudioError(
            f"{path}: damaged or cut short (its {info.format} header declares {info.frames} "
            f"samples, but its audio does not decode: {reason})") from error
    raise AudioError(f"{path}: cannot be read as audio ({reason})") from error
  wave = np.ascontiguousarray(wave, dtype=np.float32)
  held, tagged = _mp3_frames(path) if _is_mp3(info) else (None, False)
  # The header's length is exact (an MP3's where a Xing header gives it): a decode
  # well short of it is a damaged file.
  if info is not None and (info.format in _STREAM_FORMATS or tagged):
    # An Ogg stream cut short may declare no length at all (its last page lost).
    declared = info.frames * sr / info.samplerate
    if wave.size < 0.9 * declared or wave.size == 0:
      raise TruncatedAudioError(
          f"{path}: damaged or cut short (its {info.format} audio decodes to {wave.size} "
          f"samples at {sr} Hz" + (f", its header declares {int(round(declared))})"
                                    if declared else "; its header declares no length)"))
  if wave.size == 0:
    data = _wav_data_bytes(path)
    if data is not None and data[0] == 0 and data[1] > 0:  # libsndfile reads 0 as "none"
      raise AudioError(f"{path}: its WAV header declares 0 bytes of samples, but {data[1]} "
                       "bytes follow (a recording whose header was never finished): rewrite "
                       "its header, e.g. `sox --ignore-length in.wav out.wav`")
    raise AudioError(f"{path}: audio file holds no samples")
  if not np.all(np.isfinite(wave)):
    raise AudioError(f"{path}: audio holds non-finite (NaN or inf) samples"
                     f"{_first_non_finite_at(path, info)}")
  note = _mp3_note(path, info, wave.size / sr, held, tagged)
  if note:
    logging.warning("%s: %s", path, note)
  if rate is not None:
    _warn_low_rate(path, rate, sr)
  _warn_loud(path, float(np.max(np.abs(wave))))
  return wave


def _first_non_finite_at(path: str, info) -> str:
  """`` (the first at X s)`` for a file libsndfile reads whose samples include NaN or
  inf (before any resampling, which spreads them), or "" where it cannot tell."""
  try:
    with _quiet_decoder(info), soundfile.SoundFile(path) as f:
      position = 0
      for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
          return f" (the first at {(position + int(np.argmin(finite))) / f.samplerate:.3f} s)"
        position += block.shape[0]
  except Exception:  # pylint: disable=broad-except
    pass
  return ""


def rate_note(rate: int, sr: int) -> str:
  """What resampling a recording made at ``rate`` Hz to ``sr`` does to its spectrum,
  which a model of ``sr``-Hz recordings may score as anomalous ("" at ``sr``).
  Above ``sr``, librosa's resampler (soxr_hq) cuts the top of the band, measured
  at 48 and 44.1 kHz to 16 kHz: 7.6-7.8 kHz by ~8 dB, 7.8-8 kHz by ~33 dB."""
  if rate < sr:
    return (f"recorded at {rate} Hz, below the {sr} Hz it is resampled to: it holds nothing "
            f"above {rate / 2000:g} kHz, which a model of {sr}-Hz recordings may score as "
            "anomalous")
  if rate > sr:
    return (f"resampled from {rate / 1000:g} kHz: the resampler attenuates the top "
            f"~{sr / 40000:g} kHz below {sr / 2000:g} kHz; a model trained on {sr / 1000:g}-kHz "
            "recordings may score that as anomalous: check with a normal recording made the "
            "same way")
  return ""


def _warn_low_rate(path: str, rate: int, sr: int) -> None:
  if rate < sr:
    logging.warning("%s: %s", path, rate_note(rate, sr))


def codec_note(info: soundfile._SoundFileInfo) -> str:
  """What to say of a file a lossy codec altered beyond what a model of uncompressed
  recordings has seen ("" for others), by the codec libsndfile decodes, not the
  file's suffix. MP3: at every bitrate its encoder cuts the top ~0.4 kHz below 8 kHz
  of a 16-kHz recording by over 56 dB. Opus: no such cut, but normal clips coded at
  its default (~30 kbit/s) score above phi. Neither a top-band measure nor the
  bitrate told the Opus and Ogg Vorbis files that score high from those that do not
  (a coder's bitrate follows the sound), so every Opus file gets the note, and no
  Vorbis file (at its default quality, normal clips score as the WAVs)."""
  codec = "MP3" if _is_mp3(info) else (
      "Opus" if info.format == "OGG" and info.subtype == "OPUS" else None)
  if codec is None:
    return ""
  how = "MP3: its encoder cuts the top of the band" if codec == "MP3" else "Opus"
  return (f"lossy-coded ({how}); a model trained on uncompressed recordings may score "
          "that as anomalous: check with a normal recording coded the same way")


def recording_notes(path: str | os.PathLike, *, sr: int = SAMPLE_RATE,
                    told: Optional[set[str]] = None) -> list[str]:
  """What the way a recording was made may add to its scores: its rate, if not
  ``sr`` (``rate_note``), and a lossy codec (``codec_note``); from its header (for a
  file libsndfile cannot read, none). Each note is logged as a warning, once per
  ``told`` set (a scoring run's: a folder of 48-kHz recordings gets one line, each
  row the note); the low-rate one is ``load_wav``'s and ``open_recording``'s to log."""
  path = os.fspath(path)
  try:
    info = sound_info(path)
  except Exception:  # pylint: disable=broad-except
    return []
  rate, codec = rate_note(info.samplerate, sr), codec_note(info)
  for note in (rate if info.samplerate > sr else "", codec):
    if note and (told is None or note not in told):
      logging.warning("%s: %s%s", path, note, "" if told is None else
                      " (said in the notes of every such recording's rows, not again here)")
      if told is not None:
        told.add(note)
  return [note for note in (rate, codec) if note]


# A mono mix whose power is below this fraction of its channels' mean power:
# channels that cancel (one inverted), not a quiet recording (uncorrelated channels
# mix to about half their power, the same signal to all of it).
CANCEL_RATIO = 1e-2


def cancel_note(mono_power: float, channel_power: float) -> str:
  """What to say of a recording whose channels, of mean power ``channel_power``,
  average to a mono mix of power ``mono_power`` (mean squares): "" unless the
  mix is below ``CANCEL_RATIO`` of them."""
  if not channel_power > 0 or mono_power >= CANCEL_RATIO * channel_power:
    return ""
  how = ("is silent" if mono_power <= 0 else
         f"is {10 * math.log10(channel_power / mono_power):.0f} dB below them")
  return (f"its channels cancel when averaged to mono (the mix {how}: one channel "
          "inverted?): score one channel")


def _mix_powers(block: np.ndarray, mono: np.ndarray) -> np.ndarray:
  """Sums of squares of the mono mix and of the channels (per channel), of the
  finite frames of a (frames, channels) block and its mix."""
  finite = np.isfinite(mono)
  block, mono = block[finite].astype(np.float64), mono[finite].astype(np.float64)
  return np.array([np.sum(mono * mono), np.sum(block * block) / block.shape[1]])


def _file_mix_powers(path: str) -> np.ndarray | None:
  """``_mix_powers`` of all of a file with several channels, read a block at a time
  at its own rate; None for one channel, or a file libsndfile cannot read."""
  try:
    info = sound_info(path)
    if info.channels < 2:
      return None
    total = np.zeros(2)
    with _quiet_decoder(info), soundfile.SoundFile(path) as f:
      for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
        total += _mix_powers(block, block.mean(axis=1))
    return total
  except Exception:  # pylint: disable=broad-except
    return None


def channel_note(path: str | os.PathLike, wave: np.ndarray | Recording) -> str:
  """``cancel_note`` of a recording from ``open_recording``: of a ``Recording``, over
  the ranges read so far (counted as they are mixed to mono: nothing more is
  read); of a loaded file with several channels, by reading them once."""
  if isinstance(wave, Recording):
    total = wave._shared["mix"]  # pylint: disable=protected-access
  else:
    total = _file_mix_powers(os.fspath(path))
  return "" if total is None else cancel_note(*total)


def _warn_loud(path: str, peak: float) -> bool:
  """Warns (and returns True) if ``peak`` is beyond ``LOUD_PEAK``."""
  if peak > LOUD_PEAK:
    logging.warning("%s: peak amplitude %.3g > %g (audio is expected in [-1, 1]); "
                    "check how it was written", path, peak, LOUD_PEAK)
    return True
  return False




class _ForwardReader:
  """A compressed file decoded forward only (what libsndfile decodes exactly),
  ``block`` frames at a time: frames [start, stop) at the file's rate,
  (n, channels) float32. Ranges read in order (or starting at most ``keep``
  frames before the furthest end read) cost one decode of the file; an earlier
  range decodes again from the start. A decoding error is kept: every
  later range past it raises it at once. Memory: a range, a block and ``keep``."""

  def __init__(self, path: str, *, keep: int, block: int,
               info: soundfile._SoundFileInfo | None = None):
    self.path, self.keep, self.block, self.info = path, keep, block, info
    self.rewinds = 0  # decodes started again from the beginning (for tests)
    self.failed: tuple[int, str] | None = None  # (frame, libsndfile's reason)
    self._file = None
    self._pos = 0  # frames decoded
    self._buf = None  # the decoded frames [self._pos - len(self._buf), self._pos)
    self._eof = False

  def _reset(self) -> None:
    if self._file is not None:
      self._file.close()
    self._file, self._pos, self._buf, self._eof = None, 0, None, False

  def read(self, start: int, stop: int) -> np.ndarray:
    """Frames [start, stop) (fewer where the audio ends); raises ``RuntimeError``
    (libsndfile's) where the file cannot be decoded."""
    if self.failed is not None and stop > self.failed[0]:
      raise RuntimeError(self.failed[1])
    first = self._pos - (0 if self._buf is None else len(self._buf))  # of what is kept
    if start < first:  # before what is kept: decode again from the start
      self.rewinds += 1
      self._reset()
      first = 0
    parts = [] if self._buf is None else [self._buf]
    while self._pos < stop and not self._eof:
      try:
        # Always whole blocks, as _decoded_frames counts: a damaged stream decodes
        # differently by the size of the reads (libsndfile's Vorbis decoder).
        with _quiet_decoder(self.info or self.path):
          if self._file is None:
            self._file = soundfile.SoundFile(self.path)
          block = self._file.read(self.block, dtype="float32", always_2d=True)
      except Exception as error:  # pylint: disable=broad-except
        self.failed = (self._pos, _sndfile_reason(error))
        self._reset()
        raise RuntimeError(self.failed[1]) from error
      self._pos += len(block)
      parts.append(block)
      if len(block) < self.block:  # the audio ends here
        self._file.close()
        self._file, self._eof = None, True
      # While skipping to start, only the last ``keep`` frames before it are kept.
      while len(parts) > 1 and first + len(parts[0]) <= start - self.keep:
        first += len(parts.pop(0))
    if not parts:
      return np.zeros((0, 1), np.float32)
    buf = np.concatenate(parts) if len(parts) > 1 else parts[0]
    out = buf[max(start - first, 0):max(stop - first, 0)]
    # Kept for the next range: all of this one and the ``keep`` frames before its end
    # (and what was decoded past it).
    self._buf = buf[max(0, min(start, stop - self.keep) - first):]
    return out


def _decoded_frames(path: str, *, block: int, info: soundfile._SoundFileInfo | None = None
                    ) -> tuple[int, str | None]:
  """The frames a compressed file decodes to, by decoding it (its header's count
  may be an estimate or a damaged file's claim), and libsndfile's reason where
  decoding fails before its end."""
  frames = 0
  try:
    with _quiet_decoder(info or path):
      file = soundfile.SoundFile(path)
    with file:
      while True:  # in blocks, to a short read, as _ForwardReader.read
        with _quiet_decoder(info or path):
          n = len(file.read(block, dtype="float32", always_2d=True))
        frames += n
        if n < block:
          return frames, None
  except Exception as error:  # pylint: disable=broad-except
    return frames, _sndfile_reason(error)


class Recording:
  """A long sound file read range by range, at ``sr`` Hz, mono, float32 (WAV,
  AIFF, FLAC: each range where it is; Ogg, MP3: ``forward``, by one forward
  decode, so ranges are best read in order).

  ``rec[a:b]`` holds what ``load_wav(path, sr=sr)[a:b]`` holds (the same
  samples at the file's own rate; resampled, equal to float rounding: each range
  is resampled from ``_RESAMPLE_MARGIN_S`` more on either side, aligned to the
  resampler's grid), reading only that range of the file. ``len(rec)``,
  ``rec.size`` and ``rec.shape`` are ``load_wav``'s length. Made by
  ``open_recording``.

  Each range is checked as ``load_wav`` checks a file: non-finite samples, or a
  range that cannot be read, raise ``AudioError`` naming the file and the time;
  a peak above ``LOUD_PEAK`` is warned about once.
  """

  ndim = 1
  dtype = np.dtype(np.float32)

  def __init__(self, path: str | os.PathLike, *, sr: int, info: soundfile._SoundFileInfo,
               frames: int | None = None):
    self.path = os.fspath(path)
    self.sr = int(sr)
    self.native_sr = int(info.samplerate)
    # The header's count, or (a compressed file) the frames it decodes to.
    self.native_frames = int(info.frames if frames is None else frames)
    self.forward = info.format not in _SEEKABLE_FORMATS  # decoded forward only
    self._info = info
    # librosa.resample's length (it fixes soxr's output to it).
    self.size = int(np.ceil(self.native_frames * self.sr / self.native_sr))
    self.offset = 0  # where this section starts in the file (section), at sr
    self.note = ""  # what a score of it should say (a file cut short)
    g = math.gcd(self.native_sr, self.sr)
    self._in_step, self._out_step = self.native_sr // g, self.sr // g
    # One warning per file, one forward decoder: sections share them.
    # "mix": sums of squares of the mono mix and of the channels, of the ranges read
    # (several channels: channel_note).
    self._shared = {"loud": False, "reader": None,
                    "mix": np.zeros(2) if info.channels > 1 else None}
    # Called with the end (in samples at sr) of each range read: a caller's
    # progress line over a long recording (ranges are read in order).
    self.on_read: Callable[[int], None] | None = None

  @property
  def _length(self) -> str:
    """Its length as its errors give it (a compressed file's: counted when opened)."""
    seconds = self.native_frames / self.native_sr
    return (f"it decoded to {seconds:.1f} s when opened" if self.forward
            else f"its header declares {seconds:.1f} s")

  @property
  def reader(self) -> _ForwardReader:
    """The forward decoder of a compressed file (shared by its sections)."""
    if self._shared["reader"] is None:
      self._shared["reader"] = _ForwardReader(
          self.path, keep=int(_FORWARD_KEEP_S * self.native_sr),
          block=int(_FORWARD_BLOCK_S * self.native_sr), info=self._info)
    return self._shared["reader"]

  @property
  def shape(self) -> tuple[int]:
    return (self.size,)

  def __len__(self) -> int:
    return self.size

  def __repr__(self) -> str:
    return f"Recording({self.path!r}, {self.size} samples at {self.sr} Hz)"

  def section(self, start: int, stop: int) -> "Recording":
    """Samples [start, stop) of this recording, still read range by range (a
    piece of a long recording); ``on_read`` is told ends in the file's time."""
    start, stop, _ = slice(start, stop).indices(self.size)
    part = copy.copy(self)
    part.offset, part.size = self.offset + start, max(stop - start, 0)
    return part

  def __getitem__(self, index: slice) -> np.ndarray:
    if not isinstance(index, slice) or index.step not in (None, 1):
      raise TypeError(f"{self!r} is read by contiguous ranges, rec[a:b]; got {index!r}")
    a, b, _ = index.indices(self.size)
    if b <= a:
      return np.zeros(0, np.float32)
    a, b = a + self.offset, b + self.offset  # in the file
    wave = self._resampled(a, b) if self.native_sr != self.sr else self._native(a, b)
    if not self._shared["loud"] and wave.size:
      self._shared["loud"] = _warn_loud(self.path, float(np.max(np.abs(wave))))
    if self.on_read is not None:
      self.on_read(b)
    return wave

  def _native(self, start: int, stop: int, *, checked: tuple[int, int] | None = None
              ) -> np.ndarray:
    """Samples [start, stop) at the file's own rate, channels averaged as librosa.load
    does. Non-finite samples raise in ``checked`` (default all of it), and are 0
    outside it (a resampling margin: a NaN just past a piece fails the next one only)."""
    try:
      if self.forward:
        block = self.reader.read(start, stop)
      else:
        with soundfile.SoundFile(self.path) as f:
          f.seek(start)
          block = f.read(stop - start, dtype="float32", always_2d=True)
    except Exception as error:  # pylint: disable=broad-except
      # e.g. a FLAC cut short: "flac decoder lost sync", "Internal psf_fseek() failed".
      reason = _sndfile_reason(error)
      raise TruncatedAudioError(
          f"{self.path}: damaged or cut short ({self._length}, but reading "
          f"{start / self.native_sr:.3f}-{stop / self.native_sr:.3f} s fails: {reason})"
      ) from error
    if len(block) < stop - start:
      raise TruncatedAudioError(
          f"{self.path}: damaged or cut short ({self._length}, but reading stops at "
          f"{(start + len(block)) / self.native_sr:.3f} s)")
    # librosa.to_mono's mean, over the same axis; a copy, which a margin's bad
    # samples may change.
    y = np.array(np.mean(block.T, axis=0) if block.shape[1] > 1 else block[:, 0],
                 dtype=np.float32)
    if block.shape[1] > 1 and self._shared["mix"] is not None:
      self._shared["mix"] += _mix_powers(block, y)
    finite = np.isfinite(y)
    if not finite.all():
      lo, hi = (start, stop) if checked is None else checked
      inside = finite[lo - start:hi - start]
      if not inside.all():
        first = (lo + int(np.argmin(inside))) / self.native_sr
        raise AudioError(f"{self.path}: audio holds non-finite (NaN or inf) samples (the first "
                         f"at {first:.3f} s)")
      y[~finite] = 0.0
    return y

  def _resampled(self, a: int, b: int) -> np.ndarray:
    """Samples [a, b) at ``sr``: a native range on the resampler's grid around
    them, with a margin, resampled as librosa.load resamples, then cut."""
    i, o = self._in_step, self._out_step
    first, last = a // o, -(-b // o)  # grid points around [a, b)
    margin = -(-int(np.ceil(_RESAMPLE_MARGIN_S * self.native_sr)) // i)
    start = max(0, first - margin) * i
    stop = min(self.native_frames, (last + margin) * i)
    checked = (first * i, min(self.native_frames, last * i))  # what [a, b) is made from
    y = librosa.resample(self._native(start, stop, checked=checked), orig_sr=self.native_sr,
                         target_sr=self.sr)
    offset = start // i * o  # the output index of y[0]
    return np.ascontiguousarray(y[a - offset:b - offset], dtype=np.float32)


def open_recording(path: str | os.PathLike, *, sr: int = SAMPLE_RATE,
                   stream_seconds: float | None = None,
                   cut_short_ok: bool = False) -> np.ndarray | Recording:
  """A recording to score: ``load_wav(path, sr=sr)``, or, for a file longer than
  ``stream_seconds`` (default ``STREAM_SECONDS``), a ``Recording`` that reads it
  range by range (the same samples; memory bounded by the ranges read). An Ogg
  or MP3 file is decoded forward as it is read, after a decode here that counts
  its samples (its header's count may be an estimate, or a damaged file's claim).

  With ``cut_short_ok``, a WAV file cut short (its data chunk shorter than its
  header declares: a recorder that lost power) is a ``Recording`` of the
  samples present, and an Ogg or MP3 file of any length is a ``Recording`` of
  what libsndfile decodes of it; where that falls short of its length, its
  ``note`` says so (logged as a warning), where ``load_wav`` refuses it or
  its fallback decoders (ffmpeg, where installed) read it.

  Raises:
    AudioError: as ``load_wav`` for what the header shows (missing, empty,
      truncated); a ``Recording`` raises the rest when its ranges are read.
  """
  path = os.fspath(path)
  try:
    _check_file(path)
  except TruncatedAudioError as truncated:
    if not cut_short_ok:
      raise
    return _cut_short(path, sr=sr, truncated=truncated)
  try:
    info = sound_info(path)
  except Exception:  # pylint: disable=broad-except
    return load_wav(path, sr=sr)  # its decoders and its error
  _check_length(path, info)
  stream_seconds = STREAM_SECONDS if stream_seconds is None else stream_seconds
  long = info.frames > stream_seconds * info.samplerate
  if long and info.format in _SEEKABLE_FORMATS:
    _warn_low_rate(path, info.samplerate, sr)
    return Recording(path, sr=sr, info=info)
  if info.format not in _FORWARD_FORMATS:
    return load_wav(path, sr=sr)
  if not long and not cut_short_ok:
    return load_wav(path, sr=sr)
  # (With cut_short_ok, a short one too: a Recording says what it could not read,
  # the same on every machine, where load_wav's decoders depend on what is installed.)
  held, tagged = _mp3_frames(path) if _is_mp3(info) else (None, False)
  # Counted by decoding, in the blocks it is read in: an MP3's declared length may be
  # an estimate, or (its Xing header's) that of a file since cut short; an Ogg file
  # damaged mid-file may decode short of its header's length (by how much depends on
  # the size of the reads).
  frames, failure = _decoded_frames(path, block=int(_FORWARD_BLOCK_S * info.samplerate),
                                    info=info)
  return _forward_recording(path, sr=sr, info=info, frames=frames, failure=failure,
                            held=held, tagged=tagged, cut_short_ok=cut_short_ok)


def _forward_recording(path: str, *, sr: int, info: soundfile._SoundFileInfo, frames: int,
                       failure: str | None, held: float | None, tagged: bool,
                       cut_short_ok: bool) -> Recording:
  """A compressed recording of the ``frames`` it decodes to. One whose audio
  stops short of its header's length (an untagged MP3's: of what its frames hold,
  ``held``), or fails to decode before its end, raises ``TruncatedAudioError``
  (as ``load_wav`` judges it: over 10 % short, or failing), or with
  ``cut_short_ok`` is the samples before that, with a note."""
  rate = info.samplerate
  if frames <= 0:
    raise TruncatedAudioError(f"{path}: damaged or cut short (its audio does not decode"
                              + (f": {failure})" if failure else ")"))
  recording = Recording(path, sr=sr, info=info, frames=frames)
  # An intact file decodes to exactly its header's count (an MP3's: its Xing
  # header's); an untagged MP3's count is libsndfile's estimate, which may be too
  # long as well as too short: its frames are what it holds.
  if _is_mp3(info) and not tagged:
    expected, length = (held or 0.0) * rate, f"its MPEG frames hold {held or 0:.1f} s"
  else:
    expected = info.frames
    length = f"its {info.format} header declares " + (
        f"{info.frames / rate:.1f} s" if info.frames > 0 else "no length")
  # (A decode error within a second of the end: trailing junk, not damage.)
  failed = failure is not None and frames < expected - rate
  short = frames < expected - (rate if _is_mp3(info) else 0)
  # An untagged MP3 decoded to libsndfile's estimate: not damaged, not all read.
  estimated = _is_mp3(info) and not tagged and frames == info.frames and not failed
  unread = _mp3_note(path, info, frames / rate, held, tagged)  # (an estimate, files joined)
  if (failed or short) and not estimated:
    what = f"{length}, its audio decodes to {frames / rate:.1f} s" + (
        f" ({failure})" if failed else "")
    if not cut_short_ok and (failed or frames < 0.9 * expected):
      raise TruncatedAudioError(f"{path}: damaged or cut short ({what})")
    recording.note = f"damaged or cut short: {what}, which were scored"
  elif unread:
    recording.note = f"{unread}; the {frames / rate:.1f} s decoded were scored"
  if recording.note:
    logging.warning("%s: %s", path, recording.note)
  _warn_low_rate(path, rate, sr)
  return recording


def write_wav(
    path: str | os.PathLike,
    wave: np.ndarray,
    *,
    sr: int = SAMPLE_RATE,
    subtype: str = "PCM_16",
) -> None:
  """Writes a mono waveform to a WAV file.

  Args:
    path: destination; parent directories must exist.
    wave: 1-D float array in [-1, 1].
    sr: sampling rate stored in the header.
    subtype: soundfile subtype, "PCM_16" (default, reproducible bytes) or
      "FLOAT".

  Raises:
    ValueError: ``wave`` is not 1-D, has non-finite samples, or (for PCM)
      exceeds [-1, 1], which would clip silently.
  """
  wave = np.asarray(wave)
  if wave.ndim != 1:
    raise ValueError(f"{os.fspath(path)}: expected a 1-D wave, got shape {wave.shape}")
  if not np.all(np.isfinite(wave)):
    raise ValueError(f"{os.fspath(path)}: wave holds non-finite samples")
  if subtype.upper().startswith("PCM") and wave.size and np.max(np.abs(wave)) > 1.0:
    raise ValueError(
        f"{os.fspath(path)}: peak {np.max(np.abs(wave)):.3f} > 1 would clip in {subtype}"
    )
  soundfile.write(os.fspath(path), wave.astype(np.float32), sr, subtype=subtype, format="WAV")


def power(wave: np.ndarray) -> float:
  """Mean square of ``wave`` (float64 accumulation)."""
  wave = np.asarray(wave, dtype=np.float64)
  return float(np.mean(wave * wave)) if wave.size else 0.0


def mix_at_ratio(base: np.ndarray, other: np.ndarray, *, ratio_db: float) -> np.ndarray:
  """Adds ``other`` to ``base`` at a given power ratio (paper eq. 8).

  Returns ``base + alpha * other`` with ``alpha`` chosen so that

      10 log10( mean((alpha * other)^2) / mean(base^2) ) = ratio_db,

  i.e. ``ratio_db`` is the anomaly-to-normal ratio (ANR) when ``other`` is an
  anomalous or something-else sound, and minus the SNR when ``other`` is noise.
  Powers are taken over the whole arrays; to mix a short event into part of a
  longer clip, pass the matching slice of the clip as ``base``.

  Args:
    base: 1-D array (the normal sound x^(u)).
    other: 1-D array with the same length (a_n in eq. 8).
    ratio_db: target power ratio in dB (finite).

  Returns:
    The mixture, float32, same shape as ``base``.

  Raises:
    ValueError: shapes differ, ``ratio_db`` is not finite, or either input has
      zero power (the ratio would be undefined).
  """
  base = np.asarray(base)
  other = np.asarray(other)
  if base.ndim != 1 or base.shape != other.shape:
    raise ValueError(
        f"mix_at_ratio needs two 1-D arrays of equal length, got {base.shape} and {other.shape}"
    )
  if not np.isfinite(ratio_db):
    raise ValueError(f"ratio_db must be finite, got {ratio_db}")
  base_power = power(base)
  other_power = power(other)
  if base_power <= 0.0:
    raise ValueError("mix_at_ratio: base has zero power; the ratio is undefined")
  if other_power <= 0.0:
    raise ValueError("mix_at_ratio: other has zero power; it cannot be scaled to a ratio")
  alpha = np.sqrt(base_power / other_power * 10.0 ** (ratio_db / 10.0))
  mixed = base.astype(np.float64) + alpha * other.astype(np.float64)
  return mixed.astype(np.float32)


def _cut_short(path: str, *, sr: int, truncated: TruncatedAudioError) -> Recording:
  """The samples present in a WAV file cut short, as a ``Recording`` with a note;
  ``truncated`` (``_check_file``'s error) where libsndfile cannot read them."""
  declared, present = _truncated_wav_bytes(path)
  try:
    info = sound_info(path)  # libsndfile counts the frames present
  except Exception as error:  # pylint: disable=broad-except
    raise truncated from error
  if info.frames <= 0 or info.format not in _SEEKABLE_FORMATS:
    raise truncated
  recording = Recording(path, sr=sr, info=info)
  seconds = info.frames / info.samplerate
  recording.note = (f"cut short: its header declares {seconds * declared / present:.1f} s, "
                    f"the file holds {seconds:.1f} s, which were scored")
  logging.warning("%s: %s", path, recording.note)
  _warn_low_rate(path, info.samplerate, sr)
  return recording
