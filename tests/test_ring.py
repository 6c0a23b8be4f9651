"""Tests for bu_jax.ring (section 4.1) and the entry point experiments/ring."""

from __future__ import annotations

import functools
import json
import math
import re
import os
import signal
import time

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bu_jax import losses
from bu_jax import models
from bu_jax import ring
from bu_jax import train

# Shared by the end-to-end tests so the jitted training chunk compiles once.
_SHORT = dict(updates=200, log_every=100, grid_cells=100)


def _png_ok(path):
  assert os.path.getsize(path) > 1000
  with open(path, "rb") as file:
    assert file.read(8) == b"\x89PNG\r\n\x1a\n"


def _check_outputs(workdir, results, *, methods, seeds):
  with open(os.path.join(workdir, "results.json")) as file:
    on_disk = json.load(file)
  assert on_disk == json.loads(json.dumps(results))
  assert set(on_disk) >= {"methods", "paper", "settings", "seeds"}
  assert list(on_disk["methods"]) == list(methods)
  assert on_disk["seeds"] == list(range(seeds))
  for m in methods:
    entry = on_disk["methods"][m]
    assert on_disk["paper"][m] == ring.PAPER_TABLE1[m]
    for key in ("kld_p_q", "kld_u_q", "kld_p_q_std", "kld_u_q_std"):
      assert math.isfinite(entry[key]), (m, key)
    assert entry["kld_p_q"] > 0 and entry["kld_u_q"] > 0
    assert [r["seed"] for r in entry["per_seed"]] == list(range(seeds))
    for key in ("kld_p_q", "kld_u_q"):  # mean and sample std (ddof=1) over the seeds
      values = [r[key] for r in entry["per_seed"]]
      assert entry[key] == pytest.approx(np.mean(values))
      assert entry[key + "_std"] == pytest.approx(np.std(values, ddof=1) if seeds > 1 else 0.0)
  for name in ("fig2_pdf.png", "fig3_scores.png"):
    _png_ok(os.path.join(workdir, name))
  assert not [f for f in os.listdir(workdir) if f.endswith(".tmp")]


# ------------------------------------------------------------ KL divergences


def test_kld_of_p_with_itself_is_near_zero():
  grid = ring.evaluation_grid(cells=200)
  with np.errstate(divide="ignore"):
    scores_p = -np.log(grid.p_mass / grid.cell_area)  # A = -ln p, q = p
    scores_u = -np.log(grid.u_mass / grid.cell_area)
  assert 0.0 <= ring.kl_divergences(scores_p, grid)["kld_p_q"] < 0.015
  assert 0.0 <= ring.kl_divergences(scores_u, grid)["kld_u_q"] < 0.015


@pytest.mark.parametrize("cells", [60, 201])
@pytest.mark.parametrize("score", [0.0, 7.5])
def test_kld_against_uniform_square(cells, score):
  # q uniform on [-3, 3]^2: D(U||q) = ln(36 / 4 pi),
  # D(p||q) = 1 - ln(8 pi) + ln 36.
  grid = ring.evaluation_grid(cells=cells)
  kld = ring.kl_divergences(np.full((cells, cells), score), grid)
  assert kld["kld_u_q"] == pytest.approx(math.log(36 / (4 * math.pi)), abs=1e-9)
  assert kld["kld_p_q"] == pytest.approx(
      1 - math.log(8 * math.pi) + math.log(36), abs=1e-9)


def test_kld_p_against_u_on_the_disc():
  # q = U: D(p||U) = 1 - ln 2 up to the cells that the circle r = 2 crosses.
  grid = ring.evaluation_grid(cells=400)
  with np.errstate(divide="ignore"):
    scores = np.where(grid.u_mass > 0, -np.log(grid.u_mass / grid.cell_area),
                      np.inf)
  inside = np.linalg.norm(grid.centers, axis=-1) < 1.9
  lq = ring.log_q(scores, cell_area=grid.cell_area)
  np.testing.assert_allclose(lq[inside], -math.log(4 * math.pi), atol=2e-3)


def test_grid_cell_masses_are_exact():
  grid = ring.evaluation_grid(cells=60)
  h = grid.edges[1] - grid.edges[0]
  assert grid.p_mass.sum() == pytest.approx(1.0)
  assert grid.u_mass.sum() == pytest.approx(1.0)
  # The four cells at the origin: int over [0, h]^2 of 1/r = 2 h asinh(1).
  c = 30
  np.testing.assert_allclose(grid.p_mass[c - 1:c + 1, c - 1:c + 1],
                             2 * h * math.asinh(1) / (4 * math.pi), rtol=1e-4)
  # Any other cell inside the disc against a fine midpoint rule.
  i, j = 34, 41
  t = (np.arange(400) + 0.5) / 400 * h
  s1, s2 = np.meshgrid(grid.edges[j] + t, grid.edges[i] + t)
  expected = np.mean(1 / np.hypot(s1, s2)) * h * h / (4 * math.pi)
  assert grid.p_mass[i, j] == pytest.approx(expected, rel=1e-4)
  # Cells outside the disc have no mass; a quadrant has a quarter.
  assert grid.p_mass[0, 0] == 0 and grid.u_mass[0, 0] == 0
  assert grid.p_mass[c:, c:].sum() == pytest.approx(0.25, abs=1e-5)


