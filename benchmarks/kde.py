"""Time and peak memory of the BU KDE weights (eqs. 15-16), Gram form vs naive.

    python -m benchmarks.kde [--m 1024,2048,4096] [--d 1344] [--repeats 5]

Prints one JSON object per line: method ("gram" / "naive" / "matmul_floor"),
m, d, seconds (median), peak_mb (XLA's temporary + output buffers of the
compiled computation), and for "gram" its time relative to one M x D x M
float32 matrix product (the KDE's floor).
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import emit, median_seconds
from bu_jax import kde


def _naive_weights(x, *, sigma, eps=1e-6):
  z = kde.standardize(x)
  d = jnp.sum(jnp.square(z[:, None, :] - z[None, :, :]), axis=-1)  # M x M x D
  return 1.0 / (jnp.mean(jnp.exp(-sigma * d), axis=1) + eps)


def _peak_mb(compiled):
  mem = compiled.memory_analysis()
  if mem is None:
    return None
  return round((mem.temp_size_in_bytes + mem.output_size_in_bytes) / 2**20, 2)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--m", default="1024,2048,4096")
  parser.add_argument("--d", type=int, default=1344)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--skip_naive_above", type=int, default=4096)
  args = parser.parse_args()
  sigma = 1.0 / (2 * args.d)
  for m in (int(v) for v in args.m.split(",")):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((m, args.d)), jnp.float32)
    fns = {
        "matmul_floor": lambda a: jnp.matmul(a, a.T),
        "gram": lambda a: kde.kde_weights(a, sigma=sigma),
        "naive": lambda a: _naive_weights(a, sigma=sigma),
    }
    floor = None
    for method, fn in fns.items():
      if method == "naive" and m > args.skip_naive_above:
        continue
      compiled = jax.jit(fn).lower(x).compile()
      secs = median_seconds(lambda: compiled(x).block_until_ready(),
                            repeats=args.repeats)
      rec = dict(method=method, m=m, d=args.d, seconds=round(secs, 5),
                 peak_mb=_peak_mb(compiled))
      if method == "matmul_floor":
        floor = secs
      else:
        rec["x_matmul_floor"] = round(secs / floor, 3)
      emit(**rec)


if __name__ == "__main__":
  main()
