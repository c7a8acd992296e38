"""A factor head on musicnn's MSD tagger: `cnn train --base musicnn`.

The analyzer already runs musicnn's MSD tagger on every track (``analyzer.stages.tagging``) and writes its
penultimate layer as the default embedding.  Two ways to turn that network toward a recommender's
collaborative-filtering factors, both measured by ``bench.coldstart``:

``embedding`` ("on top")
    The tagger stays frozen; the head (``cnn.model.Head``: dense 512, L2-normalised 128-d embedding,
    factor prediction) learns from the track's default embedding (200-d, the mean over at most 10
    patches, L2-normalised), standardised with the training tracks' mean and spread.
``backend`` ("start from")
    musicnn's back end is initialised from the vendored MSD weights and fine-tuned with the head: the
    pooling batch norm (as a trainable per-feature scale and shift), the 200-unit dense layer
    ``dense.penultimate`` and its batch norm (likewise).  The front end (the timbral and temporal
    convolutions) and the mid end (three 1-D convolutions) stay frozen: their per-patch pooled output
    (1506 values) is computed once per track, because back-propagating through the 2.3 GFLOP front end
    is out of reach on a CPU.  The fine-tuned penultimate layer is then averaged over the patches and
    L2-normalised as the default embedding is, so at the start of training the head sees exactly what
    it sees on top.

``cnn train --base musicnn`` trains ``backend``: on ``bench.coldstart`` (2026-11-30) it reached the lower
validation loss (0.884 against 0.982) and ranked cold tracks better (NDCG@10 0.1834 against 0.1712);
its embedding groups GTZAN genres less well than the untouched tagger's (precision@5 0.416 against 0.559).

Inputs per track are (features, patches) arrays, so ``cnn.train.train`` (its loss, validation split,
early stopping, learning-rate halving, checkpoints) trains them unchanged: the config's ``sr`` and
``hop`` make one "frame" one 3 s patch, and ``crop_s`` covers every patch a track can have (the whole
track, as the analysis reads it).  The file is safetensors with a manifest (format, config, base),
loaded by the ``cnn`` embedder (``cnn.embedder.load``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from analyzer.stages import musicnn
from analyzer.errors import InputError
from analyzer.stages.tagging import TagParams, Tags, read_patches, run_tagger

from .model import Head, read_safetensors

FORMAT = "echonest-analyzer-musicnn-head/1"
BASES = ("embedding", "backend")
EMBEDDING_DIM = musicnn.PENULTIMATE_UNITS  # 200
POOLED_DIM = 2 * (len(musicnn.TIMBRAL) * musicnn.TIMBRAL_FILTERS + len(musicnn.TEMPORAL) * musicnn.TEMPORAL_FILTERS
                  + len(musicnn.MIDEND) * musicnn.MIDEND_FILTERS)  # 1506
_BN_EPS = 1e-3  # TensorFlow's, as analyzer.stages.musicnn's inference uses


@dataclass(frozen=True)
class HeadConfig:
    """What a musicnn head is: its base and the factor head's sizes.

    ``sr`` and ``hop`` are musicnn's rate and one patch's hop (187 frames x 256 samples), so that
    ``cnn.train``'s crop of ``crop_s`` seconds counts patches.
    """

    base: str = "embedding"
    sr: int = 16000
    hop: int = 187 * 256
    # the training crop, in patches: at least every patch the analysis reads of a track `cnn train`
    # decodes (one per 15 s of its --max-seconds 120: 8), so a crop is the whole track
    max_patches: int = 64
    hidden: int = 512
    embedding_dim: int = 128
    n_factors: int = 64
    dropout: float = 0.3

    @property
    def crop_s(self) -> float:
        """A training crop covering every patch a track can have."""
        return self.max_patches * self.hop / self.sr


class EmbeddingHead(nn.Module):
    """On top: the frozen default embedding, standardised (training mean and spread, buffers), then the head."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mu", torch.zeros(EMBEDDING_DIM))
        self.register_buffer("sd", torch.ones(EMBEDDING_DIM))
        self.head = Head(EMBEDDING_DIM, cfg)

    def forward_mel(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, 200, 1) default embeddings -> (L2-normalised embeddings, predicted factors)."""
        return self.head((x.mean(dim=2) - self.mu) / self.sd)


class BackEndHead(nn.Module):
    """Start from: musicnn's back end (from the MSD weights, fine-tuned) on per-patch pooled features, then the head."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.cfg = cfg
        # the batch norms in inference form (fixed statistics) as a scale and shift that train
        self.pool_scale = nn.Parameter(torch.ones(POOLED_DIM))
        self.pool_shift = nn.Parameter(torch.zeros(POOLED_DIM))
        self.penultimate = nn.Linear(POOLED_DIM, EMBEDDING_DIM)
        self.pen_scale = nn.Parameter(torch.ones(EMBEDDING_DIM))
        self.pen_shift = nn.Parameter(torch.zeros(EMBEDDING_DIM))
        self.register_buffer("mu", torch.zeros(EMBEDDING_DIM))
        self.register_buffer("sd", torch.ones(EMBEDDING_DIM))
        self.head = Head(EMBEDDING_DIM, cfg)

    def init_from_tagger(self, tagger: musicnn.Tagger) -> None:
        """Copy the MSD tagger's back end (its batch norms folded into scale and shift)."""
        w = tagger.weights

        def fold(name: str) -> tuple[torch.Tensor, torch.Tensor]:
            p = f"bn.{name}."
            scale = w[p + "gamma"] / np.sqrt(w[p + "var"] + np.float32(_BN_EPS))
            return torch.from_numpy(scale.astype(np.float32)), torch.from_numpy((w[p + "beta"] - w[p + "mean"] * scale).astype(np.float32))

        with torch.no_grad():
            for (scale, shift), name in (((self.pool_scale, self.pool_shift), "pool_bn"),
                                         ((self.pen_scale, self.pen_shift), "penultimate")):
                a, b = fold(name)
                scale.copy_(a)
                shift.copy_(b)
            self.penultimate.weight.copy_(torch.from_numpy(np.array(w["dense.penultimate.kernel"]).T))
            self.penultimate.bias.copy_(torch.from_numpy(np.array(w["dense.penultimate.bias"])))

    def base_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 1506, patches) -> (batch, 200): the back end's penultimate layer, averaged over the
        patches and L2-normalised as ``Tags.embedding`` does.

        ``cnn.train``'s crops pad a track with fewer patches than the crop with zero columns; a
        patch's pooled features are never all zero (they include batch-normalised front-end maxima),
        so those columns are left out of the mean.
        """
        real = (x.abs().sum(dim=1) > 0).to(x.dtype)  # (batch, patches)
        h = x.transpose(1, 2) * self.pool_scale + self.pool_shift
        h = torch.relu(self.penultimate(h)) * self.pen_scale + self.pen_shift  # (batch, patches, 200)
        mean = (h * real[:, :, None]).sum(dim=1) / real.sum(dim=1, keepdim=True).clamp(min=1.0)
        return nn.functional.normalize(mean, dim=1)

    def forward_mel(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, 1506, patches) pooled features -> (L2-normalised embeddings, predicted factors)."""
        return self.head((self.base_embedding(x) - self.mu) / self.sd)


