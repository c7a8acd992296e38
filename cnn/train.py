"""Training the CNN to predict items' collaborative-filtering factors from their audio.

The loss compares unit-normalized predicted and target factors (so the network learns the
direction in factor space, which is what ranking by dot product uses), random crops of each
track are the augmentation, a validation split decides early stopping, and the best weights
are kept.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from .model import AudioCNN, CNNConfig, History


@dataclass(frozen=True)
class TrainParams:
    crop_s: float = 3.0
    batch: int = 16
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_share: float = 0.2
    patience: int = 5
    seed: int = 0
    steps_per_epoch: int = 0  # 0: one pass over the training tracks


def unit_factor_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between unit vectors (= 2 - 2 cosine)."""
    p = torch.nn.functional.normalize(pred, dim=1)
    t = torch.nn.functional.normalize(target, dim=1)
    return ((p - t) ** 2).sum(dim=1).mean()


def _crops(audio: list[np.ndarray], idx: np.ndarray, n: int, rng: np.random.Generator) -> torch.Tensor:
    out = np.zeros((len(idx), n), dtype=np.float32)
    for k, i in enumerate(idx):
        x = audio[i]
        if len(x) <= n:
            out[k, : len(x)] = x
        else:
            s = int(rng.integers(0, len(x) - n))
            out[k] = x[s : s + n]
    return torch.from_numpy(out)


def train(audio: list[np.ndarray], factors: np.ndarray, cfg: CNNConfig | None = None, params: TrainParams = TrainParams(),
          *, device: str = "cpu", progress=None) -> tuple[AudioCNN, History]:
    """audio: mono float32 tracks at cfg.sr; factors: (tracks, n_factors) CF item factors."""
    cfg = cfg or CNNConfig(n_factors=factors.shape[1])
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    order = rng.permutation(len(audio))
    n_val = max(1, int(round(params.val_share * len(audio)))) if len(audio) >= 5 else 0
    val, tr = order[:n_val], order[n_val:]
    model = AudioCNN(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    n = int(params.crop_s * cfg.sr)
    target = torch.from_numpy(factors.astype(np.float32)).to(device)
    hist = History()
    best, best_state, waited = float("inf"), None, 0
    steps = params.steps_per_epoch or max(1, -(-len(tr) // params.batch))
    for epoch in range(params.epochs):
        model.train()
        losses = []
        for _ in range(steps):
            idx = rng.choice(tr, size=min(params.batch, len(tr)), replace=len(tr) < params.batch)
            x = _crops(audio, idx, n, rng).to(device)
            _, pred = model(x)
            loss = unit_factor_loss(pred, target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        hist.train_loss.append(float(np.mean(losses)))
        if len(val):
            model.eval()
            with torch.no_grad():
                # fixed crops for validation: the same each epoch
                x = _crops(audio, val, n, np.random.default_rng(params.seed + 1)).to(device)
                v = float(unit_factor_loss(model(x)[1], target[val]))
        else:
            v = hist.train_loss[-1]
        hist.val_loss.append(v)
        if progress:
            progress(epoch, hist.train_loss[-1], v)
        if v < best - 1e-6:
            best, best_state, waited, hist.best_epoch = v, copy.deepcopy(model.state_dict()), 0, epoch
        else:
            waited += 1
            if waited >= params.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, hist


@torch.no_grad()
def embed(model: AudioCNN, audio: np.ndarray, *, window_s: float = 10.0, device: str = "cpu") -> np.ndarray:
    """One L2-normalized embedding for a whole track: the mean of its windows' embeddings, renormalized."""
    n = int(window_s * model.cfg.sr)
    if len(audio) <= n:
        windows = audio[None, :]
    else:
        starts = np.linspace(0, len(audio) - n, num=max(1, int(np.ceil(len(audio) / n)))).astype(int)
        windows = np.stack([audio[s : s + n] for s in starts])
    e, _ = model(torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(device))
    v = e.mean(dim=0)
    return torch.nn.functional.normalize(v, dim=0).cpu().numpy()
