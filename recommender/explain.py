"""Why an item was picked, items like an item, an item's top terms."""

from __future__ import annotations

import numpy as np

from analyzer.errors import AnalyzerError

from .fusion import Pick


def _item_index(rec, item: str) -> int:
    try:
        return rec.data.items.index(item)
    except ValueError:
        # by name as well (HetRec items are artist ids; people type names)
        lowered = [n.lower() for n in rec.data.item_names]
        if item.lower() in lowered:
            return lowered.index(item.lower())
        raise AnalyzerError(f"unknown item {item!r} ({len(rec.data.items)} items in the model)") from None


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def explain(rec, row: int, picks: list[Pick]) -> list[dict]:
    """JSON items: id, name, score, per-source z-scores, fresh, and a reason naming what the listener plays."""
    d = rec.data
    played = d.plays[row].indices
    weights = np.log1p(d.plays[row].data)
    y = _unit(rec.als.item_factors)
    out = []
    for p in picks:
        reason = ""
        if len(played):
            sim = (y[played] @ y[p.item]) * weights
            top = played[np.argsort(-sim)[:2]]
            names = [d.item_names[i] for i in top]
            reason = "because you play " + " and ".join(names)
        if rec.terms is not None and rec.terms.has_terms[p.item] and len(played):
            prof = np.asarray(rec.terms.vectors[played].multiply(weights[:, None]).sum(axis=0)).ravel()
            mine = rec.terms.vectors[p.item].toarray().ravel()
            shared = [t for t in np.argsort(-(prof * mine))[:2] if prof[t] * mine[t] > 0]
            # a term people gave the item, or one only its audio carries (the taggers heard it)
            tagged = [d.terms[t] for t in shared if d.term_counts[p.item, t] > 0]
            heard = [d.terms[t] for t in shared if d.term_counts[p.item, t] <= 0]
            if tagged:
                reason += ("; " if reason else "") + "tagged " + ", ".join(repr(t) for t in tagged) + " like music you play"
            if heard:
                reason += ("; " if reason else "") + "sounds " + ", ".join(repr(t) for t in heard) + \
                          " (heard in its audio) like music you play"
        if p.fresh:
            reason += ("; " if reason else "") + "few listeners yet"
        out.append({
            "id": d.items[p.item], "name": d.item_names[p.item], "score": round(p.score, 4),
            "sources": {k: round(v, 3) for k, v in p.sources.items()}, "fresh": p.fresh, "reason": reason,
        })
    return out


def similar_items(rec, item: str, n: int) -> list[dict]:
    i = _item_index(rec, item)
    y = _unit(rec.als.item_factors)
    cf = y @ y[i]
    total = cf.copy()
    parts = {"cf": cf}
    if rec.terms is not None and rec.terms.has_terms[i]:
        t = np.asarray((rec.terms.vectors @ rec.terms.vectors[i].T).todense()).ravel()
        parts["terms"] = t
        total = total + t
    if rec.audio is not None and rec.audio.present[i]:
        a = rec.audio.vectors @ rec.audio.vectors[i]
        parts["audio"] = a
        total = total + a
    total[i] = -np.inf
    top = np.argsort(-total)[:n]
    return [{"id": rec.data.items[j], "name": rec.data.item_names[j], "score": round(float(total[j]), 4),
             "sources": {k: round(float(v[j]), 3) for k, v in parts.items()}} for j in top]


def top_terms(rec, item: str, n: int) -> list[dict]:
    """The item's strongest terms, like the Echo Nest's artist terms.

    Each entry: `term`; `weight` (in the item's term vector, the strongest 1); `source`: "tags"
    (people's terms), "audio" (heard by the analyzer's taggers only) or "both"; `frequency`: how
    often people gave it, or for a term heard only in the audio the tagger's probability.
    """
    i = _item_index(rec, item)
    if rec.terms is None:
        raise AnalyzerError("the model has no term vectors (import terms or ingest analyses with terms, then refit)")
    d = rec.data
    # the fitted vector (the audio part in it with the weight chosen on the validation split); its
    # order within one part is the BM25 order of that part
    row = rec.terms.vectors[i]
    if row.nnz == 0:
        return []
    order = np.argsort(-row.data, kind="stable")[:n]
    top = row.data[order]
    heard = d.audio_term_counts if rec.terms.audio_weight > 0 else None
    out = []
    for k, w in zip(order, top):
        t = row.indices[k]
        people = float(d.term_counts[i, t])
        audio = float(heard[i, t]) if heard is not None else 0.0
        source = "both" if people and audio else "tags" if people else "audio"
        # weights scaled so the item's strongest term is 1, as the Echo Nest's artist terms were
        out.append({"term": d.terms[t], "weight": round(float(w / top[0]), 4),
                    "frequency": round(people if people else audio, 4), "source": source})
    return out
