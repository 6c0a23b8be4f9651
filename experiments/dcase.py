"""DCASE Task 2 benchmark: RE / SNP / BU on every machine type, challenge metrics and files.

  python -m experiments.dcase --loss=all --preset=demo --workdir=runs/dcase_demo   # embedded set
  python -m experiments.dcase --data_root=dev_data/raw --loss=all --preset=paper \
      --workdir=runs/dcase2023 --something_else_dir=/data/dcase2018_lt5s

Without --data_root an embedded DCASE-style data set (2022+ names, source and
target domains) is generated once into a cache directory. Re-running on a
workdir resumes every machine type from its checkpoints. See
bu_jax/dcase_run.py for what is written to --workdir.
"""


from bu_jax import cli
from bu_jax import dcase_run
from bu_jax import progress

cli.define_flags(dcase_run.Settings)  # every setting's flag, help and default


def main(argv):
  progress.quiet_library_logs()  # third-party INFO logs only with --verbosity
  del argv
  cli.run_training(dcase_run.run, dcase_run.Settings, interrupted=dcase_run.Interrupted)


if __name__ == "__main__":
  cli.run_app(main)
