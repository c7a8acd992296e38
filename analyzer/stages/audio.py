"""The only decoder: a file (a path, or its bytes read elsewhere) in, mono float32 samples at the analysis rate out.

PyAV (bundled FFmpeg) decodes every container we accept, so no system ffmpeg
is needed; soxr resamples.  Frames are downmixed and resampled as they stream
in, so a long file never sits in memory at its native rate and channel count.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analyzer.errors import DecodeError, InputError, ParameterError, quote_path

ANALYSIS_SR = 22050

# A file at least this much shorter than its header declares is reported as
# truncated rather than analysed as if it were whole (a cut download).
_TRUNCATION_TOLERANCE_S = 1.0
_TRUNCATION_RATIO = 0.9
_DURATION_SLACK_S = 1.0


def _minutes(seconds: float) -> str:
    """'60 min', '60.5 min', '1 min 2.5 s', '28.5 s': exact enough to compare with a limit."""
    if seconds < 60.0:
        return f"{seconds:.1f} s"
    whole = round(seconds / 60.0, 1)
    if abs(whole * 60.0 - seconds) < 0.05:
        return f"{whole:g} min"
    return f"{int(seconds // 60)} min {seconds % 60:.1f} s"


@dataclass(frozen=True)
class DecodeParams:
    offset_s: float = 0.0
    duration_s: float = 0.0  # 0: to the end
    min_duration_s: float = 1.0
    max_duration_s: float = 3600.0
    allow_truncated: bool = False
    resample_quality: str = "HQ"


@dataclass(frozen=True)
class SourceInfo:
    path: str
    filename: str
    sample_rate_hz: int
    channels: int
    bitrate_kbps: int
    file_duration_s: float
    codec: str
    container: str
    decoder: str
    input_process: str
    tags: dict[str, str] = field(default_factory=dict)
    truncated: str | None = None  # analysed with allow_truncated although cut short: how (else None)


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32 mono in [-1, 1] at `sr`
    sr: int
    source: SourceInfo
    offset_s: float
    window_s: float  # 0 = whole file

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sr

    @property
    def md5(self) -> str:
        return hashlib.md5(np.ascontiguousarray(self.samples, dtype="<f4").tobytes()).hexdigest()


def _check_path(path: Path) -> None:
    name = quote_path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except PermissionError:
        raise InputError(f"{name}: permission denied (cannot read the file)") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{name}: is a folder, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        # a FIFO or a device would block the read (or never end): only regular files are audio files
        raise InputError(f"{name}: not a regular file (a pipe, socket or device); only files are read")
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except PermissionError:
        raise InputError(f"{name}: permission denied (cannot read the file)") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    if not head:
        raise DecodeError(f"{name}: empty file (0 bytes)")


class _NamedBytes(io.BytesIO):
    """A file's bytes with its name: FFmpeg and mutagen guess the format from the name as from a path."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name


def read_tags(path: Path, data: bytes | None = None) -> dict[str, str]:
    """artist/album/title/genre from the file's tags, "" where absent (from `data` when given)."""
    import mutagen

    out = {"artist": "", "album": "", "title": "", "genre": ""}
    try:
        mf = mutagen.File(str(path) if data is None else _NamedBytes(data, str(path)), easy=True)
    except Exception:  # mutagen raises many unrelated types on odd files; tags are optional
        mf = None
    if mf is not None and mf.tags is not None:
        for key in out:
            try:
                val = mf.tags.get(key)
            except Exception:
                val = None
            if val:
                out[key] = str(val[0] if isinstance(val, list) else val).strip()
    return out


def _ffmpeg_version() -> str:
    import av

    try:
        v = av.library_versions.get("libavcodec")
        return "libavcodec " + ".".join(str(x) for x in v)
    except Exception:
        return "FFmpeg"


