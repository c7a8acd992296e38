"""The libraries the analyzer builds on, called directly, as reference points ("anchors").

Each anchor reads the same decoded audio as the analyzer.  madmom's processors
take a plain ndarray as 44.1 kHz without resampling, so our 22050 Hz samples are
upsampled once (the analyzer's own resampler) and wrapped in a madmom Signal;
that upsampling is timed apart and not charged to any anchor.  Every processor
instance sees float32 only: madmom caches its int16->float scaling on the first
call, and mixing dtypes on one instance gives wrong activations.
"""

from __future__ import annotations

import time
import traceback

import numpy as np

from .metrics import Estimate

ANCHORS = ("madmom", "essentia", "librosa", "foote")
MADMOM_FPS = 100


def _timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def _tempo_from_beats(beats: np.ndarray) -> float:
    return float(60.0 / np.median(np.diff(beats))) if len(beats) > 2 else 0.0


def madmom_rhythm_estimate(beats: np.ndarray, downbeats: np.ndarray, **fields) -> Estimate:
    """madmom's rhythm answer as an Estimate.

    Parameters
    ----------
    beats : np.ndarray
        ``DBNBeatTrackingProcessor``'s beat times (s).
    downbeats : np.ndarray
        ``DBNDownBeatTrackingProcessor``'s (time, beat-in-bar) rows.
    **fields
        Further Estimate fields (key, seconds).

    Returns
    -------
    Estimate
        Beats, tempo from the median beat period, bar starts and the meter (beats in its longest bar).
    """
    beats = np.asarray(beats, dtype=float)
    down = np.asarray(downbeats, dtype=float).reshape(-1, 2)
    return Estimate(
        beats=beats,
        tempo=_tempo_from_beats(beats),
        downbeats=down[down[:, 1] == 1, 0],
        meter=int(down[:, 1].max()) if len(down) else 0,
        **fields,
    )


def _essentia_key_label(key: str, scale: str) -> str:
    return f"{key} {scale}" if scale in ("major", "minor") else "X"


class Anchors:
    """Library processors, built once and reused for every file."""

    def __init__(self) -> None:
        from analyzer.stages.features import configure_onnxruntime

        # the same ONNX Runtime settings as the analyzer's own networks (single-threaded sessions
        # that do not spin), so the two are timed alike
        configure_onnxruntime()
        import essentia

        essentia.log.infoActive = False  # before essentia.standard, which logs on import
        import essentia.standard as es
        from madmom.features.beats import DBNBeatTrackingProcessor, RNNBeatProcessor
        from madmom.features.downbeats import DBNDownBeatTrackingProcessor, RNNDownBeatProcessor
        from madmom.features.key import CNNKeyRecognitionProcessor

        self.beat_rnn = RNNBeatProcessor()
        self.beat_dbn = DBNBeatTrackingProcessor(fps=MADMOM_FPS)
        self.down_rnn = RNNDownBeatProcessor()
        self.down_dbn = DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4], fps=MADMOM_FPS)
        self.key_cnn = CNNKeyRecognitionProcessor()
        # RhythmExtractor2013 has no sample-rate parameter: it assumes 44.1 kHz
        self.es_rhythm = es.RhythmExtractor2013(method="multifeature")
        self.es_key = es.KeyExtractor(profileType="edma", sampleRate=44100.0)

    def run(self, samples: np.ndarray, sr: int, *, sections: bool = False) -> tuple[dict[str, Estimate], float]:
        """Estimates per anchor and the seconds spent upsampling for madmom/Essentia.

        `sections`: also run the structure baselines (librosa's agglomerative
        clustering, a Foote checkerboard novelty) — only where there is
        section truth to score them against.
        """
        from analyzer.stages.features import MADMOM_SR, upsample_for_madmom

        y44, up_s = _timed(upsample_for_madmom, samples, sr)
        y44 = np.ascontiguousarray(y44, dtype=np.float32)
        out = {
            "madmom": self._guard(self._madmom, y44, MADMOM_SR),
            "essentia": self._guard(self._essentia, y44),
            "librosa": self._guard(self._librosa, samples, sr, sections),
        }
        if sections:
            out["foote"] = self._guard(self._foote, samples, sr)
        return out, up_s

    @staticmethod
    def _guard(fn, *args) -> Estimate:
        # an anchor that fails on a file scores as an empty answer, not as a skipped file
        try:
            return fn(*args)
        except Exception as exc:
            return Estimate(
                beats=np.zeros(0),
                tempo=0.0,
                error=f"{type(exc).__name__}: {exc} | {traceback.format_exc(limit=2)!r}",
            )

    def _madmom(self, y44: np.ndarray, sr: int) -> Estimate:
        from madmom.audio.signal import Signal
        from madmom.features.key import key_prediction_to_label

        sig = Signal(y44, sample_rate=sr, num_channels=1)
        beat_act, t_beat_rnn = _timed(self.beat_rnn, sig)
        beats, t_beat_dbn = _timed(self.beat_dbn, beat_act)
        down_act, t_down_rnn = _timed(self.down_rnn, sig)
        down, t_down_dbn = _timed(self.down_dbn, down_act)
        key_p, t_key = _timed(self.key_cnn, sig)
        return madmom_rhythm_estimate(
            beats,
            down,
            key=key_prediction_to_label(key_p),
            seconds={
                "beat": t_beat_rnn + t_beat_dbn,
                "downbeat": t_down_rnn + t_down_dbn,
                "downbeat_rnn": t_down_rnn,
                "downbeat_dbn": t_down_dbn,
                "key": t_key,
            },
        )

    def _essentia(self, y44: np.ndarray) -> Estimate:
        (bpm, ticks, _conf, _est, _intervals), t_rhythm = _timed(self.es_rhythm, y44)
        (key, scale, strength), t_key = _timed(self.es_key, y44)
        return Estimate(
            beats=np.asarray(ticks, dtype=float),
            tempo=float(bpm),
            key=_essentia_key_label(key, scale),
            key_confidence=float(strength),
            seconds={"beat": t_rhythm, "key": t_key},
        )

    def _librosa(self, samples: np.ndarray, sr: int, sections: bool = False) -> Estimate:
        import librosa

        # trim=True dropped every beat after 110 s on one track (see LIBRARY_NOTES)
        (tempo, frames), t_beat = _timed(
            lambda: librosa.beat.beat_track(y=samples, sr=sr, trim=False, units="frames")
        )
        est = Estimate(
            beats=librosa.frames_to_time(frames, sr=sr),
            tempo=float(np.atleast_1d(tempo)[0]),
            seconds={"beat": t_beat},
        )
        if sections:
            starts, t_sec = _timed(_librosa_agglomerative, samples, sr, frames)
            est.sections, est.seconds["sections"] = starts, t_sec
        return est

    def _foote(self, samples: np.ndarray, sr: int) -> Estimate:
        starts, t = _timed(_foote_boundaries, samples, sr)
        return Estimate(sections=starts, seconds={"sections": t})


