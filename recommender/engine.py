"""The recommender: data in matrices, fitting every scorer, fused scores, playlists with reasons."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from .fusion import FusionWeights, Pick, fuse, split_per_user, standardize, tune_weights
from .models import ALS, ALSParams, EASE, AudioVectors, ItemKNN, TermVectors, log_confidence


@dataclass(frozen=True)
class Dataset:
    users: list[str]
    items: list[str]
    item_names: list[str]
    item_artists: list[str]  # where items are tracks: their artist (the 2-per-artist rule); else the item itself
    plays: sp.csr_matrix  # users x items
    terms: list[str]
    term_counts: sp.csr_matrix  # items x terms
    user_tags: sp.csr_matrix  # users x items: how often a listener tagged an item (HetRec), else empty
    audio: np.ndarray | None = None  # items x d features from analyses (or CNN embeddings)
    audio_present: np.ndarray | None = None

    @classmethod
    def from_hetrec(cls, h) -> Dataset:
        users = sorted({r.user for r in h.plays} | {u for u, _, _ in h.user_tags}, key=_natural)
        items = sorted({r.item for r in h.plays} | {t.item for t in h.terms}, key=_natural)
        ui = {u: i for i, u in enumerate(users)}
        ii = {a: i for i, a in enumerate(items)}
        plays = sp.csr_matrix(
            ([r.plays for r in h.plays], ([ui[r.user] for r in h.plays], [ii[r.item] for r in h.plays])),
            shape=(len(users), len(items)), dtype=np.float32,
        )
        terms = sorted({t.term for t in h.terms})
        ti = {t: i for i, t in enumerate(terms)}
        term_counts = sp.csr_matrix(
            ([t.weight for t in h.terms], ([ii[t.item] for t in h.terms], [ti[t.term] for t in h.terms])),
            shape=(len(items), len(terms)), dtype=np.float32,
        )
        ut = [(u, a, n) for u, a, n in h.user_tags if u in ui and a in ii]
        user_tags = sp.csr_matrix(
            ([n for _, _, n in ut], ([ui[u] for u, _, _ in ut], [ii[a] for _, a, _ in ut])),
            shape=(len(users), len(items)), dtype=np.float32,
        )
        names = [h.item_names.get(a, a) for a in items]
        return cls(users, items, names, names, plays, terms, term_counts, user_tags)

    def with_plays(self, plays: sp.csr_matrix, *, user_tags: sp.csr_matrix | None = None) -> Dataset:
        return replace(self, plays=plays.tocsr(), user_tags=self.user_tags if user_tags is None else user_tags.tocsr())


def _natural(s: str):
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


# ALS settings tried on the validation split by fit(tune=True); the best one is kept
ALS_GRID = (
    ALSParams(factors=128, regularization=20.0, alpha=10.0, weighting="log"),
    ALSParams(factors=128, regularization=1.0, alpha=5.0, weighting="log"),
    ALSParams(factors=128, regularization=1.0, alpha=0.5, weighting="bm25"),
    ALSParams(factors=128, regularization=5.0, alpha=5.0, weighting="binary"),
)


@dataclass(frozen=True)
class PlaylistParams:
    n: int = 30
    # share of the playlist kept for fresh items (at most `fresh_max_listeners` listeners)
    fresh_share: float = 0.1
    fresh_max_listeners: int = 3
    # where items are tracks: at most this many per artist
    per_artist: int = 2
    # subtract this many standard deviations per standard deviation of log listeners: spreads the
    # lists over more of the catalog
    # lists over more of the catalog (HetRec, bench.recsys: 1.0 lifts coverage@10 0.14 -> 0.20 and
    # novelty 4.9 -> 5.5 bits at the same NDCG)
    popularity_penalty: float = 1.0


@dataclass(frozen=True)
class FitParams:
    als: ALSParams = field(default_factory=lambda: ALS_GRID[0])
    ease_lambda: float = 500.0
    # EASE inverts an items x items matrix: only items with at least this many listeners take part
    ease_min_listeners: int = 2
    # from this many items on, playlists take their candidates from an HNSW index over the ALS item
    # factors (hnswlib) and fuse the sources on those only; EASE (a dense items x items matrix) is
    # left out.  bench.ann: exact scoring costs ~5 ms per listener at 100k items, hnswlib 0.2 ms.
    ann_min_items: int = 100_000
    ann_candidates: int = 1000
    knn_k: int = 100
    # a listener's own tags count as this many plays' worth of interest in their term profile
    user_tag_weight: float = 1.0
    validation_share: float = 0.1
    seed: int = 0


@dataclass
class Recommender:
    data: Dataset
    params: FitParams
    als: ALS
    ease: EASE | None
    knn: ItemKNN | None
    terms: TermVectors | None
    audio: AudioVectors | None
    weights: FusionWeights
    validation: dict = field(default_factory=dict)
    ann: object | None = None  # hnswlib.Index over the ALS item factors, for large catalogs

    @property
    def listeners(self) -> np.ndarray:
        return np.asarray((self.data.plays > 0).sum(axis=0)).ravel()

    def heard(self, rows: np.ndarray) -> sp.csr_matrix:
        """What each listener already knows: played, or tagged (a tag means they have heard it)."""
        return ((self.data.plays[rows] + self.data.user_tags[rows]) > 0).tocsr()

    def playlists(self, rows: np.ndarray, params: PlaylistParams = PlaylistParams(), *,
                  batch: int = 256) -> list[list[Pick]]:
        """For each listener row: n items they have not heard, fresh ones mixed in, per-artist cap."""
        n_fresh = int(round(params.n * params.fresh_share))
        listeners = self.listeners
        fresh = (listeners <= params.fresh_max_listeners)
        tracks = self.data.item_artists != self.data.item_names
        artist_ids = np.unique(np.asarray(self.data.item_artists), return_inverse=True)[1] if tracks else None
        if self.ann is not None:
            return self._playlists_ann(rows, params, fresh, n_fresh, artist_ids)
        out: list[list[Pick]] = []
        for i in range(0, len(rows), batch):
            r = rows[i : i + batch]
            parts = self.parts(r)
            z = {k: standardize(v, np.ones(v.shape[1], bool)) for k, v in parts.items() if v is not None}
            w = self.weights.as_dict()
            total = sum(w[k] * v for k, v in z.items())
            if params.popularity_penalty:
                lp = np.log1p(listeners.astype(np.float64))
                total = total - params.popularity_penalty * ((lp - lp.mean()) / (lp.std() + 1e-9)).astype(np.float32)
            heard = self.heard(r)
            hr = np.repeat(np.arange(len(r)), np.diff(heard.indptr))
            total[hr, heard.indices] = -np.inf
            for j in range(len(r)):
                out.append(self._pick(total[j], {k: v[j] for k, v in z.items()}, fresh, n_fresh, params, artist_ids))
        return out

    def _playlists_ann(self, rows, params: PlaylistParams, fresh, n_fresh, artist_ids) -> list[list[Pick]]:
        """Large catalogs: per listener, the ALS top candidates from the HNSW index, every source scored
        and standardized on those candidates only, then the same picking rules."""
        k = min(self.params.ann_candidates, self.data.plays.shape[1])
        self.ann.set_ef(max(2 * k, 200))
        cands, _ = self.ann.knn_query(self.als.user_factors[rows], k=k)
        lp = np.log1p(self.listeners.astype(np.float64))
        zpop = ((lp - lp.mean()) / (lp.std() + 1e-9)).astype(np.float32)
        w = self.weights.as_dict()
        out = []
        # each source is standardized with its mean and spread over a fixed random sample of the whole
        # catalog (not over the candidates, which all score high): the same scale as the exact path
        n_items = self.data.plays.shape[1]
        sample = np.random.default_rng(0).choice(n_items, size=min(2000, n_items), replace=False)
        for j, r in enumerate(rows):
            c = np.sort(cands[j].astype(np.int64))
            both = np.concatenate([c, sample])
            x = self.data.plays[[r]]
            part = {"cf": (self.als.user_factors[r] @ self.als.item_factors[both].T)[None, :]}
            if self.knn is not None and w["knn"]:
                part["knn"] = np.asarray((x @ self.knn.sim[both].T).todense())
            if self.terms is not None and w["terms"]:
                extra = self.params.user_tag_weight * (log_confidence(self.data.user_tags[[r]]) @ self.terms.vectors)
                part["terms"] = np.asarray((self.terms.profiles(x, extra) @ self.terms.vectors[both].T).todense())
            if self.audio is not None and w["audio"]:
                part["audio"] = self.audio.scores(x)[:, both]
            ref = np.zeros(len(both), dtype=bool)
            ref[len(c):] = True
            z = {name: standardize(v, ref)[0][: len(c)] for name, v in part.items()}
            total = sum(w[name] * v for name, v in z.items()) - params.popularity_penalty * zpop[c]
            heard = self.heard(np.array([r]))
            total[np.isin(c, heard.indices)] = -np.inf
            full = np.full(self.data.plays.shape[1], -np.inf, dtype=np.float32)
            full[c] = total
            zfull = {name: np.zeros(self.data.plays.shape[1], dtype=np.float32) for name in z}
            for name, v in z.items():
                zfull[name][c] = v
            out.append(self._pick(full, zfull, fresh, n_fresh, params, artist_ids))
        return out

    def _pick(self, s: np.ndarray, z: dict, fresh: np.ndarray, n_fresh: int, params: PlaylistParams,
              artist_ids: np.ndarray | None) -> list[Pick]:
        n = params.n
        depth = min(len(s), 4 * n)
        order = np.argpartition(-s, depth - 1)[:depth]
        order = order[np.argsort(-s[order], kind="stable")]
        fs = np.where(fresh, s, -np.inf)
        forder = np.argpartition(-fs, min(len(s), 4 * n) - 1)[: 4 * n]
        forder = forder[np.argsort(-fs[forder], kind="stable")]
        chosen: list[int] = []
        per_artist: dict[int, int] = {}

        def take(candidates, limit):
            for it in candidates:
                if len(chosen) >= limit:
                    return
                if not np.isfinite(s[it]) or it in chosen:
                    continue
                if artist_ids is not None:
                    a = int(artist_ids[it])
                    if per_artist.get(a, 0) >= params.per_artist:
                        continue
                    per_artist[a] = per_artist.get(a, 0) + 1
                chosen.append(int(it))

        take(forder, n_fresh)  # the fresh share first, so the popular picks cannot crowd it out
        take(order, n)
        chosen.sort(key=lambda it: -s[it])
        return [Pick(it, float(s[it]), {k: float(v[it]) for k, v in z.items()}, bool(fresh[it])) for it in chosen]

    def parts(self, rows: np.ndarray) -> dict[str, np.ndarray | None]:
        x = self.data.plays[rows]
        w = self.weights
        out: dict[str, np.ndarray | None] = {"cf": self.als.scores(self.als.user_factors[rows])}
        out["ease"] = self.ease.scores(x) if self.ease is not None and w.ease else None
        out["knn"] = self.knn.scores(x) if self.knn is not None and w.knn else None
        if self.terms is not None and w.terms:
            extra = self.params.user_tag_weight * (log_confidence(self.data.user_tags[rows]) @ self.terms.vectors)
            out["terms"] = self.terms.scores(x, extra)
        else:
            out["terms"] = None
        out["audio"] = self.audio.scores(x) if self.audio is not None and w.audio else None
        return out

    def score_all(self, rows: np.ndarray | None = None, *, batch: int = 512) -> np.ndarray:
        rows = np.arange(self.data.plays.shape[0]) if rows is None else rows
        cand = np.ones(self.data.plays.shape[1], dtype=bool)
        out = np.empty((len(rows), self.data.plays.shape[1]), dtype=np.float32)
        for i in range(0, len(rows), batch):
            out[i : i + batch] = fuse(self.parts(rows[i : i + batch]), self.weights, cand)
        return out


def fit(data: Dataset, params: FitParams = FitParams(), *, tune: bool = True,
        weights: FusionWeights | None = None) -> Recommender:
    """Fit every scorer on `data`; with tune, choose the fusion weights on a validation split of it first."""
    chosen = weights or FusionWeights()
    validation: dict = {}
    if tune:
        from .fusion import ndcg_at_k

        train, val = split_per_user(data.plays, share=params.validation_share, min_items=10, seed=params.seed + 1)
        held = _pairs(val, data.plays.shape)
        sub_data = data.with_plays(train, user_tags=_drop(data.user_tags, held))
        rows = np.array([u for u, v in enumerate(val) if len(v)])
        # the grid is scored on at most 800 listeners: the ranking of settings is stable well below that
        rows = np.random.default_rng(params.seed).choice(rows, size=min(800, len(rows)), replace=False)
        rows.sort()
        truth = [val[u] for u in rows]
        heard = ((sub_data.plays[rows] + sub_data.user_tags[rows]) > 0).tocsr()
        als_trail, fitted = [], []
        for cand in ALS_GRID:
            m = ALS(replace(cand, seed=params.seed)).fit(train)
            fitted.append(m)
            als_trail.append((cand, ndcg_at_k(m.scores(m.user_factors[rows]), heard, truth)[0]))
        k = int(np.argmax([v for _, v in als_trail]))
        params = replace(params, als=replace(als_trail[k][0], seed=params.seed))
        sub = _fit_parts(sub_data, params, FusionWeights(cf=1, ease=1, knn=1, terms=1, audio=1 if data.audio is not None else 0),
                         als=fitted[k])
        chosen, best, trail = tune_weights(sub.parts(rows), heard, truth, np.ones(train.shape[1], bool))
        validation = {"ndcg10": best, "users": int(len(rows)), "grid": len(trail),
                      "als": [{"params": c.__dict__, "ndcg10": v} for c, v in als_trail]}
    rec = _fit_parts(data, params, chosen)
    rec.validation = validation
    return rec


def _pairs(held: list[np.ndarray], shape) -> sp.csr_matrix:
    lens = [len(h) for h in held]
    return sp.csr_matrix((np.ones(sum(lens), dtype=np.float32), (np.repeat(np.arange(len(held)), lens),
                          np.concatenate(held) if sum(lens) else np.zeros(0, int))), shape=shape)


def _drop(m: sp.csr_matrix, held: sp.csr_matrix) -> sp.csr_matrix:
    out = (m - m.multiply(held > 0)).tocsr()
    out.eliminate_zeros()
    return out


def _fit_parts(data: Dataset, params: FitParams, weights: FusionWeights, *, als: ALS | None = None) -> Recommender:
    x = data.plays
    als = als or ALS(params.als).fit(x)
    large = x.shape[1] >= params.ann_min_items
    if large and weights.ease:
        weights = replace(weights, ease=0.0)
    ease = EASE(params.ease_lambda, params.ease_min_listeners).fit(x) if weights.ease else None
    knn = ItemKNN(params.knn_k).fit(x) if weights.knn else None
    terms = TermVectors().fit(data.term_counts) if weights.terms and data.term_counts.nnz else None
    audio = None
    if weights.audio and data.audio is not None:
        audio = AudioVectors().fit(data.audio, data.audio_present)
    rec = Recommender(data, params, als, ease, knn, terms, audio, weights)
    if large:
        rec.ann = build_ann(als.item_factors)
    return rec


def build_ann(item_factors: np.ndarray):
    """hnswlib's HNSW graph over the item factors, inner-product space (chosen over voyager by bench.ann)."""
    import hnswlib

    index = hnswlib.Index(space="ip", dim=item_factors.shape[1])
    index.init_index(max_elements=len(item_factors), ef_construction=200, M=16, random_seed=0)
    index.add_items(np.ascontiguousarray(item_factors, dtype=np.float32), np.arange(len(item_factors)), num_threads=1)
    return index


