"""Tests for bu_jax.plots: every figure is a PNG, written atomically."""

from __future__ import annotations

import json
import os
import types

import numpy as np
import pytest

from bu_jax import plots


def _png_ok(path):
  assert os.path.getsize(path) > 1000
  with open(path, "rb") as file:
    assert file.read(8) == b"\x89PNG\r\n\x1a\n"


def test_evaluation_plots_write_png(tmp_path, monkeypatch):
  figures = []
  real_save = plots.save_figure
  monkeypatch.setattr(plots, "save_figure", lambda f, p: figures.append(f) or real_save(f, p))
  rng = np.random.default_rng(1)
  labels = np.array([0] * 20 + [1] * 10)
  roc = {"AE": (labels, -(np.arange(30.0) + 10 * labels)),  # every anomaly lowest: AUC 0
         "BU": (labels, rng.normal(size=30) + 10 * labels)}  # separated: AUC 1
  _png_ok(plots.plot_roc(tmp_path / "roc.png", roc, max_fpr=0.1))
  curves = {l.get_label(): np.column_stack([l.get_xdata(), l.get_ydata()])
            for l in figures[-1].axes[0].get_lines()}
  assert {"AE (AUC=0.000)", "BU (AUC=1.000)"} <= set(curves)
  assert [0.0, 1.0] in curves["BU (AUC=1.000)"].tolist()  # every anomaly before any normal
  assert [1.0, 0.0] in curves["AE (AUC=0.000)"].tolist()  # every normal before any anomaly

  times = np.arange(50) * 0.016
  over_time = {
      method: [("normal", times, rng.random(50)),
               ("rare normal", times, rng.random(50) + 1),
               ("anomalous", times, rng.random(50) * 3, [(0.2, 0.4)])]
      for method in ("RE", "SNP", "BU")}
  thresholds = {"RE": 0.8, "SNP": 1.2, "BU": 1.5}
  _png_ok(plots.plot_scores_over_time(tmp_path / "time.png", over_time,
                                      thresholds=thresholds))
  for method, phi in thresholds.items():  # each method's panels draw its own phi
    panels = [a for a in figures[-1].axes if a.get_title().startswith(f"{method}:")]
    assert len(panels) == 3
    for axes in panels:
      assert any(list(l.get_ydata()) == [phi, phi] for l in axes.get_lines())
  _png_ok(plots.plot_scores_over_time(tmp_path / "overlay.png", over_time,
                                      thresholds=thresholds, overlay=True))

  histograms = {m: {"normal": rng.random(40), "rare": rng.random(5) + 1,
                    "anomalous": rng.random(20) + 2}
                for m in ("SNP", "BU")}
  histograms["BU"]["rare"] = []  # empty groups are skipped
  _png_ok(plots.plot_score_histogram(tmp_path / "sub" / "hist.png",
                                     histograms, thresholds=thresholds))
  legends = {a.get_title(): [t.get_text() for t in a.get_legend().get_texts()]
             for a in figures[-1].axes if a.get_legend() is not None}
  assert sorted(legends["SNP"]) == sorted(["threshold φ", "normal (n=40)", "rare (n=5)",
                                           "anomalous (n=20)"])
  assert sorted(legends["BU"]) == sorted(["threshold φ", "normal (n=40)", "anomalous (n=20)"])


def test_plot_scores_over_time_rejects_mismatched_clips(tmp_path):
  t = np.arange(3.0)
  with pytest.raises(ValueError, match="same"):
    plots.plot_scores_over_time(tmp_path / "x.png", {"A": [("a", t, t)], "B": []})


def test_plot_training_reads_metrics_files_and_skips_damaged_lines(tmp_path):
  rows = [{"step": s, "loss": 1.0 / (s + 1), "normal": 0.5, "la": 0.1, "ess": 8.0,
           "frames_normal": 10.0, "w_max": 2.0, "w_min": 0.5} for s in range(40)]
  path = tmp_path / "bu" / "metrics.jsonl"
  path.parent.mkdir()
  path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 40, "lo')
  _png_ok(plots.plot_training(tmp_path / "training.png", {"bu": path}))
  assert plots.plot_training(tmp_path / "none.png", {"re": tmp_path / "missing"}) is None
  assert not (tmp_path / "none.png").exists()


