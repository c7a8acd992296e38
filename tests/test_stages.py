"""Each stage against synthesized truth, plus unit tests on hand-made activations."""

from __future__ import annotations

import mir_eval
import numpy as np
import pytest

from analyzer.stages.rhythm import RhythmParams, decode_meter, estimate_tempo
from conftest import song_or_skip


# --- rhythm -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["click_120_4-4", "click_100_3-4"])
def test_click_track_beats_tempo_meter(fx, analyze_file, name):
    truth = fx[name]
    doc, an = analyze_file(truth["path"])
    ref = np.array(truth["beats"])
    est = np.array([b["start"] for b in doc["beats"]])
    assert mir_eval.beat.f_measure(ref, est) >= 0.95
    # tempo from the average beat length: within 1% on a metronome
    assert doc["track"]["tempo"] == pytest.approx(truth["tempo_bpm"], rel=0.01)
    assert doc["track"]["time_signature"] == truth["time_signature"]
    # bars span the meter's number of beats (their phase on bare clicks is not
    # asserted: the downbeat network was trained on music, not metronomes)
    bar_len = np.median(np.diff([b["start"] for b in doc["bars"]]))
    assert bar_len == pytest.approx(truth["time_signature"] * 60.0 / truth["tempo_bpm"], rel=0.02)
    # every beat starts a tatum
    tatums = np.array([t["start"] for t in doc["tatums"]])
    assert np.all(np.min(np.abs(est[:, None] - tatums[None, :]), axis=1) < 1e-4)
    assert len(tatums) >= 2 * len(est) - 2


@pytest.mark.parametrize("name,division", [("shuffle_100", 3), ("click_120_4-4", 2)])
def test_tatums_follow_the_feel(fx, analyze_file, name, division):
    doc, _ = analyze_file(fx[name]["path"])
    beats = np.array([b["start"] for b in doc["beats"]])
    tatums = np.array([t["start"] for t in doc["tatums"]])
    inside = tatums[(tatums >= beats[0]) & (tatums < beats[-1])]
    assert len(inside) == division * (len(beats) - 1)
    if "tatums" in fx[name]:
        ref = np.array(fx[name]["tatums"])
        assert mir_eval.beat.f_measure(ref, tatums) >= 0.9


def test_metronome_is_confident(fx, analyze_file):
    doc, _ = analyze_file(fx["click_120_4-4"]["path"])
    assert doc["track"]["tempo_confidence"] > 0.8
    assert np.mean([b["confidence"] for b in doc["beats"]]) > 0.5


def test_tempo_change_is_followed(fx, analyze_file):
    truth = fx["tempo_90_120"]
    doc, _ = analyze_file(truth["path"])
    est = np.array([b["start"] for b in doc["beats"]])
    assert mir_eval.beat.f_measure(np.array(truth["beats"]), est) >= 0.95
    secs = doc["sections"]
    # one boundary at the change (the sound is the same on both sides), tempos on each side
    starts = np.array([s["start"] for s in secs])
    assert np.min(np.abs(starts - truth["change_s"])) <= 1.0
    # the 0.5 s of silence before the first click is a section of its own (key -1, no tempo)
    music = [s for s in secs if s["key"] >= 0]
    assert music[0]["tempo"] == pytest.approx(truth["tempo_from_bpm"], rel=0.02)
    assert music[-1]["tempo"] == pytest.approx(truth["tempo_to_bpm"], rel=0.02)
    # one tempo cannot describe the whole track
    assert doc["track"]["tempo_confidence"] < 0.8


def test_rubato_is_tracked_with_lower_tempo_confidence(fx, analyze_file):
    truth = fx["rubato_80"]
    doc, _ = analyze_file(truth["path"])
    est = np.array([b["start"] for b in doc["beats"]])
    assert mir_eval.beat.f_measure(np.array(truth["beats"]), est) >= 0.8
    steady, _ = analyze_file(fx["click_120_4-4"]["path"])
    # one number cannot describe a breathing tempo as well as a metronome's
    assert doc["track"]["tempo_confidence"] < steady["track"]["tempo_confidence"] - 0.2


