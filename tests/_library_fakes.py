"""A quick analysis for the library's tests: the file is decoded for real (its samples' md5 is its
track id, a truncated or damaged file fails as it would), but the rest of the document is one real analysis
made once per test session (`make_template`, a 3 s click track) instead of seconds of networks per file.

The library's invariants (nothing stored is lost or duplicated, status tells the truth) concern
what is stored where, not what the analysis found, so these tests trade the analysis for speed.
`install()` puts it in place in this process; a server started with `FAKE_SERVE` has it too.
``ANALYZE_FAKE_TEMPLATE`` names the template document; ``ANALYZE_FAKE_DELAY_S`` makes each analysis
take that long (so a kill can land mid-analysis).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE_SERVE = [
    sys.executable, "-c",
    "import sys; sys.path.insert(0, 'tests'); import _library_fakes; _library_fakes.install(); "
    "from analyzer.cli import main; main()",
    "serve",
]


def decoded_document(path, options, resources, data=None):
    """`batch.analyze_path` with the analysis replaced by the template: (document, Audio)."""
    from analyzer.stages.audio import decode

    audio = decode(path, params=options.decode, data=data)
    delay_s = float(os.environ.get("ANALYZE_FAKE_DELAY_S", "0"))
    if delay_s > 0:
        time.sleep(delay_s)
    doc = json.loads(Path(os.environ["ANALYZE_FAKE_TEMPLATE"]).read_bytes())
    doc["track"]["sample_md5"] = audio.md5
    doc["track"]["duration"] = round(audio.duration_s, 5)
    doc["meta"]["filename"] = os.fsencode(audio.source.path).decode("utf-8", "backslashreplace")
    doc["meta"]["title"] = audio.source.tags.get("title", "")
    return doc, audio


def make_template(path: Path, models) -> Path:
    """Analyse a 3 s click track for real and write its document to `path`."""
    from analyzer.stages.audio import decode
    from analyzer.document import build_document, dumps
    from analyzer.pipeline import analyze
    from fixtures import synth

    x, sr, _ = synth.click_track(bpm=120, beats_per_bar=4, seconds=3)
    audio_path = path.with_suffix(".wav")
    synth.encode(audio_path, x, sr)
    doc = build_document(analyze(decode(audio_path), models=models), timestamp=int(time.time()), analysis_time_s=0.0)
    path.write_bytes(dumps(doc))
    return path


def install() -> None:
    import analyzer.run.batch as batch

    batch.analyze_path = decoded_document
    batch.worker_resources = lambda options: None
