"""One process of a 2-process CPU run (see test_multiprocess.py); not a test module.

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
  from bu_jax import parallel, train  # pylint: disable=g-import-not-at-top

  mesh = parallel.data_mesh()  # 2 processes x 2 local devices
  assert jax.process_count() == 2 and mesh.devices.size == 4
  config = case.config()
  corpus = train.place_corpus(*case.host_corpus(), mesh=mesh, config=config)
  rows = []
  state = train.train(config, corpus, mesh=mesh,
                      on_step=lambda step, s, m: rows.append(m["loss"]))
  params = jax.tree.leaves(jax.device_get(state.params))
  if pid == 0:
    np.savez(out, losses=np.array(rows), *params)


if __name__ == "__main__":
  main()
