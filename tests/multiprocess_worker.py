"""One process of a 2-process CPU run (see test_multiprocess.py); not a test module.

Trains the tiny case, saves an Orbax checkpoint of the final state from both
processes into ``<dir of OUT>/ckpt``, restores it into a fresh state and checks
that it equals the trained one. Process 0 writes the losses and parameters to OUT.

usage: python tests/multiprocess_worker.py PROCESS_ID PORT OUT.npz
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # pylint: disable=g-import-not-at-top

jax.config.update("jax_cpu_collectives_implementation", "gloo")


def main():
  pid, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                             process_id=pid)
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import numpy as np  # pylint: disable=g-import-not-at-top
  import multiprocess_case as case  # pylint: disable=g-import-not-at-top
  from bu_jax import checkpoint, parallel, train  # pylint: disable=g-import-not-at-top

  mesh = parallel.data_mesh()  # 2 processes x 2 local devices
  assert jax.process_count() == 2 and mesh.devices.size == 4
  config = case.config()
  corpus = train.place_corpus(*case.host_corpus(), mesh=mesh, config=config)
  rows = []
  state = train.train(config, corpus, mesh=mesh,
                      on_step=lambda step, s, m: rows.append(m["loss"]))
  ckpt_dir = os.path.join(os.path.dirname(out), "ckpt")
  with checkpoint.Checkpointer(ckpt_dir, async_save=True) as ckpt:
    assert ckpt.maybe_save(int(state.step), state, force=True)
  with checkpoint.Checkpointer(ckpt_dir) as ckpt:
    restored, step = ckpt.restore_or_init(train.create_state(config, mesh=mesh))
  assert step == int(state.step), (step, int(state.step))
  for want, got in zip(jax.tree.leaves(jax.device_get(state)),
                       jax.tree.leaves(jax.device_get(restored))):
    np.testing.assert_array_equal(got, want)
  params = jax.tree.leaves(jax.device_get(state.params))
  if pid == 0:
    np.savez(out, losses=np.array(rows), *params)


if __name__ == "__main__":
  main()
