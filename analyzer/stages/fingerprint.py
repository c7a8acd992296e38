"""The document's four strings: echoprint, chromaprint (codestring), synch and rhythm.

Echoprint follows the published algorithm (Ellis, Whitman & Porter, "Echoprint: an
open music identification service", ISMIR 2011, and the MIT-licensed codegen's
description): audio at 11025 Hz is whitened by a 40-pole LPC filter updated every
10,000 samples, split into 8 subbands of 689 Hz by a complex-modulated 128-tap
filterbank hopped by 8 samples, and the subband envelopes (summed under an 8-frame
Hann window, hop 4: one frame per 32 samples, 2.9 ms) go through an adaptive onset
detector whose threshold decays faster the longer a band has been silent, aiming at
about one onset per second per band.  Successive onsets of one band make pairs of
inter-onset intervals, quantized to 256 samples (23.2 ms) and hashed with the band
(MurmurHash2) to 20-bit codes; each code keeps the time of its first onset.

Our prototype filter is our own windowed sinc, so the codes match codes made by this
module, not those of the Echo Nest's servers (they are gone).  The rhythmstring is
the same onsets in the Echo Nest's rhythm format; the synchstring is positive-going
zero crossings of three 1 s chunks of the analysis signal; the codestring is
libchromaprint's fingerprint (AcoustID's), as `fpcalc` prints it.
"""

from __future__ import annotations

import base64
import functools
import zlib
from dataclasses import dataclass

import numpy as np

from analyzer.errors import DecodeError

ECHOPRINT_SR = 11025
SUBBANDS = 8
SUBBAND_HOP = 8  # samples at 11025 Hz between filterbank outputs
ENVELOPE_HOP = 4  # filterbank outputs between onset frames
FRAME_SAMPLES = SUBBAND_HOP * ENVELOPE_HOP  # 32 samples = 2.9 ms per onset frame
CODE_UNIT_FRAMES = 8  # 8 frames = 256 samples = 23.2 ms: the time unit of codes and their times
CODE_UNIT_S = CODE_UNIT_FRAMES * FRAME_SAMPLES / ECHOPRINT_SR
HASH_SEED = 0x9EA5FA36
CODE_MASK = 0xFFFFF
ECHOPRINT_VERSION = 4.12
SYNCH_VERSION = 1.0
RHYTHM_VERSION = 1.0
SYNCH_SR = 22050


@dataclass(frozen=True)
class FingerprintParams:
    lpc_order: int = 40
    whitening_block: int = 10_000
    # weight of each new block's autocorrelation in the running one
    whitening_update: float = 1.0 / 8.0
    filter_taps: int = 128
    # frames (2.9 ms) between onsets the detector aims at, per band: ~1 s
    onset_target_frames: int = 345
    # a new onset within this many frames replaces the previous one
    onset_deadtime_frames: int = 128
    # the threshold is set this far above the envelope while it is above it
    onset_overshoot: float = 1.1
    synch_chunks: int = 3
    synch_chunk_s: float = 1.0
    # silence below this (dBFS) does not start the first synch chunk
    synch_floor_db: float = -60.0
    chromaprint: bool = True


@dataclass(frozen=True)
class Fingerprints:
    code_times: np.ndarray  # int, units of CODE_UNIT_S
    codes: np.ndarray  # int, 20-bit
    band_onsets: tuple[np.ndarray, ...]  # per band: onset frames (FRAME_SAMPLES at ECHOPRINT_SR)
    echoprintstring: str
    rhythmstring: str
    synchstring: str
    codestring: str | None  # None where libchromaprint is not installed
    code_version: str | None


# --- the string format shared by all four -----------------------------------------------------


def pack(text: str) -> str:
    """zlib, then URL-safe base64: the Echo Nest's wrapping of every string."""
    return base64.urlsafe_b64encode(zlib.compress(text.encode("ascii"), 9)).decode("ascii")


def unpack(s: str) -> str:
    try:
        return zlib.decompress(base64.urlsafe_b64decode(s.encode("ascii"))).decode("ascii")
    except (ValueError, zlib.error, UnicodeError) as exc:
        raise DecodeError(f"not a zlib/base64 fingerprint string ({exc})") from None


# --- echoprint -------------------------------------------------------------------------------


