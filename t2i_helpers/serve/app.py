"""The web app: a Gradio page for text -> image and image -> image search (taught in notebook 04).

A query box, a top-k slider, a category filter, filters by date range, place, camera, text in the photo and person
(notebooks 06, 07), a strip of the named people's faces (click one: their photos), and a gallery of results with
rank, score and caption; upload a picture (or click a result) to see "more like this"; the index stats are shown
on top, the filters applied beside the results. The app makes no outbound connection: analytics and the version
check are off, the default theme uses local fonts, and it is mounted on our own FastAPI/uvicorn server (no
`launch()`, so no share tunnel either).

Example:
    >>> demo = create_app(engine)                       # a gr.Blocks
    >>> app = mount_app(FastAPI(), engine)              # the page at /ui, served by uvicorn
    $ t2i serve --ui                                    # the same from the shell: http://127.0.0.1:7860/ui/
"""

from __future__ import annotations

import functools
import io

import gradio as gr
from fastapi import FastAPI, HTTPException
from PIL import Image
from pymilvus.exceptions import MilvusException
from starlette.routing import Mount

from ..data.images import ImageError, read_bytes
from ..engine import SearchEngine
from ..explore.widgets import thumbnail
from ..store.filters import Filters
from ..store.image_store import Hit, StoreError
from .auth import SIGN_IN_MESSAGE, UI_PATH, SignedInStreams, sign_in
from .uploads import decode_upload

ALL_CATEGORIES = "all categories"


def stats_markdown(engine: SearchEngine) -> str:
    """One line about the index: how many images, which encoder, which collection, where."""
    info = engine.info()
    return (
        f"**{info['count']:,} images** in collection `{info['collection']}` · encoder `{info['encoder']}` "
        f"({info['dim']}-d, {info['index_type']} index, {info['metric']}) · Milvus `{info['uri']}`"
    )


def gallery_items(engine: SearchEngine, hits: list[Hit]) -> list[tuple[Image.Image, str]]:
    """Cached thumbnails with captions "rank. score · caption (label)" for a `gr.Gallery`."""
    return [
        (Image.open(io.BytesIO(thumbnail(engine, hit))), f"{rank}. {hit.score:.3f} · {hit.caption} ({hit.label})")
        for rank, hit in enumerate(hits, start=1)
    ]


def people_items(engine: SearchEngine) -> list[tuple[Image.Image, str]]:
    """The named people's faces, each captioned with its name, for the page's strip (most photos first; none until
    faces were read and someone was named; a face whose photo cannot be read is left out)."""
    if not engine.store.faces.exists():
        return []
    items = []
    for person in engine.people():
        if person.name:
            try:
                items.append((Image.open(engine.face_thumbnail(person)), person.name))
            except ImageError:
                continue
    return items


def applied_markdown(filters: Filters, understood: dict[str, str]) -> str:
    """The filters a search applied, those read from the query marked, e.g. " · filters: place Lisbon (read)"."""
    if not filters:
        return ""
    shown = [f"{k} *{v}*" + (" (read from the query)" if k in understood else "") for k, v in filters.applied().items()]
    return " · filters: " + ", ".join(shown)


