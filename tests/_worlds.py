"""Synthetic listening data shared by the recommender tests."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def taste_groups(rng: np.random.Generator, n_users: int = 90, n_items: int = 150,
                 n_cold: int = 30) -> tuple[sp.csr_matrix, np.ndarray]:
    """Listeners in 3 taste groups (listener u likes genre u % 3, item i is of genre i % 3), each playing
    15 songs of their genre among the first ``n_items - n_cold`` (the last ``n_cold`` nobody plays).

    Returns
    -------
    plays : scipy.sparse.csr_matrix
        n_users x n_items float32 play counts, 1..29.
    genre : numpy.ndarray
        Per item, its genre 0..2.
    """
    genre = np.arange(n_items) % 3
    rows, cols = [], []
    for u in range(n_users):
        mine = np.flatnonzero((genre == u % 3) & (np.arange(n_items) < n_items - n_cold))
        its = rng.choice(mine, size=15, replace=False)
        rows += [u] * len(its)
        cols += list(its)
    x = sp.csr_matrix((rng.integers(1, 30, len(rows)).astype(np.float32), (rows, cols)), shape=(n_users, n_items))
    return x, genre
