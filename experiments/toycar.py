"""Toy-car experiment (paper section 4.2): train RE / SNP / BU and evaluate.

  python -m experiments.toycar --loss=bu --workdir=runs/toycar           # paper settings
  python -m experiments.toycar --loss=all --preset=demo --workdir=runs/demo   # 2-core CPU

Without --data_dir the embedded synthetic data set is generated (once, into a
cache directory that is printed) and used. Re-running on a workdir resumes
from its checkpoints. See bu_jax/toycar.py for what is written to --workdir.
"""

import signal
import sys

from absl import app
from absl import flags
import jax

from bu_jax import audio
from bu_jax import checkpoint
from bu_jax import data
from bu_jax import losses
from bu_jax import models
from bu_jax import progress
from bu_jax import toycar
from bu_jax import train

_LOSS = flags.DEFINE_enum("loss", "bu", [*losses.LOSSES, "all"], "Loss to train; 'all' trains "
                          "RE, SNP and BU from the same initial parameters.")
_MODEL = flags.DEFINE_enum("model", None, sorted(models.PRESETS),
                           "Autoencoder (default: the preset's; paper: fcn64-large).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (checkpoints, results).",
                               required=True)
_PRESET = flags.DEFINE_enum("preset", "paper", sorted(toycar.PRESETS),
                            "paper: section 4.2.2 schedule (GPU/TPU); demo: < 10 min on a "
                            "2-core CPU (embedded set); cpu: real recordings on a 2-core CPU "
                            "(standardized AE input, longer schedule, contrast band-width).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data set root (DCASE 2020, DCASE 2021+ or "
                                "the paper's mixing layout); default: embedded synthetic set.")
_LAYOUT = flags.DEFINE_enum("layout", "auto", ["auto", "dcase2020", "dcase2021", "mixing"],
                            "Layout of --data_dir.")
_SE_DIR = flags.DEFINE_string("something_else_dir", None,
                              "Something-else WAVs (< 5 s) for the simulated anomalies, eq. (8).")
_ANOMALY_DIR = flags.DEFINE_string("anomaly_dir", None,
                                   "Anomaly WAVs mixed into normal test clips (mixing layout).")
_NOISE_DIR = flags.DEFINE_string("noise_dir", None, "Noise WAVs mixed at --snr_db (mixing layout).")
_SNR = flags.DEFINE_float("snr_db", 0.0, "SNR of the noise mixed into machine clips (mixing).")
_SEED = flags.DEFINE_integer("seed", 0, "Training seed (initialization and mini-batches).")
_DATA_SEED = flags.DEFINE_integer("data_seed", 0, "Seed of the synthetic set and data splits.")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Override the preset's number of epochs.")
_STEPS = flags.DEFINE_integer("steps_per_epoch", None, "Override mini-batches per epoch.")
_DECAY = flags.DEFINE_integer("decay_start_epoch", None, "Override the epoch where decay starts.")
_LR = flags.DEFINE_float("learning_rate", None, "Override the initial learning rate.")
_SEGMENTS = flags.DEFINE_integer("segments_per_mixture", None, "3-s segments per mixture (10).")
_MIXTURES = flags.DEFINE_integer("mixtures_per_step", None, "Mixtures per global mini-batch "
                                 "(paper: 1); a multiple of the device count. Default: one "
                                 "per device.")
_NUM_DEVICES = flags.DEFINE_integer("num_devices", None, "Use the first N devices (default all).")
_STEPS_PER_CALL = flags.DEFINE_integer("steps_per_call", None, "Steps scanned per device call.")
_DTYPE = flags.DEFINE_enum("compute_dtype", "float32", list(train.COMPUTE_DTYPES),
                           "The AE's matrix products in training (bfloat16: GPU/TPU); "
                           "parameters, features, scores and the KDE stay float32.")
_SIGMA = flags.DEFINE_float("sigma", None, "KDE band-width of eq. (15) (default 1/(2D)).")
_BANDWIDTH = flags.DEFINE_enum("bandwidth", None, list(train.BANDWIDTHS),
                               "BU's KDE band-width: fixed (--sigma, the paper) or contrast "
                               "(per batch, --sigma times the factor at which the batch's "
                               "densities differ most). Default: the preset's.")