def whiten(x: np.ndarray, params: FingerprintParams) -> np.ndarray:
    """Blockwise LPC inverse filter: flattens the spectrum so every band carries onsets.

    Computed in float64 a block at a time and returned as float32 (what the
    filterbank reads): a long file never holds a float64 copy of itself.
    """
    from scipy.linalg import solve_toeplitz

    p, block = params.lpc_order, params.whitening_block
    out = np.empty(len(x), dtype=np.float32)
    r = None
    for start in range(0, len(x), block):
        seg = np.asarray(x[start : start + block], dtype=np.float64)
        acc = np.array([seg[i:] @ seg[: len(seg) - i] for i in range(p + 1)])
        # the running autocorrelation starts from the first block (not from a constant), so the
        # filter does not depend on the level and a clip's whitening settles at once
        r = acc.copy() if r is None else r + params.whitening_update * (acc - r)
        if r[0] <= 1e-12:  # digital silence so far: nothing to whiten
            out[start : start + len(seg)] = seg
            continue
        # a small ridge (-60 dB) keeps near-silence and pure tones from making the system singular
        a = solve_toeplitz(r[:p] + np.eye(1, p).ravel() * (1e-6 * r[0]), r[1 : p + 1])
        # the previous block's last p samples are the history (zeros before the file)
        prev = np.asarray(x[max(0, start - p) : start], dtype=np.float64)
        hist = np.concatenate([np.zeros(p - len(prev)), prev, seg])
        # e[n] = x[n] - sum_j a_j x[n-j]
        out[start : start + len(seg)] = seg - np.convolve(hist, np.concatenate([[0.0], a]), mode="full")[p : p + len(seg)]
    return out


@functools.lru_cache(maxsize=4)
def _filterbank(taps: int) -> np.ndarray:
    """taps x 8 complex filters: a windowed-sinc low-pass (cut at fs/32) shifted to each band centre."""
    n = np.arange(taps) - (taps - 1) / 2.0
    proto = np.sinc(n / 16.0) / 16.0 * np.hamming(taps)  # pass band +-fs/32: half of one band
    centres = (2 * np.arange(SUBBANDS) + 1) / 32.0  # band k spans k/16 .. (k+1)/16 of fs
    return (proto[:, None] * np.exp(2j * np.pi * n[:, None] * centres[None, :])).astype(np.complex64)


def subband_envelopes(x: np.ndarray, params: FingerprintParams) -> np.ndarray:
    """frames x 8: root of Hann-weighted subband energy, one frame per 32 samples."""
    from numpy.lib.stride_tricks import sliding_window_view

    taps = params.filter_taps
    if len(x) < taps + FRAME_SAMPLES * 3:
        return np.zeros((0, SUBBANDS))
    windows = sliding_window_view(x.astype(np.float32), taps)[::SUBBAND_HOP]
    fb = _filterbank(taps)
    energy = np.empty((len(windows), SUBBANDS), dtype=np.float32)  # (T, 8)
    # in blocks: the product copies its strided windows (taps x 4 bytes per row), 0.4 GB per
    # 10 minutes of audio if done at once
    for a in range(0, len(windows), 65536):
        energy[a : a + 65536] = np.abs(windows[a : a + 65536] @ fb) ** 2
    nsm = 2 * ENVELOPE_HOP
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(nsm) / (nsm - 1))
    blocks = sliding_window_view(energy, nsm, axis=0)[::ENVELOPE_HOP]  # (frames, 8, nsm)
    env = np.empty(blocks.shape[:2])
    for a in range(0, len(blocks), 65536):  # the product copies its strided view: a block at a time
        env[a : a + 65536] = blocks[a : a + 65536] @ hann
    return np.sqrt(env)


def _onset_filter(env: np.ndarray) -> np.ndarray:
    """Band-pass of each envelope: a difference across 6 frames, then a leaky integrator."""
    from scipy.signal import lfilter

    bn = np.array([0.1883, 0.4230, 0.3392])
    fir = np.concatenate([bn, [0.0], -bn[::-1]])
    d = lfilter(fir, [1.0], env, axis=0)
    d[: len(fir) - 1] = 0.0  # no history before the start: no difference there
    return lfilter([1.0], [1.0, -0.98], d, axis=0)


@functools.lru_cache(maxsize=1)
def _onset_kernel():
    import numba

    @numba.njit(cache=True)
    def run(xf, h0, target, deadtime, overshoot):  # pragma: no cover - compiled
        frames, bands = xf.shape
        out = np.zeros((bands, frames), dtype=np.int64)
        count = np.zeros(bands, dtype=np.int64)
        for j in range(bands):
            h = h0[j]
            tau = 1.0
            last = False
            since = 0
            for i in range(frames):
                xn = xf[i, j]
                contact = xn > h
                if contact:
                    h = xn * overshoot
                else:
                    h = h * np.exp(-1.0 / tau)
                if last and not contact:
                    # the envelope fell back under the threshold: an onset, unless one came
                    # within the dead time, which it replaces
                    if count[j] > 0 and out[j, count[j] - 1] > i - deadtime:
                        count[j] -= 1
                    out[j, count[j]] = i
                    count[j] += 1
                    since = 0
                since += 1
                # adapt the decay so onsets come about every `target` frames
                if since > target:
                    tau = max(1.0, tau - 1.0)
                else:
                    tau += 1.0
                last = contact
        return out, count

    return run


