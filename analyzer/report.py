"""The visual report: one time axis, the whole analysis, as PNG or a self-contained HTML page.

Drawn from the finished document (so a saved JSON can be drawn again), plus the
waveform's envelope when the audio is at hand.  Panels, top to bottom:
waveform and segment loudness (dB), beats/bars with the local tempo (BPM),
sections (shaded, with key, tempo and meter), segment pitches (chroma) and
segment timbre (each dimension standardized over the track) as heat maps.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np

PITCH_LABELS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
TIMBRE_LABELS = ("level", "bright", "flat", "attack", "5", "6", "7", "8", "9", "10", "11", "12")
# one scheme: sequential for magnitudes, diverging for signed values, muted qualitative for sections
PITCH_CMAP = "magma"
TIMBRE_CMAP = "RdBu_r"
SECTION_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
ENVELOPE_POINTS = 3000


def waveform_envelope(samples: np.ndarray, sr: int, points: int = ENVELOPE_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times s, min, max) of the waveform in `points` equal slices: what a plot can show of it."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if x.size == 0:
        z = np.zeros(0)
        return z, z, z
    points = max(1, min(points, x.size))
    edges = np.linspace(0, x.size, points + 1).astype(int)
    lo = np.minimum.reduceat(x, edges[:-1])
    hi = np.maximum.reduceat(x, edges[:-1])
    return edges[:-1] / sr, lo, hi


def _key_name(key: int, mode: int) -> str:
    if key is None or key < 0:
        return "no key"
    return f"{PITCH_LABELS[key]} {'major' if mode == 1 else 'minor' if mode == 0 else ''}".strip()


def _rhythm_text(tempo: float, meter: int, sep: str = " · ") -> str:
    # no beats: a tempo of 0 and a default meter would read as facts
    return f"{tempo:.0f} BPM{sep}{meter}/4" if tempo > 0 else "no pulse"


def _section_labels(doc: dict) -> list[str]:
    return [str(s.get("label", "")) for s in doc.get("sections", [])]


def figure(doc: dict, *, envelope: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, title: str | None = None):
    """A matplotlib Figure of the whole analysis."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    track = doc["track"]
    duration = float(track["duration"])
    segs = doc.get("segments", [])
    fig = Figure(figsize=(14, 9), dpi=100, layout="constrained")
    axes = fig.subplots(
        5, 1, sharex=True, gridspec_kw={"height_ratios": [1.4, 1.0, 0.55, 1.2, 1.2]}
    )
    ax_loud, ax_rhythm, ax_sec, ax_pitch, ax_timbre = axes

    name = title or doc.get("meta", {}).get("filename", "") or ""
    fig.suptitle(
        f"{name}  —  {duration:.1f} s · {_rhythm_text(track['tempo'], track['time_signature'], ' · ')} · "
        f"{_key_name(track['key'], track['mode'])} (confidence {track['key_confidence']:.2f}) · "
        f"loudness {track['loudness']:.1f} dB",
        fontsize=12,
    )

    # 1. waveform (right axis, faint) and segment loudness envelope (dB)
    if envelope is not None and len(envelope[0]):
        wav_ax = ax_loud.twinx()
        wav_ax.fill_between(envelope[0], envelope[1], envelope[2], color="0.8", linewidth=0, zorder=0)
        wav_ax.set_ylim(-1.05, 1.05)
        wav_ax.set_ylabel("waveform", color="0.5")
        wav_ax.tick_params(axis="y", colors="0.5")
        ax_loud.set_zorder(wav_ax.get_zorder() + 1)
        ax_loud.patch.set_visible(False)
    if segs:
        t, db = [], []
        for s in segs:
            t += [s["start"], s["start"] + s["loudness_max_time"]]
            db += [s["loudness_start"], s["loudness_max"]]
        t.append(duration)
        db.append(segs[-1].get("loudness_end", segs[-1]["loudness_start"]))
        ax_loud.plot(t, db, color="#1f3b73", linewidth=0.9)
    for x, lab in ((track["end_of_fade_in"], " fade-in ends "), (track["start_of_fade_out"], " fade-out starts ")):
        if 0 < x < duration:
            ax_loud.axvline(x, color="#c44e52", linestyle="--", linewidth=1)
            # labels point into the track, away from the axes' edges
            ax_loud.text(x, 0.97, lab, color="#c44e52", fontsize=8, va="top",
                         ha="right" if x > 0.5 * duration else "left", transform=ax_loud.get_xaxis_transform())
    ax_loud.set_ylim(-61, 1)
    ax_loud.set_ylabel("loudness (dB)")

    # 2. rhythm: beat and bar ticks, local tempo
    beats = np.array([b["start"] for b in doc.get("beats", [])])
    bars = np.array([b["start"] for b in doc.get("bars", [])])
    if len(beats) > 1:
        bpm = 60.0 / np.diff(beats)
        if len(bpm) >= 4:
            # beats sit on a 10 ms grid: a running median over 4 beats shows tempo, not quantisation
            bpm = np.array([np.median(bpm[max(0, i - 2) : i + 2]) for i in range(len(bpm))])
        ax_rhythm.plot(beats[1:], bpm, color="#55a868", linewidth=1.2, label="local tempo")
        lo, hi = np.percentile(bpm, [2, 98])
        # at least +-15% of the tempo in view, so a steady tempo looks steady
        pad = max(0.15 * float(np.median(bpm)), 0.2 * (hi - lo))
        ax_rhythm.set_ylim(max(0.0, lo - pad), hi + pad)
        ymin, ymax = ax_rhythm.get_ylim()
        ax_rhythm.vlines(beats, ymin, ymin + 0.15 * (ymax - ymin), color="0.35", linewidth=0.6, label="beats")
        if len(bars):
            ax_rhythm.vlines(bars, ymin, ymin + 0.35 * (ymax - ymin), color="black", linewidth=1.2, label="bars")
        ax_rhythm.legend(loc="upper right", fontsize=7, ncol=3, frameon=False)
    else:
        ax_rhythm.text(0.5, 0.5, "no beats detected", ha="center", va="center", transform=ax_rhythm.transAxes)
        ax_rhythm.set_yticks([])
    ax_rhythm.set_ylabel("tempo (BPM)")

    # 3. sections, shaded, labelled
    labels = _section_labels(doc)
    distinct = sorted({lab for lab in labels if lab})
    for i, s in enumerate(doc.get("sections", [])):
        lab = labels[i]
        colour = SECTION_COLOURS[(distinct.index(lab) if lab in distinct else i) % len(SECTION_COLOURS)]
        ax_sec.axvspan(s["start"], s["start"] + s["duration"], color=colour, alpha=0.35, linewidth=0)
        ax_sec.axvline(s["start"], color="black", linewidth=0.8)
        text = f"{lab + ' · ' if lab else ''}{_key_name(s['key'], s['mode'])}\n{_rhythm_text(s['tempo'], s['time_signature'])}"
        if s["duration"] >= 0.04 * duration:
            ax_sec.text(s["start"] + 0.01 * duration, 0.5, text, fontsize=7.5, va="center", clip_on=True)
    ax_sec.set_ylim(0, 1)
    ax_sec.set_yticks([])
    ax_sec.set_ylabel("sections")

    # 4-5. segment heat maps (segments are the columns, as wide as they last)
    if segs:
        edges = np.array([s["start"] for s in segs] + [segs[-1]["start"] + segs[-1]["duration"]])
        pitches = np.array([s["pitches"] for s in segs]).T
        ax_pitch.pcolormesh(edges, np.arange(13), pitches, cmap=PITCH_CMAP, vmin=0, vmax=1, shading="flat",
                            rasterized=True)
        timbre = np.array([s["timbre"] for s in segs]).T
        z = (timbre - timbre.mean(axis=1, keepdims=True)) / (timbre.std(axis=1, keepdims=True) + 1e-9)
        ax_timbre.pcolormesh(edges, np.arange(13), z, cmap=TIMBRE_CMAP, vmin=-2.5, vmax=2.5, shading="flat",
                             rasterized=True)
    for ax, labs, name in ((ax_pitch, PITCH_LABELS, "pitches"), (ax_timbre, TIMBRE_LABELS, "timbre (z-score)")):
        ax.set_yticks(np.arange(12) + 0.5, labs, fontsize=7)
        ax.set_ylim(0, 12)
        ax.set_ylabel(name)
    for ax in axes:
        ax.set_xlim(0, duration)
        ax.grid(False)
    ax_timbre.set_xlabel("time (s)")
    return fig


