"""The held-out split and the label-free choice of the scoring (bu_jax.heldout)."""

import types

import jax
import numpy as np
import pytest

from bu_jax import evaluate, frame_scores, heldout, models, pseudo_anomaly, score_norm


def test_split_is_deterministic_disjoint_and_bounded():
  held, fit = heldout.split(20, fraction=0.1, seed=3)
  assert len(held) == 2 and len(fit) == 18 and sorted(held + fit) == list(range(20))
  assert heldout.split(20, fraction=0.1, seed=3) == (held, fit)
  assert heldout.split(20, fraction=0.1, seed=4) != (held, fit)
  assert len(heldout.split(5, fraction=0.01, seed=0)[0]) == 1  # at least one held out
  assert len(heldout.split(3, fraction=0.99, seed=0)[1]) == 1  # at least one trained on
  with pytest.raises(ValueError, match="1 training clip"):
    heldout.split(1, fraction=0.5, seed=0)
  with pytest.raises(ValueError, match=r"fraction must lie in \(0, 1\), got 0"):
    heldout.split(10, fraction=0.0, seed=0)


def _untrained_scorer_and_clips():
  """An untrained FCN40-small's feature config, scorer and parameters, and a maker
  of 1-s noise clips."""
  preset = models.preset("fcn40-small")
  model, config = preset.build(), preset.features
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, config.dim), np.float32))["params"]
  rng = np.random.default_rng(0)
  wave = lambda: rng.standard_normal(16000).astype(np.float32) * 0.1
  return config, frame_scores.FrameScorer(model, config), params, wave


def test_choosing_without_pseudo_anomalies_is_an_error(tmp_path):
  config, scorer, params, wave = _untrained_scorer_and_clips()
  held = heldout.HeldOut(fit_waves=[wave(), wave()], waves=[wave()], names=["h.wav"])
  with pytest.raises(ValueError, match="needs pseudo-anomalies"):
    heldout.choose_scoring(scorer, params, held, str(tmp_path), kind="auto", neighbors=0,
                           window=1, reduce="max")
  choice = heldout.choose_scoring(scorer, params, held, str(tmp_path), kind="none",
                                  neighbors=10, window=4, reduce="max")
  assert choice.pseudo_auc is None and choice.clip_score["window_frames"] == 4
  assert heldout.describe(choice) == "raw scores, 0.064-s windows"
  assert heldout.calibration_normalization(choice.normalization) is None


def test_validation_error_is_the_mean_over_every_frame_of_the_clips():
  preset = models.preset("fcn40-small")
  model, config = preset.build(), preset.features
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, config.dim), np.float32))["params"]
  scorer = frame_scores.FrameScorer(model, config)
  rng = np.random.default_rng(1)
  short, long = (rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 24000))
  frames = [np.asarray(scorer(params, w)) for w in (short, long)]
  value = heldout.validation_error(scorer, params, [short, long], names=["a.wav", "b.wav"])
  # frame-weighted, not the mean of the two clips' means
  assert value == pytest.approx(np.concatenate(frames).mean(), rel=1e-6)
  assert value != pytest.approx(np.mean([f.mean() for f in frames]), rel=1e-6)
  with pytest.raises(ValueError, match="no held-out clips"):
    heldout.validation_error(scorer, params, [])


def test_validation_summary_reports_the_fall_over_the_last_quarter():
  records = [{"step": s, "heldout_error": v}
             for s, v in ((0, 500.0), (500, 200.0), (1500, 120.0), (2000, 110.0))]
  summary = heldout.validation_summary(records)
  assert summary["steps"] == [0, 500, 1500, 2000]
  assert summary["heldout_error"] == [500.0, 200.0, 120.0, 110.0]
  assert summary["last_quarter_change"] == pytest.approx(110 / 120 - 1)  # from step 1500
  assert heldout.validation_summary(records[:1]) is None
  assert heldout.validation_summary([{"step": 0, "heldout_error": None}] + records[:1]) is None


