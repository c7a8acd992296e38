"""Echo Nest fidelity gate: our documents against the Echo Nest's own analyses of the same files.

Every pair folder in ``EVAL/echonest-pairs`` is scored (``bench.fidelity``, the pairs' own ``score.py``).
A pair the gate does not know fails the test, so a new pair is looked at before it is trusted.

The floors sit just under each pair's figure in the leave-one-song-out run recorded in ``bench/RESULTS.md``
("Echo Nest fidelity, leave one song out"): they catch a regression on any song, they do not claim the
issue's targets (where a target is met on every pair, the floor is the target itself).
"""

from __future__ import annotations

import json

import pytest

from conftest import eval_dir

# figure -> minimum, per pair; "abs:" figures are maximum absolute values; "range:" figures are (low, high)
_SEGMENTS_COMMON = {
    "loudness_max_corr": 0.9,
    "abs:attack_time_s_diff": 0.025,
    "timbre_corr_dim1": 0.85,
}
FLOORS: dict[str, dict[str, object]] = {
    "baby_one_more_time": {
        "segment_onsetF_50ms": 0.86, "range:segment_rate_ratio": (0.85, 1.15), "abs:segment_lag_s": 0.03,
        "pitch_cosine_matched": 0.92, "timbre_corr_dim2": 0.9, "timbre_corr_dim3": 0.9, "timbre_corr_dim4": 0.74,
        "abs:attack_rise_db_diff": 2.0, "abs:loudness_diff_db": 1.0, "abs:fade_in_diff_s": 0.3,
        "abs:fade_out_diff_s": 0.4, "sectionF_3s_vs_en": 0.6, "beatF_vs_en": 0.95,
    },
    "el_scorcho": {
        "segment_onsetF_50ms": 0.80, "range:segment_rate_ratio": (0.85, 1.26), "abs:segment_lag_s": 0.02,
        "pitch_cosine_matched": 0.92, "timbre_corr_dim2": 0.85, "timbre_corr_dim3": 0.85, "timbre_corr_dim4": 0.52,
        "abs:attack_rise_db_diff": 3.0, "abs:loudness_diff_db": 0.6, "abs:fade_in_diff_s": 0.5,
        "abs:fade_out_diff_s": 0.3, "sectionF_3s_vs_en": 0.95, "beatF_vs_en": 0.95,
    },
    "fancy": {
        "segment_onsetF_50ms": 0.85, "range:segment_rate_ratio": (0.85, 1.16), "abs:segment_lag_s": 0.025,
        "pitch_cosine_matched": 0.88, "timbre_corr_dim2": 0.88, "timbre_corr_dim3": 0.88, "timbre_corr_dim4": 0.68,
        "abs:attack_rise_db_diff": 2.0, "abs:loudness_diff_db": 0.8, "abs:fade_in_diff_s": 0.5,
        "abs:fade_out_diff_s": 0.6, "sectionF_3s_vs_en": 0.75, "beatF_vs_en": 0.95,
    },
    "la_ere_gymnopedie": {
        "segment_onsetF_50ms": 0.78, "range:segment_rate_ratio": (0.85, 1.2), "abs:segment_lag_s": 0.04,
        "pitch_cosine_matched": 0.94, "timbre_corr_dim2": 0.78, "timbre_corr_dim3": 0.8, "timbre_corr_dim4": 0.72,
        "abs:attack_rise_db_diff": 2.0, "abs:loudness_diff_db": 5.0, "abs:fade_in_diff_s": 0.5,
        "abs:fade_out_diff_s": 0.5, "sectionF_3s_vs_en": 0.45, "beatF_vs_en": 0.72,
    },
    "swamp_cat_rag": {  # API v3 (2009): segments and beats only
        "segment_onsetF_50ms": 0.88, "range:segment_rate_ratio": (0.85, 1.15), "abs:segment_lag_s": 0.025,
        "pitch_cosine_matched": 0.92, "timbre_corr_dim2": 0.9, "timbre_corr_dim3": 0.88, "timbre_corr_dim4": 0.66,
        "abs:attack_rise_db_diff": 2.0, "beatF_vs_en": 0.95,
    },
}
# every timbre dimension's spread beside the Echo Nest's: a client's distance thresholds assume the scale.
# score.py's ratios (matched segments): each within this range, and at least this many per pair within
# 0.8-1.25 (the target band; one under the figures recorded with TimbreParams.spread)
TIMBRE_SD_RATIO_RANGE = (0.55, 1.8)
TIMBRE_DIMS_IN_BAND = {"baby_one_more_time": 11, "el_scorcho": 10, "fancy": 11, "la_ere_gymnopedie": 9,
                       "swamp_cat_rag": 8}