def decode(path: str | os.PathLike, *, sr: int = ANALYSIS_SR, params: DecodeParams = DecodeParams(),
           data: bytes | None = None) -> Audio:
    """Decode ``path`` (or its bytes, ``data``) to mono float32 at ``sr`` Hz (the analysis rate).

    Parameters
    ----------
    path : str or os.PathLike
        An audio file FFmpeg can read; with ``data``, only the file's name (for messages, the
        document's ``meta`` and the format guess), and nothing is read from it.
    sr : int
        The output sample rate, Hz.
    params : DecodeParams
        The excerpt (offset, duration), the length limit, truncation tolerance, resampler quality.
    data : bytes, optional
        The file's content, read elsewhere (a Spark executor reads it from HDFS or S3): decoded
        exactly as the file at ``path`` would be, to the same samples and ``meta``.

    Returns
    -------
    Audio
        The samples (mean of the channels, clipped to [-1, 1]) and what the file declared.

    Raises
    ------
    InputError, DecodeError, ParameterError
        One line each: a missing or unreadable file, no audio, too long, truncated, too short,
        an offset past the end.
    """
    import av
    import soxr

    for what, value in (("offset", params.offset_s), ("duration", params.duration_s),
                        ("maximum duration", params.max_duration_s), ("minimum duration", params.min_duration_s)):
        if not np.isfinite(value):
            raise ParameterError(f"{what} {value} s: give a finite number of seconds")
    if params.offset_s < 0 or params.duration_s < 0:
        raise ParameterError(
            f"offset {params.offset_s} s and duration {params.duration_s} s must be >= 0"
        )
    # the name as given: a Hadoop URI (hdfs://nn/a.mp3, read elsewhere) keeps its "//", which Path would fold
    path, shown = Path(path), (os.fsdecode(path) if data is not None else str(Path(path)))
    name = quote_path(shown)
    if data is None:
        _check_path(path)
        size = None
    else:
        if not data:
            raise DecodeError(f"{name}: empty file (0 bytes)")
        size = len(data)
    want_start = params.offset_s
    want_end = params.offset_s + params.duration_s if params.duration_s > 0 else float("inf")

    with _open(path, name, data) as container:
        info = _stream_info(container, path, name, params, size=size)
        if params.offset_s > 0:
            try:
                container.seek(int(params.offset_s / info.stream.time_base), stream=info.stream, any_frame=False,
                               backward=True)
            except av.error.FFmpegError:
                pass  # unseekable stream: decode from the start and trim below
        resampler = soxr.ResampleStream(info.native_sr, sr, 1, dtype="float32", quality=params.resample_quality)
        # the decoded samples go straight into one buffer sized from the header (grown if it
        # lied): a list of chunks joined at the end would hold the whole file twice
        expect_s = min(info.declared_s or 60.0, want_end - want_start, params.max_duration_s) + 1.0
        buffer = _SampleBuffer(int(expect_s * sr))
        notes: list[str] = []  # how the file is cut short, where allow_truncated analyses it anyway
        decoded_native = _decode_window(container, info, buffer, resampler, want_start=want_start, want_end=want_end,
                                        params=params, name=name, notes=notes)
        buffer.append(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        container_name = container.format.name if container.format else "unknown"

    samples = buffer.result()
    got_s = decoded_native / info.native_sr
    # WAV and Ogg: FFmpeg takes the length from what is there, so a cut file looks whole; their own
    # headers and pages tell (unless the excerpt asked for ends before the cut)
    cut = _cut_short(path, data)
    if cut is not None and not (want_end < float("inf") and got_s >= want_end - want_start - 0.05):
        why, declared_s = cut
        if not params.allow_truncated:
            of = f"of the {declared_s:.1f} s its header declares " if declared_s else ""
            raise DecodeError(f"{name}: truncated: decoded {got_s:.1f} s {of}({why}; --allow-truncated analyses "
                              "what decodes)")
        notes.append(f"decoded {got_s:.1f} s" + (f" of {declared_s:.1f} s" if declared_s else "") + f", {why}")
    _check_length(got_s, info.declared_s, want_end=want_end, params=params, name=name, notes=notes)
    # a float file can hold NaN or infinity: no analysis can read them (checked in blocks: a whole-file
    # mask would cost a byte per sample)
    if any(not np.isfinite(samples[i : i + (1 << 20)]).all() for i in range(0, len(samples), 1 << 20)):
        raise DecodeError(f"{name}: the audio holds samples that are not numbers (NaN or infinity): damaged")
    np.clip(samples, -1.0, 1.0, out=samples)
    return Audio(
        samples=samples,
        sr=sr,
        source=_source_info(path, info, container_name=container_name, got_s=got_s, sr=sr, params=params, data=data,
                            shown=shown, truncated="; ".join(notes) or None),
        offset_s=float(params.offset_s),
        window_s=float(params.duration_s and len(samples) / sr),
    )


@dataclass(frozen=True)
class _StreamInfo:
    """The first audio stream and what its headers declare."""

    stream: object  # av.AudioStream
    codec: str
    native_sr: int
    channels: int
    declared_s: float  # 0.0 when the headers do not say
    bit_rate: int  # bits per second, estimated from the file size when not declared


def _open(path: Path, name: str, data: bytes | None = None):
    """The file (or its bytes) opened by FFmpeg; one-line errors for a missing, unreadable or non-media file."""
    import av

    try:
        return av.open(str(path) if data is None else _NamedBytes(data, str(path)), mode="r")
    except av.error.FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except av.error.PermissionError:
        raise InputError(f"{name}: permission denied (cannot read the file)") from None
    except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"{name}: not a readable audio file ({_short(exc)})") from None


