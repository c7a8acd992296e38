"""Stand-ins for the analysis on Spark's Python workers (pickled by value: the workers need not import them).

- "...crash...": the Python worker process exits at once, as a segfault or the OOM killer would end it
- anything else: a tiny document
Every call appends the file's name to ``.attempts`` beside it, so a test counts Spark's retries.
"""

from __future__ import annotations

import os


def crash_on_name(resources, job, options, data=None):
    from analyzer.run.batch import Result

    with open(job.source.parent / ".attempts", "a") as fh:
        fh.write(job.source.name + "\n")
    if "crash" in job.source.name:
        os._exit(1)
    return Result(job, b'{"fake": true, "bytes": %d}' % len(data), 1.0, None)


def no_setup(options) -> None:
    return None