def test_the_heldout_bank_normalizes_each_heldout_clip_and_its_mixtures_without_it(tmp_path):
  config, scorer, params, wave = _untrained_scorer_and_clips()
  waves = [wave() for _ in range(3)]
  sounds = [10 * wave() for _ in range(2)]
  held = heldout.HeldOut(fit_waves=[wave(), wave()], waves=waves,
                         names=["a.wav", "b.wav", "c.wav"],
                         pseudo_waves=heldout.make_pseudo(waves, sounds, anrs_db=(-5.0,), seed=0))
  choice = heldout.choose_scoring(scorer, params, held, str(tmp_path), kind="knn_z",
                                  neighbors=5, window=1, reduce="max", bank="heldout")
  full, loco = score_norm.fit_heldout_banks(scorer, params, waves, neighbors=5, kind="knn_z")
  assert choice.normalization["bank"] == "heldout"
  assert heldout.describe(choice).startswith("knn_z scores (held-out bank), eq. (11)")
  assert choice.normalization["frames"] == full.frames  # the bank of all held-out clips ...
  stored = score_norm.load_local_normalizer(tmp_path / score_norm.FILE_NAME)
  np.testing.assert_array_equal(stored.scores, full.scores)
  test = wave()  # ... scores the test clips
  np.testing.assert_array_equal(choice.scorer(params, test),
                                score_norm.NormalizedScorer(scorer, full)(params, test))
  clip = lambda s, w: evaluate.interior_clip_score(s, num_samples=len(w), feature_config=config)
  own = [clip(score_norm.NormalizedScorer(scorer, loco[i])(params, w), w)
         for i, w in enumerate(waves)]  # each held-out clip without its own frames
  np.testing.assert_allclose(choice.heldout_scores, own, rtol=1e-6)
  mixtures = held.pseudo_waves[-5.0]
  per = len(mixtures) // len(waves)
  pseudo = [clip(score_norm.NormalizedScorer(scorer, loco[j // per])(params, m), m)
            for j, m in enumerate(mixtures)]
  assert choice.pseudo_auc["mean"] == pytest.approx(pseudo_anomaly.auc(own, pseudo))
  training = heldout.choose_scoring(scorer, params, held, str(tmp_path), kind="knn_z",
                                    neighbors=5, window=1, reduce="max")
  assert "bank" not in training.normalization  # the training clips' bank, as before
  assert training.normalization["frames"] != full.frames


def test_pair_resolution_is_one_pair_of_clips_in_the_mean_over_anrs():
  """10 held-out clips, 20 pseudo-anomalies at each of 3 ANRs: one pair moves one
  ANR's AUC by 1/200 and the mean over the three by 1/600."""
  waves = [np.zeros(10)] * 10
  held = heldout.HeldOut(fit_waves=[], waves=waves, names=[str(i) for i in range(10)],
                         pseudo_waves={a: [np.zeros(10)] * 20 for a in (-10.0, -15.0, -20.0)})
  assert heldout.pair_resolution(held) == pytest.approx(1 / 600)
  held.pseudo_waves = {-10.0: [np.zeros(10)] * 20}
  assert heldout.pair_resolution(held) == pytest.approx(1 / 200)


def _choose_with_reported_aucs(reported, *, one_clip, bank, tmp_path, monkeypatch):
  """``choose_scoring`` (auto kind, one window) on 10 held-out clips and 40 mixtures per
  ANR whose candidates ("none", "training", "crossfit") report the pseudo-anomaly AUCs
  ``reported``: every candidate scores the clips 0 and the mixtures 1, but with
  ``one_clip`` the cross-fitted bank scores held-out clip 0 above every mixture, so a
  lead over it is one clip's (jackknife SE 0.1). Returns the choice and ``held``."""
  n, anrs = 10, (-10.0, -15.0, -20.0)
  held = heldout.HeldOut(fit_waves=[], waves=[np.zeros(4)] * n, names=[str(i) for i in range(n)],
                         pseudo_waves={a: [np.zeros(4)] * (4 * n) for a in anrs})

  def normalize(scorer, params, held, out_dir, *, kind, neighbors, bank, bank_scores=None):
    del scorer, params, held, out_dir, neighbors, bank_scores
    tag = "none" if kind == "none" else bank
    return tag, {"kind": kind, "file": tag}, None

  def check(scorer, params, held, *, reduce, windows, heldout_scorers=None):
    del params, reduce, heldout_scorers
    normal = np.zeros(n)
    if one_clip and scorer == "crossfit":
      normal[0] = 2.0
    pseudo = {f"{a:g}dB": np.ones(4 * n) for a in anrs}
    return {w: (normal, {"mean": reported[scorer]}, pseudo) for w in windows}

  monkeypatch.setattr(heldout, "normalize", normalize)
  monkeypatch.setattr(heldout, "check", check)
  scorer = types.SimpleNamespace(config=models.preset("fcn40-small").features)
  return heldout.choose_scoring(scorer, None, held, str(tmp_path), kind="auto", neighbors=5,
                                window=1, reduce="max", bank=bank), held


@pytest.mark.parametrize("one_clip, kept", [(False, "training"), (True, "crossfit")])
def test_auto_bank_needs_a_lead_beyond_its_standard_error(one_clip, kept, tmp_path,
                                                          monkeypatch):
  """--normalization_bank=auto: the training bank leads by 0.05 (60 pairs of clips).
  When the two banks score the held-out clips alike the lead's jackknife SE is 0 and
  the training bank is kept; when the cross-fitted bank's AUC differs only by one
  held-out clip scoring above every mixture, a different ten clips could undo the
  lead (SE 0.1 > 0.05): the cross-fitted bank is kept. ``chosen_by`` records both."""
  choice, held = _choose_with_reported_aucs(
      {"none": 0.8, "training": 0.95, "crossfit": 0.90}, one_clip=one_clip, bank="auto",
      tmp_path=tmp_path, monkeypatch=monkeypatch)
  se = 0.1 if one_clip else 0.0
  assert choice.scorer == kept and choice.normalization["bank"] == kept
  assert choice.normalization["chosen_by"]["bank_lead_se"] == pytest.approx(se)
  assert choice.normalization["chosen_by"]["training_bank_needs_margin"] == pytest.approx(
      max(se, heldout.pair_resolution(held)), abs=1e-6)
  assert heldout.raw_lead(choice.normalization) is None  # raw scores were not ahead


@pytest.mark.parametrize("one_clip, bank, kept", [
    (False, "auto", "none"), (True, "auto", "crossfit"), (True, "crossfit", "crossfit"),
    (True, "training", "none")])
def test_raw_scores_need_a_lead_beyond_its_standard_error_over_the_cross_fitted_bank(
    one_clip, bank, kept, tmp_path, monkeypatch):
  """Raw scores lead knn_z on the cross-fitted bank by 0.01 (12 pairs of clips). When
  the two score the held-out clips alike the lead's SE is 0 and raw scores are kept;
  when they differ by one held-out clip scoring above every mixture (SE 0.1) knn_z is
  kept, with its bank settled as before (the training bank's lead is within its SE
  too). Without the cross-fitted bank among the candidates raw scores win as before."""
  choice, held = _choose_with_reported_aucs(
      {"none": 0.92, "training": 0.915, "crossfit": 0.91}, one_clip=one_clip, bank=bank,
      tmp_path=tmp_path, monkeypatch=monkeypatch)
  assert choice.scorer == kept  # the kept candidate's scorer: raw, or knn_z on that bank
  lead = heldout.raw_lead(choice.normalization)
  if bank == "training":
    assert lead is None  # no cross-fitted bank: the rule does not apply
    return
  se = 0.1 if one_clip else 0.0
  assert lead == pytest.approx((0.01, max(se, heldout.pair_resolution(held))), abs=1e-6)
  assert choice.normalization["chosen_by"]["raw_lead_se"] == pytest.approx(se)
  if kept == "none":
    assert "raw scores (by +0.0100 over cross-fitted knn_z, needed >0.0008)" in heldout.describe(
        choice)
  else:
    assert "(raw scores' lead +0.0100 within 0.1000)" in heldout.describe(choice)


def test_bank_margin_is_the_kept_bank_s_lead_over_the_other():
  """``bank_margin``: what --normalization_bank=auto's kept bank led by (printed, so a
  near-tie shows); None when no bank was chosen or raw scores won."""
  tried = {"rule": "pseudo_anomaly_auc", "none": 0.9642, "knn_z/training": 0.99,
           "knn_z/crossfit": 0.9888}
  record = {"kind": "knn_z", "bank": "training", "chosen_by": tried}
  assert heldout.bank_margin(record) == pytest.approx(0.0012)
  # the tie rule may keep the cross-fitted bank a little behind: a negative margin
  assert heldout.bank_margin(dict(record, bank="crossfit")) == pytest.approx(-0.0012)
  assert heldout.bank_margin({"kind": "none", "chosen_by": tried}) is None
  assert heldout.bank_margin({"kind": "knn_z", "bank": "heldout", "chosen_by": tried}) is None
  assert heldout.bank_margin({"kind": "knn_z", "bank": "training"}) is None  # not chosen
  choice = heldout.Choice(None, record, {"window_frames": 16, "window_s": 0.256},
                          np.ones(2), {"mean": 0.99})
  assert heldout.describe(choice) == ("knn_z scores (training bank by +0.0012), 0.256-s windows "
                                      "(pseudo-anomaly AUC 0.990)")
  choice = choice._replace(normalization=dict(
      record, bank="crossfit", chosen_by=dict(tried, bank_lead_se=0.0049)))
  assert heldout.describe(choice) == ("knn_z scores (cross-fitted bank by -0.0012, SE 0.0049), "
                                      "0.256-s windows (pseudo-anomaly AUC 0.990)")


def _window_check(normal, pseudo):
  """``check``'s result for one window: clean scores, the AUCs, the mixtures' scores."""
  return (np.asarray(normal, dtype=float), {"mean": pseudo_anomaly.mean_auc(normal, pseudo)},
          {k: np.asarray(v, dtype=float) for k, v in pseudo.items()})


def _windows_case(long_normal, long_pseudo, n=10, per=4):
  """Window 1 (eq. 11) scores every held-out clip 0 and every mixture 1 (pseudo-anomaly
  AUC 1.0); windows 16 and 31 score as given (31) or as window 1 (16)."""
  clean = {"-10dB": np.ones(n * per), "-20dB": np.ones(n * per)}
  checks = {1: _window_check(np.zeros(n), clean), 16: _window_check(np.zeros(n), clean),
            31: _window_check(long_normal, long_pseudo)}
  return checks, {w: c[1]["mean"] for w, c in checks.items()}


def test_settle_window_keeps_the_longest_window_within_one_se_of_the_best():
  """The one-standard-error rule: a tie goes to the longest window; a lead that one
  held-out clip makes (window 31's worse AUC comes from clip 0 alone, partly undone on
  clip 1) is within its jackknife SE, so the longer window is kept; a lead that every
  clip makes alike (SE 0) is not, so the best window is kept. The margins recorded are
  max(floor, SE)."""
  n, per = 10, 4
  # a tie: windows 1 and 16 alike, window 31 alike too
  checks, aucs = _windows_case(np.zeros(n), {"-10dB": np.ones(n * per), "-20dB": np.ones(n * per)})
  assert heldout.settle_window(aucs, checks, floor=0.0)[0] == 31
  # one clip's lead: clip 0's mixtures fall below every clean clip at window 31, while
  # at window 1 clip 1's clean score ties every mixture (window 31 is better on clip 1)
  pseudo = {k: np.r_[-np.ones(per), np.ones(n * per - per)] for k in ("-10dB", "-20dB")}
  checks, aucs = _windows_case(np.zeros(n), pseudo)
  checks[1] = _window_check(np.r_[0.0, 1.0, np.zeros(n - 2)],
                            {k: np.ones(n * per) for k in ("-10dB", "-20dB")})
  aucs[1] = checks[1][1]["mean"]
  checks[16] = checks[1]
  aucs[16] = aucs[1]
  lead = aucs[1] - aucs[31]
  se = pseudo_anomaly.difference_se(*checks[1][::2], *checks[31][::2])
  assert 0 < lead < se  # the construction
  window, margins = heldout.settle_window(aucs, checks, floor=1e-3)
  assert window == 31
  assert margins[31] == pytest.approx(se) and margins[16] == pytest.approx(1e-3)
  # every clip's lead alike: each clip's first mixture falls below the clean clips
  pseudo = {k: np.tile(np.r_[-1.0, np.ones(per - 1)], n) for k in ("-10dB", "-20dB")}
  checks, aucs = _windows_case(np.zeros(n), pseudo)
  assert aucs[1] - aucs[31] == pytest.approx(0.25)
  window, margins = heldout.settle_window(aucs, checks, floor=1e-3)
  assert window == 16 and margins[31] == pytest.approx(1e-3)  # SE 0: the floor
  # the floor alone: a lead below it is no lead
  assert heldout.settle_window(aucs, checks, floor=0.3)[0] == 31


def test_window_lead_names_the_best_window_when_a_longer_one_was_kept():
  """``window_lead``: the best window (the one ``needs_margin`` leaves out) and its lead
  over the kept one, None when the best was kept or nothing was chosen; ``describe``
  shows it."""
  tried = {"rule": heldout.WINDOW_RULE, "1": 0.99, "16": 0.9925, "31": 0.9917, "125": 0.99,
           "needs_margin": {"1": 0.004, "31": 0.004, "125": 0.0031}}
  kept = {"window_frames": 125, "window_s": 2.0, "chosen_by": tried}
  assert heldout.window_lead(kept) == (0.256, pytest.approx(0.0025))
  assert heldout.window_lead(dict(kept, window_frames=16, window_s=0.256)) is None
  assert heldout.window_lead({"window_frames": 31, "window_s": 0.496}) is None
  choice = heldout.Choice(None, {"kind": "knn_z"}, kept, np.ones(2), {"mean": 0.99})
  assert heldout.describe(choice) == ("knn_z scores, 2-s windows (within one SE of 0.256-s "
                                      "windows' +0.0025) (pseudo-anomaly AUC 0.990)")


def test_split_holds_out_the_rounded_fraction():
  """``round(fraction * n)`` clips, not its floor: a quarter of 10 clips is 3 (2.6)."""
  assert len(heldout.split(10, fraction=0.26, seed=0)[0]) == 3
  assert len(heldout.split(7, fraction=0.2, seed=0)[0]) == 1  # 1.4
  assert len(heldout.split(30, fraction=0.1, seed=0)[0]) == 3


class _LevelScorer:
  """FrameScorer's calling convention: frame t of a clip scores the clip's first
  sample plus ``offset`` plus a ramp 0 .. 1 over the clip's frames."""

  config = models.preset("fcn40-small").features

  def __init__(self, offset=0.0):
    self.offset = offset

  def __call__(self, params, wave, *, name="waveform", with_codes=False):
    del params, name, with_codes
    t = self.config.num_frames(len(wave))
    return (float(wave[0]) + self.offset + np.linspace(0.0, 1.0, t)).astype(np.float32)


def test_score_clips_reduces_the_interior_frames_as_asked():
  """``reduce="mean"`` (the DCASE baselines' clip score) is the mean of the interior
  frames' scores, ``"max"`` their maximum (eq. 11); a window W > 1 the maximum of the
  means of W consecutive frames."""
  scorer, n = _LevelScorer(), 16000
  wave = np.full(n, 0.5, np.float32)
  frames = scorer(None, wave)[scorer.config.interior(n)].astype(np.float64)
  _, mean = heldout.score_clips(scorer, None, [(wave, "a.wav")], reduce="mean")
  _, peak = heldout.score_clips(scorer, None, [(wave, "a.wav")], reduce="max", windows=(1, 4))
  assert mean[1][0] == pytest.approx(frames.mean(), rel=1e-6)
  assert peak[1][0] == pytest.approx(frames.max(), rel=1e-6)
  assert peak[4][0] == pytest.approx(frames[-4:].mean(), rel=1e-6)
  assert mean[1][0] < peak[4][0] < peak[1][0]


def test_check_averages_the_aucs_over_the_anrs_and_scores_each_clip_s_mixtures_with_its_scorer():
  """Two held-out clips, two mixtures of each per ANR (clip-major, as ``pseudo_anomaly.mix``
  makes them). At -10 dB the mixtures score above both clips (AUC 1), at -20 dB below
  (AUC 0): the mean is 0.5. With leave-one-clip-out scorers, clip j's mixtures
  (2j, 2j + 1) are scored by clip j's scorer."""
  n = 8000
  clip = lambda v: np.full(n, v, np.float32)
  held = heldout.HeldOut(fit_waves=[], waves=[clip(0.0), clip(0.1)], names=["a", "b"],
                         pseudo_waves={-10.0: [clip(v) for v in (1.0, 1.1, 1.2, 1.3)],
                                       -20.0: [clip(v) for v in (-1.0, -1.1, -1.2, -1.3)]})
  scorer = _LevelScorer()
  (scores, auc, pseudo), = heldout.check(scorer, None, held, reduce="max", windows=(1,)).values()
  assert auc == {"mean": pytest.approx(0.5), "-10dB": 1.0, "-20dB": 0.0}
  assert scores.shape == (2,) and pseudo["-10dB"].shape == (4,)
  loco = [_LevelScorer(0.0), _LevelScorer(100.0)]  # clip j's own scorer
  (loco_scores, _, loco_pseudo), = heldout.check(scorer, None, held, reduce="max", windows=(1,),
                                                 heldout_scorers=loco).values()
  np.testing.assert_allclose(loco_scores - scores, [0.0, 100.0], atol=1e-4)
  for anr in ("-10dB", "-20dB"):
    np.testing.assert_allclose(loco_pseudo[anr] - pseudo[anr], [0.0, 0.0, 100.0, 100.0],
                               atol=1e-4)
