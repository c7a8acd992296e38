"""Test helper: copies of a vendored safetensors file with one thing altered (for the loaders' refusals)."""

from __future__ import annotations


def rewrite(src, dst, *, meta=None, drop=None, change=None):
    """A copy of a safetensors file with its metadata or one tensor altered (header kept well-formed)."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(src), framework="numpy") as f:
        m = dict(f.metadata())
        t = {k: f.get_tensor(k) for k in f.keys()}
    m.update(meta or {})
    if drop:
        del t[drop]
    for k, fn in (change or {}).items():
        t[k] = fn(t[k])
    save_file(t, str(dst), metadata=m)
    return dst
