"""The recommender's data as matrices: listeners x items plays, items x terms, listeners' tags, audio."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class Dataset:
    """Everything a model is fitted on, with dense integer ids (row i of `plays` is `users[i]`).

    Attributes
    ----------
    users, items : list of str
        The listeners' and the items' ids, in row and column order.
    item_names, item_artists : list of str
        Per item: its name, and where items are tracks their artist (the per-artist cap of a
        playlist); where items are artists, both are the item's name.
    plays : scipy.sparse.csr_matrix
        Listeners x items play counts.
    terms : list of str
        The term vocabulary, in column order of `term_counts`.
    term_counts : scipy.sparse.csr_matrix
        Items x terms: how often an item was described with a term.
    user_tags : scipy.sparse.csr_matrix
        Listeners x items: how often a listener tagged an item (HetRec); empty where there are none.
    audio, audio_present : numpy.ndarray or None
        Items x d audio features (analyses or CNN embeddings) and which items have them.
    audio_term_counts : scipy.sparse.csr_matrix or None
        Items x terms (the columns of `term_counts`): the probability of each term the analyzer's
        taggers heard in the item's audio (audio-derived, kept apart from what people wrote).
    """

    users: list[str]
    items: list[str]
    item_names: list[str]
    item_artists: list[str]
    plays: sp.csr_matrix
    terms: list[str]
    term_counts: sp.csr_matrix
    user_tags: sp.csr_matrix
    audio: np.ndarray | None = None
    audio_present: np.ndarray | None = None
    audio_term_counts: sp.csr_matrix | None = None

    @classmethod
    def from_hetrec(cls, h) -> Dataset:
        """The matrices of a HetRec 2011 Last.fm folder as read by `recommender.data.read_hetrec`.

        Parameters
        ----------
        h : recommender.data.HetRec
            Its plays, tag terms per artist, listeners' tags and artist names.

        Returns
        -------
        Dataset
            Listeners and artists in natural order (numeric ids by value).
        """
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
        """The same catalog with other plays (a training split), and optionally other listeners' tags."""
        return replace(self, plays=plays.tocsr(), user_tags=self.user_tags if user_tags is None else user_tags.tocsr())


def _natural(s: str):
    return (0, int(s), "") if s.isdigit() else (1, 0, s)
