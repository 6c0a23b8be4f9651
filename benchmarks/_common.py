"""Shared timing helpers for the benchmark scripts (median of repeated runs)."""

import json
import os
import statistics
import time


def median_seconds(fn, *, repeats=5, warmup=1):
  """Median wall time of ``fn()`` (which must block until its result is ready)."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def interleaved_median_seconds(fns, *, repeats=5, rounds=3, warmup=1):
  """Median wall time per call of each ``fns[name]()``, over interleaved rounds.

  Each round runs every function ``warmup`` times untimed, then ``repeats``
  times back to back (throughput, as over a data set), so slow spells of a
  shared machine fall on all of them alike and their ratios stay comparable.
  """
  times = {name: [] for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      for _ in range(warmup):
        fn()
      for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - t0)
  return {name: statistics.median(ts) for name, ts in times.items()}


def emit(**record):
  """Prints one JSON object per line, with the machine's load average attached."""
  record.setdefault("loadavg_1m", round(os.getloadavg()[0], 2))
  print(json.dumps(record), flush=True)
