"""pyproject.toml declares exactly the third-party packages that the code imports."""

import ast
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
OWN = {"bu_jax", "experiments", "benchmarks", "tests", "multiprocess_case", "conftest"}
# import name -> distribution name, where they differ
DISTRIBUTION = {"sklearn": "scikit-learn", "orbax": "orbax-checkpoint", "absl": "absl-py",
                "yaml": "pyyaml", "PIL": "pillow"}


def _imported(*folders: str) -> set[str]:
  names = set()
  for folder in folders:
    for path in (ROOT / folder).rglob("*.py"):
      for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
          names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
          names.add(node.module.split(".")[0])
  third_party = names - OWN - set(sys.stdlib_module_names)
  return {DISTRIBUTION.get(name, name).lower() for name in third_party}


def _names(requirements: list[str]) -> set[str]:
  return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower().replace("_", "-")
          for r in requirements}


def _project() -> dict:
  return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_runtime_dependencies_are_exactly_the_imports_of_the_package():
  declared = _names(_project()["dependencies"])
  assert declared == _imported("bu_jax", "experiments")


def test_test_extra_is_exactly_what_tests_import_beyond_the_runtime():
  runtime = _names(_project()["dependencies"])
  extra = _names(_project()["optional-dependencies"]["test"])
  plugins = {"pytest-xdist"}  # used by the README's test command (-n auto), not imported
  assert extra == (_imported("tests") - runtime) | plugins
  assert _imported("benchmarks") <= runtime | extra
