"""The real-recording set with another engine recording as its machine.

    bash ../shared/realaudio-dev/build.sh /tmp/realaudio-dev     # once: fetches the packages
    python -m benchmarks.realaudio_engine --engine=f360.wav -- \
        --src /tmp/realaudio-dev-work/x --out /tmp/realaudio-f360 --seed 9011 --machine engine_f360

``../shared/realaudio-dev/build.py`` assembles every clip of its set around one
engine loop, TORCS's ``renault-v10.wav`` (a V10). This runs that same script,
unchanged but for the loop: ``--engine`` names another file of TORCS's sound
folder (``torcs-data/usr/share/games/torcs/data/sound/``, unpacked by ``build.sh``
under ``$WORK/x``), e.g. ``f360.wav`` (a V8) or ``944.wav`` (an inline four). The
rare mode (the rev-up with the drivetrain whine and the backfire pops), the
background, the anomalies, the ANR and the something-else sounds are built as
for ``engine_b``; every argument after ``--`` goes to ``build.py`` as it is
(``python ../shared/realaudio-dev/build.py -h``). Such a set is a second machine
for ``benchmarks.realaudio --root=<out> --machine=<machine>``: a check that the
``cpu`` preset's results do not hold for one recording only.

``--loop`` instead names any sound file under ``--src`` by its path there, for a machine that
is not a TORCS engine, e.g. ``--loop=btanks-data/usr/share/games/btanks/data/sounds/helicopter.ogg``
(a helicopter's rotor; ``build.py`` reads it with ``librosa.load``, so any format it reads).

The loop's path is added to the set's ``build_info.json`` as ``engine_loop`` (``build.py``
does not record it). ``build.sh``'s checks (the packages' sha256, ``SHA256SUMS``) are not
repeated: the output is not a published set, so write it outside the repository.
"""

import argparse
import importlib.util
import json
import os
import sys

_DEFAULT_SET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                os.pardir, "shared", "realaudio-dev")


def build(*, engine: str | None = None, build_args: list[str],
          set_dir: str = _DEFAULT_SET_DIR, loop: str | None = None) -> None:
  """Runs ``<set_dir>/build.py`` with ``build_args``, its engine loop replaced by ``engine``
  (a file name in TORCS's sound folder) or by ``loop`` (a path under ``--src``); one of the two.

  Raises:
    SystemExit: ``set_dir`` has no ``build.py``, neither or both of ``engine`` and ``loop``
      are given, or the file is not under the ``--src`` of ``build_args``.
  """
  set_dir = os.path.abspath(set_dir)
  if not os.path.isfile(os.path.join(set_dir, "build.py")):
    raise SystemExit(f"--set_dir={set_dir}: no build.py there (the realaudio-dev scripts)")
  if (engine is None) == (loop is None):
    raise SystemExit("give one of --engine (a TORCS engine) and --loop (a path under --src)")
  if engine is not None and (os.sep in engine or not engine.endswith(".wav")):
    raise SystemExit(f"--engine={engine}: give a .wav file name of TORCS's sound folder")
  if loop is not None and (os.path.isabs(loop) or os.pardir in loop.split(os.sep)):
    raise SystemExit(f"--loop={loop}: give a path relative to --src, inside it")
  spec = importlib.util.spec_from_file_location("realaudio_build", os.path.join(set_dir, "build.py"))
  build_module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(build_module)
  relative = build_module.TORCS + engine if engine is not None else loop
  flag = f"--engine={engine}" if engine is not None else f"--loop={loop}"
  src = _flag_value(build_args, "--src")
  if src is not None:
    path = os.path.join(src, relative)
    if not os.path.isfile(path):
      raise SystemExit(f"{flag}: no such file {path} (run build.sh once to "
                       "unpack the packages; see ls of that folder)")
  build_module.P["engine"] = relative
  argv = sys.argv
  sys.argv = ["build.py", *build_args]
  try:
    build_module.main()
  finally:
    sys.argv = argv
  out = _flag_value(build_args, "--out")
  info_path = os.path.join(out, "build_info.json") if out is not None else None
  if info_path is not None and os.path.isfile(info_path):  # build.py does not record its loop
    with open(info_path, encoding="utf-8") as f:
      info = json.load(f)
    info["engine_loop"] = build_module.P["engine"]
    with open(info_path, "w", encoding="utf-8") as f:
      json.dump(info, f, indent=1)


def _flag_value(args: list[str], flag: str):
  for i, a in enumerate(args):
    if a == flag and i + 1 < len(args):
      return args[i + 1]
    if a.startswith(flag + "="):
      return a.split("=", 1)[1]
  return None


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--engine", default=None,
                      help="a .wav of TORCS's sound folder, e.g. f360.wav or 944.wav")
  parser.add_argument("--loop", default=None,
                      help="instead of --engine: a sound file's path under --src, e.g. "
                           "btanks-data/usr/share/games/btanks/data/sounds/helicopter.ogg")
  parser.add_argument("--set_dir", default=_DEFAULT_SET_DIR,
                      help="the realaudio-dev scripts (build.py)")
  parser.add_argument("build_args", nargs=argparse.REMAINDER,
                      help="after --: the arguments of build.py (--src, --out, --seed, ...)")
  args = parser.parse_args(argv)
  build_args = args.build_args[1:] if args.build_args[:1] == ["--"] else args.build_args
  build(engine=args.engine, loop=args.loop, build_args=build_args, set_dir=args.set_dir)


if __name__ == "__main__":
  main()
