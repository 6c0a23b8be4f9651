"""The README's API example runs as written and trains."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_example_runs():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
  assert blocks, "README has a python example"
  namespace = {}
  exec(compile(blocks[0], "README.md", "exec"), namespace)  # pylint: disable=exec-used
  assert np.isfinite(float(namespace["loss"]))


def test_readme_has_exactly_two_setup_commands():
  text = README.read_text()
  setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
  commands = re.findall(r"```bash\n(.*?)```", setup, re.S)
  assert len(commands) == 2
  assert commands[1].strip() == "pip install -e '.[test]' && python -m pytest -q"
  ci = (README.parent / ".ci" / "run").read_text()
  assert "pip install -e '.[test]'" in ci and "python -m pytest -q" in ci


def test_readme_documents_every_toycar_flag():
  """The README's toy-car flag list is checked against the flags the entry point defines."""
  # Read from the source: importing the entry point would register its absl
  # flags in this process, where other tests import other entry points.
  source = (README.parent / "experiments" / "toycar.py").read_text()
  defined = set(re.findall(r"flags\.DEFINE_\w+\(\s*\"(\w+)\"", source))
  assert {"loss", "preset", "rare_clips", "bandwidth"} <= defined
  text = README.read_text().split("## The toy-car experiment", 1)[1].split("\n## ", 1)[0]
  missing = sorted(name for name in defined if f"--{name}" not in text
                   and not re.search(rf"`--{name}[=`]", text))
  assert not missing, f"flags not documented in the README's toy-car section: {missing}"
