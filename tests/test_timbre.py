"""The 12-d segment timbre: patches, the stored basis, and what its dimensions mean."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from analyzer.errors import ParameterError
from analyzer.features import FeatureParams, SpectralFeatures
from analyzer.timbre import TimbreBasis, TimbreParams, load_basis, save_basis, segment_patches, timbre_vectors
from fixtures import synth

SR = 22050
HOP = 512
PARAMS = TimbreParams()


def _log_mel(x: np.ndarray) -> np.ndarray:
    return SpectralFeatures(samples=np.asarray(x, dtype=np.float32), sr=SR, params=FeatureParams()).log_mel_db


def _vector_at(x: np.ndarray, onset_sample: int) -> np.ndarray:
    """Timbre of the one segment that starts at ``onset_sample`` and runs to the end."""
    mel = _log_mel(x)
    start = int(round(onset_sample / HOP))
    patch = segment_patches(log_mel_db=mel, start_frames=np.array([start]), end_frames=np.array([mel.shape[1]]),
                            params=PARAMS)
    return timbre_vectors(patch, load_basis())[0]


def _noise(seed: int, n: int, *, cutoff_hz: float, highpass: bool) -> np.ndarray:
    spec = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SR)
    spec[(f < cutoff_hz) if highpass else (f > cutoff_hz)] = 0.0
    x = np.fft.irfft(spec, n)
    return 0.3 * x / np.max(np.abs(x))


def _saw(freq_hz: float, n: int) -> np.ndarray:
    return 2.0 * ((freq_hz * np.arange(n) / SR) % 1.0) - 1.0


def test_patch_shape_and_short_segment_repeats_its_last_frame():
    n_total = 20
    mel = np.full((128, n_total), -30.0, dtype=np.float32)
    mel[:, 3:] = 0.0  # the second segment, at frame 3, is much louder
    mel[:, 2] = -20.0
    p = segment_patches(log_mel_db=mel, start_frames=np.array([0, 3]), end_frames=np.array([3, n_total]),
                        params=PARAMS)
    assert p.shape == (2, PARAMS.n_bands * PARAMS.n_frames)
    first = p[0].reshape(PARAMS.n_bands, PARAMS.n_frames)
    # frames 3..5 of the short segment repeat its last frame (frame 2), never the next segment's level
    np.testing.assert_allclose(first[:, 3:], first[:, [2, 2, 2]])
    assert first.max() < p[1].max()
    assert (p >= 0).all()


def test_patch_rejects_mismatched_bounds():
    mel = np.zeros((128, 10), dtype=np.float32)
    with pytest.raises(ParameterError):
        segment_patches(log_mel_db=mel, start_frames=np.array([0, 4]), end_frames=np.array([10]), params=PARAMS)


def test_level_dimension_follows_the_tone_level():
    onset = SR // 2
    v = {}
    for dbfs in (-6.0, -20.0):
        x, _, _ = synth.tone(freq_hz=1000.0, dbfs=dbfs, seconds=2.0, sr=SR)
        v[dbfs] = _vector_at(x, onset)
    assert v[-6.0][0] - v[-20.0][0] == pytest.approx(14.0, abs=0.5)
    # a -6 dBFS sine reads about 54 dB above the floor: the power mean over the
    # mel bands of a sine follows its level re a full-scale sine
    assert 45.0 < v[-6.0][0] < 62.0


@pytest.mark.parametrize(
    "bright, dark",
    [
        (_noise(1, SR, cutoff_hz=4000.0, highpass=True), _noise(2, SR, cutoff_hz=500.0, highpass=False)),
        (0.5 * _saw(220.0, SR), 0.5 * np.sin(2 * np.pi * 220.0 * np.arange(SR) / SR)),
    ],
    ids=["noise", "saw-vs-sine"],
)
def test_brightness_dimension(bright, dark):
    assert _vector_at(bright, 0)[1] > _vector_at(dark, 0)[1] + 10.0


def test_attack_dimension_plucked_above_swelling():
    n = SR
    lead = SR // 4
    t = np.arange(n) / SR
    tone = 0.5 * _saw(220.0, n)
    plucked = np.concatenate([np.zeros(lead), tone * np.exp(-t / 0.05)])
    swelling = np.concatenate([np.zeros(lead), tone * np.minimum(t / 0.4, 1.0) ** 2])
    assert _vector_at(plucked, lead)[3] > _vector_at(swelling, lead)[3] + 10.0


def test_stored_basis_is_orthonormal_and_level_free():
    b = load_basis()
    assert b.components.shape == (11, PARAMS.n_bands * PARAMS.n_frames)
    np.testing.assert_allclose(b.components @ b.components.T, np.eye(11), atol=1e-5)
    # a level change alone (a constant added to the patch) moves only dimension 1
    np.testing.assert_allclose(b.components.sum(axis=1), 0.0, atol=1e-4)
    assert load_basis() is b


def test_loader_refuses_a_wrong_shape(tmp_path):
    wrong = TimbreBasis(components=np.zeros((11, 10)), mean_patch=np.zeros(10), params=PARAMS)
    path = tmp_path / "wrong.npz"
    save_basis(path, wrong)
    with pytest.raises(ParameterError, match="shape"):
        load_basis(path)


def test_loader_refuses_other_params(tmp_path):
    path = tmp_path / "other.npz"
    save_basis(path, load_basis())
    with pytest.raises(ParameterError, match="floor_db"):
        load_basis(path, params=TimbreParams(floor_db=-70.0))


def _render_notes(program: int, pitches: list[int]) -> tuple[np.ndarray, list[int]]:
    beat_s = 0.5  # 120 bpm
    notes = [(1.0 + 2.0 * i, 1.5, p, 90, 0) for i, p in enumerate(pitches)]
    with tempfile.TemporaryDirectory() as tmp:
        mid = synth.write_midi(Path(tmp) / "notes.mid", notes=notes, programs={0: program},
                               tempo_map=[(0.0, 120.0)], end_beat=2.0 * len(pitches) + 2.0)
        x = synth.render_midi(mid, sr=SR).mean(axis=1)
    return x, [int(round(n[0] * beat_s * SR)) for n in notes]


def test_same_instrument_closer_than_different_instruments():
    if shutil.which("fluidsynth") is None or not synth.SOUNDFONT.is_file():
        pytest.skip("needs the fluidsynth binary and the FluidR3_GM soundfont")
    pytest.importorskip("mido", reason="needs mido to write MIDI")
    pitches = [57, 60, 64, 67, 72]
    groups = []
    for program in (0, 73):  # acoustic grand piano, flute
        x, onsets = _render_notes(program, pitches)
        mel = _log_mel(x)
        starts = np.array([int(round(s / HOP)) for s in onsets])
        ends = np.append(starts[1:], mel.shape[1])
        groups.append(timbre_vectors(segment_patches(log_mel_db=mel, start_frames=starts, end_frames=ends,
                                                     params=PARAMS), load_basis())[:, 1:])
    a, b = groups
    within = [np.linalg.norm(g[i] - g[j]) for g in groups for i in range(len(g)) for j in range(i + 1, len(g))]
    between = [np.linalg.norm(u - v) for u in a for v in b]
    assert np.mean(within) < np.mean(between)


def test_fitting_script_regenerates_the_stored_basis_exactly(tmp_path):
    if shutil.which("fluidsynth") is None or not Path(synth.SOUNDFONT).is_file():
        pytest.skip("needs the fluidsynth binary and the FluidR3_GM soundfont")
    from fixtures import fit_timbre

    out = tmp_path / "basis.npz"
    assert fit_timbre.main([str(out)]) == 0
    fresh, stored = load_basis(out), load_basis()
    np.testing.assert_array_equal(fresh.components, stored.components)
    np.testing.assert_array_equal(fresh.mean_patch, stored.mean_patch)
