"""Training the CNN to predict items' collaborative-filtering factors from their audio.

The loss compares unit-normalized predicted and target factors (so the network learns the
direction in factor space, which is what ranking by dot product uses), random crops of each
track are the augmentation, a validation split decides early stopping, and the best weights
are kept.  Inputs are log-mel spectrograms computed once per track (`mels`), so an epoch never
runs the front end again.  With a checkpoint path, every epoch's state (weights, optimizer,
random generators, history) is written atomically and a rerun continues from it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from analyzer.errors import InputError

from .model import AudioCNN, History, read_safetensors


@dataclass(frozen=True)
class TrainParams:
    crop_s: float = 3.0
    batch: int = 16
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_share: float = 0.2
    patience: int = 8  # epochs without a better validation loss before stopping
    lr_patience: int = 3  # ... before halving the learning rate (again after as many more)
    seed: int = 0
    steps_per_epoch: int = 0  # 0: one pass over the training tracks
    # weight of a contrastive term (NT-Xent): two crops of one track close, of different tracks apart
    contrastive: float = 0.0
    temperature: float = 0.1


def unit_factor_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between unit vectors (= 2 - 2 cosine)."""
    p = torch.nn.functional.normalize(pred, dim=1)
    t = torch.nn.functional.normalize(target, dim=1)
    return ((p - t) ** 2).sum(dim=1).mean()


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss on unit vectors: row i of `a` should pick row i of `b` among all 2n - 1 others."""
    z = torch.cat([a, b], dim=0)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    n = a.shape[0]
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(a.device)
    return torch.nn.functional.cross_entropy(sim, target)


@torch.no_grad()
def mels(model: AudioCNN, audio: list[np.ndarray], *, batch_s: float = 600.0, device: str = "cpu") -> list[np.ndarray]:
    """Log-mel spectrograms of whole tracks with the model's front end; tracks of equal length
    go through it together (`batch_s` seconds of audio at a time)."""
    out: list[np.ndarray | None] = [None] * len(audio)
    order = sorted(range(len(audio)), key=lambda i: len(audio[i]))
    front = model.front.to(device)
    i = 0
    while i < len(order):
        n = len(audio[order[i]])
        j = i
        while j < len(order) and len(audio[order[j]]) == n and (j - i + 1) * n <= batch_s * model.cfg.sr:
            j += 1
        j = max(j, i + 1)
        x = torch.from_numpy(np.stack([audio[k] for k in order[i:j]]).astype(np.float32)).to(device)
        m = front(x).cpu().numpy()
        for k, idx in enumerate(order[i:j]):
            out[idx] = m[k]
        i = j
    return out  # type: ignore[return-value]


def _crops(inputs: list[np.ndarray], idx: np.ndarray, n: int, rng: np.random.Generator) -> torch.Tensor:
    n = min(n, max(x.shape[1] for x in inputs))
    out = np.zeros((len(idx), inputs[0].shape[0], n), dtype=np.float32)
    for k, i in enumerate(idx):
        x = inputs[i]
        if x.shape[1] <= n:
            out[k, :, : x.shape[1]] = x
        else:
            s = int(rng.integers(0, x.shape[1] - n))
            out[k] = x[:, s : s + n]
    return torch.from_numpy(out)


def _signature(model: torch.nn.Module, params: TrainParams, factors: np.ndarray, n_inputs: int) -> str:
    cfg = asdict(model.cfg) if hasattr(model, "cfg") else {}
    # epochs and patience may change between runs: a rerun with more epochs continues the same run
    p = {k: v for k, v in asdict(params).items() if k not in ("epochs", "patience")}
    blob = json.dumps({"cfg": cfg, "params": p, "kind": type(model).__name__, "n": n_inputs,
                       "factors": hashlib.sha1(np.ascontiguousarray(factors, dtype=np.float32).tobytes()).hexdigest()},
                      sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()


def _save_checkpoint(path: Path, model, opt, best_state, meta: dict) -> None:
    from safetensors.torch import save_file

    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if best_state is not None:
        tensors.update({f"best/{k}": v.detach().cpu().contiguous() for k, v in best_state.items()})
    osd = opt.state_dict()
    for idx, st in osd["state"].items():
        for name, v in st.items():
            tensors[f"opt/{idx}/{name}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    tensors["rng/torch"] = torch.get_rng_state()
    meta = {**meta, "param_groups": osd["param_groups"]}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata={"checkpoint": json.dumps(meta)})
    tmp.replace(path)


def _load_checkpoint(path: Path, model, opt, signature: str):
    from safetensors import SafetensorError

    try:
        metadata, tensors = read_safetensors(path)
        meta = json.loads(metadata["checkpoint"])
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a training checkpoint ({exc}); delete it to start over") from None
    if meta.get("signature") != signature:
        raise InputError(f"{path}: a checkpoint of another training run (other data or settings); "
                         "delete it to start over")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")} or None
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt/"):
            _, idx, name = k.split("/", 2)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng/torch"])
    return meta, best


def train(inputs: list[np.ndarray], factors: np.ndarray, model: torch.nn.Module, params: TrainParams = TrainParams(),
          *, unlabeled: list[np.ndarray] | None = None, device: str = "cpu", progress=None,
          checkpoint: Path | None = None) -> tuple[torch.nn.Module, History]:
    """inputs: per track a (features, frames) array (log-mel from `mels`, or statistics with one frame);
    factors: (tracks, n_factors) CF item factors.  `unlabeled`: tracks without factors (no listeners
    yet, or any audio at hand) that take part in the contrastive term only.
    `progress(epoch, train_loss, val_loss, step, steps)`."""
    pool = list(inputs) + list(unlabeled or [])
    n_lab = len(inputs)
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    order = rng.permutation(len(inputs))
    n_val = max(1, int(round(params.val_share * len(inputs)))) if len(inputs) >= 5 else 0
    val, tr = order[:n_val], order[n_val:]
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    # halves the rate after lr_patience epochs without a better validation loss, and again after as
    # many more; "better" by the same absolute 1e-6 as the early stop below
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=params.lr_patience - 1,
                                                         threshold=1e-6, threshold_mode="abs")
    cfg = model.cfg
    n = max(1, int(round(params.crop_s * cfg.sr / cfg.hop)))
    target = torch.from_numpy(factors.astype(np.float32)).to(device)
    hist = History()
    best, best_state, waited, start = float("inf"), None, 0, 0
    signature = _signature(model, params, factors, len(pool))
    if checkpoint is not None and Path(checkpoint).is_file():
        meta, best_state = _load_checkpoint(Path(checkpoint), model, opt, signature)
        # (a checkpoint written before the scheduler: its state follows from the counters it kept)
        plateau.load_state_dict(meta.get("plateau") or {
            **plateau.state_dict(), "best": meta["best"], "num_bad_epochs": meta["waited"] % params.lr_patience,
            "last_epoch": meta["epoch"] + 1})
        hist = History(**meta["history"])
        best, waited, start = meta["best"], meta["waited"], meta["epoch"] + 1
        rng.bit_generator.state = meta["rng"]
        if meta.get("stopped"):
            start = params.epochs  # it had stopped early: nothing left to do
    steps = params.steps_per_epoch or max(1, -(-len(tr) // params.batch))
    stopped = False
    for epoch in range(start, params.epochs):
        model.train()
        losses = []
        for step in range(steps):
            idx = rng.choice(tr, size=min(params.batch, len(tr)), replace=len(tr) < params.batch)
            if params.contrastive:
                extra = np.zeros(0, dtype=np.int64)
                if len(pool) > n_lab:
                    extra = rng.choice(np.arange(n_lab, len(pool)), size=min(params.batch // 2, len(pool) - n_lab),
                                       replace=False)
                both = np.concatenate([idx, extra])
                e1, p1 = model.forward_mel(_crops(pool, both, n, rng).to(device))
                e2, p2 = model.forward_mel(_crops(pool, both, n, rng).to(device))
                k = len(idx)
                loss = 0.5 * (unit_factor_loss(p1[:k], target[idx]) + unit_factor_loss(p2[:k], target[idx])) \
                    + params.contrastive * nt_xent(e1, e2, params.temperature)
            else:
                _, pred = model.forward_mel(_crops(inputs, idx, n, rng).to(device))
                loss = unit_factor_loss(pred, target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if progress:
                progress(epoch, float(np.mean(losses)), None, step + 1, steps)
        hist.train_loss.append(float(np.mean(losses)))
        if len(val):
            v = evaluate(model, inputs, val, target, n, seed=params.seed + 1, device=device)
        else:
            v = hist.train_loss[-1]
        hist.val_loss.append(v)
        if progress:
            progress(epoch, hist.train_loss[-1], v, steps, steps)
        if v < best - 1e-6:
            best, best_state, waited, hist.best_epoch = v, copy.deepcopy(model.state_dict()), 0, epoch
        else:
            waited += 1
            stopped = waited >= params.patience
        plateau.step(v)
        if checkpoint is not None:
            _save_checkpoint(Path(checkpoint), model, opt, best_state,
                             {"signature": signature, "epoch": epoch, "best": best, "waited": waited, "stopped": stopped,
                              "rng": rng.bit_generator.state, "history": asdict(hist),
                              "plateau": plateau.state_dict()})
        if stopped:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, hist


@torch.no_grad()
def evaluate(model, inputs, rows, target, n_frames: int, *, seed: int, device: str = "cpu", batch: int = 64) -> float:
    """The loss on fixed crops (the same every epoch) of `rows`."""
    model.eval()
    crops = _crops(inputs, rows, n_frames, np.random.default_rng(seed))
    total = 0.0
    for i in range(0, len(rows), batch):
        total += float(unit_factor_loss(model.forward_mel(crops[i : i + batch].to(device))[1], target[rows[i : i + batch]])) \
            * len(rows[i : i + batch])
    return total / len(rows)


@torch.no_grad()
def embed_mels(model: AudioCNN, mel: list[np.ndarray], *, window_s: float = 10.0, device: str = "cpu",
               batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per track: (L2-normalized embedding, predicted factors), each the mean over the track's
    windows (the embedding renormalized).  Windows of all tracks go through the network together."""
    model.eval()
    w = max(1, int(round(window_s * model.cfg.sr / model.cfg.hop)))
    windows, owner = [], []
    for k, m in enumerate(mel):
        if m.shape[1] <= w:
            starts = [0]
        else:
            starts = np.linspace(0, m.shape[1] - w, num=int(np.ceil(m.shape[1] / w))).astype(int)
        for s in starts:
            seg = m[:, s : s + w]
            if seg.shape[1] < w:  # a short track: pad with the front end's value for silence
                seg = np.pad(seg, ((0, 0), (0, w - seg.shape[1])))
            windows.append(seg)
            owner.append(k)
    owner_a = np.array(owner)
    es, fs = [], []
    x = np.stack(windows).astype(np.float32)
    for i in range(0, len(x), batch):
        e, f = model.forward_mel(torch.from_numpy(x[i : i + batch]).to(device))
        es.append(e.cpu().numpy())
        fs.append(f.cpu().numpy())
    e_all, f_all = np.concatenate(es), np.concatenate(fs)
    emb = np.zeros((len(mel), e_all.shape[1]), dtype=np.float32)
    fac = np.zeros((len(mel), f_all.shape[1]), dtype=np.float32)
    np.add.at(emb, owner_a, e_all)
    np.add.at(fac, owner_a, f_all)
    counts = np.bincount(owner_a, minlength=len(mel))[:, None]
    fac /= counts
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return emb, fac


def embed(model: AudioCNN, audio: np.ndarray, *, window_s: float = 10.0, device: str = "cpu") -> np.ndarray:
    """One track's L2-normalized embedding (the mean of its windows' embeddings, renormalized)."""
    return embed_mels(model, mels(model, [audio], device=device), window_s=window_s, device=device)[0][0]
