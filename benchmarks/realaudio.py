"""RE, SNP, BU and the PCA reference on a real-recording set, over several seeds.

    bash ../shared/realaudio-dev/build.sh /tmp/realaudio-dev     # once, ~2 min
    python -m benchmarks.realaudio --root=/tmp/realaudio-dev [--seeds=0,1,2] \
        [--preset=cpu] [--machine=engine_b] [--workdir=runs/realaudio]

For every seed this runs the toy-car experiment exactly as
``python -m experiments.toycar --loss=all --preset=<preset>
--data_dir=<root>/dev_data/<machine> --something_else_dir=<root>/something_else
--rare_clips=<root>/metadata.csv --workdir=<workdir>/seed<N> --seed=<N>`` would
(a finished seed is only re-evaluated), then prints one JSON line per
(method, condition, seed) with ``auc``, ``pauc``, ``auc_vs_rare``,
``auc_vs_frequent``, ``rare_vs_frequent`` and the training seconds, and at the
end one line per (method, condition) with the mean and standard deviation over
the seeds, a Markdown table of them per condition, and the README's rows (per
method, mean ± std of the mean over the test folders).

The rare-normal labels (``metadata.csv``) are read for evaluation only; no
setting is chosen from them. ``--from_results`` only reads the seeds'
finished ``results.json`` files and prints the lines and the table.

``--score_normalization=none``, ``knn``, ``knn_z`` or ``auto`` (with
``--normalization_neighbors``) is passed to every toy-car run: on a finished
benchmark workdir the same command with it only re-evaluates every seed
(``bu_jax.score_norm``), rewriting each seed's ``results.json``; without it the
preset's setting applies (``cpu``: auto, i.e. raw or knn_z scores by the
pseudo-anomaly AUC). ``--normalization_bank`` (training, heldout, crossfit, which
trains two fold models per method and seed once, or auto, which trains them and keeps
the training or the cross-fitted bank by the pseudo-anomaly AUC, ``cpu``'s since the
twenty-fifth session; ``--crossfit_schedule`` says how long the fold models train) and
``--score_window`` likewise (``cpu``: 0, the clip-score
window chosen by the same AUC; 1: eq. 11).

``--select_from=W1,W2,...`` applies the README's label-free rule to finished
benchmark workdirs (the same models evaluated with different settings, e.g.
raw, knn and knn_z copies): per seed and method it keeps the evaluation whose
held-out normal training clips score most evenly (lowest
``heldout_max_over_median``) and summarizes those; each line names the kept
workdir. No test label takes part in the choice.
"""

import argparse
import json
import os

import numpy as np

from benchmarks._common import emit
from bu_jax import cli
from bu_jax import crossfit
from bu_jax import data as data_lib
from bu_jax import evaluate
from bu_jax import score_norm
from bu_jax import toycar
from bu_jax import train as train_lib

METRICS = ("auc", "pauc", "auc_vs_rare", "auc_vs_frequent", "rare_vs_frequent")
METHODS = ("re", "snp", "bu", toycar.REFERENCE)


def method_rows(results: dict, method: str) -> dict[str, dict[str, float]]:
  """Per condition (``"mean"`` last), ``METRICS`` of one method of a ``results.json``
  dict (None where the run has no rare-normal labels)."""
  res = results[method]
  rare = res.get("rare_normal", {})
  table = {"auc": res["auc"], "pauc": res["pauc"], "auc_vs_rare": rare.get("auc_vs_rare", {}),
           "auc_vs_frequent": rare.get("auc_vs_frequent", {}),
           "rare_vs_frequent": rare.get("rare_vs_frequent", {})}
  conditions = [c for c in res["auc"] if c != "mean"] + ["mean"]
  return {c: {k: table[k].get(c) for k in METRICS} for c in conditions}