def test_plot_training_draws_the_validation_curve(tmp_path, monkeypatch):
  rows = [{"step": s, "loss": 1.0, "normal": 0.5, "la": 0.1, "ess": 8.0, "frames_normal": 10.0,
           "w_max": 2.0, "w_min": 0.5} for s in range(40)]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (tmp_path / "validation.jsonl").write_text("".join(
      json.dumps({"step": s, "heldout_error": v}) + "\n" for s, v in ((0, 9.0), (39, 3.0))))
  figures = []
  real_save = plots.save_figure
  monkeypatch.setattr(plots, "save_figure", lambda f, p: figures.append(f) or real_save(f, p))
  _png_ok(plots.plot_training(tmp_path / "training.png", {"bu": tmp_path / "metrics.jsonl"},
                              validation_files={"bu": tmp_path / "validation.jsonl"}))
  lines = {l.get_label(): l for ax in figures[0].axes for l in ax.get_lines()}
  assert list(lines["bu held-out"].get_ydata()) == [9.0, 3.0]
  assert list(lines["bu held-out"].get_xdata()) == [0, 39]


def test_ring_and_recording_plots_write_png(tmp_path):
  edges = np.linspace(-3, 3, 9)
  densities = {m: np.random.default_rng(0).random((8, 8)) for m in ("re", "bu")}
  _png_ok(plots.plot_ring_densities(tmp_path / "fig2.png", densities,
                                    extent=(edges[0], edges[-1]), normal_radius=2.0))
  x1 = np.linspace(-3, 3, 31)
  _png_ok(plots.plot_ring_line_scores(tmp_path / "fig3.png", x1, {"snp": x1**2},
                                      anomalous_band=(2.0, 3.0)))
  # A long recording is max-pooled to about 4000 points: the peak stays.
  scores = np.zeros(10_001)
  scores[7777] = 5.0
  result = types.SimpleNamespace(times_s=np.arange(scores.size) * 0.01, frame_scores=scores,
                                 events=[(77.0, 78.0)], label="anomalous", threshold=1.0)
  times, pooled = plots._pooled(result.times_s, scores, 4000)  # pylint: disable=protected-access
  assert pooled.size <= 4000 and pooled.max() == 5.0 and times.size == pooled.size
  written = plots.write_frame_score_plots(tmp_path / "plots", [("a/x y.wav", result),
                                                               ("b/x y.wav", result)])
  # Named after the path below the common folder: one name in two folders keeps both.
  assert [os.path.basename(p) for p in written] == ["a_x_y.png", "b_x_y.png"]
  written = plots.write_frame_score_plots(tmp_path / "one", [("/data/day1/mic.wav", result)])
  assert [os.path.basename(p) for p in written] == ["mic.png"]
  for path in written:
    _png_ok(path)


