"""Accuracy gate: GTZAN figures must not fall below those recorded in bench/gate.json."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, eval_dir

GATE = ROOT / "bench" / "gate.json"
# The analysis is deterministic; the slack only absorbs float differences
# between CPUs (onnxruntime kernels), well under one clip's worth (1/49 = 0.02).
TOLERANCE = 0.005


@pytest.mark.eval
@pytest.mark.slow
def test_gtzan_accuracy_gate(tmp_path, capsys):
    gtzan = eval_dir() / "gtzan"
    if not gtzan.is_dir():
        pytest.skip(f"eval corpus not found at {gtzan} (set ANALYZER_EVAL_DIR)")
    from bench.run import main

    out = tmp_path / "gtzan.json"
    assert main(["--eval-dir", str(eval_dir()), "--sets", "gtzan", "--json", str(out)]) == 0
    capsys.readouterr()  # the report table is for people; the figures are in the JSON
    result = json.loads(out.read_text())
    agg = result["sets"]["gtzan"]["aggregate"]
    ours = {k: v["mean"] for k, v in agg["ours"]["figures"].items()}
    gate = json.loads(GATE.read_text())
    low = {k: (ours.get(k), floor) for k, floor in gate.items() if k != "segments_per_s"
           and (ours.get(k) is None or ours[k] < floor - TOLERANCE)}
    assert not low, f"figures below the gate (ours, gate): {low}"
    # the Echo Nest's own documents have 3.2-4.2 segments/s; GTZAN clips must stay in 2..6
    assert 2.0 <= ours["segments_per_s"] <= 6.0
    invalid = [r["name"] for r in result["sets"]["gtzan"]["records"] if not r["ours"]["valid"]]
    assert not invalid, f"documents failing the schema: {invalid}"
    # the floor: at least madmom called directly (measured here: 0.896 / 0.627 / 0.857 / 0.980; key 0.605)
    assert ours["beat_f"] >= 0.896 and ours["downbeat_f"] >= 0.627
    assert ours["tempo_acc1"] >= 0.857 and ours["tempo_acc2"] >= 0.980 - TOLERANCE
    assert ours["key_weighted"] >= 0.605
