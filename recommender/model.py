"""A fitted recommender: its scorers, one scoring interface for both paths, playlists with reasons.

Every source (ALS, EASE, item-kNN, term vectors, audio) is scored through
`Recommender.source_scores(rows, items)`: over the whole catalog on the exact path, over a
listener's index candidates on the ANN path (large catalogs).  Both paths then fuse, mask what
the listener has heard and pick a playlist the same way, so they agree wherever the index finds
every item (tests/test_scorer_contract.py holds them to it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from .dataset import Dataset
from .fusion import FusionWeights, Pick, fuse
from .models import ALS, ALSParams, EASE, AudioVectors, ItemKNN, TermVectors, log_confidence

# ALS settings tried on the validation split by fit(tune=True); the best one is kept
ALS_GRID = (
    ALSParams(factors=128, regularization=20.0, alpha=10.0, weighting="log"),
    ALSParams(factors=128, regularization=1.0, alpha=5.0, weighting="log"),
    ALSParams(factors=128, regularization=1.0, alpha=0.5, weighting="bm25"),
    ALSParams(factors=128, regularization=5.0, alpha=5.0, weighting="binary"),
)

# weights of the audio-derived terms tried on the validation split (0: people's terms only); where the
# catalog has songs nobody played, the split hides some played ones to see what the audio part does
# for such songs (`recommender.fit._tune`)
AUDIO_TERM_GRID = (0.0, 0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class PlaylistParams:
    """How a playlist is picked from the fused relevance (the CLI's -n, --fresh, --spread)."""

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
    """The settings of every scorer and of the ANN path; saved with the model."""

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
    # weight of the terms heard in the audio beside the terms people wrote, both parts unit vectors
    # (`TermVectors`): equal by default; `fit(tune=True)` chooses it from AUDIO_TERM_GRID on the
    # validation split whenever the catalog has audio terms
    audio_term_weight: float = 1.0
    validation_share: float = 0.1
    # where the validation split hides played songs to stand for the catalog's cold ones, the weight
    # of their ranking beside the warm one: the playlist's share for songs with few listeners
    # (PlaylistParams.fresh_share), the share of a playlist they are picked for
    validation_cold_share: float = 0.1
    seed: int = 0


@dataclass
class Recommender:
    """Fitted scorers, their fusion weights and what they were fitted on.

    `ann` is set (an hnswlib index over the ALS item factors) for catalogs of at least
    `params.ann_min_items` items: playlists then score each listener's index candidates only.
    `exposure` is per item (see `compute_exposure`).
    """

    data: Dataset
    params: FitParams
    als: ALS
    ease: EASE | None
    knn: ItemKNN | None
    terms: TermVectors | None
    audio: AudioVectors | None
    weights: FusionWeights
    validation: dict = field(default_factory=dict)
    ann: object | None = None
    exposure: np.ndarray | None = None

    @property
    def listeners(self) -> np.ndarray:
        """Per item, how many listeners played it."""
        return np.asarray((self.data.plays > 0).sum(axis=0)).ravel()

    def heard(self, rows: np.ndarray) -> sp.csr_matrix:
        """What each listener already knows: played, or tagged (a tag means they have heard it)."""
        return ((self.data.plays[rows] + self.data.user_tags[rows]) > 0).tocsr()

    # --- scoring: the one interface of both paths ----------------------------------------------

    def source_scores(self, rows: np.ndarray, items: np.ndarray | None = None) -> dict[str, np.ndarray | None]:
        """Every source's raw scores for listeners over items.

        Parameters
        ----------
        rows : numpy.ndarray of int
            Listener rows of `data.plays`.
        items : numpy.ndarray of int, optional
            Item columns to score (default: the whole catalog).

        Returns
        -------
        dict
            Source name -> len(rows) x len(items) scores, or None for a source the model lacks or
            gives weight 0.
        """
        x = self.data.plays[rows]
        w = self.weights
        out: dict[str, np.ndarray | None] = {"cf": self.als.scores(self.als.user_factors[rows], items)}
        out["ease"] = self.ease.scores(x, items) if self.ease is not None and w.ease else None
        out["knn"] = self.knn.scores(x, items) if self.knn is not None and w.knn else None
        if self.terms is not None and w.terms:
            extra = self.params.user_tag_weight * (log_confidence(self.data.user_tags[rows]) @ self.terms.vectors)
            out["terms"] = self.terms.scores(x, extra, items)
        else:
            out["terms"] = None
        out["audio"] = self.audio.scores(x, items) if self.audio is not None and w.audio else None
        return out

    def relevance(self, rows: np.ndarray, items: np.ndarray | None = None, *, reference: np.ndarray | None = None,
                  spread: float = 0.0) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Each source standardized per listener, and their weighted sum.

        Parameters
        ----------
        rows : numpy.ndarray of int
            Listener rows.
        items : numpy.ndarray of int, optional
            Item columns to rank (default: the whole catalog).
        reference : numpy.ndarray of int, optional
            With `items`: the items whose scores set each source's mean and spread (default: `items`
            themselves).  The ANN path passes a fixed sample of the catalog, since its candidates
            all score high and would put every source on a different scale than the exact path.
        spread : float
            Subtract this many times the item's exposure (where the model has one).

        Returns
        -------
        z : dict
            Source name -> len(rows) x len(items) z-scores.
        total : numpy.ndarray
            len(rows) x len(items) fused relevance; items a listener has heard at -inf.
        """
        heard = self.heard(rows)
        hr = np.repeat(np.arange(len(rows)), np.diff(heard.indptr))
        if items is None:
            z, total = fuse(self.source_scores(rows), self.weights)
            total[hr, heard.indices] = -np.inf
        else:
            ref = items if reference is None else reference
            both = np.concatenate([items, ref])
            mask = np.zeros(len(both), dtype=bool)
            mask[len(items):] = True
            z, total = fuse(self.source_scores(rows, both), self.weights, candidates=mask)
            z = {name: v[:, : len(items)] for name, v in z.items()}
            total = total[:, : len(items)]
            col = np.full(self.data.plays.shape[1], -1)
            col[items] = np.arange(len(items))
            hc = col[heard.indices]
            total[hr[hc >= 0], hc[hc >= 0]] = -np.inf
        if spread and self.exposure is not None:
            total -= spread * (self.exposure if items is None else self.exposure[items])
        return z, total

    def _ranked(self, rows: np.ndarray, spread: float, batch: int) -> Iterator[tuple[np.ndarray, dict]]:
        """Per listener, in order: (fused relevance over the whole catalog, z-score per source).

        Exact path: every item, `batch` listeners at a time.  ANN path (`self.ann` set): each
        listener's ALS top candidates from the index, standardized against a fixed random sample of
        the catalog; items outside the candidates at -inf (z 0)."""
        if self.ann is None:
            for i in range(0, len(rows), batch):
                r = rows[i : i + batch]
                z, total = self.relevance(r, spread=spread)
                for j in range(len(r)):
                    yield total[j], {k: v[j] for k, v in z.items()}
            return
        n_items = self.data.plays.shape[1]
        k = min(self.params.ann_candidates, n_items)
        self.ann.set_ef(max(2 * k, 200))
        cands, _ = self.ann.knn_query(self.als.user_factors[rows], k=k)
        # fixed, so one listener's playlist does not depend on who else asked for one
        sample = np.random.default_rng(0).choice(n_items, size=min(2000, n_items), replace=False)
        for j, r in enumerate(rows):
            c = np.sort(cands[j].astype(np.int64))
            z, total = self.relevance(np.array([r]), c, reference=sample, spread=spread)
            full = np.full(n_items, -np.inf, dtype=np.float32)
            full[c] = total[0]
            zfull = {}
            for name, v in z.items():
                zfull[name] = np.zeros(n_items, dtype=np.float32)
                zfull[name][c] = v[0]
            yield full, zfull

    # --- playlists ---------------------------------------------------------------------------------

    def playlists(self, rows: np.ndarray, params: PlaylistParams = PlaylistParams(), *,
                  batch: int = 256) -> list[list[Pick]]:
        """Playlists of items the listeners have not heard.

        Parameters
        ----------
        rows : numpy.ndarray of int
            Listener rows.
        params : PlaylistParams
            Length, fresh share, per-artist cap, exposure spread.
        batch : int
            Listeners scored at once on the exact path (memory: batch x items floats per source).

        Returns
        -------
        list of list of Pick
            One playlist per row, best first: the fresh share (items with few listeners) mixed in,
            at most `params.per_artist` tracks per artist.
        """
        n_fresh = int(round(params.n * params.fresh_share))
        fresh = self.listeners <= params.fresh_max_listeners
        tracks = self.data.item_artists != self.data.item_names
        artist_ids = np.unique(np.asarray(self.data.item_artists), return_inverse=True)[1] if tracks else None
        return [self._pick(total, z, fresh, n_fresh, params, artist_ids)
                for total, z in self._ranked(rows, params.spread, batch)]

    def with_listeners(self, names: list[str], plays: sp.csr_matrix) -> Recommender:
        """The model with listeners it was not fitted on folded in.

        Parameters
        ----------
        names : list of str
            The new listeners' ids.
        plays : scipy.sparse.csr_matrix
            Their plays, len(names) x items.

        Returns
        -------
        Recommender
            A copy whose last len(names) rows are the new listeners.  ALS vectors come from
            `ALS.fold_in`; every other source reads the plays directly, and the exposure stays the
            fitted model's, so their playlists depend on the model and their plays only.
        """
        d = self.data
        n_old = len(d.users)
        x_all = sp.vstack([d.plays, plays.astype(np.float32)]).tocsr()
        tags = sp.vstack([d.user_tags, sp.csr_matrix((len(names), d.plays.shape[1]), dtype=np.float32)]).tocsr()
        vectors = self.als.fold_in(x_all, np.arange(n_old, n_old + len(names)))
        als = ALS.from_factors(np.vstack([self.als.user_factors, vectors]), self.als.item_factors, self.als.params)
        return replace(self, data=replace(d, users=list(d.users) + list(names), plays=x_all, user_tags=tags), als=als)

    def compute_exposure(self, *, depth: int | None = None, batch: int = 256) -> np.ndarray:
        """Per item: log of 1 + how many listeners' top `depth` (by fused relevance) it is in,
        standardized over the catalog.

        A property of the fitted model, so one listener's playlist does not depend on who else
        asked for one.  Returns float32, one per item."""
        n_users, n_items = self.data.plays.shape
        if n_items < 2:
            return np.zeros(n_items, dtype=np.float32)
        if depth is None:
            # HetRec's 50 of 17,632 items; in a small catalog a top that deep holds a third of it and
            # the penalty then lifts items nobody wants (seen in the cold-item test at 150 items)
            depth = min(50, max(3, n_items // 300))
        depth = min(depth, n_items - 1)
        counts = np.zeros(n_items, dtype=np.int64)
        everyone = np.arange(n_users)
        if self.ann is not None:
            # large catalogs: the fused top among each listener's index candidates (what their
            # playlist is picked from), with nothing else applied
            plain = PlaylistParams(n=depth, fresh_share=0.0, per_artist=depth, spread=0.0)
            no_fresh = np.zeros(n_items, dtype=bool)
            for total, z in self._ranked(everyone, 0.0, batch):
                counts[[p.item for p in self._pick(total, z, no_fresh, 0, plain, None)]] += 1
        else:
            for i in range(0, n_users, batch):
                _, total = self.relevance(everyone[i : i + batch])
                top = np.argpartition(-total, depth - 1, axis=1)[:, :depth]
                top = top[np.isfinite(np.take_along_axis(total, top, axis=1))]
                counts += np.bincount(top.ravel(), minlength=n_items)
        lc = np.log1p(counts.astype(np.float64))
        return ((lc - lc.mean()) / (lc.std() + 1e-9)).astype(np.float32)

    def _pick(self, s: np.ndarray, z: dict, fresh: np.ndarray, n_fresh: int, params: PlaylistParams,
              artist_ids: np.ndarray | None) -> list[Pick]:
        """One listener's playlist from their relevance `s` over the catalog (-inf: never)."""
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
