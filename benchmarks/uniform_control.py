"""BU against its own uniform-weight control, on a finished real-recording benchmark.

    python -m benchmarks.uniform_control --workdir=runs/realaudio[,W2,...] [--seeds=0,1,2] \
        [--preset=cpu] [--from_results] [--plot=differences.png] \
        [--normalization_bank=crossfit|training] [--score_window=125] \
        [--score_normalization=none] [--crossfit_bu_folds=bu] [--bandwidth=contrast] \
        [--tilt=T] [--segment_sampling=T]

With sigma -> 0 every kernel value of eq. (15) is 1, so BU's weights (eq. 16) are
all equal and J_BU is J_SNP (eq. 9): a model trained so differs from SNP's only by
the float rounding of the two code paths. For every seed of a finished
``benchmarks.realaudio`` workdir (``<workdir>/<preset>/seed<N>``) this trains BU once
more with ``--sigma=1e-12`` and otherwise the seed's own settings, in
``<workdir>/<preset>/uniform/seed<N>`` (its cross-fitted bank from a copy of the
seed's RE fold models, which sigma does not shape; a finished control is only
re-evaluated). It checks from the control's training metrics that its weights were
uniform, and prints one JSON line per (seed, condition) with the AUC of RE, SNP, BU
and the control and three paired differences:

* ``bu_minus_uniform``: what the paper's weights change, against the same objective
  without them;
* ``snp_minus_uniform``: two trainings of one objective, parted by rounding only:
  the noise floor of any comparison of losses on this set;
* ``re_minus_uniform``;

and on the folder-mean line the pseudo-anomaly AUC of BU and of the control (the
label-free check each run made on held-out training clips): would it have told the
better of the two without labels?

Per workdir a Markdown table of the folder-mean AUCs and differences per seed, with
mean ± std over the seeds; with several workdirs (draws) the differences pooled over
all their runs, and how often the higher pseudo-anomaly AUC marked the better of BU
and its control. ``--from_results`` only reads finished results.

Where the run had rare-normal labels (``--rare_clips``) the differences are also given
for the AUC against rare-normal clips, against frequent-normal clips, for the
rare-vs-frequent AUC (the bias BU exists to remove: lower is better there), and for the
false-positive rates at phi on rare- and on frequent-normal clips (the false alarms a
user sees; lower is better).

Each run scores with the bank and window its own pseudo-anomalies chose, so BU and its
control may be scored differently. ``--normalization_bank=crossfit --score_window=125``
(either or both) re-evaluates every model alike, in copies under
``<workdir>/<preset>/uniform/<those settings>/seed<N>/`` (evaluation only, about 30 s
per model): BU and its control each alone (``bu/``, ``uniform/``), RE and SNP together
with the PCA reference (``re_snp/``, each with its own fold models). Every column then
compares the trainings alone, and ``BU - RE`` / ``BU - SNP`` compare the losses.
With them, ``--bandwidth=contrast`` also trains a BU variant per seed, the same but
for its band-width (``kde.contrast_sigma``: weights far from uniform), scored alike
in ``.../seed<N>/bandwidth-contrast/``: does a stronger weighting do more of what
the paper's does? ``--tilt=T`` does the same for BU with its weights tilted towards
the frames it fits worst (``losses.tilted_weights``; in ``.../seed<N>/tilt-T/``):
section 3.1's aim, the maximum normal score, approached directly.
``--segment_sampling=T`` trains BU drawing its normal segments with probability
proportional to K^-T (``kde.sampling_probabilities``: uniformization by sampling, in
``.../seed<N>/segment_sampling-T/``).
With ``--normalization_bank=crossfit``, BU and its control take their bank from RE's
fold models, as the runs do (``--crossfit_bu_folds=re``, the preset's default); a bank
that estimates another model's out-of-fold error can tilt the rare-normal metrics.
``--crossfit_bu_folds=bu`` gives each its own fold models instead (BU's trained with
eq. (16)'s weights, the control's with uniform ones; about 2 min each per seed on this
CPU with 100 training clips), trained in the copies.
``--score_normalization=none --score_window=125`` scores every model alike on its raw
reconstruction errors (eq. 5, no bank; evaluation only): what the weights do to the
errors themselves, before any bank measures a frame against its own kind.
``--plot=PATH`` draws every run's paired differences (BU - uniform BU, BU - RE and the
noise floor SNP - uniform BU; AUC, AUC against rare and frequent normals, rare vs
frequent), a row per workdir (``name=workdir`` names it) and a pooled row.
Nothing here reads a test label except the metrics themselves; no setting is chosen.
"""

