"""Probes behind the Echo Nest fidelity rows that no constant fixes (issue 27): what each one measured.

    python -m bench.fidelity_probe segments        # segment rules 2-3: the pairs against note-level truth
    python -m bench.fidelity_probe attack-window   # timbre dim 4 on the segment's first X s, left one song out
    python -m bench.fidelity_probe jukebox-bars    # the jukebox on solo piano: bar phase, bass, oracles
    python -m bench.fidelity_probe bass-phase      # a bass-onset cue in the downbeat evidence, two folds
    python -m bench.fidelity_probe harmony-phase   # the same with the chord change at each beat
    python -m bench.fidelity_probe jukebox-features  # which of our segment features the jukebox disagrees with

Each prints a markdown table.  The pairs' time offsets come from ``bench/fidelity.json`` (what
``python -m bench.fidelity`` recorded); features are computed here (the networks once per file, kept in
``bench/.cache/probe/``).  ``bass-phase`` reads the rhythm cache of ``bench.rhythm_cv``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

from .run import resolve_eval_dir
from .truth import bench_cache_dir

RESULTS_JSON = Path(__file__).resolve().parent / "fidelity.json"


def _pairs(eval_dir: Path) -> dict[str, tuple[Path, dict, float]]:
    """name -> (audio, the Echo Nest's document, our clock's offset to theirs, s)."""
    shifts = {n: f["aligned_shift_s"] for n, f in json.loads(RESULTS_JSON.read_text())["pairs"].items()}
    out = {}
    for folder in sorted((eval_dir / "echonest-pairs").glob("*/")):
        audio = folder / f"{folder.name}.mp3"
        if audio.is_file() and folder.name in shifts:
            out[folder.name] = (audio, json.loads((folder / "echonest.json").read_text()), float(shifts[folder.name]))
    return out


def _features(key: str, path: Path, models_box: list) -> dict:
    """Auditory spectrogram, onset activation and chroma of one file (cached)."""
    from analyzer.stages import features as F
    from analyzer.stages.audio import decode
    from analyzer.stages.auditory import AuditoryParams, auditory_spectrogram

    cache = bench_cache_dir() / "probe" / (key.replace("/", "__") + ".pkl")
    if cache.is_file():
        with cache.open("rb") as fh:
            return pickle.load(fh)  # our own scratch cache, written just below
    if not models_box:
        models_box.append(F.Models(F.EnsembleSize()))
    au = decode(path)
    spec = F.SpectralFeatures(samples=au.samples, sr=au.sr, params=F.FeatureParams())
    acts = F.network_activations(au.samples, au.sr, models=models_box[0], params=F.FeatureParams())
    d = {"aud": auditory_spectrogram(au.samples, au.sr, AuditoryParams()), "onset": (acts.onset, acts.fps),
         "chroma": spec.chroma, "fps": spec.fps}
    cache.parent.mkdir(parents=True, exist_ok=True)
    with cache.open("wb") as fh:
        pickle.dump(d, fh)
    return d


def _starts(d: dict, **params) -> np.ndarray:
    from analyzer.stages.segments import SegmentParams, find_starts

    act, fps = d["onset"]
    st = find_starts(aud=d["aud"], onset_act=act, act_fps=fps, chroma=d["chroma"], chroma_fps=d["fps"],
                     params=SegmentParams(**params))
    return st.start_frames / d["aud"].fps


RULES = {"shipped": {}, "no rule 2 (sure network notes)": {"sure_onset": 1.01},
         "no rule 3 (harmony splits)": {"split_min_s": 1e9}, "attacks only": {"sure_onset": 1.01, "split_min_s": 1e9}}


def probe_segments(eval_dir: Path) -> str:
    """Onset F at 50 ms and count ratio with and without rules 2-3, on the pairs and on note-level truth."""
    import mir_eval

    from . import devrenders
    from .truth import _renders, load_set

    models: list = []
    files = []  # (group, key, path, reference onsets, shift)
    for name, (audio, en, shift) in _pairs(eval_dir).items():
        files.append((name, f"pair/{name}", audio, np.array([s["start"] for s in en["segments"]]), shift))
    for it in load_set("renders", eval_dir):
        files.append(("renders (notes)", f"renders/{it.name}", it.path, it.truth.onsets, 0.0))
    for it in sorted(_renders(devrenders.cache_dir()), key=lambda it: it.name):
        files.append(("development renders (notes)", f"dev/{it.name}", it.path, it.truth.onsets, 0.0))
    for it in load_set("recordings", eval_dir):
        if it.truth.onsets is not None:
            files.append(("recordings (human onsets)", f"rec/{it.name}", it.path, it.truth.onsets, 0.0))
    from analyzer.stages.segments import SegmentParams, attacks, network_onsets

    rows: dict[str, dict[str, list]] = {}
    origin: dict[str, dict[str, tuple[int, float]]] = {}
    coverage: dict[str, list[tuple[float, float]]] = {}  # per file: share of network onsets at an attack, F gain of 2-3
    for i, (group, key, path, ref, shift) in enumerate(files, 1):
        d = _features(key, path, models)
        found = {rule: _starts(d, **kw) + shift for rule, kw in RULES.items()}
        att = attacks(d["aud"], SegmentParams())[0] / d["aud"].fps
        net = network_onsets(*d["onset"], SegmentParams())[0]
        at_attack = float(np.mean([np.min(np.abs(att - t)) <= 0.05 for t in net])) if len(net) and len(att) else 1.0
        gain = (mir_eval.onset.f_measure(ref, found["shipped"], window=0.05)[0]
                - mir_eval.onset.f_measure(ref, found["attacks only"], window=0.05)[0])
        coverage.setdefault(group if not key.startswith("pair/") else "Echo Nest pairs", []).append((at_attack, gain))
        for rule, est in found.items():
            f = mir_eval.onset.f_measure(ref, est, window=0.05)[0]
            rows.setdefault(group, {}).setdefault(rule, []).append((f, len(est) / max(1, len(ref))))
        if key.startswith("pair/"):
            # where each shipped start comes from: an attack, rule 2 or rule 3 (present once the rule is on)
            full, att, r2 = found["shipped"], found["attacks only"], found["no rule 3 (harmony splits)"]
            near = lambda x, ref_, w: np.array([len(ref_) > 0 and np.min(np.abs(ref_ - v)) <= w for v in x])
            kind = np.where(near(full, att, 1e-3), "attack", np.where(near(full, r2, 1e-3), "rule 2", "rule 3"))
            hit = near(full, ref, 0.05)
            origin[group] = {k: (int((kind == k).sum()), float(hit[kind == k].mean()) if (kind == k).any() else 0.0)
                             for k in ("attack", "rule 2", "rule 3")}
        print(f"bench.fidelity_probe: segments {i}/{len(files)} {key}", file=sys.stderr, flush=True)
    lines = ["| files | n | " + " | ".join(f"{r}: onset F / count" for r in RULES) + " |",
             "|---|---|" + "---|" * len(RULES)]
    for group, by_rule in rows.items():
        cells = [f"{np.mean([f for f, _ in v]):.3f} / {np.mean([c for _, c in v]):.2f}" for v in by_rule.values()]
        lines.append(f"| {group} | {len(next(iter(by_rule.values())))} | " + " | ".join(cells) + " |")
    lines += ["", "Is there a per-file cue? The share of network onsets (activation >= the onset threshold) within 50 ms "
              "of an attack, against what rules 2-3 gain in onset F over attacks alone:", "",
              "| files | share of network onsets at an attack: range | rules 2-3 gain: range | files where they gain "
              "> 0.05: share range |", "|---|---|---|---|"]
    for group, v in coverage.items():
        share, gain = np.array(v).T
        big = share[gain > 0.05]
        lines.append(f"| {group} | {share.min():.2f}-{share.max():.2f} | {gain.min():+.3f} to {gain.max():+.3f} | "
                     + (f"{big.min():.2f}-{big.max():.2f}" if big.size else "none") + " |")
    lines += ["", "| pair | attack starts (share within 50 ms of the Echo Nest's) | rule 2 starts | rule 3 starts |",
              "|---|---|---|---|"]
    for group, o in origin.items():
        lines.append(f"| {group} | " + " | ".join(f"{n} ({share:.2f})" for n, share in o.values()) + " |")
    return "\n".join(lines)


def probe_attack_window(eval_dir: Path) -> str:
    """Dim 4 (attack) on the first X s of each segment (at the Echo Nest's boundaries), X left one song out."""
    from analyzer.stages.audio import decode
    from analyzer.stages.auditory import AuditoryParams, auditory_spectrogram
    from analyzer.stages.timbre import (
        TimbreParams,
        load_basis,
        segment_patches,
        timbre_vectors,
    )

    from .fidelity_loso import their_segments

    grid = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.75, None)
    params = TimbreParams()
    basis = load_basis(params=params)
    corr: dict[tuple[str, float | None], float] = {}
    names = []
    for name, (audio, en, shift) in _pairs(eval_dir).items():
        au = decode(audio)
        aud = auditory_spectrogram(au.samples, au.sr, AuditoryParams())
        seg = en["segments"]
        _, _, a, b = their_segments(seg, shift, aud)
        theirs = np.array([x["timbre"][3] for x in seg])
        for x_s in grid:
            end = b if x_s is None else np.minimum(b, a + max(1, int(round(x_s * aud.fps))))
            patch = segment_patches(bands_db=aud.bands_db, start_frames=a, end_frames=end, params=params)
            ours = timbre_vectors(patch, basis)[:, 3]
            corr[(name, x_s)] = float(np.corrcoef(ours, theirs)[0, 1])
        names.append(name)
    lines = ["| first X s | " + " | ".join(names) + " | mean |", "|---|" + "---|" * (len(names) + 1)]
    for x_s in grid:
        v = [corr[(n, x_s)] for n in names]
        lines.append(f"| {x_s or 'whole segment'} | " + " | ".join(f"{c:.3f}" for c in v) + f" | {np.mean(v):.3f} |")
    lines += ["", "| held out | X chosen (argmax) | held-out dim 4 | X chosen (middle of bests within 0.01) | held-out dim 4 "
              "| whole segment |", "|---|---|---|---|---|---|"]
    for held in names:
        train = [n for n in names if n != held]
        mean = {x: np.mean([corr[(n, x)] for n in train]) for x in grid}
        best = max(grid, key=lambda x: mean[x])
        ties = [x for x in grid if mean[x] >= mean[best] - 0.01]
        mid = ties[len(ties) // 2]
        lines.append(f"| {held} | {best} | {corr[(held, best)]:.3f} | {mid} | {corr[(held, mid)]:.3f} | "
                     f"{corr[(held, None)]:.3f} |")
    return "\n".join(lines)


def _jukebox(jukebox: Path, ref: Path, doc: dict, shift: float) -> dict:
    tmp = bench_cache_dir() / "probe" / "jukebox_candidate.json"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(doc))
    out = subprocess.run(["node", str(jukebox), str(ref), str(tmp), f"{shift:.3f}"], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def probe_jukebox_bars(eval_dir: Path, name: str = "la_ere_gymnopedie") -> str:
    """Our bar phase against the Echo Nest's along the song, which one the bass follows, and the jukebox's oracles."""
    import librosa

    from analyzer.stages.audio import decode

    audio, en, shift = _pairs(eval_dir)[name]
    ours = json.loads((bench_cache_dir() / "fidelity" / f"{name}.json").read_text())
    ref = eval_dir / "echonest-pairs" / name / "echonest.json"
    jukebox = eval_dir.parent / "clients" / "jukebox" / "jukebox.mjs"
    ts = int(en["track"]["time_signature"])
    ub = np.array([b["start"] for b in ours["beats"]])
    eb = np.array([b["start"] for b in en["beats"]]) - shift
    ubar = np.array([b["start"] for b in ours["bars"]])
    ebar = np.array([b["start"] for b in en["bars"]]) - shift

    def in_bar(beats, bars):
        k = np.searchsorted(bars, beats + 1e-3) - 1
        return np.array([-1 if j < 0 else int(np.sum((beats >= bars[j] - 1e-3) & (beats < t - 1e-3)))
                         for t, j in zip(beats, k)])

    ui, ei = in_bar(ub, ubar), in_bar(eb, ebar)
    nearest = np.array([int(np.argmin(np.abs(eb - t))) for t in ub])
    offset = np.where((ui >= 0) & (ei[nearest] >= 0), (ui - ei[nearest]) % ts, -1)
    au = decode(audio)
    hop = 512
    power = np.abs(librosa.stft(au.samples, n_fft=4096, hop_length=hop)) ** 2
    freqs = librosa.fft_frequencies(sr=au.sr, n_fft=4096)
    low = 10 * np.log10(power[(freqs > 30) & (freqs < 160)].sum(axis=0) + 1e-10)
    flux = np.maximum(np.diff(low, prepend=low[0]), 0.0)
    fps = au.sr / hop
    bass = lambda t: flux[max(0, int(t * fps) - 3): int(t * fps) + 4].max()
    lines = [f"Bar phase on {name} (our position in the bar minus the Echo Nest's, mod {ts}, at our beats) and the "
             "low-band (30-160 Hz) onset strength at each one's bar starts against its other beats:", "",
             "| span s | beats | phase offsets seen | bass at our bar starts / other beats | bass at theirs / other |",
             "|---|---|---|---|---|"]
    edges = [0.0]
    for i in range(1, len(ub)):  # spans of constant offset
        if offset[i] != offset[i - 1]:
            edges.append(float(ub[i]))
    edges.append(float(ub[-1]) + 1e-3)
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (ub >= lo) & (ub < hi)
        if m.sum() < 9:
            continue
        ours_bar = np.array([np.min(np.abs(ubar - t)) < 1e-3 for t in ub[m]])
        e_m = (eb >= lo) & (eb < hi)
        en_bar = np.array([np.min(np.abs(ebar - t)) < 1e-3 for t in eb[e_m]])
        bu = np.array([bass(t) for t in ub[m]])
        be = np.array([bass(t) for t in eb[e_m]])
        lines.append(f"| {lo:.0f}-{hi:.0f} | {m.sum()} | {sorted(set(offset[m].tolist()))} | {bu[ours_bar].mean():.1f} / "
                     f"{bu[~ours_bar].mean():.1f} | {be[en_bar].mean():.1f} / {be[~en_bar].mean():.1f} |")
    # oracles: the Echo Nest's bars on our beats; the Echo Nest's beats and bars with our segments
    starts = [t for t in ub if np.min(np.abs(ebar - t)) < 0.15]
    bars_on_ours = [{"start": float(a), "duration": float(b - a), "confidence": 0.5}
                    for a, b in zip(starts, starts[1:] + [ours["track"]["duration"]])]
    moved = lambda xs: [dict(x, start=x["start"] - shift) for x in xs]
    cases = {"ours": ours, "our beats, the Echo Nest's bars": dict(ours, bars=bars_on_ours),
             "the Echo Nest's beats and bars, our segments": dict(ours, beats=moved(en["beats"]), bars=moved(en["bars"]),
                                                                  tatums=moved(en["beats"]))}
    lines += ["", "| jukebox input | precision | recall | our threshold | theirs |", "|---|---|---|---|---|"]
    for label, doc in cases.items():
        r = _jukebox(jukebox, ref, doc, shift)
        lines.append(f"| {label} | {r['branch_precision_by_ref']:.3f} | {r['branch_recall_of_ref']:.3f} | "
                     f"{r['candidate']['threshold']:.1f} | {r['ref']['threshold']:.1f} |")
    return "\n".join(lines)


def probe_bass_phase(eval_dir: Path, weights: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5), cue: str = "bass") -> str:
    """Downbeat F per set and fold with a per-beat cue mixed (geometrically, weight w) into the bar evidence.

    ``cue``: "bass" (low-band onset strength at the beat) or "harmony" (how much the beat-synchronous CLP
    chroma changes from the beat before: chords change on downbeats in most classical music).
    """
    from analyzer.stages.rhythm import (
        RhythmParams,
        _peak_at,
        decode_meter,
        downbeat_observation,
        meter_bonus,
        mix_bar_evidence,
    )

    from .meter_cues import BASS_BANDS, _cos_rows, beat_sync
    from .metrics import _beat_f
    from .rhythm_cv import prepare

    items, caches, decoder = prepare(eval_dir, ("gtzan", "renders", "devrenders", "asap"))
    params = RhythmParams()
    table: dict[tuple[str, str], dict[float, list[float]]] = {}
    for item, fold in items:
        if item.truth.downbeats is None:
            continue
        c = caches[(item.set, item.name)]
        times, _ = decoder.beats(f"{item.set}/{item.name}", c, params)
        if len(times) < 4:
            continue
        fps = float(c["fps"])
        frames = np.round(times * fps).astype(int)
        down_at = _peak_at(c["downbeat"], frames, radius=params.downbeat_radius_frames)
        beat_at = _peak_at(c["downbeat_beat"] + c["downbeat"], frames, radius=params.downbeat_radius_frames)
        net = downbeat_observation(down_at=down_at, beat_at=beat_at, params=params)
        obs = mix_bar_evidence(net, decoder.bar_act(f"{item.set}/{item.name}", times, c), params.bar_net_weight)
        if cue == "bass":
            low = c["percussive"][:, :BASS_BANDS].astype(np.float64).sum(axis=1)
            raw = _peak_at(low, frames, radius=3)
        else:
            chroma = beat_sync(c["clp"].astype(np.float64), times, fps)
            chroma = chroma - chroma.mean(axis=1, keepdims=True)
            raw = np.append(0.0, 1.0 - _cos_rows(chroma[1:], chroma[:-1]))
        top = np.percentile(raw, 95)
        bass = np.clip(raw / top, 1e-3, 1.0) if top > 0 else np.full(len(raw), 0.5)
        for w in weights:
            mixed = np.clip(obs, 1e-3, 1.0) ** (1 - w) * bass ** w if w else obs
            positions, *_ = decode_meter(down_at_beats=mixed, params=params, meter_bonus=meter_bonus(net, params))
            f = _beat_f(item.truth.downbeats, times[positions == 1], float(c["duration_s"]))
            table.setdefault((item.set, fold), {}).setdefault(w, []).append(f)
    lines = ["| set | fold | n | " + " | ".join(f"w = {w:g}" for w in weights) + " |",
             "|---|---|---|" + "---|" * len(weights)]
    for (s, fold), by_w in sorted(table.items()):
        lines.append(f"| {s} | {fold} | {len(by_w[weights[0]])} | "
                     + " | ".join(f"{np.nanmean(by_w[w]):.3f}" for w in weights) + " |")
    return "\n".join(lines)


