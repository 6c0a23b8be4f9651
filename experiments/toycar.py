"""Toy-car experiment (paper section 4.2): train RE / SNP / BU and evaluate.

  python -m experiments.toycar --loss=bu --workdir=runs/toycar           # paper settings
  python -m experiments.toycar --loss=all --preset=demo --workdir=runs/demo   # 2-core CPU

Without --data_dir the embedded synthetic data set is generated (once, into a
cache directory that is printed) and used. Re-running on a workdir resumes
from its checkpoints. See bu_jax/toycar.py for what is written to --workdir.
"""

from absl import app
from absl import flags
import jax

from bu_jax import audio
from bu_jax import checkpoint
from bu_jax import cli
from bu_jax import data
from bu_jax import progress
from bu_jax import toycar
from bu_jax import train

cli.define_flags(toycar.Settings)  # every setting's flag, help and default
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() first (multi-host).")


def main(argv):
  progress.quiet_library_logs()  # third-party INFO logs only with --verbosity
  del argv
  cli.sigterm_as_interrupt()  # outside training; during it GracefulStop saves first
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  settings = cli.usage_error(lambda: cli.settings_from_flags(toycar.Settings))
  cli.exit_on_errors(
      lambda: toycar.run(settings), interrupted=(toycar.Interrupted,),
      errors=(data.DataError, audio.AudioError, checkpoint.CheckpointError,
              train.NonFiniteLossError, OSError),  # the message names the flag or path
      on_interrupt="the checkpoints saved so far are kept: run the same command again "
      "to resume")


if __name__ == "__main__":
  app.run(main)