def _stream_info(container, path: Path, name: str, params: DecodeParams, *, size: int | None = None) -> _StreamInfo:
    """The first audio stream, refused in one line if it has no decoder, rate or channels, or is too long."""
    if not container.streams.audio:
        raise DecodeError(f"{name}: the file has no audio stream")
    stream = container.streams.audio[0]
    ctx = stream.codec_context
    if ctx is None:
        # FFmpeg found a stream but no decoder for it (a damaged or unknown codec id)
        raise DecodeError(f"{name}: the audio stream has no decoder (damaged or unsupported codec)")
    native_sr = int(ctx.sample_rate or stream.sample_rate or 0)
    channels = int(ctx.channels or 0)
    if native_sr <= 0 or channels <= 0:
        raise DecodeError(f"{name}: the audio stream declares no sample rate or channels")
    declared_s = _declared_duration(container, stream)
    # headers round (an mp3's 3600.000045 s is a 60-minute file): a second of slack
    if declared_s > params.max_duration_s + _DURATION_SLACK_S and not params.duration_s:
        raise InputError(
            f"{name}: {_minutes(declared_s)} of audio; the limit is {_minutes(params.max_duration_s)} "
            "(analyse an excerpt with --offset/--duration or raise --max-duration)"
        )
    bit_rate = int(stream.bit_rate or container.bit_rate or 0)
    if not bit_rate and declared_s > 0:
        bit_rate = int((path.stat().st_size if size is None else size) * 8 / declared_s)
    return _StreamInfo(stream=stream, codec=ctx.name or "unknown", native_sr=native_sr, channels=channels,
                       declared_s=declared_s, bit_rate=bit_rate)


