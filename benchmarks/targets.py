"""Issue #10's targets, checked on finished real-recording benchmarks.

    python -m benchmarks.targets --draws=default=W1,rf15=W2,... [--preset=cpu] \
        [--demo=D1,D2,D3]

Each ``name=W`` is a finished ``benchmarks.realaudio`` workdir (``W/<preset>/seed<N>/
results.json`` for every seed it holds); ``--demo`` takes finished README main-job
workdirs (``D/results.json``, one per seed). Nothing is trained or re-evaluated.

Per draw, the seeds' results are averaged per test folder (the issue asks for "each
of the three ANRs, mean over 3 seeds") and over the folders (the README's tables),
and each target is checked with its margin (positive = met):

* ``auc``: BU's AUC minus the best of RE's, SNP's and the PCA reference's;
* ``vs_rare``: BU's AUC against rare-normal clips minus (RE's + 0.15);
* ``rare_vs_frequent``: 0.85 minus BU's rare-vs-frequent AUC;
* ``vs_frequent``: BU's AUC against frequent-normal clips minus (RE's - 0.02);
* ``demo`` (with ``--demo``): BU's mean AUC over the demo seeds minus 0.91.

Besides the targets, one diagnostic per (draw, condition), ``room_at_uniform``: BU's AUC
against frequent-normal clips minus (RE's AUC against rare-normal clips + 0.15). If BU's
rare-normal clips scored like its frequent-normal ones (rare vs frequent 0.5, the aim of
the paper's uniformization), its AUC against rare normals would be about its AUC against
frequent ones, so this is about the ``vs_rare`` margin that full uniformization alone
would give; where it is negative, the target asks for rare normals to score *below*
frequent ones, or for better detection among frequent normals.

And per draw the false alarms a user sees, ``fpr_at_phi``: each method's false-positive
rate at its own threshold phi on the rare-normal and on the frequent-normal test clips
(every distinct normal clip once; mean over the seeds), with BU's minus RE's. AUCs rank
clips; these count the rare normals a deployed detector flags.

Prints one JSON line per (draw, condition, target) with the margin, a Markdown table
of the margins per draw (folder mean, and how many folders meet the target), and one
line per target counting the draws that meet it. The rare-normal labels entered the
results as evaluation only; no setting is chosen here.
"""

import argparse
import glob
import os
import re

import numpy as np

from benchmarks._common import emit
from benchmarks.realaudio import METHODS, method_rows, read_results
from bu_jax import cli
from bu_jax import data as data_lib

TARGETS = ("auc", "vs_rare", "rare_vs_frequent", "vs_frequent")
RARE_GAIN = 0.15  # BU's AUC vs rare normals at least RE's + this
MAX_RARE_VS_FREQUENT = 0.85
FREQUENT_SLACK = 0.02  # BU's AUC vs frequent normals at most this below RE's
DEMO_MIN_AUC = 0.91