def create_app(engine: SearchEngine, max_top_k: int = 24, max_upload_bytes: int = 10 << 20) -> gr.Blocks:
    """A Gradio search page over `engine` (notebook 04); results show the engine's cached thumbnails.

    Args:
        engine: an open `SearchEngine`; it is shared with any other handler in the process.
        max_top_k: the slider's maximum.
        max_upload_bytes: the largest picture accepted (also Gradio's upload limit in `mount_app`).

    Returns:
        The `gr.Blocks`; serve it with `mount_app` (or `t2i serve --ui`).

    Example:
        >>> demo = create_app(engine, max_top_k=12)
    """
    top_k = min(engine.config.top_k, max_top_k)

    def filter_of(category: str | None) -> str | None:
        return None if category in (None, "", ALL_CATEGORIES) else category

    def show(hits: list[Hit], what: str, category: str | None, notice: str | None = None, applied: str = ""):
        where = f" in *{category}*" if filter_of(category) else ""
        if not hits:
            return [], f"Nothing found for {what}{where}{applied}: is anything indexed?", []
        note = f" ({notice})" if notice else ""
        return gallery_items(engine, hits), f"Top {len(hits)} for {what}{where}{note}{applied}", hits

    def refused(message: str):
        return [], f"⚠️ {message}", []

    def answering(handler):
        """A handler whose store failures show as the status line, not as Gradio's bare "Error" toast."""

        @functools.wraps(handler)
        def run(*args):
            try:
                return handler(*args)
            except (StoreError, MilvusException) as err:
                return refused(f"the search failed: {err}")

        return run

    @answering
    def by_text(text: str, k: float, category: str | None, literal: bool, *when_where: str):
        try:  # empty, over-long, a date that is not one: say what to change
            found = engine.find(text, Filters(*when_where), int(k), filter_of(category), literal=literal)
        except ValueError as err:
            return refused(str(err))
        what = f"“{found.text}”" if found.text else "the newest photos"
        return show(found.hits, what, category, found.notice, applied_markdown(found.filters, found.understood))

    @answering
    def by_image(upload: str | None, k: float, category: str | None, literal: bool, *when_where: str):
        if upload is None:
            return refused("upload a picture first")
        try:  # the API's upload check: format from the header first, then a bounded decode
            _, image = decode_upload("the picture", read_bytes(upload, max_upload_bytes))
            chosen = Filters(*when_where)
            hits = engine.search_image(image, int(k), filter_of(category), chosen)
        except HTTPException as err:
            return refused(f"cannot use that picture: {err.detail}")
        except (ImageError, ValueError) as err:
            return refused(f"cannot use that picture or filter: {err}")
        return show(hits, "the uploaded picture", category, applied=applied_markdown(chosen, {}))

    @answering
    def more_like(
        shown: list[Hit],
        k: float,
        category: str | None,
        literal: bool,
        after: str,
        before: str,
        place: str,
        camera: str,
        text: str,
        person: str,
        event: gr.SelectData,
    ):
        hit = shown[event.index]
        try:
            chosen = Filters(after, before, place, camera, text, person)
            hits = engine.search_image(hit.path, int(k), filter_of(category), chosen)
        except (ImageError, ValueError) as err:  # the file was removed after it was indexed, or a bad filter
            return refused(f"cannot search like {hit.path}: {err}")
        return show(hits, f"pictures like “{hit.caption or hit.label}”", category, applied=applied_markdown(chosen, {}))

    def refresh():
        choices = [ALL_CATEGORIES, *engine.store.categories()]
        faces = people_items(engine)
        return (
            stats_markdown(engine),
            gr.Dropdown(choices=choices, value=ALL_CATEGORIES),
            gr.Gallery(value=faces, visible=bool(faces)),
            [name for _, name in faces],
        )

    def pick_person(names: list[str], event: gr.SelectData) -> str:
        return names[event.index]

    with gr.Blocks(title="t2i · text-to-image search", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# Text-to-image search\nDescribe a picture, or upload one to find more like it.")
        stats = gr.Markdown(elem_id="stats")
        with gr.Row(equal_height=True):
            query = gr.Textbox(
                label="Query", placeholder="describe the picture, e.g. a fire truck", scale=4, elem_id="query"
            )
            search = gr.Button("Search", variant="primary", scale=0, min_width=140, elem_id="search")
        with gr.Row():
            k = gr.Slider(1, max_top_k, value=top_k, step=1, label="top k", elem_id="top-k")
            category = gr.Dropdown([ALL_CATEGORIES], value=ALL_CATEGORIES, label="Category", elem_id="category")
        with gr.Accordion("When, where, which camera, words in the photo, who", open=False):
            with gr.Row():
                after = gr.Textbox(
                    label="Taken on or after", placeholder="YYYY, YYYY-MM or YYYY-MM-DD", elem_id="after"
                )
                before = gr.Textbox(label="Taken on or before", placeholder="e.g. 2022-06", elem_id="before")
                place = gr.Textbox(label="Place", placeholder="city, region or country", elem_id="place")
                camera = gr.Textbox(label="Camera", placeholder="make or model, e.g. canon", elem_id="camera")
                text = gr.Textbox(label="Text in photo", placeholder="e.g. gelateria", elem_id="text")
                person = gr.Textbox(label="Person", placeholder="a name, or several: Anna, Bob", elem_id="person")
            literal = gr.Checkbox(
                label="Search my words as they are (do not read places, dates or quoted words as filters)",
                elem_id="literal",
            )
        with gr.Accordion("More like this: search with a picture", open=False):
            upload = gr.Image(  # a file path: Gradio opens only its header, our check decodes it (bounded)
                label="Picture",
                type="filepath",
                image_mode=None,
                sources=["upload", "clipboard"],
                height=220,
                elem_id="picture",
            )
            by_picture = gr.Button("Find similar pictures", elem_id="search-image")
        people = gr.Gallery(
            label="People (click one to see their photos)",
            columns=12,
            height=140,
            object_fit="contain",
            allow_preview=False,
            visible=False,
            elem_id="people",
        )
        names = gr.State([])
        status = gr.Markdown(elem_id="status")
        gallery = gr.Gallery(
            label="Results (click one for more like it)",
            columns=6,
            height="auto",
            object_fit="contain",
            allow_preview=False,
            elem_id="results",
        )
        shown = gr.State([])
        outputs, options = [gallery, status, shown], [k, category, literal, after, before, place, camera, text, person]
        gr.on([query.submit, search.click], by_text, [query, *options], outputs)
        gr.on([upload.upload, by_picture.click], by_image, [upload, *options], outputs)
        gallery.select(more_like, [shown, *options], outputs)
        people.select(pick_person, names, person).then(by_text, [query, *options], outputs)
        demo.load(refresh, None, [stats, category, people, names])  # every page load: the index may have grown
    return demo


def mount_app(
    app: FastAPI,
    engine: SearchEngine,
    path: str = UI_PATH,
    max_upload_bytes: int = 10 << 20,
    api_key: str | None = None,
) -> FastAPI:
    """Mount the search page on a FastAPI app at `path` (the same server as the REST API).

    Args:
        app: the FastAPI application (e.g. from `t2i_helpers.serve.api.create_api`).
        engine: the open `SearchEngine` to search.
        path: where the page lives.
        max_upload_bytes: the largest picture the page accepts.
        api_key: if given, the page first asks for it (Gradio's sign-in form: any user name, the key as
            password) and every route of the page needs the session it opens (see `auth.py`).

    Returns:
        `app`, with the page mounted.

    Example:
        >>> app = mount_app(create_api(engine), engine)     # API at /, page at /ui
    """
    gr.mount_gradio_app(
        app,
        create_app(engine, max_upload_bytes=max_upload_bytes),
        path=path,
        footer_links=[],
        max_file_size=max_upload_bytes,
        ssr_mode=False,
        auth=sign_in(api_key) if api_key else None,
        auth_message=SIGN_IN_MESSAGE if api_key else None,
    )
    if api_key:  # Gradio's heartbeat stream does not ask for the sign-in: it needs the session here
        mount = next(route for route in app.routes if isinstance(route, Mount) and route.path == path)
        mount.app = SignedInStreams(mount.app)
    return app
