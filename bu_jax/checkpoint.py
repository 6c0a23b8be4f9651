"""Checkpoints and resume: Orbax ``CheckpointManager`` around a generic train state.

A checkpoint holds the whole train state (any pytree of arrays: parameters,
optimizer state, step counter) and a small JSON metadata item (what it holds for
a trained autoencoder is decided by ``bu_jax.artifact``). They live in
``<workdir>/checkpoints/<step>/{state,metadata}``. Saves are asynchronous: the
arrays are copied off the device before ``maybe_save`` returns, so the caller
may donate the state to the next step, and the files are written in the
background. Orbax commits a checkpoint atomically (a ``*.orbax-checkpoint-tmp-*``
directory renamed to ``<step>`` when complete), so a run killed mid-save leaves
an uncommitted directory that is never restored and is removed on the next start.

Because every random key of the training step is ``fold_in(seed_key, step)``,
state + step is all that resuming needs: N steps straight equal k steps, a
restart, then N - k steps.

The training loop::

  with checkpoint.Checkpointer(workdir, metadata=config) as checkpointer, \\
       signals.GracefulStop() as stop:
    state, restored_step = checkpointer.restore_or_init(init_state)
    step = restored_step or 0
    while step < num_steps and not stop.requested:
      state, metrics = train_step(state, batch(step))
      step += 1
      checkpointer.maybe_save(step, state)
    checkpointer.maybe_save(step, state, force=True)  # final, or on SIGTERM
  # leaving the block waits for the asynchronous saves

A checkpoint that does not fit the state (another model size, a different
optimizer) or whose files are damaged raises ``CheckpointError`` naming the
directory, the step and the problem; it is never replaced by a fresh start.

``Checkpointer(workdir, read_only=True)`` reads a run that may still be
training (nothing is created, cleaned or saved) and can restore a part of the
state (``restore_part``), e.g. only the parameters for scoring.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import zlib
from typing import Any, Mapping, Sequence

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from bu_jax import fileio

CHECKPOINT_SUBDIR = "checkpoints"
_STATE = "state"
_METADATA = "metadata"
_METADATA_FILE = "metadata.json"
_TMP_MARKER = ".orbax-checkpoint-tmp"


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be used (incompatible or damaged)."""


class CheckpointMismatchError(CheckpointError):
  """A checkpoint's tree (leaf paths, shapes, dtypes) differs from the expected one."""


def checkpoint_dir(workdir: os.PathLike | str) -> epath.Path:
  """The folder holding the step directories of ``workdir``."""
  return epath.Path(workdir) / CHECKPOINT_SUBDIR


def _item_handlers(read_only: bool = False):
  # Reading, the state is a plain PyTree so that a part of it can be restored.
  return {
      _STATE: ocp.PyTreeCheckpointHandler() if read_only else ocp.StandardCheckpointHandler(),
      _METADATA: ocp.JsonCheckpointHandler(filename=_METADATA_FILE),
  }


def _check_json(metadata: Mapping[str, Any]) -> dict[str, Any]:
  metadata = dict(metadata)
  try:
    json.dumps(metadata, allow_nan=False)
  except (TypeError, ValueError) as e:
    raise TypeError(f"checkpoint metadata must be JSON-serializable: {e}") from e
  return metadata


def _key_name(key) -> str:
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def _top_level_fields(state) -> dict[str, Any]:
  """A dataclass state's fields, not converted further (Orbax stores them as keys)."""
  return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}


def _stored_none_fields(stored_tree, init_state) -> list[str]:
  """Top-level fields that a checkpoint's tree stores as None and ``init_state``
  lacks (e.g. a train state written before its KDE memory became optional):
  they hold no array, so the checkpoint still restores."""
  if not isinstance(stored_tree, Mapping) or not dataclasses.is_dataclass(init_state):
    return []
  fields = _top_level_fields(init_state)
  return [k for k, v in stored_tree.items() if v is None and k not in fields]