def test_sustained_chord_has_no_pulse(fx, analyze_file):
    doc, _ = analyze_file(fx["sustained_chord"]["path"])
    # a held chord: no invented beats, and no flicker passed off as note onsets
    assert len(doc["beats"]) <= 2 and doc["track"]["tempo_confidence"] < 0.2
    assert len(doc["segments"]) / doc["track"]["duration"] < 0.5


def test_speech_gets_low_rhythm_confidence(fx, analyze_file):
    if "speech" not in fx:
        pytest.skip("espeak-ng is not installed: no speech fixture")
    doc, _ = analyze_file(fx["speech"]["path"])
    t = doc["track"]
    # the networks tap along to syllables and the DBN lays a grid through them;
    # the pulse gate sees that the grid's period does not recur and drops it
    assert doc["beats"] == [] and doc["bars"] == [] and doc["tatums"] == []
    assert t["tempo_confidence"] == 0.0 and t["time_signature_confidence"] == 0.0


def test_pulse_periodicity_separates_a_grid_from_random_events():
    from analyzer.stages.rhythm import pulse_periodicity

    fps, n = 100.0, 3000
    beats = np.arange(0.5, 29.5, 0.5)
    regular = np.zeros(n)
    regular[np.round(beats * fps).astype(int)] = 1.0
    rng = np.random.default_rng(0)
    random_events = np.zeros(n)
    random_events[np.sort(rng.choice(n, size=len(beats), replace=False))] = 1.0
    assert pulse_periodicity(regular, beats, fps) > 0.9
    assert pulse_periodicity(random_events, beats, fps) < 0.1
    assert pulse_periodicity(regular, beats[:2], fps) == 0.0


