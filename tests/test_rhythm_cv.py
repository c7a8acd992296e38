"""The pieces of bench/rhythm_cv.py that decide what is adopted: scores, verdicts, the oracle meter."""

from __future__ import annotations

import numpy as np
import pytest

from bench.rhythm_cv import FOLDS, auc, forced_meter, tempo_relation, verdict, with_overrides


def test_auc_ranks_positives_first():
    labels = np.array([True, True, False, False])
    assert auc(np.array([0.9, 0.8, 0.1, 0.2]), labels) == 1.0
    assert auc(np.array([0.1, 0.2, 0.9, 0.8]), labels) == 0.0
    assert auc(np.array([0.5, 0.5, 0.5, 0.5]), labels) == pytest.approx(0.5)
    assert np.isnan(auc(np.array([0.5, 0.4]), np.array([True, True])))


@pytest.mark.parametrize(("ours", "truth", "relation"), [
    (120.0, 120.0, "1"), (122.0, 120.0, "1"), (240.0, 120.0, "x2"), (60.0, 120.0, "x1/2"),
    (180.0, 120.0, "x3/2"), (100.0, 120.0, "other"), (0.0, 120.0, "none"), (120.0, None, "none"),
])
def test_tempo_relation(ours, truth, relation):
    assert tempo_relation(ours, truth) == relation


def _rows(change: dict[tuple[str, str], float]) -> dict:
    return {key: {"downbeat_f": d, "beat_f": 0.0} for key, d in change.items()}


def test_verdict_needs_both_folds_and_no_set_losing():
    both = _rows({("pooled", "A"): 0.02, ("pooled", "B"): 0.03, ("gtzan", "A"): 0.0, ("gtzan", "B"): 0.0})
    assert verdict(both) == "both folds"
    one = _rows({("pooled", "A"): 0.02, ("pooled", "B"): -0.01, ("gtzan", "A"): 0.0, ("gtzan", "B"): -0.01})
    assert verdict(one) == "one fold"
    costly = _rows({("pooled", "A"): 0.02, ("pooled", "B"): 0.02, ("renders", "A"): -0.05})
    assert verdict(costly).startswith("both folds, but")
    assert verdict(_rows({("pooled", f): 0.0 for f in FOLDS})) == "no"


def test_overrides_and_the_oracle_meter():
    from analyzer.stages.rhythm import METERS, RhythmParams

    p = with_overrides(RhythmParams(), ["bar_net_weight=0.25", "meter_log_prior=0,0,0"])
    assert p.bar_net_weight == 0.25 and p.meter_log_prior == (0.0, 0.0, 0.0)
    with pytest.raises(SystemExit, match="unknown RhythmParams field"):
        with_overrides(RhythmParams(), ["bar_net_wieght=0.25"])
    forced = forced_meter(RhythmParams(), 3)
    assert forced.meter_log_prior[METERS.index(3)] == 0.0
    assert all(v <= -100 for m, v in zip(METERS, forced.meter_log_prior) if m != 3)


def test_asap_truth_meter_families_and_the_longest_signature(tmp_path):
    import json

    from bench.truth import dominant_signature, load_set, meter_family

    assert [meter_family(s) for s in ("2/4", "2/2", "4/4", "4/2", "3/4", "3/8", "3/2", "6/8", "9/8", "12/16", "5/8")] == [
        "duple", "duple", "duple", "duple", "triple", "triple", "triple", "compound", "compound", "compound", "other"]
    assert dominant_signature([[1.0, "2/4"], [21.0, "4/4"]], 60.0) == ("4/4", 1)
    assert dominant_signature([[0.0, "6/8"], [30.0, "3/8"], [32.0, "6/8"]], 40.0) == ("6/8", 0)
    folder = tmp_path / "asap"
    folder.mkdir()
    (folder / "X_Waltz_P01.flac").write_bytes(b"")  # the loader reads only the annotations
    (folder / "X_Waltz_P01.truth.json").write_text(json.dumps({
        "beats": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5], "downbeats": [0.5, 2.0, 3.5], "audio_duration_s": 60.0,
        "time_signature": [[0.5, "6/8"], [2.0, "3/4"]], "beats_per_bar": [[0.5, 2], [2.0, 3]]}))
    (item,) = load_set("asap", tmp_path)
    assert (item.set, item.group, item.truth.meter) == ("asap", "triple", 3)
    assert item.truth.tempo == pytest.approx(120.0)
    np.testing.assert_allclose(item.truth.downbeats, [0.5, 2.0, 3.5])


