"""Every figure the experiments draw, and the one atomic figure writer.

Figures are drawn on matplotlib's Agg canvas (no display, no pyplot global
state) and written by ``save_figure``: the PNG is rendered in memory and then
written via a temporary file in the same folder and ``os.replace``, so a
failure while drawing or saving leaves no partial file (and an older figure
in place).

* ``plot_roc``, ``plot_scores_over_time``, ``plot_score_histogram``: the
  evaluation figures (ROC, frame scores over time as in the paper's Fig. 3,
  clip-score histograms).
* ``plot_training``: training curves from ``metrics.jsonl`` files.
* ``plot_ring_densities``, ``plot_ring_line_scores``: the ring experiment's
  Figs. 2 and 3 (``bu_jax.ring``).
* ``plot_frame_scores``, ``write_frame_score_plots``: one figure per recording
  scored by ``experiments.score`` (``bu_jax.detector``), its pieces in one.
* ``paired_differences_figure``, ``plot_paired_differences``: paired differences
  of two methods per run, draw by draw (a forest plot; ``benchmarks.uniform_control``).
"""

from __future__ import annotations

import io
import os
import pathlib
import re
import textwrap
import warnings
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from sklearn import metrics as sk_metrics

from bu_jax import evaluate
from bu_jax import fileio

PathLike = str | os.PathLike

_DPI = 100


