"""Flags made from the settings dataclasses (bu_jax.cli): one definition per setting."""

import dataclasses
import os
import signal
import time
from typing import Optional, Sequence

from absl import flags
import pytest

from bu_jax import cli, dcase_run, detector, losses, ring, toycar

ENTRY_SETTINGS = [(toycar.Settings, {}), (dcase_run.Settings, {}),
                  (detector.ScoreSettings, {"paths": ("a.wav",)}), (ring.Settings, {})]


def _parse(cls, *argv, **values):
  fresh = flags.FlagValues()
  cli.define_flags(cls, fresh)
  fresh(["prog", *argv])
  return cli.settings_from_flags(cls, fresh, **values)


@pytest.mark.parametrize("cls, values", ENTRY_SETTINGS)
def test_flag_defaults_are_the_dataclass_defaults(cls, values):
  assert _parse(cls, "--workdir=w", **values) == cls(workdir="w", **values)


def test_flag_values_reach_the_settings():
  settings = _parse(toycar.Settings, "--workdir=w", "--loss=all", "--epochs=3",
                    "--decay_start_epoch=1", "--kde_exclude=segment", "--nostandardize_input")
  assert settings.losses == losses.LOSSES and settings.epochs == 3
  assert settings.kde_exclude == "segment" and settings.standardize_input is False
  dcase = _parse(dcase_run.Settings, "--workdir=w", "--loss=snp", "--machines=fan,pump")
  assert dcase.losses == ("snp",) and list(dcase.machines) == ["fan", "pump"]


def test_required_flag_and_choices():
  fresh = flags.FlagValues()
  cli.define_flags(toycar.Settings, fresh)
  with pytest.raises(flags.IllegalFlagValueError, match="workdir"):
    fresh(["prog"])
  with pytest.raises(flags.IllegalFlagValueError, match="reduce"):
    fresh(["prog", "--workdir=w", "--reduce=median"])


@dataclasses.dataclass(frozen=True)
class _Example:
  name: str = cli.setting(help="A name.")
  count: int = cli.setting(1, minimum=1, help="How many.")
  rate: Optional[float] = cli.setting(None, positive=True, help="A rate.")
  offset: float = cli.setting(0.0, help="Any finite offset.")
  mode: str = cli.setting("a", choices=("a", "b"), help="A mode.")
  names: Optional[Sequence[str]] = cli.setting(None, help="Names.")

  def __post_init__(self):
    cli.check(self)


@pytest.mark.parametrize("values, message", [
    (dict(count=0), "--count must be >= 1, got 0"),
    (dict(rate=0.0), "--rate must be finite and > 0, got 0.0"),
    (dict(rate=float("inf")), "--rate must be finite and > 0, got inf"),
    (dict(offset=float("nan")), "--offset must be finite, got nan"),
    (dict(mode="c"), "--mode must be one of ['a', 'b'], got 'c'"),
])
def test_check_names_the_flag_and_the_rule(values, message):
  with pytest.raises(ValueError) as info:
    _Example(name="x", **values)
  assert str(info.value) == message
  _Example(name="x", rate=None, offset=-3.0)  # None is not checked; any finite offset


def test_presets_hold_settings_and_fall_back_to_train_config():
  fields = {f.name for f in dataclasses.fields(toycar.Settings)}
  for presets in (toycar.PRESETS, dcase_run.PRESETS):
    for preset in presets.values():
      assert set(preset) <= fields
  config = toycar.Settings(workdir="w").train_config("bu")  # the paper preset
  assert (config.epochs, config.steps_per_epoch, config.segments_per_mixture) == (200, 500, 10)
  demo = toycar.Settings(workdir="w", preset="demo", lam=3.0).train_config("re")
  assert (demo.epochs, demo.learning_rate, demo.lam, demo.steps_per_call) == (12, 1e-3, 3.0, 10)
  assert dcase_run.Settings(workdir="w", preset="demo").train_config("re", 2).epochs == 4
  # The demo presets standardize the AE's input; the paper preset keeps the paper's raw AE.
  assert demo.model_preset.standardize_input
  assert dcase_run.Settings(workdir="w", preset="demo").train_config(
      "re", 2).model_preset.standardize_input
  assert not config.model_preset.standardize_input
  assert not dcase_run.Settings(workdir="w").train_config("re", 2).model_preset.standardize_input


def test_exit_on_errors_ends_in_one_line(capsys):
  class Bad(Exception):
    pass

  def fail(exc):
    def job():
      raise exc
    return job

  for job, status, line in (
      (fail(Bad("--x=1: no")), 1, "Error: --x=1: no"),
      (fail(KeyboardInterrupt()), 130, "Interrupted: stopped by SIGINT; kept"),
      (fail(KeyboardInterrupt("SIGTERM")), 130, "Interrupted: stopped by SIGTERM; kept")):
    with pytest.raises(SystemExit) as info:
      cli.exit_on_errors(job, errors=(Bad,), on_interrupt="kept")
    assert info.value.code == status
    assert capsys.readouterr().err.strip() == line
  assert cli.exit_on_errors(lambda: 7, errors=(Bad,)) == 7


@pytest.mark.usefixtures("no_gc_callbacks")
def test_sigterm_as_interrupt():
  previous = signal.getsignal(signal.SIGTERM)
  try:
    cli.sigterm_as_interrupt()
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(5)  # the handler raises before this returns
  finally:
    signal.signal(signal.SIGTERM, previous)


