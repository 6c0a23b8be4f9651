r"""Are two trainings the same, bit for bit? A check for numeric changes.

The same code, settings and seed give bit-identical models on one machine
(measured over many sessions: 9,600-step trainings of SNP and BU on the real
set, old code against new). So a change meant to leave the numbers alone (a
refactor, a faster kernel, a new check) can be verified by training with the
code before and after it and comparing the two runs step by step; and a change
that does move them shows where (the first differing step) and by how much.

  # Two toy-car workdirs (any preset, any data): the old code's run and the new one's
  python -m benchmarks.reproducibility --compare=runs/before,runs/after

  # Train the same short run twice here, in fresh processes, and compare
  python -m benchmarks.reproducibility --train [--loss=bu] [--steps=100]

Per method directory (``re``, ``snp``, ``bu``; ``pca`` has no training) found in
both workdirs one JSON line: ``steps`` (training steps logged in both),
``identical_steps`` (how many of them carry exactly the same numbers in
``metrics.jsonl``; its wall times, ``train_seconds``, are not compared), ``first_different_step`` and ``max_rel_diff_loss`` (the
largest |loss_a - loss_b| / |loss_a|), the same for the validation curve
(``validation.jsonl``), ``clips`` and ``max_abs_diff_clip_score`` over the
per-clip ``anomaly_score_*.csv`` files, and ``auc_a`` / ``auc_b`` (the mean
AUC of ``results.json``). ``training_identical`` is true when every logged
number is equal, ``bit_identical`` when every clip score is too (the same
models evaluated with other scoring settings differ only in the latter). A last line ``summary`` says whether all
methods are. Bit-identity holds on one machine and one jax version; another
machine's float rounding moves a training as another seed would.

``--train`` runs ``python -m experiments.toycar --loss=<loss> --preset=demo
--epochs=1 --steps_per_epoch=<steps> --decay_start_epoch=1`` on the embedded
set (or ``--data_dir``) twice, each in a new process and a new workdir under
``--workdir`` (default: a temporary directory, removed afterwards; one that
holds an earlier ``--train``'s runs is refused, as they would be re-evaluated,
not trained again), then compares them. Exit status 1 when they differ, so it can gate a script.
"""

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Optional

from benchmarks._common import emit
from bu_jax import fileio
from bu_jax import runner

METHOD_DIRS = ("re", "snp", "bu")
# Record fields that measure the machine, not the training: never compared.
TIMING_KEYS = (runner.TIME_KEY,)


def _read_jsonl(path: str) -> dict[int, dict]:
  """``{step: record}`` of a metrics/validation JSONL file ({} when absent); a
  damaged line raises (naming the file and line) rather than being skipped."""
  return {rec["step"]: rec for rec in fileio.read_metrics(path, strict=True)}


def _rel(a: float, b: float) -> float:
  if a == b:
    return 0.0
  if not (math.isfinite(a) and math.isfinite(b)):
    return math.inf
  return abs(a - b) / max(abs(a), 1e-30)


def compare_logs(a: dict[int, dict], b: dict[int, dict], *, key: str) -> dict:
  """Step-by-step comparison of two logs (``_read_jsonl``) on their common steps."""
  steps = sorted(set(a) & set(b))
  numbers = lambda rec: {k: v for k, v in rec.items() if k not in TIMING_KEYS}
  identical = [s for s in steps if numbers(a[s]) == numbers(b[s])]
  different = [s for s in steps if numbers(a[s]) != numbers(b[s])]
  rel = [_rel(float(a[s][key]), float(b[s][key])) for s in steps
         if key in a[s] and key in b[s]]
  return {"steps": len(steps), "identical_steps": len(identical),
          "first_different_step": different[0] if different else None,
          f"max_rel_diff_{key}": max(rel) if rel else None,
          "only_in_one": len(set(a) ^ set(b))}


