"""Leave one song out over the Echo Nest pairs: every fitted constant chosen on four songs, scored on the fifth.

    python -m bench.fidelity --loso [--eval-dir DIR] [--json OUT.json]

Five songs do not license five-song fits, so each layer is judged the same way: for every pair, the
constants a layer fits are chosen on the other pairs (the grid's best by mean absolute error; among
equal bests, the middle one) and the held-out pair is scored with them.  The folds and their mean
are reported beside the figures of the shipped constants.

* fades (``analyzer.stages.loudness.FadeParams``): ``silence_db`` and ``fade_out_window_s`` are fitted;
  the 3 dB (half power) under the body is a definition.  Four pairs carry track fields.
* track loudness: the definition itself is chosen per fold, from the mean ``loudness_max`` of the
  segments between the fades (the previous definition) and the loudness of the long-term average
  spectrum between the fades (no constant either); each read with the fold's own fades.
* loudness scale (``AuditoryParams.reference_db``): each pair's median ``loudness_max`` offset
  (theirs - ours) on matched segments, and what a reference fitted on the other pairs would leave.
* timbre spread (``TimbreParams.spread``): each dimension's spread beside the Echo Nest's, and what the
  per-dimension scale fitted on the other pairs leaves on the held-out pair.
* pitches (``FeatureParams.pitch_lowest_octave``, ``SegmentParams.pitch_exponent``): the chroma's lowest
  octave and the power the max-normed vector is raised to, chosen by mean cosine with the Echo Nest's
  pitches at the Echo Nest's own segment boundaries (so the segmentation does not decide it).
* segments (attack and sure-note constants), sections (novelty constants), timbre dims 2-4's shapes.
"""

from __future__ import annotations

import itertools

import numpy as np

FADE_GRID = {
    "silence_db": (-50.0, -47.5, -45.0, -42.5, -40.0, -37.5, -35.0),
    "fade_out_window_s": (1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.5),
}
LOUDNESS_DEFINITIONS = ("segment_mean", "long_term_spectrum")
PITCH_GRID = {
    "pitch_lowest_octave": (1, 2, 3),
    "pitch_exponent": (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0),
}
SEGMENT_GRID = {
    "rise_threshold_db": (0.75, 1.0, 1.25, 1.5, 2.0),
    "sure_onset": (0.5, 0.7, 0.9),
    "sure_onset_gap_s": (0.13, 0.2),
}
SECTION_GRID = {
    "min_novelty": (0.10, 0.14, 0.18, 0.22),
    "min_prominence_sd": (0.0, 0.5, 1.0),
    "max_density_s": (12.0, 16.0, 20.0, 25.0),
    "kernel_short_s": (8.0, 12.0),
}


