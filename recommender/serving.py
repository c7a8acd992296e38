"""Recommendations from seed items, for `analyze serve --model` (/v1/recommendations)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def load(model: str | Path) -> Callable[[list[list[str]], int], list[str]]:
    """The current version of a model folder as a function of seed items.

    Parameters
    ----------
    model : path-like
        A model folder (`recommend ingest`, `recommend fit`).

    Returns
    -------
    callable
        ``recommend(seeds, n)``: `seeds` holds, for each seed track, the names its item may
        have in the model (the file name without extension, "artist - title"); the first name
        the model knows is used and seeds it does not know are left out.  Returns up to `n`
        item ids, best first: the items most like the seeds (`explain.similar_items`, the
        scores of the seeds summed), the seeds themselves left out.

    Raises
    ------
    analyzer.errors.InputError
        The folder holds no fitted model, or one that cannot be read.
    """
    from .explain import similar_items
    from .persist import load as load_model
    from .store import Store

    st = Store(model)
    try:
        folder = st.current()
    finally:
        st.close()
    rec = load_model(folder)
    known = set(rec.data.items)

    def recommend(seeds: list[list[str]], n: int) -> list[str]:
        items = [next((k for k in keys if k in known), None) for keys in seeds]
        items = [i for i in items if i is not None]
        scores: dict[str, float] = {}
        for item in items:
            for hit in similar_items(rec, item, n + len(items)):
                scores[hit["id"]] = scores.get(hit["id"], 0.0) + hit["score"]
        ranked = sorted((i for i in scores if i not in items), key=lambda i: (-scores[i], i))
        return ranked[:n]

    return recommend
