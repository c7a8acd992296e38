"""`recommend`: Typer only. Options -> library calls -> JSON out -> exit code."""

from __future__ import annotations

import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from analyzer.console import OutputFormat, quiet_stdout
from analyzer.errors import AnalyzerError, run_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Weekly playlists of songs a listener has not heard: collaborative filtering (ALS, EASE) on "
                       "plays, term vectors from tags and text, and audio features from `analyze`.")

ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="The model folder (made by an import).")]


class Engine(str, Enum):
    implicit = "implicit"
    spark = "spark"


def _out(obj, pretty: bool = False) -> None:
    import orjson

    try:
        sys.stdout.buffer.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2 if pretty else 0) + b"\n")
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_stdout()


def _report_problems(problems, strict: bool) -> None:
    if problems.lines:
        if strict:
            raise AnalyzerError(f"{problems.summary()} (refused: --strict)")
        sys.stderr.write(f"warning: skipped {problems.summary()}\n")


def _store_for(table: Path, model: Path, rows, problems, strict: bool):
    """The model folder to import ``rows`` into, after the table's problems are reported (or refused)."""
    from .store import Store

    _report_problems(problems, strict)
    if not rows:
        raise AnalyzerError(f"{table}: no usable rows")
    return Store(model, create=True)


@app.command("import-plays", help="Add a plays table (TSV/CSV with a header: user, item, plays) to a model folder.")
def import_plays(
    table: Annotated[Path, typer.Argument(help="The plays table.")],
    model: ModelOpt,
    user_col: Annotated[str, typer.Option("--user-col")] = "user",
    item_col: Annotated[str, typer.Option("--item-col")] = "item",
    plays_col: Annotated[str, typer.Option("--plays-col")] = "plays",
    strict: Annotated[bool, typer.Option("--strict", help="Refuse the file if any row is malformed.")] = False,
) -> None:
    from .data import read_plays

    rows, problems = read_plays(table, user_col=user_col, item_col=item_col, plays_col=plays_col)
    st = _store_for(table, model, rows, problems, strict)
    st.add_plays(rows)
    sys.stderr.write(f"{len(rows)} plays imported; model folder {model}: {st.counts()}\n")


@app.command("import-terms", help="Add terms: rows of item, term[, weight] or item, text (free text is split into words).")
def import_terms(
    table: Annotated[Path, typer.Argument(help="The terms table.")],
    model: ModelOpt,
    item_col: Annotated[str, typer.Option("--item-col")] = "item",
    term_col: Annotated[str, typer.Option("--term-col")] = "term",
    weight_col: Annotated[str, typer.Option("--weight-col")] = "weight",
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
    strict: Annotated[bool, typer.Option("--strict", help="Refuse the file if any row is malformed.")] = False,
) -> None:
    from .data import read_terms

    rows, problems = read_terms(table, item_col=item_col, term_col=term_col, weight_col=weight_col, text_col=text_col)
    st = _store_for(table, model, rows, problems, strict)
    n = st.add_terms(rows)
    sys.stderr.write(f"{n} (item, term) weights imported; model folder {model}: {st.counts()}\n")


@app.command("import-hetrec", help="Convert the HetRec 2011 Last.fm folder (user_artists, artists, tags, "
             "user_taggedartists) into a model folder OUT: plays, tag terms per artist, listeners' tags.")
def import_hetrec(src: Annotated[Path, typer.Argument(help="The HetRec folder.")],
                  out: Annotated[Path, typer.Argument(help="The model folder to create or update.")]) -> None:
    from .data import read_hetrec
    from .store import Store

    h = read_hetrec(src)
    if h.problems:
        sys.stderr.write(f"warning: skipped {len(h.problems)} malformed row(s): {'; '.join(h.problems[:3])}\n")
    st = Store(out, create=True)
    st.add_plays(h.plays)
    st.add_terms(h.terms)
    st.add_user_tags(h.user_tags)
    st.set_item_info({a: (name, name) for a, name in h.item_names.items()})
    sys.stderr.write(f"imported {src} into {out}: {st.counts()}\n")


@app.command("ingest", help="Read analyses (`analyze ... --format jsonl` on stdin, or a table made by `analyze ... "
             "--format parquet -o T.parquet`) and add their audio vectors and the terms heard in their audio (audio-derived term vectors) as items: "
             "analyze songs/ --format jsonl | recommend ingest --model M  |  recommend ingest --model M T.parquet")