__all__ = ["Dataset", "FitParams", "Recommender", "fit", "standardize"]


# --- saving and loading (safetensors + a JSON manifest; nothing pickled) ------------------------

MODEL_FORMAT = 1


def _put_csr(arrays: dict, name: str, m: sp.csr_matrix) -> None:
    m = m.tocsr()
    arrays[f"{name}.data"] = np.ascontiguousarray(m.data, dtype=np.float32)
    arrays[f"{name}.indices"] = np.ascontiguousarray(m.indices, dtype=np.int64)
    arrays[f"{name}.indptr"] = np.ascontiguousarray(m.indptr, dtype=np.int64)
    arrays[f"{name}.shape"] = np.array(m.shape, dtype=np.int64)


def _get_csr(arrays: dict, name: str) -> sp.csr_matrix:
    shape = tuple(int(v) for v in arrays[f"{name}.shape"])
    return sp.csr_matrix((arrays[f"{name}.data"], arrays[f"{name}.indices"], arrays[f"{name}.indptr"]), shape=shape)


def save(rec: Recommender, folder) -> None:
    import json
    from pathlib import Path

    from safetensors.numpy import save_file

    folder = Path(folder)
    d = rec.data
    arrays: dict[str, np.ndarray] = {
        "als.user_factors": rec.als.user_factors, "als.item_factors": rec.als.item_factors,
    }
    _put_csr(arrays, "plays", d.plays)
    _put_csr(arrays, "user_tags", d.user_tags)
    _put_csr(arrays, "term_counts", d.term_counts)
    if rec.ease is not None:
        arrays["ease.B"], arrays["ease.items"] = rec.ease.B, rec.ease.items.astype(np.int64)
    if rec.knn is not None:
        _put_csr(arrays, "knn.sim", rec.knn.sim)
    if d.audio is not None:
        arrays["audio.features"], arrays["audio.present"] = d.audio, d.audio_present.astype(np.uint8)
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(folder / "arrays.safetensors"))
    manifest = {
        "format": MODEL_FORMAT,
        "users": d.users, "items": d.items, "item_names": d.item_names, "item_artists": d.item_artists, "terms": d.terms,
        "params": {"als": rec.params.als.__dict__, "ease_lambda": rec.params.ease_lambda,
                   "ease_min_listeners": rec.params.ease_min_listeners, "knn_k": rec.params.knn_k,
                   "user_tag_weight": rec.params.user_tag_weight, "seed": rec.params.seed,
                   "ann_min_items": rec.params.ann_min_items, "ann_candidates": rec.params.ann_candidates},
        "weights": rec.weights.as_dict(),
        "validation": rec.validation,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


def load(folder) -> Recommender:
    import json
    from pathlib import Path

    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from analyzer.errors import InputError

    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        arrays = load_file(str(folder / "arrays.safetensors"))
    except (OSError, ValueError, SafetensorError) as exc:
        raise InputError(f"{folder}: cannot read the model ({exc}); refit") from None
    if manifest.get("format") != MODEL_FORMAT:
        raise InputError(f"{folder}: model format {manifest.get('format')}, this recommend reads {MODEL_FORMAT}; refit")
    has_audio = "audio.features" in arrays
    data = Dataset(
        manifest["users"], manifest["items"], manifest["item_names"], manifest["item_artists"],
        _get_csr(arrays, "plays"), manifest["terms"], _get_csr(arrays, "term_counts"), _get_csr(arrays, "user_tags"),
        arrays["audio.features"] if has_audio else None,
        arrays["audio.present"].astype(bool) if has_audio else None,
    )
    p = manifest["params"]
    params = FitParams(als=ALSParams(**p["als"]), ease_lambda=p["ease_lambda"], ease_min_listeners=p["ease_min_listeners"],
                       knn_k=p["knn_k"], user_tag_weight=p["user_tag_weight"], seed=p["seed"],
                       ann_min_items=p.get("ann_min_items", 100_000), ann_candidates=p.get("ann_candidates", 1000))
    weights = FusionWeights(**manifest["weights"])
    als = ALS.from_factors(arrays["als.user_factors"], arrays["als.item_factors"], params.als)
    ease = None
    if "ease.B" in arrays:
        ease = EASE(params.ease_lambda, params.ease_min_listeners)
        ease.B, ease.items, ease.n_items = arrays["ease.B"], arrays["ease.items"], data.plays.shape[1]
    knn = None
    if "knn.sim.data" in arrays:
        knn = ItemKNN(params.knn_k)
        knn.sim = _get_csr(arrays, "knn.sim")
    terms = TermVectors().fit(data.term_counts) if weights.terms and data.term_counts.nnz else None
    audio = AudioVectors().fit(data.audio, data.audio_present) if has_audio and weights.audio else None
    rec = Recommender(data, params, als, ease, knn, terms, audio, weights, manifest.get("validation", {}))
    if data.plays.shape[1] >= params.ann_min_items:
        # rebuilt from the factors (single-threaded: the same graph every time) rather than stored in a
        # second file format
        rec.ann = build_ann(als.item_factors)
    return rec