import argparse
import dataclasses
import os
import shutil
from typing import Optional

import numpy as np
import scipy.stats

from benchmarks._common import emit
from benchmarks.realaudio import method_rows, parse_seeds, read_results
from bu_jax import cli
from bu_jax import data as data_lib
from bu_jax import fileio
from bu_jax import plots
from bu_jax import runner
from bu_jax import score_norm
from bu_jax import toycar

# Every kernel value exp(-sigma ||x_i - x_j||^2) of eq. (15) is then 1 in float32: the KDE's
# standardized frames lie about 2D apart (880 at D = 440), so the exponent is about -1e-9.
UNIFORM_SIGMA = 1e-12
UNIFORM_TOLERANCE = 1e-4  # the control's weights max / min - 1 at most this
CONTROL_DIR = "uniform"  # <workdir>/<preset>/uniform/seed<N>
DIFFERENCES = ("bu_minus_uniform", "snp_minus_uniform", "re_minus_uniform", "bu_minus_re",
               "bu_minus_snp", "variant_minus_uniform", "variant_minus_bu", "variant_minus_re")
VARIANT = "variant"  # the BU variant of --bandwidth, as a method key of the rows
_NAMES = {"uniform": "uniform BU", VARIANT: "BU variant"}
# Beside the AUC (a row's plain keys), "<key>/<metric>" for these, where the run has them.
RARE_METRICS = ("auc_vs_rare", "auc_vs_frequent", "rare_vs_frequent", "fpr_rare", "fpr_frequent")
# The false-positive rates at phi on rare- and frequent-normal clips, per condition, as a
# results.json's rare_normal entry holds them.
_FPR_ENTRIES = {"fpr_rare": "fpr_rare_by_condition", "fpr_frequent": "fpr_frequent_by_condition"}


def seed_settings(seed_dir: str) -> toycar.Settings:
  """The toy-car settings a finished seed ran with (its ``results.json``)."""
  path = os.path.join(seed_dir, "results.json")
  stored = read_results(path).get("settings")
  if not isinstance(stored, dict):
    raise data_lib.DataError(f"{path}: no settings recorded")
  try:
    return toycar.Settings(**{k: tuple(v) if isinstance(v, list) else v
                              for k, v in stored.items()})
  except (TypeError, ValueError) as e:
    raise data_lib.DataError(f"{path}: its settings are not this version's ({e})") from None


def control_settings(settings: toycar.Settings, control_dir: str) -> toycar.Settings:
  """The seed's settings for BU alone, with uniform weights, in ``control_dir``."""
  return dataclasses.replace(settings, workdir=control_dir, losses=("bu",), sigma=UNIFORM_SIGMA)


def borrow_fold_models(seed_dir: str, control_dir: str) -> None:
  """Copies the seed's RE fold models (``re/crossfit``) into the control's workdir,
  where BU's cross-fitted bank finds them, unless it has them already."""
  src = os.path.join(seed_dir, "re", toycar.CROSSFIT_DIR)
  dst = os.path.join(control_dir, "re", toycar.CROSSFIT_DIR)
  if os.path.isdir(src) and not os.path.exists(dst):
    shutil.copytree(src, dst)


def weight_spread(control_dir: str) -> float:
  """The largest max / min of the BU weights over the control's training steps
  (1.0: uniform); ``DataError`` when its metrics hold none."""
  path = os.path.join(control_dir, "bu", runner.METRICS_FILE)
  records = [r for r in fileio.read_metrics(path) if "w_max" in r and "w_min" in r]
  if not records:
    raise data_lib.DataError(f"{path}: no BU weight statistics (is the control trained?)")
  return max(r["w_max"] / max(r["w_min"], 1e-30) for r in records)


