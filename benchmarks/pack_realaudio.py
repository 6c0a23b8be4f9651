"""Carry a built real-recording set to a lent accelerator: pack it as FLAC, unpack it as WAV.

    python -m benchmarks.pack_realaudio pack --root=/tmp/realaudio-dev --out=.ra \
        [--machine=engine_b] [--test_folders=test_anr-15dB]
    python -m benchmarks.pack_realaudio unpack --root=.ra --out=/tmp/ra      # on the device

The device tool sends the working tree and at most 64 MiB with it; the set
``../shared/realaudio-dev`` builds is 110 MB of 16-bit WAV, and engine noise
compresses to about 70 % as FLAC, so a pack holds ``train/``, the chosen test
folders, ``something_else/``, ``metadata.csv`` and ``something_else.csv``.
FLAC is lossless: ``unpack`` writes 16-bit PCM WAV files with the very samples
(tested). ``pack`` refuses an output folder that git would track (audio is
never committed: name it in ``.git/info/exclude`` first), and both print one
``Error:`` line for a missing folder or an unreadable file.
``benchmarks/device_check.sh`` unpacks ``.ra`` and trains the paper's preset
on it when the folder is there (TPU_NOTES.md).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import soundfile

_TABLES = ("metadata.csv", "something_else.csv")


class PackError(Exception):
  """A missing folder, an unreadable file or an output folder git would track."""


def _convert(src: str, dst: str, *, fmt: str) -> None:
  try:
    samples, rate = soundfile.read(src, dtype="int16", always_2d=False)
  except (RuntimeError, soundfile.LibsndfileError) as error:
    raise PackError(f"{src}: unreadable ({error})") from error
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  soundfile.write(dst, samples, rate, subtype="PCM_16", format=fmt)


def _folders(root: str, machine: str, test_folders) -> list[str]:
  base = os.path.join("dev_data", machine)
  wanted = [os.path.join(base, "train"), *(os.path.join(base, t) for t in test_folders),
            "something_else"]
  for rel in wanted:
    if not os.path.isdir(os.path.join(root, rel)):
      raise PackError(f"{os.path.join(root, rel)}: no such folder")
  return wanted


def _tracked_by_git(path: str) -> bool:
  """True if ``path`` lies in a git work tree and git would not ignore it."""
  where = os.path.dirname(os.path.abspath(path)) or "."
  inside = subprocess.run(["git", "-C", where, "rev-parse", "--is-inside-work-tree"],
                          capture_output=True, text=True)
  if inside.returncode != 0:
    return False
  # A file inside: a pattern such as "/.ra/" matches folders only, also before they exist.
  probe = os.path.join(os.path.abspath(path), "clip.flac")
  ignored = subprocess.run(["git", "-C", where, "check-ignore", "-q", probe],
                           capture_output=True)
  return ignored.returncode != 0


def pack(root: str, out: str, *, machine: str = "engine_b",
         test_folders=("test_anr-15dB",)) -> dict:
  """FLAC copies of a built set's training, test and something-else clips, and its tables.

  Returns {"files": n, "bytes": size of the pack}.
  """
  folders = _folders(root, machine, test_folders)
  if _tracked_by_git(out):
    raise PackError(f"{out}: git would track this folder; audio is never committed: add it to "
                    ".git/info/exclude first")
  count = 0
  for rel in folders:
    wavs = sorted(glob.glob(os.path.join(root, rel, "*.wav")))
    if not wavs:
      raise PackError(f"{os.path.join(root, rel)}: no .wav files")
    for wav in wavs:
      _convert(wav, os.path.join(out, rel, os.path.basename(wav)[:-4] + ".flac"), fmt="FLAC")
      count += 1
  for table in _TABLES:
    if os.path.exists(os.path.join(root, table)):
      shutil.copy(os.path.join(root, table), os.path.join(out, table))
  size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(out, "**"), recursive=True)
             if os.path.isfile(p))
  return {"files": count, "bytes": size}


def unpack(root: str, out: str) -> dict:
  """16-bit WAV files (the same samples) from a pack, and its tables, under ``out``."""
  flacs = sorted(glob.glob(os.path.join(root, "**", "*.flac"), recursive=True))
  if not flacs:
    raise PackError(f"{root}: no .flac files (not a pack of benchmarks.pack_realaudio)")
  for flac in flacs:
    rel = os.path.relpath(flac, root)
    _convert(flac, os.path.join(out, rel[:-5] + ".wav"), fmt="WAV")
  for table in _TABLES:
    if os.path.exists(os.path.join(root, table)):
      os.makedirs(out, exist_ok=True)
      shutil.copy(os.path.join(root, table), os.path.join(out, table))
  return {"files": len(flacs)}


def same_samples(wav: str, flac: str) -> bool:
  """Whether two files hold identical 16-bit samples (the check ``pack`` was made for)."""
  a, rate_a = soundfile.read(wav, dtype="int16")
  b, rate_b = soundfile.read(flac, dtype="int16")
  return rate_a == rate_b and a.shape == b.shape and bool(np.array_equal(a, b))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("action", choices=("pack", "unpack"))
  parser.add_argument("--root", required=True, help="the built set (pack) or the pack (unpack)")
  parser.add_argument("--out", required=True)
  parser.add_argument("--machine", default="engine_b")
  parser.add_argument("--test_folders", default="test_anr-15dB",
                      help="comma-separated test folders to pack")
  args = parser.parse_args(argv)
  try:
    if args.action == "pack":
      got = pack(args.root, args.out, machine=args.machine,
                 test_folders=tuple(f for f in args.test_folders.split(",") if f))
      print(f"packed {got['files']} clips into {args.out}: {got['bytes'] / 2**20:.1f} MiB")
    else:
      got = unpack(args.root, args.out)
      print(f"unpacked {got['files']} clips into {args.out}")
  except PackError as error:
    print(f"Error: {error}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
