"""Test set-up: 8 fake CPU devices, so data-parallel code is tested without accelerators.

XLA_FLAGS must be set before JAX initializes its backend, hence here.
"""

import gc
import importlib
import os

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
# One BLAS / OpenMP thread per process (read when NumPy, SciPy and scikit-learn load
# their libraries, so set before they are imported; subprocesses inherit it). The
# suite runs one pytest-xdist worker per core: with a thread per core in each worker,
# OpenBLAS's SVD (scikit-learn's PCA) and scikit-learn's OpenMP kNN spin-waited for
# a core held by the other worker, 10-20x the CPU time of one thread (a 1,500 x 440
# SVD: 1.4 s against 0.1 s on 2 busy cores).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ.setdefault(_var, "1")

# Imported now, not at the end: hypothesis's pytest plugin imports it in its end-of-run
# summary, and a pytest-xdist worker that ran no property test then took more than the
# 10 s xdist allows a worker to finish (EXIT_TIMEOUT in pytest-xdist 3.8's workermanage.py),
# was interrupted, and printed a KeyboardInterrupt.
importlib.import_module("hypothesis")

# One persistent XLA compilation cache for the whole session (a fresh folder each
# time): the end-to-end tests build the same tiny models again and again, in this
# process and in the subprocesses they start (which inherit the variables).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile  # pylint: disable=g-import-not-at-top
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="bu_jax_test_xla_cache_")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


def pytest_unconfigure(config):
  """Removes this session's compilation cache (set up above) at the end of the
  whole run: by the main process, not by a pytest-xdist worker (they share it)."""
  if hasattr(config, "workerinput"):
    return
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR", "")
  if os.path.basename(cache).startswith("bu_jax_test_xla_cache_"):
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture
def no_gc_callbacks():
  """For a test that signals its own process: the garbage collector is off while it
  runs. A signal whose handler raises (Ctrl-C, or SIGTERM made one) can land while
  Python runs a gc callback (JAX and hypothesis register some), where the exception
  cannot propagate: Python prints "Exception ignored" and the test would wait for an
  exception that never comes. (The entry points deliver such a signal again,
  ``bu_jax.cli``; a test that calls a handler directly has no such hook.)"""
  was_enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if was_enabled:
      gc.enable()


@pytest.fixture(scope="session")
def fast_compiler_options():
  """``compile_fast_options()`` once per test session."""
  return compile_fast_options()


def compile_fast_options():
  """``compiler_options`` for ``jax.jit`` (``train.train`` and the builders take them)
  that compile the tests' tiny programs 2-4x faster: XLA's backend optimization level
  0, same results up to rounding. Falls back to fewer options, then none, on an XLA
  that does not know one."""
  import jax  # pylint: disable=g-import-not-at-top
  candidates = ({"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False},
                {"xla_backend_optimization_level": 0}, {})
  for options in candidates:
    try:
      jax.jit(lambda x: x + 1, compiler_options=options)(1.0)
      return options
    except Exception:  # pylint: disable=broad-except
      continue
  return {}


@pytest.fixture(scope="module")
def fast_training(fast_compiler_options):
  """For a module whose tests train through the entry points (``toycar.run``,
  ``dcase_run.run``, ``runner``), which take no compiler options: while the
  module runs, ``train.train`` and ``train.create_state`` compile with
  ``fast_compiler_options`` unless a caller passes its own. The training step's
  compilation is most of a tiny run's time (2-3x less with these options); the
  programs are the same up to rounding, and the persistent compilation cache keys
  them apart from the default-compiled ones. Opt in with
  ``pytestmark = pytest.mark.usefixtures("fast_training")``."""
  import functools  # pylint: disable=g-import-not-at-top
  from bu_jax import train  # pylint: disable=g-import-not-at-top

  def with_options(fn):
    @functools.wraps(fn)
    def wrapped(*args, compiler_options=None, **kwargs):
      options = fast_compiler_options if compiler_options is None else compiler_options
      return fn(*args, compiler_options=options, **kwargs)
    return wrapped

  with pytest.MonkeyPatch.context() as patch:
    for name in ("train", "create_state"):
      patch.setattr(train, name, with_options(getattr(train, name)))
    yield