def build(cfg: HeadConfig, *, tagger: musicnn.Tagger | None = None) -> EmbeddingHead | BackEndHead:
    """An untrained head of ``cfg.base``; the back end starts from ``tagger``'s weights (the MSD tagger)."""
    if cfg.base == "embedding":
        return EmbeddingHead(cfg)
    if cfg.base == "backend":
        model = BackEndHead(cfg)
        model.init_from_tagger(tagger or musicnn.load_tagger("msd"))
        return model
    raise InputError(f"musicnn head base {cfg.base!r}: expected one of {', '.join(BASES)}")


def features(output: musicnn.TaggerOutput | None, base: str) -> np.ndarray | None:
    """A track's input for a head of ``base`` from the MSD tagger's output (None where it did not run).

    Returns
    -------
    numpy.ndarray or None
        (200, 1) the default embedding for ``embedding``; (1506, patches) the pooled features for ``backend``.
    """
    if output is None:
        return None
    if base == "embedding":
        v = Tags(mtt=None, msd=output).embedding()
        return None if v is None else v[:, None]
    if output.patch_pooled is None:
        raise InputError("the MSD tagger's output carries no pooled features")
    return np.ascontiguousarray(output.patch_pooled.T, dtype=np.float32)


def tagger_output(samples: np.ndarray, sr: int, *, tagger: musicnn.Tagger,
                  params: TagParams = TagParams()) -> musicnn.TaggerOutput | None:
    """The MSD tagger's output as the analysis computes it (same patches, one BLAS thread)."""
    return run_tagger(tagger, read_patches(samples, sr, front=tagger.front, params=params))


def standardize_from(model: EmbeddingHead | BackEndHead, inputs: list[np.ndarray]) -> None:
    """Set the head's input standardisation from the training tracks' (starting) base embeddings."""
    with torch.no_grad():
        if isinstance(model, BackEndHead):
            base = torch.cat([model.base_embedding(torch.from_numpy(x[None])) for x in inputs])
        else:
            base = torch.from_numpy(np.stack([x.mean(axis=1) for x in inputs]))
        model.mu.copy_(base.mean(dim=0))
        model.sd.copy_(base.std(dim=0) + 1e-6)