def band_onsets(env: np.ndarray, params: FingerprintParams) -> tuple[np.ndarray, ...]:
    if len(env) == 0:
        return tuple(np.zeros(0, dtype=np.int64) for _ in range(SUBBANDS))
    xf = _onset_filter(env.astype(np.float64))
    out, count = _onset_kernel()(
        np.ascontiguousarray(xf), env[0].astype(np.float64).copy(), params.onset_target_frames,
        params.onset_deadtime_frames, params.onset_overshoot,
    )
    return tuple(out[j, : count[j]].copy() for j in range(SUBBANDS))


def murmur2_5(dt0: np.ndarray, dt1: np.ndarray, band: np.ndarray, seed: int = HASH_SEED) -> np.ndarray:
    """MurmurHash2 (Appleby) of the 5 bytes int16 dt0, int16 dt1, uint8 band (little-endian), vectorised."""
    m = np.uint32(0x5BD1E995)
    with np.errstate(over="ignore"):
        k = (dt0.astype(np.uint32) & np.uint32(0xFFFF)) | ((dt1.astype(np.uint32) & np.uint32(0xFFFF)) << np.uint32(16))
        h = np.full(k.shape, np.uint32(seed ^ 5), dtype=np.uint32)
        k = k * m
        k ^= k >> np.uint32(24)
        k = k * m
        h = h * m
        h ^= k
        h ^= band.astype(np.uint32) & np.uint32(0xFF)
        h = h * m
        h ^= h >> np.uint32(13)
        h = h * m
        h ^= h >> np.uint32(15)
    return h


# which onsets after onset a pair (b - a, c - b) is made of: up to 6 per onset
_PAIRS = ((1, 2), (1, 3), (2, 3), (1, 4), (2, 4), (3, 4))


