"""Audio features (Spotify's perceptual descriptors), audio terms and the default embedding (issue 19)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from analyzer.stages import descriptors as D
from analyzer.stages import tagging
from analyzer.cli import catalog_app
from analyzer.document import PERCEPTUAL_FEATURES, audio_features_object, track_id, validate
from analyzer.errors import ParameterError
from fixtures import synth

SR = 22050


def _clicks(period_s: float, seconds: float = 30.0, jitter: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * SR), dtype=np.float32)
    t = 0.2
    click = np.hanning(200).astype(np.float32) * rng.standard_normal(200).astype(np.float32)
    while t < seconds - 0.1:
        i = int(t * SR)
        x[i : i + 200] += click
        t += period_s * (1.0 + jitter * rng.uniform(-1, 1))
    return x


def test_dfa_steady_pulse_beats_an_irregular_one_and_a_slow_swell():
    steady = D.dfa_danceability(_clicks(0.5), SR)
    irregular = D.dfa_danceability(_clicks(0.5, jitter=0.6, seed=1), SR)
    t = np.arange(int(30 * SR)) / SR
    swell = (np.sin(2 * np.pi * t / 20.0) ** 2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    swelling = D.dfa_danceability(swell, SR)
    assert steady is not None and irregular is not None and swelling is not None
    assert steady > irregular > swelling


def test_dfa_needs_audio_and_length():
    assert D.dfa_danceability(np.zeros(SR * 20, dtype=np.float32), SR) is None
    assert D.dfa_danceability(_clicks(0.5, seconds=0.5), SR) is None
    with pytest.raises(Exception, match="sample rate"):
        D.dfa_danceability(np.zeros(100), 0)


def test_dfa_matches_essentia_when_it_is_installed():
    es = pytest.importorskip("essentia.standard", reason="Essentia (the bench extra) is not installed")
    x = _clicks(0.45, jitter=0.2, seed=3)
    ours = D.dfa_danceability(x, SR)
    theirs = es.Danceability(sampleRate=SR)(x)
    theirs = float(theirs[0] if isinstance(theirs, (tuple, list)) else theirs)
    assert ours == pytest.approx(theirs, rel=2e-3)


def test_spectral_entropy_noise_high_tone_low_silence_none():
    rng = np.random.default_rng(0)
    noise_db = 10 * np.log10(rng.chisquare(2, size=(128, 400)))
    tone_db = np.full((128, 400), -100.0)
    tone_db[40] = 0.0
    assert D.spectral_entropy(noise_db) > 0.9
    assert D.spectral_entropy(tone_db) < 0.05
    assert D.spectral_entropy(np.zeros((128, 0))) is None


def _describe(**kw):
    base = dict(samples=_clicks(0.5), sr=SR, log_mel_db=np.zeros((128, 100)), loudness_db=-8.0, segment_count=100,
                duration_s=30.0, harmonic_stability=0.6, pulse=0.7, mtt=None, msd=None)
    base.update(kw)
    return D.describe(**base)


def test_without_tags_the_tag_fields_are_null_and_liveness_always_is():
    d = _describe()
    assert d.valence is None and d.acousticness is None and d.instrumentalness is None and d.speechiness is None
    assert d.liveness is None
    assert 0.0 <= d.danceability <= 1.0 and 0.0 <= d.energy <= 1.0


def test_tag_ratios_follow_the_evidence():
    mtt = {t: 0.01 for t in D.VOICE["mtt"] + D.NO_VOICE["mtt"] + D.ACOUSTIC["mtt"] + D.ELECTRONIC["mtt"]}
    msd = {t: 0.01 for t in D.VOICE["msd"] + D.NO_VOICE["msd"] + D.ACOUSTIC["msd"] + D.ELECTRONIC["msd"]}
    msd.update({"happy": 0.3, "sad": 0.1, "instrumental": 0.4, "electronic": 0.5})
    d = _describe(mtt=mtt, msd=msd, harmonic_stability=0.1, pulse=0.0)
    assert d.valence == pytest.approx(0.75)
    assert d.instrumentalness == pytest.approx(0.4 / 0.41)
    assert d.acousticness == pytest.approx(0.01 / 0.51)
    # speech: voice evidence and no music at all
    talk = _describe(mtt={**mtt, "male voice": 0.3}, msd={**msd, "instrumental": 0.01}, harmonic_stability=0.05,
                     pulse=0.0)
    assert talk.speechiness == pytest.approx((0.3 / 0.31) * 0.95)
    assert talk.speechiness > _describe(mtt={**mtt, "male voice": 0.3}, msd=msd, harmonic_stability=0.8,
                                        pulse=0.7).speechiness


def test_energy_grows_with_loudness_entropy_and_onsets():
    quiet = _describe(loudness_db=-30.0, segment_count=30)
    loud = _describe(loudness_db=-5.0, segment_count=150)
    assert loud.energy > quiet.energy


def test_top_terms_merge_by_name_and_weigh_by_the_strongest():
    class Out:
        def __init__(self, pairs):
            self.pairs = pairs

        def top(self, k):
            return self.pairs[:k]

    terms = tagging.top_terms({"mtt": Out([("rock", 0.4), ("Guitar", 0.2)]), "msd": Out([("rock", 0.5), ("90s", 0.1)])},
                              tagging.TagParams(terms_per_tagger=2))
    assert [t.name for t in terms] == ["rock", "guitar", "90s"]
    assert terms[0].weight == 1.0 and terms[0].tagger == "msd" and terms[0].frequency == 0.5
    assert terms[1].weight == pytest.approx(0.4)


def test_patches_scale_with_the_length_and_sit_at_the_centres_of_equal_parts():
    # one per 15 s, rounded, at least one, never more than the track has
    assert list(tagging.patch_indices(10, 30.0, 15.0)) == [2, 7]
    assert list(tagging.patch_indices(1, 4.0, 15.0)) == [0]
    assert len(tagging.patch_indices(68, 204.0, 15.0)) == 14
    assert list(tagging.patch_indices(10, 30.0, 3.0)) == list(range(10))
    assert list(tagging.patch_indices(3, 300.0, 15.0)) == [0, 1, 2]
    assert len(tagging.patch_indices(0, 2.0, 15.0)) == 0
    with pytest.raises(ParameterError):
        tagging.patch_indices(10, 30.0, 0.0)


def test_the_chosen_frames_are_those_of_the_whole_spectrogram():
    from analyzer.stages import musicnn

    rng = np.random.default_rng(5)
    y = rng.normal(0, 0.1, 16000 * 7).astype(np.float32)
    whole = musicnn.log_mel(y, 16000)
    idx = np.r_[0:3, 100:120, len(whole) - 4 : len(whole)]
    # the same frames; another BLAS may sum the mel product's rows in another order for another batch of
    # rows, and a last-bit difference can move the float16 rounding by one step (2^-11 relative: 2.1e-4
    # after the log10)
    np.testing.assert_allclose(musicnn.log_mel(y, 16000, frames=idx), whole[idx], rtol=0, atol=5e-4)
    with pytest.raises(ParameterError):
        musicnn.log_mel(y, 16000, frames=np.array([len(whole)]))


def test_track_id_is_22_base62_and_stable():
    a = track_id("632238f3831b62bea9a3e9884fa04b4b")
    assert len(a) == 22 and a.isalnum() and a == track_id("632238f3831b62bea9a3e9884fa04b4b")
    assert track_id("0" * 32) == "0" * 22 and track_id("f" * 32) != a


def test_song_document_carries_features_terms_and_embedding(fx, analyze_file):
    doc, an = analyze_file(fx["steady_loop"]["path"])
    validate(doc)
    assert set(doc["audio_features"]) == set(PERCEPTUAL_FEATURES)
    assert doc["audio_features"]["liveness"] is None
    assert all(0.0 <= v <= 1.0 for k, v in doc["audio_features"].items() if v is not None)
    assert doc["terms"] and doc["terms"][0]["weight"] == 1.0
    assert [t["frequency"] for t in doc["terms"]] == sorted((t["frequency"] for t in doc["terms"]), reverse=True)
    assert doc["embedding_model"] == tagging.EMBEDDING_MODEL and len(doc["embedding"]) == 200
    assert np.linalg.norm(doc["embedding"]) == pytest.approx(1.0, abs=1e-4)
    obj = audio_features_object(doc, track_id="x")
    assert obj["type"] == "audio_features" and obj["duration_ms"] == round(doc["track"]["duration"] * 1000)
    assert obj["tempo"] == doc["track"]["tempo"] and obj["danceability"] == doc["audio_features"]["danceability"]


def test_groove_is_more_danceable_than_speech_and_speech_is_speechy(fx, analyze_file):
    if "speech" not in fx:
        pytest.skip("espeak-ng is not installed: no speech fixture")
    groove = analyze_file(fx["steady_loop"]["path"])[0]["audio_features"]
    speech = analyze_file(fx["speech"]["path"])[0]["audio_features"]
    assert groove["danceability"] > speech["danceability"]
    assert speech["speechiness"] > 0.66 > groove["speechiness"]


def test_a_clip_under_3_s_has_no_terms_and_null_tag_features(analyze_file, tmp_path):
    import soundfile as sf

    x, sr, _ = synth.short_clip(seconds=2.0)
    path = tmp_path / "two_seconds.wav"
    sf.write(path, x, sr)
    doc, an = analyze_file(path)
    validate(doc)
    assert doc["terms"] == [] and "embedding" not in doc
    assert doc["audio_features"]["instrumentalness"] is None


def test_features_command_on_audio_and_on_a_document(fx, analyze_file, tmp_path):
    doc, _ = analyze_file(fx["steady_loop"]["path"])
    saved = tmp_path / "loop.json"
    saved.write_text(json.dumps(doc))
    res = CliRunner().invoke(catalog_app, ["features", str(saved), "--format", "json"])
    assert res.exit_code == 0, res.stderr
    obj = json.loads(res.stdout)
    assert obj["id"] == track_id(doc["track"]["sample_md5"]) and obj["energy"] == doc["audio_features"]["energy"]
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    res = CliRunner().invoke(catalog_app, ["features", str(bad)])
    assert res.exit_code == 1 and "not an analysis document" in res.stderr and "Traceback" not in res.stderr
    res = CliRunner().invoke(catalog_app, ["features", str(saved), str(saved), "--format", "json"])
    assert res.exit_code == 2
