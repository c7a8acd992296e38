"""Sections: boundaries at real changes, none in a steady loop, repeated sections share a label."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from analyzer.stages.sections import SectionParams, checkerboard_novelty, find_boundaries


def _load(path) -> tuple[np.ndarray, int]:
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    return x.mean(axis=1), sr


@pytest.fixture(scope="module")
def aba_medley(fx, tmp_path_factory):
    """25 s of the steady groove, 20 s of organ chords, 25 s of the groove again: joins at 25 and 45 s."""
    if "steady_loop" not in fx:
        pytest.skip("FluidSynth or its GM soundfont is not installed: no steady_loop fixture")
    loop, sr = _load(fx["steady_loop"]["path"])
    chords, sr2 = _load(fx["chords_d_major"]["path"])
    assert sr == sr2
    a1, b, a2 = loop[: 25 * sr], chords[: 20 * sr], loop[60 * sr : 85 * sr]
    # the same level on both sides of each join
    b = b * np.sqrt(np.mean(a1**2) / np.mean(b**2))
    path = tmp_path_factory.mktemp("medley") / "aba.wav"
    sf.write(path, np.concatenate([a1, b, a2]), sr)
    return path


def test_steady_loop_gets_no_spurious_boundary(fx, analyze_file):
    if "steady_loop" not in fx:
        pytest.skip("FluidSynth or its GM soundfont is not installed: no steady_loop fixture")
    doc, _ = analyze_file(fx["steady_loop"]["path"])
    minutes = doc["track"]["duration"] / 60
    assert len(doc["sections"]) - 1 <= minutes  # at most one spurious boundary per minute
    assert doc["sections"][0]["start"] == 0.0


def test_medley_joins_found_within_half_a_second_and_labelled_aba(aba_medley, analyze_file):
    doc, _ = analyze_file(aba_medley)
    starts = np.array([s["start"] for s in doc["sections"]])
    for join in (25.0, 45.0):
        assert np.min(np.abs(starts - join)) <= 0.5, starts
    assert len(starts) == 3, starts
    assert [s["label"] for s in doc["sections"]] == ["A", "B", "A"]
    # boundaries between unrelated material are confident
    assert min(s["confidence"] for s in doc["sections"][1:]) > 0.2


def test_checkerboard_novelty_peaks_at_a_block_change():
    # two opposed textures: similarity +1 within each, -1 across
    feats = np.concatenate([np.ones(20), -np.ones(20)])[None, :]
    nov = checkerboard_novelty(feats, 8)
    assert int(np.argmax(nov)) in (19, 20) and nov.max() == pytest.approx(1.0, abs=0.05)
    # one steady texture: nothing inside, a trace at the edges where the kernel meets the padding
    flat = checkerboard_novelty(np.ones((1, 40)), 8)
    assert flat[8:-8].max() == pytest.approx(0.0, abs=1e-9) and flat.max() < 0.05


def test_too_short_or_beatless_input_is_one_section():
    fps = 22050 / 512
    n = int(5 * fps)
    b = find_boundaries(chroma=np.random.default_rng(0).random((12, n)), mfcc=np.zeros((20, n)),
                        frame_db=np.full(n, -20.0), fps=fps, beat_times=np.zeros(0), bar_times=np.zeros(0),
                        duration_s=5.0, params=SectionParams())
    assert b.start.tolist() == [0.0] and b.label == ("A",)


@pytest.fixture(scope="module")
def padded_loop(fx, tmp_path_factory):
    """1.5 s of digital silence, 40 s of the steady loop, 2 s of silence."""
    if "steady_loop" not in fx:
        pytest.skip("FluidSynth or its GM soundfont is not installed: no steady_loop fixture")
    loop, sr = _load(fx["steady_loop"]["path"])
    path = tmp_path_factory.mktemp("padded") / "padded.wav"
    sf.write(path, np.concatenate([np.zeros(int(1.5 * sr)), loop[: 40 * sr], np.zeros(2 * sr)]), sr)
    return path


def test_silence_before_and_after_the_music_belongs_to_the_first_and_last_section(padded_loop, analyze_file):
    # the Echo Nest's convention: its first section takes the leading silence, its last the trailing one
    doc, _ = analyze_file(padded_loop)
    secs = doc["sections"]
    assert len(secs) == 1, [s["start"] for s in secs]
    assert secs[0]["key"] >= 0 and secs[0]["tempo"] > 0


def test_silence_sections_on_request_have_no_key_or_pulse(padded_loop, models):
    # as human annotations mark it (SALAMI's "Silence"): SectionParams(silence_sections=True)
    from analyzer.stages.audio import decode
    from analyzer.document import build_document
    from analyzer.pipeline import AnalysisConfig, analyze

    config = AnalysisConfig(sections=SectionParams(silence_sections=True))
    doc = build_document(analyze(decode(padded_loop), models=models, config=config), timestamp=0,
                         analysis_time_s=0.0)
    secs = doc["sections"]
    assert secs[1]["start"] == pytest.approx(1.5, abs=0.1)
    assert secs[-1]["start"] == pytest.approx(41.5, abs=0.15)
    for s in (secs[0], secs[-1]):
        assert (s["key"], s["mode"], s["tempo"], s["key_confidence"]) == (-1, -1, 0.0, 0.0)
    # the steady loop between them stays one section
    assert len(secs) == 3, [s["start"] for s in secs]
    assert secs[1]["key"] >= 0 and secs[1]["tempo"] > 0


def test_beat_sync_gives_every_grid_point_a_column_of_means():
    from analyzer.stages.sections import beat_sync

    feats = np.arange(20, dtype=float).reshape(2, 10)
    frame_times = np.arange(10) * 0.1
    # 0.0-0.3 -> frames 0-2, 0.3-0.31 (same frame) -> frame 3 alone, then to the end; 5.0 is past the last frame
    out = beat_sync(feats, frame_times, np.array([0.0, 0.3, 0.31, 5.0]))
    assert out.shape == (2, 4)
    np.testing.assert_allclose(out[0], [1.0, 3.0, 6.5, 9.0])
    np.testing.assert_allclose(out[1], out[0] + 10)
