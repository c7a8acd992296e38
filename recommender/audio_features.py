"""An item's audio vector from its Echo Nest document, until the CNN's embeddings replace it.

Track-level facts (tempo, mode, loudness, meter) and segment statistics (mean and spread
of the 12 timbre and 12 pitch dimensions), 56 numbers.  Where a document carries an
`embedding` (the CNN issue), that is used instead.
"""

from __future__ import annotations

import math

import numpy as np

from .data import normalize_term


def features_from_document(doc: dict) -> list[float]:
    if "embedding" in doc:
        return [float(v) for v in doc["embedding"]]
    t = doc["track"]
    segs = doc.get("segments") or []
    if segs:
        dur = np.array([s["duration"] for s in segs], dtype=np.float64)
        w = dur / max(dur.sum(), 1e-9)
        timbre = np.array([s["timbre"] for s in segs], dtype=np.float64)
        pitches = np.array([s["pitches"] for s in segs], dtype=np.float64)
        tm, pm = w @ timbre, w @ pitches
        ts = np.sqrt(w @ (timbre - tm) ** 2)
        ps = np.sqrt(w @ (pitches - pm) ** 2)
    else:
        tm = ts = pm = ps = np.zeros(12)
    # key as a position on the circle of fifths, so C and G are near and C and F# far
    fifths = (7 * int(t["key"])) % 12 if t["key"] >= 0 else 0
    angle = 2 * np.pi * fifths / 12
    track = [
        np.log2(max(float(t["tempo"]), 1.0)), float(t["loudness"]), float(max(t["mode"], 0)),
        float(t["time_signature"] == 3), np.cos(angle) * (t["key"] >= 0), np.sin(angle) * (t["key"] >= 0),
        float(len(segs)) / max(float(t["duration"]), 1e-9), float(t.get("tempo_confidence", 0.0)),
    ]
    return [float(v) for v in np.concatenate([track, tm, ts, pm, ps])]


def audio_terms_from_document(doc: dict) -> dict[str, float] | None:
    """The terms the analyzer's taggers heard (the document's `terms` extension), by name.

    Parameters
    ----------
    doc : dict
        An analysis document.

    Returns
    -------
    dict or None
        Normalized term -> the tagger's probability (the highest where both taggers name it);
        None where the document has no `terms` (written without the taggers).

    Raises
    ------
    ValueError
        `terms` is not a list of objects with a name and a frequency within 0..1.
    """
    terms = doc.get("terms")
    if terms is None:
        return None
    if not isinstance(terms, list):
        raise ValueError("'terms' is not a list")
    out: dict[str, float] = {}
    for t in terms:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or isinstance(t.get("frequency"), bool) \
                or not isinstance(t.get("frequency"), (int, float)):
            raise ValueError("a term without a name and a numeric frequency")
        p = float(t["frequency"])
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise ValueError(f"term {t['name']!r} has frequency {p}, not a probability")
        name = normalize_term(t["name"])
        if name and p > 0:
            out[name] = max(out.get(name, 0.0), p)
    return out