def check_pair(name: str, figures: dict) -> list[str]:
    """The gate's failures for one pair's figures (empty when it passes)."""
    failures = []
    floors = {**_SEGMENTS_COMMON, **FLOORS[name]}
    for key, bound in floors.items():
        kind, _, figure = key.rpartition(":")
        value = figures.get(figure)
        if value is None:
            failures.append(f"{figure}: missing")
        elif kind == "abs" and not abs(value) <= bound:
            failures.append(f"{figure}: |{value}| > {bound}")
        elif kind == "range" and not bound[0] <= value <= bound[1]:
            failures.append(f"{figure}: {value} outside {bound}")
        elif kind == "" and not value >= bound:
            failures.append(f"{figure}: {value} < {bound}")
    low, high = TIMBRE_SD_RATIO_RANGE
    ratios = figures.get("timbre_std_ratio_dims1to12") or []
    if len(ratios) != 12 or not all(low <= r <= high for r in ratios):
        failures.append(f"timbre_std_ratio_dims1to12: {ratios} outside {TIMBRE_SD_RATIO_RANGE}")
    elif (n := sum(0.8 <= r <= 1.25 for r in ratios)) < TIMBRE_DIMS_IN_BAND[name]:
        failures.append(f"timbre_std_ratio_dims1to12: {n} dims within 0.8-1.25, fewer than {TIMBRE_DIMS_IN_BAND[name]}")
    return failures


def test_check_pair_catches_a_regression():
    good = {"segment_onsetF_50ms": 0.9, "segment_rate_ratio": 1.0, "segment_lag_s": 0.0, "pitch_cosine_matched": 0.95,
            "timbre_corr_dim1": 0.95, "timbre_corr_dim2": 0.95, "timbre_corr_dim3": 0.95, "timbre_corr_dim4": 0.9,
            "loudness_max_corr": 0.99, "attack_rise_db_diff": 0.1, "attack_time_s_diff": 0.0, "beatF_vs_en": 0.99,
            "timbre_std_ratio_dims1to12": [1.0] * 12}
    assert check_pair("swamp_cat_rag", good) == []
    assert check_pair("swamp_cat_rag", {**good, "segment_onsetF_50ms": 0.5}) == ["segment_onsetF_50ms: 0.5 < 0.88"]
    assert check_pair("swamp_cat_rag", {**good, "segment_lag_s": -0.05})
    assert check_pair("swamp_cat_rag", {**good, "segment_rate_ratio": 1.3})
    assert check_pair("swamp_cat_rag", {**good, "timbre_std_ratio_dims1to12": [1.0] * 11 + [2.0]})
    assert check_pair("swamp_cat_rag", {**good, "timbre_std_ratio_dims1to12": [1.0] * 7 + [0.7] * 5})
    assert check_pair("fancy", good)  # track-level figures missing on a full-document pair


@pytest.mark.eval
@pytest.mark.slow
def test_echonest_pairs_fidelity(tmp_path, capsys):
    pairs = eval_dir() / "echonest-pairs"
    if not (pairs / "score.py").is_file():
        pytest.skip(f"Echo Nest pairs not found at {pairs} (set ANALYZER_EVAL_DIR)")
    from bench.fidelity import main

    out = tmp_path / "fidelity.json"
    assert main(["--eval-dir", str(eval_dir()), "--json", str(out), "--no-jukebox"]) == 0
    capsys.readouterr()
    result = json.loads(out.read_text())
    assert result["pairs"], "no pair was scored"
    unknown = sorted(set(result["pairs"]) - set(FLOORS))
    assert not unknown, f"pairs with no floors yet (score them, then add their floors): {unknown}"
    failures = {}
    for name, f in result["pairs"].items():
        assert "error" not in f, (name, f)
        bad = check_pair(name, f)
        if bad:
            failures[name] = bad
    assert not failures, failures
