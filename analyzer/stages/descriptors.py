"""Spotify's audio features (danceability, energy, valence, ...) from the analysis and the taggers.

Spotify's ``audio-features`` object holds seven perceptual descriptors on a 0..1 scale beside
tempo, key, mode, loudness, time signature and duration.  Spotify computed them with models it
never published, so none can be reproduced; each one here is *defined* by what it is computed
from, with no constant fitted to anybody's ratings:

- ``danceability``: Streich and Herrera's detrended fluctuation analysis of the loudness envelope
  (AES 2005), the method behind Essentia's ``Danceability``: the inverse of the mean DFA exponent
  over 310 ms to 8.8 s, whose documented range is 0..3, divided by 3 and clipped to 0..1.  A steady
  groove keeps its fluctuation flat across time scales (a small exponent, a high value); rubato
  and long crescendos make it grow (a large exponent, a low value).
- ``energy``: the mean of three 0..1 terms Spotify names as its inputs: perceived loudness (the
  track's loudness on Stevens' sone scale, doubling every 10 dB, full scale 1), general entropy (the mean normalised spectral
  entropy of the mel spectrum of the frames that sound), and onset rate (segments per second,
  ``1 - exp(-rate / rate_scale)`` with the scale the Echo Nest's own segment rate on its pairs).
- ``acousticness``, ``instrumentalness``, ``valence``: the taggers' evidence for one side against
  the other, ``p / (p + q)``, each side its strongest tag: acoustic instruments and the styles made
  of them (``ACOUSTIC``) against electronic sound (``ELECTRONIC``); no-voice and instrumental tags
  against voice and vocalist tags (``NO_VOICE``, ``VOICE``), both from both taggers; MSD "happy"
  against "sad".
- ``speechiness``: voice without music: the voice side's share (as for instrumentalness, the other
  way round) times how little of music there is, ``1 - max(harmonic stability, pulse)``: harmonic
  stability is the rhythm stage's measure of held pitch content (near 1 for held harmony, near 0 for
  speech), pulse the mean confidence of the beats (0 where the pulse gate found none).
- ``liveness``: null.  Spotify's detects an audience in the recording with a trained model; no free
  model here hears an audience, and the analysis has no honest proxy for one.

A field whose inputs are missing (no tagger output, a file too short for the taggers) is None, so
the document says null rather than a number that means nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analyzer.errors import ParameterError

# the tags each descriptor reads, by tagger (names as the taggers spell them)
VOICE = {"mtt": ("vocal", "vocals", "voice", "singing", "female", "male", "woman", "man", "female vocal",
                 "male vocal", "female voice", "male voice", "choir", "choral", "opera"),
         "msd": ("female vocalists", "male vocalists", "female vocalist")}
NO_VOICE = {"mtt": ("no vocals", "no vocal", "no voice"), "msd": ("instrumental",)}
# acoustic instruments and the styles made of them, against electronic sound (each tagger's tags of either)
ACOUSTIC = {"mtt": ("classical", "classic", "guitar", "piano", "strings", "violin", "cello", "harpsichord", "flute",
                    "sitar", "harp"),
            "msd": ("acoustic", "folk", "jazz", "classic rock", "country", "blues")}
ELECTRONIC = {"mtt": ("electronic", "techno", "synth", "beats", "dance"),
              "msd": ("electronic", "electronica", "electro", "house", "dance")}


_BLOCK = 16384  # frames handled at once (DFA deviations, spectral entropy): memory bounded on long files


@dataclass(frozen=True)
class DescriptorParams:
    """The definitions' settings (none fitted; see the module docstring)."""

    # Essentia's Danceability defaults (Streich and Herrera 2005)
    dfa_frame_s: float = 0.010
    dfa_min_tau_s: float = 0.310
    dfa_max_tau_s: float = 8.800
    dfa_tau_multiplier: float = 1.1
    # the range Essentia documents for its danceability ("usually 0 to 3")
    dfa_range: float = 3.0
    # the median segment rate of the Echo Nest's own analyses in the eval set (six songs, 3.2-4.7 per s)
    onset_rate_scale_per_s: float = 3.6
    # frames this far below the loudest mel frame are silence and say nothing about entropy
    entropy_floor_db: float = 60.0


