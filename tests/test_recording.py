"""audio.open_recording / audio.Recording: a long file read range by range holds
load_wav's samples, checked as load_wav checks them; scoring it equals scoring
the loaded waveform."""

import os
import re

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import soundfile

from bu_jax import audio, features, frame_scores, models, score_norm

SR = 16000
RANGES = [(0, 1000), (0, None), (12345, 30001), (-5000, None), (3, 4), (7, 7), (40000, 10**9)]


def _wave(seconds, sr=SR, seed=0, channels=1):
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * sr)) / sr
  x = 0.2 * np.sin(2 * np.pi * 440 * t * (1 + 0.2 * t / seconds)) + 0.03 * rng.standard_normal(t.size)
  x[int(0.4 * x.size):int(0.45 * x.size)] *= 3  # a level change inside
  x = x.astype(np.float32)
  if channels == 2:
    x = np.stack([x, 0.5 * x[::-1].copy()], axis=1)
  return x


def _format(name):
  """soundfile's format for a file name (.opus is Ogg)."""
  return {"opus": "OGG"}.get(name.rsplit(".", 1)[-1], name.rsplit(".", 1)[-1].upper())


def _slice(n, a, b):
  return slice(a if a >= 0 else n + a, b)


@pytest.mark.parametrize("rate,channels,name,subtype,tol", [
    (SR, 1, "m16.wav", "PCM_16", 0.0),       # the same samples, bit for bit
    (SR, 2, "s16.wav", "FLOAT", 0.0),
    (48000, 2, "s48.wav", "PCM_24", 1e-6),  # resampled: equal to float rounding
    (44100, 1, "m441.flac", "PCM_16", 1e-6),
    (22050, 1, "m22.aiff", "PCM_16", 1e-6),
    # Compressed: decoded forward, the samples a whole decode gives.
    (SR, 1, "m16.ogg", "VORBIS", 0.0),
    (44100, 2, "s441.mp3", "MPEG_LAYER_III", 1e-6),
    (48000, 2, "s48.opus", "OPUS", 1e-6),
])
def test_ranges_hold_load_wavs_samples(tmp_path, rate, channels, name, subtype, tol):
  path = str(tmp_path / name)
  soundfile.write(path, _wave(3.0, sr=rate, channels=channels), rate, subtype=subtype,
                  format=_format(name))
  whole = audio.load_wav(path)
  rec = audio.open_recording(path, stream_seconds=1.0)
  assert isinstance(rec, audio.Recording)
  assert len(rec) == rec.size == whole.size and rec.shape == whole.shape
  for a, b in RANGES:
    index = _slice(whole.size, a, b)
    got = rec[index]
    assert got.dtype == np.float32 and got.shape == whole[index].shape
    np.testing.assert_allclose(got, whole[index], rtol=0, atol=tol)


def test_short_files_are_loaded_whole(tmp_path):
  wav, ogg = str(tmp_path / "a.wav"), str(tmp_path / "b.ogg")
  audio.write_wav(wav, _wave(2.0))
  soundfile.write(ogg, _wave(2.0), SR, format="OGG", subtype="VORBIS")
  short = audio.open_recording(wav)  # 2 s < STREAM_SECONDS
  assert isinstance(short, np.ndarray)
  np.testing.assert_array_equal(short, audio.load_wav(wav))
  assert isinstance(audio.open_recording(wav, stream_seconds=1.9), audio.Recording)
  assert isinstance(audio.open_recording(wav, stream_seconds=2.0), np.ndarray)
  assert not audio.open_recording(wav, stream_seconds=1.9).forward
  assert isinstance(audio.open_recording(ogg, stream_seconds=2.0), np.ndarray)
  assert audio.open_recording(ogg, stream_seconds=1.9).forward
  with pytest.raises(audio.AudioError, match="no such file"):
    audio.open_recording(str(tmp_path / "missing.wav"))
  with pytest.raises(TypeError, match="contiguous ranges"):
    audio.open_recording(wav, stream_seconds=1.0)[::2]
  with pytest.raises(TypeError, match="contiguous ranges"):
    audio.open_recording(wav, stream_seconds=1.0)[5]


