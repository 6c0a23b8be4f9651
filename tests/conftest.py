"""Test set-up: 8 fake CPU devices, so data-parallel code is tested without accelerators.

XLA_FLAGS must be set before JAX initializes its backend, hence here.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