def probe_jukebox_features(eval_dir: Path) -> str:
    """The Echo Nest's own document with one of its segment features replaced by ours (read at their boundaries).

    Their beats, bars and segmentation stay; only the numbers the jukebox compares change: timbre, pitches,
    loudness (start and max), or all three.  Judged by the Echo Nest's own branches, as ``bench.fidelity``.
    """
    from analyzer.stages import features as F
    from analyzer.stages.audio import decode
    from analyzer.stages.auditory import FLOOR_DB, AuditoryParams, auditory_spectrogram
    from analyzer.stages.segments import SegmentParams, segment_pitches
    from analyzer.stages.timbre import (
        TimbreParams,
        load_basis,
        segment_patches,
        timbre_vectors,
    )

    from .fidelity_loso import their_segments

    jukebox = eval_dir.parent / "clients" / "jukebox" / "jukebox.mjs"
    params = TimbreParams()
    basis = load_basis(params=params)
    lines = ["| pair | their features | our timbre | our pitches | our loudness | all three ours | "
             "our document (ours throughout) |", "|---|---|---|---|---|---|---|"]
    for name, (audio, en, shift) in _pairs(eval_dir).items():
        if not en.get("bars") or not en.get("sections"):
            continue
        ref = eval_dir / "echonest-pairs" / name / "echonest.json"
        au = decode(audio)
        aud = auditory_spectrogram(au.samples, au.sr, AuditoryParams())
        spec = F.SpectralFeatures(samples=au.samples, sr=au.sr, params=F.FeatureParams())
        seg = en["segments"]
        st, end, a, b = their_segments(seg, shift, aud)
        timbre = timbre_vectors(segment_patches(bands_db=aud.bands_db, start_frames=a, end_frames=b, params=params), basis)
        pitches = segment_pitches(spec.pitch_chroma, spec.fps, st, end, exponent=SegmentParams().pitch_exponent)
        loud = np.maximum(aud.loudness_db, FLOOR_DB)
        l_start = loud[a]
        l_max = np.array([loud[i:j].max() for i, j in zip(a, b)])

        def with_ours(*fields):
            new = []
            for k, x in enumerate(seg):
                y = dict(x)
                if "timbre" in fields:
                    y["timbre"] = [float(v) for v in timbre[k]]
                if "pitches" in fields:
                    y["pitches"] = [float(v) for v in pitches[k]]
                if "loudness" in fields:
                    y["loudness_start"], y["loudness_max"] = float(l_start[k]), float(l_max[k])
                new.append(y)
            return dict(en, segments=new)

        cases = [en, with_ours("timbre"), with_ours("pitches"), with_ours("loudness"),
                 with_ours("timbre", "pitches", "loudness")]
        cells = []
        for doc in cases:
            r = _jukebox(jukebox, ref, doc, 0.0)
            cells.append(f"{r['branch_precision_by_ref']:.2f} / {r['branch_recall_of_ref']:.2f} "
                         f"({r['candidate']['threshold']:.0f})")
        ours = json.loads((bench_cache_dir() / "fidelity" / f"{name}.json").read_text())
        r = _jukebox(jukebox, ref, ours, shift)
        cells.append(f"{r['branch_precision_by_ref']:.2f} / {r['branch_recall_of_ref']:.2f} ({r['candidate']['threshold']:.0f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(["Precision / recall (the threshold the branch finder climbed to):", ""] + lines)


def probe_harmony_phase(eval_dir: Path) -> str:
    """As ``bass-phase``, with the chord change at each beat as the cue."""
    return probe_bass_phase(eval_dir, cue="harmony")


PROBES = {"segments": probe_segments, "harmony-phase": probe_harmony_phase, "attack-window": probe_attack_window, "jukebox-bars": probe_jukebox_bars,
          "bass-phase": probe_bass_phase, "jukebox-features": probe_jukebox_features}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fidelity_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("probe", choices=sorted(PROBES))
    p.add_argument("--eval-dir", type=Path, default=None)
    args = p.parse_args(argv)
    eval_dir = resolve_eval_dir(args.eval_dir)
    if not (eval_dir / "echonest-pairs").is_dir():
        print(f"bench.fidelity_probe: no Echo Nest pairs under {eval_dir}; skipping", file=sys.stderr)
        return 2
    print(PROBES[args.probe](eval_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
