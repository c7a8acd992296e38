"""Segments on a rendered solo piano line: one per note, loudness envelope, pitches."""

from __future__ import annotations

import mir_eval
import numpy as np
import pytest
import soundfile as sf

from fixtures import synth

SR = 22050


@pytest.fixture(scope="module")
def piano_crescendo(tmp_path_factory):
    """24 piano notes of irregular lengths, a crescendo from pp to ff; times in seconds at 120 BPM."""
    rng = np.random.default_rng(11)
    out = tmp_path_factory.mktemp("piano")
    beats = np.cumsum(np.r_[1.0, rng.choice([0.5, 0.75, 1.0, 1.5], size=23)])
    pitches = rng.choice([55, 57, 60, 62, 64, 65, 67, 69, 71, 72, 74], size=24)
    velocities = np.linspace(25, 120, 24).astype(int)
    notes = [(float(b), 0.45, int(p), int(v), 0) for b, p, v in zip(beats, pitches, velocities)]
    try:
        mid = synth.write_midi(out / "piano.mid", notes=notes, programs={0: 0}, tempo_map=[(0.0, 120.0)],
                               end_beat=float(beats[-1] + 3))
        x = synth.render_midi(mid, sr=SR).mean(axis=1)
    except RuntimeError as exc:
        pytest.skip(str(exc))
    path = out / "piano.wav"
    sf.write(path, x / np.abs(x).max() * 0.7, SR)
    return path, beats * 0.5, pitches % 12


def test_one_segment_per_piano_note(piano_crescendo, analyze_file):
    path, starts_s, _ = piano_crescendo
    doc, _ = analyze_file(path)
    seg_starts = np.array([s["start"] for s in doc["segments"]])
    f = mir_eval.onset.f_measure(starts_s, seg_starts, window=0.05)[0]
    assert f >= 0.95
    # besides the notes only the leading silence gets a segment
    assert len(seg_starts) <= len(starts_s) + 1


def test_crescendo_rises_segment_by_segment(piano_crescendo, analyze_file):
    path, starts_s, _ = piano_crescendo
    doc, _ = analyze_file(path)
    segs = [s for s in doc["segments"] if np.min(np.abs(starts_s - s["start"])) < 0.05]
    peaks = np.array([s["loudness_max"] for s in segs])
    # velocity 25 -> 120 spans tens of dB; small dips between neighbours are the piano's register
    assert peaks[-1] - peaks[0] > 15
    assert np.corrcoef(np.arange(len(peaks)), peaks)[0, 1] > 0.9
    for s in segs:
        assert -60 <= s["loudness_start"] <= s["loudness_max"] <= 0
        assert 0 <= s["loudness_max_time"] <= s["duration"]


def test_strongest_pitch_class_is_the_note(piano_crescendo, analyze_file):
    path, starts_s, pcs = piano_crescendo
    doc, _ = analyze_file(path)
    hits = []
    for s in doc["segments"]:
        k = np.argmin(np.abs(starts_s - s["start"]))
        if abs(starts_s[k] - s["start"]) < 0.05:
            hits.append(int(np.argmax(s["pitches"])) == pcs[k])
    assert np.mean(hits) >= 0.9


def test_noise_has_flat_pitches(tmp_path, analyze_file):
    rng = np.random.default_rng(2)
    x = np.zeros(8 * SR)
    for start in np.arange(0.25, 7.5, 0.5):  # noise bursts: onsets, no pitch
        i = int(start * SR)
        x[i : i + SR // 4] = rng.standard_normal(SR // 4) * np.exp(-np.arange(SR // 4) / (0.08 * SR))
    path = tmp_path / "noise.wav"
    sf.write(path, 0.3 * x / np.abs(x).max(), SR)
    doc, _ = analyze_file(path)
    loud = [s for s in doc["segments"] if s["loudness_max"] > -40]
    assert len(loud) >= 10
    # every pitch class within a few dB of the strongest: no single peak
    assert np.median([min(s["pitches"]) for s in loud]) > 0.4
