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


def emit(**record):
  """Prints one JSON object per line, with the machine's load average attached."""
  record.setdefault("loadavg_1m", round(os.getloadavg()[0], 2))
  print(json.dumps(record), flush=True)
