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


def test_harmony_changes_split_long_segments_and_nothing_else():
    from analyzer.stages.auditory import AuditorySpectrogram
    from analyzer.stages.segments import SegmentParams, find_starts

    fps, n = SR / 128, int(8 * SR / 128)
    # a steady sound: no attacks anywhere
    aud = AuditorySpectrogram(bands_db=np.full((23, n), -20.0, np.float32), fps=fps,
                              band_edges_hz=np.linspace(0, SR / 2, 24))
    # the onset network hears something every second; the chord changes only at 2, 4 and 6 s
    act = np.zeros(800, np.float32)
    act[[100, 200, 300, 400, 500, 600, 700]] = 0.3
    chroma_fps = SR / 512
    chroma = np.full((12, int(8 * chroma_fps) + 1), 0.05)
    for k, (a, b) in enumerate([(0, 2), (2, 4), (4, 6), (6, 8)]):
        chroma[[0, 4, 7] if k % 2 == 0 else [2, 5, 9], int(a * chroma_fps) : int(b * chroma_fps)] = 1.0
    starts = find_starts(aud=aud, onset_act=act, act_fps=100.0, chroma=chroma, chroma_fps=chroma_fps,
                         params=SegmentParams())
    t = starts.start_frames / fps
    assert t[0] == 0.0
    np.testing.assert_allclose(t[1:], [2.0, 4.0, 6.0], atol=0.06)


def test_attack_starts_where_the_loudness_leaves_its_minimum(piano_crescendo, analyze_file):
    path, starts_s, _ = piano_crescendo
    doc, _ = analyze_file(path)
    segs = [s for s in doc["segments"] if np.min(np.abs(starts_s - s["start"])) < 0.05]
    # the Echo Nest's segments start at the beginning of the attack: the peak comes after the
    # start, well above the start's level
    rise = np.array([s["loudness_max"] - s["loudness_start"] for s in segs])
    peak_time = np.array([s["loudness_max_time"] for s in segs])
    assert np.median(rise) > 10.0
    assert 0.005 < np.median(peak_time) < 0.1
    # and no segment starts later than its note
    for s in segs:
        assert s["start"] <= starts_s[np.argmin(np.abs(starts_s - s["start"]))] + 0.02


def test_noise_near_the_floor_starts_no_segments(tmp_path, analyze_file):
    rng = np.random.default_rng(9)
    x = np.zeros(6 * SR)
    # a loud note, then faint bursts of noise: fluctuations near the floor, not attacks
    x[: SR // 2] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(SR // 2) / SR) * np.exp(-np.arange(SR // 2) / (0.1 * SR))
    for start in np.arange(1.0, 5.5, 0.25):
        i = int(start * SR)
        x[i : i + SR // 20] += 6e-4 * rng.standard_normal(SR // 20)  # loudness peaks near -54 dB
    path = tmp_path / "faint.wav"
    sf.write(path, x, SR)
    doc, _ = analyze_file(path)
    assert all(s["start"] < 1.0 for s in doc["segments"]), [s["start"] for s in doc["segments"]]


def test_pitches_are_raised_to_their_exponent_and_keep_their_peak():
    from analyzer.stages.segments import segment_pitches

    rng = np.random.default_rng(3)
    chroma = rng.random((12, 200)) + 0.01
    start, end = np.array([0.0, 0.5, 1.2]), np.array([0.5, 1.2, 2.0])
    plain = segment_pitches(chroma, 100.0, start, end)
    sharp = segment_pitches(chroma, 100.0, start, end, exponent=1.25)
    np.testing.assert_allclose(sharp, plain ** 1.25, rtol=1e-9)
    np.testing.assert_allclose(sharp.max(axis=1), 1.0)
    assert np.all(sharp <= plain + 1e-12)  # below the peak, every value moves down: a sharper vector


@pytest.mark.filterwarnings("ignore:Trying to estimate tuning:UserWarning")  # two pure tones: librosa finds no spread
def test_pitch_chroma_leaves_out_the_sub_bass_octave():
    from analyzer.stages.features import FeatureParams, SpectralFeatures

    t = np.arange(3 * SR) / SR
    # E1 (41.2 Hz) loud, A4 (440 Hz) 20 dB under it
    x = (0.5 * np.sin(2 * np.pi * 41.2 * t) + 0.05 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    spec = SpectralFeatures(samples=x, sr=SR, params=FeatureParams())
    mid = slice(20, spec.n_frames - 20)
    assert int(np.argmax(spec.chroma[:, mid].mean(axis=1))) == 4  # E: the full chroma hears the bass
    assert int(np.argmax(spec.pitch_chroma[:, mid].mean(axis=1))) == 9  # A: pitches start at C2
    whole = SpectralFeatures(samples=x, sr=SR, params=FeatureParams(pitch_lowest_octave=1))
    np.testing.assert_allclose(whole.pitch_chroma, whole.chroma, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [{"pitch_exponent": 0.0}, {"pitch_exponent": float("nan")}])
def test_bad_pitch_exponent_is_refused(bad):
    from analyzer.errors import ParameterError
    from analyzer.stages.segments import SegmentParams

    with pytest.raises(ParameterError, match="pitch_exponent"):
        SegmentParams(**bad)


def test_bad_pitch_octave_is_refused():
    from analyzer.errors import ParameterError
    from analyzer.stages.features import FeatureParams

    with pytest.raises(ParameterError, match="pitch_lowest_octave"):
        FeatureParams(pitch_lowest_octave=0)
