"""Time and peak memory of the BU KDE weights (eqs. 15-16): the library's paths vs naive.

    python -m benchmarks.kde [--m 1024,1860,4096] [--d 440] [--repeats 5]

Prints one JSON object per line: method, m, d, seconds (median over
interleaved rounds, so a shared machine's slow spells fall on all methods
alike), peak_mb (XLA's temporary + output buffers of the compiled
computation), and for every method but the floor its time relative to one
M x D x M float32 matrix product ("x_matmul_floor"). Methods:

- ``matmul_floor``: the M x D x M product alone.
- ``kde_weights``: the library's one-device path, the sums from the upper
  triangle of a block grid (10 of 16 block products for M >= 1,024).
- ``rows``: every row probed against the whole batch, the path each device
  takes with several devices (standardization included, as above).
- ``naive``: broadcast differences (an M x M x D computation), up to
  ``--skip_naive_above`` rows.

The ``cpu`` preset's BU buffer is about 1,860 rows of D = 440.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import emit, interleaved_median_seconds
from bu_jax import kde


def _naive_weights(x, *, sigma, eps=1e-6):
  z = kde.standardize(x)
  d = jnp.sum(jnp.square(z[:, None, :] - z[None, :, :]), axis=-1)  # M x M x D
  return 1.0 / (jnp.mean(jnp.exp(-sigma * d), axis=1) + eps)


def _rows_weights(x, *, sigma, eps=1e-6):
  """The per-row path: each row's kernels against all rows (one (M, M) product)."""
  z = kde.standardize(x)
  m = x.shape[0]
  (density,) = kde._mean_kernels(z, jnp.ones((m,), jnp.bool_), jnp.arange(m),  # pylint: disable=protected-access
                                 sigmas=[sigma], probe_rows=z)
  return 1.0 / (density + eps)


def _peak_mb(compiled):
  mem = compiled.memory_analysis()
  if mem is None:
    return None
  return round((mem.temp_size_in_bytes + mem.output_size_in_bytes) / 2**20, 2)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--m", default="1024,1860,4096")
  parser.add_argument("--d", type=int, default=440)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--skip_naive_above", type=int, default=2048)
  args = parser.parse_args()
  sigma = 1.0 / (2 * args.d)
  for m in (int(v) for v in args.m.split(",")):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((m, args.d)), jnp.float32)
    fns = {
        "matmul_floor": lambda a: jnp.matmul(a, a.T, precision=jax.lax.Precision.HIGHEST),
        "kde_weights": lambda a: kde.kde_weights(a, sigma=sigma),
        "rows": lambda a: _rows_weights(a, sigma=sigma),
        "naive": lambda a: _naive_weights(a, sigma=sigma),
    }
    if m > args.skip_naive_above:
      del fns["naive"]
    compiled = {name: jax.jit(fn).lower(x).compile() for name, fn in fns.items()}
    seconds = interleaved_median_seconds(
        {name: (lambda c=c: c(x).block_until_ready()) for name, c in compiled.items()},
        repeats=args.repeats, rounds=args.rounds)
    floor = seconds["matmul_floor"]
    for method, c in compiled.items():
      rec = dict(method=method, m=m, d=args.d, seconds=round(seconds[method], 5),
                 peak_mb=_peak_mb(c))
      if method != "matmul_floor":
        rec["x_matmul_floor"] = round(seconds[method] / floor, 3)
      emit(**rec)


if __name__ == "__main__":
  main()
