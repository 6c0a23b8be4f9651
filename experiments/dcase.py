"""DCASE Task 2 benchmark: RE / SNP / BU on every machine type, challenge metrics and files.

  python -m experiments.dcase --loss=all --preset=demo --workdir=runs/dcase_demo   # embedded set
  python -m experiments.dcase --data_root=dev_data/raw --loss=all --preset=paper \
      --workdir=runs/dcase2023 --something_else_dir=/data/dcase2018_lt5s

Without --data_root an embedded DCASE-style data set (2022+ names, source and
target domains) is generated once into a cache directory. Re-running on a
workdir resumes every machine type from its checkpoints. See
bu_jax/dcase_run.py for what is written to --workdir.
"""

import sys

from absl import app
from absl import flags

from bu_jax import audio
from bu_jax import checkpoint
from bu_jax import data
from bu_jax import dcase
from bu_jax import dcase_run
from bu_jax import losses
from bu_jax import models
from bu_jax import progress
from bu_jax import train

_DATA_ROOT = flags.DEFINE_string("data_root", None, "Folder of machine types "
                                 "(<root>/<machine_type>/{train,test}); default: the embedded "
                                 "synthetic DCASE-style set.")
_LOSS = flags.DEFINE_enum("loss", "bu", [*losses.LOSSES, "all"], "Loss to train; 'all' trains "
                          "RE, SNP and BU from the same initial parameters.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.", required=True)
_MACHINES = flags.DEFINE_list("machines", None, "Machine types (default: every folder).")
_YEAR = flags.DEFINE_enum("year", "auto", ["auto", *dcase.YEARS], "File-name grammar and "
                          "metric convention (auto: from the names).")
_PER = flags.DEFINE_enum("per", "machine_type", list(dcase_run.PER),
                         "One model per machine type (baselines) or per section.")
_PRESET = flags.DEFINE_enum("preset", "paper", sorted(dcase_run.PRESETS),
                            "paper: section 4.2.2 schedule; demo: embedded set, 2-core CPU.")
_SEED = flags.DEFINE_integer("seed", 0, "Training seed (initialization and mini-batches).")
_DATA_SEED = flags.DEFINE_integer("data_seed", 0, "Seed of the embedded data set.")
_SE_DIR = flags.DEFINE_string("something_else_dir", None,
                              "Something-else WAVs (< 5 s) for SNP and BU, eq. (8).")
_GT_DIR = flags.DEFINE_string("ground_truth_dir", None, "Organisers' ground truth "
                              "(ground_truth_data/, ground_truth_domain/) for unlabelled "
                              "evaluation-set test clips.")
_EVAL_ROOT = flags.DEFINE_string("eval_root", None, "Evaluation set (<root>/<machine_type>/"
                                 "test): scored with the trained models, files in "
                                 "<workdir>/<loss>/eval/.")
_MODEL = flags.DEFINE_enum("model", None, sorted(models.PRESETS), "Autoencoder (default: "
                           "the preset's).")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Override the preset's number of epochs.")
_STEPS = flags.DEFINE_integer("steps_per_epoch", None, "Override mini-batches per epoch.")
_DECAY = flags.DEFINE_integer("decay_start_epoch", None, "Override the epoch where decay starts.")
_LR = flags.DEFINE_float("learning_rate", None, "Override the initial learning rate.")
_MIXTURES = flags.DEFINE_integer("mixtures_per_step", None, "Mixtures per global mini-batch; "
                                 "a multiple of the device count (default one per device).")
_SIGMA = flags.DEFINE_float("sigma", None, "KDE band-width of eq. (15) (default 1/(2D)).")
_LAM = flags.DEFINE_float("lam", None, "Clipping parameter lambda of eq. (10) (default 2M).")
_CKPT_EVERY = flags.DEFINE_integer("checkpoint_every", 500, "Checkpoint interval in steps.")
_REDUCE = flags.DEFINE_enum("reduce", "max", ["max", "mean"], "Clip score: max (eq. 11) or mean.")


def main(argv):
  progress.quiet_library_logs()  # third-party INFO logs only with --verbosity
  del argv
  try:
    settings = dcase_run.Settings(
        workdir=_WORKDIR.value,
        losses=losses.LOSSES if _LOSS.value == "all" else (_LOSS.value,),
        data_root=_DATA_ROOT.value, machines=_MACHINES.value, year=_YEAR.value,
        per=_PER.value, preset=_PRESET.value, seed=_SEED.value, data_seed=_DATA_SEED.value,
        something_else_dir=_SE_DIR.value, ground_truth_dir=_GT_DIR.value,
        eval_root=_EVAL_ROOT.value, model=_MODEL.value, epochs=_EPOCHS.value,
        steps_per_epoch=_STEPS.value, decay_start_epoch=_DECAY.value, learning_rate=_LR.value,
        mixtures_per_step=_MIXTURES.value, sigma=_SIGMA.value, lam=_LAM.value,
        checkpoint_every=_CKPT_EVERY.value, reduce=_REDUCE.value)
  except ValueError as e:  # an invalid flag combination
    raise app.UsageError(str(e)) from None
  try:
    dcase_run.run(settings)
  except dcase_run.Interrupted as e:
    print(f"Interrupted: {e}", file=sys.stderr)
    sys.exit(130)
  except (data.DataError, audio.AudioError, checkpoint.CheckpointError,
          train.NonFiniteLossError) as e:  # bad input: the message names it
    print(f"Error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
