"""Files in, documents out: input discovery, one-file analysis, parallel batches, atomic writes.

Library code: raises AnalyzerError, never prints or exits.  The CLI reports.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from .audio import DecodeParams, decode
from .errors import AnalyzerError, InputError

AUDIO_EXTENSIONS = frozenset(
    {".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".mp4", ".aif", ".aiff", ".wma", ".webm", ".mka"}
)


@dataclass(frozen=True)
class Job:
    source: Path
    output_rel: Path  # relative path of the .json under the output folder
    plots: tuple[tuple[str, Path], ...] = ()  # (format "png"/"html", where to write the visual report)


@dataclass(frozen=True)
class RunOptions:
    decode: DecodeParams = field(default_factory=DecodeParams)
    pretty: bool = False
    embed_model: Path | None = None  # the audio CNN (cnn/): adds "embedding" to each document
    device: str = "cpu"


@dataclass(frozen=True)
class Result:
    job: Job
    document: bytes | None  # serialized document, None on failure
    audio_s: float
    error: str | None  # one line, None on success
    internal: bool = False  # the failure is a bug, not bad input
    detail: str = ""  # traceback for --debug
    plot_error: str | None = None  # the document is fine but a requested report could not be written


def collect_jobs(paths: list[Path]) -> list[Job]:
    """Expand files and folders into jobs with unique output names."""
    if not paths:
        raise InputError("no input given (pass audio files or folders)")
    jobs: list[Job] = []
    for p in paths:
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.suffix.lower() in AUDIO_EXTENSIONS
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
                and (f.is_file() or f.is_symlink())
            )
            if not found:
                raise InputError(f"{p}: folder holds no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))})")
            jobs.extend(Job(f, f.relative_to(p).with_suffix(".json")) for f in found)
        elif p.exists() or p.is_symlink():
            jobs.append(Job(p, Path(p.name).with_suffix(".json")))
        else:
            raise InputError(f"{p}: no such file or folder")
    # a.mp3 and a.wav in one folder would both become a.json: keep the extension for those
    seen: dict[Path, int] = {}
    for j in jobs:
        seen[j.output_rel] = seen.get(j.output_rel, 0) + 1
    return [
        Job(j.source, j.output_rel.with_name(j.source.name + ".json")) if seen[j.output_rel] > 1 else j for j in jobs
    ]


_MODELS = None


def shared_models():
    """This process's networks, loaded on first use (once per worker in a batch)."""
    global _MODELS
    if _MODELS is None:
        from .features import Models

        _MODELS = Models()
    return _MODELS


_CNN: dict = {}
_IN_WORKER = False


def shared_cnn(path: Path, device: str = "cpu"):
    """(the audio CNN, its id for the document), loaded once per process; InputError if unusable."""
    key = (str(path), device)
    if key not in _CNN:
        import hashlib

        import torch

        from cnn.model import load

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA device on this machine")
        if _IN_WORKER:
            torch.set_num_threads(1)  # one worker per core already
        model, _ = load(path, device=device)
        digest = hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12]
        _CNN[key] = (model, f"{Path(path).name} {digest}")
    return _CNN[key]


def analyze_path(path: Path, options: RunOptions):
    """Decode and analyze one file -> (validated document, the decoded Audio)."""
    from .document import build_document
    from .pipeline import analyze

    t0 = time.perf_counter()
    stamp = int(time.time())
    audio = decode(path, params=options.decode)
    analysis = analyze(audio, models=shared_models())
    embedding = None
    if options.embed_model is not None:
        from cnn.train import embed

        model, model_id = shared_cnn(options.embed_model, options.device)
        embedding = (embed(model, audio.samples, device=options.device), model_id)
    doc = build_document(analysis, timestamp=stamp, analysis_time_s=time.perf_counter() - t0, embedding=embedding)
    return doc, audio


def plot_paths(job_source: Path, output_rel: Path, plot_dir: Path | None, fmt: str) -> tuple[tuple[str, Path], ...]:
    """Where --plot-dir puts a file's report: the JSON's relative path with the report's extension."""
    if plot_dir is None:
        return ()
    return ((fmt, plot_dir / output_rel.with_suffix("." + fmt)),)