# ------------------------------------------------------------------ training


def test_data_radii():
  data = ring.make_dataset(jax.random.PRNGKey(0), num_samples=10_000)
  r_u = np.linalg.norm(np.asarray(data["normal"]), axis=-1)
  r_a = np.linalg.norm(np.asarray(data["anomalous"]), axis=-1)
  assert r_u.max() <= 2.0 + 1e-6 and r_a.min() > 2.0 - 1e-6
  assert r_a.max() <= 3.0 + 1e-6
  assert np.mean(r_u) == pytest.approx(1.0, abs=0.03)  # r ~ U[0, 2]


def test_data_angles_are_uniform_over_the_whole_circle():
  # psi ~ U[0, 2 pi) (sec. 4.1.1): every quadrant holds a quarter of each set.
  data = ring.make_dataset(jax.random.PRNGKey(1), num_samples=10_000)
  for name in ("normal", "anomalous"):
    x = np.asarray(data[name])
    quadrant = (x[:, 0] < 0) * 2 + (x[:, 1] < 0)
    np.testing.assert_allclose(np.bincount(quadrant, minlength=4) / len(x), 0.25, atol=0.02,
                               err_msg=name)


def test_method_losses_are_eqs_7_9_16_on_the_normal_and_anomalous_batches():
  """J_RE (eq. 7) on the normal batch; J_SNP (eq. 9) and J_BU (eq. 16) also use the
  anomalous batch in L_a (eq. 10); BU's KDE (eq. 15) standardizes iff configured."""
  data = ring.make_dataset(jax.random.PRNGKey(2), num_samples=40)
  batch = {"normal": data["normal"][:20], "anomalous": data["anomalous"][:20]}
  params = ring.init_state(jax.random.PRNGKey(3), config=ring.RingConfig()).params["re"]
  score = models.score_fn(models.VerificationAE())
  su, sa = score(params, batch["normal"]), score(params, batch["anomalous"])
  lam = ring.RingConfig().lam
  loss = lambda m, **kw: float(ring.method_loss(m, params, batch, config=ring.RingConfig(**kw)))
  assert loss("re") == pytest.approx(float(losses.re_loss(su)), rel=1e-5)
  assert loss("snp") == pytest.approx(float(losses.snp_loss(su, sa, lam=lam)), rel=1e-5)
  for standardize in (False, True):
    expected = losses.bu_loss(su, sa, batch["normal"], lam=lam, sigma=ring.RingConfig().sigma,
                                   eps=1e-6, standardize_features=standardize)
    assert loss("bu", standardize=standardize) == pytest.approx(float(expected), rel=1e-5)
  assert loss("bu", standardize=True) != pytest.approx(loss("bu"), rel=1e-4)


def test_score_summary_reads_the_normal_disc_and_the_anomalous_annulus():
  grid = ring.evaluation_grid(cells=100)
  r = np.linalg.norm(grid.centers, axis=-1)
  summary = ring.score_summary(r, grid)  # A(x) = |x|
  assert 1.95 < summary["max_score_normal"] <= 2.0
  assert summary["mean_score_normal"] == pytest.approx(4 / 3, abs=0.01)  # E|x| on the disc
  # Mean of r over 2 < r <= 3 (area-weighted): (2/3)(27 - 8) / (9 - 4) = 38/15; the
  # corners of the square beyond r = 3 are not part of it.
  assert summary["mean_score_anomalous"] == pytest.approx(38 / 15, abs=0.01)


def test_chunk_batches_match_minibatch_across_epochs():
  key = jax.random.PRNGKey(3)
  data = ring.make_dataset(key, num_samples=10_000)
  first, num_steps = 7, 25  # 10 mini-batches per epoch: crosses 2 epochs
  batches = jax.jit(functools.partial(ring.chunk_batches, num_steps=num_steps,
                                      batch_size=1000))(data, key, first)
  reference = jax.jit(jax.vmap(
      lambda s: ring.minibatch(data, key, s, batch_size=1000)))(
          first + jnp.arange(num_steps))
  for name in ("normal", "anomalous"):
    np.testing.assert_array_equal(batches[name], reference[name])
    # Epoch 1 (steps 10..19) visits every sample exactly once.
    epoch = np.asarray(batches[name][3:13]).reshape(-1, 2)
    np.testing.assert_array_equal(np.unique(epoch, axis=0),
                                  np.unique(np.asarray(data[name]), axis=0))
  assert not np.array_equal(batches["normal"][3], batches["normal"][13])