def ingest(model: ModelOpt,
           table: Annotated[Optional[Path], typer.Argument(help="A Parquet table of analyses (analyze --format "
                                                           "parquet); stdin when absent.", show_default=False)] = None,
           id_from: Annotated[str, typer.Option("--id", help="Item id: 'path' (the file name without extension) or "
                                                "'title' (\"artist - title\").")] = "path") -> None:
    import orjson

    from .audio_features import audio_terms_from_document, features_from_document
    from .store import Store

    if table is not None:
        from analyzer.run.tables import read_documents

        records = read_documents(table)  # (OUT.parquet:row, document)
    else:
        records = ((f"stdin:{n}", line) for n, line in enumerate(sys.stdin.buffer, start=1))
    st = Store(model, create=True)
    n = bad = 0
    for where, line in records:
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
            meta = doc["meta"]
            feats = features_from_document(doc)
            heard = audio_terms_from_document(doc)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            bad += 1
            sys.stderr.write(f"warning: {where}: not an analysis document ({type(exc).__name__}: {exc})\n")
            continue
        artist, title = meta.get("artist", ""), meta.get("title", "")
        item = Path(meta.get("filename", "")).stem if id_from == "path" else f"{artist} - {title}"
        if not item.strip(" -"):
            bad += 1
            sys.stderr.write(f"warning: {where}: no {id_from} to name the item by\n")
            continue
        st.add_analysis(item, feats, title=title or item, artist=artist, source=meta.get("filename", ""),
                        audio_terms=heard)
        n += 1
    sys.stderr.write(f"{n} analyses ingested, {bad} skipped; model folder {model}: {st.counts()}\n")
    if n == 0:
        raise AnalyzerError("no analysis documents in the table" if table is not None else
                            "no analysis documents on stdin (pipe `analyze DIR --format jsonl` into it)")


@app.command("fit", help="Fit every model on the folder's data and switch to it atomically (the old one stays until then).")
def fit_command(
    model: ModelOpt,
    tune: Annotated[bool, typer.Option("--tune/--no-tune", help="Choose ALS and fusion settings on a validation "
                                       "split of the plays.")] = True,
    engine: Annotated[Engine, typer.Option("--engine", help="implicit (default) or spark (Spark MLlib ALS).")] = Engine.implicit,
    spark_master: Annotated[str, typer.Option("--spark-master", help="Spark master URL (local[*] by default).")] = "local[*]",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    keep: Annotated[int, typer.Option("--keep", min=1, help="Model versions to keep: the newest N (the one "
                                      "CURRENT names is never removed).")] = 2,
) -> None:
    from .fit import fit
    from .model import FitParams
    from .persist import save
    from .store import Store

    st = Store(model)
    with st.fitting() as cleared:
        if cleared:
            sys.stderr.write(f"removed {', '.join(cleared)} (left by an interrupted fit)\n")
        data = st.dataset()
        t0 = time.perf_counter()
        if engine is Engine.spark:
            from .spark import fit_spark

            rec = fit_spark(data, FitParams(seed=seed), master=spark_master, tune=tune)
        else:
            rec = fit(data, FitParams(seed=seed), tune=tune)
        name, tmp = st.new_version_dir()
        save(rec, tmp)
        summary = {"engine": engine.value, "weights": rec.weights.as_dict(), "fit_s": round(time.perf_counter() - t0, 2),
                   "users": len(data.users), "items": len(data.items), "plays": int(data.plays.nnz),
                   "validation_ndcg10": rec.validation.get("ndcg10")}
        st.publish(name, tmp, summary)
        removed = st.prune(keep=keep)
    if rec.validation.get("skipped"):
        sys.stderr.write(f"note: {rec.validation['skipped']}\n")
    sys.stderr.write(f"model {name} fitted in {summary['fit_s']} s ({engine.value}); weights {summary['weights']}\n")
    if removed:
        sys.stderr.write(f"removed old model version(s) {', '.join(removed)} (--keep {keep})\n")


def _load(model: Path):
    from .persist import load
    from .store import Store

    return load(Store(model).current())