def _method_rows(results: dict, method: str) -> dict[str, dict[str, float]]:
  """``realaudio.method_rows`` and the false-positive rates at phi on rare- and
  frequent-normal clips (``fpr_rare``, ``fpr_frequent``; None without rare labels)."""
  rows = method_rows(results, method)
  rare = results[method].get("rare_normal", {})
  for metric, entry in _FPR_ENTRIES.items():
    for condition, row in rows.items():
      row[metric] = rare.get(entry, {}).get(condition)
  return rows


def paired(results: dict, control: dict) -> dict[str, dict[str, float]]:
  """Per condition (``"mean"`` included): each method's AUC (the PCA's too, where the
  results have it) and the differences, under plain keys (``"bu"``,
  ``"bu_minus_uniform"``), and the same for ``RARE_METRICS`` under
  ``"<key>/<metric>"`` where the runs have rare-normal labels."""
  rows = {m: _method_rows(results, m) for m in ("re", "snp", "bu", VARIANT, toycar.REFERENCE)
          if m in results}
  rows["uniform"] = _method_rows(control, "bu")
  out = {}
  for condition in rows["uniform"]:
    row = {}
    for metric in ("auc",) + RARE_METRICS:
      suffix = "" if metric == "auc" else f"/{metric}"
      value = {m: by_condition.get(condition, {}).get(metric)
               for m, by_condition in rows.items()}
      if metric != "auc" and value["uniform"] is None:
        continue  # no rare-normal labels
      row.update({f"{m}{suffix}": v for m, v in value.items()})
      for key in DIFFERENCES:
        a, b = key.split("_minus_")
        if a in value and b in value:
          row[f"{key}{suffix}"] = (None if None in (value[a], value[b])
                                   else value[a] - value[b])
    out[condition] = row
  # The label-free checks each run made on its held-out clips (with something-else sounds
  # mixed in; and how evenly the normal ones score, the paper's aim): would they have
  # told the better of BU and its control?
  for prefix, entry in (("pseudo", "pseudo_anomaly_auc"), ("heldout", "heldout_max_over_median")):
    out.setdefault("mean", {}).update({
        f"{prefix}_bu": results.get("bu", {}).get(entry),
        f"{prefix}_uniform": control.get("bu", {}).get(entry)})
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="runs/realaudio",
                      help="a finished benchmarks.realaudio workdir, or several, comma-separated "
                      "(one table each, then the differences pooled over all their runs); "
                      "each may be given as name=workdir (the name labels its row in --plot)")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--preset", default="cpu", choices=sorted(toycar.PRESETS))
  parser.add_argument("--from_results", action="store_true",
                      help="only read the seeds' and the controls' finished results")
  parser.add_argument("--normalization_bank", default=None, choices=list(score_norm.BANKS),
                      help="score every model alike: re-evaluate it (in a copy) with this "
                      "bank; default: as each run chose")
  parser.add_argument("--score_window", type=int, default=None,
                      help="score every model alike: re-evaluate it (in a copy) with this "
                      "clip-score window in frames (125: 2 s); default: as chosen")
  parser.add_argument("--score_normalization", default=None,
                      choices=["none", *score_norm.KINDS, score_norm.AUTO_KIND],
                      help="score every model alike: re-evaluate it (in a copy) with this "
                      "normalization; 'none' with --score_window: raw reconstruction errors, "
                      "no bank (default: as each run chose)")
  parser.add_argument("--crossfit_bu_folds", default=None, choices=["re", "bu"],
                      help="with --normalization_bank=crossfit: whose fold models give BU's "
                      "and its control's bank; 'bu': each its own, trained in the copies "
                      "(default: the seed's setting, RE's)")
  parser.add_argument("--bandwidth", default=None, choices=["contrast"],
                      help="with the scoring flags: also train BU with this band-width per "
                      "seed, scored alike (the 'BU variant' rows)")
  parser.add_argument("--tilt", type=float, default=None,
                      help="with the scoring flags: also train BU with its weights tilted "
                      "towards the frames fitted worst (losses.tilted_weights, t > 0) per "
                      "seed, scored alike (the 'BU variant' rows; with --bandwidth, both)")
  parser.add_argument("--segment_sampling", type=float, default=None,
                      help="with the scoring flags: also train BU drawing its normal segments "
                      "with probability proportional to K^-T (kde.sampling_probabilities, "
                      "T > 0) per seed, scored alike (the 'BU variant' rows)")
  parser.add_argument("--plot", default=None,
                      help="also write a PNG here: each run's paired differences (BU - uniform "
                      "BU, BU - RE, SNP - uniform BU), a row per workdir and a pooled row, a "
                      "panel per metric")
  args = parser.parse_args()
  seeds = parse_seeds(parser, args.seeds)
  named = parse_workdirs(args.workdir)
  if not named:
    parser.error(f"--workdir={args.workdir!r}: no workdir given")
  workdirs = [path for _, path in named]
  if any(name == "pooled" for name, _ in named):
    parser.error(f"--workdir={args.workdir!r}: 'pooled' names the plot's row of every run")
  if not all(name and path for name, path in named):
    parser.error(f"--workdir={args.workdir!r}: an entry without a name or a path")
  if len(set(workdirs)) != len(workdirs) or len({n for n, _ in named}) != len(named):
    parser.error(f"--workdir={args.workdir!r}: a workdir or a name is given twice")
  cli.sigterm_as_interrupt()
  scoring = {k: v for k, v in (("score_normalization", args.score_normalization),
                                ("normalization_bank", args.normalization_bank),
                                ("score_window", args.score_window),
                                ("crossfit_bu_folds", args.crossfit_bu_folds)) if v is not None}
  if args.crossfit_bu_folds and args.normalization_bank != "crossfit":
    parser.error("--crossfit_bu_folds: give --normalization_bank=crossfit too (it chooses "
                 "the fold models of that bank)")
  variant = {k: v for k, v in (("bandwidth", args.bandwidth), ("tilt", args.tilt),
                                ("segment_sampling", args.segment_sampling))
             if v is not None}
  for name in variant:
    if not scoring:
      parser.error(f"--{name}: give --normalization_bank and/or --score_window too (the "
                   "variant is compared scored alike)")
  for name in ("tilt", "segment_sampling"):
    if variant.get(name) is not None and not variant[name] > 0:
      parser.error(f"--{name}={variant[name]}: give t > 0 (0 is BU itself)")
  try:  # a bad value is one usage line here, not a traceback from the first re-evaluation
    toycar.Settings(workdir=args.workdir, preset=args.preset, **scoring, **variant)
  except ValueError as e:
    parser.error(str(e))
  def run_and_plot():
    tables = run(workdirs, seeds, preset=args.preset, from_results=args.from_results,
                 scoring=scoring, bandwidth=args.bandwidth, tilt=args.tilt,
                 segment_sampling=args.segment_sampling)
    if args.plot:
      draws = {name: [tables[path][seed]["mean"] for seed in seeds] for name, path in named}
      how = (", ".join(f"--{k}={v}" for k, v in sorted(scoring.items())) if scoring
             else "as each run chose")
      written = plot(args.plot, draws, title=f"Paired differences per run, folder means; "
                     f"scored {'alike: ' if scoring else ''}{how}")
      print(f"\nWrote {written}" if written else "\nNothing to plot: no paired differences")

  cli.exit_on_errors(run_and_plot, errors=cli.TRAINING_ERRORS,
                     interrupted=(toycar.Interrupted,), on_interrupt=cli.RESUME_HINT)


