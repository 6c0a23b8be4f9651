"""Tests for bu_jax.train / batch / parallel / progress: a tiny model on 8 fake CPU devices.

Compilation dominates the run time, so every compiled function is built with
XLA's backend optimization level 0 (same results up to rounding) and shared
through the builders' cache: one config, a handful of programs.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bu_jax import batch as batch_lib
from bu_jax import features
from bu_jax import fileio
from bu_jax import losses
from bu_jax import models
from bu_jax import parallel
from bu_jax import progress
from bu_jax import train
from conftest import compile_fast_options  # tests/ is on sys.path (rootdir conftest)

# Compilation, not run time, dominates this file (conftest: level-0 XLA options).
FAST = compile_fast_options()
TINY = models.ModelPreset("tiny", features.FeatureConfig(n_mels=8, context=1),
                          hidden_layers=1, units=16, bottleneck=4)
SEGMENT = 2048  # samples (0.128 s); 4 per mixture -> 8192 samples, 33 frames
CLIP_LENGTHS = (700, 1500, 3000)


def _config(loss="bu", **overrides):
  kwargs = dict(loss=loss, model=TINY, segment_seconds=SEGMENT / 16000,
                segments_per_mixture=4, mixtures_per_step=8, epochs=2, steps_per_epoch=3,
                decay_start_epoch=1, max_clip_seconds=0.25)
  kwargs.update(overrides)
  return train.TrainConfig(**kwargs)


def _host_corpus():
  rng = np.random.default_rng(0)
  t = np.arange(SEGMENT) / 16000
  # Tones of a few pitches plus noise: a corpus with frequent and rare frames.
  freqs = [300, 300, 300, 300, 300, 1200, 3000]
  segments = np.stack([0.3 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(SEGMENT)
                       for f in freqs]).astype(np.float32)
  clips = np.zeros((len(CLIP_LENGTHS), max(CLIP_LENGTHS)), np.float32)
  for i, n in enumerate(CLIP_LENGTHS):
    clips[i, :n] = rng.standard_normal(n)
  return segments, clips, np.asarray(CLIP_LENGTHS, np.int32)


HOST = _host_corpus()


def _mesh(n):
  return parallel.data_mesh(jax.devices()[:n])


def _run(config, n, steps=2):
  """Gradients at step 0, then ``steps`` updates (one scanned call) on n devices."""
  mesh = _mesh(n)
  corpus = train.place_corpus(*HOST, mesh=mesh, config=config)
  state = train.create_state(config, mesh=mesh, compiler_options=FAST)
  (loss0, _), grads = train.make_grad_fn(config, mesh=mesh, compiler_options=FAST)(
      state.params, state.step, corpus)
  state, metrics = train.make_train_steps(config, mesh=mesh, num_steps=steps,
                                          compiler_options=FAST)(state, corpus)
  return jax.device_get((loss0, grads, state, metrics))


_REFERENCE = {}


def _reference(loss):
  if loss not in _REFERENCE:
    _REFERENCE[loss] = _run(_config(loss), 1)
  return _REFERENCE[loss]


def _assert_trees_close(a, b, rtol, atol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


# ---------------------------------------------------------------- data parallel equivalence


def _assert_same_gradients(loss0_n, grads_n, loss0, grads):
  np.testing.assert_allclose(loss0_n, loss0, rtol=1e-5)
  scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(grads))
  _assert_trees_close(grads_n, grads, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("devices", [2, 4, 8])
def test_bu_same_loss_gradients_and_parameters_on_any_device_count(devices):
  loss0, grads, state, metrics = _reference("bu")
  loss0_n, grads_n, state_n, metrics_n = _run(_config("bu"), devices)
  _assert_same_gradients(loss0_n, grads_n, loss0, grads)
  for key in ("loss", "normal", "la", "ess", "w_max", "frames_normal", "grad_norm"):
    np.testing.assert_allclose(metrics_n[key], metrics[key], rtol=1e-4, err_msg=key)
  # AMSGrad moves every parameter by about lr whatever the gradient's size, so
  # rounding in a near-zero gradient entry shows up as a fraction of lr (1e-4).
  _assert_trees_close(state_n.params, state.params, rtol=1e-5, atol=2e-6)
  assert int(state_n.step) == int(state.step) == 2


_GRADS = {}


def _grads(loss, n):
  """((loss, metrics), grads) of step 0 on n devices (cached)."""
  if (loss, n) not in _GRADS:
    config, mesh = _config(loss), _mesh(n)
    corpus = train.place_corpus(*HOST, mesh=mesh, config=config)
    state = train.create_state(config, mesh=mesh, compiler_options=FAST)
    _GRADS[loss, n] = jax.device_get(train.make_grad_fn(
        config, mesh=mesh, compiler_options=FAST)(state.params, state.step, corpus))
  return _GRADS[loss, n]


def test_snp_same_loss_and_gradients_on_8_devices():
  (loss8, metrics8), grads8 = _grads("snp", 8)
  (loss1, metrics1), grads1 = _grads("snp", 1)
  _assert_same_gradients(loss8, grads8, loss1, grads1)
  np.testing.assert_allclose(loss1, metrics1["normal"] - metrics1["la"], rtol=1e-5)
  # SNP reports uniform weights.
  assert metrics1["w_max"] == metrics1["w_min"] == 1.0
  assert metrics1["ess"] == metrics1["frames_normal"] == metrics8["frames_normal"]


@functools.partial(jax.jit, compiler_options=FAST)
def _direct_losses(params, corpus):
  """The three losses of step 0 computed directly: one device, masks, no KDE buffer."""
  config = _config()
  hyper = config.loss_hyperparameters
  keys = batch_lib.mixture_keys(train.step_key(config.seed, 0),
                                jnp.arange(config.mixtures_per_step))
  score = models.score_fn(TINY.build())
  out = {}
  for simulate in (False, True):
    b = batch_lib.make_batch(keys, corpus, feature_config=TINY.features,
                             segments_per_mixture=config.segments_per_mixture,
                             anr_range_db=config.anr_range_db, simulate_anomaly=simulate)
    x = b.frames.reshape(-1, TINY.features.dim)
    anomalous = b.anomalous_mask.reshape(-1)
    normal = b.normal_mask.reshape(-1)
    scores = score(params, x)
    if not simulate:
      out["re"] = losses.re_loss(scores, mask_u=normal)
    else:
      out["snp"] = losses.snp_loss(scores, scores, lam=hyper["lam"], mask_u=normal,
                                   mask_a=anomalous)
      out["bu"] = losses.bu_loss(scores, scores, x, lam=hyper["lam"], sigma=hyper["sigma"],
                                 eps=config.eps, mask_u=normal, mask_a=anomalous)
  return out


def test_step_losses_match_a_direct_computation():
  mesh = _mesh(1)
  state = train.create_state(_config(), mesh=mesh, compiler_options=FAST)
  direct = jax.device_get(_direct_losses(state.params, train.place_corpus(*HOST, mesh=mesh)))
  (re_loss, re_metrics), _ = _grads("re", 2)
  np.testing.assert_allclose(re_loss, direct["re"], rtol=1e-5)
  assert re_metrics["frames_anomalous"] == re_metrics["la"] == 0
  cfg = _config()
  inner = cfg.feature_config.interior(cfg.mixture_length)
  assert 0 < inner.stop - inner.start < cfg.frames_per_mixture  # edge frames excluded
  assert re_metrics["frames_normal"] == 8 * (inner.stop - inner.start)
  np.testing.assert_allclose(_grads("snp", 1)[0][0], direct["snp"], rtol=1e-5)
  # BU's KDE on the compacted buffer of normal frames equals the masked KDE on all frames.
  np.testing.assert_allclose(_reference("bu")[0], direct["bu"], rtol=1e-5)


def test_snp_anomaly_term_reads_only_the_anomalous_frames():
  """Eq. (10)'s L_a averages lambda tanh(A / lambda) over the simulated-anomalous frames
  only. With the paper's lambda = 2M every untrained score saturates the tanh, so any
  set of frames gives L_a = lambda; a large lambda keeps L_a linear in the scores."""
  lam = 1e4
  config, mesh = _config("snp", lam=lam), _mesh(1)
  corpus = train.place_corpus(*HOST, mesh=mesh, config=config)
  state = train.create_state(config, mesh=mesh, compiler_options=FAST)
  (loss, metrics), _ = jax.device_get(train.make_grad_fn(config, mesh=mesh, compiler_options=FAST)(
      state.params, state.step, corpus))
  keys = batch_lib.mixture_keys(train.step_key(config.seed, 0),
                                jnp.arange(config.mixtures_per_step))
  b = batch_lib.make_batch(keys, corpus, feature_config=TINY.features,
                           segments_per_mixture=config.segments_per_mixture,
                           anr_range_db=config.anr_range_db, simulate_anomaly=True)
  scores = models.score_fn(TINY.build())(state.params, b.frames.reshape(-1, TINY.features.dim))
  normal, anomalous = b.normal_mask.reshape(-1), b.anomalous_mask.reshape(-1)
  la = losses.anomaly_term(scores, lam=lam, mask_a=anomalous)
  assert float(la) < 0.5 * lam  # not saturated
  np.testing.assert_allclose(metrics["la"], la, rtol=1e-5)
  np.testing.assert_allclose(loss, losses.snp_loss(scores, scores, lam=lam, mask_u=normal,
                                                   mask_a=anomalous), rtol=1e-5)
  everything = losses.anomaly_term(scores, lam=lam, mask_a=normal | anomalous)
  assert abs(float(everything) - float(la)) > 1e-3 * float(la)  # the mask matters here


def test_reference_run_is_sane():
  loss0, _, state, metrics = _reference("bu")
  assert np.all(np.isfinite(metrics["loss"]))
  np.testing.assert_allclose(metrics["loss"][0], loss0, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss"], metrics["normal"] - metrics["la"], rtol=1e-5)
  # Every interior frame is normal or anomalous; both sets are non-empty.
  cfg = _config()
  inner = cfg.feature_config.interior(cfg.mixture_length)
  frames = cfg.mixtures_per_step * (inner.stop - inner.start)
  np.testing.assert_array_equal(metrics["frames_normal"] + metrics["frames_anomalous"], frames)
  assert np.all(metrics["frames_anomalous"] > 0)
  # BU weights are non-uniform here; ESS between 1 and M_u.
  assert np.all(metrics["w_max"] > metrics["w_min"])
  assert np.all((metrics["ess"] > 1) & (metrics["ess"] < metrics["frames_normal"]))
  np.testing.assert_allclose(metrics["learning_rate"], 1e-4)
  # The two steps used different batches.
  assert metrics["frames_normal"][0] != metrics["frames_normal"][1] or (
      metrics["loss"][0] != metrics["loss"][1])


def test_bfloat16_compute_keeps_float32_state_and_close_losses():
  loss0, grads, _, metrics = _reference("bu")
  loss0_bf, grads_bf, state_bf, metrics_bf = _run(_config(compute_dtype="bfloat16"), 1)
  # The AE really ran in bf16 (the loss moved) but only by bf16 rounding.
  assert loss0_bf != loss0
  np.testing.assert_allclose(loss0_bf, loss0, rtol=2e-2)
  assert np.all(np.isfinite(metrics_bf["loss"]))
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])
  g, g_bf = flat(grads), flat(grads_bf)
  assert g_bf @ g / (np.linalg.norm(g) * np.linalg.norm(g_bf)) > 0.99
  # Parameters and optimizer state stay float32; the KDE's weights are unchanged in kind.
  assert {x.dtype for x in jax.tree.leaves((state_bf.params, state_bf.opt_state))
          if np.issubdtype(x.dtype, np.floating)} == {np.dtype(np.float32)}
  np.testing.assert_allclose(metrics_bf["frames_normal"], metrics["frames_normal"])
  with pytest.raises(ValueError, match="compute_dtype"):
    _config(compute_dtype="float16")


_UNUSED_VALUES = dict(sigma=0.3, bandwidth="contrast", kde_memory=2, kde_memory_rows=8,
                      kde_exclude="segment", eps=1e-2, anr_range_db=(-5.0, 5.0),
                      max_clip_seconds=0.5, lam=3.0, tilt=2.0)


@pytest.mark.parametrize("loss", ["re", "snp"])
def test_settings_a_loss_does_not_read_leave_its_training_unchanged(loss):
  """``train.UNUSED_SETTINGS``: why a checkpoint of RE (SNP) is resumed whatever
  they were (``runner.check_resumable``): the parameters after two steps are the same."""
  unused = train.UNUSED_SETTINGS[loss]
  assert set(unused) <= set(_UNUSED_VALUES) and "sigma" in unused
  _, _, state, metrics = _run(_config(loss), 1)
  _, _, state_x, metrics_x = _run(_config(loss, **{k: _UNUSED_VALUES[k] for k in unused}), 1)
  _assert_trees_close(state_x.params, state.params, rtol=1e-6, atol=1e-8)
  np.testing.assert_allclose(metrics_x["loss"], metrics["loss"], rtol=1e-6)
  assert train.UNUSED_SETTINGS["bu"] == ()  # eq. (16) reads them all


def test_tilted_bu_leans_on_the_worst_fitted_frames_alike_on_any_device_count():
  """``tilt`` multiplies eq. (16)'s weights by ``losses.tilted_weights``, which lean
  the normal term towards the frames of highest score; global over
  the mesh (the same loss and gradients on 1 and 4 devices); tilt = 0 is BU."""
  loss0, _, _, metrics = _reference("bu")
  tilted = _config("bu", tilt=4.0)
  loss0_t, grads_t, _, metrics_t = _run(tilted, 1)
  assert np.all(metrics_t["ess"] != metrics["ess"])  # the weights changed
  # Weighting by an increasing function of the score raises the weighted mean of the
  # scores (their covariance with it is >= 0): the normal term leans to the largest.
  assert metrics_t["normal"][0] > metrics["normal"][0]
  loss0_4, grads_4, _, metrics_4 = _run(tilted, 4)
  _assert_same_gradients(loss0_4, grads_4, loss0_t, grads_t)
  np.testing.assert_allclose(metrics_4["ess"], metrics_t["ess"], rtol=1e-4)
  np.testing.assert_allclose(_run(_config("bu", tilt=0.0), 1)[0], loss0, rtol=0)


@pytest.mark.parametrize("field,value", [
    ("learning_rate", 0.0), ("learning_rate", float("nan")), ("learning_rate", None),
    ("final_lr_factor", -0.1), ("segment_seconds", -3.0), ("max_clip_seconds", float("inf")),
    ("sigma", 0.0), ("sigma", -1.0), ("lam", float("nan")), ("eps", -1e-6), ("eps", True),
    ("tilt", -1.0), ("tilt", float("inf")), ("segment_sampling", float("nan")),
    ("anr_range_db", (-30.0, float("inf")))])
def test_train_config_built_directly_refuses_what_the_flags_refuse(field, value):
  # TrainConfig is public (other Flax models compose it): a bad value is an error
  # naming the field, not a NaN loss or a silent zero learning rate.
  with pytest.raises(ValueError, match=field):
    train.TrainConfig(**{field: value})


def test_train_config_accepts_its_edge_values():
  config = train.TrainConfig(final_lr_factor=0.0, eps=0.0, sigma=None, lam=None,
                             learning_rate=np.float32(1e-3), anr_range_db=(0, 0))
  assert config.anr_range_db == (0.0, 0.0) and config.eps == 0.0


def test_indivisible_mixtures_per_step_is_a_clear_error():
  with pytest.raises(ValueError, match=r"--mixtures_per_step=3 .*number of devices \(2\)"):
    train.make_train_step(_config(mixtures_per_step=3), mesh=_mesh(2))


def test_corpus_that_does_not_fit_the_config_is_rejected():
  mesh = _mesh(1)
  segments, clips, lengths = HOST
  with pytest.raises(ValueError, match="segment_seconds"):
    train.place_corpus(segments[:, :1000], clips, lengths, mesh=mesh, config=_config())
  with pytest.raises(ValueError, match="max_clip_seconds"):
    train.place_corpus(segments, clips, lengths, mesh=mesh,
                       config=_config(max_clip_seconds=0.1))
  with pytest.raises(ValueError, match="non-finite"):
    train.place_corpus(np.full_like(segments, np.nan), clips, lengths, mesh=mesh)


# ---------------------------------------------------------------- loop, scan, guard rails


def test_loop_matches_scan_compiles_once_and_stops_on_nan(tmp_path):
  config = _config(steps_per_call=2)
  mesh = _mesh(1)
  corpus = train.place_corpus(*HOST, mesh=mesh, config=config)
  calls = []
  log = tmp_path / "metrics.jsonl"
  with fileio.MetricsWriter(log) as writer:
    state = train.train(config, corpus, mesh=mesh, until_step=2, metrics_writer=writer,
                        on_step=lambda s, st, m: calls.append((s, m["loss"])),
                        compiler_options=FAST)
    # Same program, same data: identical to the scanned reference.
    _, _, reference, ref_metrics = _reference("bu")
    _assert_trees_close(jax.device_get(state.params), reference.params, rtol=0, atol=0)
    assert calls == [(2, pytest.approx(float(ref_metrics["loss"][1])))]

    # One single step (the remainder of steps_per_call), then a NaN corpus.
    state = train.train(config, corpus, mesh=mesh, state=state, until_step=3,
                        metrics_writer=writer, compiler_options=FAST)
    bad = train.place_corpus(*HOST, mesh=mesh)
    bad = bad.replace(segments=bad.segments * jnp.nan)
    with pytest.raises(train.NonFiniteLossError, match="step 3") as error:
      train.train(config, bad, mesh=mesh, state=state, until_step=5, metrics_writer=writer,
                  compiler_options=FAST)
    assert error.value.step == 3
  records = fileio.read_metrics(log)
  assert [r["step"] for r in records] == [0, 1, 2]  # the failing step is not logged
  assert records[1]["loss"] == pytest.approx(float(ref_metrics["loss"][1]))
  # The single step and the 2-step scan each compiled once.
  step_fn = train.make_train_step(config, mesh=mesh, compiler_options=FAST)
  steps_fn = train.make_train_steps(config, mesh=mesh, num_steps=2, compiler_options=FAST)
  for fn in (step_fn, steps_fn):
    if hasattr(fn, "_cache_size"):
      assert fn._cache_size() == 1  # pylint: disable=protected-access


def test_training_resumes_after_a_half_written_metrics_line(tmp_path):
  """A run killed while writing a metrics line appends cleanly when it resumes."""
  config = _config(steps_per_call=1)
  mesh = _mesh(1)
  corpus = train.place_corpus(*HOST, mesh=mesh, config=config)
  log = tmp_path / "metrics.jsonl"
  with fileio.MetricsWriter(log) as writer:
    state = train.train(config, corpus, mesh=mesh, until_step=2, metrics_writer=writer,
                        compiler_options=FAST)
  with open(log, "a", encoding="utf-8") as file:
    file.write('{"step": 2, "loss": 0.')  # killed in the middle of a line
  with fileio.MetricsWriter(log) as writer:
    train.train(config, corpus, mesh=mesh, state=state, until_step=3, metrics_writer=writer,
                compiler_options=FAST)
  lines = log.read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [0, 1, 2]


def test_loop_names_the_failing_step_of_a_later_call(monkeypatch):
  """A non-finite loss in the 3rd call of one ``train`` run names step 2 (not the run's
  first step): the state of that step is the last good one."""
  config = _config(steps_per_call=1)
  mesh = _mesh(1)
  corpus = train.place_corpus(*HOST, mesh=mesh, config=config)
  make, calls = train.make_train_step, []

  def poisoned(*args, **kwargs):
    step_fn = make(*args, **kwargs)

    def step(state, corpus):
      state, metrics = step_fn(state, corpus)
      calls.append(1)
      return state, ({**metrics, "loss": jnp.float32(jnp.nan)} if len(calls) == 3 else metrics)

    return step

  monkeypatch.setattr(train, "make_train_step", poisoned)
  with pytest.raises(train.NonFiniteLossError, match="at step 2") as error:
    train.train(config, corpus, mesh=mesh, until_step=5, compiler_options=FAST)
  assert error.value.step == 2 and len(calls) == 3


def test_raise_if_non_finite_names_the_step_inside_a_scanned_call():
  train.raise_if_non_finite({"loss": np.array([1.0, 2.0])}, first_step=10)
  with pytest.raises(train.NonFiniteLossError) as error:
    train.raise_if_non_finite({"loss": np.array([1.0, np.inf, np.nan])}, first_step=10)
  assert error.value.step == 11
  with pytest.raises(train.NonFiniteLossError, match="step 7"):
    train.raise_if_non_finite({"loss": np.float32(np.nan)}, first_step=7)


  with pytest.raises(train.NonFiniteLossError, match="non-finite J_BU inf at step 2$"):
    train.raise_if_non_finite({"loss": np.array([np.inf])}, first_step=2, what="J_BU",
                              checkpoints=False)


def test_loss_by_name_is_the_losses_of_the_paper():
  rng = np.random.default_rng(0)
  su, sa = rng.uniform(0, 5, 6).astype(np.float32), rng.uniform(0, 50, 4).astype(np.float32)
  w = rng.uniform(1, 3, 6).astype(np.float32)
  mu, ma = np.arange(6) < 5, np.arange(4) < 3
  kw = dict(lam=4.0, mask_u=mu, mask_a=ma)
  re_ = losses.re_loss(su, mask_u=mu)
  assert train.loss_by_name("re", su, None, **kw) == (re_, re_)
  assert train.loss_by_name("snp", su, sa, **kw) == (losses.snp_loss(su, sa, **kw), re_)
  assert train.loss_by_name("bu", su, sa, weights=w, **kw) == \
      losses.bu_loss_from_weights(su, sa, w, **kw)
  with pytest.raises(ValueError, match="weights"):
    train.loss_by_name("bu", su, sa, **kw)
  with pytest.raises(ValueError, match="loss must be one of"):
    train.loss_by_name("pca", su, sa, **kw)
  for name in ("snp", "bu"):  # L_a needs the anomalous frames: a named error, not jnp's
    with pytest.raises(ValueError, match="needs scores_a"):
      train.loss_by_name(name, su, weights=w, **kw)


def test_learning_rate_schedule_of_the_paper():
  config = train.TrainConfig()
  schedule = train.learning_rate_schedule(config)
  at_epoch = lambda e: float(schedule(e * config.steps_per_epoch))
  assert at_epoch(0) == pytest.approx(1e-4)
  assert at_epoch(100) == pytest.approx(1e-4)
  assert at_epoch(150) == pytest.approx((1e-4 + 1e-6) / 2)
  assert at_epoch(200) == pytest.approx(1e-6)
  assert at_epoch(99.998) == pytest.approx(1e-4)
  assert at_epoch(250) == pytest.approx(1e-6)


def test_learning_rate_metric_is_the_rate_of_each_update():
  """``metrics["learning_rate"]`` of the update from step s is schedule(s) (section
  4.2.2's decay), here from step 0 on (decay_start_epoch=0)."""
  config = _config(decay_start_epoch=0)
  _, _, state, metrics = _run(config, 1)
  schedule = train.learning_rate_schedule(config)
  np.testing.assert_allclose(metrics["learning_rate"], [schedule(0), schedule(1)], rtol=1e-6)
  assert metrics["learning_rate"][1] < metrics["learning_rate"][0] == pytest.approx(1e-4)
  assert int(state.step) == 2


def test_config_defaults_are_the_papers():
  config = train.TrainConfig()
  assert (config.loss, config.model_preset.name) == ("bu", "fcn64-large")
  assert config.total_steps == 100_000
  assert config.segment_length == 48000 and config.segments_per_mixture == 10
  assert config.mixtures_per_step == 1 and config.anr_range_db == (-30.0, 10.0)
  hyper = config.loss_hyperparameters
  assert hyper["sigma"] == pytest.approx(1 / (2 * 1344)) and hyper["lam"] == 128
  with pytest.raises(ValueError, match="loss"):
    train.TrainConfig(loss="mse")


# ---------------------------------------------------------------- batch synthesis


@functools.partial(jax.jit, static_argnames="simulate_anomaly", compiler_options=FAST)
def _synthesize_jit(keys, corpus, simulate_anomaly):
  kwargs = dict(segments_per_mixture=4, anr_range_db=(-30.0, 10.0),
                simulate_anomaly=simulate_anomaly)
  mixtures = jax.vmap(lambda k: batch_lib.synthesize_mixture(k, corpus, **kwargs))(keys)
  batch = batch_lib.make_batch(keys, corpus, feature_config=TINY.features, **kwargs)
  clean = features.features(mixtures.normal, config=TINY.features)
  return mixtures, batch, clean


def _synthesize(keys, simulate_anomaly=True):
  """Mixtures, their batch and the features of their normal parts alone."""
  return jax.device_get(_synthesize_jit(keys, batch_lib.make_corpus(*HOST), simulate_anomaly))


def _reference_mask(start, length, num_frames, config):
  """A frame is anomalous iff a context frame's nonzero window covers a clip sample."""
  half, hop, ctx = config.n_fft // 2, config.hop_length, config.context
  window_nonzero = np.zeros(num_frames, bool)
  for t in range(num_frames):
    lo, hi = t * hop - half + 1, t * hop + half - 1  # periodic Hann: w[0] == 0
    window_nonzero[t] = length > 0 and lo <= start + length - 1 and hi >= start
  return np.array([window_nonzero[np.clip(np.arange(t - ctx, t + ctx + 1), 0, num_frames - 1)]
                   .any() for t in range(num_frames)])


KEYS = jax.random.split(jax.random.key(42), 12)


def test_mask_covers_exactly_the_frames_that_hear_the_clip():
  mixtures, batch, clean = _synthesize(KEYS)
  num_frames = batch.frames.shape[1]
  assert num_frames == 1 + 4 * SEGMENT // 256
  for i in range(len(KEYS)):
    start, length = int(mixtures.start[i]), int(mixtures.length[i])
    expected = _reference_mask(start, length, num_frames, TINY.features)
    np.testing.assert_array_equal(batch.anomalous[i], expected)
    # Normal frames are bit for bit the features of the normal sound alone.
    np.testing.assert_array_equal(batch.frames[i][~expected], clean[i][~expected])
    # Frames whose centre lies inside the clip hear it.
    centres = np.arange(num_frames) * 256
    inside = (centres >= start) & (centres < start + length)
    assert inside.any()
    assert np.all(np.any(batch.frames[i][inside] != clean[i][inside], axis=-1))


def test_clip_is_mixed_at_the_drawn_anr():
  mixtures, _, _ = _synthesize(KEYS)
  segments, clips, lengths = HOST
  assert len(set(np.asarray(mixtures.clip_index).tolist())) > 1
  for i in range(len(KEYS)):
    start, length = int(mixtures.start[i]), int(mixtures.length[i])
    clip = int(mixtures.clip_index[i])
    assert length == lengths[clip] and 0 <= start <= 4 * SEGMENT - length
    np.testing.assert_array_equal(mixtures.normal[i],
                                  segments[mixtures.segment_indices[i]].reshape(-1))
    part = slice(start, start + length)
    anomaly = mixtures.anomaly[i].astype(np.float64)
    assert not np.any(np.delete(anomaly, np.arange(start, start + length)))
    np.testing.assert_allclose(anomaly[part], mixtures.alpha[i] * clips[clip, :length],
                               rtol=1e-6)
    anr = 10 * np.log10(np.sum(anomaly[part] ** 2)
                        / np.sum(mixtures.normal[i][part].astype(np.float64) ** 2))
    assert -30 <= mixtures.anr_db[i] < 10
    assert anr == pytest.approx(float(mixtures.anr_db[i]), abs=1e-3)
    np.testing.assert_allclose(mixtures.wave[i], mixtures.normal[i] + mixtures.anomaly[i],
                               rtol=1e-6, atol=1e-7)


def test_a_clip_added_with_alpha_zero_marks_no_frame_anomalous():
  """A silent clip (or a digitally silent normal stretch under it) gives alpha = 0 (eq. 8):
  the frames it touches hold normal sound only, so they are neither anomalous (trained
  to score high) nor normal; other mixtures keep their anomalous frames."""
  segments, clips, lengths = HOST
  silent = clips.copy()
  silent[0] = 0.0  # clip 0 silent
  mixtures, batch, _ = jax.device_get(_synthesize_jit(
      KEYS, batch_lib.make_corpus(segments, silent, lengths), True))
  zero = np.asarray(mixtures.alpha) == 0
  assert zero.any() and not zero.all()
  np.testing.assert_array_equal(zero, np.asarray(mixtures.clip_index) == 0)
  anomalous, normal = np.asarray(batch.anomalous_mask), np.asarray(batch.normal_mask)
  assert not anomalous[zero].any() and anomalous[~zero].any(axis=1).all()
  touched = np.asarray(batch.anomalous) & np.asarray(batch.interior)
  assert touched[zero].any() and not (normal & touched).any()  # excluded from both


def test_same_key_same_batch_whatever_its_position():
  _, batch, _ = _synthesize(KEYS)
  _, again, _ = _synthesize(KEYS)
  _, rolled, _ = _synthesize(jnp.roll(KEYS, 5, axis=0))
  np.testing.assert_array_equal(batch.frames, again.frames)
  np.testing.assert_array_equal(np.roll(batch.frames, 5, axis=0), rolled.frames)
  np.testing.assert_array_equal(np.roll(batch.anomalous, 5, axis=0), rolled.anomalous)
  assert not np.array_equal(batch.frames[0], batch.frames[1])


def test_re_batches_have_no_anomaly():
  mixtures, batch, clean = _synthesize(KEYS, simulate_anomaly=False)
  assert not batch.anomalous.any()
  np.testing.assert_array_equal(mixtures.wave, mixtures.normal)
  np.testing.assert_array_equal(batch.frames, clean)


@pytest.mark.parametrize("clip_length", [1, 255, 256, 257, 700, 3000, 8192])
def test_min_anomalous_frames_is_the_minimum_over_positions(clip_length):
  config, n = TINY.features, 4 * SEGMENT
  num_frames = config.num_frames(n)
  counts = [_reference_mask(s, clip_length, num_frames, config).sum()
            for s in range(0, n - clip_length + 1)]  # every start, by the reference mask
  assert batch_lib.min_anomalous_frames(n, clip_length, config=config) == min(counts)


@pytest.mark.parametrize("clip_length", [1, 255, 256, 257, 700])
def test_anomalous_frames_are_exact_at_every_alignment_to_the_hop(clip_length):
  """The mask at every start within three hops of either end of the mixture, so at
  every alignment to the hop, hop-aligned starts included (where the first window
  that reaches the clip has only its zero coefficient w[0] on it): exactly the frames
  whose context sees a clip sample through a nonzero window coefficient."""
  config, n = TINY.features, 4 * SEGMENT
  num_frames = config.num_frames(n)
  last = n - clip_length
  # every alignment to the hop (three hops' worth) at both ends of the mixture
  starts = np.unique(np.r_[np.arange(min(3 * 256 + 2, last + 1)),
                           np.arange(max(last - 3 * 256, 0), last + 1)])
  masks = np.asarray(jax.jit(jax.vmap(lambda s: batch_lib.anomalous_frames(
      s, jnp.int32(clip_length), num_frames=num_frames, config=config)))(starts))
  for s, mask in zip(starts, masks):
    np.testing.assert_array_equal(mask, _reference_mask(s, clip_length, num_frames, config),
                                  err_msg=f"start {s}")


def test_anr_and_onset_are_drawn_uniformly_over_their_ranges():
  """Section 4.2.1: the ANR is uniform on [-30, 10] dB, and the clip's onset uniform on
  [0, N - len(a)] for each clip (a short clip also reaches the mixture's end)."""
  keys = jax.random.split(jax.random.key(7), 256)
  mixtures, _, _ = _synthesize(keys)
  anr = np.asarray(mixtures.anr_db, np.float64)
  assert anr.min() >= -30 and anr.max() < 10
  assert anr.min() < -27 and anr.max() > 7  # the whole range, not a part of it
  assert np.mean(anr) == pytest.approx(-10.0, abs=3.0)  # SE of the mean ~0.7 dB
  assert np.mean(anr < -20) == pytest.approx(0.25, abs=0.1)
  n = 4 * SEGMENT
  start, length = np.asarray(mixtures.start), np.asarray(mixtures.length)
  for clip_length in CLIP_LENGTHS:
    drawn = length == clip_length
    u = start[drawn] / (n - clip_length)  # in [0, 1]
    assert drawn.sum() > 40 and u.max() <= 1.0
    assert u.min() < 0.15 and u.max() > 0.85, clip_length
    assert np.mean(u) == pytest.approx(0.5, abs=0.12)


def test_frames_that_see_the_padding_are_neither_normal_nor_anomalous():
  """{x^(u)} and {x^(a)} hold interior frames only (``FeatureConfig.interior``): the
  first and last frames see the centered STFT's zero padding and edge-replicated
  context, sound that no mixture holds."""
  _, batch, _ = _synthesize(KEYS)
  num_frames = batch.frames.shape[1]
  inner = np.zeros(num_frames, bool)
  inner[TINY.features.interior(4 * SEGMENT)] = True
  assert inner.any() and not inner.all()
  normal, anomalous = np.asarray(batch.normal_mask), np.asarray(batch.anomalous_mask)
  assert not normal[:, ~inner].any() and not anomalous[:, ~inner].any()
  np.testing.assert_array_equal(normal[:, inner], ~np.asarray(batch.anomalous)[:, inner])


# ---------------------------------------------------------------- parallel and progress


def test_shard_batch_and_replicate():
  mesh = _mesh(4)
  x = parallel.shard_batch(jnp.arange(8.0), mesh)
  assert x.sharding.spec == jax.sharding.PartitionSpec("data")
  assert len(x.addressable_shards) == 4 and x.addressable_shards[0].data.shape == (2,)
  y = parallel.replicate({"a": jnp.ones(3)}, mesh)
  assert y["a"].sharding.is_fully_replicated
  with pytest.raises(ValueError, match="not divisible by the 4 devices"):
    parallel.shard_batch(jnp.arange(6.0), mesh)
  assert parallel.log_devices(mesh)["mesh_devices"] == 4
  with pytest.raises(ValueError, match=r"leading axis None of an array with shape \(\) is not"):
    parallel.shard_batch({"a": jnp.arange(8.0), "scalar": jnp.float32(1.0)}, mesh)
  with pytest.raises(ValueError, match="data_mesh: no devices"):
    parallel.data_mesh([])


def test_check_divisible_names_the_flag_and_a_batch_that_divides():
  mesh = _mesh(4)
  assert parallel.check_divisible(8, mesh) == 2
  for size, suggested in ((6, 4), (1, 4), (9, 8)):  # never 0: at least one per device
    with pytest.raises(ValueError, match=re.escape(
        f"--mixtures_per_step={size} is not divisible by the number of devices (4): each "
        f"device must get the same number of mixtures. Use a multiple of 4 (e.g. "
        f"--mixtures_per_step={suggested}) or run on fewer devices.")):
      parallel.check_divisible(size, mesh)
  with pytest.raises(ValueError, match=r"--mixtures_per_step=0 is not divisible .* \(e\.g\. "
                     r"--mixtures_per_step=4\)"):
    parallel.check_divisible(0, mesh)  # no mixtures at all: refused, not 0 per device
  with pytest.raises(ValueError, match=r"^--clips_per_step=6 .* \(e\.g\. --clips_per_step=4\)"):
    parallel.check_divisible(6, mesh, flag_name="--clips_per_step")


def test_progress_bar_and_metrics_writer(tmp_path):
  stream = io.StringIO()
  bar = progress.ProgressBar(100, initial=10, stream=stream, file_interval_s=0.0)
  bar.update(10)
  bar.update(20, frames=1000.0, loss=1.5)
  line = bar.last_line
  assert line.startswith("step 20/100") and "steps/s" in line and "frames/s" in line
  assert "ETA" in line and "loss 1.5" in line
  assert progress.format_duration(3723) == "1:02:03"
  with fileio.MetricsWriter(tmp_path / "m.jsonl") as writer:
    writer.write(0, {"loss": np.float32(1.5), "bad": np.float32(np.nan)})
  assert fileio.read_metrics(tmp_path / "m.jsonl") == [{"step": 0, "loss": 1.5, "bad": None}]
  assert math.isnan(bar.rates()[0]) is False


def test_progress_bar_rates_and_eta_on_a_fake_clock(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
  bar = progress.ProgressBar(100, initial=10, stream=io.StringIO(), file_interval_s=0.0)
  bar.update(10)  # the first report starts the clock (after compilation): not timed
  now[0] = 104.0
  bar.update(30, frames=8000.0, loss=2.0)  # 20 steps and 8,000 frames in 4 s
  assert bar.last_line == ("step 30/100 [#######-----------------] 30.0% 5.00 steps/s "
                           "2.0k frames/s ETA 0:14 loss 2")
  assert bar.rates() == (5.0, 2000.0)


def test_progress_bar_counting_audio_and_drawing_the_end_once(monkeypatch):
  now = [0.0]
  monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
  stream = io.StringIO()
  bar = progress.ProgressBar(7200, stream=stream, file_interval_s=0.0, unit="audio")
  bar.update(0)
  now[0] = 2.0
  bar.update(3600, frames=225000)
  assert bar.last_line == "audio 1:00:00/2:00:00 [############------------] 50.0% 1800x real time ETA 0:02"
  now[0] = 4.0
  bar.update(7200)
  bar.update(7200, frames=10)  # the end reported again (by the last read, then by its row)
  assert stream.getvalue().splitlines()[-2:] == [
      "audio 1:00:00/2:00:00 [############------------] 50.0% 1800x real time ETA 0:02",
      "audio 2:00:00/2:00:00 [########################] 100.0% 1800x real time ETA 0:00"]


# ------------------------------------------------------------------ uniformization by sampling

def test_segment_probabilities_draw_segments_at_their_rates():
  corpus = batch_lib.make_corpus(*HOST)
  probs = np.array([0.0, 0.0, 0.5, 0.0, 0.0, 0.25, 0.25])
  drawn = batch_lib.with_segment_probabilities(corpus, probs * 4)  # normalized there
  keys = jax.random.split(jax.random.key(0), 400)
  mixtures, _, _ = jax.device_get(_synthesize_jit(keys, drawn, True))
  counts = np.bincount(np.asarray(mixtures.segment_indices).ravel(), minlength=7) / (400 * 4)
  np.testing.assert_allclose(counts, probs, atol=0.04)  # 1,600 draws
  assert counts[[0, 1, 3, 4]].sum() == 0  # probability 0 is never drawn
  # None draws uniformly again: the same mixtures as a corpus that never had probabilities
  again, _, _ = jax.device_get(_synthesize_jit(
      keys[:8], batch_lib.with_segment_probabilities(drawn, None), True))
  plain, _, _ = jax.device_get(_synthesize_jit(keys[:8], corpus, True))
  np.testing.assert_array_equal(again.segment_indices, plain.segment_indices)


@pytest.mark.parametrize("bad, match", [(np.ones(3), "shape"), (-np.ones(7), ">= 0"),
                                        (np.zeros(7), "not all 0"),
                                        (np.full(7, np.nan), "finite")])
def test_segment_probabilities_refused_with_a_clear_error(bad, match):
  with pytest.raises(ValueError, match=match):
    batch_lib.with_segment_probabilities(batch_lib.make_corpus(*HOST), bad)


def test_segment_sampling_config_gives_the_rare_segments_more_draws_and_trains():
  mesh = _mesh(2)
  config = _config(segment_sampling=1.0, mixtures_per_step=2, epochs=1, steps_per_epoch=2,
                   decay_start_epoch=0)
  corpus = train.place_corpus(*HOST, mesh=mesh, config=config)
  p = np.diff(np.concatenate([[0.0], np.asarray(corpus.segment_cdf, np.float64)]))
  assert p.sum() == pytest.approx(1.0, abs=1e-6)
  # five 300-Hz segments, one at 1.2 kHz and one at 3 kHz: the two rare ones drawn more
  assert p[5] > p[:5].max() and p[6] > p[:5].max()
  np.testing.assert_allclose(p, train.segment_probabilities(config, corpus), atol=1e-6)
  state = train.train(config, corpus, mesh=mesh, compiler_options=FAST)
  assert int(state.step) == 2
  # train() sets the draw itself for a corpus placed without the config, and a uniform
  # config refuses a corpus with probabilities in its own step
  state = train.train(config, train.place_corpus(*HOST, mesh=mesh), mesh=mesh,
                      compiler_options=FAST)
  assert int(state.step) == 2
  uniform = _config(mixtures_per_step=2, epochs=1, steps_per_epoch=2, decay_start_epoch=0)
  with pytest.raises(ValueError, match="segment_sampling"):
    train.make_grad_fn(uniform, mesh=mesh, compiler_options=FAST)(
        train.create_state(uniform, mesh=mesh).params, 0, corpus)
  with pytest.raises(ValueError, match="segment_sampling"):
    _config(segment_sampling=-1.0)
  # a corpus placed for another temperature does not carry its draw into train()
  milder = dataclasses.replace(config, segment_sampling=0.25)
  from_other = train.train(milder, corpus, mesh=mesh, compiler_options=FAST)
  own = train.train(milder, train.place_corpus(*HOST, mesh=mesh, config=milder), mesh=mesh,
                    compiler_options=FAST)
  _assert_trees_close(jax.device_get(from_other.params), jax.device_get(own.params), 0, 0)
  assert not np.allclose(train.segment_probabilities(milder, corpus), p)


def test_segment_sampling_same_loss_and_gradients_on_any_device_count():
  """The draw probabilities are a function of the corpus alone, so the batches, and the
  loss and gradients, are the same on 1 and 4 devices; they differ from uniform draws."""
  sampled = _config("bu", segment_sampling=1.0)
  loss0, grads, _, _ = _run(sampled, 1)
  loss0_4, grads_4, _, _ = _run(sampled, 4)
  _assert_same_gradients(loss0_4, grads_4, loss0, grads)
  assert loss0 != _reference("bu")[0]
