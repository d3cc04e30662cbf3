"""The `t2i` command: fetch data, index images, search, inspect (the README's quick start).

Example:
    $ t2i data                                # fetch the bundled photo set
    $ t2i index data/tuxpaint/stamps.csv      # ... added 784, unchanged 0, updated 0, removed 0, skipped 1
    $ t2i search "a red kangaroo" -k 3
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .config import Config
from .encoders import available_encoders


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uri", help="milvus-lite file or http://host:19530 (default: $T2I_MILVUS_URI or data/t2i.db)")
    parser.add_argument("--token", help="Milvus token for a server (default: $T2I_MILVUS_TOKEN)")
    parser.add_argument("--collection", help="collection name (default: t2i_images)")
    parser.add_argument("--encoder", help=f"encoder name: {', '.join(available_encoders())}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for `t2i`."""
    parser = argparse.ArgumentParser(prog="t2i", description="Text-to-image search with Towhee and Milvus.")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="fetch the bundled photo set (Debian's Tux Paint stamps)")
    data.add_argument("--deb", help="a local tuxpaint-stamps-default .deb instead of downloading it")

    index = commands.add_parser("index", help="index a folder of images or a dataset CSV (id,path,label,caption)")
    index.add_argument("source", help="folder or .csv; 'bundled' for the bundled photo set")
    index.add_argument("--reset", action="store_true", help="drop the collection first (its rows are lost)")
    index.add_argument("--sync", action="store_true", help="also remove rows of files deleted from SOURCE")
    index.add_argument("--batch-size", type=int, default=Config.batch_size, help="images per batch (one insert)")
    _store_options(index)

    search = commands.add_parser("search", help="search the index with a text query")
    search.add_argument("query")
    search.add_argument("-k", "--top-k", type=int, default=5)
    search.add_argument("--category", help="only images with this label")
    _store_options(search)

    info = commands.add_parser("info", help="show the collection, encoder and row count")
    _store_options(info)

    from .api import add_serve_command
    from .evaluate import add_eval_command

    add_eval_command(commands)
    _store_options(add_serve_command(commands))
    return parser


def _engine(args: argparse.Namespace, **config: object):
    from .engine import SearchEngine

    cfg = Config.from_env(uri=args.uri, token=args.token, collection=args.collection, encoder=args.encoder, **config)
    return SearchEngine.open(cfg, reset=getattr(args, "reset", False))


def main(argv: Sequence[str] | None = None) -> int:
    """Run `t2i`; returns the exit status (errors are printed as one line, not a traceback)."""
    args = build_parser().parse_args(argv)
    if args.command == "eval":
        from .evaluate import run_eval

        return run_eval(args)
    from .datasets import DatasetError, fetch_tuxpaint, tuxpaint_csv
    from .store import StoreError

    try:
        if args.command == "serve":
            from .api import run_serve

            return run_serve(args)
        if args.command == "data":
            print(fetch_tuxpaint(deb=args.deb))
            return 0
        if args.command == "index":
            source = tuxpaint_csv() if args.source == "bundled" else args.source
            engine = _engine(args, batch_size=args.batch_size)
            report = engine.index(source, sync=args.sync)
            for skipped in report.skipped:
                print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
            print(report.summary())
        elif args.command == "search":
            engine = _engine(args)
            query = engine.prepare_query(args.query)
            if query.notice:
                print(f"t2i: note: {query.notice}", file=sys.stderr)
            for rank, hit in enumerate(engine.search(query, args.top_k, args.category), start=1):
                print(f"{rank:>3}  {hit.score:.3f}  {hit.path}  {hit.caption}")
        else:
            engine = _engine(args)
            for key, value in engine.info().items():
                print(f"{key}: {value}")
        engine.close()
    except (DatasetError, StoreError, ValueError, ImportError, RuntimeError) as err:
        print(f"t2i: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