def test_bad_samples_are_named_with_their_time(tmp_path, caplog):
  path = str(tmp_path / "nan.wav")
  x = _wave(3.0)
  x[2 * SR + 100] = np.nan
  soundfile.write(path, x, SR, subtype="FLOAT")
  rec = audio.open_recording(path, stream_seconds=1.0)
  assert rec[: 2 * SR].size == 2 * SR  # a range without it reads
  with pytest.raises(audio.AudioError, match=r"nan\.wav: audio holds non-finite .* at 2\.006 s"):
    rec[SR:]
  loud = str(tmp_path / "loud.wav")
  soundfile.write(loud, 5e3 * _wave(3.0), SR, subtype="FLOAT")
  rec = audio.open_recording(loud, stream_seconds=1.0)
  caplog.clear()
  rec[:SR], rec[SR:]
  assert sum("loud.wav: peak amplitude" in r.getMessage() for r in caplog.records) == 1  # once


def test_sections_warn_once_and_a_bad_sample_fails_only_the_range_it_is_in(tmp_path, caplog):
  loud = str(tmp_path / "loud.wav")
  soundfile.write(loud, 5e3 * _wave(3.0), SR, subtype="FLOAT")
  rec = audio.open_recording(loud, stream_seconds=1.0)
  caplog.clear()
  for a in range(0, 3 * SR, SR):  # pieces, as experiments.score --piece_s reads them
    rec.section(a, a + SR)[:]
  assert sum("peak amplitude" in r.getMessage() for r in caplog.records) == 1
  # Resampled, a range is read with 0.1 s more on either side: a NaN 0.05 s after a
  # boundary fails the range after it only.
  path = str(tmp_path / "nan48.wav")
  x = _wave(6.0, sr=48000)
  x[int(3.05 * 48000)] = np.nan
  soundfile.write(path, x, 48000, subtype="FLOAT")
  rec = audio.open_recording(path, stream_seconds=1.0)
  assert np.isfinite(rec.section(0, 3 * SR)[:]).all()
  with pytest.raises(audio.AudioError, match=r"non-finite .* at 3\.050 s"):
    rec.section(3 * SR, 6 * SR)[:]


def test_a_cut_wav_whose_format_libsndfile_cannot_read_is_refused_clearly(tmp_path):
  path = tmp_path / "odd.wav"
  fmt = (0x1234).to_bytes(2, "little") + (1).to_bytes(2, "little") + SR.to_bytes(4, "little") \
      + (2 * SR).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
  data = bytes(4000)
  path.write_bytes(b"RIFF" + (4 + 8 + len(fmt) + 8 + 100000).to_bytes(4, "little") + b"WAVE"
                   + b"fmt " + len(fmt).to_bytes(4, "little") + fmt
                   + b"data" + (100000).to_bytes(4, "little") + data)
  with pytest.raises(audio.TruncatedAudioError, match=r"odd\.wav: truncated WAV file"):
    audio.open_recording(path, cut_short_ok=True)


def test_a_file_cut_after_it_was_opened(tmp_path):
  path = str(tmp_path / "cut.wav")
  audio.write_wav(path, _wave(3.0))
  rec = audio.open_recording(path, stream_seconds=1.0)
  with open(path, "r+b") as f:  # a recorder's file replaced by a shorter one
    f.truncate(os.path.getsize(path) - SR)  # 0.5 s of 16-bit samples gone
  with pytest.raises(audio.AudioError, match=r"cut\.wav: .*(cut short|cannot be read)"):
    rec[2 * SR:]


def test_a_compressed_file_replaced_after_it_was_opened(tmp_path):
  path = str(tmp_path / "r.ogg")
  soundfile.write(path, _wave(30.0), SR, format="OGG", subtype="VORBIS")
  rec = audio.open_recording(path, stream_seconds=1.0)
  soundfile.write(path, _wave(10.0), SR, format="OGG", subtype="VORBIS")  # a shorter one
  with pytest.raises(audio.TruncatedAudioError, match=re.escape(path) + r": damaged or cut "
                     r"short \(it decoded to 30\.0 s when opened, but reading stops at"):
    rec[20 * SR:21 * SR]