def write_plots(job: Job, doc: dict, audio) -> str | None:
    """Render and write the job's reports; a one-line reason if one could not be written."""
    from .report import render, waveform_envelope

    envelope = waveform_envelope(audio.samples, audio.sr)
    for fmt, path in job.plots:
        try:
            write_atomic(path, render(doc, fmt=fmt, envelope=envelope, title=job.source.name), text=False)
        except OSError as exc:
            return f"cannot write {path}: {exc.strerror or exc}"
    return None


def run_one(job: Job, options: RunOptions) -> Result:
    """Analyze one job; failures come back as a Result with a one-line reason, never as an exception."""
    from .document import dumps

    try:
        doc, audio = analyze_path(job.source, options)
        plot_error = write_plots(job, doc, audio) if job.plots else None
        return Result(job, dumps(doc, pretty=options.pretty), audio.duration_s, None, plot_error=plot_error)
    except AnalyzerError as exc:
        internal = getattr(exc, "exit_code", 1) == 3
        return Result(job, None, 0.0, str(exc), internal=internal, detail=traceback.format_exc())
    except MemoryError:
        return Result(job, None, 0.0, f"{job.source}: out of memory (try --duration to analyse an excerpt)")
    except Exception as exc:  # a bug: report it, keep the batch going
        return Result(
            job,
            None,
            0.0,
            f"{job.source}: internal error: {type(exc).__name__}: {exc}",
            internal=True,
            detail=traceback.format_exc(),
        )


def _worker_init() -> None:
    import signal

    # Ctrl-C goes to the parent, which shuts the pool down; workers just stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _IN_WORKER
    _IN_WORKER = True
    shared_models()


def is_up_to_date(job: Job, out_dir: Path, embedding_model_id: str | None = None) -> bool:
    """The JSON (and every report asked for) exists, is not empty and is newer than the source; with
    an embedding model, the JSON also carries that model's embedding."""
    try:
        src = job.source.stat().st_mtime
        for out in [out_dir / job.output_rel] + [p for _, p in job.plots]:
            st = out.stat()
            if st.st_mtime < src or st.st_size == 0:
                return False
        if embedding_model_id is not None:
            import orjson

            doc = orjson.loads((out_dir / job.output_rel).read_bytes())
            return doc.get("embedding_model") == embedding_model_id
        return True
    except (OSError, ValueError):
        return False


def write_atomic(path: Path, data: bytes, *, text: bool = True) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file.

    Text ends with a newline (added if missing); binary data is written as is.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if text and not data.endswith(b"\n"):
                fh.write(b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def run_jobs(
    jobs: list[Job], options: RunOptions, *, workers: int, on_start: Callable[[Job], None] | None = None
) -> Iterator[Result]:
    """Analyze jobs, yielding results in input order (so streamed output is deterministic)."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            if on_start:
                on_start(job)
            yield run_one(job, options)
        return
    ctx = get_context("spawn")  # no fork after onnxruntime/BLAS threads exist
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
        pending: dict[int, Future] = {}
        done: dict[int, Result] = {}
        next_submit = 0
        next_yield = 0
        try:
            while next_yield < len(jobs):
                while next_submit < len(jobs) and len(pending) < 2 * workers:
                    pending[next_submit] = pool.submit(run_one, jobs[next_submit], options)
                    next_submit += 1
                if next_yield in done:
                    yield done.pop(next_yield)
                    next_yield += 1
                    continue
                finished, _ = wait(list(pending.values()), return_when=FIRST_COMPLETED)
                for i, fut in list(pending.items()):
                    if fut in finished:
                        del pending[i]
                        try:
                            done[i] = fut.result()
                        except Exception as exc:  # the worker died (killed, out of memory)
                            done[i] = Result(
                                jobs[i], None, 0.0, f"{jobs[i].source}: worker failed: {type(exc).__name__}: {exc}",
                                internal=True,
                            )
        except BaseException:
            for fut in pending.values():
                fut.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