def parse_workdirs(text: str) -> list[tuple[str, str]]:
  """``--workdir``'s comma-separated entries as (name, path): ``name=path``, or a bare
  path named by its last folder."""
  named = []
  for item in (i.strip() for i in text.split(",")):
    if not item:
      continue
    name, sep, path = item.partition("=")
    if not sep:
      name, path = os.path.basename(os.path.normpath(item)), item
    named.append((name.strip(), path.strip()))
  return named


# The forest plot's differences and panels: the weights' effect, BU against RE, and the
# noise floor (two trainings of one objective); the panels where the runs have the metric.
PLOT_DIFFERENCES = (("bu_minus_uniform", "BU - uniform BU"), ("bu_minus_re", "BU - RE"),
                    ("snp_minus_uniform", "SNP - uniform BU (rounding only)"))
PLOT_METRICS = (("", "AUC"), ("/auc_vs_rare", "AUC vs rare normals"),
                ("/auc_vs_frequent", "AUC vs frequent normals"),
                ("/rare_vs_frequent", "rare vs frequent (lower: less bias)"))


def plot(path: str, draws: dict[str, list[dict]], *, title: str = "") -> Optional[str]:
  """The paired differences of ``draws`` ({name: folder-mean rows, one per seed}) as a
  forest plot at ``path`` (``plots.plot_paired_differences``); None if none."""
  return plots.plot_paired_differences(path, draws, differences=PLOT_DIFFERENCES,
                                       metrics=PLOT_METRICS, title=title)


