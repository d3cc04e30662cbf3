"""The `t2i` command: fetch data, index images, search, inspect (the README's quick start).

Only `t2i index` creates a collection; `search` and `info` open one that exists, with the encoder it records.

Example:
    $ t2i data                                # fetch the bundled photo set
    $ t2i index data/tuxpaint/stamps.csv      # ... added 784, unchanged 0, updated 0, removed 0, skipped 1
    $ t2i search "a red kangaroo" -k 3
    $ t2i search --image data/tuxpaint/.../kangaroo.png -k 3
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .config import DEFAULT_ENCODER, MULTILINGUAL_ENCODER, Config
from .models.encoders import available_encoders


def _store_options(parser: argparse.ArgumentParser, encoder_help: str | None = None) -> None:
    parser.add_argument("--uri", help="milvus-lite file or http://host:19530 (default: $T2I_MILVUS_URI or data/t2i.db)")
    parser.add_argument("--token", help="Milvus token for a server (default: $T2I_MILVUS_TOKEN)")
    parser.add_argument("--collection", help="collection name (default: t2i_images)")
    parser.add_argument("--encoder", help=encoder_help or f"encoder name: {', '.join(available_encoders())}")


_RECORDED = "encoder name (default: the one the collection was built with)"
PEOPLE_ACTIONS = {
    "list": "",
    "name": "ID NAME",
    "merge": "ID INTO_ID",
    "faces": "ID",
    "remove-face": "FACE_ID",
    "forget": "ID",
    "regroup": "",
}


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
    index.add_argument(
        "--verify", action="store_true", help="read and hash every file, also those whose size and time are unchanged"
    )
    index.add_argument("--batch-size", type=int, default=Config.batch_size, help="images per batch (one insert)")
    index.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process; ray: a Ray Data job into a Milvus server (pip install -e '.[distributed]')",
    )
    index.add_argument(
        "--ray-address", help="the Ray cluster to join (default: $RAY_ADDRESS, else a local Ray for this run)"
    )
    index.add_argument(
        "--ocr", action="store_true", help="also read the words in each photo that has none read yet (resumable)"
    )
    index.add_argument(
        "--faces", action="store_true", help="also find and group the faces in each photo not read yet (resumable)"
    )
    _store_options(index)

    search = commands.add_parser("search", help="search the index with a text query, or with a picture (--image)")
    search.add_argument(
        "query", nargs="?", help="what the picture shows, e.g. 'a red kangaroo'; optional with a filter"
    )
    search.add_argument("--image", metavar="PATH", help="find pictures like this one instead of a text query")
    search.add_argument("-k", "--top-k", type=int, default=5)
    search.add_argument("--category", help="only images with this label")
    search.add_argument("--after", metavar="D", help="taken on or after D: YYYY, YYYY-MM or YYYY-MM-DD")
    search.add_argument("--before", metavar="D", help="taken on or before D: YYYY, YYYY-MM or YYYY-MM-DD")
    search.add_argument("--place", help="taken in this city, region or country")
    search.add_argument("--camera", help="taken with this camera make or model")
    search.add_argument("--text", metavar="WORDS", help="with these words written in the photo")
    search.add_argument(
        "--person", metavar="NAME", action="append", help="with this person in it (again: with all of them)"
    )
    search.add_argument("--json", action="store_true", help="one JSON object per hit")
    search.add_argument(
        "--literal", action="store_true", help="do not read places, dates or quoted words in QUERY as filters"
    )
    _store_options(search, _RECORDED)

    people = commands.add_parser("people", help="list the people found in the photos; name, merge, forget them")
    people.add_argument(
        "action",
        nargs="?",
        choices=list(PEOPLE_ACTIONS),
        default="list",
        help="name ID NAME; merge ID INTO_ID (one person); faces ID (a person's faces); remove-face FACE_ID (not "
        "that person: a person of its own, never grouped with it again); forget ID (its faces and name); regroup "
        "(names kept)",
    )
    people.add_argument("values", nargs="*", metavar="ARG", help="the action's ID(s) and NAME")
    people.add_argument("--json", action="store_true", help="one JSON object per person (or face)")
    _store_options(people, _RECORDED)

    info = commands.add_parser("info", help="show the collection, encoder and row count")
    _store_options(info, _RECORDED)

    move = commands.add_parser(
        "move", help="move the collection to another text tower (no photo is read again; run again if cut off)"
    )
    _store_options(move, f"the encoder to move to (default: {MULTILINGUAL_ENCODER}, queries in 16 languages)")

    from .measure.evaluate import add_eval_command
    from .serve.server import add_serve_command

    add_eval_command(commands)
    _store_options(add_serve_command(commands))
    return parser


def _config(args: argparse.Namespace, **config: object) -> Config:
    return Config.from_env(uri=args.uri, token=args.token, collection=args.collection, encoder=args.encoder, **config)


def _search(engine, args: argparse.Namespace) -> None:
    """`t2i search`: hits on stdout (lines, or JSON objects with --json), the filters applied on stderr."""
    from .data.images import ImageError
    from .store.filters import Filters

    person = ", ".join(args.person) if args.person else None
    filters = Filters(args.after, args.before, args.place, args.camera, args.text, person)
    if args.image is not None:
        try:
            hits = engine.search_image(args.image, args.top_k, args.category, filters)
        except ImageError as err:
            raise ImageError(f"cannot read {args.image}: {err}") from err
    else:
        found = engine.find(args.query, filters, args.top_k, args.category, literal=args.literal)
        if found.notice:
            print(f"t2i: note: {found.notice}", file=sys.stderr)
        if found.understood:
            read = ", ".join(f"{k} {v!r}" for k, v in found.understood.items())
            print(f"t2i: read from the query: {read} (--literal to search the words as they are)", file=sys.stderr)
        hits = found.hits
    for rank, hit in enumerate(hits, start=1):
        if args.json:
            print(json.dumps({"rank": rank, **hit._asdict()}, ensure_ascii=False))
        else:
            about = ", ".join(x for x in (hit.when(), hit.place, hit.camera) if x)
            print(f"{rank:>3}  {hit.score:.3f}  {hit.path}  {hit.caption}" + (f"  ({about})" if about else ""))


def _people(engine, args: argparse.Namespace) -> None:
    """`t2i people`: list them (id, name, photos, a face's thumbnail), or name, merge, forget, regroup."""
    from .data.images import ImageError

    values = args.values
    if args.action == "name":
        engine.name_person(int(values[0]), values[1])
        print(f"person {values[0]} is {values[1]!r}")
    elif args.action == "merge":
        engine.merge_people(int(values[0]), int(values[1]))
        print(f"person {values[0]} merged into {values[1]}")
    elif args.action == "faces":
        paths = engine.store.paths()
        for face in engine.faces_of(int(values[0])):
            shown = {"id": face.id, "photo": paths.get(face.photo_id, ""), "box": list(face.box), "score": face.score}
            if args.json:
                print(json.dumps(shown, ensure_ascii=False))
            else:
                print(f"{face.id:>20}  {face.score:.3f}  {shown['box']}  {shown['photo']}")
    elif args.action == "remove-face":
        print(f"face {values[0]} is person {engine.remove_face(int(values[0]))} now")
    elif args.action == "forget":
        print(f"forgot person {values[0]}: {engine.forget_person(int(values[0]))} faces deleted")
    elif args.action == "regroup":
        print(f"{engine.regroup_people()} people")
    else:
        for person in engine.people():
            try:
                thumbnail = str(engine.face_thumbnail(person))
            except ImageError:
                thumbnail = ""
            shown = {"id": person.id, "name": person.name, "photos": person.photos, "faces": person.faces}
            if args.json:
                print(json.dumps({**shown, "thumbnail": thumbnail}, ensure_ascii=False))
            else:
                print(f"{person.id:>5}  {person.name or '-':<20}  {person.photos:>5} photos  {thumbnail}")


def _moved(done: int, total: int) -> None:
    print(f"\rmoving: {done}/{total} rows", end="", file=sys.stderr, flush=True)
    if done >= total:
        print(file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `t2i`; returns the exit status (errors are printed as one line, not a traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "search" and args.query is not None and args.image is not None:
        parser.error("search takes a text query or --image PATH (one of them)")
    if args.command == "people":
        wanted = PEOPLE_ACTIONS[args.action].split()
        ids = [v for v, w in zip(args.values, wanted) if w.endswith("ID")]
        if len(args.values) != len(wanted) or not all(v.lstrip("-").isdigit() for v in ids):
            takes = PEOPLE_ACTIONS[args.action] or "nothing more"
            parser.error(f"people {args.action} takes {takes} (IDs are numbers)")
    if args.command == "index" and args.ray_address and args.engine != "ray":
        parser.error("--ray-address is for --engine ray")
    if args.command == "eval":
        from .measure.evaluate import run_eval

        return run_eval(args)
    from pymilvus.exceptions import MilvusException

    from .data.datasets import DatasetError, fetch_tuxpaint, tuxpaint_csv
    from .store.connection import read_meta
    from .store.image_store import StoreError
    from .store.move import move_hint

    try:
        if args.command == "serve":
            from .serve.server import run_serve

            return run_serve(args)
        if args.command == "data":
            print(fetch_tuxpaint(deb=args.deb))
            return 0
        if args.command == "move":
            from .store.move import move_collection

            config = _config(args)
            done = move_collection(config, args.encoder or MULTILINGUAL_ENCODER, progress=_moved)
            print(
                f"moved {done.moved} rows ({done.recovered} with classes recovered from their vectors) to "
                f"{done.target}: {done.rows} rows, no photo read, {done.seconds:.1f} s",
            )
            return 0
        from .engine import SearchEngine

        if args.command == "index":
            source = tuxpaint_csv() if args.source == "bundled" else args.source
            config = _config(args, batch_size=args.batch_size)
            if args.engine == "ray":
                from .pipelines.distributed import check_ray_ready

                check_ray_ready(config)  # before the encoder loads: no Ray, or milvus-lite, is refused at once
            meta = None if args.reset else read_meta(config)
            if meta and args.encoder is None and config.encoder == DEFAULT_ENCODER:  # as it is, until it moves
                config = config.with_(encoder=meta.get("encoder_spec", meta["encoder"]))
            engine = SearchEngine.open(config, reset=args.reset)
            report = engine.index(
                source, sync=args.sync, verify=args.verify, engine=args.engine, ray_address=args.ray_address
            )
            for skipped in report.skipped:
                print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
            if args.ocr:
                read = engine.read_text(source)
                for skipped in read.skipped:
                    print(f"text not read in {skipped.path}: {skipped.reason}", file=sys.stderr)
                print(read.summary(), file=sys.stderr)
            if args.faces:
                found = engine.read_faces(source)
                for skipped in found.skipped:
                    print(f"faces not read in {skipped.path}: {skipped.reason}", file=sys.stderr)
                print(found.summary(), file=sys.stderr)
            print(f"{report.summary()}; {report.throughput()}")
        elif args.command == "search":
            engine = SearchEngine.open_index(_config(args), encoder=args.encoder)
            _search(engine, args)
            from .models.multilingual import surely_not_english  # said to a query in another language only

            hint = move_hint(engine.store.meta)
            if hint and args.query and surely_not_english(args.query):
                print(f"note: {hint}", file=sys.stderr)
        elif args.command == "people":
            engine = SearchEngine.open_index(_config(args), encoder=args.encoder)
            _people(engine, args)
        else:
            engine = SearchEngine.open_index(_config(args), encoder=args.encoder)
            for key, value in engine.info().items():
                print(f"{key}: {value}")
        engine.close()
    except (DatasetError, StoreError, MilvusException, ValueError, ImportError, RuntimeError) as err:
        print(f"t2i: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
