"""Cross-validated figures for the rhythm stage's decoding (issue 16), on cached network activations.

    python -m bench.rhythm_cv [--sets gtzan,renders,recordings,devrenders,asap] [--set NAME=VALUE ...]
                              [--try 'NAME=VALUE ...' ...] [--diagnose] [--per-file]

The networks are run once per file and cached (``bench/.cache/rhythm/``, npz): madmom's beat and
downbeat activations as the analyzer computes them, the bar network's inputs, the onset envelope, and
madmom's own trackers run on the same audio (the anchors of ``bench/anchors.py``:
``RNNBeatProcessor`` + ``DBNBeatTrackingProcessor``, ``RNNDownBeatProcessor`` +
``DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4])``; madmom's downbeat activation is kept too, and its
tracker with ``beats_per_bar=[2, 3, 4]`` is decoded from it once per file).  Decoding (beats, bar network, meter,
downbeats) then runs as ``analyzer.pipeline`` runs it, with ``RhythmParams`` overridden by ``--set``,
so a parameter can be swept without re-running a network.

Two folds: per set, files sorted by name, even index = fold A (``--split dev`` of ``bench.run``),
odd index = fold B (``--split heldout``).  ``devrenders`` are the scores rendered by
``bench.devrenders`` (built on first use); ``asap`` the human-timed piano performances of
``../shared/eval/asap`` (one excerpt per piece, so the folds split pieces), also shown per meter family.  Every figure is printed per set and fold beside madmom's.
``--try`` adds a sweep: each trial's change of every figure per set and fold, and whether it helps
both folds.  ``--diagnose`` judges each file's downbeat errors (tempo octave, meter, beats) and the
evidence on the true beat grid.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from .anchors import madmom_rhythm_estimate
from .metrics import TEMPO_TOLERANCE, Estimate, score
from .truth import Item, bench_cache_dir, load_set, split_items

FIGURES = ("beat_f", "downbeat_f", "meter_acc", "tempo_acc1", "tempo_acc2")
SETS = ("gtzan", "renders", "recordings", "devrenders", "asap")
FOLDS = ("A", "B")
SYSTEMS = ("ours", "madmom", "madmom234")  # madmom: beats_per_bar [3, 4]; madmom234: [2, 3, 4]
CACHE_VERSION = 1


def load_items(eval_dir: Path, sets: tuple[str, ...] = SETS) -> list[tuple[Item, str]]:
    """(item, fold) for every file with beat annotations in the chosen sets."""
    out = []
    for name in sets:
        items = load_devrenders() if name == "devrenders" else load_set(name, eval_dir)
        items = [it for it in items if it.truth.beats is not None or it.truth.tempo is not None]
        for fold, split in zip(FOLDS, ("dev", "heldout")):
            out += [(it, fold) for it in split_items(items, split)]
    return out


def load_devrenders() -> list[Item]:
    """The development renders (rendered on first use), read like the eval renders; group: the time signature."""
    from . import devrenders
    from .truth import _renders

    devrenders.build()
    return [dataclasses.replace(it, set="devrenders", group=render_truth(it)["time_signature"]) for it in
            sorted(_renders(devrenders.cache_dir()), key=lambda it: it.name)]


def render_truth(item: Item) -> dict:
    """A render's ``NAME.truth.json`` (time signature, instrumentation, ...)."""
    import json

    return json.loads(item.path.with_name(item.path.stem + ".truth.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------- the cache


def _cache_path(item: Item) -> Path:
    """The file's cache: keyed by the audio's path, size and modification time (a changed file is recomputed)."""
    st = item.path.stat()
    key = hashlib.sha1(f"{CACHE_VERSION}|{item.path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return bench_cache_dir() / "rhythm" / f"{item.set}__{item.name.replace('/', '__')}-{key}.npz"


class MadmomTrackers:
    """madmom's beat and downbeat trackers as ``bench.anchors.Anchors`` builds them (without Essentia's)."""

    def __init__(self) -> None:
        from madmom.features.beats import DBNBeatTrackingProcessor, RNNBeatProcessor
        from madmom.features.downbeats import DBNDownBeatTrackingProcessor, RNNDownBeatProcessor

        from analyzer.stages.features import configure_onnxruntime

        from .anchors import MADMOM_FPS

        configure_onnxruntime()
        self.beat_rnn = RNNBeatProcessor()
        self.beat_dbn = DBNBeatTrackingProcessor(fps=MADMOM_FPS)
        self.down_rnn = RNNDownBeatProcessor()
        self.down_dbn = DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4], fps=MADMOM_FPS)


class Networks:
    """The analyzer's networks and madmom's own trackers, loaded once."""

    def __init__(self) -> None:
        from analyzer.stages.features import Models

        self.anchors = MadmomTrackers()
        self.models = Models()


def cached(item: Item, nets: Networks | None) -> dict[str, np.ndarray]:
    """The file's activations and madmom's answers, computed once (needs `nets` the first time)."""
    path = _cache_path(item)
    if path.is_file():
        with np.load(path) as z:
            return dict(z)
    if nets is None:
        raise RuntimeError(f"{item.set}/{item.name}: not cached and no networks loaded")
    from madmom.audio.signal import Signal

    from analyzer.stages import features as F
    from analyzer.stages.audio import decode

    audio = decode(item.path)
    y, sr = audio.samples, audio.sr
    params = F.FeatureParams()
    acts = F.network_activations(y, sr, models=nets.models, params=params)
    spec = F.SpectralFeatures(samples=y, sr=sr, params=params)
    y44 = np.ascontiguousarray(F.upsample_for_madmom(y, sr), dtype=np.float32)
    sig = Signal(y44, sample_rate=F.MADMOM_SR, num_channels=1)
    a = nets.anchors
    mm_beats = np.asarray(a.beat_dbn(a.beat_rnn(sig)), dtype=float)
    mm_down_act = np.asarray(a.down_rnn(sig), dtype=np.float32)
    mm_down = np.asarray(a.down_dbn(mm_down_act), dtype=float).reshape(-1, 2)
    out = {
        "duration_s": np.float64(audio.duration_s),
        "fps": np.float64(acts.fps),
        "beat": acts.beat,
        "downbeat_beat": acts.downbeat_beat,
        "downbeat": acts.downbeat,
        "percussive": acts.percussive.astype(np.float16),
        "clp": F.clp_chroma(y, sr, params=params).astype(np.float16),
        "onset_env": F.onset_strength(log_mel_db=spec.log_mel_db),
        "onset_fps": np.float64(spec.fps),
        "madmom_beats": mm_beats,
        "madmom_downbeats": mm_down,
        # madmom's own downbeat network (beat, downbeat per frame), so its tracker can be decoded with
        # other beats_per_bar settings without running the network again
        "madmom_down_act": mm_down_act,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out


# ---------------------------------------------------------------- decoding

# the RhythmParams fields that change the beats (find_beats); the others only change meter and bars
BEAT_FIELDS = ("min_bpm", "max_bpm", "transition_lambda", "dbn_window_s", "dbn_context_s", "min_peak_activation",
               "min_pulse_periodicity", "weak_beat_activation", "beat_net_weight", "tonal_stability", "min_peak_tonal")


class Decoder:
    """The analyzer's rhythm decoding (``analyzer.pipeline``'s order) on cached activations.

    Beats are memoised per file and beat-tracking parameters, the bar network's output per beat
    grid, so a sweep of the meter and downbeat parameters runs no network and no beat tracker twice.

    Parameters
    ----------
    models : analyzer.stages.features.Models
        The analyzer's networks (the bar networks are run here).
    """

    def __init__(self, models) -> None:
        self.models = models
        self._beats: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._bars: dict[str, np.ndarray] = {}

    def beats(self, key: str, c: dict, params) -> tuple[np.ndarray, np.ndarray]:
        """``find_beats`` on the cached activations: beat times (s) and strengths."""
        from analyzer.stages.features import MADMOM_FPS
        from analyzer.stages.rhythm import find_beats, harmonic_stability

        k = (key, *(getattr(params, f) for f in BEAT_FIELDS))
        if k not in self._beats:
            stability = harmonic_stability(chroma=c["clp"].astype(np.float32), fps=MADMOM_FPS)
            self._beats[k] = find_beats(beat_act=c["beat"], downbeat_beat_act=c["downbeat_beat"],
                                        downbeat_act=c["downbeat"], fps=float(c["fps"]), params=params,
                                        harmonic_stability=stability)
        return self._beats[k]

    def bar_act(self, key: str, beats: np.ndarray, c: dict) -> np.ndarray:
        """The bar networks' downbeat probability per beat (``analyzer.stages.features.bar_activation``)."""
        from analyzer.stages import features as F

        k = key + hashlib.sha1(np.asarray(beats, dtype=float).tobytes()).hexdigest()
        if k not in self._bars:
            self._bars[k] = F.bar_activation(beat_times=beats, percussive=c["percussive"].astype(np.float32),
                                             clp=c["clp"].astype(np.float32), models=self.models)
        return self._bars[k]

    def __call__(self, key: str, c: dict, params, beats: tuple[np.ndarray, np.ndarray] | None = None):
        """The file's ``Rhythm``; `beats` (times, strengths) replaces the tracked beats when given."""
        from analyzer.stages.rhythm import analyze_rhythm

        times, strength = beats if beats is not None else self.beats(key, c, params)
        bar_act = self.bar_act(key, times, c) if len(times) and params.bar_net_weight > 0 else None
        return analyze_rhythm(beat_times=times, beat_strength=strength, downbeat_beat_act=c["downbeat_beat"],
                              downbeat_act=c["downbeat"], fps=float(c["fps"]), duration_s=float(c["duration_s"]),
                              onset_env=c["onset_env"], onset_fps=float(c["onset_fps"]), params=params,
                              bar_act=bar_act)


def ours_estimate(rhythm) -> Estimate:
    """Our rhythm answer as an Estimate (``bench.run.rhythm_fields``)."""
    from .run import rhythm_fields

    return Estimate(**rhythm_fields(rhythm))


def madmom_estimate(c: dict) -> Estimate:
    """madmom's cached answer as an Estimate (``bench.anchors.madmom_rhythm_estimate``)."""
    return madmom_rhythm_estimate(c["madmom_beats"], c["madmom_downbeats"])


# madmom's downbeat tracker allowed bars of 2 as well (the [3, 4] answer is in the cache itself)
MADMOM_DUPLE_BEATS_PER_BAR = (2, 3, 4)
_duple_dbn = None


def madmom_duple_estimate(item: Item, c: dict) -> Estimate | None:
    """madmom's answer with ``DBNDownBeatTrackingProcessor(beats_per_bar=[2, 3, 4])`` on its cached downbeat
    activation (decoded once per file and kept beside the cache); None for a cache made without the activation."""
    global _duple_dbn
    if "madmom_down_act" not in c:
        return None
    path = _cache_path(item).with_suffix(".madmom234.npy")
    if path.is_file():
        down = np.load(path)
    else:
        if _duple_dbn is None:
            from madmom.features.downbeats import DBNDownBeatTrackingProcessor

            from .anchors import MADMOM_FPS

            _duple_dbn = DBNDownBeatTrackingProcessor(beats_per_bar=list(MADMOM_DUPLE_BEATS_PER_BAR), fps=MADMOM_FPS)
        down = np.asarray(_duple_dbn(c["madmom_down_act"].astype(np.float32)), dtype=float).reshape(-1, 2)
        tmp = path.with_name(path.stem + ".tmp.npy")
        np.save(tmp, down)
        tmp.replace(path)
    return madmom_rhythm_estimate(c["madmom_beats"], down)


def evaluate(items: list[tuple[Item, str]], params, decoder: Decoder, caches: dict) -> list[dict]:
    """Score every file with `params`.

    Returns
    -------
    list of dict
        One record per file: set, name, group, fold, ``ours``, ``madmom`` (beats per bar [3, 4]) and
        ``madmom234`` ([2, 3, 4]; empty for a cache without madmom's activation) figures
        (``bench.metrics.score``), our meter and tempo beside the truth's.
    """
    recs = []
    for item, fold in items:
        c = caches[(item.set, item.name)]
        r = decoder(f"{item.set}/{item.name}", c, params)
        dur = float(c["duration_s"])
        duple = madmom_duple_estimate(item, c)
        recs.append({"set": item.set, "name": item.name, "group": item.group, "fold": fold,
                     "ours": score(ours_estimate(r), item.truth, dur),
                     "madmom": score(madmom_estimate(c), item.truth, dur),
                     "madmom234": score(duple, item.truth, dur) if duple is not None else {},
                     "meter": r.time_signature, "truth_meter": item.truth.meter,
                     "tempo": r.tempo_bpm, "truth_tempo": item.truth.tempo})
    return recs


def _mean(recs: list[dict], system: str, figure: str) -> tuple[float, int] | None:
    """Mean of one system's figure over the records that have it, and how many; None if none has it."""
    v = [r[system][figure] for r in recs if figure in r[system]]
    return (float(np.mean(v)), len(v)) if v else None


def summarise(recs: list[dict], by: str = "set") -> dict:
    """Mean figures per group and fold.

    Returns
    -------
    dict
        ``{(group, fold): {system: {figure: (mean, n)}}}`` for folds A, B and ``all``.
    """
    out: dict = {}
    for g in sorted({r[by] for r in recs}):
        for fold in (*FOLDS, "all"):
            sel = [r for r in recs if r[by] == g and (fold == "all" or r["fold"] == fold)]
            if sel:
                out[(g, fold)] = {system: {f: m for f in FIGURES if (m := _mean(sel, system, f))}
                                  for system in SYSTEMS}
    return out


def table(summary: dict) -> str:
    """Markdown: one row per group and fold, each figure as ours / madmom [3, 4] (/ madmom [2, 3, 4] where known)."""
    duple = any(s["madmom234"] for s in summary.values())
    systems = SYSTEMS if duple else SYSTEMS[:2]
    label = "ours / madmom [3,4] / [2,3,4]" if duple else "ours / madmom"
    head = ["set", "fold", "n", *(f"{f} {label}" for f in FIGURES)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (g, fold), s in summary.items():
        n = max((v[1] for v in s["ours"].values()), default=0)
        cells = [" / ".join(f"{s[x][f][0]:.3f}" if f in s[x] else "–" for x in systems) if f in s["ours"] else "–"
                 for f in FIGURES]
        lines.append("| " + " | ".join([g, fold, str(n), *cells]) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- sweeps


def sweep_rows(base: list[dict], trial: list[dict], sets: tuple[str, ...]) -> dict:
    """Change of our figures from `base` to `trial`, per (set, fold) and pooled per fold.

    Returns
    -------
    dict
        ``{(set or "pooled", fold): {figure: delta}}``; pooled is the mean over every file of the fold.
    """
    out = {}
    for g in (*sets, "pooled"):
        for fold in FOLDS:
            sel = [i for i, r in enumerate(base) if r["fold"] == fold and g in ("pooled", r["set"])]
            deltas = {}
            for f in FIGURES:
                b, t = _mean([base[i] for i in sel], "ours", f), _mean([trial[i] for i in sel], "ours", f)
                if b and t:
                    deltas[f] = t[0] - b[0]
            if deltas:
                out[(g, fold)] = deltas
    return out


def verdict(rows: dict, figure: str = "downbeat_f", tolerance: float = 0.005) -> str:
    """'both folds' where `figure` rises on both pooled folds and no (set, fold) loses more than `tolerance`
    on any figure; 'one fold' where it rises on one pooled fold only; else 'no'."""
    ups = [rows.get(("pooled", f), {}).get(figure, 0.0) > tolerance for f in FOLDS]
    worst = min((d for k, v in rows.items() if k[0] != "pooled" for d in v.values()), default=0.0)
    if all(ups) and worst >= -tolerance:
        return "both folds"
    if all(ups):
        return f"both folds, but a set loses {worst:+.3f}"
    return "one fold" if any(ups) else "no"


def sweep_table(results: list[tuple[str, dict]], sets: tuple[str, ...],
                figures: tuple[str, ...] = ("beat_f", "downbeat_f", "meter_acc", "tempo_acc1")) -> str:
    """Markdown: one row per trial, the change of each figure per (set, fold) and the verdict."""
    cols = [(g, f) for g in (*sets, "pooled") for f in FOLDS]
    head = ["change", *(f"{g} {f}" for g, f in cols), "verdict"]
    lines = ["Each cell: change of " + ", ".join(figures) + " (ours, vs the base parameters).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rows in results:
        cells = [" ".join(f"{rows[c][f]:+.3f}" if f in rows.get(c, {}) else "·" for f in figures) for c in cols]
        lines.append("| " + " | ".join([name, *cells, verdict(rows)]) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- diagnosis

TEMPO_RATIOS = {"1": 1.0, "x2": 2.0, "x1/2": 0.5, "x3": 3.0, "x1/3": 1 / 3, "x3/2": 1.5, "x2/3": 2 / 3}


def tempo_relation(ours_bpm: float, truth_bpm: float | None) -> str:
    """Our tempo as a ratio of the truth's ('1', 'x2', 'x1/2', 'x3', 'x2/3' ...) within 4 %, else 'other'."""
    if not truth_bpm or not ours_bpm:
        return "none"
    ratio = ours_bpm / truth_bpm
    return next((k for k, v in TEMPO_RATIOS.items() if abs(ratio / v - 1) <= TEMPO_TOLERANCE), "other")


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney): how well `scores` rank the positive labels first."""
    from scipy.stats import rankdata

    pos, neg = scores[labels], scores[~labels]
    if not pos.size or not neg.size:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))  # ties share their average rank (count half)
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def forced_meter(params, meter: int):
    """`params` with the meter HMM allowed only `meter` (the oracle-meter decoding of the diagnosis)."""
    from analyzer.stages.rhythm import METERS

    return dataclasses.replace(params, meter_change_log_prob=-1e3,
                               meter_log_prior=tuple(0.0 if m == meter else -1e3 for m in METERS))


def diagnose_file(item: Item, c: dict, params, decoder: Decoder, fold: str = "") -> dict:
    """Where one file's downbeats go wrong: tempo octave, meter, phase, and how well each evidence marks bars.

    The evidence (the downbeat network's per-beat observation, the bar networks' probability, their mix)
    is judged on the TRUE beat grid, so a beat-tracking error does not hide it: its AUC at telling
    true downbeats from other beats, and the downbeat F the meter HMM reaches on it with our meter
    choice and with the true meter.
    """
    from analyzer.stages.rhythm import METERS, downbeat_observation

    key, t = f"{item.set}/{item.name}", item.truth
    dur = float(c["duration_s"])
    r = decoder(key, c, params)
    ours = score(ours_estimate(r), t, dur)
    duple = madmom_duple_estimate(item, c)
    out = {"set": item.set, "name": item.name, "group": item.group, "fold": fold, "set_fold": f"{item.set} {fold}",
           "group_fold": f"{item.group} {fold}", "truth_meter": t.meter, "meter": r.time_signature,
           "tempo_rel": tempo_relation(r.tempo_bpm, t.tempo), "beat_f": ours.get("beat_f", np.nan),
           "downbeat_f": ours.get("downbeat_f", np.nan),
           "madmom_downbeat_f": score(madmom_estimate(c), t, dur).get("downbeat_f", np.nan),
           "madmom234_downbeat_f": score(duple, t, dur).get("downbeat_f", np.nan) if duple is not None else np.nan}
    if t.meter in METERS:
        forced = decoder(key, c, forced_meter(params, t.meter))
        out["downbeat_f_true_meter"] = score(ours_estimate(forced), t, dur).get("downbeat_f", np.nan)
    # the true beat grid, within the audio
    tb = t.beats[(t.beats >= 0) & (t.beats < dur - 0.1)]
    if len(tb) < 8 or t.downbeats is None:
        return out
    is_down = np.min(np.abs(tb[:, None] - t.downbeats[None, :]), axis=1) < 0.035
    frames = np.round(tb * float(c["fps"])).astype(int)
    from analyzer.stages.rhythm import _peak_at

    down_at = _peak_at(c["downbeat"], frames, radius=params.downbeat_radius_frames)
    beat_at = _peak_at(c["downbeat_beat"] + c["downbeat"], frames, radius=params.downbeat_radius_frames)
    obs = downbeat_observation(down_at=down_at, beat_at=beat_at, params=params)
    bar = decoder.bar_act(key, tb, c)
    ok = np.isfinite(bar)
    out["auc_downbeat_net"] = auc(obs[ok], is_down[ok])
    out["auc_bar_net"] = auc(bar[ok], is_down[ok])
    truth_beats = (tb, np.ones(len(tb)))
    on_truth = decoder(key, c, params, beats=truth_beats)
    out["meter_on_true_beats"] = on_truth.time_signature
    out["downbeat_f_true_beats"] = score(ours_estimate(on_truth), t, dur).get("downbeat_f", np.nan)
    if t.meter in METERS:
        both = decoder(key, c, forced_meter(params, t.meter), beats=truth_beats)
        out["downbeat_f_true_beats_meter"] = score(ours_estimate(both), t, dur).get("downbeat_f", np.nan)
    return out


DIAG_FIGURES = ("beat_f", "downbeat_f", "madmom_downbeat_f", "madmom234_downbeat_f", "downbeat_f_true_meter", "downbeat_f_true_beats",
                "downbeat_f_true_beats_meter", "auc_downbeat_net", "auc_bar_net")


def diagnosis_table(rows: list[dict], by: str = "set") -> str:
    """Markdown: per group, the mean of each diagnosis figure, meter accuracy and tempo relations."""
    head = ["group", "n", *DIAG_FIGURES, "meter right (tracked / true beats)", "tempo relation"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in sorted({r[by] for r in rows}):
        sel = [r for r in rows if r[by] == g]
        cells = []
        for f in DIAG_FIGURES:
            v = [r[f] for r in sel if f in r and np.isfinite(r[f])]
            cells.append(f"{np.mean(v):.3f}" if v else "–")
        right = sum(r["meter"] == r["truth_meter"] for r in sel)
        right_tb = sum(r.get("meter_on_true_beats") == r["truth_meter"] for r in sel)
        rel = defaultdict(int)
        for r in sel:
            rel[r["tempo_rel"]] += 1
        rel_text = ", ".join(f"{k} {v}" for k, v in sorted(rel.items(), key=lambda kv: -kv[1]))
        lines.append("| " + " | ".join([g, str(len(sel)), *cells, f"{right} / {right_tb}", rel_text]) + " |")
    return "\n".join(lines)


def with_overrides(params, overrides: list[str]):
    """RhythmParams with NAME=VALUE overrides (the value parsed as the field's type)."""
    changes = {}
    fields = {f.name: f for f in dataclasses.fields(params)}
    for text in overrides:
        name, _, value = text.partition("=")
        if name not in fields:
            raise SystemExit(f"bench: unknown RhythmParams field {name!r}; one of {', '.join(fields)}")
        current = getattr(params, name)
        changes[name] = tuple(float(x) for x in value.split(",")) if isinstance(current, tuple) else type(current)(value)
    return dataclasses.replace(params, **changes)


def prepare(eval_dir: Path, sets: tuple[str, ...]) -> tuple[list[tuple[Item, str]], dict, Decoder]:
    """Items, their caches (computed where missing) and a decoder."""
    items = load_items(eval_dir, sets)
    nets = None
    caches = {}
    for i, (item, _) in enumerate(items, 1):
        if nets is None and not _cache_path(item).is_file():
            nets = Networks()
        caches[(item.set, item.name)] = cached(item, nets)
        print(f"bench: rhythm cache {i}/{len(items)} {item.set}/{item.name}", file=sys.stderr, flush=True)
    if nets is None:
        from analyzer.stages.features import Models

        models = Models()
    else:
        models = nets.models
    return items, caches, Decoder(models)


def parse_trial(text: str) -> list[str]:
    """'a=1 b=2,3' -> ['a=1', 'b=2,3'] (one trial of a sweep: overrides applied together)."""
    return [t for t in text.split() if t]


def main(argv: list[str] | None = None) -> int:
    """Print the figures per set and fold (and the sweep, the diagnosis) as markdown; returns the exit code."""
    from analyzer.stages.rhythm import RhythmParams

    from .run import resolve_eval_dir

    ap = argparse.ArgumentParser(prog="python -m bench.rhythm_cv", description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval-dir", type=Path, default=None)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                    help="override a RhythmParams field in the base parameters (repeatable)")
    ap.add_argument("--try", dest="trials", action="append", default=[], metavar="'NAME=VALUE ...'",
                    help="a sweep trial: overrides applied together on top of the base (repeatable)")
    ap.add_argument("--diagnose", action="store_true", help="per-file diagnosis of downbeat errors")
    ap.add_argument("--per-file", action="store_true", help="also list every file's figures")
    args = ap.parse_args(argv)
    eval_dir = resolve_eval_dir(args.eval_dir)
    sets = tuple(s for s in args.sets.split(",") if s)
    items, caches, decoder = prepare(eval_dir, sets)
    params = with_overrides(RhythmParams(), args.overrides)
    recs = evaluate(items, params, decoder, caches)
    print(f"RhythmParams overrides: {args.overrides or 'none'}\n")
    print(table(summarise(recs)))
    dev = [r for r in recs if r["set"] == "devrenders"]
    if dev:
        print("\nDevelopment renders by time signature\n")
        print(table(summarise(dev, by="group")))
        instruments = {it.name: render_truth(it)["instrumentation"] for it, _ in items if it.set == "devrenders"}
        print("\nDevelopment renders by instrumentation\n")
        print(table(summarise([{**r, "instrumentation": instruments[r["name"]]} for r in dev], by="instrumentation")))
    asap = [r for r in recs if r["set"] == "asap"]
    if asap:
        print("\nASAP by meter family (duple: 2/4, 2/2, 4/4, 4/8, 4/2; triple: 3/4, 3/8, 3/2; compound: 6/8, 9/8, "
              "12/8, 12/16; other: 5/8)\n")
        print(table(summarise(asap, by="group")))
    if args.trials:
        results = []
        for text in args.trials:
            trial = evaluate(items, with_overrides(params, parse_trial(text)), decoder, caches)
            results.append((text, sweep_rows(recs, trial, sets)))
            print(f"bench: rhythm sweep {len(results)}/{len(args.trials)} {text}", file=sys.stderr, flush=True)
        print("\nSweep\n")
        print(sweep_table(results, sets))
    if args.diagnose:
        rows = [diagnose_file(item, caches[(item.set, item.name)], params, decoder, fold) for item, fold in items]
        print("\nDiagnosis (evidence judged on the true beat grid)\n")
        print(diagnosis_table(rows))
        print("\nDiagnosis per set and fold\n")
        print(diagnosis_table(rows, by="set_fold"))
        arows = [r for r in rows if r["set"] == "asap"]
        if arows:
            print("\nASAP by meter family and fold\n")
            print(diagnosis_table(arows, by="group_fold"))
        drows = [r for r in rows if r["set"] == "devrenders"]
        if drows:
            print("\nDevelopment renders by time signature\n")
            print(diagnosis_table(drows, by="group"))
        if args.per_file:
            print()
            for r in rows:
                print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    if args.per_file:
        print()
        for r in recs:
            o, m, m2 = r["ours"], r["madmom"], r["madmom234"]
            print(f"{r['set']:10s} {r['fold']} {r['name']:45s} meter {r['meter']} ({r['truth_meter']}) "
                  f"tempo {r['tempo']:6.1f} ({r['truth_tempo'] or 0:6.1f}) "
                  + " ".join(f"{f} {o.get(f, np.nan):.2f}/{m.get(f, np.nan):.2f}/{m2.get(f, np.nan):.2f}"
                             for f in ("beat_f", "downbeat_f", "meter_acc")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
