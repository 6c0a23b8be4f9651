"""Projected wall time of the paper's full protocol (section 4.2.2) on this machine.

    python -m benchmarks.paper_projection [--losses re,snp,bu] [--steps 200] [--steps_per_call 50]
        [--compute_dtypes float32,bfloat16]

The paper trains FCN64-large for 200 epochs x 500 mini-batches (100,000 steps)
of one mixture (10 x 3-s segments, about 1,870 frames) and reports about 4
hours. This times the real jitted step (batch synthesis, features, loss and
AMSGrad all on the device, ``lax.scan`` over ``--steps_per_call`` steps per
call) on a random corpus of the paper's shapes and prints, per loss, one JSON
line with ``steps_per_s``, ``frames_per_s`` and ``projected_minutes`` for the
100,000 steps. Meant as the one prepared script to run when an accelerator is
lent (the target there: under 10 minutes per loss on one H100/H200-class GPU);
on the 2-core CPU it shows why the demo preset exists.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from benchmarks._common import emit
from bu_jax import parallel, train


def _corpus(config: train.TrainConfig, *, seed: int = 0):
  rng = np.random.default_rng(seed)
  seg = config.segment_length
  segments = (0.1 * rng.standard_normal((64, seg))).astype(np.float32)
  max_len = int(config.max_clip_seconds * config.sample_rate)
  lengths = rng.integers(max_len // 10, max_len, 32).astype(np.int32)
  clips = np.zeros((32, max_len), np.float32)
  for i, n in enumerate(lengths):
    clips[i, :n] = rng.standard_normal(n)
  return segments, clips, lengths


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--losses", default="re,snp,bu")
  parser.add_argument("--model", default="fcn64-large")
  parser.add_argument("--steps", type=int, default=200, help="timed steps per loss")
  parser.add_argument("--steps_per_call", type=int, default=50)
  parser.add_argument("--compute_dtypes", default="float32",
                      help='comma-separated TrainConfig.compute_dtype values, e.g. '
                           '"float32,bfloat16" on a GPU/TPU')
  args = parser.parse_args()
  mesh = parallel.data_mesh()
  devices = jax.devices()
  runs = [(loss, dtype) for dtype in args.compute_dtypes.split(",")
          for loss in args.losses.split(",")]
  for loss, dtype in runs:
    config = train.TrainConfig(loss=loss, model=args.model,
                               mixtures_per_step=len(devices),
                               steps_per_call=args.steps_per_call, compute_dtype=dtype)
    corpus = train.place_corpus(*_corpus(config), mesh=mesh, config=config)
    state = train.create_state(config, mesh=mesh)
    steps = train.make_train_steps(config, mesh=mesh, num_steps=args.steps_per_call)
    t0 = time.perf_counter()
    state, metrics = steps(state, corpus)  # compile + first call
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    calls = max(1, args.steps // args.steps_per_call)
    frames = 0.0
    t0 = time.perf_counter()
    for _ in range(calls):
      state, metrics = steps(state, corpus)
      frames += float(np.sum(metrics["frames_normal"]) + np.sum(metrics["frames_anomalous"]))
    elapsed = time.perf_counter() - t0
    steps_per_s = calls * args.steps_per_call / elapsed
    emit(loss=loss, model=args.model, compute_dtype=dtype, devices=len(devices),
         platform=devices[0].platform, device_kind=devices[0].device_kind, mixtures_per_step=config.mixtures_per_step,
         steps_timed=calls * args.steps_per_call, steps_per_s=round(steps_per_s, 3),
         frames_per_s=round(frames / elapsed, 1), compile_s=round(compile_s, 1),
         projected_minutes=round(config.total_steps / steps_per_s / 60, 1),
         total_steps=config.total_steps)


if __name__ == "__main__":
  main()
