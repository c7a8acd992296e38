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
    # subtract this many standard deviations per standard deviation of an item's log exposure (how
    # many listeners' top 50 the model puts it in): pushes down the hubs every list would otherwise
    # share, so the lists reach further into the catalog.  Chosen on the validation split carved from
    # HetRec's training part (the smallest value whose coverage@10 clears 0.3 with a 10 % margin:
    # 1.8 -> 0.33 at NDCG@10 -3.5 %); it beat subtracting log listeners at every coverage level.
    spread: float = 1.8


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
    exposure: np.ndarray | None = None  # per item, see compute_exposure

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
            z, total = self._relevance(r)
            if params.spread and self.exposure is not None:
                total -= params.spread * self.exposure
            for j in range(len(r)):
                out.append(self._pick(total[j], {k: v[j] for k, v in z.items()}, fresh, n_fresh, params, artist_ids))
        return out

    def with_listeners(self, names: list[str], plays: sp.csr_matrix) -> Recommender:
        """The model with listeners it was not fitted on folded in (their plays: len(names) x items).
        ALS vectors come from `ALS.fold_in`; every other source reads the plays directly, and the
        exposure stays the fitted model's, so their playlists depend on the model and their plays only."""
        d = self.data
        n_old = len(d.users)
        x_all = sp.vstack([d.plays, plays.astype(np.float32)]).tocsr()
        tags = sp.vstack([d.user_tags, sp.csr_matrix((len(names), d.plays.shape[1]), dtype=np.float32)]).tocsr()
        vectors = self.als.fold_in(x_all, np.arange(n_old, n_old + len(names)))
        als = ALS.from_factors(np.vstack([self.als.user_factors, vectors]), self.als.item_factors, self.als.params)
        return replace(self, data=replace(d, users=list(d.users) + list(names), plays=x_all, user_tags=tags), als=als)

    def _relevance(self, r: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Each source standardized per listener, and their weighted sum; what they have heard at -inf."""
        z, total = fuse(self.parts(r), self.weights)
        heard = self.heard(r)
        total[np.repeat(np.arange(len(r)), np.diff(heard.indptr)), heard.indices] = -np.inf
        return z, total

    def compute_exposure(self, *, depth: int | None = None, batch: int = 256) -> np.ndarray:
        """Per item: log of 1 + how many listeners' top `depth` (by fused relevance) it is in,
        standardized over the catalog.  A property of the fitted model, so one listener's playlist
        does not depend on who else asked for one."""
        n_users, n_items = self.data.plays.shape
        if n_items < 2:
            return np.zeros(n_items, dtype=np.float32)
        if depth is None:
            # HetRec's 50 of 17,632 items; in a small catalog a top that deep holds a third of it and
            # the penalty then lifts items nobody wants (seen in the cold-item test at 150 items)
            depth = min(50, max(3, n_items // 300))
        depth = min(depth, n_items - 1)
        counts = np.zeros(n_items, dtype=np.int64)
        if self.ann is not None:
            # large catalogs: the fused top among each listener's index candidates (what their
            # playlist is picked from), with nothing else applied
            everyone = np.arange(n_users)
            plain = PlaylistParams(n=depth, fresh_share=0.0, per_artist=depth, spread=0.0)
            no_fresh = np.zeros(n_items, dtype=bool)
            for picks in self._playlists_ann(everyone, plain, no_fresh, 0, None):
                counts[[p.item for p in picks]] += 1
        else:
            for i in range(0, n_users, batch):
                _, total = self._relevance(np.arange(i, min(n_users, i + batch)))
                top = np.argpartition(-total, depth - 1, axis=1)[:, :depth]
                top = top[np.isfinite(np.take_along_axis(total, top, axis=1))]
                counts += np.bincount(top.ravel(), minlength=n_items)
        lc = np.log1p(counts.astype(np.float64))
        return ((lc - lc.mean()) / (lc.std() + 1e-9)).astype(np.float32)

    def _playlists_ann(self, rows, params: PlaylistParams, fresh, n_fresh, artist_ids) -> list[list[Pick]]:
        """Large catalogs: per listener, the ALS top candidates from the HNSW index, every source scored
        and standardized on those candidates only, then the same picking rules."""
        k = min(self.params.ann_candidates, self.data.plays.shape[1])
        self.ann.set_ef(max(2 * k, 200))
        cands, _ = self.ann.knn_query(self.als.user_factors[rows], k=k)
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
            total = sum(w[name] * v for name, v in z.items())
            if params.spread and self.exposure is not None:
                total = total - params.spread * self.exposure[c]
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
                         als=fitted[k], exposure=False)
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


def place_cold_items(item_factors: np.ndarray, audio: np.ndarray, present: np.ndarray, listeners: np.ndarray, *,
                     min_listeners: int = 3, lam: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Items with audio and no listeners get ALS factors predicted from their audio vectors (CNN
    embeddings or analysis features): a ridge regression onto the factors of items with both, so
    they are scored in the same space as every other item.  Returns (factors, which were placed)."""
    warm = present & (listeners >= min_listeners)
    cold = present & (listeners == 0)
    if not cold.any() or warm.sum() < 20:
        return item_factors, np.zeros(len(item_factors), dtype=bool)
    f = audio.astype(np.float64)
    mu, sd = f[warm].mean(axis=0), f[warm].std(axis=0) + 1e-9
    xw = np.hstack([(f[warm] - mu) / sd, np.ones((int(warm.sum()), 1))])
    reg = lam * np.eye(xw.shape[1])
    reg[-1, -1] = 0.0  # the intercept is not shrunk
    w = np.linalg.solve(xw.T @ xw + reg, xw.T @ item_factors[warm].astype(np.float64))
    pred = np.hstack([(f[cold] - mu) / sd, np.ones((int(cold.sum()), 1))]) @ w
    # as long as the items just above them (few listeners): a new song should not outscore the hits
    tail = (listeners >= 1) & (listeners <= min_listeners)
    ref = item_factors[tail] if tail.any() else item_factors[warm]
    norm = float(np.median(np.linalg.norm(ref, axis=1)))
    pred *= norm / np.maximum(np.linalg.norm(pred, axis=1, keepdims=True), 1e-12)
    out = item_factors.copy()
    out[cold] = pred.astype(np.float32)
    return out, cold


def _fit_parts(data: Dataset, params: FitParams, weights: FusionWeights, *, als: ALS | None = None,
               exposure: bool = True) -> Recommender:
    x = data.plays
    als = als or ALS(params.als).fit(x)
    if data.audio is not None:
        listeners = np.asarray((x > 0).sum(axis=0)).ravel()
        factors, placed = place_cold_items(als.item_factors, data.audio, data.audio_present, listeners)
        if placed.any():
            als = ALS.from_factors(als.user_factors, factors, als.params)
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
    if exposure:
        rec.exposure = rec.compute_exposure()
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

MODEL_FORMAT = 2  # 2: per-item exposure


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
        "exposure": rec.exposure,
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

    from .integrity import check_arrays, check_manifest

    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        arrays = load_file(str(folder / "arrays.safetensors"))
    except (OSError, ValueError, SafetensorError) as exc:
        raise InputError(f"{folder}: cannot read the model ({exc}); refit") from None
    if isinstance(manifest, dict) and manifest.get("format") != MODEL_FORMAT:
        raise InputError(f"{folder}: model format {manifest.get('format')}, this recommend reads {MODEL_FORMAT}; refit")
    # nothing is built from the files before they are known to make a whole model (scipy trusts
    # sparse indices: an out-of-range one crashed the process)
    check_manifest(manifest, folder / "manifest.json")
    check_arrays(arrays, manifest, folder / "arrays.safetensors")
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
    rec = Recommender(data, params, als, ease, knn, terms, audio, weights, manifest.get("validation", {}),
                      exposure=arrays["exposure"])
    if data.plays.shape[1] >= params.ann_min_items:
        # rebuilt from the factors (single-threaded: the same graph every time) rather than stored in a
        # second file format
        rec.ann = build_ann(als.item_factors)
    return rec