@torch.no_grad()
def predict(model: EmbeddingHead | BackEndHead, inputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, predicted factors) of many tracks' inputs (``features``), one at a time (lengths differ)."""
    model.eval()
    es, fs = [], []
    for x in inputs:
        e, f = model.forward_mel(torch.from_numpy(np.asarray(x, dtype=np.float32)[None]))
        es.append(e[0].numpy())
        fs.append(f[0].numpy())
    return np.stack(es), np.stack(fs)


def save(model: EmbeddingHead | BackEndHead, path: str | Path, *, training: dict | None = None,
         metrics: dict | None = None) -> None:
    """Write the head (weights and manifest) as safetensors, atomically.

    Parameters
    ----------
    model : EmbeddingHead or BackEndHead
    path : str or Path
    training, metrics : dict, optional
        What the manifest records about the training run.
    """
    from safetensors.torch import save_file

    manifest = {"format": FORMAT, "base": f"musicnn-msd:{model.cfg.base}", "config": asdict(model.cfg),
                "training": training or {}, "metrics": metrics or {}}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata={"manifest": json.dumps(manifest)})
    tmp.replace(path)


def check_config(cfg: object) -> HeadConfig:
    """The HeadConfig a manifest's "config" describes; ValueError naming the bad field otherwise."""
    if not isinstance(cfg, dict):
        raise ValueError("config is not an object")
    names = {f.name for f in fields(HeadConfig)}
    if set(cfg) != names:
        raise ValueError(f"config fields unknown: {sorted(set(cfg) - names)}, missing: {sorted(names - set(cfg))}")
    if cfg["base"] not in BASES:
        raise ValueError(f"config base is {cfg['base']!r}, expected one of {', '.join(BASES)}")
    default = HeadConfig()
    for name in ("sr", "hop"):  # musicnn's front end: anything else would mean another network
        if cfg[name] != getattr(default, name):
            raise ValueError(f"config {name} is {cfg[name]!r}; musicnn's is {getattr(default, name)}")
    for name, (lo, hi) in {"max_patches": (1, 1000), "hidden": (1, 8192), "embedding_dim": (1, 4096),
                           "n_factors": (1, 4096)}.items():
        v = cfg[name]
        if not (isinstance(v, int) and not isinstance(v, bool)) or not lo <= v <= hi:
            raise ValueError(f"config {name} is {v!r}, expected an integer in {lo}..{hi}")
    d = cfg["dropout"]
    if not (isinstance(d, (int, float)) and not isinstance(d, bool)) or not 0.0 <= d <= 0.99:
        raise ValueError(f"config dropout is {d!r}, expected a number in 0..0.99")
    return HeadConfig(**{**cfg, "dropout": float(d)})


def load(path: str | Path, *, tensors: dict | None = None, manifest: dict | None = None,
         device: str = "cpu") -> tuple[EmbeddingHead | BackEndHead, dict]:
    """The head and its manifest; InputError (one line) for anything else.

    Parameters
    ----------
    path : str or Path
        The safetensors file.
    tensors, manifest : dict, optional
        Already read from ``path`` (``cnn.embedder.load`` reads the file once to tell the formats apart).
    device : str

    Returns
    -------
    (EmbeddingHead or BackEndHead, dict)
    """
    if tensors is None or manifest is None:
        from safetensors import SafetensorError

        try:
            meta, tensors = read_safetensors(path)
            manifest = json.loads(meta["manifest"])
        except (SafetensorError, OSError, ValueError, KeyError) as exc:
            raise InputError(f"{path}: not a musicnn head file ({type(exc).__name__}: {exc})") from None
    try:
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format') if isinstance(manifest, dict) else None!r}")
        cfg = check_config(manifest.get("config"))
    except ValueError as exc:
        raise InputError(f"{path}: not a musicnn head of this analyzer ({exc})") from None
    # built without the tagger's weights: the file holds every tensor the back end needs
    model = EmbeddingHead(cfg) if cfg.base == "embedding" else BackEndHead(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != got:
        bad = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
        raise InputError(f"{path}: its weights do not fit a musicnn head of base {cfg.base} "
                         f"({bad[0]}: {list(got.get(bad[0], ())) or 'missing'}, expected "
                         f"{list(expected.get(bad[0], ())) or 'none'})")
    if not all(bool(torch.isfinite(v).all()) for v in tensors.values()):
        raise InputError(f"{path}: its weights hold non-finite values")
    model.load_state_dict(tensors)
    model.eval()
    return model.to(device), manifest
