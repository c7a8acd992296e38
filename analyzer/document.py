"""The only place that builds, rounds, validates and serializes the Echo Nest document."""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
from importlib import resources

import numpy as np
import orjson

from analyzer import __version__
from analyzer.errors import InputError, SchemaError
from analyzer.stages.fingerprint import ECHOPRINT_VERSION, RHYTHM_VERSION, SYNCH_VERSION
from analyzer.stages.descriptors import Descriptors
from analyzer.pipeline import Analysis
from analyzer.stages.rhythm import Events
from analyzer.stages.sections import Section
from analyzer.stages.segments import Segments
from analyzer.stages.tagging import EMBEDDING_MODEL

SCHEMA_NAME = "analysis.schema.json"


def _r(x: float, nd: int) -> float:
    v = round(float(x), nd)
    return 0.0 if v == 0 else v  # no "-0.0" in the output


def _t(x: float) -> float:
    return _r(x, 5)


def _c(x: float) -> float:
    return _r(min(max(float(x), 0.0), 1.0), 3)


def _db(x: float) -> float:
    return _r(max(float(x), -60.0), 3)


def _events(ev: Events) -> list[dict]:
    return [
        {"start": _t(s), "duration": _t(d), "confidence": _c(c)}
        for s, d, c in zip(ev.start, ev.duration, ev.confidence)
    ]


def platform_string() -> str:
    return f"{platform.system()} {platform.machine()}, Python {sys.version.split()[0]}"


def build_document(analysis: Analysis, *, timestamp: int, analysis_time_s: float,
                   embedding: tuple[np.ndarray, str] | None = None) -> dict:
    """The Echo Nest document of one analysis, rounded and validated against the schema.

    Parameters
    ----------
    analysis : Analysis
        What `pipeline.analyze` returned.
    timestamp : int
        When the analysis started, Unix seconds (``meta.timestamp``).
    analysis_time_s : float
        How long it took, s (``meta.analysis_time``).
    embedding : (np.ndarray, str), optional
        An embedding vector and its model's id: the ``embedding`` / ``embedding_model``
        extension fields.  Without one, the MSD tagger's (``Tags.embedding``) where it read
        the audio.

    Returns
    -------
    dict
        ``meta``, ``track``, ``bars``, ``beats``, ``tatums``, ``sections``, ``segments``, and the
        extensions ``audio_features``, ``terms`` and (where there is one) ``embedding``.

    Raises
    ------
    SchemaError
        The document does not validate (a bug, never the input's fault).
    """
    r = analysis.rhythm
    doc = {
        "meta": _meta(analysis, timestamp=timestamp, analysis_time_s=analysis_time_s),
        "track": _track(analysis),
        "bars": _events(r.bars),
        "beats": _events(r.beats),
        "tatums": _events(r.tatums),
        "sections": [_section(s) for s in analysis.sections],
        "segments": _segments(analysis.segments),
        "audio_features": _audio_features(analysis.descriptors),
        "terms": [{"name": t.name, "frequency": _c(t.frequency), "weight": _c(t.weight), "tagger": t.tagger}
                  for t in analysis.tags.terms],
    }
    if embedding is None and (default := analysis.tags.embedding()) is not None:
        embedding = (default, EMBEDDING_MODEL)
    if embedding is not None:
        doc["embedding"] = [round(float(v), 6) for v in embedding[0]]
        doc["embedding_model"] = embedding[1]
    validate(doc)
    return doc


PERCEPTUAL_FEATURES = ("danceability", "energy", "valence", "acousticness", "instrumentalness", "speechiness",
                       "liveness")


def _audio_features(d: Descriptors) -> dict:
    return {k: None if (v := getattr(d, k)) is None else _c(v) for k in PERCEPTUAL_FEATURES}


def path_text(path: str | os.PathLike) -> str:
    """A file name as a JSON document gives it: as it is, except that bytes that are not UTF-8
    (surrogates in Python) are written ``\\xNN`` (JSON holds text only)."""
    text = os.fspath(path)
    if isinstance(text, bytes) or not text.isprintable():
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    return text


