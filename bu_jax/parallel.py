"""Data parallelism over a 1-D ``'data'`` mesh: mesh, placement, guard rails.

The training step runs under ``jax.jit`` with a ``jax.shard_map`` over the
``'data'`` axis of all devices: mini-batch items (mixtures) are split across
devices, parameters, optimizer state and the training corpus are replicated.
Arrays enter the step already placed with the matching ``NamedSharding``
(``replicate`` / ``shard_batch``); shard_map's ``in_specs`` must match them.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from absl import logging
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

DATA_AXIS = "data"


def data_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh with axis ``'data'`` over ``devices`` (default: all devices)."""
  if devices is None:
    devices = jax.devices()
  devices = list(devices)
  if not devices:
    raise ValueError("data_mesh: no devices")
  return Mesh(np.asarray(devices, dtype=object), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of an array held whole on every device of ``mesh``."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding that splits an array's leading (batch) axis over ``'data'``."""
  return NamedSharding(mesh, P(DATA_AXIS))


def put(tree: Any, sharding: NamedSharding) -> Any:
  """Places host (or single-device) arrays as global arrays with ``sharding``.

  In one process this is ``jax.device_put``. With several processes
  (``jax.distributed.initialize``) every process passes its own share of the
  data, and ``jax.make_array_from_process_local_data`` assembles the global
  array: for a replicated sharding the share is the whole array (each process
  loads the same corpus); for ``batch_sharded`` it is this process's rows.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every array of ``tree`` whole on every device of ``mesh``."""
  return put(tree, replicated(mesh))


def shard_batch(tree: Any, mesh: Mesh) -> Any:
  """Splits the leading axis of every array of ``tree`` over ``'data'``.

  Raises:
    ValueError: a leading axis not divisible by the number of devices.
  """
  n = mesh.shape[DATA_AXIS]
  for leaf in jax.tree_util.tree_leaves(tree):
    size = np.shape(leaf)[0] if np.ndim(leaf) else None
    if size is None or size % n:
      raise ValueError(
          f"shard_batch: leading axis {size} of an array with shape {np.shape(leaf)} "
          f"is not divisible by the {n} devices of the 'data' mesh axis")
  return put(tree, batch_sharded(mesh))


def num_data_devices(mesh: Mesh) -> int:
  return int(mesh.shape[DATA_AXIS])


def check_divisible(global_size: int, mesh: Mesh, *,
                    flag_name: str = "--mixtures_per_step") -> int:
  """Per-device share of a global batch of ``global_size`` items.

  Raises:
    ValueError: ``global_size`` is not a positive multiple of the device
      count; the message names both numbers and ``flag_name``.
  """
  n = num_data_devices(mesh)
  if global_size <= 0 or global_size % n:
    lower = max(n, global_size - global_size % n)
    raise ValueError(
        f"{flag_name}={global_size} is not divisible by the number of devices "
        f"({n}): each device must get the same number of mixtures. Use a "
        f"multiple of {n} (e.g. {flag_name}={lower}) or run on fewer devices.")
  return global_size // n


def log_devices(mesh: Optional[Mesh] = None) -> dict[str, Any]:
  """Logs (and returns) process and device counts, for the start of a run."""
  info = {
      "backend": jax.default_backend(),
      "process_index": jax.process_index(),
      "process_count": jax.process_count(),
      "device_count": jax.device_count(),
      "local_device_count": jax.local_device_count(),
  }
  if mesh is not None:
    info["mesh_devices"] = num_data_devices(mesh)
  logging.info(
      "JAX %s backend: process %d of %d, %d devices (%d local)%s", info["backend"],
      info["process_index"], info["process_count"], info["device_count"],
      info["local_device_count"],
      "" if mesh is None else f", 'data' mesh of {info['mesh_devices']} devices")
  return info
