"""Tests for bu_jax.detector and its entry point experiments/score.py.

The model is built so that its scores do not depend on training: every weight
is zero and the decoder's output bias is the mean feature vector mu of a quiet
stationary tone, so A(x_t) = ||x_t - mu||^2 (eq. 5) is small on the tone and
large on a loud broadband burst. It is saved as a real checkpoint (train state
of ``bu_jax.train``, metadata as ``bu_jax.toycar`` writes it) in a toycar-like
workdir ``run/bu/checkpoints``.
"""

import copy
import dataclasses
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys

import jax
import librosa
import numpy as np
import pytest
import soundfile

from bu_jax import artifact, audio, checkpoint, evaluate, features, frame_scores, parallel
from bu_jax import progress, score_norm, train
from bu_jax import detector as detector_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SR = 16000
HOP_S = 256 / SR
BURST = (1.0, 1.3)  # seconds


def _tone(seconds, seed=0):
  t = np.arange(int(seconds * SR)) / SR
  noise = np.random.default_rng(seed).standard_normal(t.size)
  return (0.05 * np.sin(2 * np.pi * 1000 * t) + 0.002 * noise).astype(np.float32)


def _with_burst(wave, start_s, end_s, seed=1):
  wave = wave.copy()
  a, b = int(start_s * SR), int(end_s * SR)
  wave[a:b] += 0.5 * np.random.default_rng(seed).standard_normal(b - a).astype(np.float32)
  return np.clip(wave, -1, 1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A toycar-like workdir with one 'bu' model, and the files to score."""
  root = tmp_path_factory.mktemp("score")
  normal, burst = _tone(3.0), _with_burst(_tone(3.0), *BURST)
  files = {"normal": str(root / "rec" / "normal.wav"), "burst": str(root / "rec" / "burst.wav")}
  os.makedirs(root / "rec")
  audio.write_wav(files["normal"], normal)
  audio.write_wav(files["burst"], burst)
  # The burst recording at 22.05 kHz (load_wav resamples it to 16 kHz).
  files["burst_22k"] = str(root / "burst_22k.wav")
  audio.write_wav(files["burst_22k"], np.clip(librosa.resample(
      burst, orig_sr=SR, target_sr=22050), -1, 1), sr=22050)
  bad = root / "bad.wav"
  bad.write_text("not audio")

  config = train.TrainConfig(loss="bu", model="fcn40-small", epochs=1, steps_per_epoch=2,
                             decay_start_epoch=0)
  preset = config.model_preset
  mesh = parallel.data_mesh()
  state = train.create_state(config, mesh=mesh)
  params = jax.tree.map(np.zeros_like, jax.device_get(state.params))
  mu = np.asarray(features.features(audio.load_wav(files["normal"]), config=preset.features))
  params["dec_3"]["bias"] = mu.mean(axis=0)
  state = state.replace(params=parallel.replicate(params, mesh))
  normal_max = float(frame_scores.FrameScorer(preset.build(), preset.features)(
      params, audio.load_wav(files["normal"])).max())
  heldout = (normal_max * (0.5 + 0.1 * np.random.default_rng(0).gamma(4.0, size=20))).tolist()
  metadata = {
      "loss": "bu", "model": preset.name, "features": dataclasses.asdict(preset.features),
      "train_config": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
      "threshold": 2.0 * normal_max, "reduce": "max", "threshold_quantile": 0.9,
      "heldout_clip_scores": heldout, "heldout_paths": [f"h{i}.wav" for i in range(20)]}
  workdir = root / "run"
  with checkpoint.Checkpointer(workdir / "bu", metadata=metadata) as ckpt:
    ckpt.maybe_save(2, state, force=True)
  return dict(workdir=str(workdir), model_dir=str(workdir / "bu"), files=files, bad=str(bad),
              root=root, params=params, metadata=metadata)


# ------------------------------------------------------------------ events


def _events_reference(scores, threshold, hop_s, gap, duration):
  """A plain loop over frames."""
  runs, start = [], None
  for t, s in enumerate(list(scores) + [-np.inf]):
    if s >= threshold and start is None:
      start = t
    elif not s >= threshold and start is not None:
      runs.append([max(0.0, start * hop_s - hop_s / 2), min(duration, (t - 1) * hop_s + hop_s / 2)])
      start = None
  merged = []
  for run in runs:
    if merged and run[0] - merged[-1][1] < gap:
      merged[-1][1] = run[1]
    else:
      merged.append(run)
  return [tuple(r) for r in merged]


def test_expand_paths_follows_linked_folders_once(tmp_path):
  top = tmp_path / "top"
  (top / "sub").mkdir(parents=True)
  (tmp_path / "elsewhere").mkdir()
  for path in (top / "b.WAV", top / "sub" / "c.wav", tmp_path / "elsewhere" / "a.wav",
               top / "notes.txt", top / "d.flac", top / "sub" / "e.Ogg", top / "f.mp3"):
    path.write_bytes(b"")  # listed, not read
  os.symlink(tmp_path / "elsewhere", top / "linked")
  os.symlink(top, top / "sub" / "loop")  # a link back up the tree: no endless descent
  files, failures = detector_lib.expand_paths([str(top)])
  assert failures == []
  assert [os.path.relpath(f, top) for f in files] == [
      "b.WAV", "d.flac", "f.mp3", "linked/a.wav", "sub/c.wav", "sub/e.Ogg"]
  (tmp_path / "texts").mkdir()
  (tmp_path / "texts" / "notes.txt").write_bytes(b"")
  assert detector_lib.expand_paths([str(tmp_path / "texts")]) == ([], [(
      str(tmp_path / "texts"),
      f"{tmp_path / 'texts'}: directory holds no .wav/.flac/.ogg/.oga/.opus/.mp3/.aif/.aiff/.w64/.rf64 files")])


def test_events_from_scores():
  scores = np.zeros(24)
  scores[[0, 8, 9, 11, 23]] = [5, 3, 3, 3, 4]
  hop = 0.016
  events = detector_lib.events_from_scores(scores, 3.0, hop_s=hop, merge_gap_s=0.1, duration_s=0.37)
  # Frame 0 clipped at 0 s; frames 8-11 merged across a one-frame gap; frame 23 clipped at 0.37.
  np.testing.assert_allclose(events, [(0, 0.008), (8 * hop - hop / 2, 11 * hop + hop / 2),
                                      (23 * hop - hop / 2, 0.37)])
  assert detector_lib.events_from_scores(scores, 3.0, hop_s=hop, merge_gap_s=1.0,
                                   duration_s=0.37) == [(0.0, 0.37)]
  assert detector_lib.events_from_scores(scores, 10.0, hop_s=hop) == []
  assert detector_lib.events_from_scores([np.nan, 1.0], 0.5, hop_s=hop) == [(hop / 2, 1.5 * hop)]
  rng = np.random.default_rng(0)
  for _ in range(20):
    s = rng.random(200) ** 4
    gap = rng.choice([0.0, 0.02, 0.05, 0.2])
    got = detector_lib.events_from_scores(s, 0.5, hop_s=hop, merge_gap_s=gap, duration_s=3.19)
    np.testing.assert_allclose(np.reshape(got, (-1, 2)),
                               np.reshape(_events_reference(s, 0.5, hop, gap, 3.19), (-1, 2)))
  text = detector_lib.format_events(events)
  np.testing.assert_allclose(detector_lib.parse_events(text), events, atol=5e-4)


def test_runs_exactly_merge_gap_apart_stay_separate():
  # "merged when closer than merge_gap_s": a gap of exactly merge_gap_s keeps two events
  # (hop 0.25 s: the gaps, 0.25 s and 0.5 s, are exact in binary, the boundary itself).
  flags = [True, False, True, False, False, True]
  apart = [(0.0, 0.125), (0.375, 0.625), (1.125, 1.375)]
  assert detector_lib.events_from_flags(flags, hop_s=0.25, merge_gap_s=0.25) == apart
  assert detector_lib.events_from_flags(flags, hop_s=0.25, merge_gap_s=0.5) == [
      (0.0, 0.625), (1.125, 1.375)]
  assert detector_lib.events_from_flags(flags, hop_s=0.25, merge_gap_s=0.5 + 1e-9) == [
      (0.0, 1.375)]


def test_an_event_shorter_than_the_digits_shown_gets_more():
  one_sample = detector_lib.Event(0.0, 1 / SR)  # all of a 1-sample recording
  assert detector_lib.format_events([one_sample]) == "0.0000-0.0001"  # not 0.000-0.000
  assert detector_lib.format_events([one_sample], decimals=2) == "0.0000-0.0001"
  assert detector_lib.format_events([(1.0, 1.0004), (2.0, 2.5)]) == "1.0000-1.0004;2.000-2.500"
  assert detector_lib.format_events([(0.5, 0.5)]) == "0.500-0.500"  # none shorter to show


def test_a_one_sample_recording_shows_where_its_event_ends(trained, tmp_path):
  path = str(tmp_path / "one.wav")
  audio.write_wav(path, np.array([0.5], np.float32))
  report = detector_lib.run(detector_lib.ScoreSettings(
      workdir=trained["model_dir"], out=str(tmp_path / "s.csv"), threshold=1e-9, paths=[path]))
  assert report.results[0][1].events == ((0.0, 1 / SR),)
  assert detector_lib.read_csv(report.csv_path)[0]["events"] == "0.0000-0.0001"
  row, = detector_lib.read_csv(report.events_path)
  assert (row["start_s"], row["end_s"], row["duration_s"]) == ("0.0000", "0.0001", "0.0001")
  assert "0.0000-0.0001" in report.summary()


def test_events_with_a_window_flag_every_frame_of_each_window_that_reaches_phi():
  scores = np.array([0, 9, 0, 0, 0, 0, 4, 4, 4, 4, 0, 0], float)
  flags = detector_lib.window_flags(scores, 3.0, window=4)
  # Windows 5-8 and 7-10 (mean 3) and 6-9 (mean 4) reach phi; the spike's (2.25) do not.
  np.testing.assert_array_equal(np.flatnonzero(flags), [5, 6, 7, 8, 9, 10])
  np.testing.assert_array_equal(detector_lib.window_flags(scores, 3.0, window=1),
                                scores >= 3.0)
  hop = 0.1
  assert detector_lib.events_from_scores(scores, 3.0, hop_s=hop, window=4) == [
      pytest.approx((4.5 * hop, 10.5 * hop))]
  # Any frame flagged exactly when its clip's windowed score reaches phi.
  rng = np.random.default_rng(1)
  for _ in range(20):
    s = rng.random(int(rng.integers(1, 60))) ** 3
    w = int(rng.integers(1, 12))
    phi = float(rng.uniform(0.05, 0.6))
    assert detector_lib.window_flags(s, phi, window=w).any() == (
        evaluate.clip_score(s, window=w) >= phi)
  with np.errstate(invalid="ignore"):
    assert not detector_lib.window_flags(np.array([np.nan, 5.0, 5.0]), 1.0, window=3).any()


# ------------------------------------------------------------------ library


def test_load_detector_restores_params_and_scores_the_burst(trained):
  detector = detector_lib.load_detector(trained["workdir"])  # the only loss present: bu
  assert detector.model_dir == trained["model_dir"] and detector.step == 2
  for got, want in zip(jax.tree.leaves(detector.params), jax.tree.leaves(trained["params"])):
    np.testing.assert_array_equal(np.asarray(got), want)
  phi = trained["metadata"]["threshold"]
  normal = detector.score(audio.load_wav(trained["files"]["normal"]))
  burst = detector.score(audio.load_wav(trained["files"]["burst"]))
  assert not normal.decision and normal.events == () and normal.max_score < phi
  assert burst.decision and burst.clip_score == burst.max_score >= phi
  assert len(burst.events) == 1
  start, end = burst.events[0]
  assert 0.8 <= start <= BURST[0] and BURST[1] <= end <= 1.5
  assert burst.times_s[1] == pytest.approx(HOP_S) and burst.duration_s == pytest.approx(3.0)


def test_the_padded_end_frames_neither_flag_nor_set_the_max_score(trained):
  # The end frames see zero padding and score high on every recording: a phi above every
  # interior frame of the normal recording finds no event there, and max_score is theirs.
  detector = detector_lib.load_detector(trained["model_dir"])
  normal = audio.load_wav(trained["files"]["normal"])
  scores = detector.frame_scores(normal)
  inner = detector.feature_config.interior(normal.size)
  phi = 2.0 * float(scores[inner].max())
  assert scores.max() > phi  # the padded ends do reach it
  result = detector.score(normal, threshold=phi)
  assert not result.decision and result.events == ()
  assert result.max_score == result.clip_score == float(scores[inner].max())


def test_a_windowed_model_reports_its_curve_and_both_scores(trained, tmp_path):
  # With a clip-score window of W frames the clip score (the largest mean of W interior
  # frames) is below max_score; each mean is placed at the centre of its frames; the CSV
  # keeps the two scores in their columns.
  model_dir = tmp_path / "bu"
  shutil.copytree(trained["model_dir"], model_dir)
  meta = json.load(open(_metadata_file(model_dir)))
  meta.update(version=3, score_window=8)
  json.dump(meta, open(_metadata_file(model_dir), "w"))
  detector = detector_lib.load_detector(model_dir)
  assert detector.window == 8
  result = detector.score(audio.load_wav(trained["files"]["burst"]))
  inner = result.scored_frames
  means = np.convolve(result.frame_scores[inner].astype(np.float64), np.ones(8) / 8, "valid")
  assert result.clip_score == pytest.approx(means.max(), rel=1e-5)
  assert result.clip_score < result.max_score == float(result.frame_scores[inner].max())
  np.testing.assert_allclose(result.window_times_s,
                             np.convolve(result.times_s[inner], np.ones(8) / 8, "valid"))
  assert len(result.events) == 1
  assert detector_lib.event_peaks(result) == [pytest.approx(means.max(), rel=1e-5)]
  row, = detector_lib.read_csv(detector_lib.write_csv(tmp_path / "s.csv", [("b.wav", result)]))
  assert float(row["max_score"]) == result.max_score
  assert float(row["clip_score"]) == result.clip_score


def test_chunked_scoring_equals_whole_file(trained, tmp_path):
  # 10 s with a burst across the chunk boundary at frame 256 (4.096 s).
  path = str(tmp_path / "long.wav")
  audio.write_wav(path, _with_burst(_tone(10.0, seed=3), 3.9, 4.3))
  wave = audio.load_wav(path)
  whole = detector_lib.load_detector(trained["model_dir"]).score(wave, name=path)
  chunked = detector_lib.load_detector(trained["model_dir"], chunk_frames=256).score(wave, name=path)
  assert whole.frame_scores.size == 626
  np.testing.assert_allclose(chunked.frame_scores, whole.frame_scores, rtol=2e-5, atol=1e-3)
  assert chunked.events == whole.events and len(whole.events) == 1
  assert whole.events[0].start_s <= 3.9 and whole.events[0].end_s >= 4.3


@pytest.mark.parametrize("suffix", [".wav", ".ogg", ".mp3"])
def test_long_recordings_are_read_range_by_range_with_the_same_results(trained, tmp_path,
                                                                         monkeypatch, suffix):
  """A recording over audio.STREAM_SECONDS is never loaded whole (a day at 16 kHz is
  5.5 GB of samples): scored whole or in pieces, it gives what the loaded waveform
  gives; a compressed one is decoded forward, once (after the count of its samples)."""
  path = str(tmp_path / f"long{suffix}")
  soundfile.write(path, _with_burst(_tone(10.0, seed=3), 6.2, 6.4), SR,
                  format={".wav": "WAV", ".ogg": "OGG", ".mp3": "MP3"}[suffix])
  detector = detector_lib.load_detector(trained["model_dir"], chunk_frames=256)
  phi = trained["metadata"]["threshold"]
  want = {piece_s: detector_lib.score_paths(detector, [path], piece_s=piece_s)[0]
          for piece_s in (0.0, 3.0, 6.0)}
  monkeypatch.setattr(audio, "STREAM_SECONDS", 4.0)
  real_load = audio.load_wav
  def load_short_only(p, **kwargs):
    assert p != path, "the long recording was loaded whole"
    return real_load(p, **kwargs)
  monkeypatch.setattr(audio, "load_wav", load_short_only)
  reads, real_native = [], audio.Recording._native
  def native(self, start, stop):
    reads.append(stop - start)
    return real_native(self, start, stop)
  monkeypatch.setattr(audio.Recording, "_native", native)
  readers = []
  class Reader(audio._ForwardReader):  # pylint: disable=protected-access
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      readers.append(self)
  monkeypatch.setattr(audio, "_ForwardReader", Reader)
  for piece_s, results in want.items():
    reads.clear()
    got, failures = detector_lib.score_paths(detector, [path], piece_s=piece_s)
    # ranges of one chunk (256 frames and their context, 4.3 s) at most, in pieces of 6 s too
    assert reads and max(reads) <= 4.5 * SR and sum(reads) < 1.5 * 10 * SR
    # A compressed file: one decoder for all its pieces, never started again.
    assert [r.rewinds for r in readers] == ([] if suffix == ".wav" else [0])
    readers.clear()
    assert failures == [] and len(got) == len(results) == {0.0: 1, 3.0: 3, 6.0: 2}[piece_s]
    for (_, g), (_, w) in zip(got, results):
      np.testing.assert_array_equal(g.frame_scores, w.frame_scores)
      assert (g.events, g.start_s, g.duration_s, g.clip_score) == (
          w.events, w.start_s, w.duration_s, w.clip_score)
  (_, whole), = want[0.0]
  assert whole.decision and len(whole.events) == 1 and whole.max_score >= phi
  # The progress line counts audio, read by read, also for one recording.
  bars = _recorded_bars(monkeypatch)
  detector_lib.run(detector_lib.ScoreSettings(
      workdir=trained["model_dir"], out=str(tmp_path / "s.csv"), chunk_frames=256,
      paths=[path, trained["files"]["normal"]]))
  counts = [l.split(" [")[0] for l in bars[0].stream.getvalue().splitlines()]
  assert counts[0].startswith("audio 0:0") and counts[-1] == "audio 0:13/0:13"
  assert len(counts) >= 4 and "audio 0:10/0:13" in counts  # 3 chunks, then the short file


def test_run_writes_csv_plots_and_skips_bad_files(trained, tmp_path):
  missing = str(tmp_path / "missing.wav")
  report = detector_lib.run(detector_lib.ScoreSettings(
      workdir=trained["workdir"], loss="bu", plots=True, out=str(tmp_path / "out" / "s.csv"),
      paths=[trained["files"]["normal"], trained["bad"], trained["files"]["burst"], missing,
             trained["files"]["burst_22k"]]))
  assert report.exit_status == 1
  assert [p for p, _ in report.failures] == [missing, trained["bad"]]
  assert all(p in m for p, m in report.failures)
  rows = detector_lib.read_csv(tmp_path / "out" / "s.csv")
  # The files that failed have rows too, after the scored ones: no scores, the reason as note.
  failed = rows[3:]
  assert [(r["path"], r["decision"], r["max_score"], r["clip_score"]) for r in failed] == [
      (missing, "failed", "", ""), (trained["bad"], "failed", "", "")]
  assert all(r["path"] in r["note"] for r in failed)
  assert float(failed[0]["threshold"]) == pytest.approx(trained["metadata"]["threshold"])
  rows = rows[:3]
  assert [r["path"] for r in rows] == [trained["files"][k] for k in ("normal", "burst", "burst_22k")]
  assert [r["decision"] for r in rows] == ["normal", "anomalous", "anomalous"]
  assert [r["note"] for r in rows] == ["", "", audio.rate_note(22050, SR)]  # resampled
  assert rows[0]["events"] == ""
  for row in rows[1:]:
    (start, end), = detector_lib.parse_events(row["events"])
    assert 0.8 <= start <= BURST[0] and BURST[1] <= end <= 1.5
  assert float(rows[2]["duration_s"]) == pytest.approx(3.0)
  assert float(rows[1]["max_score"]) == float(rows[1]["clip_score"]) >= float(rows[1]["threshold"])
  assert float(rows[0]["threshold"]) == pytest.approx(trained["metadata"]["threshold"])
  assert sorted(os.listdir(tmp_path / "out" / "plots")) == ["burst_22k.png", "rec_burst.png",
                                                             "rec_normal.png"]
  table = report.summary()
  assert "FAILED" in table and "anomalous" in table
  assert detector_lib.format_events(report.results[1][1].events, decimals=2) in table
  assert "from an earlier run" not in table
  # Again into the same folder, one recording: the other two PNGs are named as an earlier run's.
  again = detector_lib.run(detector_lib.ScoreSettings(
      workdir=trained["workdir"], loss="bu", plots=True, out=str(tmp_path / "out" / "s.csv"),
      paths=[trained["files"]["burst_22k"]]))
  assert again.earlier_plots == [str(tmp_path / "out" / "plots" / n)
                                 for n in ("rec_burst.png", "rec_normal.png")]
  assert "(and 2 PNG(s) there from an earlier run" in again.summary()

  # A folder, all readable: exit status 0; --threshold overrides the stored phi.
  report = detector_lib.run(detector_lib.ScoreSettings(
      workdir=trained["model_dir"], paths=[os.path.dirname(trained["files"]["normal"])],
      threshold=1e9, out=str(tmp_path / "t.csv")))
  assert report.exit_status == 0 and report.threshold_source == "given"
  rows = detector_lib.read_csv(tmp_path / "t.csv")
  assert sorted(os.path.basename(r["path"]) for r in rows) == ["burst.wav", "normal.wav"]
  assert {r["decision"] for r in rows} == {"normal"} and {r["events"] for r in rows} == {""}
  assert {float(r["threshold"]) for r in rows} == {1e9}


def test_run_notes_long_and_short_recordings_and_repeats(trained, tmp_path, monkeypatch, caplog):
  short = str(tmp_path / "short.wav")
  audio.write_wav(short, _tone(0.05))
  link = str(tmp_path / "link.wav")
  os.symlink(trained["files"]["normal"], link)
  # The held-out clips phi was set on, read from their headers: here 1 s long.
  monkeypatch.setattr(detector_lib, "calibration_seconds", lambda detector: 1.0)
  report = detector_lib.run(detector_lib.ScoreSettings(
      workdir=trained["model_dir"], out=str(tmp_path / "s.csv"),
      paths=[trained["files"]["normal"], short, link, trained["files"]["normal"]]))
  rows = detector_lib.read_csv(tmp_path / "s.csv")
  assert [r["path"] for r in rows] == [trained["files"]["normal"], short]  # each recording once
  normal = trained["files"]["normal"]
  assert (f"2 path(s) named a recording already listed (the same file, or a link to it): each "
          f"recording is scored once; {link} (= {normal}), {normal} (= {normal})") in caplog.text
  assert rows[0]["note"] == "3x as long as the 1-s clips phi was set on"
  assert rows[1]["note"].startswith("0.05 s long, shorter than the 0.") and "zero-padded" in (
      rows[1]["note"])
  assert ("Note: 1 recording(s) are over 2x as long as the 1-s clips phi was set on"
          in report.summary())
  monkeypatch.setattr(detector_lib, "calibration_seconds", lambda detector: None)  # unknown
  report = detector_lib.run(detector_lib.ScoreSettings(
      workdir=trained["model_dir"], out=str(tmp_path / "s.csv"), paths=[trained["files"]["normal"]]))
  assert "Note:" not in report.summary() and report.results[0][1].note == ""
  # The lengths come from the held-out files that can be read; none readable: unknown.
  detector = detector_lib.load_detector(trained["model_dir"])
  assert detector_lib.calibration_seconds(detector) is None  # h0.wav ... do not exist here


def test_a_recording_that_never_changes_gets_a_note(trained, tmp_path):
  """A dead microphone (all 0) or a constant level scores far above phi on every frame:
  its row says why; recorded sound, however quiet, does not get the note."""
  sr = audio.SAMPLE_RATE
  paths = {}
  for name, wave in [("dead", np.zeros(3 * sr)), ("dc", np.full(3 * sr, 0.1)),
                     ("hiss", 1e-4 * np.random.default_rng(0).standard_normal(3 * sr))]:
    paths[name] = str(tmp_path / f"{name}.wav")
    audio.write_wav(paths[name], wave.astype(np.float32), subtype="FLOAT")
  detector_lib.run(detector_lib.ScoreSettings(
      workdir=trained["model_dir"], out=str(tmp_path / "s.csv"), piece_s=1.0,
      paths=[paths["dead"], paths["dc"], paths["hiss"]]))
  notes = {}
  for row in detector_lib.read_csv(tmp_path / "s.csv"):
    notes.setdefault(os.path.basename(row["path"]), []).append(row["note"])
  assert [len(n) for n in notes.values()] == [3, 3, 3]  # every piece of each
  for name in ("dead.wav", "dc.wav"):
    assert all(n.startswith("every frame scores alike: its sound never changes") for n in
               notes[name]), notes[name]
  assert not any("scores alike" in n for n in notes["hiss.wav"])


def _notes_per_recording(trained, tmp_path, paths) -> dict[str, list[str]]:
  """Scores ``paths`` (name -> file) in 1-s pieces: {path: the note of each piece}."""
  detector_lib.run(detector_lib.ScoreSettings(
      workdir=trained["model_dir"], out=str(tmp_path / "s.csv"), piece_s=1.0,
      paths=list(paths.values())))
  notes = {}
  for row in detector_lib.read_csv(tmp_path / "s.csv"):
    notes.setdefault(row["path"], []).append(row["note"])
  return notes


def test_resampled_and_lossy_coded_recordings_get_a_note(trained, tmp_path, caplog):
  """A recording made at another rate, or coded by MP3 or Opus, may score above phi
  when normal: each of its rows says so (logged once); a 16-kHz WAV, FLAC or Vorbis
  file does not (an Opus file is known by its codec, not its suffix)."""
  rng = np.random.default_rng(0)
  wave = np.clip(_tone(2.0) + 0.05 * rng.standard_normal(2 * SR), -1, 1).astype(np.float32)
  made = {"wav": (SR, {}), "flac": (SR, {}), "48k.wav": (48000, {}), "48k_2.wav": (48000, {}),
          "8k.wav": (8000, {}),
          "mp3": (SR, {"compression_level": 0.0}), "opus.ogg": (SR, {"subtype": "OPUS"}),
          "ogg": (SR, {})}
  paths = {}
  for name, (rate, options) in made.items():
    paths[name] = str(tmp_path / f"rec.{name}")
    soundfile.write(paths[name], librosa.resample(wave, orig_sr=SR, target_sr=rate), rate,
                    format=_FORMATS.get(name.rsplit(".", 1)[-1]), **options)
  caplog.clear()
  notes = _notes_per_recording(trained, tmp_path, paths)
  note = lambda name: notes[paths[name]][0]
  assert all(len(set(n)) == 1 and len(n) == 2 for n in notes.values())  # on every piece
  assert not note("wav") and not note("flac") and not note("ogg")
  assert note("48k.wav") == (
      "resampled from 48 kHz: the resampler attenuates the top ~0.4 kHz below 8 kHz; a model "
      "trained on 16-kHz recordings may score that as anomalous: check with a normal "
      "recording made the same way")
  assert note("8k.wav").startswith("recorded at 8000 Hz, below the 16000 Hz")
  assert note("mp3") == (
      "lossy-coded (MP3: its encoder cuts the top of the band); a model trained on "
      "uncompressed recordings may score that as anomalous: check with a normal recording "
      "coded the same way")
  assert note("opus.ogg") == note("mp3").replace("MP3: its encoder cuts the top of the band",
                                                 "Opus")
  assert note("48k_2.wav") == note("48k.wav")
  for name in ("48k.wav", "8k.wav", "mp3", "opus.ogg"):  # logged once
    assert sum(r.getMessage().startswith(f"{paths[name]}: ") and "may score" in r.getMessage()
               for r in caplog.records) == 1, name
  # ... and once per run, not per recording: a folder of 48-kHz files gets one line
  assert not any(r.getMessage().startswith(f"{paths['48k_2.wav']}: ") for r in caplog.records)


_FORMATS = {"wav": "WAV", "flac": "FLAC", "mp3": "MP3", "opus": "OGG", "ogg": "OGG"}


@pytest.mark.parametrize("stream_seconds", [None, 1.0])
def test_stereo_channels_that_cancel_in_the_mono_mix_get_a_note(trained, tmp_path, monkeypatch,
                                                                caplog, stream_seconds):
  """A stereo file with one channel inverted averages to silence (or nearly): its rows
  say so, not "a dead microphone"; other stereo files do not get the note. A long one,
  read range by range, is judged from the ranges scored (nothing more is read)."""
  tone = _tone(3.0)
  paths = {}
  for name, channels in [("inverted", [tone, -tone]), ("nearly", [tone, -0.95 * tone]),
                         ("stereo", [tone, 0.5 * tone[::-1]]), ("same", [tone, tone])]:
    paths[name] = str(tmp_path / f"{name}.wav")
    soundfile.write(paths[name], np.stack(channels, axis=1), SR, subtype="FLOAT")
  if stream_seconds:
    monkeypatch.setattr(audio, "STREAM_SECONDS", stream_seconds)
    monkeypatch.setattr(audio, "_file_mix_powers", None)  # never called
  caplog.clear()
  notes = {os.path.basename(path)[:-4]: n
           for path, n in _notes_per_recording(trained, tmp_path, paths).items()}
  assert [len(n) for n in notes.values()] == [3, 3, 3, 3]  # every piece of each
  cancel = "its channels cancel when averaged to mono (the mix {}: one channel inverted?): score one channel"
  assert notes["inverted"] == [cancel.format("is silent")] * 3  # no "every frame scores alike"
  assert notes["nearly"] == [cancel.format("is 32 dB below them")] * 3  # -0.95: 1/1520
  assert not any(notes["stereo"]) and not any(notes["same"])
  for name in ("inverted", "nearly"):  # logged once
    assert sum(f"{name}.wav: its channels cancel" in r.getMessage() for r in caplog.records) == 1
  assert audio.cancel_note(0.0, 0.0) == ""  # silent channels: "every frame scores alike"
  assert audio.cancel_note(0.0099, 1.0) and not audio.cancel_note(0.01, 1.0)


def test_pieces():
  assert detector_lib.pieces(100, 0) == [(0, 100)]
  assert detector_lib.pieces(100, 100) == detector_lib.pieces(100, 200) == [(0, 100)]
  assert detector_lib.pieces(100, 30) == [(0, 30), (30, 60), (60, 100)]  # 10 left: joined
  assert detector_lib.pieces(100, 40) == [(0, 40), (40, 80), (80, 100)]  # 20 left: its own
  assert detector_lib.pieces(130, 100) == [(0, 130)]


def test_run_in_pieces(trained, tmp_path):
  report = detector_lib.run(detector_lib.ScoreSettings(
      workdir=trained["model_dir"], out=str(tmp_path / "s.csv"), piece_s=1.0, plots=True,
      paths=[trained["files"]["burst"]]))
  rows = detector_lib.read_csv(tmp_path / "s.csv")
  assert [(float(r["start_s"]), float(r["duration_s"])) for r in rows] == [
      (0.0, 1.0), (1.0, 1.0), (2.0, 1.0)]
  assert {r["path"] for r in rows} == {trained["files"]["burst"]}
  # The burst (1.0-1.3 s) is in the second piece, its event in the recording's time.
  assert [r["decision"] for r in rows] == ["normal", "anomalous", "normal"]
  (start, end), = detector_lib.parse_events(rows[1]["events"])
  assert 1.0 <= start < BURST[1] and BURST[0] < end <= 1.5
  np.testing.assert_allclose(report.results[1][1].times_s[0], 1.0)
  assert "1 recording(s) scored in 3 pieces, 1 pieces anomalous, 0 failed." in report.summary()
  # Over max_rows rows, the table lists the anomalous ones and counts the rest.
  short = detector_lib.format_table(report.results, max_rows=2).splitlines()
  assert len(short) == 2 + 1 + 1 and "@1 s" in short[2] and short[3] == (
      "(2 normal row(s) not shown: over 2 rows; all are in the CSV)")
  assert f"{trained['files']['burst']} @1 s" in report.summary()
  assert os.listdir(tmp_path / "plots") == ["burst.png"]  # one plot, the three pieces in it
  # Whole, the same recording is one row starting at 0.
  detector_lib.run(detector_lib.ScoreSettings(
      workdir=trained["model_dir"], out=str(tmp_path / "w.csv"), paths=[trained["files"]["burst"]]))
  (row,) = detector_lib.read_csv(tmp_path / "w.csv")
  assert (row["start_s"], row["duration_s"], row["decision"]) == ("0.000", "3.000", "anomalous")
  # The library call gives the same pieces.
  results, failures = detector_lib.score_paths(
      detector_lib.load_detector(trained["model_dir"]), [trained["files"]["burst"]], piece_s=1.0)
  assert failures == [] and [r.start_s for _, r in results] == [0.0, 1.0, 2.0]
  assert [r.label for _, r in results] == ["normal", "anomalous", "normal"]


def _recorded_bars(monkeypatch) -> list:
  """The progress bars ``detector.run`` makes, each drawing every update to a string."""
  bars = []

  class Bar(progress.ProgressBar):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, stream=io.StringIO(), file_interval_s=0.0, **kwargs)
      bars.append(self)

  monkeypatch.setattr(detector_lib.progress_lib, "ProgressBar", Bar)
  return bars


def test_progress_line_counts_the_recordings(trained, tmp_path, monkeypatch):
  bars = _recorded_bars(monkeypatch)
  detector_lib.run(detector_lib.ScoreSettings(
      workdir=trained["model_dir"], out=str(tmp_path / "s.csv"),
      paths=[str(tmp_path / "missing.wav"), trained["files"]["normal"], trained["bad"],
             trained["files"]["burst"]]))
  lines = bars[0].stream.getvalue().splitlines()
  assert [l.split(" [")[0] for l in lines] == ["file 1/3", "file 2/3", "file 3/3"]
  assert "files/s" in lines[-1]


def test_calibration_seconds_reads_the_heldout_clips(trained, tmp_path, monkeypatch):
  detector = detector_lib.load_detector(trained["model_dir"])
  paths = []
  for i, seconds in enumerate((2.0, 3.0, 4.0)):
    paths.append(str(tmp_path / f"h{i}.wav"))
    audio.write_wav(paths[-1], _tone(seconds))
  calibration = dataclasses.replace(detector.calibration,
                                    heldout_paths=tuple(paths) + ("gone.wav",))
  monkeypatch.setattr(type(detector), "calibration", property(lambda self: calibration))
  assert detector_lib.calibration_seconds(detector) == pytest.approx(3.0)


def test_interrupted_run_keeps_what_was_scored(trained, tmp_path, monkeypatch):
  real = detector_lib.iter_scores

  def interrupted_after_two(*args, **kwargs):
    for i, item in enumerate(real(*args, **kwargs)):
      if i == 2:
        raise KeyboardInterrupt("SIGTERM")
      yield item

  monkeypatch.setattr(detector_lib, "iter_scores", interrupted_after_two)
  out = tmp_path / "s.csv"
  with pytest.raises(KeyboardInterrupt, match=re.escape(
      f"SIGTERM; the 2 of 3 recording(s) done before it are in {out}")):
    detector_lib.run(detector_lib.ScoreSettings(
        workdir=trained["model_dir"], out=str(out),
        paths=[trained["files"]["normal"], trained["bad"], trained["files"]["burst"]]))
  rows = detector_lib.read_csv(out)
  assert [(r["path"], r["decision"]) for r in rows] == [
      (trained["files"]["normal"], "normal"), (trained["bad"], "failed")]


def test_events_file_has_one_row_per_event_with_its_peak(trained, tmp_path):
  report = detector_lib.run(detector_lib.ScoreSettings(
      workdir=trained["model_dir"], out=str(tmp_path / "s.csv"), piece_s=1.0,
      paths=[trained["files"]["normal"], trained["files"]["burst"]]))
  assert report.events_path == str(tmp_path / "s_events.csv")
  assert f"events: {report.events_path}" in report.summary()
  rows = detector_lib.read_csv(report.events_path)
  want = [(p, e, r) for p, r in report.results for e in r.events]
  assert len(rows) == len(want) == 1  # the burst, in its second piece
  (path, (start, end), result), row = want[0], rows[0]
  assert (row["path"], float(row["start_s"]), float(row["end_s"])) == (
      path, pytest.approx(start, abs=1e-3), pytest.approx(end, abs=1e-3))
  assert float(row["peak"]) == result.clip_score == result.max_score  # eq. (11): the max
  assert float(row["threshold"]) == report.threshold


def test_event_peaks_follow_the_curve_phi_applies_to():
  times = np.arange(10) * 0.1
  scores = np.array([9, 1, 5, 6, 1, 1, 7, 1, 1, 9], np.float32)  # 0 and 9: unscored ends
  frames = detector_lib.FrameResult(
      frame_scores=scores, times_s=times, clip_score=7.0, decision=True,
      events=(detector_lib.Event(0.15, 0.35), detector_lib.Event(0.55, 0.65)), threshold=5.0,
      max_score=7.0, duration_s=1.0, scored_frames=slice(1, 9))
  assert detector_lib.event_peaks(frames) == [6.0, 7.0]
  windowed = dataclasses.replace(frames, window=2, window_times_s=times[1:8] + 0.05,
                                 window_means=np.array([3, 5.5, 3.5, 1, 4, 4, 1.0]),
                                 events=(detector_lib.Event(0.15, 0.35),))
  assert detector_lib.event_peaks(windowed) == [5.5]


def test_interrupted_in_pieces_keeps_the_pieces_scored(trained, tmp_path, monkeypatch):
  real = detector_lib.Detector.score
  calls = []

  def interrupted_on_the_third_piece(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
      raise KeyboardInterrupt("SIGINT")
    return real(self, *args, **kwargs)

  monkeypatch.setattr(detector_lib.Detector, "score", interrupted_on_the_third_piece)
  out, burst = tmp_path / "s.csv", trained["files"]["burst"]
  with pytest.raises(KeyboardInterrupt, match=re.escape(
      f"SIGINT; the 0 of 1 recording(s) done before it, and 2 piece(s) of {burst} (up to "
      f"0:02), are in {out}")):
    detector_lib.run(detector_lib.ScoreSettings(workdir=trained["model_dir"], out=str(out),
                                                piece_s=1.0, paths=[burst]))
  assert [(r["start_s"], r["decision"]) for r in detector_lib.read_csv(out)] == [
      ("0.000", "normal"), ("1.000", "anomalous")]


def test_a_bad_piece_of_a_long_recording_is_reported_and_the_rest_scored(trained, tmp_path,
                                                                          monkeypatch):
  path = str(tmp_path / "nan.wav")
  wave = _tone(9.0, seed=4)
  wave[int(4.5 * SR)] = np.nan  # in the second of three 3-s pieces
  soundfile.write(path, wave, SR, subtype="FLOAT")
  monkeypatch.setattr(audio, "STREAM_SECONDS", 4.0)  # read range by range
  bars = _recorded_bars(monkeypatch)
  report = detector_lib.run(detector_lib.ScoreSettings(
      workdir=trained["model_dir"], out=str(tmp_path / "s.csv"), piece_s=3.0, paths=[path]))
  rows = detector_lib.read_csv(tmp_path / "s.csv")
  # The failed piece's row (after the scored ones) has its start and length too.
  assert [(r["start_s"], r["duration_s"], r["decision"]) for r in rows] == [
      ("0.000", "3.000", "normal"), ("6.000", "3.000", "normal"), ("3.000", "3.000", "failed")]
  assert re.fullmatch(re.escape(path) + r": audio holds non-finite .* at 4\.500 s\) "
                      r"\(the piece from 3 s\)", rows[2]["note"])
  (failure,) = report.failures
  assert failure == (path, rows[2]["note"]) and (failure.start_s, failure.duration_s) == (3, 3)
  for copied in (copy.copy(failure), copy.deepcopy(failure), pickle.loads(pickle.dumps(failure))):
    assert copied == failure and (copied.start_s, copied.duration_s) == (3, 3)
  assert report.exit_status == 1 and (
      "1 recording(s) scored in 2 pieces, 0 pieces anomalous, 0 failed, and 1 piece(s) of them "
      "failed." in report.summary())
  # The progress line goes on through the failed piece, never to the end and back.
  ends = [l.split("/")[0].split()[-1] for l in bars[0].stream.getvalue().splitlines()]
  assert ends == sorted(ends) and ends[-1] == "0:09"


def test_a_chained_ogg_fails_alone(trained, tmp_path):
  """Two Ogg streams joined (libsndfile reports 2**63 - 1 samples for these): a
  failed row naming why, and the other recordings scored, the progress line too."""
  parts = [tmp_path / "a.ogg", tmp_path / "b.ogg"]
  for i, part in enumerate(parts):
    soundfile.write(part, _tone(20.0, seed=i), SR, format="OGG", subtype="VORBIS")
  joined = tmp_path / "joined.ogg"
  joined.write_bytes(parts[0].read_bytes() + parts[1].read_bytes())
  assert soundfile.info(joined).frames == 2**63 - 1
  report = detector_lib.run(detector_lib.ScoreSettings(
      workdir=trained["model_dir"], out=str(tmp_path / "s.csv"),
      paths=[str(joined), trained["files"]["normal"]]))
  assert [p for p, _ in report.results] == [trained["files"]["normal"]]
  ((path, message),) = report.failures
  assert path == str(joined) and "a chained Ogg file, 2 recordings joined" in message


def test_a_wav_cut_short_is_scored_as_far_as_it_goes_with_a_note(trained, tmp_path):
  """A recorder that lost power leaves a WAV whose header declares more than the
  file holds: the loaders refuse it, the scorer scores the samples present."""
  path = str(tmp_path / "cut.wav")
  audio.write_wav(path, _with_burst(_tone(4.0, seed=5), 1.0, 1.3))
  os.truncate(path, os.path.getsize(path) - 2 * SR)  # the last second gone
  with pytest.raises(audio.TruncatedAudioError):
    audio.load_wav(path)
  present = soundfile.read(path, dtype="float32")[0]
  assert present.size == 3 * SR
  report = detector_lib.run(detector_lib.ScoreSettings(
      workdir=trained["model_dir"], out=str(tmp_path / "s.csv"), piece_s=1.5, paths=[path]))
  assert report.failures == [] and [r.start_s for _, r in report.results] == [0.0, 1.5]
  detector = detector_lib.load_detector(trained["model_dir"])
  for (_, got), (a, b) in zip(report.results, [(0, 24000), (24000, 48000)]):
    np.testing.assert_array_equal(got.frame_scores, detector.score(present[a:b]).frame_scores)
  rows = detector_lib.read_csv(tmp_path / "s.csv")
  assert rows[0]["note"] == "" and rows[1]["note"] == (
      "cut short: its header declares 4.0 s, the file holds 3.0 s, which were scored")
  assert [r["decision"] for r in rows] == ["anomalous", "normal"]


def test_pieces_too_short_for_one_clip_score_are_refused(trained, tmp_path):
  with pytest.raises(ValueError, match=r"--piece_s=0.1 is shorter than the 0.192 s that one "
                     "frame with its context needs"):
    detector_lib.run(detector_lib.ScoreSettings(
        workdir=trained["model_dir"], out=str(tmp_path / "s.csv"), piece_s=0.1,
        paths=[trained["files"]["normal"]]))
  assert not os.path.exists(tmp_path / "s.csv")


@pytest.mark.parametrize("out", ["a/normal.wav", "x.FLAC", "y.mp3"])
def test_out_naming_a_sound_file_is_refused(out):
  with pytest.raises(ValueError, match=rf"--out={re.escape(out)} names a sound file"):
    detector_lib.ScoreSettings(workdir="w", paths=["a/normal.wav"], out=out)


def test_threshold_options(trained):
  detector = detector_lib.load_detector(trained["model_dir"])
  held = trained["metadata"]["heldout_clip_scores"]
  phi, source = detector.resolve_threshold(fpr=0.1)
  assert phi == pytest.approx(evaluate.fit_threshold(held, quantile=0.9))
  assert "recalibrated: 0.9 quantile" in source
  # 1 - fpr without the float noise of the subtraction, nor rounded to 1
  assert "recalibrated: 0.000001 quantile" in detector.resolve_threshold(fpr=0.999999)[1]
  assert [detector_lib.quantile_text(f) for f in (0.999999, 0.05, 1e-7, 0.123456789)] == [
      "0.000001", "0.95", "0.9999999", "0.876543"]
  assert detector.resolve_threshold(fpr=0.01)[0] > phi > detector.resolve_threshold(fpr=0.5)[0]
  stored, source = detector.resolve_threshold()
  assert stored == trained["metadata"]["threshold"] and source.startswith("stored")
  assert detector.resolve_threshold(threshold=7.0) == (7.0, "given")
  for flags_all in (0.0, -5.0):  # scores are never negative: a mistake, not a setting
    with pytest.raises(ValueError, match=f"threshold {flags_all:g} would flag every clip"):
      detector.resolve_threshold(threshold=flags_all)
  with pytest.raises(ValueError, match="not both"):
    detector.resolve_threshold(threshold=7.0, fpr=0.1)
  with pytest.raises(ValueError, match="not both"):
    detector_lib.run(detector_lib.ScoreSettings(workdir=trained["workdir"], paths=["x.wav"],
                                    threshold=1.0, fpr=0.1))
  with pytest.raises(ValueError, match="fpr"):
    detector.resolve_threshold(fpr=1.5)
  bare = dataclasses.replace(detector,
                             metadata=dataclasses.replace(detector.metadata, calibration=None))
  with pytest.raises(detector_lib.DetectorError, match="no calibrated threshold") as error:
    bare.resolve_threshold()
  # what to do: evaluate it (the training command again) or give --threshold; not --fpr,
  # which needs the held-out scores that the same evaluation stores
  assert "Run its training command again" in str(error.value)
  assert "--threshold" in str(error.value) and "--fpr" not in str(error.value)
  cut = dataclasses.replace(bare, step=1)  # a model stopped part of the way
  with pytest.raises(detector_lib.DetectorError, match="stopped at step 1 of 2, before"):
    cut.resolve_threshold()
  with pytest.raises(detector_lib.DetectorError, match="held-out"):
    bare.resolve_threshold(fpr=0.1)


# ------------------------------------------------------------------ errors


def _metadata_file(model_dir, step=2):
  return os.path.join(model_dir, "checkpoints", str(step), "metadata", "metadata.json")


def test_model_dir_choice_and_mismatch(trained, tmp_path):
  workdir = tmp_path / "two"
  shutil.copytree(trained["model_dir"], workdir / "bu")
  shutil.copytree(trained["model_dir"], workdir / "re")
  with pytest.raises(detector_lib.DetectorError, match=r"several losses \['bu', 're'\].*--loss"):
    artifact.find_model_dir(workdir)
  assert artifact.find_model_dir(workdir, loss="re") == str(workdir / "re")
  with pytest.raises(detector_lib.DetectorError, match="loss 'snp'.*'bu', 're'"):
    artifact.find_model_dir(workdir, loss="snp")
  with pytest.raises(detector_lib.DetectorError, match="trained with loss 'bu', not 're'"):
    detector_lib.load_detector(workdir, loss="re")  # a copy of the bu model
  dcase_workdir = tmp_path / "dcase"  # experiments.dcase: <loss>/models/<machine>
  for loss, machine in (("re", "fan"), ("re", "pump"), ("bu", "fan")):
    shutil.copytree(trained["model_dir"], dcase_workdir / loss / "models" / machine)
  fold = dcase_workdir / "re" / "crossfit" / "fan" / "fold0"  # a fold model: not listed
  shutil.copytree(trained["model_dir"], fold)
  with pytest.raises(detector_lib.DetectorError, match=f"as the workdir: {re.escape(str(fold))}$"):
    artifact.find_model_dir(dcase_workdir / "re" / "crossfit")  # listed where asked for
  models = lambda loss, *machines: ", ".join(
      str(dcase_workdir / loss / "models" / m) for m in machines)
  for where, loss, listed in ((dcase_workdir, None, models("bu", "fan") + ", " + models(
      "re", "fan", "pump")), (dcase_workdir, "re", models("re", "fan", "pump")),
                              (dcase_workdir / "re", None, models("re", "fan", "pump")),
                              (dcase_workdir / "re" / "models", None, models("re", "fan", "pump"))):
    with pytest.raises(detector_lib.DetectorError, match=(
        rf"model folders? below it \(experiments.dcase: one per loss and machine type\); give "
        f"one of them as the workdir: {re.escape(listed)}$")):
      artifact.find_model_dir(where, loss=loss)
  assert artifact.find_model_dir(dcase_workdir / "bu" / "models") == str(
      dcase_workdir / "bu" / "models" / "fan")  # the only one
  assert artifact.find_model_dir(dcase_workdir, loss="bu") == str(
      dcase_workdir / "bu" / "models" / "fan")  # the only one of that loss, further down
  # a workdir that itself lies in a folder named crossfit is no fold model
  nested = tmp_path / "crossfit" / "run1"
  shutil.copytree(dcase_workdir / "bu", nested / "bu")
  assert artifact.find_model_dir(nested) == str(nested / "bu" / "models" / "fan")
  # A checkpoints folder, and the PCA reference's folder (scores, no model), say what to give.
  with pytest.raises(detector_lib.DetectorError, match=re.escape(
      f"{workdir / 'bu' / 'checkpoints'} is a checkpoints folder: give the model folder that "
      f"holds it, {workdir / 'bu'}")):
    artifact.find_model_dir(workdir / "bu" / "checkpoints")
  with pytest.raises(detector_lib.DetectorError, match=re.escape(  # a step folder in it
      f"{workdir / 'bu' / 'checkpoints' / '2'} is a checkpoint step folder: give the model "
      f"folder that holds its checkpoints folder, {workdir / 'bu'} (its latest step is scored)")):
    artifact.find_model_dir(workdir / "bu" / "checkpoints" / "2")
  (workdir / "pca").mkdir()
  (workdir / "pca" / "anomaly_score_anr_-10dB.csv").write_text("a.wav,1.0\n")
  with pytest.raises(detector_lib.DetectorError, match="holds the PCA reference's scores, not a "
                     "model to score with: give the workdir above it and --loss=re, snp or bu"):
    artifact.find_model_dir(workdir / "pca")
  with pytest.raises(detector_lib.DetectorError, match="no workdir given"):
    artifact.find_model_dir("")
  with pytest.raises(detector_lib.DetectorError, match="a file, not a directory"):
    artifact.find_model_dir(trained["files"]["normal"])

  # Metadata naming a larger model than the stored parameters.
  path = _metadata_file(workdir / "bu")
  meta = json.load(open(path))
  meta["model"] = "fcn40-large"
  json.dump(meta, open(path, "w"))
  with pytest.raises(detector_lib.DetectorError, match="does not match the model.*dec_0"):
    detector_lib.load_detector(workdir / "bu")
  meta["features"]["n_mels"] = 64
  json.dump(meta, open(path, "w"))
  with pytest.raises(detector_lib.DetectorError, match="inconsistent"):
    detector_lib.load_detector(workdir / "bu")


def test_score_normalization_is_applied_and_its_file_checked(trained, tmp_path):
  """A calibration on knn-normalized scores: load_detector reads the bank the metadata
  names and Detector.score divides by it; a missing, damaged or mismatched bank is one
  DetectorError naming the file (one Error: line from experiments.score)."""
  model_dir = tmp_path / "bu"
  shutil.copytree(trained["model_dir"], model_dir)
  base = detector_lib.load_detector(model_dir)
  normal = audio.load_wav(trained["files"]["normal"])
  bank = score_norm.fit_from_clips(base.scorer, base.params, [normal], neighbors=3)
  bank_path = str(model_dir / score_norm.FILE_NAME)
  bank.save(bank_path)
  meta_path = _metadata_file(model_dir)
  meta = json.load(open(meta_path))
  meta.update(version=2, score_normalization={"kind": "knn", "neighbors": 3,
                                              "file": score_norm.FILE_NAME})
  json.dump(meta, open(meta_path, "w"))

  detector = detector_lib.load_detector(model_dir)
  assert detector.normalization.neighbors == 3 and "knn-normalized" in detector.describe()
  burst = audio.load_wav(trained["files"]["burst"])
  scores, codes = base.scorer(base.params, burst, with_codes=True)
  want = bank(codes, scores)
  np.testing.assert_array_equal(detector.frame_scores(burst), want)
  assert detector.score(burst).clip_score == evaluate.interior_clip_score(
      want, num_samples=burst.size, feature_config=detector.feature_config)
  with pytest.raises(detector_lib.DetectorError, match="no normalizer was given"):
    dataclasses.replace(detector, normalizer=None)
  with pytest.raises(detector_lib.DetectorError, match="raw scores, but a score normalizer"):
    dataclasses.replace(base, normalizer=bank)

  score_norm.fit_from_clips(base.scorer, base.params, [normal], neighbors=4).save(bank_path)
  with pytest.raises(detector_lib.DetectorError, match=f"{bank_path}: .* of 4 neighbours"):
    detector_lib.load_detector(model_dir)
  score_norm.fit_from_clips(base.scorer, base.params, [normal], neighbors=3,
                            kind="knn_z").save(bank_path)
  with pytest.raises(detector_lib.DetectorError,
                     match=f"{bank_path}: a knn_z score normalizer .* names knn of 3"):
    detector_lib.load_detector(model_dir)
  meta["score_normalization"]["kind"] = "knn_z"  # a knn_z calibration reads it
  json.dump(meta, open(meta_path, "w"))
  z_detector = detector_lib.load_detector(model_dir)
  assert z_detector.normalizer.kind == "knn_z" and "knn_z-normalized" in z_detector.describe()
  np.testing.assert_array_equal(z_detector.frame_scores(burst),
                                z_detector.normalizer(codes, scores))
  # a calibration that stores its bank's fingerprint refuses another bank of the same
  # kind, k and code size (one fitted on other clips, e.g. copied from another model)
  meta["score_normalization"]["fingerprint"] = z_detector.normalizer.fingerprint
  json.dump(meta, open(meta_path, "w"))
  assert detector_lib.load_detector(model_dir).normalizer.fingerprint == (
      z_detector.normalizer.fingerprint)
  score_norm.fit_from_clips(base.scorer, base.params, [normal, burst], neighbors=3,
                            kind="knn_z").save(bank_path)
  with pytest.raises(detector_lib.DetectorError,
                     match=f"{bank_path}: not the bank this model was calibrated with"):
    detector_lib.load_detector(model_dir)
  with open(bank_path, "wb") as f:
    f.write(b"not a bank")
  with pytest.raises(detector_lib.DetectorError, match=f"{bank_path}: not a usable"):
    detector_lib.load_detector(model_dir)
  os.remove(bank_path)
  proc = _cli(f"--workdir={model_dir}", trained["files"]["normal"])
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(
      f"Error: {bank_path}: the score normalizer of this model is missing")


def test_no_checkpoint_is_a_clear_error(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(detector_lib.DetectorError, match="No checkpoint in"):
    detector_lib.load_detector(tmp_path / "empty")
  (tmp_path / "empty" / "checkpoints").mkdir()
  with pytest.raises(detector_lib.DetectorError, match="No checkpoint in"):
    detector_lib.load_detector(tmp_path / "empty")
  with pytest.raises(detector_lib.DetectorError, match="no such directory"):
    detector_lib.load_detector(tmp_path / "nowhere")


# ------------------------------------------------------------------ entry point


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  return subprocess.run([sys.executable, "-m", "experiments.score", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300, env=env)


def test_entry_point(trained, tmp_path):
  proc = _cli(f"--workdir={tmp_path}", "a.wav")
  assert proc.returncode != 0
  assert "No checkpoint in" in proc.stderr and "Traceback" not in proc.stderr

  proc = _cli(f"--workdir={trained['workdir']}", "--fpr=0.1", trained["files"]["burst"],
              trained["bad"])
  assert proc.returncode == 1, proc.stderr
  assert f"FAILED {trained['bad']}" in proc.stderr and "Traceback" not in proc.stderr
  assert "anomalous" in proc.stdout and "recalibrated" in proc.stdout
  info = [l for l in proc.stderr.splitlines()
          if l.startswith("INFO") or (l[:1] == "I" and l[1:5].isdigit())]
  assert not info, info[:5]  # quiet by default: no absl INFO lines (Orbax restoring, JAX)
  # warnings read as such, without absl's "W1207 13:57:50.205 1404... detector.py:644]"
  assert f"WARNING: Skipping {trained['bad']}" in proc.stderr
  assert not re.search(r"^W\d{4} ", proc.stderr, re.M), proc.stderr[-2000:]
  # By default in the model's folder (bu/ of the toycar workdir), apart from other losses'.
  assert not os.path.exists(os.path.join(trained["workdir"], "scores.csv"))
  rows = detector_lib.read_csv(os.path.join(trained["model_dir"], "scores.csv"))
  assert [(r["path"], r["decision"]) for r in rows] == [
      (trained["files"]["burst"], "anomalous"), (trained["bad"], "failed")]
  assert float(rows[0]["threshold"]) == pytest.approx(evaluate.fit_threshold(
      trained["metadata"]["heldout_clip_scores"], quantile=0.9), rel=1e-6)
  (start, end), = detector_lib.parse_events(rows[0]["events"])
  assert start <= BURST[0] and end >= BURST[1]