def audio_features_object(doc: dict, *, track_id: str | None = None) -> dict:
    """Spotify's ``audio-features`` object of one document (its fields in Spotify's order).

    The perceptual fields come from the document's ``audio_features`` extension (null where a
    document made before it has none), the rest from ``track``; ``id``, ``uri``, ``track_href``
    and ``analysis_url`` are the caller's (null without ``track_id``).
    """
    t, f = doc["track"], doc.get("audio_features") or {}
    obj = {
        "acousticness": f.get("acousticness"),
        "analysis_url": None,
        "danceability": f.get("danceability"),
        "duration_ms": int(round(float(t["duration"]) * 1000)),
        "energy": f.get("energy"),
        "id": track_id,
        "instrumentalness": f.get("instrumentalness"),
        "key": int(t["key"]),
        "liveness": f.get("liveness"),
        "loudness": float(t["loudness"]),
        "mode": int(t["mode"]),
        "speechiness": f.get("speechiness"),
        "tempo": float(t["tempo"]),
        "time_signature": int(t["time_signature"]),
        "track_href": None,
        "type": "audio_features",
        "uri": None,
        "valence": f.get("valence"),
    }
    return obj


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
TRACK_ID_LENGTH = 22  # 62**22 > 2**128: every md5 fits


def track_id(sample_md5: str) -> str:
    """A 22-character base62 id like Spotify's, from the md5 of the decoded samples (``track.sample_md5``).

    The same audio gets the same id wherever it lies; a re-encoded copy keeps it only if its
    decoded samples are unchanged (a lossless copy does; a new lossy encoding does not).
    ``InputError`` where ``sample_md5`` is not 32 hex digits.
    """
    if len(sample_md5) != 32:
        raise InputError(f"sample md5 {sample_md5!r}: expected 32 hex digits")
    try:
        n = int(sample_md5, 16)
    except ValueError:
        raise InputError(f"sample md5 {sample_md5!r}: expected 32 hex digits") from None
    digits = []
    while n:
        n, r = divmod(n, 62)
        digits.append(_BASE62[r])
    return "".join(reversed(digits)).rjust(TRACK_ID_LENGTH, "0")


def _meta(analysis: Analysis, *, timestamp: int, analysis_time_s: float) -> dict:
    src = analysis.audio.source
    return {
        "analyzer_version": __version__,
        "platform": platform_string(),
        # a file cut short and analysed anyway (--allow-truncated) says so where the Echo Nest gave its status
        "detailed_status": "OK" if not getattr(src, "truncated", None) else f"OK: truncated ({src.truncated})",
        "status_code": 0,
        "filename": path_text(src.path),
        "artist": src.tags.get("artist", ""),
        "album": src.tags.get("album", ""),
        "title": src.tags.get("title", ""),
        "genre": src.tags.get("genre", ""),
        "bitrate": int(src.bitrate_kbps),
        "sample_rate": int(src.sample_rate_hz),
        "channels": int(src.channels),
        "seconds": int(round(src.file_duration_s)),
        "timestamp": int(timestamp),
        "analysis_time": _t(analysis_time_s),
        "input_process": src.input_process,
    }


