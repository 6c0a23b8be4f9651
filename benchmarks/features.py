"""Log-mel + context features: the jitted jnp path vs librosa.

    python -m benchmarks.features [--clips 32] [--seconds 10] [--repeats 5]

Prints one JSON object per line with impl ("jax" / "librosa_batched" /
"librosa_loop" / "librosa_dcase_loop"), clips, seconds (median), clips_per_s, and for "jax"
max_abs_diff against librosa in the log domain (log-mel, before stacking).
librosa's numbers include the same mel matrix product and log, so all
produce the same (clips, T, M) log-mel array. "librosa_loop" reuses one mel
matrix (the fastest per-clip loop); "librosa_dcase_loop" calls
``librosa.feature.melspectrogram`` per clip as the DCASE baselines do.
"""

import argparse

import jax
import librosa
import numpy as np

from benchmarks._common import emit, median_seconds
from bu_jax import features


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--clips", type=int, default=32)
  parser.add_argument("--seconds", type=float, default=10.0)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--preset", default="fcn64", choices=sorted(features.PRESETS))
  args = parser.parse_args()
  cfg = features.PRESETS[args.preset]
  rng = np.random.default_rng(0)
  n = int(args.seconds * cfg.sample_rate)
  waves = (0.1 * rng.standard_normal((args.clips, n))).astype(np.float32)
  mel = features.mel_matrix(sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels)

  def librosa_one(w):
    mag = np.abs(librosa.stft(w, n_fft=cfg.n_fft, hop_length=cfg.hop_length))
    return np.log(np.einsum("mf,...ft->...tm", mel, mag) + cfg.floor)

  jitted = jax.jit(lambda w: features.log_mel(w, config=cfg))
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
      "librosa_batched": lambda: librosa_one(waves),
      "librosa_loop": lambda: np.stack([librosa_one(w) for w in waves]),
      "librosa_dcase_loop": lambda: np.stack([dcase_one(w) for w in waves]),
  }
  ref = impls["librosa_batched"]()
  for name, fn in impls.items():
    secs = median_seconds(fn, repeats=args.repeats)
    rec = dict(impl=name, clips=args.clips, clip_seconds=args.seconds,
               seconds=round(secs, 4), clips_per_s=round(args.clips / secs, 1))
    if name != "librosa_batched":
      rec["max_abs_diff"] = float(np.abs(fn() - ref).max())
    emit(**rec)


if __name__ == "__main__":
  main()
