r"""Benchmark of the full training step (batch synthesis + features + loss + AMSGrad).

Prints one JSON object per line and configuration:

  loss, model, m (normal frames per step, measured), m_anomalous, devices,
  steps_per_s, frames_per_s (normal + anomalous), step_ms (median),
  step_ms_min, gflop (per step), gflops (achieved), dot_gflops (float32
  jnp.dot of (frames, D) x (D, U), measured in the same run with the same XLA
  options), matmul_fraction (gflops / dot_gflops, medians; *_min: from the
  fastest calls), kde_share (BU: median time of kde_weights alone on the step's
  KDE shapes / median BU step time), bu_over_snp (BU: BU / SNP step time;
  *_min from the fastest calls), ynn_fusion, off_over_default (with
  --ynn_fusion=both), load_avg (os.getloadavg() when the line is printed).

What is measured: the jitted, state-donating ``train.make_train_step`` on a
synthetic corpus, so the batch is synthesized and featurized inside the step
as in training (no pre-featurized frames). To hit a normal-frame count M, SNP
and BU use M / 512 mixtures of 10 segments whose 768 interior frames (those
the loss trains on: FeatureConfig.interior leaves out about C + 1 at each
end, so a mixture has 768 + 12 frames with FCN40's context C = 5, 768 + 22
with FCN64's C = 10; segments of 1.246 s and 1.262 s) hold something-else clips
that overlap 256 frames (M_a = M / 2, the PERF_NOTES ratio); RE has no clip and
uses M / 512 mixtures of 512 interior frames. m can exceed M by a few frames
when a clip lands at a mixture's edge.

Timing: every configuration of a (model, M) group is compiled and warmed up,
then all are called round-robin ``--repeats`` times, so their ratios see the
same machine load; the matmul reference repeats the product until it lasts
about one step. On a shared machine prefer the ratios and the *_min values.

FLOPs: 6 x sum(in x out) over the dense layers x frames (forward and backward),
plus 2 K^2 D for BU's Gram product (K: the KDE buffer, about M), times (B+1)/(2B) on one
device, where the KDE computes the B x B block grid's upper triangle only. Feature
extraction is not counted (it is small).

XLA's CPU YNNPACK fusion (PERF_NOTES) is compared with ``--ynn_fusion=both``:
the same step compiled with and without
``compiler_options={"xla_cpu_experimental_ynn_fusion_type": ""}`` (the same as
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=``); ``default`` (XLA's own
settings, what a user gets) is the default: turning the fusion off gained nothing
consistent on jax 0.10.2 when re-measured (off / default 0.97-1.13 over two runs).

  python benchmarks/train_step.py                 # FCN40-small, FCN64-large, M = 1024, 2048
  python benchmarks/train_step.py --quick         # smoke run: FCN40-small, M = 1024
  python benchmarks/train_step.py --models=fcn64-large --ynn_fusion=both
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from bu_jax import batch as batch_lib  # pylint: disable=wrong-import-position
from bu_jax import cli  # pylint: disable=wrong-import-position
from bu_jax import kde  # pylint: disable=wrong-import-position
from bu_jax import models  # pylint: disable=wrong-import-position
from bu_jax import parallel  # pylint: disable=wrong-import-position
from bu_jax import progress  # pylint: disable=wrong-import-position
from bu_jax import train  # pylint: disable=wrong-import-position

QUICK_REPEATS, QUICK_WARMUP = 3, 1  # --quick's timed and untimed calls

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, f"Smoke run: FCN40-small, M = 1024, {QUICK_REPEATS} repeats, "
                  f"{QUICK_WARMUP} warm-up call.")
flags.DEFINE_list("models", ["fcn40-small", "fcn64-large"], "Model presets.")
flags.DEFINE_list("m", ["1024", "2048"], "Normal frames per step (multiples of 512).")
flags.DEFINE_list("losses", ["re", "snp", "bu"], "Losses.")
flags.DEFINE_enum("ynn_fusion", "default", ["default", "off", "both"],
                  "XLA CPU YNNPACK fusion: XLA's default, off, or both (compared).")
flags.DEFINE_integer("repeats", 7, "Timed calls per configuration (median), interleaved.")
flags.DEFINE_integer("warmup", 2, "Untimed calls after compilation.")
flags.DEFINE_integer("steps_per_call", 1, "Steps per call (lax.scan) of the timed function.")

FRAMES_PER_MIXTURE = 768  # SNP / BU: 512 normal + 256 anomalous
RE_FRAMES_PER_MIXTURE = 512
HOP = 256


def _options(ynn: str):
  return {"xla_cpu_experimental_ynn_fusion_type": ""} if ynn == "off" else None


def _segment_length(frames: int, segments: int = 10) -> int:
  """Smallest segment length giving ``frames`` frames for ``segments`` segments."""
  n = (frames - 1) * HOP
  return -(-n // segments)


def _frames_per_mixture(frames: int, feat) -> int:
  """Frames of a mixture whose interior (``FeatureConfig.interior``, the frames the loss
  trains on) holds ``frames``: about C + 1 more at each end."""
  total = frames
  while feat.interior_count(10 * _segment_length(total)) < frames:
    total += 1
  return total


def _clip_length(anomalous_frames: int, context: int) -> int:
  # A clip of q * hop + 2 samples overlaps exactly q + 2 STFT frames at any
  # interior start; context stacking adds C frames on each side.
  return (anomalous_frames - 2 - 2 * context) * HOP + 2


def _setup(model: str, loss: str, m: int, steps_per_call: int):
  preset = models.preset(model)
  mixtures = m // 512
  frames = _frames_per_mixture(RE_FRAMES_PER_MIXTURE if loss == "re" else FRAMES_PER_MIXTURE,
                               preset.features)
  seg_len = _segment_length(frames)
  config = train.TrainConfig(loss=loss, model=model, segment_seconds=seg_len / 16000,
                             mixtures_per_step=mixtures, steps_per_call=steps_per_call)
  assert config.segment_length == seg_len and config.frames_per_mixture == frames
  rng = np.random.default_rng(0)
  # Noise with a random spectral tilt per segment, plus a tone: varied frames.
  num_segments = 64
  white = rng.standard_normal((num_segments, seg_len))
  tilt = rng.uniform(0.0, 0.95, (num_segments, 1))
  segments = np.zeros_like(white)
  segments[:, 0] = white[:, 0]
  for i in range(1, seg_len):  # cheap AR(1) colouring (host, once)
    segments[:, i] = tilt[:, 0] * segments[:, i - 1] + white[:, i]
  t = np.arange(seg_len) / 16000
  segments += np.sin(2 * np.pi * rng.uniform(100, 2000, (num_segments, 1)) * t)
  segments = (0.1 * segments / np.std(segments, axis=1, keepdims=True)).astype(np.float32)
  clip_len = _clip_length(FRAMES_PER_MIXTURE - 512, preset.features.context)
  clips = (0.1 * rng.standard_normal((8, clip_len))).astype(np.float32)
  return config, segments, clips


def _dense_macs(preset: models.ModelPreset) -> int:
  d, h, u, z = preset.features.dim, preset.hidden_layers, preset.units, preset.bottleneck
  encoder = d * u + h * u * u + u * z
  decoder = z * u + h * u * u + u * d
  return encoder + decoder


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def _dot_call(rows: int, preset: models.ModelPreset, options, target_s: float):
  """Calls of the float32 (rows, D) x (D, U) jnp.dot lasting about ``target_s``.

  Returns the call and its FLOPs. Repeating the short product until it lasts
  about as long as a step exposes both to the same interference from other
  processes, so their ratio is fair.
  """
  d, u = preset.features.dim, preset.units
  key_a, key_b = jax.random.split(jax.random.key(1))
  a = jax.random.normal(key_a, (rows, d), jnp.float32)
  b = jax.random.normal(key_b, (d, u), jnp.float32)
  dot = jax.jit(jnp.dot, compiler_options=options)
  once = lambda: jax.block_until_ready(dot(a, b))
  once()
  count = max(1, int(round(target_s / min(_timed(once) for _ in range(5)))))

  def call():
    for _ in range(count):
      jax.block_until_ready(dot(a, b))

  return call, 2.0 * rows * d * u * count


def _kde_call(capacity: int, valid: int, dim: int, sigma: float, options):
  """A call of kde_weights alone on the BU step's KDE shapes."""
  x = jax.random.normal(jax.random.key(2), (capacity, dim), jnp.float32)
  mask = jnp.arange(capacity) < valid
  fn = jax.jit(lambda x, m: kde.kde_weights(x, sigma=sigma, mask=m), compiler_options=options)
  call = lambda: jax.block_until_ready(fn(x, mask))
  call()
  return call