def select_by_heldout_spread(candidates: list[tuple[str, dict]]) -> dict:
  """Per method, the results (of ``(name, results.json)`` pairs) whose held-out max /
  median is lowest (the first on ties), with ``selected_from`` naming the pair."""
  def spread(res: dict) -> float:  # results.json files before the criterion lack the entry
    if "heldout_max_over_median" in res:
      return res["heldout_max_over_median"]
    return evaluate.heldout_spread(res["heldout_clip_scores"])

  selected = {}
  for method in METHODS:
    have = [(spread(res[method]), i) for i, (_, res) in enumerate(candidates) if method in res]
    if have:
      value, i = min(have)
      selected[method] = dict(candidates[i][1][method], selected_from=candidates[i][0],
                              heldout_max_over_median=value)
  return selected


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--root", default="/tmp/realaudio-dev", help="built realaudio-dev set")
  parser.add_argument("--machine", default="engine_b")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--preset", default="cpu", choices=sorted(toycar.PRESETS))
  parser.add_argument("--workdir", default="runs/realaudio")
  parser.add_argument("--sigma", type=float, default=None)
  parser.add_argument("--lam", type=float, default=None)
  parser.add_argument("--bandwidth", default=None, choices=list(train_lib.BANDWIDTHS))
  parser.add_argument("--standardize_input", default=None, choices=["true", "false"])
  parser.add_argument("--epochs", type=int, default=None)
  parser.add_argument("--from_results", action="store_true",
                      help="only summarize the seeds' finished results.json files")
  parser.add_argument("--kde_memory", type=int, default=None)
  parser.add_argument("--kde_exclude", default=None, choices=["none", "segment"])
  parser.add_argument("--tilt", type=float, default=None,
                      help="toycar's --tilt (BU's weights tilted towards the frames fitted worst)")
  parser.add_argument("--segment_sampling", type=float, default=None,
                      help="toycar's --segment_sampling (normal segments drawn with probability "
                      "proportional to K^-T; every loss)")
  parser.add_argument("--score_normalization", default=None,
                      choices=["none", score_norm.AUTO_KIND, *score_norm.KINDS],
                      help="toycar's --score_normalization (evaluation only; default: the "
                      "preset's)")
  parser.add_argument("--normalization_neighbors", type=int, default=None,
                      help="toycar's --normalization_neighbors (evaluation only; default: "
                      "the preset's)")
  parser.add_argument("--normalization_bank", default=None, choices=list(score_norm.BANKS),
                      help="toycar's --normalization_bank (evaluation only, crossfit and auto "
                      "train the fold models once; default: the preset's)")
  parser.add_argument("--crossfit_schedule", default=None, choices=list(crossfit.SCHEDULES),
                      help="toycar's --crossfit_schedule (how long the fold models of crossfit "
                      "and auto train; default: short)")
  parser.add_argument("--score_window", type=int, default=None,
                      help="toycar's --score_window (frames per mean of the clip score; 0: "
                      "chosen; evaluation only; default: the preset's)")
  parser.add_argument("--heldout_fraction", type=float, default=None,
                      help="toycar's --heldout_fraction (a training setting; default 0.1)")
  parser.add_argument("--select_from", default=None,
                      help="comma-separated finished benchmark workdirs: per seed and method, "
                      "keep the one with the lowest held-out max / median (label-free)")
  args = parser.parse_args()
  data_dir = os.path.join(args.root, "dev_data", args.machine)
  if not os.path.isdir(data_dir):
    parser.error(f"--root={args.root}: no {data_dir}; build the set first "
                 "(bash ../shared/realaudio-dev/build.sh /tmp/realaudio-dev)")
  seeds = parse_seeds(parser, args.seeds)
  settings = {}
  for seed in seeds:
    try:
      settings[seed] = _settings(args, data_dir, seed)
    except ValueError as e:
      parser.error(str(e))
  cli.sigterm_as_interrupt()
  cli.exit_on_errors(
      lambda: _benchmark(args, seeds, settings),
      errors=cli.TRAINING_ERRORS, interrupted=(toycar.Interrupted,),
      on_interrupt=cli.RESUME_HINT)


def parse_seeds(parser: argparse.ArgumentParser, text: str) -> list[int]:
  """``--seeds=0,1,2`` as integers; a bad or empty value ends in ``parser.error``."""
  try:
    seeds = [int(s) for s in text.split(",") if s.strip()]
  except ValueError:
    parser.error(f"--seeds={text}: give comma-separated integers, e.g. 0,1,2")
  if not seeds:
    parser.error(f"--seeds={text!r}: no seed given")
  return seeds


def _settings(args, data_dir: str, seed: int) -> toycar.Settings:
  """The toy-car settings of one seed (``ValueError`` naming a bad flag)."""
  return toycar.Settings(
      workdir=os.path.join(args.workdir, args.preset, f"seed{seed}"), losses=("re", "snp", "bu"),
      preset=args.preset, data_dir=data_dir,
      something_else_dir=os.path.join(args.root, "something_else"),
      rare_clips=os.path.join(args.root, "metadata.csv"), seed=seed, sigma=args.sigma,
      lam=args.lam,
      bandwidth=args.bandwidth, kde_memory=args.kde_memory, kde_exclude=args.kde_exclude,
      tilt=args.tilt, segment_sampling=args.segment_sampling, epochs=args.epochs,
      score_normalization=args.score_normalization,
      normalization_neighbors=args.normalization_neighbors, score_window=args.score_window,
      normalization_bank=args.normalization_bank,
      **({} if args.heldout_fraction is None else {"heldout_fraction": args.heldout_fraction}),
      **({} if args.crossfit_schedule is None else {"crossfit_schedule": args.crossfit_schedule}),
      decay_start_epoch=None if args.epochs is None else args.epochs // 2,
      standardize_input=(None if args.standardize_input is None
                         else args.standardize_input == "true"))