def test_train_and_evaluate_end_to_end(tmp_path):
  config = ring.RingConfig(**_SHORT)
  results = ring.train_and_evaluate(config, tmp_path, seeds=(0, 1))
  _check_outputs(tmp_path, results, methods=ring.METHODS, seeds=2)
  assert results["settings"]["updates"] == 200
  assert results["methods"]["bu"]["kld_u_q_std"] > 0
  table = ring.format_table(results)
  for m, r in results["methods"].items():  # each row: the run's measured means and stds
    assert re.search(rf"^{m.upper()} +{r['kld_p_q']:.3f} \+- {r['kld_p_q_std']:.3f} +"
                     rf"{ring.PAPER_TABLE1[m]['kld_p_q']:.3f} +{r['kld_u_q']:.3f} \+- "
                     rf"{r['kld_u_q_std']:.3f}", table, re.M), (m, table)
  # Three losses train three different models (not one loss three times).
  assert len({round(r["kld_u_q"], 6) for r in results["methods"].values()}) == 3
  # With one seed there is no spread to show (it once printed "+- 0.000")
  one = {**results, "seeds": [0]}
  single = ring.format_table(one)
  assert "+-" not in single and "(no spread with one seed)" in single
  assert [len(l) for l in single.splitlines()[1:]] == [len(l) for l in table.splitlines()[1:]]