def run(workdirs: list[str], seeds: list[int], *, preset: str, from_results: bool,
        scoring: Optional[dict] = None, bandwidth: Optional[str] = None,
        tilt: Optional[float] = None, segment_sampling: Optional[float] = None) -> dict:
  """Trains (or reads) every seed's control in every workdir, prints the lines and
  the tables; returns {workdir: {seed: paired(...)}}. ``scoring`` (toy-car settings,
  e.g. ``{"normalization_bank": "crossfit", "score_window": 125}``): every model is
  compared re-evaluated alike with them (``rescore``); with ``bandwidth`` a BU variant
  with that band-width too, trained and scored the same way; with ``tilt`` one with
  its weights tilted (``losses.tilted_weights``); with ``segment_sampling`` one drawing
  its segments by reciprocal density (``kde.sampling_probabilities``); or with several."""
  variant = {k: v for k, v in (("bandwidth", bandwidth), ("tilt", tilt),
                                ("segment_sampling", segment_sampling)) if v is not None}
  if variant and not scoring:
    raise ValueError("a BU variant is compared scored alike: give scoring too")
  tables = {}
  for workdir in workdirs:
    tables[workdir] = table = {}
    for seed in seeds:
      table[seed] = _seed(workdir, seed, preset=preset, from_results=from_results,
                          scoring=scoring or {}, variant=variant)
    named = (" (BU variant: " + ", ".join(f"--{k}={v}" for k, v in variant.items()) + ")"
             if variant else "")
    print(f"\n{workdir}{named}:\n| folder-mean | " + " | ".join(f"seed {s}" for s in seeds)
          + f" | mean ± std over {len(seeds)} seeds |")
    print("|---|" + "---|" * (len(seeds) + 1))
    keys = [k + suffix for suffix in ("",) + tuple(f"/{m}" for m in RARE_METRICS)
            for k in ("re", "snp", "bu", toycar.REFERENCE, "uniform", VARIANT) + DIFFERENCES]
    for key in keys + ["pseudo_bu", "pseudo_uniform", "heldout_bu", "heldout_uniform"]:
      values = [table[s]["mean"].get(key) for s in seeds]
      known = [v for v in values if v is not None]
      if not known:
        continue
      fmt = _formatter(key)
      summary = f"{fmt(float(np.mean(known)))} ± {float(np.std(known)):.3f}"
      print(f"| {_label(key)} | " + " | ".join("" if v is None else fmt(v) for v in values)
            + f" | {summary} |")
  if len(workdirs) > 1:
    _pooled([row["mean"] for table in tables.values() for row in table.values()])
  return tables