def test_a_flac_cut_short_is_damaged_from_where_it_cannot_be_read(tmp_path):
  path = str(tmp_path / "cut.flac")
  soundfile.write(path, _wave(30.0), SR)
  os.truncate(path, os.path.getsize(path) // 2)  # the header still declares 30 s
  rec = audio.open_recording(path, stream_seconds=1.0)
  assert rec[: 2 * SR].size == 2 * SR  # what is there reads
  with pytest.raises(audio.TruncatedAudioError,
                     match=r"cut\.flac: damaged or cut short \(its header declares 30\.0 s, "
                     r"but reading 2[0-9.]+-2[0-9.]+ s fails: .+\)"):
    rec[20 * SR:22 * SR]


CFG = features.FeatureConfig(n_mels=8, context=2)


@pytest.fixture(scope="module")
def model_and_params():
  model = models.FCNAutoencoder(dim=CFG.dim, hidden_layers=1, units=16, bottleneck=4)
  return model, model.init(jax.random.key(0), jnp.zeros((1, CFG.dim)))["params"]


@pytest.mark.parametrize("rate,chunk_frames", [(SR, 64), (SR, 4096), (48000, 50)])
def test_scores_of_a_recording_equal_the_loaded_waves(tmp_path, model_and_params, rate,
                                                       chunk_frames):
  model, params = model_and_params
  path = str(tmp_path / "r.wav")
  soundfile.write(path, _wave(4.0, sr=rate), rate, subtype="PCM_16")
  rec, whole = audio.open_recording(path, stream_seconds=1.0), audio.load_wav(path)
  scorer = frame_scores.FrameScorer(model, CFG, chunk_frames=chunk_frames)
  scores, codes = scorer(params, rec, name=path, with_codes=True)
  want_scores, want_codes = scorer(params, whole, with_codes=True)
  tol = 0 if rate == SR else 1e-4
  np.testing.assert_allclose(scores, want_scores, rtol=tol, atol=tol)
  np.testing.assert_allclose(codes, want_codes, rtol=tol, atol=tol)
  # A knn normalization chunk by chunk equals it on the whole recording's frames.
  bank = score_norm.fit_from_clips(scorer, params, [whole[: 2 * SR]], neighbors=3, kind="knn_z")
  normalized = score_norm.NormalizedScorer(scorer, bank)(params, rec, name=path)
  np.testing.assert_allclose(normalized, bank(want_codes, want_scores), rtol=10 * tol + 1e-6,
                             atol=10 * tol)


def test_bad_samples_in_a_recording_stop_scoring_with_the_file_named(tmp_path, model_and_params):
  model, params = model_and_params
  path = str(tmp_path / "huge.wav")
  x = _wave(4.0)
  x[3 * SR] = 1e20  # finite, but its spectrum overflows float32
  soundfile.write(path, x, SR, subtype="FLOAT")
  rec = audio.open_recording(path, stream_seconds=1.0)
  with pytest.raises(ValueError, match=r"huge\.wav \(at 2\.\d s\): peak amplitude"):
    frame_scores.FrameScorer(model, CFG, chunk_frames=64)(params, rec, name=path)


def test_a_compressed_file_is_decoded_once_when_read_in_order(tmp_path):
  """Ogg and MP3 are decoded forward, whole blocks at a time: ranges read in order
  (overlapping as the scorer's do) cost one decode and hold at most a range, a
  block and ``keep`` frames; a range before what is kept decodes from the start."""
  path = str(tmp_path / "r.ogg")
  x = _wave(5.0)
  soundfile.write(path, x, SR, format="OGG", subtype="VORBIS")
  whole = audio.load_wav(path)
  reader = audio._ForwardReader(path, keep=3000, block=4000)  # pylint: disable=protected-access
  held = []
  for a in range(0, whole.size, 9000):
    b = a + 10000  # 1000 frames back into the range before
    np.testing.assert_array_equal(reader.read(a, b)[:, 0], whole[a:b])
    held.append(len(reader._buf))  # pylint: disable=protected-access
  assert reader.rewinds == 0 and max(held) <= 10000 + 4000 + 3000
  assert reader.read(whole.size, whole.size + 10).shape[0] == 0  # past the end: nothing
  np.testing.assert_array_equal(reader.read(100, 200)[:, 0], whole[100:200])
  assert reader.rewinds == 1
  # A short range may start before the one before it, within ``keep`` of the
  # furthest end read.
  for a in (40000, 41000, 38500, 39000, 38600):
    np.testing.assert_array_equal(reader.read(a, a + 500)[:, 0], whole[a:a + 500])
  assert reader.rewinds == 1
  # Sections (pieces) share one decoder.
  rec = audio.open_recording(path, stream_seconds=1.0)
  for a in range(0, len(rec), SR):
    np.testing.assert_array_equal(rec.section(a, a + SR)[:], whole[a:a + SR])
  assert rec.reader.rewinds == 0


@pytest.mark.parametrize("name,subtype,damage", [
    ("cut.mp3", "MPEG_LAYER_III", "truncate"),  # its Xing header still declares 30 s
    ("bad.mp3", "MPEG_LAYER_III", "overwrite"),  # a stretch of bytes destroyed
])
def test_a_compressed_file_that_stops_decoding_is_scored_as_far_as_it_goes(tmp_path, caplog,
                                                                            capfd, name,
                                                                            subtype, damage):
  path = str(tmp_path / name)
  rate = SR
  soundfile.write(path, _wave(30.0, sr=rate), rate, subtype=subtype, format=_format(name))
  data = bytearray(open(path, "rb").read())
  if damage == "truncate":
    data = data[:len(data) // 2]
  else:
    n = len(data) // 2
    data[n:n + 2000] = np.random.default_rng(0).integers(0, 256, 2000, np.uint8).tobytes()
  open(path, "wb").write(bytes(data))
  # Long by its header (over stream_seconds), shorter than that as it decodes; and
  # short by its header (loaded whole), where load_wav refuses it.
  for stream_seconds in (20.0, 100.0):
    if damage == "truncate" or stream_seconds == 20.0:  # (else audioread's decoders judge)
      with pytest.raises(audio.TruncatedAudioError, match=re.escape(path) + r": damaged or "
                         r"cut short \(its MP3 (header declares 30\.0 s, its )?audio decodes to"):
        audio.open_recording(path, stream_seconds=stream_seconds)
    assert audio.open_recording(path, stream_seconds=stream_seconds,
                                cut_short_ok=True).note.startswith("damaged or cut short")
  rec = audio.open_recording(path, stream_seconds=20.0, cut_short_ok=True)
  assert re.fullmatch(r"damaged or cut short: its MP3 header declares 30\.0 s, its audio "
                      r"decodes to \d+\.\d s( \(.+\))?, which were scored", rec.note)
  assert rec.note in caplog.text
  assert 5 * SR < len(rec) < 20 * SR
  assert len(rec) == int(np.ceil(rec.native_frames * SR / rate))
  capfd.readouterr()
  assert np.isfinite(rec[:]).all() and rec.reader.rewinds == 0
  # libmpg123's own notes on the damage ("Illegal Audio-MPEG-Header", ...) are not
  # written into the terminal's progress line.
  assert capfd.readouterr().err == ""
  if damage == "truncate":  # the samples present, as a whole read decodes them (to rounding)
    present = soundfile.read(path, dtype="float32")[0]
    assert len(present) == len(rec)
    np.testing.assert_allclose(rec[:], present, rtol=0, atol=2e-7)
  else:  # libsndfile stops at the damage
    assert "(Unspecified internal error.)" in rec.note
    # A decoder that meets the damage keeps it: a range past it fails at once, one
    # before it decodes again from the start.
    reader = audio._ForwardReader(path, keep=SR, block=SR)  # pylint: disable=protected-access
    with pytest.raises(RuntimeError, match="Unspecified internal error"):
      reader.read(0, 30 * SR)
    assert reader.failed[0] == rec.native_frames
    with pytest.raises(RuntimeError, match="Unspecified internal error"):
      reader.read(25 * SR, 26 * SR)
    assert reader.rewinds == 0
    np.testing.assert_array_equal(reader.read(0, SR)[:, 0], rec[:SR])


def test_a_chained_ogg_is_refused_clearly(tmp_path):
  """Two Ogg streams joined: libsndfile reports no length and decodes the first only."""
  parts = [tmp_path / "a.ogg", tmp_path / "b.ogg"]
  for i, part in enumerate(parts):
    soundfile.write(part, _wave(3.0, seed=i), SR, format="OGG", subtype="VORBIS")
  path = tmp_path / "joined.ogg"
  path.write_bytes(parts[0].read_bytes() + parts[1].read_bytes())
  for read in (audio.load_wav, audio.probe, audio.open_recording,
               lambda p: audio.open_recording(p, stream_seconds=1.0, cut_short_ok=True)):
    with pytest.raises(audio.AudioError, match=re.escape(str(path)) + r": a chained Ogg file, "
                       r"2 recordings joined one after another, of which libsndfile decodes only "
                       r"the first: convert it"):
      read(path)
  audio.load_wav(parts[0])  # one stream is read


def _strip_xing(data):
  """An MP3 (libsndfile's: no ID3 tag, MPEG-2 Layer III at 16 kHz) without its
  first frame, the Xing header."""
  header = int.from_bytes(data[:4], "big")
  assert header >> 21 == 0x7FF and b"Xing" in data[:1000]
  kbps = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)[(header >> 12) & 15]
  return data[72 * kbps * 1000 // SR + ((header >> 9) & 1):]


def test_an_mp3_whose_length_libsndfile_overestimates_is_no_damaged_file(tmp_path, caplog):
  """Silence first: libsndfile's estimate (from the first frame's low bitrate) is
  far too long, and the decode ends at the true end, which is no damage."""
  tagged, untagged = str(tmp_path / "vbr.mp3"), str(tmp_path / "untagged.mp3")
  x = np.concatenate([np.zeros(3 * SR), 0.3 * np.random.default_rng(0).standard_normal(27 * SR)])
  soundfile.write(tagged, x.astype(np.float32), SR, format="MP3", bitrate_mode="VARIABLE")
  open(untagged, "wb").write(_strip_xing(open(tagged, "rb").read()))
  assert soundfile.info(untagged).frames > 60 * SR  # the estimate
  caplog.clear()
  rec = audio.open_recording(untagged, stream_seconds=20.0)  # long by the estimate
  assert isinstance(rec, audio.Recording) and rec.note == "" and caplog.text == ""
  assert len(rec) == audio.load_wav(untagged).size == pytest.approx(30 * SR, abs=0.2 * SR)


def test_ogg_links_tell_a_chained_file_from_a_multiplexed_one(tmp_path):
  """Streams one after another (chained) against streams side by side (their
  first pages together, as a multiplexed file has them)."""
  def pages(path):
    data, out = path.read_bytes(), []
    while data:
      segments = data[26]
      size = 27 + segments + sum(data[27:27 + segments])
      out.append(data[:size])
      data = data[size:]
    return out
  parts = [tmp_path / "a.ogg", tmp_path / "b.ogg"]
  for i, part in enumerate(parts):
    soundfile.write(part, _wave(3.0, seed=i), SR, format="OGG", subtype="VORBIS")
  a, b = pages(parts[0]), pages(parts[1])
  links = audio._ogg_links  # pylint: disable=protected-access
  assert links(str(parts[0])) == 1
  (tmp_path / "chained.ogg").write_bytes(b"".join(a + b))
  assert links(str(tmp_path / "chained.ogg")) == 2
  (tmp_path / "side.ogg").write_bytes(b"".join([a[0], b[0]] + a[1:] + b[1:]))
  assert links(str(tmp_path / "side.ogg")) == 1


def test_an_mp3_whose_length_libsndfile_estimates_short_says_so(tmp_path, caplog):
  """A VBR MP3 without a Xing header (ffmpeg writing to a pipe leaves one so):
  libsndfile estimates its length from its first frame and stops decoding there."""
  tagged, untagged = str(tmp_path / "vbr.mp3"), str(tmp_path / "untagged.mp3")
  rng = np.random.default_rng(0)
  x = np.concatenate([0.01 * rng.standard_normal(8 * SR), 0.3 * rng.standard_normal(22 * SR)])
  soundfile.write(tagged, x.astype(np.float32), SR, format="MP3", bitrate_mode="VARIABLE")
  held, is_tagged = audio._mp3_frames(tagged)  # pylint: disable=protected-access
  assert is_tagged and held == pytest.approx(30.0, abs=0.1)
  open(untagged, "wb").write(_strip_xing(open(tagged, "rb").read()))
  held, is_tagged = audio._mp3_frames(untagged)  # pylint: disable=protected-access
  assert not is_tagged and held == pytest.approx(30.0, abs=0.1)
  decoded = soundfile.info(untagged).frames / SR
  assert decoded < 20.0  # libsndfile's estimate, from the quiet first frames
  caplog.clear()
  wave = audio.load_wav(untagged)
  assert wave.size / SR == pytest.approx(decoded)
  assert (f"libsndfile decodes {decoded:.1f} s of the {held:.1f} s its MPEG frames hold (an MP3 "
          "without a Xing header") in caplog.text
  rec = audio.open_recording(untagged, cut_short_ok=True)  # short by its header: a note all the same
  assert isinstance(rec, audio.Recording) and len(rec) == wave.size
  assert rec.note.startswith(f"libsndfile decodes {decoded:.1f} s of the {held:.1f} s")
  assert rec.note.endswith(f"the {decoded:.1f} s decoded were scored")
  np.testing.assert_allclose(rec[:], wave, rtol=0, atol=2e-7)
  caplog.clear()
  assert audio.load_wav(tagged).size == 30 * SR and "libsndfile decodes" not in caplog.text
  # Two files joined: the first one's Xing header counts half the frames.
  joined = str(tmp_path / "joined.mp3")
  open(joined, "wb").write(open(tagged, "rb").read() * 2)
  rec = audio.open_recording(joined, cut_short_ok=True)
  assert len(rec) == 30 * SR and re.match(
      r"libsndfile decodes 30\.0 s of the 60\.\d s its MPEG frames hold \(its Xing header "
      r"counts only part of them: MP3 files joined\?\)", rec.note)