def pair_inputs(audio, doc: dict, shift_s: float, ref: dict, models=None) -> dict:
    """What the folds need of one pair: the loudness curve and bands as the pipeline makes them, our segments.

    ``audio`` is the decoded file (``analyzer.stages.audio.Audio``) the document was made from.
    """
    from analyzer.stages.auditory import AuditoryParams, auditory_spectrogram
    from analyzer.stages.features import FeatureParams, SpectralFeatures
    from analyzer.stages.loudness import pool_db

    auditory = AuditoryParams()
    aud = auditory_spectrogram(audio.samples, audio.sr, auditory)
    params = FeatureParams()
    hop = params.hop_length
    spec = SpectralFeatures(samples=audio.samples, sr=audio.sr, params=params)
    n_frames = spec.n_frames
    # the segment-pitch chroma from each lowest octave of the pitch grid (the shipped one is ``spec``'s)
    pitch_chroma = {k: (spec if k == params.pitch_lowest_octave else
                        SpectralFeatures(samples=audio.samples, sr=audio.sr,
                                         params=FeatureParams(pitch_lowest_octave=k))).pitch_chroma
                    for k in PITCH_GRID["pitch_lowest_octave"]}
    ours_start = np.array([s["start"] for s in doc["segments"]])
    onset = None
    if models is not None:
        from analyzer.stages.features import network_activations

        acts = network_activations(audio.samples, audio.sr, models=models, params=params)
        onset = (acts.onset, acts.fps)
    return {
        "aud": aud, "onset": onset,
        "chroma": spec.chroma, "pitch_chroma": pitch_chroma, "mfcc": spec.mfcc, "beat_times": np.array([b["start"] for b in doc["beats"]]),
        "bar_times": np.array([b["start"] for b in doc["bars"]]),
        "frame_db": pool_db(aud.loudness_db, hop // auditory.hop_length, n_frames), "fps": audio.sr / hop,
        "duration_s": audio.duration_s,
        "seg_start": ours_start, "seg_loudness_max": np.array([s["loudness_max"] for s in doc["segments"]]),
        "ref": ref, "shift_s": shift_s,
    }


def their_segments(segments: list[dict], shift_s: float, aud=None) -> tuple[np.ndarray, ...]:
    """The Echo Nest's segments on our clock: (start_s, end_s), and with ``aud`` (an AuditorySpectrogram)
    also their (start, end) auditory frames, each segment at least one frame long."""
    start = np.array([x["start"] for x in segments]) - shift_s
    end = start + np.array([x["duration"] for x in segments])
    if aud is None:
        return start, end
    a = np.clip(np.round(start * aud.fps).astype(int), 0, aud.n_frames - 1)
    b = np.clip(np.round(end * aud.fps).astype(int), a + 1, aud.n_frames)
    return start, end, a, b


def _fades(inp: dict, **params):
    from analyzer.stages.loudness import FadeParams, detect_fades

    return detect_fades(frame_db=inp["frame_db"], fps=inp["fps"], duration_s=inp["duration_s"],
                        params=FadeParams(**params))


def _loudness(inp: dict, fades, definition: str) -> float:
    from analyzer.stages.loudness import span_loudness, track_loudness

    if definition == "segment_mean":
        v = span_loudness(segment_start_s=inp["seg_start"], loudness_max_db=inp["seg_loudness_max"],
                          from_s=fades.end_of_fade_in, to_s=fades.start_of_fade_out)
        return v if v > -60.0 else float(np.mean(inp["seg_loudness_max"]))
    return track_loudness(bands_db=inp["aud"].bands_db, fps=inp["aud"].fps, fades=fades)


def _fade_errors(inp: dict, fades) -> tuple[float, float]:
    t, shift = inp["ref"]["track"], inp["shift_s"]
    return (fades.end_of_fade_in + shift - t["end_of_fade_in"], fades.start_of_fade_out + shift - t["start_of_fade_out"])


def _choose(grid: list, loss) -> tuple:
    """The grid point of least loss; among equal bests (within 0.01), the middle one."""
    losses = [loss(g) for g in grid]
    best = min(losses)
    ties = [g for g, v in zip(grid, losses) if v <= best + 0.01]
    return ties[len(ties) // 2]


def fade_and_loudness_folds(inputs: dict[str, dict]) -> dict:
    """Per held-out pair: the fade constants and loudness definition chosen on the others, and its errors."""
    from analyzer.stages.loudness import FadeParams

    names = [n for n, inp in inputs.items() if inp["ref"].get("track", {}).get("end_of_fade_in") is not None]
    keys = list(FADE_GRID)
    grid = list(itertools.product(*(FADE_GRID[k] for k in keys)))
    fades = {(n, g): _fades(inputs[n], **dict(zip(keys, g))) for n in names for g in grid}

    def fade_loss(g, on):
        return float(np.mean([sum(abs(e) for e in _fade_errors(inputs[n], fades[(n, g)])) for n in on]))

    def loud_err(n, g, definition):
        return _loudness(inputs[n], fades[(n, g)], definition) - inputs[n]["ref"]["track"]["loudness"]

    folds = {}
    for held in names:
        train = [n for n in names if n != held]
        g = _choose(grid, lambda g: fade_loss(g, train))
        definition = min(LOUDNESS_DEFINITIONS, key=lambda d: np.mean([abs(loud_err(n, g, d)) for n in train]))
        fi, fo = _fade_errors(inputs[held], fades[(held, g)])
        folds[held] = {"fade_params": dict(zip(keys, g)), "loudness_definition": definition,
                       "fade_in_diff_s": round(fi, 2), "fade_out_diff_s": round(fo, 2),
                       "loudness_diff_db": round(loud_err(held, g, definition), 2)}
    shipped = FadeParams()
    g0 = tuple(getattr(shipped, k) for k in keys)
    if g0 not in grid:
        fades.update({(n, g0): _fades(inputs[n], **dict(zip(keys, g0))) for n in names})
    shipped_rows = {}
    for n in names:
        fi, fo = _fade_errors(inputs[n], fades[(n, g0)])
        shipped_rows[n] = {"fade_in_diff_s": round(fi, 2), "fade_out_diff_s": round(fo, 2),
                           **{f"loudness_diff_db_{d}": round(loud_err(n, g0, d), 2) for d in LOUDNESS_DEFINITIONS}}
    return {"folds": folds, "shipped": shipped_rows, "shipped_params": dict(zip(keys, g0))}


def _section_f(inp: dict, **params) -> float:
    """F@3 s of our boundaries with these SectionParams against the Echo Nest's sections (the scorer's measure)."""
    import mir_eval

    from analyzer.stages.sections import SectionParams, find_boundaries

    b = find_boundaries(chroma=inp["chroma"], mfcc=inp["mfcc"], frame_db=inp["frame_db"], fps=inp["fps"],
                        beat_times=inp["beat_times"], bar_times=inp["bar_times"], duration_s=inp["duration_s"],
                        params=SectionParams(**params))
    ref = inp["ref"]["sections"]
    ref_iv = np.array([[x["start"], x["start"] + x["duration"]] for x in ref])
    starts = b.start + inp["shift_s"]
    ends = np.append(starts[1:], inp["duration_s"] + inp["shift_s"])
    est_iv = np.clip(np.c_[starts, ends], 0, None)
    if len(est_iv) < 2:
        return 0.0
    return float(mir_eval.segment.detection(ref_iv, est_iv, window=3.0, trim=True)[2])


def _segment_f(inp: dict, **params) -> tuple[float, float]:
    """(onset F at 50 ms, count ratio) of segment starts with these SegmentParams against the Echo Nest's."""
    import mir_eval

    from analyzer.stages.segments import SegmentParams, find_starts

    act, act_fps = inp["onset"]
    starts = find_starts(aud=inp["aud"], onset_act=act, act_fps=act_fps, chroma=inp["chroma"], chroma_fps=inp["fps"],
                         params=SegmentParams(**params))
    ours = starts.start_frames / inp["aud"].fps + inp["shift_s"]
    ref = np.array([x["start"] for x in inp["ref"]["segments"]])
    return float(mir_eval.onset.f_measure(ref, ours, window=0.05)[0]), len(ours) / len(ref)


def segment_folds(inputs: dict[str, dict]) -> dict | None:
    """Per held-out pair: the attack and sure-note constants chosen on the others (mean onset F), and its figures."""
    from analyzer.stages.segments import SegmentParams

    names = [n for n, inp in inputs.items() if inp["onset"] is not None]
    if len(names) < 2:
        return None
    keys = list(SEGMENT_GRID)
    grid = list(itertools.product(*(SEGMENT_GRID[k] for k in keys)))
    shipped = SegmentParams()
    g0 = tuple(getattr(shipped, k) for k in keys)
    f = {(n, g): _segment_f(inputs[n], **dict(zip(keys, g))) for n in names for g in set(grid) | {g0}}
    folds = {}
    for held in names:
        train = [n for n in names if n != held]
        g = _choose(grid, lambda g: -float(np.mean([f[(n, g)][0] for n in train])))
        folds[held] = {"params": dict(zip(keys, g)), "onsetF": round(f[(held, g)][0], 3),
                       "rate_ratio": round(f[(held, g)][1], 3), "shipped_onsetF": round(f[(held, g0)][0], 3),
                       "shipped_rate_ratio": round(f[(held, g0)][1], 3)}
    return {"folds": folds, "shipped_params": dict(zip(keys, g0))}


def section_folds(inputs: dict[str, dict]) -> dict:
    """Per held-out pair: the section constants chosen on the others (mean F@3 s), and its F@3 s."""
    from analyzer.stages.sections import SectionParams

    names = [n for n, inp in inputs.items() if inp["ref"].get("sections")]
    keys = list(SECTION_GRID)
    grid = list(itertools.product(*(SECTION_GRID[k] for k in keys)))
    f = {(n, g): _section_f(inputs[n], **dict(zip(keys, g))) for n in names for g in grid}
    shipped = SectionParams()
    g0 = tuple(getattr(shipped, k) for k in keys)
    for n in names:
        f.setdefault((n, g0), _section_f(inputs[n], **dict(zip(keys, g0))))
    folds = {}
    for held in names:
        train = [n for n in names if n != held]
        g = _choose(grid, lambda g: -float(np.mean([f[(n, g)] for n in train])))
        folds[held] = {"params": dict(zip(keys, g)), "sectionF_3s": round(f[(held, g)], 3),
                       "shipped_sectionF_3s": round(f[(held, g0)], 3)}
    return {"folds": folds, "shipped_params": dict(zip(keys, g0))}


def timbre_shape_folds(inputs: dict[str, dict]) -> dict:
    """Dims 2-4's shapes fitted on four pairs' Echo Nest timbre, scored on the fifth (correlation).

    Patches are cut at the Echo Nest's own segment boundaries, so this judges the timbre definition apart
    from our segmentation; each fit is a least-squares map from the five low-order Legendre shapes (with
    an intercept) to the Echo Nest's coefficient over the training pairs' segments together, then made a
    ``TimbreParams`` shape and orthonormalised as the shipped ones are (``defined_directions``).
    """
    from analyzer.stages.timbre import (
        TimbreParams,
        _legendre,
        defined_directions,
        segment_patches,
    )

    params = TimbreParams()
    terms = [(i, j) for i in range(3) for j in range(2) if i or j]  # band degree <= 2, time degree <= 1, no constant
    fns = []
    for i, j in terms:
        v = np.outer(_legendre(params.n_bands, i), _legendre(params.n_frames, j)).ravel()
        fns.append(v - v.mean())
    fns = np.array(fns)
    norms = np.linalg.norm(fns, axis=1)
    data = {}
    for name, inp in inputs.items():
        seg = inp["ref"]["segments"]
        aud = inp["aud"]
        _, _, a, b = their_segments(seg, inp["shift_s"], aud)
        x = segment_patches(bands_db=aud.bands_db, start_frames=a, end_frames=b, params=params).astype(np.float64)
        data[name] = (x, np.array([x_["timbre"] for x_ in seg]))

    def corr(p, name):
        d = defined_directions(p)
        x, y = data[name]
        return [round(float(np.corrcoef(x @ d[k], y[:, k + 1])[0, 1]), 3) for k in range(3)]

    def fit(train):
        xs = np.vstack([data[n][0] @ (fns / norms[:, None]).T for n in train])
        ys = np.vstack([data[n][1] for n in train])
        shapes = []
        for dim in (1, 2, 3):
            w, *_ = np.linalg.lstsq(np.c_[xs, np.ones(len(xs))], ys[:, dim], rcond=None)
            w = w[:-1] / np.linalg.norm(w[:-1])
            shapes.append(tuple((i, j, float(wk / nk)) for (i, j), wk, nk in zip(terms, w, norms)))
        return TimbreParams(brightness=shapes[0], flatness=shapes[1], attack=shapes[2])

    folds = {}
    for held in data:
        train = [n for n in data if n != held]
        folds[held] = {"loso": corr(fit(train), held), "shipped": corr(params, held)}
    return {"folds": folds}


def pitch_folds(inputs: dict[str, dict]) -> dict:
    """Per held-out pair: the pitch chroma's lowest octave and exponent chosen on the others, and its cosine.

    Pitches are read at the Echo Nest's own segment boundaries (shifted to our clock) and compared with
    theirs segment by segment (mean cosine), as ``score.py`` compares matched segments.
    """
    from analyzer.stages.features import FeatureParams
    from analyzer.stages.segments import SegmentParams, segment_pitches

    keys = list(PITCH_GRID)
    grid = list(itertools.product(*(PITCH_GRID[k] for k in keys)))
    g0 = (FeatureParams().pitch_lowest_octave, SegmentParams().pitch_exponent)
    cos = {}
    for name, inp in inputs.items():
        seg = inp["ref"]["segments"]
        st, end = their_segments(seg, inp["shift_s"])
        en = np.array([x["pitches"] for x in seg], dtype=np.float64)
        for octave, exponent in set(grid) | {g0}:
            v = segment_pitches(inp["pitch_chroma"][octave], inp["fps"], st, end, exponent=exponent)
            c = (v * en).sum(1) / np.maximum(np.linalg.norm(v, axis=1) * np.linalg.norm(en, axis=1), 1e-12)
            cos[(name, (octave, exponent))] = float(c.mean())
    folds = {}
    for held in inputs:
        train = [n for n in inputs if n != held]
        g = _choose(grid, lambda g: -float(np.mean([cos[(n, g)] for n in train])))
        folds[held] = {"params": dict(zip(keys, g)), "cosine": round(cos[(held, g)], 3),
                       "shipped_cosine": round(cos[(held, g0)], 3),
                       "before_cosine": round(cos[(held, (1, 1.0))], 3)}
    return {"folds": folds, "shipped_params": dict(zip(keys, g0))}


def scale_folds(inputs: dict[str, dict], figures: dict[str, dict]) -> dict:
    """Loudness reference and the timbre spread (``TimbreParams.spread``) fitted on four pairs, left on the fifth.

    The spreads are ``score.py``'s (each dimension's standard deviation over matched segments, ours / theirs).
    Ours are measured with the shipped ``spread`` applied, so the ratios before any scale are theirs times it;
    each fold's scale (dims 2-12; dim 1 is the mean level, a definition) is the geometric mean of those over
    the other pairs, and the held-out pair's spreads with it are reported beside the unscaled ones.
    """
    from analyzer.stages.timbre import TimbreParams

    shipped = np.r_[1.0, np.asarray(TimbreParams().spread, dtype=float)]
    names = list(inputs)
    offsets = {n: round(float(figures[n]["loudness_max_offset_db"]), 2) for n in names}
    unscaled = {n: np.asarray(figures[n]["timbre_std_ratio_dims1to12"], dtype=float) * shipped for n in names}
    out = {"loudness_max_offset_db": offsets, "folds": {}}

    def in_range(v):
        return int(np.sum((v >= 0.8) & (v <= 1.25)))

    for held in names:
        train = [n for n in names if n != held]
        ref_shift = float(np.mean([offsets[n] for n in train]))
        scale = np.exp(np.mean([np.log(unscaled[n]) for n in train], axis=0))  # geometric mean of the spreads' ratios
        scale[0] = 1.0
        left = unscaled[held] / scale
        out["folds"][held] = {
            "loudness_offset_left_db": round(offsets[held] - ref_shift, 2),
            "timbre_sd_ratio_unscaled": [round(float(x), 2) for x in unscaled[held]],
            "timbre_sd_ratio_fitted_scale": [round(float(x), 2) for x in left],
            "timbre_dims_in_0.8_1.25_unscaled": in_range(unscaled[held]),
            "timbre_dims_in_0.8_1.25_fitted_scale": in_range(left),
            "timbre_dims_in_0.8_1.25_shipped": in_range(unscaled[held] / shipped),
        }
    return out


def _fold_table(title: str, block: dict, columns: list[tuple[str, str, bool]]) -> list[str]:
    """Markdown lines: each fold's chosen params and figures, then the mean of the columns marked to average."""
    names = list(block["shipped_params"])
    lines = ["", title, "", "| held out | " + " | ".join(names) + " | " + " | ".join(h for h, _, _ in columns) + " |",
             "|---|" + "---|" * (len(names) + len(columns))]
    for n, f in block["folds"].items():
        lines.append(f"| {n} | " + " | ".join(f"{v:g}" for v in f["params"].values())
                     + " | " + " | ".join(str(f[k]) for _, k, _ in columns) + " |")
    means = [f"{np.mean([f[k] for f in block['folds'].values()]):.3f}" if avg else "" for _, k, avg in columns]
    lines.append("| mean | " + " | " * len(names) + " ".join(f"{m} |" if m else "|" for m in means))
    return lines


def report(loso: dict, figures: dict[str, dict]) -> str:
    """Markdown tables of the folds."""
    fl = loso["fades_loudness"]
    lines = ["", "## Leave one song out", "",
             "Fades and track loudness: constants and definition chosen on the other pairs, scored on the held-out one "
             f"(shipped: {fl['shipped_params']}).", "",
             "| held out | silence_db | fade_out_window_s | loudness definition | fade-in diff s | fade-out diff s "
             "| loudness diff dB | shipped: fade-in / fade-out s | shipped: loudness dB (segment mean / long-term spectrum) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n, f in fl["folds"].items():
        s = fl["shipped"][n]
        lines.append(f"| {n} | {f['fade_params']['silence_db']} | {f['fade_params']['fade_out_window_s']} | "
                     f"{f['loudness_definition']} | {f['fade_in_diff_s']} | {f['fade_out_diff_s']} | "
                     f"{f['loudness_diff_db']} | {s['fade_in_diff_s']} / {s['fade_out_diff_s']} | "
                     f"{s['loudness_diff_db_segment_mean']} / {s['loudness_diff_db_long_term_spectrum']} |")
    mean = {k: round(float(np.mean([abs(f[k]) for f in fl["folds"].values()])), 2)
            for k in ("fade_in_diff_s", "fade_out_diff_s", "loudness_diff_db")}
    lines.append(f"| mean abs | | | | {mean['fade_in_diff_s']} | {mean['fade_out_diff_s']} | "
                 f"{mean['loudness_diff_db']} | | |")
    se = loso["sections"]
    lines += _fold_table(f"Sections: constants chosen on the other pairs by mean F@3 s (shipped: {se['shipped_params']}).",
                         se, [("F@3 s", "sectionF_3s", True), ("shipped F@3 s", "shipped_sectionF_3s", True)])
    sg = loso.get("segments")
    if sg:
        lines += _fold_table("Segments: attack and sure-note constants chosen on the other pairs by mean onset F at "
                             f"50 ms (shipped: {sg['shipped_params']}).", sg,
                             [("onset F", "onsetF", True), ("count ratio", "rate_ratio", False),
                              ("shipped onset F", "shipped_onsetF", True),
                              ("shipped count ratio", "shipped_rate_ratio", False)])
    pf = loso.get("pitches")
    if pf:
        lines += _fold_table("Pitches at the Echo Nest's own boundaries: the chroma's lowest octave and exponent chosen on "
                             f"the other pairs by mean cosine (shipped: {pf['shipped_params']}; before: C1, 1.0).", pf,
                             [("cosine", "cosine", True), ("shipped cosine", "shipped_cosine", True),
                              ("before (C1, 1.0)", "before_cosine", True)])
    ts = loso.get("timbre_shapes")
    if ts:
        lines += ["", "Timbre dims 2-4 (brightness, flatness, attack) at the Echo Nest's own segment boundaries: shapes fitted "
                  "on the other pairs against the shipped shapes (correlation with the Echo Nest's coefficient).", "",
                  "| held out | fitted: dim 2 | dim 3 | dim 4 | shipped: dim 2 | dim 3 | dim 4 |", "|---|---|---|---|---|---|---|"]
        for n, f in ts["folds"].items():
            lines.append(f"| {n} | " + " | ".join(f"{v:.3f}" for v in f["loso"] + f["shipped"]) + " |")
        lo = np.mean([f["loso"] for f in ts["folds"].values()], axis=0)
        sh = np.mean([f["shipped"] for f in ts["folds"].values()], axis=0)
        lines.append("| mean | " + " | ".join(f"{v:.3f}" for v in list(lo) + list(sh)) + " |")
    sc = loso["scales"]
    lines += ["", "Loudness scale and timbre spread: each pair's loudness_max offset (theirs - ours, dB) and what a "
              "reference fitted on the other pairs leaves; timbre dims whose spread (score.py, matched segments) is "
              "within 0.8-1.25 of the Echo Nest's: without a scale, with dims 2-12 scaled as fitted on the other "
              "pairs, and with the shipped scale (fitted on all five).", "",
              "| held out | analyzer | offset dB | left after a fitted reference dB | timbre dims in range, unscaled "
              "| with the fold's scale | with the shipped scale | spreads with the fold's scale |",
              "|---|---|---|---|---|---|---|---|"]
    for n, f in sc["folds"].items():
        lines.append(f"| {n} | {figures[n].get('analyzer_version', '–')} | {sc['loudness_max_offset_db'][n]} | "
                     f"{f['loudness_offset_left_db']} | {f['timbre_dims_in_0.8_1.25_unscaled']}/12 | "
                     f"{f['timbre_dims_in_0.8_1.25_fitted_scale']}/12 | {f['timbre_dims_in_0.8_1.25_shipped']}/12 | "
                     f"{' '.join(f'{x:g}' for x in f['timbre_sd_ratio_fitted_scale'])} |")
    return "\n".join(lines)


def run(analysed: dict[str, tuple], figures: dict[str, dict], models=None) -> dict:
    """Every fold of every fitted layer (see the module's docstring).

    ``analysed``: pair name -> (decoded audio, our document, the Echo Nest's document), as ``bench.fidelity`` made them.
    """
    inputs = {}
    for name, (audio, doc, ref) in analysed.items():
        figures[name]["analyzer_version"] = (ref.get("meta") or {}).get("analyzer_version") or "API v3 (2009)"
        inputs[name] = pair_inputs(audio, doc, figures[name]["aligned_shift_s"], ref, models)
    return {"fades_loudness": fade_and_loudness_folds(inputs), "scales": scale_folds(inputs, figures),
            "sections": section_folds(inputs), "segments": segment_folds(inputs), "pitches": pitch_folds(inputs),
            "timbre_shapes": timbre_shape_folds(inputs)}
