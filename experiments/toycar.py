"""Toy-car experiment (paper section 4.2): train RE / SNP / BU and evaluate.

  python -m experiments.toycar --loss=bu --workdir=runs/toycar           # paper settings
  python -m experiments.toycar --loss=all --preset=demo --workdir=runs/demo   # 2-core CPU

Without --data_dir the embedded synthetic data set is generated (once, into a
cache directory that is printed) and used. Re-running on a workdir resumes
from its checkpoints. See bu_jax/toycar.py for what is written to --workdir.
"""

from absl import flags
import jax

from bu_jax import cli
from bu_jax import progress
from bu_jax import toycar

cli.define_flags(toycar.Settings)  # every setting's flag, help and default
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() first (multi-host).")


def main(argv):
  progress.quiet_library_logs()  # third-party INFO logs only with --verbosity
  del argv
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  cli.run_training(toycar.run, toycar.Settings, interrupted=toycar.Interrupted)


if __name__ == "__main__":
  cli.run_app(main)