def read_results(path: str, *, heldout: bool = False) -> dict:
  """A finished run's ``results.json`` (``data_lib.DataError`` naming the file
  when it is missing, not JSON, or lacks a method's AUCs or, with ``heldout``
  (``--select_from``), its held-out clip scores)."""
  try:
    with open(path, encoding="utf-8") as f:
      results = json.load(f)
  except FileNotFoundError:
    raise data_lib.DataError(f"{path}: no such file (a seed not run yet?)") from None
  except (OSError, ValueError) as e:
    raise data_lib.DataError(f"{path}: cannot be read ({type(e).__name__}: {e})") from None
  methods = [m for m in METHODS if isinstance(results, dict) and m in results]
  finished = lambda r: isinstance(r, dict) and all(
      isinstance(r.get(k), dict) and "mean" in r[k] for k in ("auc", "pauc"))
  if not methods or not all(finished(results[m]) for m in methods):
    raise data_lib.DataError(f"{path}: not a finished run's results (no method with its AUCs); "
                             "run without --from_results to finish it")
  if heldout and not all("heldout_max_over_median" in results[m]
                         or "heldout_clip_scores" in results[m] for m in methods):
    raise data_lib.DataError(f"{path}: lacks the held-out clip scores that --select_from "
                             "compares")
  return results


def _benchmark(args, seeds: list, settings: dict) -> None:
  """Runs (or reads) every seed, prints the JSON lines and the tables."""
  collected: dict[tuple[str, str], dict[str, list[float]]] = {}
  label_free: dict[str, dict[str, list]] = {}  # per method: pseudo-AUCs, kinds evaluated
  methods = None
  for seed in seeds:
    workdir = settings[seed].workdir
    if args.select_from:
      candidates = []
      for root in args.select_from.split(","):
        candidates.append(
            (root, read_results(os.path.join(root, args.preset, f"seed{seed}", "results.json"),
                                 heldout=True)))
      results = select_by_heldout_spread(candidates)
    elif args.from_results:
      results = read_results(os.path.join(workdir, "results.json"))
    else:
      results = toycar.run(settings[seed])
    methods = [m for m in METHODS if m in results]
    for method in methods:
      seen = label_free.setdefault(method, {"pseudo": [], "kinds": []})
      if results[method].get("pseudo_anomaly_auc") is not None:
        seen["pseudo"].append(results[method]["pseudo_anomaly_auc"])
      seen["kinds"].append(toycar.scores_label(results[method]))
      for condition, values in method_rows(results, method).items():
        emit(method=method, condition=condition, seed=seed, preset=args.preset,
             train_seconds=results[method].get("train_seconds"),
             score_normalization=results[method].get("score_normalization", {}).get("kind"),
             normalization_bank=results[method].get("score_normalization", {}).get("bank"),
             score_window_s=results[method].get("clip_score", {}).get("window_s"),
             heldout_max_over_median=results[method].get("heldout_max_over_median"),
             pseudo_anomaly_auc=results[method].get("pseudo_anomaly_auc"),
             **{k: results[method][k] for k in ("selected_from",) if k in results[method]},
             **values)
        store = collected.setdefault((method, condition), {k: [] for k in METRICS})
        for k in METRICS:
          if values[k] is not None:
            store[k].append(values[k])
  summary = {}
  for (method, condition), store in collected.items():
    record = {}
    for k, v in store.items():
      if v:
        record[k] = round(float(np.mean(v)), 3)
        record[k + "_std"] = round(float(np.std(v)), 3)
    summary[(method, condition)] = record
    emit(method=method, condition=condition, seeds=len(seeds), summary=True, **record)
  if methods:
    print(f"\n| condition (mean ± std over {len(seeds)} seeds) | " + " | ".join(
        m.upper() for m in methods) + " |")
    print("|---|" + "---|" * len(methods))
    conditions = list(dict.fromkeys(c for (_, c) in summary))
    for k in ("auc", "auc_vs_rare", "auc_vs_frequent", "rare_vs_frequent"):
      for condition in conditions:
        cells = []
        for m in methods:
          rec = summary.get((m, condition), {})
          cells.append(f"{rec[k]:.3f} ± {rec[k + '_std']:.3f}" if k in rec else "")
        print(f"| {k}, {condition} | " + " | ".join(cells) + " |")
    print("| pseudo-anomaly AUC (label-free) | " + " | ".join(
        f"{np.mean(label_free[m]['pseudo']):.3f}" if label_free[m]["pseudo"] else ""
        for m in methods) + " |")
    print("| scores evaluated | " + " | ".join(
        ", ".join(f"{k} {label_free[m]['kinds'].count(k)}/{len(label_free[m]['kinds'])}"
                  for k in dict.fromkeys(label_free[m]["kinds"])) for m in methods) + " |")
    print(f"\nREADME rows (mean over the test folders, mean ± std over {len(seeds)} seeds): "
          "| method | AUC | AUC vs rare normals | AUC vs frequent normals | rare vs frequent |")
    for m in methods:
      rec = summary.get((m, "mean"), {})
      print(f"| | {m.upper()} | " + " | ".join(
          _cell(rec, k, spread=m != toycar.REFERENCE and len(seeds) > 1)
          for k in ("auc", "auc_vs_rare", "auc_vs_frequent", "rare_vs_frequent"))
            + " |")


def _cell(record: dict, key: str, *, spread: bool) -> str:
  """'0.938 ± 0.003'; without a spread (one seed, or the PCA, which has no random
  state) the mean alone."""
  if key not in record:
    return ""
  if not spread:
    return f"{record[key]:.3f}"
  return f"{record[key]:.3f} ± {record[key + '_std']:.3f}"


if __name__ == "__main__":
  main()