def _seed(workdir: str, seed: int, *, preset: str, from_results: bool, scoring: dict,
          variant: Optional[dict] = None) -> dict:
  """One seed's control, trained or read, its lines printed; ``paired``'s rows."""
  seed_dir = os.path.join(workdir, preset, f"seed{seed}")
  control_dir = os.path.join(workdir, preset, CONTROL_DIR, f"seed{seed}")
  results = read_results(os.path.join(seed_dir, "results.json"))
  if from_results or (scoring and os.path.exists(os.path.join(control_dir, "results.json"))):
    control = read_results(os.path.join(control_dir, "results.json"))  # rescored below
  else:
    settings = control_settings(seed_settings(seed_dir), control_dir)
    cli.make_workdir(control_dir)
    borrow_fold_models(seed_dir, control_dir)
    control = toycar.run(settings)
  if "bu" not in control:
    raise data_lib.DataError(f"{control_dir}/results.json: no BU results")
  spread = weight_spread(control_dir)
  if scoring:  # every model re-evaluated alike, in copies
    rescored = lambda which, model_dirs, **kw: rescore(
        seed_dir, which, model_dirs, scoring=scoring, from_results=from_results, **kw)
    others = [m for m in ("re", "snp") if m in results]
    results = {"bu": rescored("bu", [os.path.join(seed_dir, "bu")])["bu"]}
    if others:  # RE and SNP with their own fold models, and the PCA beside them
      results.update(rescored("_".join(others), [os.path.join(seed_dir, m) for m in others]))
    control = rescored("uniform", [os.path.join(control_dir, "bu")], sigma=UNIFORM_SIGMA)
    if variant:  # trained in its copy: the seed's BU but for the band-width, tilt or sampling
      trained = trained_variant(seed_dir, variant_name(variant))
      results[VARIANT] = rescored(variant_name(variant), [trained] if trained else [],
                                  losses=("bu",), **variant)["bu"]
  rows = paired(results, control)
  for condition, row in rows.items():
    emit(workdir=workdir, seed=seed, condition=condition, preset=preset,
         control_weight_max_over_min=spread, uniform_ok=spread - 1 <= UNIFORM_TOLERANCE,
         **{k: None if v is None else round(v, 4) for k, v in row.items()})
  if spread - 1 > UNIFORM_TOLERANCE:
    print(f"Warning: {workdir} seed {seed}: the control's weights were not uniform (max / min "
          f"{spread:.6f}); its differences measure more than rounding", flush=True)
  return rows


def rescore(seed_dir: str, which: str, model_dirs: list[str], *, scoring: dict,
            from_results: bool, losses: Optional[tuple] = None, **overrides) -> dict:
  """The results of the models in ``model_dirs`` (loss folders: the seed's, or its
  control's BU) evaluated with ``scoring`` and the seed's settings but ``overrides``
  (the control's sigma), in a copy (``alike_dir(...)/<which>``, with BU's borrowed RE
  fold models), so that no run's own results are touched; ``losses`` not among them
  (a variant) are trained there first. Several losses are evaluated together, with the
  PCA reference beside them."""
  dst = os.path.join(alike_dir(seed_dir, scoring), which)
  losses = losses or tuple(os.path.basename(d) for d in model_dirs)
  if not from_results and not os.path.exists(os.path.join(dst, "results.json")):
    settings = dataclasses.replace(seed_settings(seed_dir), workdir=dst, losses=losses,
                                   **scoring, **overrides)
    cli.make_workdir(dst)
    for model_dir in model_dirs:
      copy = os.path.join(dst, os.path.basename(model_dir))
      if not os.path.exists(copy):
        shutil.copytree(model_dir, copy)
    if "bu" in losses:
      borrow_fold_models(seed_dir, dst)
    toycar.run(settings)
  return read_results(os.path.join(dst, "results.json"))


def variant_name(variant: dict) -> str:
  """The variant's folder among the copies: ``bandwidth-contrast``, ``tilt-2``, or both
  joined by ``_``."""
  return "_".join(f"{k}-{v:g}" if isinstance(v, float) else f"{k}-{v}"
                  for k, v in sorted(variant.items()))


def trained_variant(seed_dir: str, name: str) -> Optional[str]:
  """A finished model of the variant ``name`` in another scoring's copies of this seed
  (``<preset>/uniform/<scoring>/seed<N>/<name>/bu``), or None: a variant scored a second way
  is re-evaluated from it, not trained again (its main model does not depend on the scoring;
  fold models that a scoring needs are still trained in the new copy)."""
  preset_dir, seed = os.path.split(seed_dir)
  root = os.path.join(preset_dir, CONTROL_DIR)
  for tag in sorted(os.listdir(root)) if os.path.isdir(root) else ():
    variant_dir = os.path.join(root, tag, seed, name)
    if os.path.exists(os.path.join(variant_dir, "results.json")):
      return os.path.join(variant_dir, "bu")
  return None