@pytest.fixture
def entry():
  """experiments.ring, run in-process; its SIGTERM handler and its quieting of the
  INFO logs (progress.quiet_library_logs) are undone afterwards."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from experiments import ring as module  # pylint: disable=g-import-not-at-top
  previous, level = signal.getsignal(signal.SIGTERM), logging.get_absl_logger().level
  yield module
  signal.signal(signal.SIGTERM, previous)
  logging.get_absl_logger().setLevel(level)


def _main(entry, *args):
  """``python -m experiments.ring args`` in-process; returns the exit status."""
  argv = ["ring", *args]
  flags.FLAGS(argv)
  try:
    entry.main(argv[:1])
  except SystemExit as e:
    return e.code
  finally:
    flags.FLAGS.unparse_flags()
  return 0


def test_entry_point(entry, tmp_path, capsys):
  assert _main(entry, "--loss=all", f"--workdir={tmp_path}", "--seeds=1",
               *(f"--{k}={v}" for k, v in _SHORT.items())) == 0
  _check_outputs(tmp_path, json.load(open(tmp_path / "results.json")),
                 methods=ring.METHODS, seeds=1)
  out = capsys.readouterr().out
  assert "D(U||q)" in out and "0.913" in out
  # a progress line per --log_every updates, with its ETA, and where the files went
  assert "seed 0: update 100/200  J_RE=" in out and "seed 0: update 200/200" in out
  assert f"Wrote {tmp_path} in " in out


def test_a_workdir_of_another_experiment_is_refused_and_replaced_methods_warned(
    tmp_path, caplog):
  other = tmp_path / "toycar"
  other.mkdir()
  (other / "results.json").write_text('{"re": {"auc": {"mean": 0.9}}, "settings": {}}')
  with pytest.raises(ring.cli.WorkdirError, match="its results.json is not a verification "
                     "experiment's"):
    ring.run(ring.Settings(workdir=str(other), updates=1))
  assert json.loads((other / "results.json").read_text())["re"]["auc"]["mean"] == 0.9
  mine = tmp_path / "ring"
  mine.mkdir()
  (mine / "results.json").write_text(json.dumps(
      {"methods": {"re": {}, "snp": {}, "bu": {}}, "settings": {"grid_cells": 600}}))
  ring.check_earlier_results(str(mine), ring.RingConfig(methods=("bu",)))
  assert any("results of RE, SNP are replaced" in r.getMessage() for r in caplog.records)
  caplog.clear()
  ring.check_earlier_results(str(mine), ring.RingConfig())
  assert not caplog.records


def test_settings_defaults_are_ring_configs():
  settings = ring.Settings(workdir="w")
  assert settings.ring_config() == ring.RingConfig()
  assert settings.seeds == 1
  one = ring.Settings(workdir="w", methods=("snp",), updates=7, eps=0.0, standardize=True,
                      grid_cells=100, log_every=3).ring_config()
  assert (one.methods, one.updates, one.eps, one.standardize, one.grid_cells,
          one.log_every) == (("snp",), 7, 0.0, True, 100, 3)


@pytest.mark.parametrize("flag, message", [
    ("--seeds=0", "--seeds must be >= 1, got 0"),
    ("--updates=0", "--updates must be >= 1, got 0"),
    ("--eps=-1", "--eps must be finite and >= 0, got -1.0"),
    ("--eps=nan", "--eps must be finite and >= 0, got nan"),
    ("--grid_cells=99", "--grid_cells must be >= 100, got 99"),  # biased KLDs (3: RE < SNP)
    ("--grid_cells=100000", "--grid_cells must be <= 2000 (more do not change the KLDs and "
     "need gigabytes), got 100000"),
    ("--log_every=0", "--log_every must be >= 1, got 0"),
])
def test_entry_point_bad_flag_is_one_usage_error(entry, tmp_path, capsys, flag, message):
  workdir = tmp_path / "w"
  assert _main(entry, f"--workdir={workdir}", flag) == 1
  assert capsys.readouterr().err.strip() == f"Usage error: {message} (see --helpshort)"
  assert not workdir.exists()


def test_settings_reject_unknown_methods():
  with pytest.raises(ValueError, match=r"--loss must be one of .* or 'all', got \['xx'\]"):
    ring.Settings(workdir="w", methods=("xx",))


def test_entry_point_non_finite_loss_is_one_error_line(entry, tmp_path, capsys, monkeypatch):
  make = ring.make_dataset

  def poisoned(key, *, num_samples):
    data = make(key, num_samples=num_samples)
    return {**data, "normal": data["normal"].at[:].set(jnp.nan)}

  monkeypatch.setattr(ring, "make_dataset", poisoned)
  assert _main(entry, "--loss=re", f"--workdir={tmp_path}", "--updates=2", "--log_every=2",
               "--grid_cells=100") == 1
  captured = capsys.readouterr()
  assert captured.err.strip() == "Error: non-finite J_RE nan at step 0"
  assert "Traceback" not in captured.err and not captured.out
  assert not (tmp_path / "results.json").exists()


def test_entry_point_workdir_that_is_a_file_is_one_error_line(entry, tmp_path, capsys,
                                                               monkeypatch):
  monkeypatch.setattr(ring, "train", lambda *a, **k: pytest.fail("trained"))
  blocker = tmp_path / "file"
  blocker.write_text("x")
  assert _main(entry, f"--workdir={blocker}") == 1
  line = capsys.readouterr().err.strip()
  assert line.startswith(f"Error: --workdir={blocker}: is a file") and "\n" not in line


@pytest.mark.usefixtures("no_gc_callbacks")
@pytest.mark.parametrize("by", ["SIGINT", "SIGTERM"])
def test_entry_point_interrupt_is_one_line_and_130(entry, tmp_path, capsys, monkeypatch, by):
  def stop(*args, **kwargs):
    if by == "SIGTERM":
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(5)  # the handler raises before this returns
    raise KeyboardInterrupt

  monkeypatch.setattr(ring, "train", stop)
  assert _main(entry, f"--workdir={tmp_path}") == 130
  line = capsys.readouterr().err.strip()
  assert line.startswith(f"Interrupted: stopped by {by}") and "\n" not in line


# --------------------------------------------- shared engine: guard and checks


@pytest.mark.parametrize("name,value", [("sigma", 0.0), ("lam", -4.0), ("eps", -1e-6),
                                        ("eps", float("nan")), ("learning_rate", 0.0)])
def test_config_rejects_out_of_range_hyperparameters_naming_them(name, value):
  with pytest.raises(ValueError, match=name):
    ring.RingConfig(**{name: value})


def test_non_finite_loss_raises_the_training_engines_error(monkeypatch):
  config = ring.RingConfig(methods=("re",), updates=4, log_every=2, num_samples=20,
                           batch_size=10)
  make = ring.make_dataset

  def poisoned(key, *, num_samples):
    data = make(key, num_samples=num_samples)
    return {**data, "normal": data["normal"].at[:].set(jnp.nan)}

  monkeypatch.setattr(ring, "make_dataset", poisoned)
  with pytest.raises(train.NonFiniteLossError, match="J_RE nan at step 0$") as error:
    ring.train(0, config=config)
  assert error.value.step == 0


def test_non_finite_loss_in_a_later_chunk_names_its_own_step(monkeypatch):
  config = ring.RingConfig(methods=("re",), updates=6, log_every=2, num_samples=20,
                           batch_size=10)
  chunk, calls = ring.train_chunk, []

  def poisoned(state, data, data_key, **kwargs):  # the 2nd update of the 2nd chunk
    state, metrics = chunk(state, data, data_key, **kwargs)
    calls.append(1)
    if len(calls) == 2:
      metrics = {m: v.at[1].set(jnp.inf) for m, v in metrics.items()}
    return state, metrics

  monkeypatch.setattr(ring, "train_chunk", poisoned)
  with pytest.raises(train.NonFiniteLossError, match="J_RE inf at step 3$") as error:
    ring.train(0, config=config)
  assert error.value.step == 3
