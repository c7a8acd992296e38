"""Reading a vendored network's safetensors file: the checks every loader makes, in one place.

The loaders (``skey.load``, ``musicnn.load_tagger``) read the file, check its format tag, then
check their own metadata and the tensors' shapes; each failure is one line naming the file.
"""

from __future__ import annotations

import numpy as np

from analyzer.errors import ParameterError


def read_weights(path: str, *, name: str, article: str, fmt: str) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """The file's metadata and tensors, refused unless it reads and carries ``format`` = `fmt`.

    Parameters
    ----------
    path : str
        The safetensors file.
    name, article : str
        The network's name for messages, and the article said before it ("an" S-KEY file).
    fmt : str
        The format tag our converter writes into the metadata.

    Returns
    -------
    (dict, dict)
        Metadata (str -> str) and tensors (name -> numpy array).

    Raises
    ------
    ParameterError
        The file cannot be read, or holds another format.
    """
    from safetensors import safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - any failure to read the file means the same to the user
        raise ParameterError(f"cannot read the {name} weights {path}: {type(exc).__name__}: {exc}") from None
    if meta.get("format") != fmt:
        raise ParameterError(f"{path}: not {article} {name} weights file of format {fmt} (got {meta.get('format')!r})")
    return meta, tensors


def check_shapes(tensors: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]], *, path: str,
                 name: str) -> None:
    """ParameterError unless every expected tensor is there, of its shape, and finite."""
    for key, shape in expected.items():
        got = tensors.get(key)
        if got is None:
            raise ParameterError(f"{path}: {name} tensor {key} is missing")
        if got.shape != shape:
            raise ParameterError(f"{path}: {name} tensor {key} has shape {got.shape}, expected {shape}")
        if not np.isfinite(got).all():
            raise ParameterError(f"{path}: {name} tensor {key} holds non-finite values")


def frozen(a: np.ndarray) -> np.ndarray:
    """A contiguous read-only float32 copy (the loaded networks are shared by every call)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    a.setflags(write=False)
    return a
