"""Throughput of frame-wise scoring (experiments.score) of long recordings.

    python -m benchmarks.score [--minutes 60] [--model fcn64-large] [--chunk_frames 4096]

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
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import emit
from bu_jax import artifact
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
  args = parser.parse_args()
  if args.minutes <= 0:
    parser.error("--minutes must be > 0")

  preset = models.preset(args.model)
  cfg = preset.features
  params = preset.build().init(jax.random.key(args.seed),
                               jnp.zeros((1, cfg.dim), jnp.float32))["params"]
  metadata = artifact.ModelMetadata(loss="re", preset=preset,  # untrained: any loss
                                    calibration=artifact.Calibration(threshold=1e30))
  detector = detector_lib.Detector(metadata=metadata, params=params, chunk_frames=args.chunk_frames)
  rng = np.random.default_rng(args.seed)
  num_samples = int(round(args.minutes * 60 * cfg.sample_rate))
  wave = 0.1 * rng.standard_normal(num_samples, dtype=np.float32)

  # Compile the chunk shape (the same for every chunk of a recording that is
  # at least chunk_frames long) on a recording of 1.5 chunks.
  warmup = wave[: min(num_samples, int(1.5 * args.chunk_frames * cfg.hop_length))]
  t0 = time.perf_counter()
  detector.score(warmup)
  compile_seconds = time.perf_counter() - t0

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
       compile_seconds=round(compile_seconds, 2),
       devices=f"{len(jax.devices())} x {jax.devices()[0].platform}")


if __name__ == "__main__":
  main()