class _Step:
  """A compiled, warmed-up training step of one configuration."""

  def __init__(self, model: str, loss: str, m: int, options, mesh, steps_per_call: int,
               warmup: int):
    self.config, segments, clips = _setup(model, loss, m, steps_per_call)
    self.num_devices = parallel.num_data_devices(mesh)
    self.steps_per_call = steps_per_call
    self.corpus = train.place_corpus(segments, clips, mesh=mesh, config=self.config)
    self.state = train.create_state(self.config, mesh=mesh)
    if steps_per_call > 1:
      self.fn = train.make_train_steps(self.config, mesh=mesh, num_steps=steps_per_call,
                                       compiler_options=options)
    else:
      self.fn = train.make_train_step(self.config, mesh=mesh, compiler_options=options)
    self.metrics = []
    self.compile_s = _timed(self.call)
    for _ in range(warmup):
      self.call()

  def call(self):
    self.state, metrics = self.fn(self.state, self.corpus)
    jax.block_until_ready(self.state)
    self.metrics.append(metrics)

  def summary(self) -> dict:
    metrics = jax.device_get(self.metrics)
    preset = self.config.model_preset
    frames_u = float(np.mean([np.mean(x["frames_normal"]) for x in metrics]))
    frames_a = float(np.mean([np.mean(x["frames_anomalous"]) for x in metrics]))
    flop = 6.0 * _dense_macs(preset) * (frames_u + frames_a)
    capacity = None
    if self.config.loss == "bu":
      fewest = batch_lib.min_anomalous_frames(
          self.config.mixture_length, self.corpus.min_clip_length, config=preset.features)
      capacity = self.config.mixtures_per_step * (self.config.frames_per_mixture - fewest)
      gram = 2.0 * capacity ** 2 * preset.features.dim
      if self.num_devices == 1:  # the symmetric all-pairs path (kde._all_mean_kernels)
        blocks = kde._symmetric_blocks(capacity)  # pylint: disable=protected-access
        gram *= (blocks + 1) / (2 * blocks)
      flop += gram
    finite = bool(all(np.all(np.isfinite(x["loss"])) for x in metrics))
    return {"frames_u": frames_u, "frames_a": frames_a, "flop": flop, "capacity": capacity,
            "finite": finite}


