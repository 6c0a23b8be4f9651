"""Held-out normal training clips: the threshold's clips and the label-free choice of the scoring.

A run that holds some normal training clips out of training knows, without a
test label, how a scorer treats normal sound it has not seen: their clip scores
calibrate phi (eq. 4), and the same clips with something-else sounds mixed in
(``bu_jax.pseudo_anomaly``) should score higher. The pseudo-anomaly AUC then
chooses between evaluations of one trained model:

* the score normalization: with ``kind="auto"``, raw scores or "knn_z"
  (``bu_jax.score_norm``, its bank fitted on the clips the model trained on,
  or with ``bank="heldout"`` on the held-out clips, each held-out clip
  normalized by the bank of the others);
* the clip score's window: with ``window=CHOSEN_WINDOW``, one of
  ``evaluate.window_candidates`` (one frame, eq. 11, and 0.25 / 0.5 / 1 / 2 s).

The pair with the highest mean pseudo-anomaly AUC over the ANRs wins (the first
maximum: raw before knn_z, shorter windows first; the training bank and raw scores
must beat knn_z on the cross-fitted bank by more than one pair of clips and the SE
of their lead), and then the longest window within one standard error of its best
window's AUC is kept (``settle_window``).
Shared by
``experiments.toycar`` and ``experiments.dcase``.

* ``split``: which clips are held out (deterministic in a seed).
* ``HeldOut``: the clips a model trains on, the held-out ones, their pseudo-anomalies.
* ``score_clips``: frame scores and clip scores for several windows at once.
* ``choose_scoring``: the scorer to evaluate with, its records and φ's clip scores.
* ``validation_error``: the held-out clips' mean frame score, the training's
  validation curve (``runner.train_or_resume``'s ``validate``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, NamedTuple, Optional, Sequence

from absl import logging
import numpy as np

from bu_jax import artifact
from bu_jax import evaluate
from bu_jax import pseudo_anomaly
from bu_jax import score_norm

# How the printed lines name a bank other than the training frames' own scores.
BANK_NAMES = {score_norm.HELDOUT_BANK: "held-out bank", score_norm.CROSSFIT_BANK: "cross-fitted bank",
              score_norm.TRAINING_BANK: "training bank"}  # the last only when chosen (auto)
CHOSEN_WINDOW = 0  # window=0: chosen by the pseudo-anomaly AUC


def split(n: int, *, fraction: float, seed: int) -> tuple[list[int], list[int]]:
  """Indices of the held-out clips and of the rest, each sorted.

  ``round(fraction * n)`` clips, at least one and at most ``n - 1``, drawn by
  a permutation of ``numpy.random.default_rng(seed)``.

  Raises:
    ValueError: ``n`` < 2 or ``fraction`` outside (0, 1).
  """
  if n < 2:
    raise ValueError(f"{n} training clip(s); need at least 2 to hold some out")
  if not 0 < fraction < 1:
    raise ValueError(f"the held-out fraction must lie in (0, 1), got {fraction}")
  order = np.random.default_rng(seed).permutation(n)
  n_held = min(n - 1, max(1, int(round(fraction * n))))
  return sorted(int(i) for i in order[:n_held]), sorted(int(i) for i in order[n_held:])


@dataclasses.dataclass
class HeldOut:
  """The clips of one model: those it trains on, the held-out ones and their pseudo-anomalies.

  Attributes:
    fit_waves: the training clips the model trains on (the knn bank's clips).
    waves: the held-out normal clips (phi's clips).
    names: their names (paths), for error messages and the calibration.
    pseudo_waves: ANR (dB) -> ``pseudo_anomaly.mix`` of ``waves`` at that
      ANR; empty without something-else sounds.
    fit_names: names of ``fit_waves`` for error messages (None: "training clip i").
  """

  fit_waves: list
  waves: list
  names: list
  pseudo_waves: dict = dataclasses.field(default_factory=dict)
  fit_names: Optional[list] = None


def validation_error(scorer, params, waves: Sequence[np.ndarray], *,
                     names: Optional[Sequence[str]] = None) -> float:
  """The mean frame score A(x_t) (eq. 5) over every frame of the held-out clips.

  Eq. (7)'s normal term on normal sound the model has not trained on: the
  validation loss of the reconstruction. While it still falls, training has
  not converged; it needs no test clip and no label.

  Args:
    scorer: a ``frame_scores.FrameScorer`` (raw scores, no normalization).
    params: the AE parameters.
    waves: the held-out normal clips.
    names: their names, for error messages.

  Raises:
    ValueError: no clips.
  """
  if not waves:
    raise ValueError("no held-out clips to validate on")
  names = names or [f"held-out clip {i}" for i in range(len(waves))]
  total, count = 0.0, 0
  for wave, name in zip(waves, names):
    frames = np.asarray(scorer(params, wave, name=name), dtype=np.float64)
    total += float(frames.sum())
    count += frames.size
  return total / max(count, 1)


def validation_summary(records: Sequence[dict]) -> Optional[dict]:
  """The validation curve of ``validation.jsonl`` records (``{"step",
  "heldout_error"}``, in step order) and how much it still fell at the end.

  Returns ``{"steps", "heldout_error", "last_quarter_change"}``: the last
  change is the relative change from the record nearest to 3/4 of the last
  step to the last record (e.g. -0.04: 4 % lower); None without two records.
  """
  records = [r for r in records if r.get("heldout_error") is not None]
  if len(records) < 2:
    return None
  steps = [int(r["step"]) for r in records]
  values = [float(r["heldout_error"]) for r in records]
  ref = min(range(len(steps) - 1), key=lambda i: abs(steps[i] - 0.75 * steps[-1]))
  change = (values[-1] - values[ref]) / values[ref] if values[ref] > 0 else None
  return {"steps": steps, "heldout_error": values, "last_quarter_change": change}


def make_pseudo(waves: Sequence[np.ndarray], something_else: Sequence[np.ndarray], *,
                anrs_db: Sequence[float], seed: int) -> dict:
  """ANR -> the held-out ``waves`` with something-else sounds mixed in at that
  ANR (``pseudo_anomaly.mix``); {} without something-else sounds."""
  if not something_else:
    return {}
  return {float(anr): pseudo_anomaly.mix(waves, something_else, anr_db=anr, seed=seed)
          for anr in anrs_db}


def score_clips(scorer, params, waves_and_names, *, reduce: str,
                windows: Sequence[int] = (1,)) -> tuple[list, dict[int, np.ndarray]]:
  """Frame scores of each clip, and its clip score for each window: eq. (11)
  (or its window means, ``evaluate.clip_score``) over the interior frames, as
  ``experiments.score`` computes it. Returns (frames, {window: clip scores})."""
  cache = {}
  frames, scores = [], {w: [] for w in windows}
  for wave, name in waves_and_names:
    key = id(wave)
    if key not in cache:
      f = scorer(params, wave, name=name)
      cache[key] = (f, {w: evaluate.interior_clip_score(
          f, num_samples=len(wave), feature_config=scorer.config, reduce=reduce, window=w)
                        for w in windows})
    frames.append(cache[key][0])
    for w in windows:
      scores[w].append(cache[key][1][w])
  return frames, {w: np.asarray(v, dtype=np.float64) for w, v in scores.items()}


def normalize(scorer, params, held: HeldOut, out_dir: str, *, kind: str,
              neighbors: int, bank: str = score_norm.TRAINING_BANK,
              bank_scores: Optional[np.ndarray] = None
              ) -> tuple[Any, dict, Optional[list]]:
  """``scorer`` with score normalization ``kind`` applied, and its record.

  "knn", "knn_z": fits a ``score_norm.LocalNormalizer`` on the interior frames of
  ``held.fit_waves`` (``bank="training"``) or of the held-out clips
  ``held.waves`` (``bank="heldout"``, ``score_norm.fit_heldout_banks``), or
  the codes of ``held.fit_waves`` with ``bank_scores`` as their scores
  (``bank="crossfit"``: their out-of-fold scores, ``crossfit.out_of_fold_scores``), and
  saves it to ``<out_dir>/score_normalizer.npz``; "none": the scorer as it is
  (an earlier run's bank in ``out_dir`` is removed, as no calibration names it).

  Returns:
    ``(scorer, record, heldout_scorers)``; the record, ``{"kind": "knn" |
    "knn_z", "neighbors": k, "frames": N, "file": name}`` (plus ``"bank":
    "heldout"``) or ``{"kind": "none"}``, goes into results.json and
    (``calibration_normalization``) the calibration. ``heldout_scorers`` is
    None, or with the held-out bank one scorer per held-out clip whose bank
    leaves that clip out (``check`` scores clip i and its pseudo-anomalies with
    the i-th).
  """
  t0 = time.perf_counter()
  loco = None
  if kind != "none" and bank == score_norm.HELDOUT_BANK:
    normalizer, banks = score_norm.fit_heldout_banks(
        scorer, params, held.waves, neighbors=neighbors, kind=kind, names=held.names)
    normalizer.save(os.path.join(out_dir, score_norm.FILE_NAME))
    loco = [score_norm.NormalizedScorer(scorer, b) for b in banks]
    scorer = score_norm.NormalizedScorer(scorer, normalizer)
  elif kind != "none" and bank == score_norm.CROSSFIT_BANK:
    if bank_scores is None:
      raise ValueError("--normalization_bank=crossfit needs the training frames' out-of-fold "
                       "scores (bank_scores)")
    codes, _ = score_norm.clip_frames(scorer, params, held.fit_waves, names=held.fit_names)
    normalizer = score_norm.fit_from_frames(scorer, params, codes, bank_scores,
                                            neighbors=neighbors, kind=kind,
                                            heldout_waves=held.waves)
    normalizer.save(os.path.join(out_dir, score_norm.FILE_NAME))
    scorer = score_norm.NormalizedScorer(scorer, normalizer)
  else:
    if bank not in score_norm.BANKS or bank == score_norm.AUTO_BANK:  # auto: choose_scoring's
      raise ValueError(f"--normalization_bank must be one of {score_norm.BANKS[:-1]}, got "
                       f"{bank!r}")
    scorer, normalizer = score_norm.prepare(
        scorer, params, held.fit_waves, kind=kind, neighbors=neighbors, directory=out_dir,
        heldout_waves=held.waves, names=held.fit_names)
  if normalizer is None:
    return scorer, {"kind": "none"}, None
  logging.info("%s fitted and saved in %.1f s", normalizer.describe(), time.perf_counter() - t0)
  record = {"kind": normalizer.kind, "neighbors": normalizer.neighbors,
            "frames": normalizer.frames, "file": score_norm.FILE_NAME,
            "fingerprint": normalizer.fingerprint}
  if bank != score_norm.TRAINING_BANK:
    record["bank"] = bank
  if normalizer.choice is not None:  # k chosen from the held-out clips
    record["neighbors_heldout_log_density"] = {
        str(k): round(v, 4) for k, v in normalizer.choice.items()}
  return scorer, record, loco


def _score_each(scorers: Sequence[Any], params, waves, names, *, reduce: str,
                windows: Sequence[int]) -> dict[int, np.ndarray]:
  """``score_clips`` of clip j by ``scorers[j]``: {window: clip scores}."""
  out = {w: [] for w in windows}
  for one, wave, name in zip(scorers, waves, names):
    _, scores = score_clips(one, params, [(wave, name)], reduce=reduce, windows=windows)
    for w in windows:
      out[w].append(scores[w][0])
  return {w: np.asarray(v, dtype=np.float64) for w, v in out.items()}


def check(scorer, params, held: HeldOut, *, reduce: str, windows: Sequence[int],
          heldout_scorers: Optional[Sequence[Any]] = None
          ) -> dict[int, tuple[np.ndarray, Optional[dict], dict]]:
  """Per clip-score window: the held-out normal clips' scores, the
  pseudo-anomaly AUC per ANR and their mean (None without pseudo-anomalies),
  and the pseudo-anomalies' scores per ANR ({} without): everything
  label-free a run knows of a scorer. With ``heldout_scorers`` (one
  per held-out clip, ``normalize``'s leave-one-clip-out scorers) clip i and its
  pseudo-anomalies are scored by the i-th instead of ``scorer``."""
  if heldout_scorers is None:
    _, scores = score_clips(scorer, params, zip(held.waves, held.names), reduce=reduce,
                            windows=windows)
  else:
    scores = _score_each(heldout_scorers, params, held.waves, held.names, reduce=reduce,
                         windows=windows)
  if not held.pseudo_waves:
    return {w: (scores[w], None, {}) for w in windows}
  by_anr = {w: {} for w in windows}
  pseudo_scores = {w: {} for w in windows}
  for anr, waves in held.pseudo_waves.items():
    names = [f"pseudo-anomaly {i} at {anr:g} dB" for i in range(len(waves))]
    if heldout_scorers is None:
      _, pseudo = score_clips(scorer, params, zip(waves, names), reduce=reduce,
                              windows=windows)
    else:  # mixtures are clip-major (``pseudo_anomaly.mix``): mixture j is of clip j // per
      per = len(waves) // len(held.waves)
      pseudo = _score_each([heldout_scorers[j // per] for j in range(len(waves))], params,
                           waves, names, reduce=reduce, windows=windows)
    for w in windows:
      by_anr[w][f"{anr:g}dB"] = pseudo_anomaly.auc(scores[w], pseudo[w])
      pseudo_scores[w][f"{anr:g}dB"] = pseudo[w]
  return {w: (scores[w], {"mean": float(np.mean(list(by_anr[w].values()))), **by_anr[w]},
              pseudo_scores[w])
          for w in windows}


def pair_resolution(held: HeldOut) -> float:
  """How much one pair of clips (a held-out normal clip and a pseudo-anomaly
  of one ANR) moves the pseudo-anomaly AUC's mean over the ANRs: 1 / (held-out
  clips x pseudo-anomalies per ANR x ANRs); 10 x 40 x 3 gives 1/1200. Needs
  pseudo-anomalies."""
  per_anr = [len(w) for w in held.pseudo_waves.values()]
  return 1.0 / (len(held.waves) * min(per_anr) * len(per_anr))


WINDOW_RULE = "pseudo_anomaly_auc, longest within one SE of the best"


def settle_window(aucs: dict, checks: dict, *, floor: float) -> tuple[int, dict]:
  """The clip-score window to keep, from each window's pseudo-anomaly AUC
  (``aucs``) and ``check``'s results (``checks``): the longest window whose AUC
  is within max(``floor``, SE) of the best window's, the SE being the jackknife
  standard error of the best window's lead over it
  (``pseudo_anomaly.difference_se``). This is the one-standard-error rule of
  model selection, with the longer window as the simpler model: it averages
  more frames, so a single frame's spike (a normal transient, or a noisy
  frame score, eq. 11's weakness) moves it less. With ten held-out clips the
  pseudo-anomaly AUCs of the windows often differ by less than one clip's
  worth; a shorter window that leads by so little is not evidence, and
  choosing it anyway made the choice a coin toss between seeds.

  Returns (window, {other window: the margin it needed}); the best window is
  the first maximum (shorter first).
  """
  windows = sorted(aucs)
  best = max(windows, key=lambda w: aucs[w])
  margins = {}
  for w in windows:
    if w == best:
      continue
    (normal_b, _, pseudo_b), (normal_w, _, pseudo_w) = checks[best], checks[w]
    se = pseudo_anomaly.difference_se(normal_b, pseudo_b, normal_w, pseudo_w) if pseudo_b else 0.0
    margins[w] = max(floor, se)
  within = [w for w in windows if w == best or aucs[best] - aucs[w] <= margins[w] + 1e-12]
  return max(within), margins


def window_record(window: int, config, *, reduce: str,
                  chosen: Optional[tuple[dict, dict]] = None) -> dict:
  """results.json's ``clip_score`` entry: the reduction (``--reduce``), the window in
  frames and seconds, and, when ``chosen`` = (each candidate's pseudo-anomaly AUC,
  ``settle_window``'s margins), both (the latter as ``needs_margin``: the lead over
  each other window that the best one needed)."""
  record = {"reduce_over_windows": reduce, "window_frames": int(window),
            "window_s": round(window * config.hop_length / config.sample_rate, 4)}
  if chosen is not None:
    tried, margins = chosen
    record["chosen_by"] = {"rule": WINDOW_RULE,
                           **{str(w): round(auc, 4) for w, auc in tried.items()},
                           "needs_margin": {str(w): round(m, 6) for w, m in margins.items()}}
  return record


def window_lead(clip_record: dict) -> Optional[tuple[float, float]]:
  """(the best window in seconds, its pseudo-anomaly AUC's lead over the kept
  window) from a ``clip_score`` record when ``settle_window`` kept a longer
  window than the best one; None when it kept the best (or nothing was chosen).
  The best window is the one ``needs_margin`` leaves out."""
  tried = clip_record.get("chosen_by") or {}
  margins = tried.get("needs_margin")
  if not margins:
    return None
  best = next(w for w in tried if w.isdigit() and w not in margins)
  kept = str(clip_record["window_frames"])
  if best == kept:
    return None
  hop_s = clip_record["window_s"] / clip_record["window_frames"]
  return round(int(best) * hop_s, 4), round(tried[best] - tried[kept], 4)


class Choice(NamedTuple):
  """What ``choose_scoring`` chose: the scorer, the records of its normalization
  and clip score (results.json), the held-out clip scores (phi's) and the
  pseudo-anomaly AUCs (None without pseudo-anomalies)."""
  scorer: Any
  normalization: dict
  clip_score: dict
  heldout_scores: np.ndarray
  pseudo_auc: Optional[dict]


def choose_scoring(scorer, params, held: HeldOut, out_dir: str, *, kind: str, neighbors: int,
                   window: int, reduce: str, bank: str = score_norm.TRAINING_BANK,
                   bank_scores: Optional[np.ndarray] = None) -> Choice:
  """The scorer to evaluate a model with, chosen on ``held`` without labels.

  With ``kind="auto"`` the normalization is raw or knn_z, and with
  ``window=CHOSEN_WINDOW`` the window is one of ``evaluate.window_candidates``:
  the pair with the highest pseudo-anomaly AUC (the first maximum: raw before
  knn_z, shorter windows first; but see the margins below); the window kept is
  then the longest whose AUC is within max(one pair of clips, the jackknife SE
  of the difference) of that best window's (``settle_window``). The records' ``chosen_by`` hold each
  candidate's best AUC (the clip score's: each window's AUC and the margin it
  was allowed, ``needs_margin``). Otherwise ``kind`` and ``window`` are used as given.
  ``bank`` says whose frames the knn bank holds (``normalize``); ``auto``
  makes knn_z (or knn) on the training bank and on the cross-fitted bank two
  candidates (after raw, the cross-fitted last; ``chosen_by`` keys
  ``knn_z/training``, ``knn_z/crossfit``) and records the kept one as the
  normalization's ``bank``. The training bank wins only by more than one pair
  of clips (``pair_resolution``) and more than the standard error of its lead
  (``pseudo_anomaly.difference_se``, a jackknife over the held-out clips, each
  bank at its best window): on a tie within that, the cross-fitted bank (with
  its best window) is kept, since the training bank's scores are those of
  frames the model trained on, the very bias the cross-fitted bank removes,
  and a lead that one pair, or a different draw of the held-out clips, could
  undo is no evidence. ``chosen_by`` records both (``training_bank_needs_margin``,
  the larger; ``bank_lead_se``). Raw scores, too, win against the cross-fitted
  bank (when it is a candidate) only by such a margin over its knn_z (each at its
  best window; ``raw_lead``, ``raw_needs_margin``, ``raw_lead_se``): on a tie
  within that, the best knn_z candidate is kept (and its bank settled as above),
  since raw scores carry what the cross-fitted bank measures each frame against, the error level
  of its own kind of normal frame, out of fold; a rare operating mode that is
  harder to reconstruct scores higher in raw errors for that alone. With the
  held-out bank, the held-out clips (phi's scores, the pseudo-anomaly AUC) are
  normalized leave-one-clip-out, the test clips by the bank of all of them.
  The bank of the chosen normalization (if any) is left in ``out_dir``.

  Raises:
    ValueError: a choice is asked for but ``held`` has no pseudo-anomalies.
  """
  kinds = ("none", score_norm.KIND_Z) if kind == score_norm.AUTO_KIND else (kind,)
  banks = score_norm.bank_candidates(bank)
  candidates = [(k, b) for k in kinds for b in (banks[:1] if k == "none" else banks)]
  windows = (evaluate.window_candidates(scorer.config) if window == CHOSEN_WINDOW
             else (window,))
  if (len(candidates) > 1 or len(windows) > 1) and not held.pseudo_waves:
    raise ValueError("choosing the scoring needs pseudo-anomalies (something-else sounds)")

  def label(candidate):
    return candidate[0] if len(banks) == 1 or candidate[0] == "none" else "/".join(candidate)

  tried = {}
  for candidate in candidates:  # the last's bank stays if it wins
    normalized, record, loco = normalize(scorer, params, held, out_dir, kind=candidate[0],
                                         neighbors=neighbors, bank=candidate[1],
                                         bank_scores=bank_scores)
    tried[candidate] = (normalized, record, check(normalized, params, held, reduce=reduce,
                                                  windows=windows, heldout_scorers=loco))
  auc = {(c, w): (t[2][w][1] or {"mean": -np.inf})["mean"]
         for c, t in tried.items() for w in windows}
  best, best_window = max(auc, key=auc.get)  # the first maximum

  def lead(a, b):
    """Candidate a's pseudo-anomaly AUC minus b's, each at its best window (the first
    maxima); the margin a must lead by, max(one pair of clips, the lead's SE); the SE."""
    at = [max(windows, key=lambda w, c=c: auc[c, w]) for c in (a, b)]
    (normal_a, _, pseudo_a), (normal_b, _, pseudo_b) = (tried[c][2][w] for c, w in zip((a, b), at))
    se = pseudo_anomaly.difference_se(normal_a, pseudo_a, normal_b, pseudo_b)
    return auc[a, at[0]] - auc[b, at[1]], max(pair_resolution(held), se), se

  raw_tolerance = raw_se = raw_lead = None
  if best[0] == "none" and len(kinds) > 1 and score_norm.CROSSFIT_BANK in banks:
    raw_lead, raw_tolerance, raw_se = lead(best, (kinds[-1], score_norm.CROSSFIT_BANK))
    if raw_lead <= raw_tolerance + 1e-12:
      best, best_window = max(((c, w) for c in candidates if c[0] != "none" for w in windows),
                              key=auc.get)  # the first maximum; its bank is settled below
  tolerance = lead_se = None
  if len(banks) > 1:
    knn_kind = best[0] if best[0] != "none" else kinds[-1]
    bank_lead, tolerance, lead_se = lead((knn_kind, score_norm.TRAINING_BANK),
                                         (knn_kind, score_norm.CROSSFIT_BANK))
    if best == (knn_kind, score_norm.TRAINING_BANK) and bank_lead <= tolerance + 1e-12:
      best = (knn_kind, score_norm.CROSSFIT_BANK)  # with its best window (the first maximum)
      best_window = max(windows, key=lambda w: auc[best, w])
  if best != candidates[-1]:
    normalize(scorer, params, held, out_dir, kind=best[0], neighbors=neighbors,
              bank=best[1], bank_scores=bank_scores)  # its bank
  normalized, record, checks = tried[best]
  chosen_window = None
  if len(windows) > 1:
    by_window = {w: auc[best, w] for w in windows}
    best_window, margins = settle_window(by_window, checks, floor=pair_resolution(held))
    chosen_window = (by_window, margins)
  scores, pseudo, _ = checks[best_window]
  if len(banks) > 1 and best[0] != "none":
    record = dict(record, bank=best[1])
  if len(candidates) > 1:
    record = dict(record, chosen_by={"rule": "pseudo_anomaly_auc", **{
        label(c): round(max(auc[c, w] for w in windows), 4) for c in candidates}})
    if tolerance is not None:
      record["chosen_by"]["training_bank_needs_margin"] = round(tolerance, 6)
      record["chosen_by"]["bank_lead_se"] = round(lead_se, 6)
    if raw_tolerance is not None:
      record["chosen_by"]["raw_lead"] = round(raw_lead, 6)
      record["chosen_by"]["raw_needs_margin"] = round(raw_tolerance, 6)
      record["chosen_by"]["raw_lead_se"] = round(raw_se, 6)
  clip_record = window_record(best_window, scorer.config, reduce=reduce, chosen=chosen_window)
  return Choice(normalized, record, clip_record, scores, pseudo)


def bank_margin(record: dict) -> Optional[float]:
  """How far the bank kept by ``normalization_bank="auto"`` led the other one: its
  pseudo-anomaly AUC (best window) minus the other bank's, from a normalization
  record's ``chosen_by`` (None when no bank was chosen, or raw scores won). The
  training bank is kept only when this exceeds ``training_bank_needs_margin``
  (one pair of clips, ``pair_resolution``, or the lead's SE, the larger); a
  negative margin is a cross-fitted bank kept within that."""
  tried, kind, bank = record.get("chosen_by") or {}, record.get("kind"), record.get("bank")
  other = {score_norm.TRAINING_BANK: score_norm.CROSSFIT_BANK,
           score_norm.CROSSFIT_BANK: score_norm.TRAINING_BANK}.get(bank)
  if other is None or f"{kind}/{bank}" not in tried or f"{kind}/{other}" not in tried:
    return None
  return round(tried[f"{kind}/{bank}"] - tried[f"{kind}/{other}"], 4)


def raw_lead(record: dict) -> Optional[tuple[float, float]]:
  """(raw scores' pseudo-anomaly AUC lead over knn_z on the cross-fitted bank, the
  margin it needed) from a normalization record, when raw scores were the first
  maximum (``choose_scoring``); None otherwise. Raw scores were kept when the lead
  exceeds the margin, else knn_z."""
  tried = record.get("chosen_by") or {}
  if "raw_lead" not in tried:
    return None
  return tried["raw_lead"], tried["raw_needs_margin"]


def describe(choice: Choice) -> str:
  """E.g. "knn_z scores, 0.5-s windows (pseudo-anomaly AUC 0.981)", with the bank
  when one was chosen: "knn_z scores (training bank by +0.0096, SE 0.0089), ..."
  (the SE of the training bank's lead, ``choose_scoring``), and the best window
  when a longer one was kept: "2-s windows (within one SE of 0.496-s windows'
  +0.0021)" (``window_lead``); when raw scores had the highest AUC, their lead over
  knn_z on the cross-fitted bank and the margin it needed (``raw_lead``): "raw scores
  (by +0.0150 over cross-fitted knn_z, needed >0.0060)" or "knn_z scores (cross-fitted
  bank by -0.0008, SE 0.0052) (raw scores' lead +0.0012 within 0.0061)"."""
  kind = choice.normalization["kind"]
  text = "raw scores" if kind == "none" else f"{kind} scores"
  if choice.normalization.get("bank") in BANK_NAMES:
    margin = bank_margin(choice.normalization)
    se = (choice.normalization.get("chosen_by") or {}).get("bank_lead_se")
    text += f" ({BANK_NAMES[choice.normalization['bank']]}" + (
        "" if margin is None else f" by {margin:+.4f}") + (
        "" if margin is None or se is None else f", SE {se:.4f}") + ")"
  raw = raw_lead(choice.normalization)
  if raw is not None:  # raw scores were the first maximum
    text += (f" (by {raw[0]:+.4f} over cross-fitted knn_z, needed >{raw[1]:.4f})"
             if kind == "none" else f" (raw scores' lead {raw[0]:+.4f} within {raw[1]:.4f})")
  window = choice.clip_score
  text += (", eq. (11)" if window["window_frames"] == 1 else f", {window['window_s']:g}-s windows")
  lead = window_lead(window)
  if lead is not None:  # a longer window within one SE of the best
    text += f" (within one SE of {lead[0]:g}-s windows' {lead[1]:+.4f})"
  if choice.pseudo_auc is not None:
    text += f" (pseudo-anomaly AUC {choice.pseudo_auc['mean']:.3f})"
  return text


def calibration_normalization(record: dict) -> Optional[artifact.ScoreNormalization]:
  """The calibration's ``artifact.ScoreNormalization`` of a normalization record
  (None for raw scores)."""
  if record["kind"] == "none":
    return None
  return artifact.ScoreNormalization(kind=record["kind"], neighbors=record["neighbors"],
                                     file=record["file"], fingerprint=record.get("fingerprint"))