def draw_means(results: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
  """Per method, condition (``"mean"`` included) and metric, the mean over the
  seeds' ``results.json`` dicts (``None`` where a seed lacks the value)."""
  out: dict[str, dict[str, dict[str, float]]] = {}
  for method in METHODS:
    rows = [method_rows(r, method) for r in results if method in r]
    if not rows:
      continue
    out[method] = {}
    for condition in rows[0]:
      out[method][condition] = {}
      for metric in rows[0][condition]:
        values = [row.get(condition, {}).get(metric) for row in rows]
        out[method][condition][metric] = (
            None if any(v is None for v in values) else float(np.mean(values)))
  return out


def margins(means: dict, condition: str) -> dict[str, float | None]:
  """The four targets' margins (positive = met) for one condition of a draw."""
  get = lambda m, k: means.get(m, {}).get(condition, {}).get(k)
  bu = {k: get("bu", k) for k in ("auc", "auc_vs_rare", "auc_vs_frequent", "rare_vs_frequent")}
  rivals = [get(m, "auc") for m in METHODS if m != "bu" if get(m, "auc") is not None]
  sub = lambda a, b: None if a is None or b is None else a - b
  return {
      "auc": sub(bu["auc"], max(rivals) if rivals else None),
      "vs_rare": sub(bu["auc_vs_rare"], sub(get("re", "auc_vs_rare"), -RARE_GAIN)),
      "rare_vs_frequent": sub(MAX_RARE_VS_FREQUENT, bu["rare_vs_frequent"]),
      "vs_frequent": sub(bu["auc_vs_frequent"], sub(get("re", "auc_vs_frequent"),
                                                    FREQUENT_SLACK)),
  }


def room_at_uniform(means: dict, condition: str) -> float | None:
  """BU's AUC vs frequent normals minus (RE's AUC vs rare normals + 0.15); see above."""
  get = lambda m, k: means.get(m, {}).get(condition, {}).get(k)
  bu, re_ = get("bu", "auc_vs_frequent"), get("re", "auc_vs_rare")
  return None if bu is None or re_ is None else bu - (re_ + RARE_GAIN)


def false_alarms(results: list[dict]) -> dict[str, dict[str, float | None]]:
  """Per method, the mean over the seeds' ``results.json`` dicts of the false-positive
  rates at phi on rare- and on frequent-normal clips (``fpr_rare``, ``fpr_frequent``;
  None where a seed lacks one)."""
  out = {}
  for method in METHODS:
    rows = [r[method].get("rare_normal", {}) for r in results if method in r]
    if rows:
      out[method] = {}
      for key in ("fpr_rare", "fpr_frequent"):
        values = [row.get(key) for row in rows]
        out[method][key] = (None if any(v is None for v in values)
                            else float(np.mean(values)))
  return out


def missing_methods(results: list[dict]) -> list[list[str]]:
  """Per seed's ``results.json`` dict, the methods (of ``METHODS``) another seed holds and
  it lacks: a seed still running, or interrupted, holds fewer than the others."""
  held = [[m for m in METHODS if m in r] for r in results]
  every = [m for m in METHODS if any(m in h for h in held)]
  return [[m for m in every if m not in h] for h in held]


def _seed_results(workdir: str, preset: str, *, draw: str = "") -> list[dict]:
  """The ``results.json`` dicts of the draw's seeds, in seed order (``data_lib.DataError``
  when there is none, or when a seed lacks a method another holds: averaging a method over
  fewer seeds than the others would compare unlike means)."""
  seeds = {}  # seed number -> path; only folders named seed<N> (not e.g. a copy seed0_old)
  for path in glob.glob(os.path.join(workdir, preset, "seed*", "results.json")):
    match = re.fullmatch(r"seed(\d+)", os.path.basename(os.path.dirname(path)))
    if match:
      seeds[int(match.group(1))] = path
  paths = [seeds[n] for n in sorted(seeds)]
  if not paths:
    raise data_lib.DataError(f"{workdir}: no {preset}/seed<N>/results.json (not a finished "
                             "benchmarks.realaudio workdir, or another --preset)")
  results = [read_results(p) for p in paths]
  for path, missing in zip(paths, missing_methods(results)):
    if missing:
      seed = os.path.basename(os.path.dirname(path))
      raise data_lib.DataError(
          f"--draws {draw or workdir}={workdir}: {preset}/{seed}/results.json lacks "
          f"{', '.join(missing)}, which another seed holds (a seed still running or "
          "interrupted?); every seed of a draw must hold the same methods")
  return results


def _parse_draws(text: str) -> list[tuple[str, str]]:
  draws = []
  for item in text.split(","):
    name, sep, path = item.partition("=")
    if not sep or not name.strip() or not path.strip():
      raise ValueError(f"--draws: {item!r} is not name=workdir")
    draws.append((name.strip(), path.strip()))
  return draws


def _fmt(value: float | None) -> str:
  return "n/a" if value is None else f"{value:+.3f}"


def _cell(by_condition: dict[str, float | None]) -> str:
  """The folder mean's value and how many folders (conditions but "mean") are >= 0."""
  folders = [v for c, v in by_condition.items() if c != "mean" and v is not None]
  return f"{_fmt(by_condition['mean'])} ({sum(v >= 0 for v in folders)}/{len(folders)} folders)"


def check(draws: list[tuple[str, str]], *, preset: str, demo: list[str]) -> dict:
  """Prints the lines and tables; returns {draw: {condition: margins}}."""
  table, rooms, alarms = {}, {}, {}
  for name, workdir in draws:
    results = _seed_results(workdir, preset, draw=name)
    means = draw_means(results)
    conditions = [c for c in means.get("bu", {}) if c != "mean"] + ["mean"]
    table[name] = {c: margins(means, c) for c in conditions}
    for condition, row in table[name].items():
      for target, value in row.items():
        emit(draw=name, condition=condition, target=target, seeds=len(results),
             margin=None if value is None else round(value, 4),
             met=None if value is None else value >= 0)
    rooms[name] = {c: room_at_uniform(means, c) for c in conditions}
    for condition, value in rooms[name].items():
      emit(draw=name, condition=condition, diagnostic="room_at_uniform", seeds=len(results),
           value=None if value is None else round(value, 4))
    alarms[name] = false_alarms(results)
    for method, rates in alarms[name].items():
      emit(draw=name, diagnostic="fpr_at_phi", method=method, seeds=len(results),
           **{k: None if v is None else round(v, 4) for k, v in rates.items()})
  print("\n| draw | " + " | ".join(TARGETS) + " | room_at_uniform |")
  print("|---|" + "---|" * (len(TARGETS) + 1))
  for name, rows in table.items():
    columns = [{c: r[target] for c, r in rows.items()} for target in TARGETS] + [rooms[name]]
    print(f"| {name} | " + " | ".join(_cell(by_condition) for by_condition in columns) + " |")
  print("\n(margin of the mean over the test folders, positive = met; in brackets the folders "
        "whose own margin is >= 0; room_at_uniform is no target: BU's AUC vs frequent normals "
        "minus (RE's vs rare + 0.15), the vs_rare margin BU would have if its rare normals "
        "scored like its frequent ones)")
  for target in TARGETS:
    values = [rows["mean"][target] for rows in table.values()]
    known = [v for v in values if v is not None]
    print(f"{target}: met on {sum(v >= 0 for v in known)} of {len(known)} draws "
          "(mean over the folders)")
  known = [rows["mean"] for rows in rooms.values() if rows["mean"] is not None]
  print(f"room_at_uniform: >= 0 on {sum(v >= 0 for v in known)} of {len(known)} draws "
        "(where < 0, rare normals scoring like frequent ones would not meet vs_rare)")
  _print_false_alarms(alarms)
  if demo:
    aucs = []
    for d in demo:
      path = os.path.join(d, "results.json")
      results = read_results(path)
      if "bu" not in results:
        raise data_lib.DataError(f"{path}: no BU results (run the main job with --loss=all)")
      aucs.append(results["bu"]["auc"]["mean"])
    margin = float(np.mean(aucs)) - DEMO_MIN_AUC
    emit(draw="demo", condition="mean", target="demo", seeds=len(aucs), margin=round(margin, 4),
         met=margin >= 0)
    print(f"demo: BU's mean AUC {np.mean(aucs):.3f} over {len(aucs)} run(s), margin "
          f"{_fmt(margin)}")
  return table


def _print_false_alarms(alarms: dict) -> None:
  """The table of ``fpr_at_phi`` (rare / frequent normals per method, BU minus RE) and
  how often BU flags fewer rare normals than RE, and at what cost on frequent ones."""
  methods = [m for m in METHODS if any(m in a for a in alarms.values())]
  rate = lambda a, m, k: (a.get(m) or {}).get(k)
  print("\n| draw | " + " | ".join(f"{m.upper()} rare / frequent" for m in methods)
        + " | BU - RE, rare / frequent |")
  print("|---|" + "---|" * (len(methods) + 1))
  fewer = costlier = known = 0
  for name, a in alarms.items():
    cells = [f"{_num(rate(a, m, 'fpr_rare'))} / {_num(rate(a, m, 'fpr_frequent'))}"
             for m in methods]
    diffs = [None if rate(a, "bu", k) is None or rate(a, "re", k) is None
             else rate(a, "bu", k) - rate(a, "re", k) for k in ("fpr_rare", "fpr_frequent")]
    print(f"| {name} | " + " | ".join(cells) + f" | {_fmt(diffs[0])} / {_fmt(diffs[1])} |")
    if None not in diffs:
      known += 1
      fewer += diffs[0] < 0
      costlier += diffs[1] > 0
  print("\n(false-positive rates at each model's own threshold phi, mean over the seeds; "
        "lower is better)")
  print(f"fpr_at_phi: BU flags fewer rare normals than RE on {fewer} of {known} draws; more "
        f"frequent normals on {costlier} of {known}")


def _num(value: float | None) -> str:
  return "n/a" if value is None else f"{value:.3f}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--draws", required=True,
                      help="comma-separated name=workdir of finished benchmarks.realaudio runs")
  parser.add_argument("--preset", default="cpu")
  parser.add_argument("--demo", default="",
                      help="comma-separated finished README main-job workdirs (one per seed)")
  args = parser.parse_args()
  try:
    draws = _parse_draws(args.draws)
  except ValueError as e:
    parser.error(str(e))
  for name, path in draws:
    if not os.path.isdir(path):
      parser.error(f"--draws: {name}={path}: no such directory")
  demo = [d for d in args.demo.split(",") if d.strip()]
  for d in demo:
    if not os.path.isdir(d):
      parser.error(f"--demo: {d}: no such directory")
  cli.exit_on_errors(lambda: check(draws, preset=args.preset, demo=demo),
                     errors=(data_lib.DataError,))


if __name__ == "__main__":
  main()
