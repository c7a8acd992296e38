"""`recommend`: the recommender arrives with its own issue; until then it says so."""

from __future__ import annotations

import sys

MESSAGE = (
    "recommend: not yet available. It will build weekly playlists from play counts (ALS), "
    "term vectors and audio embeddings, reading analyses piped from `analyze --format jsonl`.\n"
)


def main() -> None:
    args = sys.argv[1:]
    if args in ([], ["--help"], ["-h"]):
        sys.stdout.write(MESSAGE)
        sys.exit(0)
    sys.stderr.write("error: recommend is not implemented yet (see `recommend --help`)\n")
    sys.exit(2)
