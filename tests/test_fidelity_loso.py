"""The pieces of bench/fidelity_loso.py that choose constants leaving one Echo Nest pair out."""

from __future__ import annotations

import numpy as np

from bench.fidelity_loso import pitch_folds


def _pair(rng: np.random.Generator, exponent: float) -> dict:
    """A fake pair: chroma at 10 fps per lowest octave; the 'Echo Nest' pitches follow octave 2's, raised to ``exponent``."""
    from analyzer.stages.segments import segment_pitches

    n_seg, per_seg = 40, 5
    fps = 10.0
    true = rng.random((12, n_seg * per_seg)) ** 3 + 0.01  # peaky chroma
    chroma = {1: rng.random((12, true.shape[1])), 2: true, 3: rng.random((12, true.shape[1]))}
    start = np.arange(n_seg) * per_seg / fps
    end = start + per_seg / fps
    en = segment_pitches(true, fps, start, end, exponent=exponent)
    segments = [{"start": float(s), "duration": per_seg / fps, "pitches": p.tolist()} for s, p in zip(start, en)]
    return {"pitch_chroma": chroma, "fps": fps, "shift_s": 0.0, "ref": {"segments": segments}}


def test_pitch_folds_choose_the_octave_and_exponent_the_pairs_share():
    rng = np.random.default_rng(7)
    inputs = {f"song{i}": _pair(rng, 1.5) for i in range(4)}
    out = pitch_folds(inputs)
    assert set(out["folds"]) == set(inputs)
    for fold in out["folds"].values():
        assert fold["params"]["pitch_lowest_octave"] == 2
        assert abs(fold["params"]["pitch_exponent"] - 1.5) <= 0.25
        assert fold["cosine"] > fold["before_cosine"]  # octave 1 is noise here
        assert fold["cosine"] > 0.99