def _decode_window(
    container, info: _StreamInfo, buffer: _SampleBuffer, resampler, *, want_start: float, want_end: float,
    params: DecodeParams, name: str, notes: list[str],
) -> int:
    """Decode the stream's samples from ``want_start`` to ``want_end`` (s), resampled, into ``buffer``.

    Returns how many native-rate samples were kept.  A damaged packet mid-file is skipped
    (as players do; more than 50 is an error); an FFmpeg error after some audio is a
    truncated file, refused unless ``params.allow_truncated``.
    """
    import av

    native_sr = info.native_sr
    decoded_native = 0
    first_time: float | None = None
    errors = 0
    try:
        for packet in container.demux(info.stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                errors += 1
                if errors > 50:
                    raise
                continue
            for frame in frames:
                mono = _frame_to_mono(frame)
                t0 = float(frame.pts * frame.time_base) if frame.pts is not None else (
                    (first_time or 0.0) + decoded_native / native_sr
                )
                if first_time is None:
                    first_time = t0
                if t0 + len(mono) / native_sr <= want_start:
                    continue
                if t0 < want_start:
                    mono = mono[int(round((want_start - t0) * native_sr)):]
                    t0 = want_start
                if t0 >= want_end:
                    return decoded_native
                if t0 + len(mono) / native_sr > want_end:
                    mono = mono[: max(0, int(round((want_end - t0) * native_sr)))]
                decoded_native += len(mono)
                buffer.append(resampler.resample_chunk(mono, last=False))
                if t0 - params.offset_s > params.max_duration_s + _DURATION_SLACK_S:
                    raise InputError(
                        f"{name}: more than {_minutes(params.max_duration_s)} of audio "
                        "(analyse an excerpt with --offset/--duration or raise --max-duration)"
                    )
    except av.error.FFmpegError as exc:
        if not decoded_native:
            raise DecodeError(f"{name}: not a readable audio file ({_short(exc)})") from None
        if not params.allow_truncated:
            raise DecodeError(
                f"{name}: damaged or truncated after {decoded_native / native_sr:.1f} s "
                f"({_short(exc)}; --allow-truncated analyses what decodes)"
            ) from None
        notes.append(f"damaged or truncated after {decoded_native / native_sr:.1f} s ({_short(exc)})")
    return decoded_native


def _check_length(got_s: float, declared_s: float, *, want_end: float, params: DecodeParams, name: str,
                  notes: list[str]) -> None:
    """Refuse, in one line, nothing decoded, an offset past the end, a truncated file or too short a one."""
    # the offset first: past the end, nothing decodes, and that is the reason to give
    if params.offset_s > 0 and declared_s and params.offset_s >= declared_s:
        raise ParameterError(f"--offset {params.offset_s:g} s is past the end of {name} ({declared_s:.1f} s)")
    if got_s == 0:
        raise DecodeError(f"{name}: no audio could be decoded (not audio, or truncated to nothing)")
    expected_s = (min(declared_s, want_end) - params.offset_s) if declared_s else 0.0
    if expected_s > 0 and got_s < _TRUNCATION_RATIO * expected_s - _TRUNCATION_TOLERANCE_S:
        if not params.allow_truncated:
            raise DecodeError(
                f"{name}: truncated: decoded {got_s:.1f} s of the {expected_s:.1f} s its header declares "
                "(--allow-truncated analyses what decodes)"
            )
        if not notes:
            notes.append(f"decoded {got_s:.1f} s of the {expected_s:.1f} s its header declares")
    if got_s < params.min_duration_s:
        raise DecodeError(
            f"{name}: only {got_s:.2f} s of audio; the analyzer needs at least {params.min_duration_s:g} s"
        )


def _source_info(path: Path, info: _StreamInfo, *, container_name: str, got_s: float, sr: int,
                 params: DecodeParams, data: bytes | None = None, shown: str | None = None,
                 truncated: str | None = None) -> SourceInfo:
    """What the file declared and how it was decoded, for the document's ``meta`` (`shown`: the path as given)."""
    import av

    process = (
        f"{info.codec} {info.native_sr} Hz {info.channels} ch -> mean of channels -> "
        f"soxr {params.resample_quality} {info.native_sr} -> {sr} Hz, float32"
    )
    return SourceInfo(
        path=str(path) if shown is None else shown,
        filename=path.name,
        sample_rate_hz=info.native_sr,
        channels=info.channels,
        bitrate_kbps=int(round(info.bit_rate / 1000)),
        file_duration_s=float(info.declared_s or got_s),
        codec=info.codec,
        container=container_name,
        decoder=f"PyAV {av.__version__} ({_ffmpeg_version()}, {info.codec})",
        input_process=process,
        tags=read_tags(path, data),
        truncated=truncated,
    )


class _SampleBuffer:
    """A float32 buffer appended to in place, grown by half when full."""

    def __init__(self, capacity: int) -> None:
        self._data = np.empty(max(capacity, 1024), dtype=np.float32)
        self._n = 0

    def append(self, x: np.ndarray) -> None:
        need = self._n + len(x)
        if need > len(self._data):
            grown = np.empty(max(need, len(self._data) * 3 // 2), dtype=np.float32)
            grown[: self._n] = self._data[: self._n]
            self._data = grown
        self._data[self._n : need] = x
        self._n = need

    def result(self) -> np.ndarray:
        """The samples appended (the buffer trimmed in place when it is much too large)."""
        if self._n < 0.9 * len(self._data):
            return self._data[: self._n].copy()
        return self._data[: self._n]


_TAIL_BYTES = 1 << 16  # an Ogg page is at most 65307 bytes


def _cut_short(path: Path, data: bytes | None) -> tuple[str, float | None] | None:
    """Whether a WAV or Ogg file lacks bytes at its end, by its own structure: (how, the seconds its
    header declares or None), or None (whole, or another format: FFmpeg's checks apply)."""
    try:
        if data is not None:
            head, tail, size = data[:_TAIL_BYTES], data[-_TAIL_BYTES:], len(data)
        else:
            with open(path, "rb") as f:
                head = f.read(_TAIL_BYTES)
                size = os.fstat(f.fileno()).st_size
                f.seek(max(0, size - _TAIL_BYTES))
                tail = f.read()
    except OSError:
        return None  # the decoder read it; a file that went away now is not this check's to report
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return _wav_cut(head, size)
    if head[:4] == b"OggS":
        return _ogg_cut(tail)
    return None


def _wav_cut(head: bytes, size: int) -> tuple[str, float | None] | None:
    """A WAV whose data chunk declares more bytes than the file holds."""
    byte_rate, pos = 0, 12
    while pos + 8 <= len(head):
        chunk, length = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if chunk == b"fmt " and pos + 20 <= len(head):
            byte_rate = int.from_bytes(head[pos + 16 : pos + 20], "little")
        elif chunk == b"data":
            if length in (0, 0xFFFFFFFF):  # a stream's placeholder: the length is unknown, not wrong
                return None
            missing = pos + 8 + length - size
            if missing <= 0:
                return None
            declared = length / byte_rate if byte_rate else None
            return f"{missing} bytes of its data chunk are missing", declared
        pos += 8 + length + (length & 1)
    return None


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def _ogg_page_end(buf: bytes, at: int) -> int | None:
    """Where the Ogg page starting at `at` ends: -1 if it is cut by the end of `buf`, None if no page
    (with a right checksum) starts there."""
    if buf[at : at + 4] != b"OggS"[: len(buf) - at] or (len(buf) - at >= 5 and buf[at + 4] != 0):
        return None
    if at + 27 > len(buf) or at + 27 + buf[at + 26] > len(buf):
        return -1
    end = at + 27 + buf[at + 26] + sum(buf[at + 27 : at + 27 + buf[at + 26]])
    if end > len(buf):
        return -1
    page = bytearray(buf[at:end])
    page[22:26] = b"\0\0\0\0"
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) & 0xFF) ^ byte]
    return end if crc == int.from_bytes(buf[at + 22 : at + 26], "little") else None


