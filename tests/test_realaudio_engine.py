"""``benchmarks.realaudio_engine``: the set's build.py, run with another engine loop."""

import json

import pytest

from benchmarks import realaudio_engine

_FAKE_BUILD = '''
import json, os, sys
TORCS = "torcs/sound/"
P = {"engine": TORCS + "renault-v10.wav", "whine": TORCS + "axle.wav"}
def main():
  out = sys.argv[sys.argv.index("--out") + 1]
  os.makedirs(out)
  with open(os.path.join(out, "seen.json"), "w") as f:
    json.dump({"P": P, "argv": sys.argv}, f)
  with open(os.path.join(out, "build_info.json"), "w") as f:
    json.dump({"seed": 9011}, f)
'''


@pytest.fixture
def set_dir(tmp_path):
  (tmp_path / "set").mkdir()
  (tmp_path / "set" / "build.py").write_text(_FAKE_BUILD)
  src = tmp_path / "src" / "torcs" / "sound"
  src.mkdir(parents=True)
  (src / "f360.wav").write_bytes(b"")
  other = tmp_path / "src" / "btanks" / "sounds"
  other.mkdir(parents=True)
  (other / "helicopter.ogg").write_bytes(b"")
  return tmp_path


def test_runs_build_py_with_only_the_engine_replaced_and_its_arguments_passed_on(set_dir):
  out = set_dir / "out"
  realaudio_engine.main(["--engine=f360.wav", f"--set_dir={set_dir / 'set'}", "--",
                         "--src", str(set_dir / "src"), "--out", str(out), "--seed", "9011"])
  record = json.loads((out / "seen.json").read_text())
  assert record["P"] == {"engine": "torcs/sound/f360.wav", "whine": "torcs/sound/axle.wav"}
  assert record["argv"] == ["build.py", "--src", str(set_dir / "src"), "--out", str(out),
                            "--seed", "9011"]
  assert json.loads((out / "build_info.json").read_text()) == {
      "seed": 9011, "engine_loop": "torcs/sound/f360.wav"}


def test_a_missing_engine_file_or_scripts_folder_is_named(set_dir):
  with pytest.raises(SystemExit, match=r"--engine=v12\.wav: no such file .*torcs/sound/v12\.wav"):
    realaudio_engine.build(engine="v12.wav", set_dir=str(set_dir / "set"),
                           build_args=["--src", str(set_dir / "src"), "--out", "x"])
  with pytest.raises(SystemExit, match="--engine=sub/f360.wav: give a .wav file name"):
    realaudio_engine.build(engine="sub/f360.wav", set_dir=str(set_dir / "set"), build_args=[])
  with pytest.raises(SystemExit, match=r"--set_dir=.*: no build\.py there"):
    realaudio_engine.build(engine="f360.wav", set_dir=str(set_dir), build_args=[])


def test_loop_takes_any_file_under_src_as_the_machine(set_dir):
  out = set_dir / "out"
  realaudio_engine.main(["--loop=btanks/sounds/helicopter.ogg", f"--set_dir={set_dir / 'set'}",
                         "--", "--src", str(set_dir / "src"), "--out", str(out)])
  record = json.loads((out / "seen.json").read_text())
  assert record["P"]["engine"] == "btanks/sounds/helicopter.ogg"
  assert record["P"]["whine"] == "torcs/sound/axle.wav"  # the rare mode built alike
  assert json.loads((out / "build_info.json").read_text())["engine_loop"] == (
      "btanks/sounds/helicopter.ogg")


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "give one of --engine"),
    (dict(engine="f360.wav", loop="btanks/sounds/helicopter.ogg"), "give one of --engine"),
    (dict(loop="/abs/helicopter.ogg"), "--loop=/abs/helicopter.ogg: give a path relative"),
    (dict(loop="../helicopter.ogg"), r"--loop=\.\./helicopter\.ogg: give a path relative"),
    (dict(loop="btanks/sounds/tank.ogg"), r"--loop=btanks/sounds/tank\.ogg: no such file"),
])
def test_bad_loop_arguments_are_named(set_dir, kwargs, message):
  with pytest.raises(SystemExit, match=message):
    realaudio_engine.build(set_dir=str(set_dir / "set"),
                           build_args=["--src", str(set_dir / "src"), "--out", "x"], **kwargs)