_MEMORY = flags.DEFINE_integer("kde_memory", None,
                               "BU: also sum the KDE over the normal frames of this many "
                               "recent steps (256 per step; 0: the batch only, the paper). "
                               "Default: the preset's.")
_EXCLUDE = flags.DEFINE_enum("kde_exclude", None, list(train.KDE_EXCLUDE),
                              "BU: 'segment' leaves a frame's own 3-s normal segment out of "
                              "its KDE sum (only recurrence in other recordings makes it "
                              "common); 'none': eq. (15). Default: the preset's.")
_STANDARDIZE = flags.DEFINE_bool("standardize_input", None,
                                 "Standardize the AE's input with training statistics "
                                 "(stored with the model). Default: the preset's.")
_RARE = flags.DEFINE_string("rare_clips", None,
                            "CSV (file-name column and 0/1 'rare' column, e.g. realaudio-dev's "
                            "metadata.csv) or list of rare-normal test clips: adds rare-normal "
                            "metrics. Used for evaluation only.")
_REF = flags.DEFINE_integer("reference_components", 16,
                            "Components of the PCA reference detector reported next to the "
                            "AEs by --loss=all (0: none).")
_LAM = flags.DEFINE_float("lam", None, "Clipping parameter lambda of eq. (10) (default 2M).")
_EPS = flags.DEFINE_float("eps", 1e-6, "eps of the BU weight 1/(K + eps), eq. (16).")
_CKPT_EVERY = flags.DEFINE_integer("checkpoint_every", 500, "Checkpoint interval in steps.")
_REDUCE = flags.DEFINE_enum("reduce", "max", ["max", "mean"], "Clip score: max (eq. 11) or mean.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() first (multi-host).")


def _settings() -> toycar.Settings:
  return toycar.Settings(
      workdir=_WORKDIR.value,
      losses=losses.LOSSES if _LOSS.value == "all" else (_LOSS.value,),
      preset=_PRESET.value, model=_MODEL.value, data_dir=_DATA_DIR.value,
      something_else_dir=_SE_DIR.value, anomaly_dir=_ANOMALY_DIR.value,
      noise_dir=_NOISE_DIR.value, layout=_LAYOUT.value, snr_db=_SNR.value,
      data_seed=_DATA_SEED.value, seed=_SEED.value, epochs=_EPOCHS.value,
      steps_per_epoch=_STEPS.value, decay_start_epoch=_DECAY.value,
      learning_rate=_LR.value, segments_per_mixture=_SEGMENTS.value,
      mixtures_per_step=_MIXTURES.value, num_devices=_NUM_DEVICES.value,
      steps_per_call=_STEPS_PER_CALL.value, compute_dtype=_DTYPE.value,
      sigma=_SIGMA.value, bandwidth=_BANDWIDTH.value, kde_memory=_MEMORY.value,
      kde_exclude=_EXCLUDE.value, standardize_input=_STANDARDIZE.value,
      rare_clips=_RARE.value, reference_components=_REF.value, lam=_LAM.value,
      eps=_EPS.value, checkpoint_every=_CKPT_EVERY.value, reduce=_REDUCE.value)


def _interrupt(signum, frame):
  """SIGTERM outside training (loading, evaluation): stop like Ctrl-C. During
  training, signals.GracefulStop handles both and saves first."""
  del frame
  raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv):
  progress.quiet_library_logs()  # third-party INFO logs only with --verbosity
  del argv
  signal.signal(signal.SIGTERM, _interrupt)
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  try:
    settings = _settings()  # toycar.Settings checks every value once
  except ValueError as e:  # a flag out of range or an invalid combination
    print(f"Usage error: {e} (see --helpshort)", file=sys.stderr)
    sys.exit(1)
  try:
    toycar.run(settings)
  except toycar.Interrupted as e:  # SIGTERM / Ctrl-C, after saving a checkpoint
    print(f"Interrupted: {e}", file=sys.stderr)
    sys.exit(130)
  except KeyboardInterrupt as e:  # Ctrl-C / SIGTERM while loading or evaluating
    print(f"Interrupted: stopped by {e.args[0] if e.args else 'SIGINT'}; the checkpoints "
          "saved so far are kept: run the same command again to resume", file=sys.stderr)
    sys.exit(130)
  except (data.DataError, audio.AudioError, checkpoint.CheckpointError,
          train.NonFiniteLossError) as e:  # bad input: the message names it
    print(f"Error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