def _clip_scores(method_dir: str) -> dict[tuple[str, str], float]:
  """``{(file, clip): score}`` over the method's ``anomaly_score_*.csv`` files."""
  scores = {}
  for name in sorted(os.listdir(method_dir)):
    if name.startswith("anomaly_score_") and name.endswith(".csv"):
      path = os.path.join(method_dir, name)
      with open(path, newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
          if not row:
            continue
          try:
            scores[(name, row[0])] = float(row[1])
          except (IndexError, ValueError):
            raise ValueError(f"{path}:{n}: not a 'clip,score' row: {row!r}") from None
  return scores


def _mean_auc(workdir: str, method: str) -> Optional[float]:
  path = os.path.join(workdir, "results.json")
  try:
    with open(path) as f:
      return json.load(f)[method]["auc"]["mean"]
  except (OSError, ValueError, KeyError, TypeError):
    return None


def compare_method(dir_a: str, dir_b: str, method: str) -> dict:
  """The JSON record of one method directory present in both workdirs."""
  a, b = os.path.join(dir_a, method), os.path.join(dir_b, method)
  train = compare_logs(_read_jsonl(os.path.join(a, "metrics.jsonl")),
                       _read_jsonl(os.path.join(b, "metrics.jsonl")), key="loss")
  val = compare_logs(_read_jsonl(os.path.join(a, "validation.jsonl")),
                     _read_jsonl(os.path.join(b, "validation.jsonl")), key="heldout_error")
  sa, sb = _clip_scores(a), _clip_scores(b)
  common = sorted(set(sa) & set(sb))
  clip_diff = max((abs(sa[k] - sb[k]) for k in common), default=None)
  trained_same = (train["steps"] > 0 and train["identical_steps"] == train["steps"]
                  and train["only_in_one"] == 0
                  and val["identical_steps"] == val["steps"] and val["only_in_one"] == 0)
  scored_same = len(common) == len(sa) == len(sb) and all(sa[k] == sb[k] for k in common)
  return {"method": method, **train,
          "validation_steps": val["steps"],
          "validation_identical_steps": val["identical_steps"],
          "first_different_validation_step": val["first_different_step"],
          "max_rel_diff_heldout_error": val["max_rel_diff_heldout_error"],
          "clips": len(common), "clips_only_in_one": len(set(sa) ^ set(sb)),
          "max_abs_diff_clip_score": clip_diff,
          "auc_a": _mean_auc(dir_a, method), "auc_b": _mean_auc(dir_b, method),
          "training_identical": trained_same, "bit_identical": trained_same and scored_same}


def compare_workdirs(dir_a: str, dir_b: str) -> list[dict]:
  """One record per method directory with a ``metrics.jsonl`` in both workdirs."""
  for d in (dir_a, dir_b):
    if not os.path.isdir(d):
      raise FileNotFoundError(f"--compare: {d} is not a directory")
  methods = [m for m in METHOD_DIRS
             if all(os.path.exists(os.path.join(d, m, "metrics.jsonl")) for d in (dir_a, dir_b))]
  if not methods:
    raise FileNotFoundError(
        f"--compare: no method directory ({', '.join(METHOD_DIRS)}) with a metrics.jsonl in "
        f"both {dir_a} and {dir_b}; give two toy-car workdirs")
  return [compare_method(dir_a, dir_b, m) for m in methods]


def train_command(workdir: str, *, loss: str, steps: int, seed: int,
                  data_dir: Optional[str]) -> list[str]:
  cmd = [sys.executable, "-m", "experiments.toycar", f"--loss={loss}", "--preset=demo",
         "--epochs=1", f"--steps_per_epoch={steps}", "--decay_start_epoch=1",
         f"--seed={seed}", f"--workdir={workdir}"]
  if data_dir:
    cmd.append(f"--data_dir={data_dir}")
  return cmd


def train_twice(root: str, *, loss: str, steps: int, seed: int,
                data_dir: Optional[str]) -> tuple[str, str]:
  """Trains the same run in two fresh processes; returns the two workdirs."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for name in ("a", "b"):  # toycar would find an earlier run's models trained, not train
    workdir = os.path.join(root, name)
    if os.path.isdir(workdir) and os.listdir(workdir):
      raise FileExistsError(f"--workdir={root}: {workdir} holds an earlier run, which would be "
                            "re-evaluated rather than trained again; give an empty --workdir")
  dirs = []
  for name in ("a", "b"):
    workdir = os.path.join(root, name)
    cmd = train_command(workdir, loss=loss, steps=steps, seed=seed, data_dir=data_dir)
    print(f"training {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, check=False)
    if done.returncode != 0:
      tail = "\n".join(done.stderr.strip().splitlines()[-5:])
      raise RuntimeError(f"training {name} failed (status {done.returncode}):\n{tail}")
    dirs.append(workdir)
  return dirs[0], dirs[1]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  mode = p.add_mutually_exclusive_group(required=True)
  mode.add_argument("--compare", help="two toy-car workdirs, comma-separated: A,B")
  mode.add_argument("--train", action="store_true", help="train the same short run twice")
  p.add_argument("--loss", default="bu", choices=("re", "snp", "bu", "all"))
  p.add_argument("--steps", type=int, default=100, help="training steps of --train")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--data_dir", default=None, help="toy-car data (default: the embedded set)")
  p.add_argument("--workdir", default=None, help="where --train keeps its two runs")
  args = p.parse_args(argv)
  if args.steps < 1:
    p.error(f"--steps must be >= 1, got {args.steps}")
  try:
    if args.compare is not None:
      parts = [s for s in args.compare.split(",") if s]
      if len(parts) != 2:
        p.error(f"--compare needs two workdirs, A,B; got {args.compare!r}")
      records = compare_workdirs(*parts)
    else:
      root = args.workdir or tempfile.mkdtemp(prefix="bu_jax_repro_")
      try:
        records = compare_workdirs(*train_twice(root, loss=args.loss, steps=args.steps,
                                                seed=args.seed, data_dir=args.data_dir))
      finally:
        if args.workdir is None:
          shutil.rmtree(root, ignore_errors=True)
  except (OSError, ValueError, RuntimeError) as e:
    print(f"Error: {e}", file=sys.stderr)
    return 1
  for rec in records:
    emit(**rec)
  same = all(r["bit_identical"] for r in records)
  emit(summary=True, methods=[r["method"] for r in records], bit_identical=same)
  return 0 if same else 1


if __name__ == "__main__":
  sys.exit(main())