# one section per this many seconds for the baselines that must be told how many (agglomerative)
BASELINE_SECTION_S = 25.0


def _beat_sync_features(samples: np.ndarray, sr: int, beat_frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """librosa's documented structure features: beat-synchronous CQT chroma + MFCC, and the grid times."""
    import librosa

    chroma = librosa.feature.chroma_cqt(y=samples, sr=sr, hop_length=512)
    mfcc = librosa.feature.mfcc(y=samples, sr=sr, n_mfcc=13, hop_length=512)
    n = min(chroma.shape[1], mfcc.shape[1])
    bounds = librosa.util.fix_frames(beat_frames, x_min=0, x_max=n)
    feats = librosa.util.sync(np.vstack([chroma[:, :n], mfcc[:, :n]]), bounds, aggregate=np.median)
    return librosa.util.normalize(feats, axis=1, norm=np.inf), librosa.frames_to_time(bounds[:-1], sr=sr)


def _librosa_agglomerative(samples: np.ndarray, sr: int, beat_frames: np.ndarray) -> np.ndarray:
    """librosa.segment.agglomerative on beat-synchronous chroma + MFCC, one section per ~25 s."""
    import librosa

    feats, times = _beat_sync_features(samples, sr, beat_frames)
    k = int(np.clip(round(len(samples) / sr / BASELINE_SECTION_S), 2, max(2, feats.shape[1] - 1)))
    bounds = librosa.segment.agglomerative(feats, k)
    return np.unique(np.concatenate(([0.0], times[bounds])))


def _foote_boundaries(samples: np.ndarray, sr: int, kernel_beats: int = 32) -> np.ndarray:
    """Foote (2000): Gaussian checkerboard kernel along the diagonal of a beat-synchronous SSM, peaks above mean + 1 sd."""
    import librosa

    _, beat_frames = librosa.beat.beat_track(y=samples, sr=sr, trim=False, units="frames")
    feats, times = _beat_sync_features(samples, sr, beat_frames)
    z = librosa.util.normalize(feats - feats.mean(axis=1, keepdims=True), axis=0)
    ssm = z.T @ z
    half = max(2, min(kernel_beats // 2, ssm.shape[0] // 4))
    ax = np.arange(-half, half) + 0.5
    g = np.exp(-0.5 * (ax / (0.5 * half)) ** 2)
    kern = np.outer(g, g) * np.outer(np.sign(ax), np.sign(ax))
    pad = np.pad(ssm, half)
    nov = np.array([np.sum(kern * pad[i : i + 2 * half, i : i + 2 * half]) for i in range(ssm.shape[0])])
    peaks = [
        i for i in range(1, len(nov) - 1)
        if nov[i] >= nov[i - 1] and nov[i] >= nov[i + 1] and nov[i] > nov.mean() + nov.std()
    ]
    return np.unique(np.concatenate(([0.0], times[peaks])))
