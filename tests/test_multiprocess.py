"""Two local CPU processes (jax.distributed + gloo) train exactly like one process,
and the checkpoint they write together restores in one process on another mesh."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from bu_jax import checkpoint, parallel, train

import multiprocess_case as case  # tests/ is on sys.path (rootdir conftest)

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path):
  out = tmp_path / "mp.npz"
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
  procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "multiprocess_worker.py"),
                             str(pid), str(port), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for pid in (0, 1)]
  logs = [p.communicate(timeout=300)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n".join(l[-2000:] for l in logs)

  mesh = parallel.data_mesh(jax.devices()[:4])  # one process, 4 devices
  config = case.config()
  corpus = train.place_corpus(*case.host_corpus(), mesh=mesh, config=config)
  losses = []
  state = train.train(config, corpus, mesh=mesh,
                      on_step=lambda step, s, m: losses.append(m["loss"]))
  got = np.load(out)
  np.testing.assert_allclose(got["losses"], losses, rtol=1e-5)
  for i, leaf in enumerate(jax.tree.leaves(jax.device_get(state.params))):
    np.testing.assert_allclose(got[f"arr_{i}"], leaf, rtol=1e-5, atol=1e-6)

  # The 2-process checkpoint (4 devices) restores here on a 2-device mesh.
  small = parallel.data_mesh(jax.devices()[:2])
  with checkpoint.Checkpointer(tmp_path / "ckpt") as ckpt:
    restored, step = ckpt.restore_or_init(train.create_state(config, mesh=small))
  assert step == int(state.step) == config.total_steps
  for want, have in zip(jax.tree.leaves(jax.device_get(state)),
                        jax.tree.leaves(jax.device_get(restored))):
    np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6)
