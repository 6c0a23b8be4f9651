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