def test_workdir_that_is_a_url_or_a_file_is_refused(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(cli.WorkdirError, match=r"--workdir=gs://b/run: a URL.*mounted path"):
    cli.make_workdir("gs://b/run")
  assert not (tmp_path / "gs:").exists()  # no local "gs:" folder made silently
  (tmp_path / "f").write_text("x")
  with pytest.raises(cli.WorkdirError, match="is a file, not a directory"):
    cli.make_workdir(str(tmp_path / "f"))
  cli.make_workdir(str(tmp_path / "new" / "run"))
  assert (tmp_path / "new" / "run").is_dir()


def test_entry_points_drop_library_tracebacks_of_an_interrupt(caplog):
  """Ctrl-C pressed again while Orbax writes a checkpoint: Orbax logs the
  KeyboardInterrupt with a traceback (through absl); the entry points' filter
  drops that record, and only that, before their one Interrupted: line."""
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  import logging  # pylint: disable=import-outside-toplevel
  logger = logging.getLogger("absl")
  logger.addFilter(cli.DROP_INTERRUPT_TRACEBACKS)
  try:
    for error in (KeyboardInterrupt(), RuntimeError("disk on fire")):
      try:
        raise error
      except BaseException:  # pylint: disable=broad-except
        absl_logging.exception("Save Finalize thread (save_finalize) failed.")
  finally:
    logger.removeFilter(cli.DROP_INTERRUPT_TRACEBACKS)
  assert [r.exc_info[0] for r in caplog.records] == [RuntimeError]


def test_entry_points_drop_only_the_closed_event_loop_noise(capsys, monkeypatch):
  """After a failed checkpoint read TensorStore threads report "Event loop is closed",
  and Orbax's abandoned reads "Encountered error while reading array index", through
  sys.unraisablehook; the entry points' hook drops exactly those."""
  import gc  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(sys, "unraisablehook", cli._entry_point_unraisable_hook)  # pylint: disable=protected-access

  class Raises:
    def __init__(self, message):
      self.message = message

    def __del__(self):
      raise RuntimeError(self.message)

  Raises("Event loop is closed")
  gc.collect()
  assert capsys.readouterr().err == ""
  Raises("something else")
  gc.collect()
  assert "RuntimeError: something else" in capsys.readouterr().err

  # Orbax's abandoned reads of a damaged checkpoint, collected after the Error: line
  class Abandoned:
    def __init__(self, message):
      self.message = message

    def __del__(self):
      raise Exception(self.message)  # pylint: disable=broad-exception-raised

  Abandoned("Encountered error while reading array index: (slice(0, 128, 1),). See full "
            "TensorStore details: ...")
  gc.collect()
  assert capsys.readouterr().err == ""
  Abandoned("Encountered something else")
  gc.collect()
  assert "Exception: Encountered something else" in capsys.readouterr().err


_SWALLOWED_INTERRUPT = """
import gc, sys, time
from bu_jax import cli

def main(argv):
  del argv
  cli.sigterm_as_interrupt()
  raised = []
  def callback(phase, info):  # a signal arriving while a gc callback runs (JAX has one)
    if not raised:
      raised.append(phase)
      raise KeyboardInterrupt(*sys.argv[1:])
  gc.callbacks.append(callback)
  def job():
    gc.collect()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
      time.sleep(0.01)
    print("went on", flush=True)
  cli.exit_on_errors(job, errors=(), on_interrupt="kept")

cli.run_app(main)
"""


@pytest.mark.parametrize("by", ["", "SIGTERM"])
def test_an_interrupt_inside_a_gc_callback_still_stops_the_run(tmp_path, by):
  """Python cannot raise a KeyboardInterrupt out of a gc callback (JAX registers
  one), a __del__ or a weakref callback: it prints "Exception ignored" and goes
  on. The entry points' hook delivers the signal again, so the run still stops
  in one Interrupted: line."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  script = tmp_path / "swallowed.py"
  script.write_text(_SWALLOWED_INTERRUPT)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, str(script)] + ([by] if by else []), cwd=repo,
                        capture_output=True, text=True, timeout=120,
                        env={**os.environ, "PYTHONPATH": repo})
  assert proc.returncode == 130, proc.stderr[-2000:]
  assert "went on" not in proc.stdout
  assert proc.stderr.strip().splitlines() == [
      f"Interrupted: stopped by {by or 'SIGINT'}; kept"], proc.stderr[-2000:]


_INTERRUPT_THROUGH_EXEC = """
import signal, time
from bu_jax import cli

def main(argv):
  del argv
  def job():  # Ctrl-C while a class is being built with exec (dataclasses, Flax modules)
    exec("import signal, time\\nsignal.raise_signal(signal.SIGINT)\\ntime.sleep(20)")
  cli.exit_on_errors(job, errors=(), on_interrupt="kept")

cli.run_app(main)
"""


def test_an_interrupt_through_an_exec_still_exits_with_130(tmp_path):
  """A KeyboardInterrupt that left an exec of a string marks the process, run as
  python -m, to end by SIGINT (-2 to a parent) even after it was caught; the
  entry points clear the mark, so the status is the documented 130."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  (tmp_path / "through_exec.py").write_text(_INTERRUPT_THROUGH_EXEC)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-m", "through_exec"], cwd=tmp_path,
                        capture_output=True, text=True, timeout=120,
                        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{repo}"})
  assert proc.returncode == 130, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines() == ["Interrupted: stopped by SIGINT; kept"]