@dataclass(frozen=True)
class Descriptors:
    """The seven perceptual fields (0..1 or None) and the measurements they come from."""

    danceability: float | None
    energy: float | None
    valence: float | None
    acousticness: float | None
    instrumentalness: float | None
    speechiness: float | None
    liveness: float | None
    dfa_danceability: float | None  # Essentia's scale, 0..~3
    spectral_entropy: float | None  # 0..1
    onset_rate_per_s: float


def dfa_danceability(samples: np.ndarray, sr: int, params: DescriptorParams = DescriptorParams()) -> float | None:
    """Streich and Herrera's DFA danceability on Essentia's scale (0..~3, higher is more danceable).

    The signal is cut into 10 ms frames; each frame's standard deviation, mean removed and
    integrated, is the profile.  For each window length tau (310 ms to 8.8 s, growing by 10 %),
    F(tau) is the root mean residual of a straight-line fit over windows starting every
    ``max(1, tau // 50)`` frames; the DFA exponent between neighbouring taus is the slope of
    log F against log(tau + 3) (the article's small-tau correction, in frames), and the value is
    the inverse of their mean.  None when the input is shorter than two window lengths or silent.

    Parameters
    ----------
    samples : np.ndarray
        Mono samples.
    sr : int
        Their rate, Hz.
    params : DescriptorParams

    Returns
    -------
    float or None
    """
    if sr <= 0:
        raise ParameterError(f"sample rate must be positive, got {sr}")
    y = np.asarray(samples).reshape(-1)
    frame = int(params.dfa_frame_s * sr)
    n = len(y) // frame if frame > 0 else 0
    taus, tau = [], params.dfa_min_tau_s
    while tau <= params.dfa_max_tau_s + 1e-9:
        taus.append(int(round(tau * 1000.0)) // int(round(params.dfa_frame_s * 1000.0)))
        tau *= params.dfa_tau_multiplier
    taus = [t for t in taus if t < n]
    if n < 2 or len(taus) < 2:
        return None
    # each frame's deviation in float64, a block of frames at a time: a float64 copy of an hour's
    # samples would take 0.6 GB
    frames = y[: n * frame].reshape(n, frame)
    s = np.concatenate([frames[a : a + _BLOCK].astype(np.float64).std(axis=1, ddof=1)
                        for a in range(0, n, _BLOCK)])
    if not np.any(s > 0):
        return None
    profile = np.cumsum(s - s.mean())
    fluct = np.empty(len(taus))
    for i, t in enumerate(taus):
        jump = max(t // 50, 1)
        windows = np.lib.stride_tricks.sliding_window_view(profile[: n - 1], t)[::jump]  # starts 0 .. n - t - 1
        x = np.arange(t) - (t - 1) / 2.0
        centred = windows - windows.mean(axis=1, keepdims=True)
        ssxy = centred @ x
        residual = (np.einsum("ij,ij->i", centred, centred) - ssxy**2 / (x @ x)) / t
        fluct[i] = math.sqrt(max(residual.sum(), 0.0) / ((n - t) / jump))
    if np.any(fluct <= 0):
        return None
    exponents = np.log10(fluct[1:] / fluct[:-1]) / np.log10((np.array(taus[1:]) + 3.0) / (np.array(taus[:-1]) + 3.0))
    alpha = float(exponents.mean())
    return 1.0 / alpha if alpha > 0 else None


def spectral_entropy(log_mel_db: np.ndarray, params: DescriptorParams = DescriptorParams()) -> float | None:
    """Mean normalised Shannon entropy (0..1) of the mel power spectrum over the frames that sound.

    1 for white noise, near 0 for a single partial; frames more than ``entropy_floor_db`` below the
    loudest frame are left out.  None when nothing sounds.
    """
    db = np.asarray(log_mel_db)
    if db.ndim != 2 or db.shape[1] == 0 or db.shape[0] < 2:
        return None
    # each frame's level and entropy from its power, computed once, a block of frames at a time
    level_db, entropy = np.empty(db.shape[1]), np.empty(db.shape[1])
    for a in range(0, db.shape[1], _BLOCK):
        power = 10.0 ** (db[:, a : a + _BLOCK].astype(np.float64) / 10.0)
        total = power.sum(axis=0)
        level_db[a : a + _BLOCK] = 10.0 * np.log10(np.maximum(total, 1e-30))
        p = power / np.where(total > 0, total, 1.0)
        entropy[a : a + _BLOCK] = -np.sum(p * np.log(np.maximum(p, 1e-300)), axis=0) / math.log(db.shape[0])
    keep = level_db > max(level_db.max() - params.entropy_floor_db, -90.0)
    if not keep.any():
        return None
    return float(np.clip(entropy[keep].mean(), 0.0, 1.0))


def _ratio(p: float | None, q: float | None) -> float | None:
    if p is None or q is None or p + q <= 0:
        return None
    return float(p / (p + q))


def _strongest(tags: dict[str, float] | None, names: tuple[str, ...]) -> float | None:
    if not tags:
        return None
    present = [tags[n] for n in names if n in tags]
    return float(max(present)) if present else None


def _either(mtt: dict[str, float] | None, msd: dict[str, float] | None, names: dict[str, tuple[str, ...]]
            ) -> float | None:
    found = [v for v in (_strongest(mtt, names["mtt"]), _strongest(msd, names["msd"])) if v is not None]
    return max(found) if found else None


def describe(
    *, samples: np.ndarray, sr: int, log_mel_db: np.ndarray, loudness_db: float, segment_count: int,
    duration_s: float, harmonic_stability: float, pulse: float, mtt: dict[str, float] | None, msd: dict[str, float] | None,
    params: DescriptorParams = DescriptorParams(),
) -> Descriptors:
    """Spotify's seven perceptual descriptors of one track (see the module docstring for each definition).

    Parameters
    ----------
    samples, sr : np.ndarray, int
        The decoded mono samples and their rate (for the DFA).
    log_mel_db : np.ndarray
        (mels, frames) mel power in dB (the analysis' shared log-mel).
    loudness_db : float
        The track's loudness (``track.loudness``).
    segment_count, duration_s : int, float
        How many segments the analysis found in how long a track.
    harmonic_stability : float
        The rhythm stage's measure of held pitch content (-1..1).
    pulse : float
        The beats' mean confidence, 0..1 (0 where there are no beats).
    mtt, msd : dict or None
        The MagnaTagATune and MSD taggers' mean tag probabilities by tag name; None where the
        taggers could not read the input.
    params : DescriptorParams

    Returns
    -------
    Descriptors
    """
    dfa = dfa_danceability(samples, sr, params)
    dance = None if dfa is None else float(np.clip(dfa / params.dfa_range, 0.0, 1.0))
    entropy = spectral_entropy(log_mel_db, params)
    rate = segment_count / duration_s if duration_s > 0 else 0.0
    energy = None
    if entropy is not None and np.isfinite(loudness_db):
        # Stevens' sone scale: perceived loudness doubles every 10 dB; 0 dB (full scale) is 1
        loud = float(np.clip(2.0 ** (loudness_db / 10.0), 0.0, 1.0))
        onsets = 1.0 - math.exp(-rate / params.onset_rate_scale_per_s)
        energy = (loud + entropy + onsets) / 3.0
    voice, no_voice = _either(mtt, msd, VOICE), _either(mtt, msd, NO_VOICE)
    voice_share = _ratio(voice, no_voice)
    music = float(np.clip(max(harmonic_stability, pulse), 0.0, 1.0))
    speech = None if voice_share is None else voice_share * (1.0 - music)
    return Descriptors(
        danceability=dance,
        energy=energy,
        valence=_ratio(_strongest(msd, ("happy",)), _strongest(msd, ("sad",))),
        acousticness=_ratio(_either(mtt, msd, ACOUSTIC), _either(mtt, msd, ELECTRONIC)),
        instrumentalness=None if voice_share is None else 1.0 - voice_share,
        speechiness=speech,
        liveness=None,
        dfa_danceability=dfa,
        spectral_entropy=entropy,
        onset_rate_per_s=float(rate),
    )