def png_bytes(doc: dict, **kw) -> bytes:
    buf = io.BytesIO()
    figure(doc, **kw).savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def html_bytes(doc: dict, **kw) -> bytes:
    """A single self-contained page: the figure (embedded PNG, 2x resolution), track facts and a section table."""
    buf = io.BytesIO()
    figure(doc, **kw).savefig(buf, format="png", dpi=200)
    img = base64.b64encode(buf.getvalue()).decode("ascii")
    t = doc["track"]
    name = html.escape(kw.get("title") or doc.get("meta", {}).get("filename", "") or "analysis")
    facts = [
        ("duration", f"{t['duration']:.2f} s"),
        ("tempo", f"{t['tempo']:.1f} BPM (confidence {t['tempo_confidence']:.2f})" if t["tempo"] > 0
         else "no pulse: no beats found"),
        ("time signature", f"{t['time_signature']}/4 (confidence {t['time_signature_confidence']:.2f})"
         if t["tempo"] > 0 else "–"),
        ("key", f"{_key_name(t['key'], t['mode'])} (key confidence {t['key_confidence']:.2f}, "
                f"mode {t['mode_confidence']:.2f})"),
        ("loudness", f"{t['loudness']:.2f} dB"),
        ("fades", f"fade-in ends {t['end_of_fade_in']:.2f} s, fade-out starts {t['start_of_fade_out']:.2f} s"),
        ("events", f"{len(doc.get('bars', []))} bars, {len(doc.get('beats', []))} beats, "
                   f"{len(doc.get('tatums', []))} tatums, {len(doc.get('sections', []))} sections, "
                   f"{len(doc.get('segments', []))} segments"),
    ]
    labels = _section_labels(doc)
    rows = "".join(_section_row(i, s, labels[i]) for i, s in enumerate(doc.get("sections", [])))
    fact_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{name} — analysis</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; color: #222; }}
