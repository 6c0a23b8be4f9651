"""benchmarks.pack_realaudio: a built real-recording set to FLAC and back, sample for sample."""

import os
import subprocess

import numpy as np
import pytest
import soundfile

from benchmarks import pack_realaudio


def _built_set(root, *, rng):
  """A tiny set in the layout of ../shared/realaudio-dev: 16-bit WAVs and the two tables."""
  for rel, n in (("dev_data/engine_b/train", 2), ("dev_data/engine_b/test_anr-15dB", 2),
                 ("dev_data/engine_b/test_anr-20dB", 1), ("something_else", 1)):
    os.makedirs(root / rel)
    for i in range(n):
      wave = rng.integers(-30000, 30000, 1600).astype(np.int16)
      soundfile.write(root / rel / f"clip_{i}.wav", wave, 16000, subtype="PCM_16")
  (root / "metadata.csv").write_text("file,rare\ntrain/clip_0.wav,1\n")
  (root / "something_else.csv").write_text("file\n")
  return root


def test_pack_and_unpack_keep_every_sample(tmp_path):
  built = _built_set(tmp_path / "set", rng=np.random.default_rng(0))
  got = pack_realaudio.pack(str(built), str(tmp_path / "pack"))
  assert got["files"] == 5 and got["bytes"] > 0  # train, one test folder, something_else
  assert not (tmp_path / "pack" / "dev_data" / "engine_b" / "test_anr-20dB").exists()
  assert pack_realaudio.unpack(str(tmp_path / "pack"), str(tmp_path / "wav"))["files"] == 5
  for rel in ("dev_data/engine_b/train/clip_1.wav", "dev_data/engine_b/test_anr-15dB/clip_0.wav",
              "something_else/clip_0.wav"):
    assert pack_realaudio.same_samples(str(built / rel), str(tmp_path / "wav" / rel))
    assert soundfile.info(str(tmp_path / "wav" / rel)).subtype == "PCM_16"
  assert (tmp_path / "wav" / "metadata.csv").read_text() == (built / "metadata.csv").read_text()


def test_bad_input_ends_in_one_error_line(tmp_path, capsys):
  built = _built_set(tmp_path / "set", rng=np.random.default_rng(1))
  assert pack_realaudio.main(["pack", f"--root={built}", f"--out={tmp_path / 'p'}",
                              "--test_folders=test_anr-99dB"]) == 1
  assert "test_anr-99dB: no such folder" in capsys.readouterr().err
  (built / "dev_data/engine_b/train/broken.wav").write_bytes(b"not a wave file")
  assert pack_realaudio.main(["pack", f"--root={built}", f"--out={tmp_path / 'p'}"]) == 1
  err = capsys.readouterr().err
  assert err.startswith("Error: ") and "broken.wav: unreadable" in err and len(err.splitlines()) == 1
  assert pack_realaudio.main(["unpack", f"--root={tmp_path / 'empty'}", "--out=x"]) == 1
  assert "no .flac files" in capsys.readouterr().err


def test_refuses_to_pack_audio_where_git_would_commit_it(tmp_path):
  built = _built_set(tmp_path / "set", rng=np.random.default_rng(2))
  repo = tmp_path / "repo"
  subprocess.run(["git", "init", "-q", str(repo)], check=True)
  with pytest.raises(pack_realaudio.PackError, match="exclude"):
    pack_realaudio.pack(str(built), str(repo / ".ra"))
  assert not (repo / ".ra").exists()
  (repo / ".git" / "info").mkdir(exist_ok=True)
  (repo / ".git" / "info" / "exclude").write_text("/.ra/\n")
  assert pack_realaudio.pack(str(built), str(repo / ".ra"))["files"] == 5


def test_the_documented_pack_folder_is_ignored_in_this_repository():
  """TPU_NOTES.md packs into .ra at the repository root: .gitignore must keep it out."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if subprocess.run(["git", "-C", root, "rev-parse"], capture_output=True).returncode != 0:
    pytest.skip("not a git checkout")
  assert not pack_realaudio._tracked_by_git(os.path.join(root, ".ra"))
  assert not pack_realaudio._tracked_by_git(os.path.join(root, ".whl"))