def _track(analysis: Analysis) -> dict:
    a, r, k = analysis.audio, analysis.rhythm, analysis.key
    track = {
        "num_samples": int(len(a.samples)),
        "duration": _t(a.duration_s),
        "sample_md5": a.md5,
        "decoder": a.source.decoder,
        "offset_seconds": _t(a.offset_s),
        "window_seconds": _t(a.window_s),
        "analysis_sample_rate": int(a.sr),
        "analysis_channels": 1,
        "end_of_fade_in": _t(analysis.fades.end_of_fade_in),
        "start_of_fade_out": _t(analysis.fades.start_of_fade_out),
        "loudness": _db(analysis.loudness),
        "tempo": _r(r.tempo_bpm, 3),
        "tempo_confidence": _c(r.tempo_confidence),
        "time_signature": int(r.time_signature),
        "time_signature_confidence": _c(r.time_signature_confidence),
        "key": int(k.key),
        "key_confidence": _c(k.key_confidence),
        "mode": int(k.mode),
        "mode_confidence": _c(k.mode_confidence),
    }
    fp = analysis.fingerprints
    if fp.codestring is not None:
        track["codestring"] = fp.codestring
        track["code_version"] = fp.code_version
    track["echoprintstring"] = fp.echoprintstring
    track["echoprint_version"] = ECHOPRINT_VERSION
    track["synchstring"] = fp.synchstring
    track["synch_version"] = SYNCH_VERSION
    track["rhythmstring"] = fp.rhythmstring
    track["rhythm_version"] = RHYTHM_VERSION
    return track


def _section(s: Section) -> dict:
    return {
        "start": _t(s.start),
        "duration": _t(s.duration),
        "confidence": _c(s.confidence),
        "loudness": _db(s.loudness),
        "tempo": _r(s.tempo, 3),
        "tempo_confidence": _c(s.tempo_confidence),
        "key": int(s.key),
        "key_confidence": _c(s.key_confidence),
        "mode": int(s.mode),
        "mode_confidence": _c(s.mode_confidence),
        "time_signature": int(s.time_signature),
        "time_signature_confidence": _c(s.time_signature_confidence),
        "label": s.label,
    }


def _segments(seg: Segments) -> list[dict]:
    segments = [
        {
            "start": _t(seg.start[i]),
            "duration": _t(seg.duration[i]),
            "confidence": _c(seg.confidence[i]),
            "loudness_start": _db(seg.loudness_start[i]),
            "loudness_max_time": _t(seg.loudness_max_time[i]),
            "loudness_max": _db(seg.loudness_max[i]),
            "pitches": [_c(v) for v in seg.pitches[i]],
            "timbre": [_r(v, 3) for v in seg.timbre[i]],
        }
        for i in range(len(seg))
    ]
    if segments:
        # the Echo Nest's documents give the level at the end of the last segment only
        segments[-1]["loudness_end"] = _db(seg.loudness_end)
    return segments


@functools.lru_cache(maxsize=1)
def load_schema() -> dict:
    text = resources.files("analyzer_schema").joinpath(SCHEMA_NAME).read_text(encoding="utf-8")
    return json.loads(text)


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate(doc: dict) -> None:
    """Raise SchemaError if `doc` breaks the schema or the orderings JSON Schema cannot express."""
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        raise SchemaError(f"internal error: document invalid at {where}: {e.message} ({len(errors)} problem(s))")
    duration = doc["track"]["duration"]
    tol = 1e-4
    for name in ("bars", "beats", "tatums", "sections", "segments"):
        starts = np.array([e["start"] for e in doc[name]], dtype=float)
        ends = starts + np.array([e["duration"] for e in doc[name]], dtype=float)
        if len(starts) and (np.any(np.diff(starts) <= 0) or np.any(ends > duration + tol)):
            raise SchemaError(f"internal error: {name} are not increasing or run past the track's end")
        if name in ("sections", "segments") and len(starts):
            if abs(starts[0]) > tol or np.any(np.abs(starts[1:] - ends[:-1]) > 2 * tol):
                raise SchemaError(f"internal error: {name} leave gaps or overlap")
    if doc["segments"] and "loudness_end" not in doc["segments"][-1]:
        raise SchemaError("internal error: the last segment has no loudness_end")
    tr = doc["track"]
    if tr["end_of_fade_in"] > tr["start_of_fade_out"] + tol or tr["start_of_fade_out"] > duration + tol:
        raise SchemaError("internal error: fades out of order")


def dumps(doc: dict, *, pretty: bool = False) -> bytes:
    opts = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(doc, option=opts)
