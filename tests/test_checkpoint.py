"""Tests for bu_jax.checkpoint: exact resume, SIGKILL/SIGTERM, device counts, errors.

The state is a stand-in for bu_jax.train.TrainState: a struct dataclass holding
the parameters of a small Flax MLP and an optax.amsgrad state, advanced by a
jitted, donating update whose data key is ``fold_in(seed_key, step)``.

Run as a script (``python tests/test_checkpoint.py WORKDIR``) this file is the
training loop that the SIGKILL/SIGTERM test starts in subprocesses.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bu_jax import checkpoint
from bu_jax import signals

# After a failed read of a damaged checkpoint, a TensorStore callback may reach
# Orbax's already closed asyncio loop from a background thread (harmless).
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Exception ignored in[\s\S]*Event loop is closed"
    ":pytest.PytestUnraisableExceptionWarning")

SEED = 0
_REPO = pathlib.Path(__file__).resolve().parents[1]


@struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  opt_state: optax.OptState


class MLP(nn.Module):
  width: int = 8
  layers: int = 2

  @nn.compact
  def __call__(self, x):
    for i in range(self.layers):
      x = nn.relu(nn.Dense(self.width, name=f"hidden_{i}")(x))
    return nn.Dense(3, name="out")(x)


_optimizer = optax.amsgrad(1e-2)


@functools.cache
def _init(width, layers):

  @jax.jit
  def init():
    params = MLP(width, layers).init(jax.random.key(SEED), jnp.zeros((1, 3)))["params"]
    return TrainState(jnp.zeros((), jnp.int32), params, _optimizer.init(params))

  return init


def init_state(width=8, layers=2, sharding=None) -> TrainState:
  state = _init(width, layers)()
  return state if sharding is None else jax.device_put(state, sharding)


@functools.cache
def _update(width=8, layers=2):
  model = MLP(width, layers)

  @functools.partial(jax.jit, donate_argnums=0)
  def update(state):
    key = jax.random.fold_in(jax.random.key(SEED + 1), state.step)
    x = jax.random.normal(key, (32, 3))

    def loss(params):
      return jnp.mean(jnp.square(model.apply({"params": params}, x) - jnp.sin(x)))

    grads = jax.grad(loss)(state.params)
    updates, opt_state = _optimizer.update(grads, state.opt_state, state.params)
    return TrainState(state.step + 1, optax.apply_updates(state.params, updates),
                      opt_state)

  return update


def train(state, num_steps, checkpointer=None):
  """``num_steps`` updates from ``state``; saves after each if given a checkpointer."""
  update = _update()
  for _ in range(num_steps):
    state = update(state)
    if checkpointer is not None:
      checkpointer.maybe_save(int(state.step), state)
  return state


@functools.cache
def _straight(num_steps):
  state = train(init_state(), num_steps)
  return jax.tree.map(np.asarray, state)


def assert_states_equal(actual, expected):
  jax.tree.map(lambda a, e: np.testing.assert_allclose(
      np.asarray(a), np.asarray(e), rtol=1e-6, atol=1e-7), actual, expected)
  assert jax.tree.structure(actual) == jax.tree.structure(expected)


def _files(path):
  return sorted((str(p.relative_to(path)), p.stat().st_size)
                for p in pathlib.Path(path).rglob("*") if p.is_file())


# ------------------------------------------------------------- exact resume


def test_k_steps_restart_n_minus_k_equals_n_straight(tmp_path):
  with checkpoint.Checkpointer(tmp_path, save_interval_steps=5) as ckpt:
    state, restored = ckpt.restore_or_init(init_state())
    assert restored is None
    train(state, 7, ckpt)  # Saves step 5; steps 6, 7 are lost with the "crash".
    assert ckpt.all_steps() == [5]

  with checkpoint.Checkpointer(tmp_path, save_interval_steps=5) as ckpt:
    state, restored = ckpt.restore_or_init(init_state())
    assert restored == 5 and int(state.step) == 5
    assert_states_equal(state, _straight(5))
    state = train(state, 12 - 5, ckpt)
  assert_states_equal(state, _straight(12))
  assert checkpoint.Checkpointer(tmp_path).all_steps() == [5, 10]


def test_resume_logs_the_restored_step(tmp_path, caplog):
  with checkpoint.Checkpointer(tmp_path, save_interval_steps=1, async_save=False) as ckpt:
    assert not ckpt.maybe_save(0, init_state())  # Not due at step 0.
    ckpt.maybe_save(0, init_state(), force=True)
  caplog.set_level("INFO")
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.restore_or_init(init_state())
  assert "Resuming from the checkpoint of step 0" in caplog.text


def test_interval_max_to_keep_and_force(tmp_path):
  with checkpoint.Checkpointer(tmp_path, max_to_keep=2, save_interval_steps=2,
                               async_save=False) as ckpt:
    state = init_state()
    saved = [ckpt.maybe_save(step, state) for step in range(1, 11)]
    assert saved == [False, True] * 5
    assert ckpt.all_steps() == [8, 10]
    assert ckpt.maybe_save(11, state, force=True)
    assert not ckpt.maybe_save(11, state, force=True)  # Already saved.
    assert ckpt.all_steps() == [10, 11] and ckpt.latest_step() == 11


def test_several_steps_per_call_still_save_every_interval(tmp_path):
  with checkpoint.Checkpointer(tmp_path, max_to_keep=10, save_interval_steps=5,
                               async_save=False) as ckpt:
    state = init_state()
    saved = [step for step in range(3, 31, 3) if ckpt.maybe_save(step, state)]
  assert saved == [6, 12, 15, 21, 27, 30]


# ------------------------------------------------------------------ metadata


def test_metadata_is_stored_updated_and_readable_without_the_model(tmp_path):
  config = {"preset": "fcn40-small", "loss": "bu", "features": {"n_mels": 40}}
  with checkpoint.Checkpointer(tmp_path, save_interval_steps=1, metadata=config) as ckpt:
    state = init_state()
    ckpt.maybe_save(1, state)
    ckpt.wait()
    path = next((ckpt.directory / "1" / "metadata").glob("*.json"))
    sums = json.loads(path.read_text())["_checksums"]
    ckpt.update_metadata(threshold=12.5)
    assert not ckpt.maybe_save(1, state, force=True)  # Rewrites step 1's metadata.
    # ... keeping the state's checksums: the calibrated checkpoint is still verified.
    assert json.loads(path.read_text())["_checksums"] == sums
    written = os.stat(path)
    assert not ckpt.maybe_save(1, state, force=True)  # unchanged: not written again
    assert (os.stat(path).st_ino, os.stat(path).st_mtime_ns) == (written.st_ino,
                                                                 written.st_mtime_ns)
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
  assert checkpoint.read_metadata(tmp_path) == {**config, "threshold": 12.5}
  assert checkpoint.read_metadata(tmp_path, step=1)["threshold"] == 12.5


def test_a_resume_warns_of_changed_metadata_but_not_of_a_newer_record_format(tmp_path, caplog):
  with checkpoint.Checkpointer(tmp_path, async_save=False,
                               metadata={"version": 1, "loss": "bu"}) as ckpt:
    ckpt.maybe_save(1, init_state(), force=True)
  caplog.set_level("WARNING")
  with checkpoint.Checkpointer(tmp_path, metadata={"version": 3, "loss": "bu"}) as ckpt:
    ckpt.restore_or_init(init_state())
  assert "differs" not in caplog.text
  with checkpoint.Checkpointer(tmp_path, metadata={"version": 3, "loss": "re"}) as ckpt:
    ckpt.restore_or_init(init_state())
  assert "Checkpoint metadata of step 1 differs from this run's in ['loss']" in caplog.text


def test_metadata_errors(tmp_path):
  with pytest.raises(TypeError, match="JSON"):
    checkpoint.Checkpointer(tmp_path, metadata={"bad": object()})
  with pytest.raises(checkpoint.CheckpointError, match="No checkpoint"):
    checkpoint.read_metadata(tmp_path / "empty")
  with checkpoint.Checkpointer(tmp_path / "two", save_interval_steps=1,
                               metadata={"loss": "re"}) as ckpt:
    ckpt.maybe_save(1, init_state())
    ckpt.maybe_save(2, init_state())
  shutil.rmtree(tmp_path / "two" / "checkpoints" / "2" / "metadata")  # an emptied step
  with pytest.raises(checkpoint.CheckpointError, match=r"step 2 .* cannot be read: "
                     r"FileNotFoundError: .* Other checkpoints: steps \[1\]; deleting .*2 "
                     r"resumes from the newest of them"):
    checkpoint.read_metadata(tmp_path / "two")
  shutil.rmtree(tmp_path / "two" / "checkpoints" / "1" / "metadata")  # an older one: no hint
  with pytest.raises(checkpoint.CheckpointError, match=r"FileNotFoundError: [^O]*$"):
    checkpoint.read_metadata(tmp_path / "two", step=1)


# ------------------------------------------------------ different device count


def _mesh_sharding(devices):
  mesh = jax.sharding.Mesh(np.array(devices), ("data",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def test_saved_on_4_devices_restores_on_2_and_1(tmp_path):
  devices = jax.devices()
  assert len(devices) >= 8
  on_4 = _mesh_sharding(devices[:4])
  with checkpoint.Checkpointer(tmp_path, save_interval_steps=3) as ckpt:
    train(init_state(sharding=on_4), 3, ckpt)

  for target in (_mesh_sharding(devices[7:8]),
                 jax.sharding.SingleDeviceSharding(devices[5]),
                 _mesh_sharding(devices[4:6])):
    with checkpoint.Checkpointer(tmp_path) as ckpt:
      state, restored = ckpt.restore_or_init(init_state(sharding=target))
    assert restored == 3
    for leaf in jax.tree.leaves(state):
      assert leaf.sharding == target
    assert_states_equal(state, _straight(3))
  assert_states_equal(train(state, 2), _straight(5))  # Continues on the 2-device mesh.

  with checkpoint.Checkpointer(tmp_path) as ckpt:  # The `shardings=` override.
    target = _mesh_sharding(devices[6:8])
    state, _ = ckpt.restore_or_init(init_state(), shardings=target)
  assert all(leaf.sharding == target for leaf in jax.tree.leaves(state))


# ----------------------------------------------------- incompatible / damaged


@pytest.fixture
def saved_workdir(tmp_path):
  with checkpoint.Checkpointer(tmp_path, save_interval_steps=3) as ckpt:
    train(init_state(), 3, ckpt)
  return tmp_path


def test_other_model_size_names_the_leaf_and_both_shapes(saved_workdir):
  before = _files(saved_workdir)
  with checkpoint.Checkpointer(saved_workdir, save_interval_steps=1) as ckpt:
    with pytest.raises(checkpoint.CheckpointError) as error:
      ckpt.restore_or_init(jax.eval_shape(_init(16, 2)))  # Abstract: no compile.
    message = str(error.value)
    assert "step 3" in message and str(saved_workdir) in message
    assert "'params/hidden_0/bias'" in message
    assert "checkpoint (8,), state (16,)" in message
    with pytest.raises(checkpoint.CheckpointError, match="Refusing to save"):
      ckpt.maybe_save(4, init_state())
  assert _files(saved_workdir) == before  # Nothing overwritten or removed.


def test_other_tree_structure_is_reported(saved_workdir):
  with checkpoint.Checkpointer(saved_workdir) as ckpt:
    with pytest.raises(checkpoint.CheckpointError, match="hidden_2.*different model"):
      ckpt.restore_or_init(jax.eval_shape(_init(8, 3)))
    # A smaller model: the checkpoint's extra leaves are named, not "damaged files".
    with pytest.raises(checkpoint.CheckpointMismatchError, match=r"the checkpoint has 8 "
                       r"leaf/leaves that the state lacks, first 'opt_state/0/mu/hidden_1/bias'"):
      ckpt.restore_or_init(jax.eval_shape(_init(8, 1)))
    # Another dtype (e.g. a half-precision state): named, never cast nor called damage.
    half = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, jnp.float16)
                        if s.dtype == jnp.float32 else s, jax.eval_shape(_init(8, 2)))
    with pytest.raises(checkpoint.CheckpointMismatchError, match=r"dtype mismatch at "
                       r"'params/hidden_0/bias': checkpoint float32, state float16"):
      ckpt.restore_or_init(half)


def test_read_only_restores_a_part_and_changes_nothing(saved_workdir):
  # What a training run killed mid-save leaves behind: kept for that run to clean up.
  shutil.copytree(saved_workdir / "checkpoints" / "3",
                  saved_workdir / "checkpoints" / "6.orbax-checkpoint-tmp-1")
  before = _files(saved_workdir)
  expected = _straight(3)
  with checkpoint.Checkpointer(saved_workdir, read_only=True) as ckpt:
    assert ckpt.all_steps() == [3] == checkpoint.committed_steps(saved_workdir)
    params = ckpt.restore_part(3, init_state().params, key="params")
    assert_states_equal(params, expected.params)
    with pytest.raises(checkpoint.CheckpointMismatchError,
                       match=r"'params/hidden_0/bias': checkpoint \(8,\), state \(16,\)"):
      ckpt.restore_part(3, jax.eval_shape(_init(16, 2)).params, key="params")
    with pytest.raises(checkpoint.CheckpointError, match="read-only"):
      ckpt.maybe_save(4, init_state(), force=True)
  assert _files(saved_workdir) == before


def _damage(step_dir: pathlib.Path, how: str):
  state_dir = step_dir / "state"
  data = [p for p in state_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
  assert data
  if how == "truncate data":
    for path in data:
      os.truncate(path, path.stat().st_size // 2)
  elif how == "delete data":
    for path in data:
      path.unlink()
  elif how == "delete tree metadata":
    (state_dir / "_METADATA").unlink()
  elif how == "delete state item":
    shutil.rmtree(state_dir)


@pytest.mark.parametrize("how", ["truncate data", "delete data",
                                 "delete tree metadata", "delete state item"])
def test_damaged_checkpoint_raises_and_is_kept(saved_workdir, how):
  _damage(saved_workdir / "checkpoints" / "3", how)
  before = _files(saved_workdir)
  with checkpoint.Checkpointer(saved_workdir) as ckpt:
    with pytest.raises(checkpoint.CheckpointError, match=r"step 3 in .*cannot be restored"):
      ckpt.restore_or_init(init_state())
  assert _files(saved_workdir) == before


def test_a_checkpoint_read_back_with_nan_or_inf_is_refused(tmp_path):
  """Flipped bytes may still decompress, into NaN or inf: no trained state holds them, so a
  restore, for training or read only, refuses the checkpoint and names the leaf, instead of
  a scorer that blames every recording for the model's non-finite scores."""
  state = init_state()
  kernel = state.params["hidden_1"]["kernel"]
  damaged = state.replace(params={**state.params, "hidden_1": {
      **state.params["hidden_1"], "kernel": kernel.at[0, 0].set(jnp.inf)}})
  with checkpoint.Checkpointer(tmp_path, save_interval_steps=1) as ckpt:
    ckpt.restore_or_init(init_state())
    ckpt.maybe_save(1, damaged, force=True)
  before = _files(tmp_path)
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"step 1 .*'params/hidden_1/kernel' was read back with NaN or inf"):
      ckpt.restore_or_init(init_state())
  with checkpoint.Checkpointer(tmp_path, read_only=True) as ckpt:
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"'params/hidden_1/kernel' was read back with NaN or inf"):
      ckpt.restore_part(1, init_state().params, key="params")
  assert _files(tmp_path) == before