def _leaf_paths(tree) -> dict[str, Any]:
  """``{'params/dense_0/kernel': leaf, ...}`` in flattening order."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {"/".join(_key_name(k) for k in path): leaf for path, leaf in leaves}


def _first_non_finite(tree) -> str | None:
  """The path of the first floating-point leaf of ``tree`` holding NaN or inf, or None.

  A trained state never holds one (training stops at a non-finite loss), so one
  read back means damaged files whose compressed bytes still decoded.
  """
  for path, leaf in _leaf_paths(tree).items():
    dtype = getattr(leaf, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jnp.floating) and not bool(
        jnp.all(jnp.isfinite(leaf))):
      return path
  return None


_CHECKSUMS = "_checksums"  # in the metadata JSON: crc32 of each saved array's bytes


def _checksums(tree) -> dict[str, str] | None:
  """``{'params/dense_0/kernel': 'crc32 hex', ...}`` of every leaf's bytes (a host
  copy), or None when a leaf is an array this process does not hold whole (a
  multi-host state: each host holds its shards only)."""
  sums = {}
  for path, leaf in _leaf_paths(tree).items():
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      return None
    data = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
    sums[path] = f"{zlib.crc32(data.tobytes()):08x}"
  return sums


def _first_changed(tree, stored: Any, *, prefix: str = "") -> str | None:
  """The path of the first leaf of ``tree`` whose bytes differ from the checksum
  stored at save (``prefix`` + its path), or None (also without stored checksums:
  checkpoints written before they were, or by several hosts)."""
  if not isinstance(stored, Mapping) or not stored:
    return None
  now = _checksums(tree)
  for path, value in (now or {}).items():
    want = stored.get(prefix + path)
    if want is not None and want != value:
      return prefix + path
  return None


def _shape_dtype(leaf) -> tuple[tuple[int, ...] | None, np.dtype | None]:
  shape = getattr(leaf, "shape", None)
  dtype = getattr(leaf, "dtype", None)
  if shape is None and isinstance(leaf, (int, float, bool)):
    return (), None  # Python scalars: any dtype.
  try:
    dtype = None if dtype is None else np.dtype(dtype)
  except TypeError:  # e.g. typed PRNG keys: compared by name.
    dtype = str(dtype)
  return None if shape is None else tuple(shape), dtype


def _step_dirs(directory: epath.Path) -> list[epath.Path]:
  if not directory.exists():
    return []
  return [p for p in directory.iterdir() if p.is_dir()]


def committed_steps(workdir: os.PathLike | str) -> list[int]:
  """The committed checkpoint steps of ``workdir``, ascending; reads the folder only.

  Orbax renames a step's directory to ``<step>`` when its save is complete, so
  interrupted saves (``<step>.orbax-checkpoint-tmp-*``) are not listed.
  """
  return sorted(int(p.name) for p in _step_dirs(checkpoint_dir(workdir)) if p.name.isdigit())


class Checkpointer:
  """Periodic asynchronous checkpoints of a train state in ``<workdir>/checkpoints``.

  Args:
    workdir: run folder; checkpoints go to ``<workdir>/checkpoints``.
    max_to_keep: number of most recent checkpoints kept (older ones deleted).
    save_interval_steps: ``maybe_save`` saves when ``step`` reaches or passes a
      multiple of it since the last checkpoint (or when forced).
    async_save: write in a background thread (``maybe_save`` returns once the
      arrays are off the device). ``False`` writes before returning.
    metadata: JSON-serializable dict stored with every checkpoint; see
      ``read_metadata`` and ``update_metadata``.
    read_only: only read: no folder is created, no incomplete save removed
      (a training run may be writing next to it), and saving is refused.
  """

  def __init__(self, workdir: os.PathLike | str, *, max_to_keep: int = 3,
               save_interval_steps: int = 500, async_save: bool = True,
               metadata: Mapping[str, Any] | None = None, read_only: bool = False):
    if max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
    if save_interval_steps < 1:
      raise ValueError(f"save_interval_steps must be >= 1, got {save_interval_steps}")
    self.workdir = epath.Path(workdir)
    self.directory = checkpoint_dir(workdir)
    self.save_interval_steps = int(save_interval_steps)
    self._metadata = _check_json(metadata or {})
    self._restore_failed: str | None = None
    self._closed = False
    self._last_step = 0  # Of the newest checkpoint; decides when the next is due.
    self.read_only = read_only

    leftovers = [p.name for p in _step_dirs(self.directory) if _TMP_MARKER in p.name]
    if leftovers and not read_only:
      logging.warning(
          "%s: removing %d incomplete checkpoint(s) of an interrupted save: %s",
          self.directory, len(leftovers), ", ".join(sorted(leftovers)))
    # Orbax's own read_only option logs warnings on every use; not creating,
    # not cleaning and refusing saves here is the same for a reader.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=not read_only,
        cleanup_tmp_directories=not read_only,
        enable_async_checkpointing=async_save and not read_only,
    )
    self._manager = ocp.CheckpointManager(
        self.directory.resolve(), options=options, item_handlers=_item_handlers(read_only))
    steps = self.all_steps()
    self._last_step = steps[-1] if steps else 0
    logging.info("Checkpoints in %s: %s (keep %d, every %d steps, %s)",
                 self.directory, steps or "none", max_to_keep,
                 save_interval_steps, "async" if async_save else "sync")

  # ------------------------------------------------------------------ queries

  def latest_step(self) -> int | None:
    """The newest committed checkpoint step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Committed checkpoint steps, ascending."""
    return sorted(self._manager.all_steps())

  @property
  def metadata(self) -> dict[str, Any]:
    """A copy of the metadata written with the next checkpoint."""
    return copy.deepcopy(self._metadata)

  def update_metadata(self, **entries: Any) -> None:
    """Merges ``entries`` into the metadata written with later checkpoints.

    To attach a value computed after training (e.g. the threshold φ) to the
    final checkpoint, call this and then ``maybe_save(step, state, force=True)``
    (it rewrites the metadata of an already saved ``step``).
    """
    self._metadata = _check_json({**self._metadata, **entries})

  # ------------------------------------------------------------------ restore

  def restore_or_init(self, init_state, *, shardings=None):
    """Restores the latest checkpoint, or returns ``init_state`` if there is none.

    Args:
      init_state: a freshly initialized state (pytree of ``jax.Array``; leaves
        may also be ``jax.ShapeDtypeStruct`` with a sharding). It fixes the tree
        structure, shapes and dtypes that the checkpoint must match, and where
        the restored arrays go: each leaf is restored onto the sharding of the
        corresponding ``init_state`` leaf, so a checkpoint saved on 4 devices
        restores onto a 1- or 2-device mesh.
      shardings: optional override, either one ``jax.sharding.Sharding`` for
        every array or a pytree of shardings matching ``init_state``.

    Returns:
      ``(state, restored_step)``; ``restored_step`` is None for a fresh start.

    Raises:
      CheckpointError: the latest checkpoint does not match ``init_state`` or
        cannot be read. The checkpoint is left untouched and later saves of this
        ``Checkpointer`` are refused.
    """
    if self.read_only:
      raise ValueError("restore_or_init resumes training; a read-only Checkpointer "
                       "restores with restore_part")
    step = self.latest_step()
    if step is None:
      logging.info("No checkpoint in %s: starting from the initial state.",
                   self.directory)
      return init_state, None
    try:
      stored = self._check_compatible(step, init_state)
      target = self._restore_target(init_state, shardings)
      extra = _stored_none_fields(stored, init_state)
      try:
        if extra:  # an earlier state version with fields that held None
          target = {**_top_level_fields(target), **{k: None for k in extra}}
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(target)}))
        state = restored[_STATE]
        if extra:
          state = dataclasses.replace(
              init_state, **{k: v for k, v in state.items() if k not in extra})
      except Exception as e:  # Orbax/TensorStore raise many types.
        raise self._error(step, f"reading the arrays failed ({type(e).__name__}: "
                          f"{_first_line(e)}); files are missing or damaged") from e
      damaged = _first_non_finite(state)
      if damaged is not None:
        raise self._error(step, f"'{damaged}' was read back with NaN or inf values, which "
                          "no saved state holds; its files are damaged")
      changed = _first_changed(state, self._stored_checksums(step))
      if changed is not None:
        raise self._error(step, f"'{changed}' was read back with other bytes than were "
                          "saved (its checksum differs); its files are damaged")
    except CheckpointError as e:
      self._restore_failed = str(e)
      raise
    self._last_step = step
    logging.info("Resuming from the checkpoint of step %d in %s.", step,
                 self.directory)
    self._warn_on_metadata_change(step)
    return state, step

  def restore_part(self, step: int, target, *, key: str):
    """Restores only ``state[key]`` of checkpoint ``step`` (read-only Checkpointers).

    Args:
      step: a committed step (see ``all_steps``).
      target: the expected subtree (``jax.Array`` or ``jax.ShapeDtypeStruct``
        leaves, restored onto their shardings), e.g. freshly initialized
        parameters; the rest of the state (optimizer moments) is not read.
      key: the field of the saved state, e.g. ``"params"``.

    Raises:
      CheckpointError: the stored ``state[key]`` does not match ``target``
        (names the first differing leaf and both shapes), or cannot be read.
    """
    if not self.read_only:
      raise ValueError("restore_part needs Checkpointer(..., read_only=True)")
    self._check_compatible(step, {key: target})
    target = {key: self._restore_target(target, None)}
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**{
          _STATE: ocp.args.PyTreeRestore(
              item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
              partial_restore=True)}))
    except Exception as e:  # Orbax/TensorStore raise many types.
      raise self._error(step, f"reading '{key}' failed ({type(e).__name__}: "
                        f"{_first_line(e)}); files are missing or damaged") from e
    damaged = _first_non_finite(restored[_STATE][key])
    if damaged is not None:
      raise self._error(step, f"'{key}/{damaged}' was read back with NaN or inf values, "
                        "which no saved state holds; its files are damaged")
    changed = _first_changed(restored[_STATE][key], self._stored_checksums(step),
                             prefix=f"{key}/")
    if changed is not None:
      raise self._error(step, f"'{changed}' was read back with other bytes than were saved "
                        "(its checksum differs); its files are damaged")
    return restored[_STATE][key]

  def _stored_checksums(self, step: int) -> Any:
    """The checksums saved with ``step`` (None if none or unreadable: the metadata's
    own errors are reported by those who read it)."""
    path = self.directory / str(step) / _METADATA / _METADATA_FILE
    try:
      return json.loads(path.read_text()).get(_CHECKSUMS)
    except (OSError, ValueError, AttributeError):
      return None

  def _error(self, step: int, problem: str, *,
             kind: type[CheckpointError] = CheckpointError) -> CheckpointError:
    message = f"Checkpoint of step {step} in {self.directory} cannot be restored: {problem}."
    if self.read_only:
      return kind(message)
    hint = _delete_hint(self.directory, step, self.all_steps())
    return kind(f"{message}{hint} To start afresh, use another workdir. Nothing was "
                "changed on disk.")

  def _check_compatible(self, step: int, init_state) -> Any:
    """Compares the stored tree (paths, shapes, dtypes) with ``init_state``;
    returns the stored tree (its metadata)."""
    try:
      item_metadata = self._manager.item_metadata(step)[_STATE]
    except Exception as e:
      raise self._error(step, f"its metadata cannot be read ({type(e).__name__}: "
                        f"{_first_line(e)})") from e
    if item_metadata is None:
      raise self._error(step, "the state's metadata (_METADATA) is missing or "
                        "unreadable")
    tree = getattr(item_metadata, "tree", item_metadata)
    stored = _leaf_paths(tree)
    expected = _leaf_paths(init_state)
    if self.read_only:  # restore_part: compare the part only
      prefixes = tuple(p.split("/", 1)[0] + "/" for p in expected)
      stored = {p: leaf for p, leaf in stored.items() if p.startswith(prefixes)}
    # Differing shapes first: they say the most (another model size).
    for path, leaf in expected.items():
      if path not in stored:
        continue
      want_shape, want_dtype = _shape_dtype(leaf)
      have_shape, have_dtype = _shape_dtype(stored[path])
      if want_shape is not None and have_shape is not None and want_shape != have_shape:
        raise self._error(step, f"shape mismatch at '{path}': checkpoint "
                          f"{have_shape}, state {want_shape} (another model size?)",
                          kind=CheckpointMismatchError)
      if want_dtype is not None and have_dtype is not None and want_dtype != have_dtype:
        raise self._error(step, f"dtype mismatch at '{path}': checkpoint "
                          f"{have_dtype}, state {want_dtype}",
                          kind=CheckpointMismatchError)
    missing = [p for p in expected if p not in stored]
    if missing:
      raise self._error(step, f"the state has {len(missing)} leaf/leaves that the "
                        f"checkpoint lacks, first '{missing[0]}' (a different "
                        "model or optimizer?)", kind=CheckpointMismatchError)
    unexpected = [p for p in stored if p not in expected]
    if unexpected:
      raise self._error(step, f"the checkpoint has {len(unexpected)} leaf/leaves "
                        f"that the state lacks, first '{unexpected[0]}' (a "
                        "different model or optimizer?)", kind=CheckpointMismatchError)
    return tree

  @staticmethod
  def _restore_target(init_state, shardings):
    if shardings is None:
      shardings = jax.tree.map(lambda leaf: getattr(leaf, "sharding", None), init_state)
    elif isinstance(shardings, jax.sharding.Sharding):
      shardings = jax.tree.map(lambda _: shardings, init_state)

    def target(leaf, sharding):
      if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
      return leaf  # NumPy arrays and Python scalars restore as such.

    return jax.tree.map(target, init_state, shardings,
                        is_leaf=lambda x: x is None)

  def _warn_on_metadata_change(self, step: int) -> None:
    try:
      stored = read_metadata(self.workdir, step=step)
    except CheckpointError as e:
      logging.warning("%s", e)
      return
    # "version" is the format of the record (bu_jax.artifact), not a setting of the run.
    changed = sorted(k for k in set(stored) | set(self._metadata)
                     if k in self._metadata and k != "version"
                     and stored.get(k) != self._metadata[k])
    if changed:
      logging.warning("Checkpoint metadata of step %d differs from this run's in %s; "
                      "the run's values are written with later checkpoints.",
                      step, changed)

  # --------------------------------------------------------------------- save

  def maybe_save(self, step: int, state, *, force: bool = False) -> bool:
    """Saves ``state`` as checkpoint ``step`` if it is due (or ``force``).

    Due means that a multiple of ``save_interval_steps`` lies in (last
    checkpoint step, ``step``], so a loop that advances several steps per call
    still saves about every interval. Returns True if a save was started;
    with ``async_save`` it completes in the background (see ``wait``). A step
    that is already saved is not saved again; with ``force`` its JSON metadata
    is brought up to date (see ``update_metadata``).

    Raises:
      CheckpointError: ``restore_or_init`` failed on this workdir, or ``step``
        is older than the newest checkpoint (the run did not resume from it).
    """
    step = int(step)
    if self.read_only:
      raise CheckpointError(f"Refusing to save step {step} in {self.directory}: opened "
                            "read-only.")
    if self._restore_failed is not None:
      raise CheckpointError(f"Refusing to save step {step}: the existing "
                            f"checkpoint could not be restored. {self._restore_failed}")
    if step < self._last_step:
      raise CheckpointError(
          f"Refusing to save step {step} in {self.directory}: it already holds "
          f"step {self._last_step}. Call restore_or_init before training, or use "
          "another workdir.")
    interval = self.save_interval_steps
    if not force and step // interval <= self._last_step // interval:
      return False
    if step == self.latest_step():
      if force:
        self._rewrite_metadata(step)
      return False
    metadata = dict(self._metadata)
    sums = _checksums(state)  # verified on every restore: damaged bytes are refused
    if sums is not None:
      metadata[_CHECKSUMS] = sums
    self._manager.save(
        step,
        args=ocp.args.Composite(**{
            _STATE: ocp.args.StandardSave(state),
            _METADATA: ocp.args.JsonSave(metadata),
        }),
        force=True,  # The interval is decided above.
    )
    self._last_step = step
    logging.info("Saving checkpoint of step %d to %s.", step, self.directory)
    return True

  def _rewrite_metadata(self, step: int) -> None:
    self._manager.wait_until_finished()
    path = self.directory / str(step) / _METADATA / _METADATA_FILE
    if not path.exists():
      logging.warning("%s: no metadata file to update for step %d.", self.directory, step)
      return
    stored = json.loads(path.read_text())
    sums = stored.pop(_CHECKSUMS, None) if isinstance(stored, dict) else None
    if stored == self._metadata or jax.process_index() != 0:
      return
    # atomic: readers see the old or the new file; the state's checksums are kept
    fileio.write_json(path, {**self._metadata, **({_CHECKSUMS: sums} if sums else {})})
    logging.info("Updated the metadata of checkpoint step %d in %s.", step,
                 self.directory)

  def wait(self) -> None:
    """Blocks until the asynchronous saves are committed (raises their errors)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager. Idempotent."""
    if not self._closed:
      self._closed = True
      try:
        self._manager.wait_until_finished()
      finally:
        self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def _first_line(error: BaseException) -> str:
  """The reason an Orbax/TensorStore error gives, without the store's spec (a
  long JSON dump, or a bound-method repr, that TensorStore appends)."""
  text = str(error).strip()
  if not text:
    return repr(error)
  line = text.splitlines()[0]
  for marker in (" [tensorstore_spec=", " [source locations=", "<bound method "):
    line = line.split(marker, 1)[0]
  return line.rstrip(" ,:([")[:500]


def _delete_hint(directory: epath.Path, step: int, steps: Sequence[int]) -> str:
  """" Other checkpoints: steps [...]; deleting <dir>/<step> ..." for the newest,
  unusable ``step``, when older ``steps`` exist; else ""."""
  others = [s for s in steps if s != step]
  if not others:
    return ""
  return (f" Other checkpoints: steps {others}; deleting {directory / str(step)} resumes "
          "from the newest of them.")


def read_metadata(workdir: os.PathLike | str, *, step: int | None = None) -> dict[str, Any]:
  """The JSON metadata stored with checkpoint ``step`` (default: the latest).

  Reads one small file; needs neither the model nor the devices.

  Raises:
    CheckpointError: no checkpoint, or its metadata is missing or not JSON.
  """
  directory = checkpoint_dir(workdir)
  steps = committed_steps(workdir)
  if step is None:
    if not steps:
      raise CheckpointError(f"No checkpoint in {directory}.")
    step = steps[-1]
  path = directory / str(step) / _METADATA / _METADATA_FILE
  try:
    stored = json.loads(path.read_text())
    if isinstance(stored, dict):
      stored.pop(_CHECKSUMS, None)  # the state's, checked on restore: not metadata
    return stored
  except (OSError, ValueError) as e:
    hint = _delete_hint(directory, step, steps) if steps and step == steps[-1] else ""
    raise CheckpointError(f"Metadata of checkpoint step {step} in {directory} "
                          f"cannot be read: {type(e).__name__}: {e}.{hint}") from e
