"""Log-mel + context features: the jitted jnp path vs librosa.

    python -m benchmarks.features [--clips 32] [--seconds 10] [--repeats 5] [--rounds 3]
        [--frames_per_block auto|none|N]

Prints one JSON object per line with impl ("jax" / "jax_on_device" /
"librosa_batched" / "librosa_loop" / "librosa_dcase_loop"), clips, seconds
(median per call), clips_per_s, and max_abs_diff against librosa_batched in
the log domain (log-mel, before stacking). The jax lines also carry the
speed-up over each librosa implementation from the same run (``x_...``).

- "jax": NumPy in, NumPy out, so it pays the host-to-device copy of the
  waveforms (about 5 ms for 32 x 10 s on CPU);
- "jax_on_device": the waveforms already on the device, as in the training
  step, where the corpus lives on the device and features are made there;
- "librosa_batched": one ``librosa.stft`` call on the (clips, N) array;
- "librosa_loop": ``librosa.stft`` per clip, reusing one mel matrix;
- "librosa_dcase_loop": ``librosa.feature.melspectrogram`` per clip, as the
  DCASE baselines do.

All produce the same (clips, T, M) log-mel array. Timing is interleaved:
each round runs every implementation ``--repeats`` times back to back.
"""

import argparse

import jax
import librosa
import numpy as np

from benchmarks._common import emit, interleaved_median_seconds
from bu_jax import features


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--clips", type=int, default=32)
  parser.add_argument("--seconds", type=float, default=10.0)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--preset", default="fcn64", choices=sorted(features.PRESETS))
  parser.add_argument("--frames_per_block", default="auto",
                      help='features.log_mel\'s frames_per_block: "auto", "none" '
                           '(one vectorized pass) or a number of frames')
  args = parser.parse_args()
  choice = args.frames_per_block.lower()
  fpb = (features.default_frames_per_block() if choice == "auto"
         else None if choice == "none" else int(choice))
  cfg = features.PRESETS[args.preset]
  rng = np.random.default_rng(0)
  n = int(args.seconds * cfg.sample_rate)
  waves = (0.1 * rng.standard_normal((args.clips, n))).astype(np.float32)
  mel = features.mel_matrix(sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels)

  def librosa_one(w):
    mag = np.abs(librosa.stft(w, n_fft=cfg.n_fft, hop_length=cfg.hop_length))
    return np.log(np.einsum("mf,...ft->...tm", mel, mag) + cfg.floor)

  jitted = jax.jit(lambda w: features.log_mel(w, config=cfg, frames_per_block=fpb))
  waves_on_device = jax.device_put(waves)
  def dcase_one(w):
    # What the DCASE 2020-2022 baselines run per file (their file_to_vector_array),
    # with amplitude (power=1) and ln instead of their power and 10 log10 so that
    # the output is comparable: librosa.feature.melspectrogram builds the
    # filterbank on every call.
    m = librosa.feature.melspectrogram(y=w, sr=cfg.sample_rate, n_fft=cfg.n_fft,
                                       hop_length=cfg.hop_length, n_mels=cfg.n_mels,
                                       power=1.0)
    return np.log(m + cfg.floor).T

  impls = {
      "jax": lambda: np.asarray(jitted(waves)),
      "jax_on_device": lambda: jitted(waves_on_device).block_until_ready(),
      "librosa_batched": lambda: librosa_one(waves),
      "librosa_loop": lambda: np.stack([librosa_one(w) for w in waves]),
      "librosa_dcase_loop": lambda: np.stack([dcase_one(w) for w in waves]),
  }
  ref = impls["librosa_batched"]()
  diffs = {name: float(np.abs(np.asarray(fn()) - ref).max())
           for name, fn in impls.items() if name != "librosa_batched"}
  secs = interleaved_median_seconds(impls, repeats=args.repeats, rounds=args.rounds)
  for name in impls:
    rec = dict(impl=name, clips=args.clips, clip_seconds=args.seconds,
               frames_per_block=fpb if name.startswith("jax") else None,
               seconds=round(secs[name], 4), clips_per_s=round(args.clips / secs[name], 1))
    if name in diffs:
      rec["max_abs_diff"] = diffs[name]
    if name.startswith("jax"):
      # Ratios from the same interleaved run: the figures the targets are about.
      rec.update({f"x_{other}": round(secs[other] / secs[name], 2)
                  for other in impls if other.startswith("librosa")})
    emit(**rec)


if __name__ == "__main__":
  main()
