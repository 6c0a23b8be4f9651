"""The README's API example runs as written and trains."""

import importlib
import pathlib
import re

from absl import flags
import numpy as np
import pytest

from bu_jax import cli

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_example_runs():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
  assert blocks, "README has a python example"
  namespace = {}
  exec(compile(blocks[0], "README.md", "exec"), namespace)  # pylint: disable=exec-used
  first = float(namespace["loss"])  # at the initial parameters (value_and_grad before the update)
  assert np.isfinite(first)
  params, opt_state = namespace["params"], namespace["opt_state"]
  for _ in range(3):  # the updated parameters lower the loss: the step trains
    params, opt_state, loss = namespace["step"](params, opt_state, namespace["x_normal"],
                                                namespace["x_anom"])
  assert float(loss) < first - 1.0


def test_readme_has_exactly_two_setup_commands():
  text = README.read_text()
  setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
  commands = re.findall(r"```bash\n(.*?)```", setup, re.S)
  assert len(commands) == 2
  assert commands[1].strip() == "pip install -e '.[test]' && python -m pytest -q -n auto"
  ci = (README.parent / ".ci" / "run").read_text()
  assert "pip install -e '.[test]'" in ci and "python -m pytest -q -n auto" in ci


@pytest.mark.parametrize("entry, settings, section", [
    ("toycar", "bu_jax.toycar:Settings", "## The toy-car experiment"),
    ("dcase", "bu_jax.dcase_run:Settings", "## DCASE benchmark"),
    ("score", "bu_jax.detector:ScoreSettings", "## Scoring new recordings"),
    ("ring", "bu_jax.ring:Settings", "## The verification experiment (section 4.1)"),
])
def test_readme_documents_every_flag(entry, settings, section):
  """Each entry point's README section names every flag of its settings dataclass
  (the single definition the flags are made from) and of the entry point itself."""
  module, name = settings.split(":")
  cls = getattr(importlib.import_module(module), name)
  fresh = flags.FlagValues()  # the flags as the entry point defines them, not registered here
  cli.define_flags(cls, fresh)
  defined = set(fresh)
  assert defined == set(cli.flag_names(cls)) and "workdir" in defined
  assert all(fresh[n].help for n in defined), "every flag has a help text"
  # Flags the entry point defines besides its settings (e.g. --distributed).
  source = (README.parent / "experiments" / f"{entry}.py").read_text()
  defined |= set(re.findall(r"flags\.DEFINE_\w+\(\s*\"(\w+)\"", source))
  text = README.read_text().split(section, 1)[1].split("\n## ", 1)[0]
  missing = sorted(n for n in defined if not re.search(rf"--{n}(?![\w])", text))
  assert not missing, f"flags not documented in the README's {section[3:]!r} section: {missing}"