def alike_dir(seed_dir: str, scoring: dict) -> str:
  """``<preset>/uniform/<scoring settings>/seed<N>``: the copies scored alike."""
  tag = "_".join(f"{k}-{v}" for k, v in sorted(scoring.items()))
  preset_dir, name = os.path.split(seed_dir)
  return os.path.join(preset_dir, CONTROL_DIR, tag, name)


def _pooled(rows: list[dict]) -> None:
  """The differences of the folder-mean AUC (and, where the runs have rare-normal
  labels, of the AUC against rare normals and the rare-vs-frequent AUC) over every run
  of every workdir, and how often the higher pseudo-anomaly AUC (label-free) marks the
  better of BU and its control."""
  print(f"\nPooled over {len(rows)} runs:\n| difference | mean ± std | range | below 0 | "
        "sign test p |")
  print("|---|---|---|---|---|")
  for suffix in ("",) + tuple(f"/{m}" for m in RARE_METRICS):
    for key in DIFFERENCES:
      v = np.asarray([r[key + suffix] for r in rows if r.get(key + suffix) is not None], float)
      if v.size:
        below, above = int((v < 0).sum()), int((v > 0).sum())
        print(f"| {_label(key + suffix)} | {v.mean():+.3f} ± {v.std():.3f} | {v.min():+.3f} "
              f"to {v.max():+.3f} | {below} of {v.size} | {sign_test(below, above):.3g} |")
  for prefix, what, higher in (("pseudo", "higher pseudo-anomaly AUC", True),
                               ("heldout", "lower held-out max / median", False)):
    known = [r for r in rows if None not in (r.get(f"{prefix}_bu"), r.get(f"{prefix}_uniform"),
                                             r.get("bu"), r.get("uniform"))]
    if not known:
      continue
    # a tie keeps BU (the paper's weights)
    prefers_bu = [(r[f"{prefix}_bu"] >= r[f"{prefix}_uniform"]) == higher
                  or r[f"{prefix}_bu"] == r[f"{prefix}_uniform"] for r in known]
    kept = [r["bu"] if p else r["uniform"] for r, p in zip(known, prefers_bu)]
    right = sum(p == (r["bu"] >= r["uniform"]) for r, p in zip(known, prefers_bu))
    print(f"The {what} marks the better of BU and its control in {right} of "
          f"{len(known)} runs; keeping it gives AUC {np.mean(kept):.3f} (BU "
          f"{np.mean([r['bu'] for r in known]):.3f}, the control "
          f"{np.mean([r['uniform'] for r in known]):.3f})")


def sign_test(below: int, above: int) -> float:
  """One-sided exact sign test: the chance of at least ``below`` of ``below + above``
  nonzero differences below 0 if each were equally likely either side (ties left out).
  A small p says the difference leans below 0 more than seed noise would make it."""
  if below + above == 0:
    return 1.0
  return float(scipy.stats.binomtest(below, below + above, 0.5, alternative="greater").pvalue)


def _formatter(key: str):
  return (lambda v: f"{v:+.3f}") if "_minus_" in key else (lambda v: f"{v:.3f}")


_METRIC_LABELS = {"auc_vs_rare": "AUC vs rare normals", "auc_vs_frequent": "AUC vs frequent normals",
                  "rare_vs_frequent": "rare vs frequent",
                  "fpr_rare": "false positives at phi, rare normals",
                  "fpr_frequent": "false positives at phi, frequent normals"}


def _label(key: str) -> str:
  """"BU - uniform BU", "pseudo-anomaly AUC, BU", "BU - RE, rare vs frequent", ... for a
  row key."""
  if key.startswith("pseudo_"):
    return "pseudo-anomaly AUC, " + _label(key[len("pseudo_"):])
  if key.startswith("heldout_"):
    return "held-out max / median, " + _label(key[len("heldout_"):])
  key, _, metric = key.partition("/")
  label = " - ".join(_NAMES.get(part, part.upper()) for part in key.split("_minus_"))
  return f"{label}, {_METRIC_LABELS[metric]}" if metric else label


if __name__ == "__main__":
  main()