def test_harmonic_stability_separates_held_harmony_from_gliding_pitch():
    from analyzer.stages.rhythm import harmonic_stability

    fps, n = 100.0, 2000
    # four chords of 2 s each, repeated: the pitch classes hold for far longer than the 0.5 s lag
    chords = np.zeros((4, 12))
    for i, pcs in enumerate([(0, 4, 7), (5, 9, 0), (7, 11, 2), (0, 4, 7)]):
        chords[i, list(pcs)] = 1.0
    held = np.repeat(chords, 200, axis=0)[np.arange(n) % 800]
    # a pitch that glides a semitone every 0.1 s (speech's formants): nothing holds 0.5 s
    gliding = np.zeros((n, 12))
    gliding[np.arange(n), (np.arange(n) // 10) % 12] = 1.0
    assert harmonic_stability(chroma=held, fps=fps) > 0.6
    assert abs(harmonic_stability(chroma=gliding, fps=fps)) < 0.2
    # silence (no chroma energy) and a clip shorter than the lag say nothing
    assert harmonic_stability(chroma=np.zeros((n, 12)), fps=fps) == 0.0
    assert harmonic_stability(chroma=held[:30], fps=fps) == 0.0


def test_held_harmony_keeps_beats_the_pulse_gate_would_drop():
    """Soft attacks (a choir) peak the beat network weakly and without a recurring period."""
    from analyzer.stages.rhythm import RhythmParams, find_beats

    fps, n = 100.0, 3000
    rng = np.random.default_rng(1)
    act = np.full(n, 0.01)
    onsets = np.sort(rng.choice(np.arange(50, n - 50), size=40, replace=False))
    act[onsets] = rng.uniform(0.06, 0.12, size=len(onsets))
    zeros = np.zeros(n)
    params = RhythmParams()
    assert act.max() < params.min_peak_activation and act.max() >= params.min_peak_tonal

    def beats(stability: float) -> np.ndarray:
        return find_beats(beat_act=act, downbeat_beat_act=zeros, downbeat_act=zeros, fps=fps, params=params,
                          harmonic_stability=stability)[0]

    assert len(beats(0.0)) == 0  # not known to be music: gated, as speech is
    assert len(beats(params.tonal_stability)) > 10


def test_local_periodicity_sees_each_tempo_of_a_medley():
    from analyzer.stages.rhythm import local_pulse_periodicity, pulse_periodicity

    fps = 100.0
    beats = np.concatenate([np.arange(0.5, 20.0, 0.6), np.arange(20.0, 40.0, 0.43), np.arange(40.0, 60.0, 0.71)])
    act = np.zeros(6000)
    act[np.round(beats * fps).astype(int)] = 1.0
    # no single period recurs over the whole file, but each third is perfectly regular
    # (windows that straddle a change pull the median down a little)
    assert pulse_periodicity(act, beats, fps) < 0.5
    assert local_pulse_periodicity(act, beats, fps) > 0.6


def test_silence_has_no_beats_and_low_confidence(fx, analyze_file):
    doc, _ = analyze_file(fx["silence"]["path"])
    t = doc["track"]
    assert doc["beats"] == [] and doc["bars"] == [] and doc["tatums"] == []
    assert t["tempo"] == 0 and t["tempo_confidence"] == 0
    assert t["key"] == -1 and t["key_confidence"] == 0
    assert t["loudness"] == -60.0
    assert len(doc["segments"]) == 1 and doc["segments"][0]["loudness_max"] == -60.0


def _pulse_env(times, fps, seconds, offbeat=0.0):
    env = np.zeros(int(seconds * fps))
    for t in times:
        env[int(round(t * fps))] = 1.0
    for a, b in zip(times[:-1], times[1:]):
        env[int(round((a + b) / 2 * fps))] = offbeat
    return env


def test_estimate_tempo_regular_and_irregular():
    times = np.arange(0, 20, 0.5)
    env = _pulse_env(times, 100.0, 21)
    tempo, conf = estimate_tempo(times, onset_env=env, onset_fps=100.0)
    assert tempo == pytest.approx(120.0)
    assert conf > 0.9
    rng = np.random.default_rng(0)
    jittery = np.cumsum(rng.uniform(0.3, 0.7, 40))
    _, conf_j = estimate_tempo(jittery, onset_env=_pulse_env(jittery, 100.0, 30), onset_fps=100.0)
    assert conf_j < 0.3 * conf


def test_strong_offbeats_lower_tempo_confidence():
    # off-beats as loud as beats: 240 BPM is as good a reading as 120
    times = np.arange(0, 20, 0.5)
    _, clear = estimate_tempo(times, onset_env=_pulse_env(times, 100.0, 21, 0.1), onset_fps=100.0)
    _, ambiguous = estimate_tempo(times, onset_env=_pulse_env(times, 100.0, 21, 0.9), onset_fps=100.0)
    assert clear > 0.8 and ambiguous < 0.2


@pytest.mark.parametrize("meter", [2, 3, 4])
def test_decode_meter_finds_meter_and_phase(meter):
    n = 48
    d = np.full(n, 0.1)
    d[1::meter] = 0.8  # downbeats on beats 1, 1+meter, ...
    pos, m, conf, post = decode_meter(down_at_beats=d, params=RhythmParams())
    assert m == meter
    assert np.all(pos[1::meter] == 1)
    assert conf > 0.8 and post.sum() == pytest.approx(1.0)


def test_decode_meter_is_unsure_without_evidence():
    _, _, conf, _ = decode_meter(down_at_beats=np.full(32, 0.3), params=RhythmParams())
    assert conf < 0.6


def test_meter_periodicity_peaks_at_the_bar_length():
    from analyzer.stages.rhythm import meter_periodicity

    waltz = np.tile([0.9, 0.2, 0.1], 16)
    assert meter_periodicity(waltz, 3) > 0.9
    assert meter_periodicity(waltz, 4) < 0.0 < meter_periodicity(waltz, 3)
    assert meter_periodicity(np.tile([0.9, 0.1, 0.3, 0.1], 12), 4) > meter_periodicity(np.tile([0.9, 0.1, 0.3, 0.1], 12), 3)
    assert meter_periodicity(np.full(40, 0.5), 3) == 0.0  # no variation
    assert meter_periodicity(waltz[:10], 3) == 0.0  # under four bars


def test_meter_bonus_decides_between_meters_the_evidence_leaves_open():
    from analyzer.stages.rhythm import METERS

    d = np.full(48, 0.3)
    d[::12] = 0.9  # downbeats every 12 beats: in bars of 3 and of 4 alike
    for meter in METERS:  # a bonus per beat for one meter decides it
        bonus = np.where(np.array(METERS) == meter, 0.5, 0.0)
        _, m, _, _ = decode_meter(down_at_beats=d, params=RhythmParams(), meter_bonus=bonus)
        assert m == meter


def test_decode_meter_reads_other_meters_when_asked():
    from analyzer.errors import ParameterError

    d = np.full(60, 0.1)
    d[2::6] = 0.9  # a bar every 6 beats (bench.beat_level reads bars of 6 and 8 tracked beats)
    pos, m, _, post = decode_meter(down_at_beats=d, params=RhythmParams(), meters=(3, 6), meter_log_prior=(0.0, 0.0))
    assert m == 6 and np.all(pos[2::6] == 1) and post.shape == (2,)
    assert decode_meter(down_at_beats=d, params=RhythmParams())[1] in (2, 3)  # the default meters: 2, 3, 4
    with pytest.raises(ParameterError, match="one log prior per meter"):
        decode_meter(down_at_beats=d, params=RhythmParams(), meters=(3, 6))


def test_meter_chance_loglik_rises_with_the_bar_length_and_evens_the_meters():
    from dataclasses import replace

    from analyzer.stages.rhythm import METERS, meter_chance_loglik

    d = np.full(48, 0.2)
    chance = meter_chance_loglik(d)
    assert chance == pytest.approx([np.log(0.2) / m + np.log(0.8) * (m - 1) / m for m in METERS])
    assert np.all(np.diff(chance) > 0)  # low evidence: longer bars pay less by chance alone
    d[::2] = 0.45  # downbeats every 2 beats, weakly marked: the HMM alone prefers the longer bar
    assert decode_meter(down_at_beats=d, params=RhythmParams())[1] == 4
    assert decode_meter(down_at_beats=d, params=replace(RhythmParams(), meter_chance_weight=1.0))[1] == 2


def test_tempo_drift_is_zero_for_a_held_tempo_and_grows_with_rubato():
    from analyzer.stages.rhythm import tempo_drift

    steady = np.arange(64) * 0.5
    assert tempo_drift(steady) == pytest.approx(0.0, abs=1e-9)
    # the beat period swings +-20 % over 24 beats (12 s): a performance that breathes
    period = 0.5 * (1 + 0.2 * np.sin(2 * np.pi * np.arange(64) / 24))
    assert 0.03 < tempo_drift(np.concatenate([[0.0], np.cumsum(period)[:-1]])) < 0.2
    assert tempo_drift(steady[:4]) == 0.0  # too few beats to judge
    assert tempo_drift(steady[:20]) == 0.0  # 9.5 s: one window


def test_chance_level_applies_only_where_the_tempo_wanders():
    from analyzer.stages.rhythm import meter_params_for

    d = np.tile([0.6, 0.1, 0.45, 0.1], 16)  # a bar of two beats, or of four with a strong third beat
    params = RhythmParams(meter_chance_weight=1.0, meter_chance_min_tempo_drift=0.03)
    steady = np.arange(64) * 0.5
    period = 0.5 * (1 + 0.2 * np.sin(2 * np.pi * np.arange(64) / 24))
    rubato = np.concatenate([[0.0], np.cumsum(period)[:-1]])
    assert meter_params_for(params, steady).meter_chance_weight == 0.0
    assert decode_meter(down_at_beats=d, params=meter_params_for(params, steady))[1] == 4  # a steady pulse: 4
    assert decode_meter(down_at_beats=d, params=meter_params_for(params, rubato))[1] == 2  # rubato: corrected, 2
    # the default (weight 0) never corrects, whatever the tempo does
    assert meter_params_for(RhythmParams(), rubato) == RhythmParams()
    assert decode_meter(down_at_beats=d, params=meter_params_for(RhythmParams(), rubato))[1] == 4


# --- key --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["chords_d_major", "chords_a_minor", "flac_96k_24bit", "wav_6ch_48k"])
def test_key_of_chord_progressions(fx, analyze_file, name):
    doc, _ = analyze_file(fx[name]["path"])
    assert (doc["track"]["key"], doc["track"]["mode"]) == (fx[name]["key"], fx[name]["mode"])
    assert doc["track"]["key_confidence"] > 0.2


# --- loudness and fades ------------------------------------------------------


def test_track_loudness_is_the_long_term_spectrum_between_the_fades(fx, analyze_file):
    quiet, _ = analyze_file(fx["tone_440_20dbfs"]["path"])
    loud, _ = analyze_file(fx["tone_440_6dbfs"]["path"])
    for doc in (quiet, loud):
        t = doc["track"]
        body = [s["loudness_max"] for s in doc["segments"]
                if t["end_of_fade_in"] <= s["start"] < t["start_of_fade_out"]]
        # a steady tone: the loudness of its average spectrum is the level its segments peak at
        assert t["loudness"] == pytest.approx(np.mean(body), abs=1.0)
    # a louder tone reads louder, but less than dB for dB: most critical bands stay at the floor for a
    # pure tone (broadband sounds read dB for dB: tests/test_auditory.py)
    assert 4.0 < loud["track"]["loudness"] - quiet["track"]["loudness"] <= 14.5


def test_track_loudness_averages_power_between_the_fades():
    from analyzer.stages.loudness import Fades, track_loudness

    fps = 100.0
    bands = np.full((4, 1000), -20.0)
    bands[:, 500:] = -10.0  # half the body 10 dB louder: the power mean, not the dB mean
    bands[:, :100] = -60.0  # silence before the fade-in ends is not counted
    got = track_loudness(bands_db=bands, fps=fps, fades=Fades(1.0, 10.0))
    want = 10 * np.log10((4 * 10 ** -2 + 5 * 10 ** -1) / 9)
    assert got == pytest.approx(want, abs=1e-9)
    # nothing between the fades: the whole track
    assert track_loudness(bands_db=bands, fps=fps, fades=Fades(5.0, 5.0)) == pytest.approx(
        10 * np.log10((10 ** -6 + 4 * 10 ** -2 + 5 * 10 ** -1) / 10), abs=1e-9)


@pytest.mark.parametrize(("fade_in_s", "fade_out_s"), [(2.0, 8.0), (5.0, 3.0), (8.0, 2.0)])
def test_fade_times_within_half_a_second(fade_in_s, fade_out_s):
    from analyzer.stages.auditory import auditory_spectrogram
    import soxr

    from analyzer.stages.loudness import FadeParams, detect_fades, pool_db
    from fixtures.synth import fade

    x, sr, truth = fade(fade_in_s=fade_in_s, fade_out_s=fade_out_s, seconds=30.0)
    x = soxr.resample(x, sr, 22050)  # the analysis rate, whose frame grid the fade parameters assume
    aud = auditory_spectrogram(x, 22050)
    fps = 22050 / 512
    level = pool_db(aud.loudness_db, 4, 1 + len(x) // 512)
    params = FadeParams()
    f = detect_fades(frame_db=level, fps=fps, duration_s=len(x) / 22050, params=params)
    assert f.end_of_fade_in == pytest.approx(truth["end_of_fade_in"], abs=0.5)
    # the fade-out is placed as the Echo Nest places it: half a window before the level leaves the body,
    # so at most that much before the ramp's start, never after it
    lead = 0.5 * params.fade_out_window_s
    assert truth["start_of_fade_out"] - lead - 0.25 <= f.start_of_fade_out <= truth["start_of_fade_out"] + 0.25


def test_fades_of_a_song_that_starts_loud_or_stops_cold():
    from analyzer.stages.loudness import FadeParams, detect_fades

    fps, params = 100.0, FadeParams()
    level = np.full(3000, -8.0)  # 30 s at a pop song's level
    level[:50] = -60.0  # 0.5 s of silence, then the band starts at full level
    level[2500:] = -60.0  # it stops cold at 25 s
    f = detect_fades(frame_db=level, fps=fps, duration_s=30.0, params=params)
    assert f.end_of_fade_in == pytest.approx(0.5, abs=0.05)
    assert f.start_of_fade_out == pytest.approx(25.0 - 0.5 * params.fade_out_window_s, abs=0.05)
    # a clip cut out of a song mid-sound has no fade at either end, even where its level moves
    clip = np.linspace(-30.0, -8.0, 3000)
    f = detect_fades(frame_db=clip, fps=fps, duration_s=30.0, params=params)
    assert (f.end_of_fade_in, f.start_of_fade_out) == (0.0, 30.0)
    # silent throughout on this scale: no fades
    f = detect_fades(frame_db=np.full(100, -55.0), fps=fps, duration_s=1.0, params=params)
    assert (f.end_of_fade_in, f.start_of_fade_out) == (0.0, 1.0)


def test_fades(fx, analyze_file):
    truth = fx["fade_3_5"]
    doc, _ = analyze_file(truth["path"])
    assert doc["track"]["end_of_fade_in"] == pytest.approx(truth["end_of_fade_in"], abs=0.5)
    assert doc["track"]["start_of_fade_out"] == pytest.approx(truth["start_of_fade_out"], abs=0.5)


def test_no_fades_on_a_steady_tone(fx, analyze_file):
    doc, _ = analyze_file(fx["tone_440_6dbfs"]["path"])
    assert doc["track"]["end_of_fade_in"] < 0.5
    assert doc["track"]["start_of_fade_out"] == pytest.approx(doc["track"]["duration"], abs=0.5)


# --- segments ---------------------------------------------------------------


def test_segments_tile_the_track(fx, analyze_file):
    doc, _ = analyze_file(fx["click_120_4-4"]["path"])
    segs = doc["segments"]
    assert segs[0]["start"] == 0.0
    for a, b in zip(segs, segs[1:]):
        assert b["start"] == pytest.approx(a["start"] + a["duration"], abs=2e-5)
    assert segs[-1]["start"] + segs[-1]["duration"] == pytest.approx(doc["track"]["duration"], abs=2e-5)
    assert "loudness_end" in segs[-1]


def test_one_segment_per_click(fx, analyze_file):
    truth = fx["click_120_4-4"]
    doc, _ = analyze_file(truth["path"])
    starts = np.array([s["start"] for s in doc["segments"]])
    f = mir_eval.onset.f_measure(np.array(truth["beats"]), starts, window=0.05)[0]
    assert f >= 0.95


def test_pitches_of_a_pure_tone_peak_on_a(fx, analyze_file):
    doc, _ = analyze_file(fx["tone_440_6dbfs"]["path"])
    top = max(s["loudness_max"] for s in doc["segments"])
    loud = [s for s in doc["segments"] if s["loudness_max"] > top - 10]
    assert loud
    for s in loud:
        p = np.array(s["pitches"])
        assert p.argmax() == 9 and p.max() == 1.0
        assert np.sort(p)[-2] < 0.5


def test_timbre_first_dimension_is_loudness(fx, analyze_file):
    quiet, _ = analyze_file(fx["tone_440_20dbfs"]["path"])
    loud, _ = analyze_file(fx["tone_440_6dbfs"]["path"])
    q = np.median([s["timbre"][0] for s in quiet["segments"]])
    l = np.median([s["timbre"][0] for s in loud["segments"]])
    # the patch's mean level above the floor: louder reads higher (dB for dB on broadband sounds,
    # tests/test_timbre.py; a pure tone leaves most bands at the floor)
    assert 0 <= q < l <= 60
    assert l - q > 4.0


# --- sections on the rendered song -----------------------------------------


def test_song_sections_tempo_and_keys(fx, analyze_file):
    truth = song_or_skip(fx)
    doc, _ = analyze_file(truth["path"])
    starts = np.array([s["start"] for s in doc["sections"]])
    # each true boundary found within 3 s (the usual lenient structure window)
    for b in truth["section_boundaries"]:
        assert np.min(np.abs(starts - b)) <= 3.0, (b, starts)
    assert len(starts) <= 2 * (len(truth["section_boundaries"]) + 1)
    # the render's silent tail, where there is one, is a section of its own: the last one with music
    last = [s for s in doc["sections"] if s["key"] >= 0][-1]
    assert last["tempo"] == pytest.approx(truth["sections"][-1]["tempo_bpm"], rel=0.04)
    ref = np.array(truth["beats"])
    est = np.array([b["start"] for b in doc["beats"]])
    assert mir_eval.beat.f_measure(ref, est) >= 0.85
    downs = np.array([b["start"] for b in doc["bars"]])
    assert mir_eval.beat.f_measure(np.array(truth["downbeats"]), downs) >= 0.8
    assert doc["track"]["time_signature"] == 4