def test_flipped_bits_are_refused_or_harmless_never_restored_silently(tmp_path):
  """A bit flipped in a saved array's file may decompress into other finite values (a
  weight -0.02018601 read as -0.02018314): the checksums saved with each checkpoint make
  every restore either an error naming the leaf or the state as saved, bit for bit."""
  state = init_state(width=64)
  with checkpoint.Checkpointer(tmp_path / "w", save_interval_steps=1) as ckpt:
    ckpt.restore_or_init(init_state(width=64))
    ckpt.maybe_save(1, state, force=True)
  data = max((p for p in (tmp_path / "w" / "checkpoints" / "1" / "state").rglob("*")
              if p.is_file()), key=lambda p: p.stat().st_size)
  size, outcomes = data.stat().st_size, []
  for k in range(12):
    copy = tmp_path / f"c{k}"
    shutil.copytree(tmp_path / "w", copy)
    target = copy / data.relative_to(tmp_path / "w")
    raw = bytearray(target.read_bytes())
    raw[size * (k + 1) // 14] ^= 0x10
    target.write_bytes(bytes(raw))
    try:
      with checkpoint.Checkpointer(copy) as ckpt:
        restored, _ = ckpt.restore_or_init(init_state(width=64))
    except checkpoint.CheckpointError as e:
      outcomes.append("checksum" if "checksum differs" in str(e) else "error")
      continue
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(restored),
                                                    jax.tree_util.tree_leaves(state)))
    assert same, f"flip {k} restored a changed state without an error"
    outcomes.append("same")
  assert "checksum" in outcomes, outcomes  # some flips decode: only the checksum sees them
  # read-only restores check too; a checkpoint without checksums (older) still restores
  meta = tmp_path / "w" / "checkpoints" / "1" / "metadata" / "metadata.json"
  stored = json.loads(meta.read_text())
  assert set(stored["_checksums"]) >= {"params/hidden_1/kernel", "step"}
  assert "_checksums" not in checkpoint.read_metadata(tmp_path / "w")
  stored["_checksums"]["params/hidden_1/kernel"] = "00000000"
  meta.write_text(json.dumps(stored))
  with checkpoint.Checkpointer(tmp_path / "w", read_only=True) as ckpt:
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"'params/hidden_1/kernel' was read back with other bytes"):
      ckpt.restore_part(1, init_state(width=64).params, key="params")
  del stored["_checksums"]
  meta.write_text(json.dumps(stored))
  with checkpoint.Checkpointer(tmp_path / "w") as ckpt:
    assert ckpt.restore_or_init(init_state(width=64))[1] == 1