def _ogg_cut(tail: bytes) -> tuple[str, float | None] | None:
    """An Ogg file whose last page is cut, or whose last page does not end its stream.

    The pages are followed from the first whole page (right checksum) in the file's last 64 KiB to
    the end; bytes that are no page (junk after the stream) leave the decision to FFmpeg's checks.
    """
    at = tail.find(b"OggS")
    while at >= 0 and (_ogg_page_end(tail, at) or -1) < 0:
        at = tail.find(b"OggS", at + 1)
    if at < 0:
        return None
    last_flags = 0
    while at < len(tail):
        end = _ogg_page_end(tail, at)
        if end is None:
            return None
        if end < 0:
            return "its last Ogg page is cut", None
        last_flags, at = tail[at + 5], end
    return None if last_flags & 0x04 else ("no Ogg page ends the stream", None)


def _declared_duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000.0
    return 0.0


def _frame_to_mono(frame) -> np.ndarray:
    arr = frame.to_ndarray()
    fmt = frame.format.name
    if arr.dtype.kind in "iu":
        info = np.iinfo(arr.dtype)
        scale = float(max(abs(info.min), info.max + 1))
        if info.min == 0:  # unsigned 8-bit: centred at 128
            arr = arr.astype(np.float32) - (info.max + 1) / 2
            scale = (info.max + 1) / 2
        arr = arr.astype(np.float32) / scale
    else:
        arr = arr.astype(np.float32, copy=False)
    if frame.format.is_planar:
        # (channels, samples)
        mono = arr.mean(axis=0) if arr.shape[0] > 1 else arr[0]
    else:
        # packed: (1, samples * channels)
        ch = len(frame.layout.channels)
        mono = arr.reshape(-1, ch).mean(axis=1) if ch > 1 else arr.reshape(-1)
    del fmt
    return np.ascontiguousarray(mono, dtype=np.float32)


def _short(exc: BaseException) -> str:
    msg = getattr(exc, "strerror", None) or (str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    msg = msg or type(exc).__name__
    # FFmpeg errors repeat the path; keep the reason only.
    if ": '" in msg:
        msg = msg.split(": '")[0]
    return msg[:160]
