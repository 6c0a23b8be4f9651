"""DCASE Task 2 metrics, as the organisers' evaluators compute them.

Per section (``section_metrics``), for the 2022-2025 convention (the
``dcase2023_task2_evaluator`` and its 2022/2024/2025 siblings):

* AUC (source): source-domain normal clips and *all* anomalous clips;
* AUC (target): target-domain normal clips and *all* anomalous clips;
* pAUC: all clips of the section, ``roc_auc_score(max_fpr=0.1)`` (sklearn's
  McClish-standardized partial AUC, as the evaluator);
* precision / recall / F1 per domain, from the decisions of that domain's
  clips only, with the evaluator's ``max(., float eps)`` guards.

2021 convention: AUC and pAUC per domain over that domain's clips only
(normal and anomalous). 2020: AUC and pAUC per machine id (no domains).

Official score (``official_score``):

* 2022-2025: the harmonic mean, over all machine types m and sections n, of
  {AUC_source(m, n), AUC_target(m, n), pAUC(m, n)}, each floored at float eps:
  ``Omega = hmean({AUC_{m,n,d}} for d in {source, target} U {pAUC_{m,n}})``.
* 2021: the harmonic mean over all machine types, sections and domains of
  AUC_{m,n,d} and pAUC_{m,n,d}.
* 2020: the challenge ranked systems by average rank, not by one number; we
  report the per-type arithmetic means of AUC and pAUC over machine ids (the
  baseline's "Average" row) and, as a summary score, the harmonic mean of all
  per-id AUC and pAUC values.

References:
  DCASE 2022-2025 Task 2 descriptions (dcase.community), evaluation section;
  nttcslab/dcase2023_task2_evaluator, ``dcase2023_task2_evaluator.py``.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import scipy.stats
from sklearn import metrics as sk_metrics

MAX_FPR = 0.1
EPS = sys.float_info.epsilon

# Columns of the per-section table, in the layout of the baselines' result CSV.
COLUMNS = {
    "2022": ("AUC (source)", "AUC (target)", "pAUC", "precision (source)",
             "precision (target)", "recall (source)", "recall (target)",
             "F1 score (source)", "F1 score (target)"),
    "2021": ("AUC (source)", "AUC (target)", "pAUC (source)", "pAUC (target)",
             "precision (source)", "precision (target)", "recall (source)", "recall (target)",
             "F1 score (source)", "F1 score (target)"),
    "2020": ("AUC", "pAUC", "precision", "recall", "F1 score"),
}
# The columns that enter the official score.
SCORE_COLUMNS = {
    "2022": ("AUC (source)", "AUC (target)", "pAUC"),
    "2021": ("AUC (source)", "AUC (target)", "pAUC (source)", "pAUC (target)"),
    "2020": ("AUC", "pAUC"),
}


def _auc(labels, scores, max_fpr=None) -> float:
  labels = np.asarray(labels, dtype=int)
  if labels.size == 0 or labels.min() == labels.max():
    return float("nan")  # needs both classes
  return float(sk_metrics.roc_auc_score(labels, np.asarray(scores, dtype=float),
                                        max_fpr=max_fpr))


def precision_recall_f1(labels, decisions) -> tuple[float, float, float]:
  """Precision, recall and F1 of 0/1 decisions, guarded as in the evaluator."""
  labels = np.asarray(labels, dtype=int)
  decisions = np.asarray(decisions, dtype=int)
  tp = float(np.sum((labels == 1) & (decisions == 1)))
  fp = float(np.sum((labels == 0) & (decisions == 1)))
  fn = float(np.sum((labels == 1) & (decisions == 0)))
  precision = tp / max(tp + fp, EPS)
  recall = tp / max(tp + fn, EPS)
  f1 = 2.0 * precision * recall / max(precision + recall, EPS)
  return precision, recall, f1


def _clip_arrays(labels, scores, decisions, per_clip: Sequence, what: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """labels, scores and decisions as arrays, checked to be as long as ``per_clip``
  (one ``what`` per clip, e.g. "domains")."""
  labels = np.asarray(labels, dtype=int)
  scores = np.asarray(scores, dtype=float)
  decisions = np.asarray(decisions, dtype=int)
  if not labels.size == scores.size == decisions.size == len(per_clip):
    raise ValueError(f"lengths differ: {labels.size} labels, {scores.size} scores, "
                     f"{decisions.size} decisions, {len(per_clip)} {what}")
  return labels, scores, decisions


def section_metrics(labels: Sequence[int], scores: Sequence[float],
                    decisions: Sequence[int], domains: Sequence[Optional[str]], *,
                    year: str = "2022", max_fpr: float = MAX_FPR) -> dict[str, float]:
  """The metrics of one section (one machine id in 2020), keyed by ``COLUMNS[year]``.

  Args:
    labels: 0 normal / 1 anomalous per clip.
    scores: anomaly scores per clip.
    decisions: 0/1 decisions per clip (the decision file).
    domains: "source" / "target" per clip (ignored for 2020).
    year: metric convention, "2020", "2021" or "2022" (2022-2025).
    max_fpr: the pAUC's upper false-positive rate (0.1).

  Returns:
    {column: value}; a value that needs a missing class is NaN.
  """
  labels, scores, decisions = _clip_arrays(labels, scores, decisions, domains, "domains")
  if year == "2020":
    p, r, f = precision_recall_f1(labels, decisions)
    return {"AUC": _auc(labels, scores), "pAUC": _auc(labels, scores, max_fpr),
            "precision": p, "recall": r, "F1 score": f}
  domains = np.array([d or "" for d in domains])
  out = {}
  if year == "2022":
    out["pAUC"] = _auc(labels, scores, max_fpr)
  for domain in ("source", "target"):
    own = domains == domain
    if year == "2022":
      sel = own | (labels == 1)  # this domain's normals and all anomalies
      out[f"AUC ({domain})"] = _auc(labels[sel], scores[sel])
    else:  # 2021: this domain's clips only
      out[f"AUC ({domain})"] = _auc(labels[own], scores[own])
      out[f"pAUC ({domain})"] = _auc(labels[own], scores[own], max_fpr)
    p, r, f = precision_recall_f1(labels[own], decisions[own])
    out[f"precision ({domain})"], out[f"recall ({domain})"], out[f"F1 score ({domain})"] = p, r, f
  return {k: out[k] for k in COLUMNS[year]}


def hmean(values: Sequence[float]) -> float:
  """Harmonic mean of the finite values, each floored at float eps (evaluator)."""
  v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
  if v.size == 0:
    return float("nan")
  return float(scipy.stats.hmean(np.maximum(v, EPS)))


def amean(values: Sequence[float]) -> float:
  v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
  return float(v.mean()) if v.size else float("nan")


def machine_summary(sections: Mapping[str, Mapping[str, float]], *, year: str) -> dict:
  """Arithmetic and harmonic means over the sections of one machine type, per column."""
  cols = COLUMNS[year]
  return {
      "arithmetic mean": {c: amean([s[c] for s in sections.values()]) for c in cols},
      "harmonic mean": {c: hmean([s[c] for s in sections.values()]) for c in cols},
  }


def official_score(per_machine: Mapping[str, Mapping[str, Mapping[str, float]]], *,
                   year: str) -> float:
  """The challenge's official score over {machine type: {section: metrics}}.

  Values that cannot be computed (n/a: e.g. a section without target-domain
  normal clips) are left out of the harmonic mean; ``summarize`` lists them
  (``official_score_missing``, ``official_score_terms``: used, expected).

  2022-2025: hmean of every section's AUC (source), AUC (target) and pAUC.
  2021: hmean of every section's AUC and pAUC of both domains. 2020: hmean of
  every machine id's AUC and pAUC (a summary; see the module docstring).
  """
  values = [metrics[c] for sections in per_machine.values() for metrics in sections.values()
            for c in SCORE_COLUMNS[year]]
  return hmean(values)


def summarize(per_machine: Mapping[str, Mapping[str, Mapping[str, float]]], *,
              year: str) -> dict:
  """Per machine type means, overall means over all sections, and the official score."""
  out = {"machine_types": {}, "year_convention": year}
  for machine, sections in per_machine.items():
    out["machine_types"][machine] = {"sections": {k: dict(v) for k, v in sections.items()},
                                     **machine_summary(sections, year=year)}
  all_sections = {f"{m}/{s}": v for m, secs in per_machine.items() for s, v in secs.items()}
  overall = machine_summary(all_sections, year=year) if all_sections else {}
  out["overall"] = overall
  out["official_score"] = official_score(per_machine, year=year)
  # The organisers' evaluator fails on a value it cannot compute; the harmonic means here
  # leave it out, so say which: a section without target-domain normals, say.
  out["official_score_missing"] = [
      f"{machine}/{section}: {c}" for machine, sections in per_machine.items()
      for section, metrics in sections.items() for c in SCORE_COLUMNS[year]
      if metrics[c] is None or not math.isfinite(metrics[c])]
  out["official_score_terms"] = [
      sum(len(sections) for sections in per_machine.values()) * len(SCORE_COLUMNS[year])
      - len(out["official_score_missing"]),
      sum(len(sections) for sections in per_machine.values()) * len(SCORE_COLUMNS[year])]
  if year in ("2021", "2022"):
    auc_s = [v["AUC (source)"] for v in all_sections.values()]
    auc_t = [v["AUC (target)"] for v in all_sections.values()]
    out["hmean_auc_source"] = hmean(auc_s)
    out["hmean_auc_target"] = hmean(auc_t)
    out["hmean_pauc"] = hmean([v[c] for v in all_sections.values()
                               for c in SCORE_COLUMNS[year] if c.startswith("pAUC")])
  else:
    out["hmean_auc"] = hmean([v["AUC"] for v in all_sections.values()])
    out["hmean_pauc"] = hmean([v["pAUC"] for v in all_sections.values()])
  return out


# The rare-normal metrics of --rare_clips, as experiments.toycar reports them per condition.
RARE_KEYS = ("auc_vs_rare", "auc_vs_frequent", "rare_vs_frequent", "fpr_rare", "fpr_frequent")


def rare_normal_metrics(labels: Sequence[int], scores: Sequence[float],
                        decisions: Sequence[int], rare: Sequence[Optional[bool]]
                        ) -> Optional[dict]:
  """The rare-normal metrics of one section's clips (``--rare_clips``).

  The clips of every domain together: a rare operating mode is a property of
  the machine's normal sound, not of a domain.

  Args:
    labels: 0 normal / 1 anomalous per clip.
    scores: anomaly scores per clip.
    decisions: 0/1 decisions per clip (the decision file, A >= phi, eq. 4).
    rare: per clip True (a normal clip that holds the rare mode), False (one
      that does not) or None (not listed: in neither group).

  Returns:
    None when the section has no rare-normal clip or no anomaly; else
    ``auc_vs_rare`` (the anomalies against the rare-normal clips only),
    ``auc_vs_frequent`` (against the frequent-normal clips only),
    ``rare_vs_frequent`` (the rare-normal clips against the frequent ones: 0.5
    means no bias, 1.0 that every rare normal outscores every frequent one),
    ``fpr_rare`` and ``fpr_frequent`` (the share of each group decided
    anomalous), and the two groups' sizes; a value without its group is None.
  """
  labels, scores, decisions = _clip_arrays(labels, scores, decisions, rare, "rare flags")
  is_rare = (labels == 0) & np.array([r is True for r in rare], dtype=bool)
  is_frequent = (labels == 0) & np.array([r is False for r in rare], dtype=bool)
  anomalous = labels == 1
  if not is_rare.any() or not anomalous.any():
    return None

  def auc(positive, negative):
    if not negative.any():
      return None
    sel = positive | negative
    return _auc(positive[sel], scores[sel])

  return {
      "auc_vs_rare": auc(anomalous, is_rare),
      "auc_vs_frequent": auc(anomalous, is_frequent),
      "rare_vs_frequent": auc(is_rare, is_frequent),
      "fpr_rare": float(decisions[is_rare].mean()),
      "fpr_frequent": float(decisions[is_frequent].mean()) if is_frequent.any() else None,
      "rare_normal_clips": int(is_rare.sum()),
      "frequent_normal_clips": int(is_frequent.sum()),
  }


def summarize_rare(per_machine: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict:
  """{"machine_types": {machine type: {section: rare_normal_metrics}}, "mean":
  {key: the arithmetic mean over every section that has the value}}."""
  sections = [v for secs in per_machine.values() for v in secs.values()]
  mean = {}
  for key in RARE_KEYS:
    values = [v[key] for v in sections if v.get(key) is not None]
    mean[key] = float(np.mean(values)) if values else None
  return {"machine_types": {m: {s: dict(v) for s, v in secs.items()}
                            for m, secs in per_machine.items()}, "mean": mean}


def _fmt(x) -> str:
  return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else repr(float(x))


def result_rows(summary: Mapping, *, year: str) -> list[list[str]]:
  """The baselines' result.csv layout: per machine type a header, one row per
  section, then arithmetic and harmonic means; at the end the means over all
  sections and the official score."""
  cols = COLUMNS[year]
  rows: list[list[str]] = []
  for machine, m in summary["machine_types"].items():
    rows.append([machine])
    rows.append(["section", *cols])
    for section, values in m["sections"].items():
      rows.append([section, *(_fmt(values[c]) for c in cols)])
    for kind in ("arithmetic mean", "harmonic mean"):
      rows.append([kind, *(_fmt(m[kind][c]) for c in cols)])
    rows.append([])
  if summary.get("overall"):
    rows.append(["", *cols])
    for kind in ("arithmetic mean", "harmonic mean"):
      rows.append([f"{kind} over all machine types, sections, and domains",
                   *(_fmt(summary["overall"][kind][c]) for c in cols)])
    rows.append([])
  rows.append(["official score", _fmt(summary["official_score"])])
  return rows