def echoprint_codes(onsets: tuple[np.ndarray, ...], *, margin_frames: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(times, codes) sorted by time: 6 interval pairs per onset from its next 4 onsets in the band.

    margin_frames > 0 (for queries): an interval within that many frames of a quantization step
    also yields the code of the neighbouring step, as a slightly earlier or later onset would."""
    times, codes = [], []
    for band, o in enumerate(onsets):
        n = len(o)
        for p, q in _PAIRS:
            if n <= q:
                continue
            a = o[: n - q]
            raw0 = o[p : n - q + p] - a
            raw1 = o[q:] - o[p : n - q + p]
            t = np.rint(a / CODE_UNIT_FRAMES).astype(np.int64)
            for d0, d1, keep in _variants(raw0, raw1, margin_frames):
                codes.append(murmur2_5(d0[keep], d1[keep], np.full(int(keep.sum()), band)) & np.uint32(CODE_MASK))
                times.append(t[keep])
    if not codes:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    t = np.concatenate(times)
    c = np.concatenate(codes).astype(np.int64)
    order = np.lexsort((c, t))
    return t[order], c[order]


def _variants(raw0: np.ndarray, raw1: np.ndarray, margin: int):
    q0, q1 = raw0 // CODE_UNIT_FRAMES, raw1 // CODE_UNIT_FRAMES
    everything = np.ones(len(raw0), dtype=bool)
    yield q0, q1, everything
    if margin <= 0:
        return
    r0, r1 = raw0 % CODE_UNIT_FRAMES, raw1 % CODE_UNIT_FRAMES
    # which way each interval could tip: -1 (just above a step), +1 (just below the next), 0 (safe)
    s0 = np.where(r0 < margin, -1, np.where(r0 >= CODE_UNIT_FRAMES - margin, 1, 0))
    s1 = np.where(r1 < margin, -1, np.where(r1 >= CODE_UNIT_FRAMES - margin, 1, 0))
    yield q0 + s0, q1, s0 != 0
    yield q0, q1 + s1, s1 != 0
    yield q0 + s0, q1 + s1, (s0 != 0) & (s1 != 0)


def encode_echoprint(times: np.ndarray, codes: np.ndarray) -> str:
    """Times (5-digit hex, 23.2 ms units) for every code, then every code (5-digit hex)."""
    text = "".join(f"{int(t):05x}" for t in times) + "".join(f"{int(c):05x}" for c in codes)
    return pack(text)


def decode_echoprint(s: str) -> tuple[np.ndarray, np.ndarray]:
    text = unpack(s)
    if len(text) % 10:
        raise DecodeError("not an echoprint string: its length is not a whole number of (time, code) pairs")
    n = len(text) // 10
    values = np.array([int(text[i : i + 5], 16) for i in range(0, len(text), 5)], dtype=np.int64)
    return values[:n], values[n:]


def echoprint_from_samples(
    x11k: np.ndarray, params: FingerprintParams, *, margin_frames: int = 0
) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """Onsets per band and the (times, codes) of 11025 Hz mono audio."""
    onsets = band_onsets(subband_envelopes(whiten(x11k, params), params), params)
    times, codes = echoprint_codes(onsets, margin_frames=margin_frames)
    return onsets, times, codes


# --- rhythm ----------------------------------------------------------------------------------


def encode_rhythm(onsets: tuple[np.ndarray, ...]) -> str:
    """`Fs Hop Nch`, then per band `N first d_2 .. d_N` (frames of Hop samples at Fs)."""
    parts = [str(ECHOPRINT_SR), str(FRAME_SAMPLES), str(len(onsets))]
    for o in onsets:
        parts.append(str(len(o)))
        if len(o):
            parts.append(str(int(o[0])))
            parts.extend(str(int(d)) for d in np.diff(o))
    return pack(" ".join(parts))


def decode_rhythm(s: str) -> list[np.ndarray]:
    """Onset times in seconds, one array per band."""
    try:
        v = [int(t) for t in unpack(s).split()]
        fs, hop, nch = v[:3]
        pos, bands = 3, []
        for _ in range(nch):
            n = v[pos]
            bands.append(np.cumsum(np.array(v[pos + 1 : pos + 1 + n], dtype=np.int64)) * hop / fs)
            pos += 1 + n
    except (ValueError, IndexError):
        raise DecodeError("not a rhythmstring: the numbers do not follow `Fs Hop Nch <N first deltas>...`") from None
    return bands


# --- synch -----------------------------------------------------------------------------------


def zero_crossings(x: np.ndarray) -> np.ndarray:
    """Indices i where x[i] < 0 <= x[i+1]."""
    return np.flatnonzero((x[:-1] < 0) & (x[1:] >= 0))


def synch_chunk_starts(x: np.ndarray, sr: int, params: FingerprintParams) -> list[int]:
    """Where the music starts, the middle, and near the end, each leaving room for a +-0.5 s search."""
    n, chunk = len(x), int(params.synch_chunk_s * sr)
    if n < chunk + 1:
        return []
    loud = np.flatnonzero(np.abs(x) > 10 ** (params.synch_floor_db / 20))
    first = int(loud[0]) if len(loud) else 0
    last = max(0, n - 2 * chunk)
    starts = [min(first, last), (n - chunk) // 2, last][: params.synch_chunks]
    return [int(s) for s in starts]


def encode_synch(x: np.ndarray, sr: int, params: FingerprintParams) -> str:
    """`Fs Nch`, then per chunk `N Zi d_1 .. d_{N-1}`: the chunk's start sample, then the gaps from it to
    each positive-going zero crossing and between them (the layout the Echo Nest's synchdata reads)."""
    chunk = int(params.synch_chunk_s * sr)
    starts = synch_chunk_starts(x, sr, params)
    parts = [str(sr), str(len(starts))]
    for s in starts:
        zc = zero_crossings(x[s : s + chunk])
        parts += [str(len(zc) + 1), str(s)] + [str(int(d)) for d in np.diff(np.concatenate([[0], zc]))]
    return pack(" ".join(parts))


def decode_synch(s: str) -> tuple[int, list[tuple[int, np.ndarray]]]:
    """(sample rate, [(chunk start, zero-crossing offsets within the chunk)])."""
    try:
        v = [int(t) for t in unpack(s).split()]
        fs, nch = v[:2]
        pos, chunks = 2, []
        for _ in range(nch):
            n, zi = v[pos], v[pos + 1]
            chunks.append((zi, np.cumsum(np.array(v[pos + 2 : pos + 1 + n], dtype=np.int64))))
            pos += 1 + n
    except (ValueError, IndexError):
        raise DecodeError("not a synchstring: the numbers do not follow `Fs Nch <N Zi deltas>...`") from None
    return fs, chunks


def synch_offsets(s: str, x: np.ndarray, *, max_offset_s: float = 0.5) -> list[int]:
    """For each chunk, the shift in samples of `x` (mono, at the string's rate) against the analysis:
    x[i + shift] is the analysis signal's sample i.  Agreeing shifts can be trusted for the whole file."""
    fs, chunks = decode_synch(s)
    reach = int(max_offset_s * fs)
    out = []
    for zi, offsets in chunks:
        length = int(offsets[-1]) + 1 if len(offsets) else 1
        ref = np.zeros(length)
        ref[offsets] = 1.0
        lo = max(0, zi - reach)
        seg = x[lo : zi + length + reach + 1]
        mine = np.zeros(len(seg))
        mine[zero_crossings(seg)] = 1.0
        if len(mine) < length:
            out.append(0)
            continue
        score = np.correlate(mine, ref, mode="valid")  # score[k]: ref placed at lo + k
        out.append(int(lo + int(np.argmax(score)) - zi))
    return out


# --- chromaprint -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _chromaprint():
    try:
        import chromaprint

        lib = chromaprint._libchromaprint  # the ctypes load: fails here where the library is missing
        import ctypes

        lib.chromaprint_get_version.restype = ctypes.c_char_p
        return chromaprint, lib.chromaprint_get_version().decode()
    except (ImportError, OSError, AttributeError):
        return None, None


CHROMAPRINT_ALGORITHM = 1  # CHROMAPRINT_ALGORITHM_TEST2, the default AcoustID indexes (fpcalc's "2")


def chromaprint_string(x: np.ndarray, sr: int) -> tuple[str | None, str | None]:
    """libchromaprint's compressed fingerprint in its own URL-safe base64 (what fpcalc prints)."""
    cp, version = _chromaprint()
    if cp is None:
        return None, None
    fp = cp.Fingerprinter(CHROMAPRINT_ALGORITHM)
    fp.start(sr, 1)
    step = 30 * sr  # fed in pieces (libchromaprint streams): a long file is never copied whole as PCM
    for a in range(0, len(x), step):
        fp.feed((np.clip(x[a : a + step], -1.0, 1.0) * 32767.0).astype("<i2").tobytes())
    out = fp.finish()
    s = out.decode("ascii") if isinstance(out, bytes) else str(out)
    return s, f"chromaprint {version} algorithm {CHROMAPRINT_ALGORITHM + 1}"


CHROMAPRINT_ITEM_S = 1365 / 11025  # libchromaprint's hop: a third of its 4096-sample frame at 11025 Hz


def chromaprint_raw(x: np.ndarray, sr: int) -> np.ndarray:
    """The raw 32-bit sub-fingerprints (uint32) of the audio; DecodeError without libchromaprint."""
    s, _ = chromaprint_string(x, sr)
    if s is None:
        raise DecodeError("libchromaprint is not installed (Debian: libchromaprint1; PyPI: pyacoustid)")
    return decode_chromaprint(s).astype(np.uint32)


def decode_chromaprint(s: str) -> np.ndarray:
    """The raw 32-bit sub-fingerprints (one per 0.124 s) of a codestring."""
    cp, _ = _chromaprint()
    if cp is None:
        raise DecodeError("libchromaprint is not installed: cannot decode a codestring")
    try:
        raw, _algo = cp.decode_fingerprint(s.encode("ascii"))
    except Exception as exc:  # noqa: BLE001 - the ctypes wrapper raises its own types
        raise DecodeError(f"not a chromaprint string ({exc})") from None
    return np.array(raw, dtype=np.int64) & 0xFFFFFFFF


# --- the stage -------------------------------------------------------------------------------


def to_11k(x: np.ndarray, sr: int) -> np.ndarray:
    import soxr

    return soxr.resample(x, sr, ECHOPRINT_SR, quality="HQ").astype(np.float32, copy=False) if sr != ECHOPRINT_SR else x


def fingerprint(samples: np.ndarray, sr: int, params: FingerprintParams = FingerprintParams()) -> Fingerprints:
    import soxr

    onsets, times, codes = echoprint_from_samples(to_11k(samples, sr), params)
    synch_x = samples if sr == SYNCH_SR else soxr.resample(samples, sr, SYNCH_SR, quality="HQ")
    code, code_version = chromaprint_string(samples, sr) if params.chromaprint else (None, None)
    return Fingerprints(
        code_times=times,
        codes=codes,
        band_onsets=onsets,
        echoprintstring=encode_echoprint(times, codes),
        rhythmstring=encode_rhythm(onsets),
        synchstring=encode_synch(synch_x, SYNCH_SR, params),
        codestring=code,
        code_version=code_version,
    )