def test_saving_behind_an_existing_checkpoint_is_refused(saved_workdir):
  with checkpoint.Checkpointer(saved_workdir, save_interval_steps=1) as ckpt:
    with pytest.raises(checkpoint.CheckpointError, match="restore_or_init"):
      ckpt.maybe_save(1, init_state())  # Forgot to restore: a fresh start.
  # Behind the newest of several checkpoints (not only the oldest) is refused too.
  with checkpoint.Checkpointer(saved_workdir, save_interval_steps=1, async_save=False) as ckpt:
    ckpt.maybe_save(6, init_state(), force=True)
  with checkpoint.Checkpointer(saved_workdir, save_interval_steps=1) as ckpt:
    assert ckpt.all_steps() == [3, 6]
    with pytest.raises(checkpoint.CheckpointError, match="it already holds step 6"):
      ckpt.maybe_save(4, init_state(), force=True)
    assert ckpt.all_steps() == [3, 6]


def test_bad_options_are_refused(tmp_path):
  with pytest.raises(ValueError, match="max_to_keep must be >= 1, got 0"):
    checkpoint.Checkpointer(tmp_path, max_to_keep=0)
  with pytest.raises(ValueError, match="save_interval_steps must be >= 1, got 0"):
    checkpoint.Checkpointer(tmp_path, save_interval_steps=0)
  assert not os.listdir(tmp_path)  # nothing created


