"""Throughput of frame-wise scoring (experiments.score) of long recordings.

    python -m benchmarks.score [--minutes 60] [--model fcn64-large] [--chunk_frames 4096]
    python -m benchmarks.score --file --minutes 1440 --model fcn40-small   # a day, from a WAV
    python -m benchmarks.score --file --format ogg --rate 44100 --channels 2 --minutes 60

Scores one synthetic recording of ``--minutes`` of 16 kHz audio (white noise;
the cost does not depend on the content) with a randomly initialized model,
through ``bu_jax.detector_lib.Detector.score`` (log-mel features, context stacking,
the autoencoder and eq. 5 in chunks of ``--chunk_frames`` frames, then the clip
decision and the events). Compilation is done beforehand on a shorter
recording with the same chunk shape and reported separately; reading the WAV
file is not included.

Prints one JSON object: model, audio_seconds, seconds (wall time of the
scoring), realtime_factor (audio_seconds / seconds: how many times faster than
real time), seconds_per_hour (``seconds`` scaled to an hour of audio;
``extrapolated`` says whether it was measured on less), frames, chunk_frames,
compile_seconds, devices, loadavg_1m (other load on the machine slows it).

With ``--file`` the recording is written to a file in a temporary folder (block
by block, never held whole; ``--format`` wav (16-bit), flac, ogg (Vorbis) or
mp3, at ``--rate`` Hz with ``--channels`` channels) and scored from it as
``experiments.score`` scores a file (``detector.iter_scores``: a recording over
``audio.STREAM_SECONDS`` is read range by range; ``--whole`` loads it whole
instead, as before Ogg and MP3 files were read range by range), reading,
decoding and resampling included; the object adds ``format``, ``file_mb``,
``write_seconds``, ``rss_before_mb`` (the process after compiling, before
scoring) and ``peak_rss_mb`` (the process's high-water mark after scoring): what
scoring a long file costs in memory on top of the process.
"""

import argparse
import os
import resource
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import soundfile

from benchmarks._common import emit
from bu_jax import artifact
from bu_jax import audio
from bu_jax import detector as detector_lib
from bu_jax import models


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--minutes", type=float, default=60.0,
                      help="audio to score; less than 60 extrapolates to an hour")
  parser.add_argument("--model", default="fcn64-large", choices=sorted(models.PRESETS))
  parser.add_argument("--chunk_frames", type=int, default=4096)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--file", action="store_true",
                      help="score from a file, reading included; report peak memory")
  parser.add_argument("--format", default="wav", choices=sorted(_FORMATS),
                      help="--file's type")
  parser.add_argument("--rate", type=int, default=None,
                      help="--file's sample rate (default: the model's, 16000)")
  parser.add_argument("--channels", type=int, default=1, help="--file's channels")
  parser.add_argument("--whole", action="store_true",
                      help="load --file whole, however long (audio.STREAM_SECONDS = inf)")
  args = parser.parse_args()
  if args.minutes <= 0:
    parser.error("--minutes must be > 0")
  if (args.format != "wav" or args.rate or args.channels != 1 or args.whole) and not args.file:
    parser.error("--format, --rate, --channels and --whole describe --file")
  if args.channels < 1 or (args.rate is not None and args.rate < 8000):
    parser.error("--channels must be >= 1 and --rate >= 8000")

  preset = models.preset(args.model)
  cfg = preset.features
  params = preset.build().init(jax.random.key(args.seed),
                               jnp.zeros((1, cfg.dim), jnp.float32))["params"]
  metadata = artifact.ModelMetadata(loss="re", preset=preset,  # untrained: any loss
                                    calibration=artifact.Calibration(threshold=1e30))
  detector = detector_lib.Detector(metadata=metadata, params=params, chunk_frames=args.chunk_frames)
  rng = np.random.default_rng(args.seed)
  num_samples = int(round(args.minutes * 60 * cfg.sample_rate))

  # Compile the chunk shape (the same for every chunk of a recording that is
  # at least chunk_frames long) on a recording of 1.5 chunks.
  warmup_samples = min(num_samples, int(1.5 * args.chunk_frames * cfg.hop_length))
  t0 = time.perf_counter()
  detector.score(0.1 * rng.standard_normal(warmup_samples, dtype=np.float32))
  compile_seconds = time.perf_counter() - t0

  extra = {}
  if args.file:
    if args.whole:
      audio.STREAM_SECONDS = float("inf")
    rate = args.rate or cfg.sample_rate
    fmt, subtype = _FORMATS[args.format]
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, f"recording.{args.format}")
      t0 = time.perf_counter()
      with soundfile.SoundFile(path, "w", samplerate=rate, channels=args.channels,
                               format=fmt, subtype=subtype) as f:
        total = int(round(args.minutes * 60 * rate))
        for a in range(0, total, 10 * rate):  # 10 s at a time (libsndfile's Ogg
          n = min(10 * rate, total - a)        # encoder crashes on long writes)
          f.write(0.1 * rng.standard_normal((n, args.channels), dtype=np.float32))
      write_seconds = time.perf_counter() - t0
      rss_before = _max_rss_mb()
      t0 = time.perf_counter()
      ((_, result, failure),) = detector_lib.iter_scores(detector, [path], threshold=1e30)
      seconds = time.perf_counter() - t0
      if result is None:
        raise SystemExit(failure.message)
      extra = dict(format=args.format, rate=rate, channels=args.channels, whole=args.whole,
                   file_mb=round(os.path.getsize(path) / 2**20, 1),
                   write_seconds=round(write_seconds, 1),
                   rss_before_mb=round(rss_before), peak_rss_mb=round(_max_rss_mb()))
  else:
    wave = 0.1 * rng.standard_normal(num_samples, dtype=np.float32)
    t0 = time.perf_counter()
    result = detector.score(wave)
    seconds = time.perf_counter() - t0
  audio_seconds = num_samples / cfg.sample_rate
  emit(model=args.model, audio_seconds=round(audio_seconds, 1), seconds=round(seconds, 2),
       realtime_factor=round(audio_seconds / seconds, 1),
       seconds_per_hour=round(seconds * 3600.0 / audio_seconds, 1),
       extrapolated=bool(abs(audio_seconds - 3600.0) > 1.0),
       note=("seconds_per_hour extrapolated linearly from the measured audio_seconds"
             if abs(audio_seconds - 3600.0) > 1.0 else "measured on one hour"),
       frames=int(result.frame_scores.size), chunk_frames=args.chunk_frames,
       compile_seconds=round(compile_seconds, 2), from_file=args.file, **extra,
       devices=f"{len(jax.devices())} x {jax.devices()[0].platform}")


_FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"),
            "mp3": ("MP3", "MPEG_LAYER_III")}


def _max_rss_mb() -> float:
  """The process's peak resident memory so far, in MiB (Linux: ru_maxrss in KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
  main()