def _run_model(model: str, m: int, ynn_settings, mesh, repeats: int, warmup: int,
               steps_per_call: int, losses) -> None:
  """Compiles every (ynn, loss) step, then times them interleaved, round-robin.

  Interleaving makes the ratios (BU / SNP, step / dot, ynn on / off) robust to
  other processes' load, which changes over seconds on a shared machine.
  """
  preset = models.preset(model)
  calls, steps, dot_flops = {}, {}, {}
  for ynn in ynn_settings:
    options = _options(ynn)
    for loss in losses:
      steps[ynn, loss] = _Step(model, loss, m, options, mesh, steps_per_call, warmup)
      calls[ynn, loss] = steps[ynn, loss].call
    step_s = min(_timed(steps[ynn, loss].call) for loss in losses)
    dot_call, dot_flop = _dot_call(m + m // 2, preset, options, step_s)
    calls[ynn, "dot"] = dot_call
    dot_flops[ynn] = dot_flop
    if "bu" in losses:
      summary = steps[ynn, "bu"].summary()
      calls[ynn, "kde"] = _kde_call(summary["capacity"], int(round(summary["frames_u"])),
                                    preset.features.dim,
                                    steps[ynn, "bu"].config.loss_hyperparameters["sigma"],
                                    options)
  times = {key: [] for key in calls}
  for _ in range(repeats):
    for key, call in calls.items():
      times[key].append(_timed(call))
  seconds = {key: statistics.median(t) for key, t in times.items()}
  fastest = {key: min(t) for key, t in times.items()}
  for ynn in ynn_settings:
    dot_flop = dot_flops[ynn]
    dot_gflops = dot_flop / seconds[ynn, "dot"] / 1e9
    for loss in losses:
      r = steps[ynn, loss].summary()
      step_s = seconds[ynn, loss] / steps_per_call
      gflops = r["flop"] / step_s / 1e9
      line = {
          "loss": loss, "model": model, "m": round(r["frames_u"], 1),
          "m_anomalous": round(r["frames_a"], 1), "devices": parallel.num_data_devices(mesh),
          "steps_per_s": round(1.0 / step_s, 3),
          "frames_per_s": round((r["frames_u"] + r["frames_a"]) / step_s, 1),
          "step_ms": round(1e3 * step_s, 2),
          "step_ms_min": round(1e3 * min(times[ynn, loss]) / steps_per_call, 2),
          "gflop": round(r["flop"] / 1e9, 2), "gflops": round(gflops, 1),
          "dot_gflops": round(dot_gflops, 1),
          "matmul_fraction": round(gflops / dot_gflops, 3),
          "matmul_fraction_min": round(
              r["flop"] / (fastest[ynn, loss] / steps_per_call)
              / (dot_flop / fastest[ynn, "dot"]), 3),
          "kde_share": None, "bu_over_snp": None, "ynn_fusion": ynn,
          "steps_per_call": steps_per_call, "repeats": repeats,
          "compile_s": round(steps[ynn, loss].compile_s, 1), "finite": r["finite"],
      }
      if loss == "bu":
        line["kde_ms"] = round(1e3 * seconds[ynn, "kde"], 2)
        line["kde_share"] = round(seconds[ynn, "kde"] / step_s, 3)
        if "snp" in losses:
          line["bu_over_snp"] = round(seconds[ynn, "bu"] / seconds[ynn, "snp"], 3)
          line["bu_over_snp_min"] = round(fastest[ynn, "bu"] / fastest[ynn, "snp"], 3)
      if len(ynn_settings) > 1 and ynn == "off":
        line["off_over_default"] = round(seconds["off", loss] / seconds["default", loss], 3)
      line["load_avg"] = [round(x, 2) for x in os.getloadavg()]
      line["jax"] = jax.__version__
      print(json.dumps(line), flush=True)


def main(argv):
  del argv
  progress.quiet_library_logs()  # third-party INFO logs only with --verbosity
  model_names = ["fcn40-small"] if FLAGS.quick else FLAGS.models
  ms = [1024] if FLAGS.quick else [int(x) for x in FLAGS.m]
  repeats = QUICK_REPEATS if FLAGS.quick else FLAGS.repeats
  warmup = QUICK_WARMUP if FLAGS.quick else FLAGS.warmup
  for m in ms:
    if m % 512:
      raise app.UsageError(f"--m values must be multiples of 512, got {m}")
  ynn_settings = ["default", "off"] if FLAGS.ynn_fusion == "both" else [FLAGS.ynn_fusion]
  mesh = parallel.data_mesh()
  for model in model_names:
    for m in ms:
      _run_model(model, m, ynn_settings, mesh, repeats, warmup, FLAGS.steps_per_call,
                 FLAGS.losses)


if __name__ == "__main__":
  cli.run_app(main)  # --help: status 0, and a bad flag is one Usage error line