@app.command("playlist", help="A playlist of items the listener has not heard, with the score of each source and a reason.")
def playlist(
    model: ModelOpt,
    user: Annotated[Optional[str], typer.Option("--user", "-u", help="A listener's id.")] = None,
    users: Annotated[Optional[str], typer.Option("--users", help="'all' for every listener.")] = None,
    plays: Annotated[Optional[Path], typer.Option("--plays", help="Listeners the model was not fitted on: a plays "
                                                  "table (user, item, plays); each is folded into the model and "
                                                  "gets a playlist (--user picks one of them).")] = None,
    n: Annotated[int, typer.Option("-n", help="Playlist length.")] = 30,
    fresh: Annotated[float, typer.Option("--fresh", help="Share of fresh items (3 listeners or fewer), 0..1.")] = 0.1,
    spread: Annotated[float, typer.Option("--spread", help="Push down the items the model puts in front of many "
                                          "listeners: higher reaches further into the catalog (0 = pure relevance).")] = 1.8,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.json,
    pretty: Annotated[bool, typer.Option("--pretty")] = False,
) -> None:
    import numpy as np

    from .model import PlaylistParams
    from .explain import explain

    if plays is None and (user is None) == (users is None):
        raise typer.BadParameter("give --user ID, --users all or --plays FILE")
    if users is not None and (users != "all" or user is not None):
        raise typer.BadParameter("--users takes 'all', without --user")
    if n < 1 or not 0.0 <= fresh <= 1.0 or not 0 <= spread < float("inf"):  # NaN fails both comparisons
        raise typer.BadParameter("-n must be >= 1, --fresh within 0..1, --spread a finite number >= 0")
    rec = _load(model)
    if plays is not None:
        rec, new = _fold_in(rec, plays)
        if user is not None and user not in new:
            raise AnalyzerError(f"{plays}: no plays of user {user!r} in it")
        names = [user] if user is not None else new
        # the file's listeners are the last rows, even where a name is also one of the model's
        first = len(rec.data.users) - len(new)
        rows = np.array([first + new.index(u) for u in names])
    else:
        index = {u: i for i, u in enumerate(rec.data.users)}
        if user is not None:
            if user not in index:
                raise AnalyzerError(f"unknown user {user!r} ({len(index)} listeners in the model; "
                                    "give a new listener's plays with --plays FILE)")
            rows = np.array([index[user]])
        else:
            rows = np.arange(len(rec.data.users))
    lists = rec.playlists(rows, PlaylistParams(n=n, fresh_share=fresh, spread=spread))
    for r, picks in zip(rows, lists):
        obj = {"user": rec.data.users[r], "model": str(_current_name(model)), "items": explain(rec, int(r), picks)}
        _out(obj, pretty and fmt is OutputFormat.json and len(rows) == 1)


def _fold_in(rec, path: Path):
    """The model with the plays file's listeners folded in, and their names in file order."""
    import numpy as np
    import scipy.sparse as sp

    from .data import read_plays

    rows, problems = read_plays(path)
    _report_problems(problems, False)
    items = {a: i for i, a in enumerate(rec.data.items)}
    known = [r for r in rows if r.item in items]
    if len(known) < len(rows):
        missing = sorted({r.item for r in rows if r.item not in items})
        sys.stderr.write(f"warning: {path}: {len(rows) - len(known)} plays of {len(missing)} items the model does "
                         f"not know (e.g. {missing[0]!r}) left out\n")
    if not known:
        raise AnalyzerError(f"{path}: none of its plays are of items in the model")
    names = list(dict.fromkeys(r.user for r in known))
    ui = {u: i for i, u in enumerate(names)}
    x = sp.csr_matrix(([r.plays for r in known], ([ui[r.user] for r in known], [items[r.item] for r in known])),
                      shape=(len(names), len(rec.data.items)), dtype=np.float32)
    return rec.with_listeners(names, x), names


def _current_name(model: Path) -> str:
    return (model / "CURRENT").read_text().strip()


@app.command("similar", help="Items most like ITEM (item factors and term vectors, fused).")
def similar(item: Annotated[str, typer.Argument()], model: ModelOpt,
            n: Annotated[int, typer.Option("-n")] = 10, pretty: Annotated[bool, typer.Option("--pretty")] = False) -> None:
    from .explain import similar_items

    rec = _load(model)
    _out({"item": item, "similar": similar_items(rec, item, n)}, pretty)


@app.command("terms", help="The item's top terms with weights, like the Echo Nest's artist terms.")
def terms(item: Annotated[str, typer.Argument()], model: ModelOpt,
          n: Annotated[int, typer.Option("-n")] = 20, pretty: Annotated[bool, typer.Option("--pretty")] = False) -> None:
    from .explain import top_terms

    rec = _load(model)
    _out({"item": item, "terms": top_terms(rec, item, n)}, pretty)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
