"""The label-free selection rule of ``benchmarks.realaudio --select_from``."""

from benchmarks import realaudio


def _res(**spreads):
  return {m: {"heldout_max_over_median": v, "auc": {"mean": 0.5}} for m, v in spreads.items()}


def test_each_method_keeps_the_evaluation_with_the_lowest_heldout_spread():
  candidates = [("raw", _res(re=2.1, bu=1.5, pca=2.8)), ("knn", _res(re=1.4, bu=1.6)),
                ("knn_z", _res(re=1.4, bu=1.2, pca=1.9))]
  got = realaudio.select_by_heldout_spread(candidates)
  assert {m: r["selected_from"] for m, r in got.items()} == {
      "re": "knn", "bu": "knn_z", "pca": "knn_z"}  # a tie keeps the first
  assert got["bu"]["heldout_max_over_median"] == 1.2 and "snp" not in got
  assert "selected_from" not in candidates[2][1]["bu"]  # the inputs are left as they were


def test_results_without_the_criterion_get_it_from_their_heldout_scores():
  old = {"bu": {"heldout_clip_scores": [1.0, 2.0, 3.0, 9.0]}}  # max / median = 9 / 2.5
  got = realaudio.select_by_heldout_spread([("old", old), ("new", _res(bu=3.0))])
  assert got["bu"]["selected_from"] == "new"
  got = realaudio.select_by_heldout_spread([("old", old), ("new", _res(bu=4.0))])
  assert got["bu"]["selected_from"] == "old" and got["bu"]["heldout_max_over_median"] == 3.6