img {{ width: 100%; height: auto; border: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ padding: 0.2em 0.8em; border-bottom: 1px solid #eee; text-align: left; }}
td {{ font-variant-numeric: tabular-nums; }}
</style></head><body>
<h1>{name}</h1>
<table>{fact_rows}</table>
<img alt="analysis of {name}: loudness, rhythm, sections, pitches and timbre over time" src="data:image/png;base64,{img}">
<h2>Sections</h2>
<table><tr><th>#</th><th>label</th><th>start (s)</th><th>duration (s)</th><th>boundary confidence</th>
<th>loudness (dB)</th><th>tempo (BPM)</th><th>key</th><th>meter</th></tr>{rows}</table>
</body></html>
"""
    return page.encode("utf-8")


def _section_row(i: int, s: dict, label: str) -> str:
    pulse = s["tempo"] > 0
    cells = [
        str(i + 1),
        html.escape(label) or "–",
        f"{s['start']:.2f}",
        f"{s['duration']:.2f}",
        f"{s['confidence']:.2f}",
        f"{s['loudness']:.1f}",
        f"{s['tempo']:.1f}" if pulse else "–",
        html.escape(_key_name(s["key"], s["mode"])),
        f"{s['time_signature']}/4" if pulse else "–",
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render(doc: dict, *, fmt: str, **kw) -> bytes:
    """The report as bytes in `fmt` ("png" or "html"); the caller writes them (atomically)."""
    if fmt == "png":
        return png_bytes(doc, **kw)
    if fmt == "html":
        return html_bytes(doc, **kw)
    raise ValueError(f"unknown report format {fmt!r}")
