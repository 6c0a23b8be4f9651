"""The training loop of a trained-model artifact: checkpoints, stop requests,
metrics.jsonl, progress.

``train_or_resume`` trains one model in its model directory (the
``bu_jax.artifact`` format), resumes it from its newest checkpoint, or finds
it finished; both experiments (``bu_jax.toycar``, ``bu_jax.dcase_run``) train
every model with it. ``check_resumable`` refuses, before anything is loaded or
written, a model directory whose model was trained with other training
settings. The loop:

- restores the newest checkpoint (``artifact.open_for_training``), or starts
  from ``init_state``; says which;
- keeps the records of ``<model_dir>/metrics.jsonl`` up to the step it resumes
  from (``fileio.truncate_metrics``) and appends one per step, each with
  ``train_seconds``: the wall time of training up to that step, summed over the
  runs that trained the kept steps (``train_seconds(model_dir)`` reads the
  model's total from it, wherever the model's folder has been);
- saves every ``checkpoint_every`` steps and after the last one;
- with a ``validate`` function (the held-out clips' mean frame score,
  ``heldout.validation_error``), records it at the start, every
  ``checkpoint_every`` steps and after the last step in
  ``<model_dir>/validation.jsonl`` (``{"step", "heldout_error"}``), kept up to
  the step it resumes from, like ``metrics.jsonl``: the validation curve that
  shows whether the schedule converged;
- on SIGTERM / Ctrl-C (``signals.GracefulStop``) saves after the current
  device call and raises ``Interrupted`` ("run the same command again to
  resume"), which the entry points turn into one line and status 130.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Collection, Optional, Sequence

import jax

from bu_jax import artifact
from bu_jax import checkpoint as checkpoint_lib
from bu_jax import data as data_lib
from bu_jax import features as features_lib
from bu_jax import fileio
from bu_jax import models as models_lib
from bu_jax import parallel
from bu_jax import progress as progress_lib
from bu_jax import signals
from bu_jax import train as train_lib

# TrainConfig fields that change only the speed, not what is trained.
SPEED_ONLY = ("steps_per_call",)
VALIDATION_FILE = "validation.jsonl"
METRICS_FILE = "metrics.jsonl"  # <model_dir>/metrics.jsonl: one record per step


TIME_KEY = "train_seconds"  # in every metrics.jsonl record: training time up to that step


def train_seconds(model_dir: str) -> Optional[float]:
  """The wall time the model of ``model_dir`` took to train, summed over resumes
  (its last ``metrics.jsonl`` record's ``train_seconds``); None when not
  recorded (no records, or a model trained before the field was written)."""
  records = fileio.read_metrics(os.path.join(model_dir, METRICS_FILE))
  value = records[-1].get(TIME_KEY) if records else None
  return float(value) if isinstance(value, (int, float)) else None


class _TimedWriter:
  """A ``MetricsWriter`` whose records also carry ``train_seconds``: ``offset``
  (the kept records' total, None when unknown: then no field is written) plus
  the time since this writer's ``started``."""

  def __init__(self, writer: fileio.MetricsWriter, *, offset: Optional[float], started: float):
    self._writer = writer
    self._offset = offset
    self._started = started

  def write(self, step: int, metrics) -> None:
    if self._offset is not None:
      metrics = {**metrics,
                 TIME_KEY: round(self._offset + time.perf_counter() - self._started, 3)}
    self._writer.write(step, metrics)


class Interrupted(Exception):
  """Training stopped on SIGTERM / Ctrl-C after saving a checkpoint."""


class SettingsMismatchError(checkpoint_lib.CheckpointError):
  """A model directory holds a model trained with other training settings."""


class _Stopped(Exception):
  """Raised from ``on_step`` once a stop is requested (after a forced save)."""


def _flag(key: str, flag_names: Collection[str]) -> str:
  """The flag of a stored setting (``train_config.seed`` -> ``--seed``)."""
  name = key.split(".", 1)[1] if "." in key else key
  if name == "train_clips":  # data.clips_fingerprint: the folder's contents, not a flag
    return "the training folder's clips"
  return f"--{name}" if name in flag_names else name


def check_resumable(model_dir: str, metadata: artifact.ModelMetadata, *,
                    flag_names: Collection[str],
                    evaluation_flags: Sequence[str] = ("reduce",)) -> None:
  """Refuses to resume or re-evaluate a model trained with other settings.

  If ``model_dir`` holds a checkpoint, the training settings stored in its
  metadata (``ModelMetadata.training_differences``: the loss and every entry
  of ``metadata``'s ``train_config`` and ``data``) must equal ``metadata``'s;
  ``SPEED_ONLY`` settings, those the loss does not read
  (``train.UNUSED_SETTINGS``: RE's model is the same whatever ``--sigma``) and
  those the checkpoint lacks (written before they were stored) are not compared.

  Args:
    model_dir: the model directory (holding ``checkpoints/``, or nothing yet).
    metadata: this run's record (``ModelMetadata.for_training``).
    flag_names: the entry point's flags: a differing setting of that name is
      shown as ``--name``.
    evaluation_flags: named in the message as settings that may differ.

  Raises:
    SettingsMismatchError: the differing settings, with both values and how
      to proceed.
    checkpoint.CheckpointError: the checkpoint's metadata cannot be read.
  """
  steps = checkpoint_lib.committed_steps(model_dir)
  if not steps:
    return
  stored = artifact.read_metadata(model_dir, step=steps[-1])
  differ = stored.training_differences(
      metadata, ignore=SPEED_ONLY + train_lib.UNUSED_SETTINGS.get(metadata.loss, ()))
  if differ:
    shown = lambda v: "unset (the default rule)" if v is None else repr(v)  # e.g. sigma: 1/(2D)
    listed = "; ".join(f"{_flag(key, flag_names)}: {shown(old)} in the checkpoint, "
                       f"{shown(new)} now" for key, old, new in differ)
    may_differ = ", ".join(f"--{name}" for name in evaluation_flags)
    gone = [old for _, old, new in differ  # folders moved since: the stored path is gone
            if isinstance(old, str) and isinstance(new, str) and os.path.isabs(old)
            and not os.path.exists(old)]
    moved = (f" {', '.join(gone)} no longer exist{'s' if len(gone) == 1 else ''}: if the data "
             "moved, a symbolic link from the stored path to the new one lets the model "
             "resume or be re-evaluated." if gone else "")
    raise SettingsMismatchError(
        f"{model_dir} holds a model (step {steps[-1]}) trained with other "
        f"settings: {listed}. Training settings cannot change on a resume: repeat the "
        f"stored values to resume or re-evaluate it (evaluation settings such as {may_differ} "
        f"may differ), or use a new --workdir to train with the new ones.{moved}")


def training_inputs(config: train_lib.TrainConfig, waves: Sequence[Any], paths: Sequence[str],
                    *, mesh, something_else: tuple[Any, Any] = (None, None)):
  """What a model of ``config`` trains on: the placed corpus of the normal
  training clips ``waves`` (``data.training_corpus``, ``train.place_corpus``)
  and, for an AE that standardizes its input, their feature statistics
  (``features.statistics``; else None), for ``initial_state``.

  Args:
    paths: the clips' names, for errors.
    something_else: ``(clips, lengths)`` of ``data.pad_clips``, or ``(None, None)``
      (no something-else sounds: RE only).
  """
  segments = data_lib.training_corpus(waves, segment_seconds=config.segment_seconds,
                                      paths=paths)
  corpus = train_lib.place_corpus(segments, *something_else, mesh=mesh, config=config)
  stats = (features_lib.statistics(waves, config=config.feature_config, names=paths)
           if config.model_preset.standardize_input else None)
  return corpus, stats


def initial_state(config: train_lib.TrainConfig, *, mesh, input_stats=None):
  """The state of a fresh start (``train.create_state``); for an AE with
  ``standardize_input``, its input statistics set to ``input_stats`` (the mean
  and standard deviation of the training features, ``features.statistics``).

  Raises:
    ValueError: the model standardizes its input but ``input_stats`` is None.
  """
  init = train_lib.create_state(config, mesh=mesh)
  if not config.model_preset.standardize_input:
    return init
  if input_stats is None:
    raise ValueError("standardize_input needs the training feature statistics")
  params = models_lib.set_input_statistics(jax.device_get(init.params), *input_stats)
  return init.replace(params=parallel.replicate(params, mesh))


def _stored_unused(model_dir: str, loss: str) -> dict:
  """The stored values of the settings ``loss`` does not read
  (``train.UNUSED_SETTINGS``) in ``model_dir``'s last checkpoint; {} without one."""
  unused = train_lib.UNUSED_SETTINGS.get(loss, ())
  steps = checkpoint_lib.committed_steps(model_dir) if unused else []
  if not steps:
    return {}
  stored = artifact.read_metadata(model_dir, step=steps[-1]).train_config or {}
  return {key: stored[key] for key in unused if key in stored}


def recorded_train_config(model_dir: str, config: train_lib.TrainConfig) -> dict:
  """``config`` as JSON values (``artifact.config_json``), with the stored values of
  the settings its loss does not read when ``model_dir`` holds a checkpoint: what the
  model was trained with, not what this run was given (an RE model evaluated in a
  ``--sigma=X`` run was not trained with sigma X)."""
  return {**artifact.config_json(config), **_stored_unused(model_dir, config.loss)}


def _with_stored_unused(model_dir: str, metadata: artifact.ModelMetadata
                        ) -> artifact.ModelMetadata:
  """``metadata`` with the stored values of the settings its loss does not read,
  when ``model_dir`` holds a checkpoint: a model resumed or re-evaluated under
  another ``--sigma`` keeps the record of how it was trained, and no warning of a
  change that changes nothing is logged."""
  stored = _stored_unused(model_dir, metadata.loss)
  if not stored:
    return metadata
  return dataclasses.replace(metadata, train_config={**metadata.train_config, **stored})


def train_or_resume(config: train_lib.TrainConfig, corpus, *, mesh, model_dir: str,
                    metadata: artifact.ModelMetadata, checkpoint_every: int, tag: str,
                    init_state: Optional[Any] = None,
                    validate: Optional[Callable[[Any], float]] = None,
                    progress: bool = True) -> tuple[Any, int]:
  """Trains (or resumes, or finds finished) the model of ``model_dir``.

  Args:
    config: the training configuration.
    corpus: the placed training corpus (``train.place_corpus``).
    mesh: the 'data' mesh.
    model_dir: where the checkpoints and ``metrics.jsonl`` go.
    metadata: stored with every checkpoint (``ModelMetadata.for_training``);
      the caller checks it against a stored one first (``check_resumable``).
    checkpoint_every: the checkpoint interval in steps.
    tag: names the model in the printed lines (``[tag] ...``).
    init_state: the state of a fresh start (default ``train.create_state``);
      a resumed run restores its own.
    validate: ``validate(params)`` -> the validation error (host parameters),
      recorded in ``validation.jsonl`` at the start, every ``checkpoint_every``
      steps and after the last step; None: no validation curve.
    progress: show a progress bar.

  Returns:
    The final state and the number of steps trained now (0: found finished).

  Raises:
    Interrupted: SIGTERM / Ctrl-C; the checkpoint of the last completed step
      is saved.
  """
  started = time.perf_counter()  # the training time includes the restore and compilation
  if init_state is None:
    init_state = train_lib.create_state(config, mesh=mesh)
  total = config.total_steps
  metadata = _with_stored_unused(model_dir, metadata)
  with artifact.open_for_training(model_dir, metadata,
                                 save_interval_steps=checkpoint_every) as ckpt, \
       signals.GracefulStop() as stop:
    state, restored = ckpt.restore_or_init(init_state)
    start = 0 if restored is None else restored
    if restored is not None:
      print(f"[{tag}] resuming from the checkpoint of step {restored} in {ckpt.directory}",
            flush=True)
    metrics_path = os.path.join(model_dir, METRICS_FILE)
    fileio.truncate_metrics(metrics_path, start)
    validation_path = os.path.join(model_dir, VALIDATION_FILE)
    fileio.truncate_metrics(validation_path, start + 1)  # the checkpoint's own record stays
    if start >= total:
      print(f"[{tag}] already trained ({total} steps)", flush=True)
      return state, 0
    # The kept steps' training time; unknown (None) when they were written without it.
    offset = train_seconds(model_dir) if start else 0.0
    recorded = [r["step"] for r in fileio.read_metrics(validation_path)]

    def record(step, params):
      if validate is None or (recorded and recorded[-1] == step):
        return
      value = validate(jax.device_get(params))
      with fileio.MetricsWriter(validation_path) as writer:
        writer.write(step, {"heldout_error": value})
      recorded.append(step)

    if start % checkpoint_every == 0 or not recorded:
      # At 0 (or a resume from a regular checkpoint, already recorded); not at a
      # stop between two checkpoints: the curve stays that of an uninterrupted run.
      record(start, state.params)

    def on_step(step, new_state, _):
      ckpt.maybe_save(step, new_state)
      if validate is not None and step // checkpoint_every > recorded[-1] // checkpoint_every:
        record(step, new_state.params)
      if stop.requested:
        ckpt.maybe_save(step, new_state, force=True)
        raise _Stopped(step)

    print(f"[{tag}] training {config.model_preset.name} for {total} steps "
          f"({config.epochs} epochs x {config.steps_per_epoch}) from step {start}", flush=True)
    bar = progress_lib.ProgressBar(total, initial=start) if progress else False
    try:
      with fileio.MetricsWriter(metrics_path) as writer:
        state = train_lib.train(config, corpus, mesh=mesh, state=state, on_step=on_step,
                                metrics_writer=_TimedWriter(writer, offset=offset,
                                                            started=started),
                                progress=bar)
    except _Stopped as e:
      ckpt.wait()
      raise Interrupted(
          f"stopped by {stop.signal_name} after step {e.args[0]}; the checkpoint is "
          f"in {ckpt.directory}: run the same command again to resume") from None
    ckpt.maybe_save(total, state, force=True)
    record(total, state.params)
  return state, total - start