def test_beat_level_candidates_and_the_cross_validated_choice():
    from bench.beat_level import candidates, cross_validate, halving_phase

    c = candidates(np.arange(0.0, 4.0, 0.5))
    assert np.allclose(c["h0"], [0, 1, 2, 3]) and np.allclose(c["h1"], [0.5, 1.5, 2.5, 3.5])
    assert np.allclose(np.diff(c["d"]), 0.25) and len(c["d"]) == 2 * len(c["t"]) - 1
    assert halving_phase(np.array([2, 1, 2, 3, 4, 1, 2, 1])) == 1  # downbeats at beats 1, 5 and 7

    def rec(s, fold, t, h):  # one file: (beat F, downbeat F) on the tracked beats and on the halves
        lv = {"t": dict(zip(("beat_f", "downbeat_f"), t)), "h0": dict(zip(("beat_f", "downbeat_f"), h))}
        return {"set": s, "fold": fold, "level": lv}

    recs = [rec("asap", "A", (0.6, 0.2), (0.9, 0.5)), rec("gtzan", "A", (0.9, 0.8), (0.6, 0.4)),
            rec("asap", "B", (0.6, 0.2), (0.9, 0.5)), rec("gtzan", "B", (0.9, 0.8), (0.9, 0.8))]
    halve_asap = ["h0", "t", "h0", "t"]
    halve_all = ["h0", "h0", "h0", "h0"]
    cv = cross_validate({("r", 0.0): halve_all, ("r", 1.0): halve_asap, ("oracle (x)", 0.0): halve_all}, recs)
    assert [(name, fold, w) for name, fold, w, _ in cv] == [("r", "A", 1.0), ("r", "B", 0.0)]  # no oracle
    assert cv[0][3][("asap", "B")]["downbeat_f"] == pytest.approx(0.3)  # scored on the other fold


def test_chance_cues_gate_is_chosen_on_one_fold_and_scored_on_the_other():
    from bench.chance_cues import CUES, cross_validate, fold_changes, gated

    def rec(s, fold, drift, before, after):  # one file: downbeat F and meter without and with the correction
        cues = {k: 0.5 for k in CUES} | {"drift": drift}
        return {"set": s, "fold": fold, "cues": cues, "truth_meter": 2,
                "by_w": {0.0: {"downbeat_f": before, "meter_acc": 0.0, "meter": 4},
                         1.0: {"downbeat_f": after, "meter_acc": 1.0, "meter": 2}}}

    rows = [rec("asap", f, 0.1, 0.2, 0.6) for f in "AB"] + [rec("gtzan", f, 0.0, 0.9, 0.5) for f in "AB"]
    mask = gated(rows, 1.0, "drift", 0.05, -1)  # corrected where the drift exceeds 0.05
    assert [mask(r) for r in rows] == [True, True, False, False]
    ch = fold_changes(rows, "B", 1.0, mask)
    assert ch["asap"]["downbeat_f"] == pytest.approx(0.4) and ch["gtzan"]["downbeat_f"] == 0.0
    table = cross_validate(rows, 1.0)
    assert "| drift > | A | 0.050 | 1 | +0.400 / +1.000 | +0.000 / +0.000 | yes |" in table
    assert "| drift < | A | none helps ASAP |" in table  # the other direction corrects the pop file too