def test_a_recordings_pieces_in_one_plot_without_the_unscored_frames(tmp_path, monkeypatch):
  """experiments.score --piece_s --plots: one figure per recording, its pieces
  joined with their boundaries marked; the frames at the ends of each piece,
  which the clip score leaves out, are gaps; a long time axis reads in hours."""
  figures = []
  real_save = plots.save_figure
  monkeypatch.setattr(plots, "save_figure", lambda f, p: figures.append(f) or real_save(f, p))

  def piece(start_s, n, hop_s, decision):
    scores = np.arange(n, dtype=np.float32) + 10.0
    scores[[0, 1, n - 1]] = 1e6  # padded ends: high, not scored
    return types.SimpleNamespace(
        times_s=start_s + np.arange(n) * hop_s, frame_scores=scores, start_s=start_s,
        scored_frames=slice(2, n - 1), events=[(start_s + 1, start_s + 2)] if decision else [],
        decision=decision, label="anomalous" if decision else "normal", threshold=50.0)

  pieces = [piece(10.0 * i, 40, 0.25, i == 1) for i in range(3)]
  results = [("/d/rec.wav", p) for p in pieces] + [("/d/other.wav", piece(0.0, 40, 0.25, False))]
  written = plots.write_frame_score_plots(tmp_path / "plots", results)
  assert [os.path.basename(p) for p in written] == ["rec.png", "other.png"]
  axes = figures[0].axes[0]
  assert "rec.wav: 1 of 3 pieces anomalous, 1 event(s)" in axes.get_title().replace("\n", " ")
  figures.clear()  # a piece that failed is counted in the title
  plots.write_frame_score_plots(tmp_path / "f", results[1:3], failures=[
      ("/d/rec.wav", "/d/rec.wav: NaN (the piece from 0 s)"), ("/d/x.wav", "x")])
  assert "rec.wav: 1 of 3 pieces anomalous (1 failed: gaps), 1 event(s)" in (
      figures[0].axes[0].get_title().replace("\n", " "))
  curve, = [l for l in axes.get_lines() if l.get_label() == "A(x_t)"]
  y = np.asarray(curve.get_ydata(), np.float64)
  assert np.nanmax(y) == 10.0 + 38 and not (y == 1e6).any()  # the padded ends are not drawn
  assert np.isnan(y).sum() == 3 * 3 + 2  # three unscored frames a piece, a gap between pieces
  boundaries = [l.get_xdata()[0] for l in axes.get_lines() if l.get_label() != "A(x_t)"]
  assert boundaries[:2] == [10.0, 20.0] and axes.get_xlabel() == "time [s]"
  # A day in 10-s pieces: hours on the axis, no boundary lines, peaks kept through pooling.
  figures.clear()
  day = [piece(600.0 * i, 2400, 0.25, i == 77) for i in range(144)]
  day[100].frame_scores[500] = 5e4
  plots.write_frame_score_plots(tmp_path / "day", [("/d/day.wav", p) for p in day])
  axes = figures[0].axes[0]
  assert axes.get_xlabel() == "time [h]" and len(axes.get_lines()) == 2  # the curve, phi
  y = np.asarray(axes.get_lines()[0].get_ydata(), np.float64)
  assert y.size <= 4000 and np.nanmax(y) == 5e4 and np.isfinite(y).mean() > 0.9
  assert np.nanmax(axes.get_lines()[0].get_xdata()) == pytest.approx(24, abs=0.01)
  (span,) = axes.patches  # the 1-s event of piece 77, widened to 1/400 of the day
  x = ([span.get_x(), span.get_x() + span.get_width()] if hasattr(span, "get_width")
       else np.asarray(span.get_xy())[:, 0])  # a Rectangle (matplotlib >= 3.9) or a Polygon
  assert max(x) - min(x) == pytest.approx(24.0 / 400, rel=0.01)
  assert min(x) < (77 * 600 + 1.5) / 3600 < max(x)


def test_pooling_draws_a_block_that_starts_in_a_gap_at_its_first_time():
  times = np.arange(12, dtype=np.float64)
  scores = np.ones(12)
  times[3] = scores[3] = np.nan  # a gap between pieces, first in its block of 3
  scores[4] = 9.0  # the peak, in the same block
  t, v = plots._pooled(times, scores, 4)  # pylint: disable=protected-access
  assert list(t) == [0.0, 4.0, 6.0, 9.0] and list(v) == [1.0, 9.0, 1.0, 1.0]


def test_save_figure_leaves_no_partial_file_when_rendering_fails(tmp_path, monkeypatch):
  figure = plots.new_figure((2.0, 2.0))
  figure.subplots().plot([0, 1], [0, 1])
  path = tmp_path / "figure.png"
  plots.save_figure(figure, path)
  before = path.read_bytes()

  def broken_savefig(target, **kwargs):
    target.write(b"\x89PNG half a figure")
    raise RuntimeError("renderer failed")

  monkeypatch.setattr(figure, "savefig", broken_savefig)
  with pytest.raises(RuntimeError, match="renderer failed"):
    plots.save_figure(figure, path)
  with pytest.raises(RuntimeError, match="renderer failed"):
    plots.save_figure(figure, tmp_path / "new.png")
  assert path.read_bytes() == before  # the old figure is intact
  assert sorted(os.listdir(tmp_path)) == ["figure.png"]  # no partial or temporary file


def test_long_panel_titles_are_wrapped_not_cut():
  """A DCASE file name with its condition would run into the next panel: the
  title is broken between words, every word kept, no line past the width."""
  title = "bu (0.26-s means): anomalous (test_anr-10dB_id_00): anomaly_id_00_00000000.wav"
  wrapped = plots._wrap(title, 48)
  assert "\n" in wrapped and all(len(line) <= 48 for line in wrapped.split("\n"))
  assert wrapped.split() == title.split()
  assert plots._wrap("re: normal", 48) == "re: normal"


