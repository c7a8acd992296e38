"""The visual report: --plot (PNG), --plot-html (one self-contained page), --plot-dir in a batch."""

from __future__ import annotations

import time

import numpy as np
import pytest
from typer.testing import CliRunner

from analyzer import report
from analyzer.cli import app

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_document(duration_s: float = 240.0, seed: int = 0) -> dict:
    """A document with the shape of a 4-minute pop song: 120 BPM, 4 segments/s, 8 sections."""
    rng = np.random.default_rng(seed)
    beats = np.arange(0.3, duration_s - 0.5, 0.5)
    seg_starts = np.concatenate(([0.0], np.sort(rng.uniform(0.1, duration_s - 0.3, int(4 * duration_s)))))
    seg_ends = np.append(seg_starts[1:], duration_s)
    sec_starts = np.linspace(0, duration_s, 9)[:-1]

    def events(times, step):
        return [{"start": float(t), "duration": step, "confidence": 0.8} for t in times]

    return {
        "meta": {"filename": "synthetic.wav"},
        "track": {"duration": duration_s, "tempo": 120.0, "tempo_confidence": 0.9, "time_signature": 4,
                  "time_signature_confidence": 0.8, "key": 9, "key_confidence": 0.7, "mode": 0,
                  "mode_confidence": 0.6, "loudness": -7.5, "end_of_fade_in": 0.4,
                  "start_of_fade_out": duration_s - 6.0},
        "bars": events(beats[::4], 2.0), "beats": events(beats, 0.5), "tatums": events(np.arange(0.3, 239, 0.25), 0.25),
        "sections": [{"start": float(s), "duration": duration_s / 8, "confidence": 0.7, "loudness": -8.0,
                      "tempo": 120.0, "tempo_confidence": 0.9, "key": 9, "key_confidence": 0.6, "mode": 0,
                      "mode_confidence": 0.5, "time_signature": 4, "time_signature_confidence": 0.8,
                      "label": "AB"[i % 2]} for i, s in enumerate(sec_starts)],
        "segments": [{"start": float(a), "duration": float(b - a), "confidence": 0.5,
                      "loudness_start": float(rng.uniform(-40, -20)), "loudness_max_time": float(0.3 * (b - a)),
                      "loudness_max": float(rng.uniform(-20, -5)), "pitches": rng.uniform(0, 1, 12).round(3).tolist(),
                      "timbre": rng.normal(0, 30, 12).tolist()} for a, b in zip(seg_starts, seg_ends)],
    }


def test_four_minute_song_renders_in_under_two_seconds():
    doc = synthetic_document()
    env = report.waveform_envelope(np.sin(np.arange(240 * 22050) * 0.01).astype(np.float32), 22050)
    report.png_bytes(doc, envelope=env)  # first call pays matplotlib's imports and font cache
    t = time.perf_counter()
    png = report.png_bytes(doc, envelope=env)
    assert time.perf_counter() - t < 2.0
    assert png.startswith(PNG_MAGIC) and 30_000 < len(png) < 3_000_000


def test_envelope_keeps_the_extremes():
    x = np.zeros(10_000, dtype=np.float32)
    x[1234], x[8765] = 0.9, -0.7
    t, lo, hi = report.waveform_envelope(x, 1000, points=100)
    assert len(t) == 100 and hi.max() == pytest.approx(0.9) and lo.min() == pytest.approx(-0.7)


def test_cli_plot_png_and_html(fx, tmp_path):
    png, page = tmp_path / "song.png", tmp_path / "song.html"
    result = CliRunner().invoke(app, [fx["click_120_4-4"]["path"], "--plot", str(png), "--plot-html", str(page)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.lstrip().startswith("{")  # the document still goes to stdout
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and 30_000 < len(data) < 3_000_000
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    assert "data:image/png;base64," in text and "<h2>Sections</h2>" in text
    assert "src=\"http" not in text and "<script" not in text  # self-contained: nothing to fetch


def test_cli_plot_usage_errors(fx, tmp_path):
    a, b = fx["click_120_4-4"]["path"], fx["chords_d_major"]["path"]
    result = CliRunner().invoke(app, [a, b, "--format", "jsonl", "--plot", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "--plot-dir" in result.stderr
    result = CliRunner().invoke(app, [a, "--plot", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.stderr


def test_batch_plot_dir_mirrors_the_inputs(fx, tmp_path):
    import shutil

    music = tmp_path / "music"
    for i, name in enumerate(["click_120_4-4", "chords_d_major"]):
        dst = music / ("sub" if i else "") / f"{name}.wav"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fx[name]["path"], dst)
    out, plots = tmp_path / "out", tmp_path / "plots"
    result = CliRunner().invoke(app, [str(music), "-o", str(out), "--plot-dir", str(plots), "--jobs", "1"])
    assert result.exit_code == 0, result.stderr
    made = sorted(p.relative_to(plots).as_posix() for p in plots.rglob("*.png"))
    assert made == ["click_120_4-4.png", "sub/chords_d_major.png"]
    # resuming: the outputs and the plots are up to date, nothing is redone
    result = CliRunner().invoke(app, [str(music), "-o", str(out), "--plot-dir", str(plots), "--jobs", "1"])
    assert "0 analyzed, 0 failed, 2 up to date" in result.stderr


def test_unwritable_plot_is_one_error_and_the_document_still_comes(fx, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(app, [fx["click_120_4-4"]["path"], "--plot", str(blocker / "song.png")])
    assert result.exit_code == 1
    assert result.stdout.lstrip().startswith("{")
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot write") and "Traceback" not in result.stderr