# ------------------------------------- killed run (subprocesses on 4 and 2 devices)


def _start(workdir, num_devices, name, *, wait_for=None):
  """Starts ``_training_loop`` in a subprocess with ``num_devices`` CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(_REPO),
             XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}")
  log = open(workdir / f"{name}.log", "w")  # pylint: disable=consider-using-with
  args = [sys.executable, __file__, str(workdir)] + ([str(wait_for)] if wait_for else [])
  process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=_REPO)
  return process, log


def _committed_steps(workdir):
  directory = workdir / "checkpoints"
  if not directory.exists():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _wait_for(condition, process, log_path, timeout=120):
  deadline = time.monotonic() + timeout
  while not condition():
    if process.poll() is not None or time.monotonic() > deadline:
      process.kill()
      pytest.fail(f"training subprocess: rc={process.poll()}\n"
                  + log_path.read_text()[-3000:])
    time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_then_sigterm_then_resume_continues_the_same_curve(tmp_path):
  # Run A on 4 devices, killed with SIGKILL after a few checkpoints. Run B
  # imports and compiles meanwhile, and waits for the file `go` to resume.
  run_a, log_a = _start(tmp_path, 4, "a")
  run_b, log_b = _start(tmp_path, 2, "b", wait_for=tmp_path / "go")
  try:
    _wait_for(lambda: len(_committed_steps(tmp_path)) >= 2, run_a, tmp_path / "a.log")
    run_a.send_signal(signal.SIGKILL)
    assert run_a.wait(30) == -signal.SIGKILL
    last_complete = _committed_steps(tmp_path)[-1]
    # A half-written, uncommitted save (what a kill during a save leaves behind).
    half_written = tmp_path / "checkpoints" / f"{last_complete + 3}.orbax-checkpoint-tmp-1"
    shutil.copytree(tmp_path / "checkpoints" / str(last_complete), half_written)
    _damage(half_written, "truncate data")

    # Run B on 2 devices resumes from the last complete checkpoint; SIGTERM stops it.
    (tmp_path / "go").touch()
    _wait_for(lambda: _committed_steps(tmp_path)[-1] > last_complete + 3, run_b,
              tmp_path / "b.log")
    run_b.send_signal(signal.SIGTERM)
    assert run_b.wait(60) == 0, (tmp_path / "b.log").read_text()[-3000:]
    output = (tmp_path / "b.log").read_text()
    assert f"restored {last_complete}\n" in output and "Received SIGTERM" in output
    assert "incomplete checkpoint" in output and not half_written.exists()
    stopped_at = int(output.split("stopped ")[1].split()[0])
    assert _committed_steps(tmp_path)[-1] == stopped_at  # Saved on SIGTERM.
  finally:
    for process, log in ((run_a, log_a), (run_b, log_b)):
      if process.poll() is None:
        process.kill()
        process.wait()
      log.close()

  # This process (one device) resumes and finishes.
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    state, restored = ckpt.restore_or_init(init_state())
  assert restored == stopped_at
  assert_states_equal(state, _straight(stopped_at))
  assert_states_equal(train(state, 4), _straight(stopped_at + 4))


def _training_loop(workdir, wait_for=None):
  """The loop of the subprocesses: resume, train, save every 3 steps, stop on SIGTERM."""
  replicated = _mesh_sharding(jax.devices())
  initial = init_state(sharding=replicated)
  deadline = time.monotonic() + 300
  while wait_for is not None and not wait_for.exists():
    if time.monotonic() > deadline:
      sys.exit("timed out waiting for " + str(wait_for))
    time.sleep(0.02)
  with checkpoint.Checkpointer(workdir, save_interval_steps=3) as ckpt, \
       signals.GracefulStop() as stop:
    state, restored = ckpt.restore_or_init(initial)
    print(f"restored {restored}", flush=True)
    step = restored or 0
    update = _update()
    while not stop.requested and step < 20_000:  # Cap in case the test died.
      state = update(state)
      step += 1
      ckpt.maybe_save(step, state)
      time.sleep(0.01)
    ckpt.maybe_save(step, state, force=True)
  print(f"stopped {step}", flush=True)


if __name__ == "__main__":
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.INFO)
  _training_loop(*map(pathlib.Path, sys.argv[1:]))


@struct.dataclass
class _OlderState:
  """A state of an earlier version that also stored a field holding None."""
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  memory: None = None


def test_state_with_an_extra_none_entry_on_disk_restores(tmp_path):
  """A checkpoint of an earlier state version (an extra field that held None, like the
  train state's KDE memory before it became optional) still restores: only array leaves
  are compared, and they all match."""
  new = init_state()
  old = _OlderState(new.step + 3, new.params, new.opt_state, None)
  with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.maybe_save(3, old, force=True)
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    state, restored = ckpt.restore_or_init(init_state())
  assert restored == 3 and int(state.step) == 3 and isinstance(state, TrainState)
  assert_states_equal(state, TrainState(old.step, old.params, old.opt_state))