def test_paired_differences_are_drawn_per_draw_with_a_pooled_mean(tmp_path):
  """A forest plot: a dot per run, a bar at each draw's mean and at the mean of every
  run (the 'pooled' row, y = 0); None values and metrics without any value are left out."""
  draws = {"a": [{"d": -0.02, "d/bias": -0.10}, {"d": 0.00, "d/bias": None}],
           "b": [{"d": 0.01}]}
  figure = plots.paired_differences_figure(
      draws, differences=[("d", "BU - control"), ("e", "absent")],
      metrics=[("", "AUC"), ("/bias", "rare vs frequent"), ("/other", "never measured")],
      title="scored alike")
  assert figure.get_suptitle() == "scored alike"
  panels = figure.get_axes()
  assert [p.get_gid() for p in panels] == ["", "/bias"]
  assert [t.get_text() for t in panels[0].get_yticklabels()] == ["a", "b", "pooled"]

  def means(panel):  # (y, x) of each mean bar
    return sorted((round(float(l.get_ydata()[0]), 3), round(float(l.get_xdata()[0]), 4))
                  for l in panel.get_lines() if l.get_marker() == "|")

  offset = -0.22  # the first of two differences sits below its row's centre
  assert means(panels[0]) == [(0.0 + offset, round(-0.01 / 3, 4)), (1.0 + offset, 0.01),
                              (2.0 + offset, -0.01)]
  assert means(panels[1]) == [(0.0 + offset, -0.1), (2.0 + offset, -0.1)]
  assert "mean -0.003, 3 runs" in panels[0].get_legend().get_texts()[0].get_text()
  assert [p.get_legend().get_title().get_text() for p in panels] == ["AUC",
                                                                    "rare vs frequent"]
  path = plots.plot_paired_differences(tmp_path / "d.png", draws, differences=[("d", "x")],
                                       metrics=[("", "AUC")])
  _png_ok(path)
  assert plots.plot_paired_differences(tmp_path / "none.png", draws, differences=[("e", "x")],
                                       metrics=[("", "AUC")]) is None
  assert not (tmp_path / "none.png").exists()
  with pytest.raises(ValueError, match="'pooled' names the row of every run"):
    plots.paired_differences_figure({"pooled": [{"d": 0.0}]}, differences=[("d", "x")],
                                    metrics=[("", "AUC")])


def test_paired_differences_legends_overlap_no_panel_or_title():
  """Four panels (2 x 2) with long legend labels: once drawn, no panel's legend (which
  carries its title) overlaps another legend, any panel's axes, or the figure's title."""
  draws = {name: [{"d": 0.01 * i, "d/r": -0.02 * i, "d/f": 0.0, "d/q": 0.1 * i,
                   "e": 0.0, "e/r": 0.01} for i in range(3)] for name in ("V8", "inline-four")}
  figure = plots.paired_differences_figure(
      draws, differences=[("d", "BU - uniform BU"), ("e", "SNP - uniform BU (rounding only)")],
      metrics=[("", "AUC"), ("/r", "AUC vs rare normals"), ("/f", "vs frequent"),
               ("/q", "rare vs frequent")], title="a title " * 20)
  figure.canvas.draw()
  renderer = figure.canvas.get_renderer()
  panels = figure.get_axes()
  assert len(panels) == 4
  legends = [p.get_legend().get_window_extent(renderer) for p in panels]
  boxes = [p.get_window_extent(renderer) for p in panels]
  titles = [figure._suptitle.get_window_extent(renderer)]  # pylint: disable=protected-access
  titles += [p.title.get_window_extent(renderer) for p in panels if p.get_title()]
  for i, legend in enumerate(legends):
    assert not any(legend.overlaps(title) for title in titles)
    assert not any(legend.overlaps(box) for box in boxes)
    assert not any(legend.overlaps(other) for j, other in enumerate(legends) if j != i)


def test_save_figure_keeps_the_slow_legend_warning_off_the_terminal(tmp_path, recwarn):
  """matplotlib warns 'Creating legend with loc="best" can be slow' when placing a legend
  took long (a busy machine): noise on the terminal, the figure unchanged; other warnings
  still show."""
  import warnings  # pylint: disable=import-outside-toplevel
  figure = plots.new_figure((3, 2))
  figure.canvas.mpl_connect("draw_event", lambda event: warnings.warn(
      'Creating legend with loc="best" can be slow with large amounts of data.', UserWarning))
  plots.save_figure(figure, tmp_path / "a.png")
  assert not [w for w in recwarn if "Creating legend" in str(w.message)]
  figure.canvas.mpl_connect("draw_event", lambda event: warnings.warn("another", UserWarning))
  plots.save_figure(figure, tmp_path / "b.png")
  assert [str(w.message) for w in recwarn] == ["another"]
  assert (tmp_path / "a.png").stat().st_size > 0 and (tmp_path / "b.png").exists()