def new_figure(figsize: tuple[float, float]):
  """A matplotlib ``Figure`` on an Agg canvas, constrained layout."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  figure = Figure(figsize=figsize, layout="constrained")
  FigureCanvasAgg(figure)
  return figure


def _wrap(title: str, width: int = 48) -> str:
  """A panel title on lines of at most ``width`` characters (long file names
  would run into the next panel)."""
  return "\n".join(textwrap.wrap(title, width, break_long_words=False))


def save_figure(figure, path: PathLike) -> str:
  """Writes ``figure`` as a PNG to ``path`` atomically; returns ``path`` as a string.

  Parent folders are created. If rendering fails, nothing is written and an
  existing file at ``path`` is left as it was. Matplotlib's "Creating legend
  with loc="best" can be slow" (printed when placing a legend took long, e.g.
  on a busy machine) is kept off the terminal: the figure is the same.
  """
  buffer = io.BytesIO()
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Creating legend with loc="best"')
    figure.savefig(buffer, dpi=_DPI, format="png")
  return fileio.atomic_write(path, buffer.getvalue())


def _colors(count: int) -> list[Any]:
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  cmap = colormaps["tab10"]
  return [cmap(i % 10) for i in range(count)]


# --------------------------------------------------------------------------
# Evaluation figures.
# --------------------------------------------------------------------------


def plot_roc(path: PathLike,
             curves: Mapping[str, tuple[Any, Any]],
             *,
             max_fpr: float | None = None) -> str:
  """ROC curves of several methods in one PNG.

  Args:
    path: output PNG path.
    curves: {method: (labels, scores)}; labels 0/1, scores higher = anomalous.
    max_fpr: if given, a vertical line marks the pAUC range.

  Returns:
    `path` as a string.
  """
  if not curves:
    raise ValueError("plot_roc needs at least one method.")
  figure = new_figure((5.0, 5.0))
  axes = figure.add_subplot()
  axes.plot([0, 1], [0, 1], color="gray", linestyle=":", label="chance")
  for (method, (labels, scores)), color in zip(curves.items(),
                                               _colors(len(curves))):
    auc = evaluate.metrics(labels, scores)["auc"]  # also checks the inputs
    fpr, tpr, _ = sk_metrics.roc_curve(np.asarray(labels).ravel(),
                                       np.asarray(scores, np.float64).ravel())
    axes.plot(fpr, tpr, color=color, label=f"{method} (AUC={auc:.3f})")
  if max_fpr is not None:
    axes.axvline(max_fpr, color="gray", linestyle="--", linewidth=0.8)
  axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate",
           ylabel="true-positive rate", title="ROC")
  axes.set_aspect("equal")
  axes.legend(loc="lower right", fontsize="small")
  return save_figure(figure, path)


def plot_scores_over_time(
    path: PathLike,
    clips_by_method: Mapping[str, Sequence[tuple]],
    *,
    thresholds: Mapping[str, float] | None = None,
    overlay: bool = False,
) -> str:
  """Frame anomaly scores A_θ(x_t) over time, as in the paper's Figure 3.

  One row per clip (e.g. a normal, a rare-normal and an anomalous clip); one
  column per method (default, each with its own y scale), or, with
  `overlay=True`, one line per method in a single column.

  Args:
    path: output PNG path.
    clips_by_method: {method: [(title, times_s, frame_scores), ...]}; every
      method lists the same clips in the same order. A tuple may have a fourth
      element, a list of (start_s, end_s) anomalous spans, shaded yellow (at
      least 1/400 of the time axis wide, so that a short one stays seen), and a
      fifth, times to mark with thin grey lines (the boundaries of pieces). A
      NaN score leaves a gap. Time is shown in minutes beyond 10 minutes, in
      hours beyond 3 hours.
    thresholds: optional {method: φ}, drawn as horizontal dashed lines.
    overlay: draw all methods in one column.

  Returns:
    `path` as a string.
  """
  if not clips_by_method:
    raise ValueError("plot_scores_over_time needs at least one method.")
  methods = list(clips_by_method)
  counts = {len(clips_by_method[m]) for m in methods}
  if len(counts) != 1 or 0 in counts:
    raise ValueError(
        "every method must list the same, non-zero number of clips; got"
        f" { {m: len(clips_by_method[m]) for m in methods} }.")
  rows = counts.pop()
  columns = 1 if overlay else len(methods)
  thresholds = thresholds or {}
  longest = max((np.nanmax(np.asarray(e[1], np.float64), initial=0.0)
                 for m in methods for e in clips_by_method[m]), default=0.0)
  unit, scale = _time_unit(longest)
  figure = new_figure((4.0 * columns + 1.0, 2.2 * rows))
  grid = figure.subplots(rows, columns, squeeze=False, sharex="row",
                         sharey=False if overlay else "col")
  for method, color, column in zip(methods, _colors(len(methods)),
                                   range(len(methods))):
    for row, entry in enumerate(clips_by_method[method]):
      title, times, frame_scores = entry[:3]
      spans = entry[3] if len(entry) > 3 else ()
      axes = grid[row, 0 if overlay else column]
      times = np.asarray(times, dtype=np.float64)
      frame_scores = np.asarray(frame_scores, dtype=np.float64)
      if times.shape != frame_scores.shape:
        raise ValueError(
            f"{method}, clip {row}: times_s shape {times.shape} differs from"
            f" frame_scores shape {frame_scores.shape}.")
      times = times / scale
      if column == 0 or not overlay:
        for start, end in spans:  # at least 1/400 of the axis wide: a short event stays seen
          middle, half = (start + end) / 2, max(end - start, longest / 400) / 2
          axes.axvspan((middle - half) / scale, (middle + half) / scale, color="yellow",
                       alpha=0.3, linewidth=0)
        for boundary in (entry[4] if len(entry) > 4 else ()):
          axes.axvline(boundary / scale, color="0.6", linewidth=0.5)
      axes.plot(times, frame_scores, color=color, linewidth=1.0, label=method)
      if method in thresholds:
        axes.axhline(thresholds[method], color=color, linestyle="--",
                     linewidth=0.8)
      axes.set_title(_wrap(str(title) if overlay else f"{method}: {title}"), fontsize="small")
      if row == rows - 1:
        axes.set_xlabel(f"time [{unit}]")
      if column == 0 or overlay:
        axes.set_ylabel("anomaly score")
  if overlay:
    grid[0, 0].legend(fontsize="small")
  return save_figure(figure, path)


def plot_score_histogram(
    path: PathLike,
    scores_by_method: Mapping[str, Mapping[str, Any]],
    *,
    thresholds: Mapping[str, float] | None = None,
    bins: int = 30,
) -> str:
  """Histograms of clip scores of normal, rare-normal and anomalous clips.

  One panel per method; groups that are missing or empty are skipped.

  Args:
    path: output PNG path.
    scores_by_method: {method: {"normal": s, "rare": s, "anomalous": s}}
      (any group names work).
    thresholds: optional {method: φ}, drawn as vertical dashed lines.
    bins: number of bins, shared by the groups of one method.

  Returns:
    `path` as a string.
  """
  if not scores_by_method:
    raise ValueError("plot_score_histogram needs at least one method.")
  thresholds = thresholds or {}
  methods = list(scores_by_method)
  figure = new_figure((4.0 * len(methods) + 0.5, 3.2))
  grid = figure.subplots(1, len(methods), squeeze=False)
  for axes, method in zip(grid[0], methods):
    groups = {name: np.asarray(s, dtype=np.float64).ravel()
              for name, s in scores_by_method[method].items()}
    groups = {name: s[np.isfinite(s)] for name, s in groups.items()}
    groups = {name: s for name, s in groups.items() if s.size}
    if groups:
      edges = np.histogram_bin_edges(np.concatenate(list(groups.values())),
                                     bins=bins)
      for (name, values), color in zip(groups.items(), _colors(len(groups))):
        axes.hist(values, bins=edges, color=color, alpha=0.5,
                  label=f"{name} (n={values.size})")
    if method in thresholds:
      axes.axvline(thresholds[method], color="black", linestyle="--",
                   linewidth=1.0, label="threshold φ")
    axes.set(title=method, xlabel="clip anomaly score", ylabel="clips")
    axes.legend(fontsize="small")
  return save_figure(figure, path)


def plot_training(path: PathLike, metrics_files: Mapping[str, PathLike], *,
                  validation_files: Optional[Mapping[str, PathLike]] = None,
                  smooth: int = 50) -> str | None:
  """Training curves per loss from ``metrics.jsonl`` files (``train.train``'s rows).

  Four panels: the loss; the normal term and L_a (eq. 10), with the
  held-out clips' mean frame score (the validation curve, dots) from
  ``validation_files`` (name -> ``validation.jsonl``, ``runner.train_or_resume``);
  the BU weights' effective sample size as a fraction of the normal frames,
  (sum w)^2 / (M_u sum w^2), and their max/min ratio (log scale) -- 1 and 1
  for RE/SNP, whose weights are uniform. Curves are moving averages over
  ``smooth`` steps. Returns ``path``, or None when no file has rows.
  """
  data = {name: fileio.read_metrics(p) for name, p in metrics_files.items()}
  data = {name: rows for name, rows in data.items() if rows}
  if not data:
    return None
  validation = {name: fileio.read_metrics(p) for name, p in (validation_files or {}).items()
                if name in data}

  def series(rows, fn):
    steps = np.array([r.get("step", i) for i, r in enumerate(rows)], np.float64)
    values = np.array([fn(r) for r in rows], np.float64)
    k = max(1, min(smooth, values.size // 20))  # at least ~20 points per curve
    kernel = np.ones(k) / k
    valid = np.convolve(values, kernel, mode="valid")
    return steps[k - 1:], valid

  figure = new_figure((11.0, 6.5))
  grid = figure.subplots(2, 2, squeeze=False)
  panels = [
      (grid[0][0], "loss", [("", lambda r: r["loss"])], "linear"),
      (grid[0][1], "normal term / L_a", [("normal", lambda r: r["normal"]),
                                         ("L_a", lambda r: r["la"])], "linear"),
      (grid[1][0], "BU weights: ESS / normal frames",
       [("", lambda r: r["ess"] / max(r["frames_normal"], 1.0))], "linear"),
      (grid[1][1], "BU weights: max / min", [("", lambda r: r["w_max"] / max(r["w_min"],
                                                                              1e-30))], "log"),
  ]
  colors = dict(zip(data, _colors(len(data))))
  for axes, title, curves, scale in panels:
    for name, rows in data.items():
      for (label, fn), style in zip(curves, ("-", "--")):
        try:
          x, y = series(rows, fn)
        except (KeyError, TypeError, ZeroDivisionError):
          continue
        axes.plot(x, y, style, color=colors[name], linewidth=1.0,
                  label=f"{name} {label}".strip())
    if title.startswith("normal term"):
      for name, rows in validation.items():
        rows = [r for r in rows if r.get("heldout_error") is not None]
        if rows:
          axes.plot([r["step"] for r in rows], [r["heldout_error"] for r in rows], ":o",
                    color=colors[name], markersize=3, linewidth=0.8, label=f"{name} held-out")
    axes.set(title=title, xlabel="step", yscale=scale)
    axes.legend(fontsize="small")
  return save_figure(figure, path)


# --------------------------------------------------------------------------
# Comparisons of losses over draws and seeds (benchmarks).
# --------------------------------------------------------------------------


def paired_differences_figure(draws: Mapping[str, Sequence[Mapping[str, Optional[float]]]], *,
                              differences: Sequence[tuple[str, str]],
                              metrics: Sequence[tuple[str, str]], title: str = ""):
  """A forest plot of paired differences: a panel per metric, a row per draw.

  Args:
    draws: {draw name: one row per run (seed)}, a row mapping ``key + suffix`` to a
      difference (``benchmarks.uniform_control.paired``'s folder-mean rows, e.g.
      ``"bu_minus_uniform"``, ``"bu_minus_uniform/rare_vs_frequent"``); missing or
      None values are left out.
    differences: (key, legend label) pairs, drawn side by side within a row.
    metrics: (suffix, panel title) pairs; a metric without any value gets no panel.
    title: the figure's title (e.g. how the runs were scored).

  Each run is a dot, each draw's mean over its runs a vertical bar, and a last row,
  "pooled", holds every run of every draw with their mean (so no draw may be named
  "pooled": ``ValueError``). Returns the Figure (its panels' ``gid`` is the metric's
  suffix; each panel's title heads its legend, above the axes), or None when there is
  nothing to draw.
  """
  names = list(draws)
  if "pooled" in names:
    raise ValueError("paired_differences_figure: 'pooled' names the row of every run; "
                     "give the draw another name")
  panels = [(suffix, panel_title) for suffix, panel_title in metrics
            if any(row.get(key + suffix) is not None
                   for rows in draws.values() for row in rows for key, _ in differences)]
  if not names or not panels:
    return None
  rows_y = {name: float(len(names) - i) for i, name in enumerate(names)}  # first draw on top
  rows_y["pooled"] = 0.0
  columns = 2 if len(panels) == 4 else min(len(panels), 3)  # four panels as 2 x 2
  rows = -(-len(panels) // columns)
  figure = new_figure((4.6 * columns + 1.0, rows * (0.45 * (len(names) + 1) + 1.9)))
  grid = figure.subplots(rows, columns, squeeze=False, sharey=True).ravel()
  for unused in grid[len(panels):]:
    unused.remove()
  colors = _colors(len(differences))
  offsets = np.linspace(-0.22, 0.22, len(differences)) if len(differences) > 1 else [0.0]
  for axes, (suffix, panel_title) in zip(grid, panels):
    axes.set_gid(suffix)
    for (key, label), color, offset in zip(differences, colors, offsets):
      every = []
      for name in names:
        values = [row[key + suffix] for row in draws[name]
                  if row.get(key + suffix) is not None]
        every += values
        if values:
          y = rows_y[name] + offset
          axes.plot(values, [y] * len(values), "o", color=color, markersize=3.5, alpha=0.7)
          axes.plot([np.mean(values)], [y], "|", color=color, markersize=12, mew=2.0)
      if every:
        y = rows_y["pooled"] + offset
        axes.plot(every, [y] * len(every), "o", color=color, markersize=3.5, alpha=0.35)
        axes.plot([np.mean(every)], [y], "|", color=color, markersize=14, mew=2.5,
                  label=f"{label} (mean {np.mean(every):+.3f}, {len(every)} runs)")
    axes.axvline(0.0, color="gray", linewidth=0.8)
    axes.axhline(0.5, color="lightgray", linewidth=0.8)
    axes.set(xlabel="difference")
    # The panel's title heads its legend above the axes (a separate axes title
    # would sit under the legend's box).
    axes.legend(title=panel_title, title_fontsize="medium", fontsize="x-small",
                loc="lower left", bbox_to_anchor=(0.0, 1.0), alignment="left")
  grid[0].set_yticks(list(rows_y.values()), list(rows_y))
  if title:
    figure.suptitle(_wrap(title, 100))
  return figure


def plot_paired_differences(path: PathLike, draws, *, differences, metrics,
                            title: str = "") -> str | None:
  """``paired_differences_figure`` written as a PNG to ``path``; None (nothing
  written) when there is nothing to draw."""
  figure = paired_differences_figure(draws, differences=differences, metrics=metrics,
                                     title=title)
  return None if figure is None else save_figure(figure, path)


# --------------------------------------------------------------------------
# The ring experiment (paper section 4.1).
# --------------------------------------------------------------------------

_METHOD_STYLE = {"re": dict(color="tab:green", linestyle=":", label="RE"),
                 "snp": dict(color="tab:blue", linestyle="--", label="SNP"),
                 "bu": dict(color="tab:red", linestyle="-", label="BU")}


def plot_ring_densities(path: PathLike, densities: Mapping[str, np.ndarray], *,
                        extent: tuple[float, float], normal_radius: float,
                        note: str = "") -> str:
  """Fig. 2: the model density q_theta on a square grid per method.

  Args:
    path: output PNG path.
    densities: {method ("re", "snp" or "bu"): q_theta on the grid, rows x2}.
    extent: (low, high) of both axes.
    normal_radius: radius of the dotted circle (the normal data's ring).
    note: the figure's title (e.g. which seed it shows); none if empty.
  """
  from matplotlib.patches import Circle  # pylint: disable=g-import-not-at-top
  vmax = max(v.max() for v in densities.values())
  lo, hi = extent
  figure = new_figure((4.0 * len(densities) + 1.0, 4.0))
  axes = figure.subplots(1, len(densities), squeeze=False)[0]
  for ax, (method, values) in zip(axes, densities.items()):
    image = ax.imshow(values, origin="lower", extent=(lo, hi, lo, hi),
                      vmin=0.0, vmax=vmax, cmap="viridis")
    ax.add_patch(Circle((0, 0), normal_radius, fill=False, color="white",
                        linestyle=":", linewidth=1.5))
    ax.set(title=f"{_METHOD_STYLE[method]['label']}: $q_\\theta(x)$", xlabel="$x_1$",
           ylabel="$x_2$")
  figure.colorbar(image, ax=list(axes), shrink=0.9)
  if note:
    figure.suptitle(note)
  return save_figure(figure, path)


def plot_ring_line_scores(path: PathLike, x1: np.ndarray, scores: Mapping[str, np.ndarray], *,
                          anomalous_band: tuple[float, float], note: str = "") -> str:
  """Fig. 3: the anomaly score A(x) on the line x2 = 0 per method.

  Args:
    path: output PNG path.
    x1: the points on the line.
    scores: {method ("re", "snp" or "bu"): A(x) at ``x1``}.
    anomalous_band: (inner, outer) radius of the anomalous ring, shaded on
      both sides of 0.
    note: the axes' title (e.g. which seed it shows); none if empty.
  """
  figure = new_figure((6.0, 3.5))
  ax = figure.subplots()
  inner, outer = anomalous_band
  for side in (-1, 1):
    ax.axvspan(side * inner, side * outer, color="gold", alpha=0.35, linewidth=0)
  for method, values in scores.items():
    ax.plot(x1, values, **_METHOD_STYLE[method])
  ax.set(xlim=(x1[0], x1[-1]), xlabel="$x_1$ ($x_2 = 0$)",
         ylabel="anomaly score $A(x)$", title=note)
  ax.legend()
  return save_figure(figure, path)


# --------------------------------------------------------------------------
# Recordings scored by experiments.score (bu_jax.detector).
# --------------------------------------------------------------------------

_PLOT_POINTS = 4000  # Longer score curves are max-pooled to about this many points.


def _pooled(times: np.ndarray, scores: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
  """Max-pools a long curve to about ``points`` points (peaks stay visible;
  NaN, a gap, only where a whole block is NaN)."""
  if scores.size <= points:
    return times, scores
  block = -(-scores.size // points)
  n = -(-scores.size // block) * block
  # NaN (a gap) pads the last block; fmax / fmin skip NaN unless a block is all NaN.
  padded = np.pad(np.asarray(scores, np.float64), (0, n - scores.size),
                  constant_values=np.nan)
  # Each block at its first time that is not a gap, so its value is drawn.
  padded_times = np.pad(np.asarray(times, np.float64), (0, n - times.size),
                        constant_values=np.nan)
  return (np.fmin.reduce(padded_times.reshape(-1, block), axis=1),
          np.fmax.reduce(padded.reshape(-1, block), axis=1))


def _time_unit(longest_s: float) -> tuple[str, float]:
  """The unit a time axis up to ``longest_s`` seconds reads best in, and its seconds."""
  if longest_s > 3 * 3600:
    return "h", 3600.0
  if longest_s > 600:
    return "min", 60.0
  return "s", 1.0


def _short_path(path: str, *, parts: int = 3) -> str:
  """The last ``parts`` components of ``path`` (the folders tell recordings of
  one name apart)."""
  return os.path.join(*pathlib.Path(path).parts[-parts:]) if path else path


def _unscored_as_gaps(result: Any) -> np.ndarray:
  """The frame scores, float64, NaN at the frames the clip score leaves out."""
  scores = np.asarray(result.frame_scores, np.float64)
  inner = getattr(result, "scored_frames", None)
  if inner is None:
    return scores
  gapped = np.full(scores.shape, np.nan)
  gapped[inner] = scores[inner]
  return gapped


def _joined(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
  """Curves of consecutive pieces as one, a NaN between pieces (a gap)."""
  times, values = [], []
  for t, v in parts:
    times += [np.asarray(t, np.float64), [np.nan]]
    values += [np.asarray(v, np.float64), [np.nan]]
  return np.concatenate(times[:-1]), np.concatenate(values[:-1])


# Pieces of a recording beyond this many get no boundary lines (they would fill the plot).
_MAX_BOUNDARIES = 60


def plot_frame_scores(path: PathLike, title: str, result: Any, *, failed: int = 0) -> str:
  """PNG of one recording's frame scores over time, the threshold φ and the events.

  Args:
    path: output PNG path.
    title: usually the recording's path; its last three components are shown.
    result: a ``detector.FrameResult`` (times_s, frame_scores, events, label,
      threshold; with a clip-score window also its window means, drawn over
      the frame scores with φ), or the results of a recording's consecutive
      pieces (``--piece_s``), drawn as one curve with the pieces' boundaries
      marked. Frames the clip score leaves out (``scored_frames``: the ends of
      a recording or piece) are left out (gaps).
    failed: pieces of the recording that could not be scored (gaps too), named
      in the title.
  """
  pieces = list(result) if isinstance(result, (list, tuple)) else [result]
  first = pieces[0]
  times, scores = _pooled(*_joined([(r.times_s, _unscored_as_gaps(r)) for r in pieces]),
                          _PLOT_POINTS)
  events = [e for r in pieces for e in r.events]
  if len(pieces) == 1 and not failed:
    start = getattr(first, "start_s", 0.0)
    head = (f"{_short_path(title)}" + (f" from {start:g} s" if start else "")
            + f": {first.label}, {len(events)} event(s)")
    boundaries = ()
  else:
    flagged = sum(bool(r.decision) for r in pieces)
    head = (f"{_short_path(title)}: {flagged} of {len(pieces) + failed} pieces anomalous"
            + (f" ({failed} failed: gaps)" if failed else "") + f", {len(events)} event(s)")
    boundaries = ([r.start_s for r in pieces[1:]] if len(pieces) <= _MAX_BOUNDARIES else ())
  if getattr(first, "window_means", None) is None:
    return plot_scores_over_time(
        path, {"A(x_t)": [(head, times, scores, events, boundaries)]},
        thresholds={"A(x_t)": first.threshold})
  # A clip-score window: phi applies to the window means, drawn over the frame scores.
  label = f"mean of {first.window} frames"
  mean_times, means = _pooled(*_joined([(r.window_times_s, r.window_means) for r in pieces]),
                              _PLOT_POINTS)
  return plot_scores_over_time(
      path, {"A(x_t)": [(head, times, scores, events, boundaries)],
             label: [(head, mean_times, means, events, boundaries)]},
      thresholds={label: first.threshold}, overlay=True)


def write_frame_score_plots(directory: PathLike, results: Sequence[tuple[str, Any]],
                            failures: Sequence[tuple[str, str]] = ()) -> list[str]:
  """One PNG per recording of ``(path, FrameResult)`` in ``directory`` (the
  pieces of a recording, consecutive results of one path, in one; its pieces
  among ``failures``, ``(path, message)``, counted in the title), named after
  the path below the recordings' common folder (``day1/mic.wav`` ->
  ``day1_mic.png``, so recordings of one name in several folders keep theirs;
  names made unique)."""
  recordings: dict[str, list[Any]] = {}
  for name, result in results:
    recordings.setdefault(name, []).append(result)
  names = [os.path.abspath(name) for name in recordings]
  top = os.path.dirname(os.path.commonpath(names)) if len(names) == 1 else (
      os.path.commonpath([os.path.dirname(n) for n in names]) if names else "")
  written, used = [], set()
  for (name, pieces), full in zip(recordings.items(), names):
    relative = os.path.splitext(os.path.relpath(full, top))[0]
    stem = re.sub(r"[^A-Za-z0-9._+-]+", "_", relative).strip("_.") or "recording"
    candidate, k = stem, 1
    while candidate in used:
      k += 1
      candidate = f"{stem}_{k}"
    used.add(candidate)
    written.append(plot_frame_scores(pathlib.Path(directory) / f"{candidate}.png", name,
                                     pieces if len(pieces) > 1 else pieces[0],
                                     failed=sum(path == name for path, _ in failures)))
  return written
