"""An interactive search box for notebooks, from standard ipywidgets only (taught in notebook 01).

Type a query and press Enter (or click Search): the best images appear as thumbnails with rank, score and
caption, among the photos of the person chosen in the people dropdown if any (notebook 07); each has a "more
like this" button that searches with that image instead of text. Works in
Jupyter Notebook, JupyterLab and VS Code (ipywidgets 8), and can be driven from code, as the tests do.

Example:
    >>> box = search_box(engine)              # show it: make `box` the last line of a cell
    >>> box.query.value = "a red kangaroo"    # same as typing it and pressing Enter
    >>> [hit.caption for hit in box.hits][:2]
"""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as widgets
import numpy as np

from ..data.images import ImageError, encode_jpeg
from ..engine import EngineClosedError, SearchEngine
from ..store.filters import Filters
from ..store.image_store import Hit

ALL_CATEGORIES = ""  # the dropdown value that means "no filter"


def thumbnail(engine: SearchEngine, hit: Hit) -> bytes:
    """The JPEG thumbnail of a hit from the engine's cache; a grey tile if its file cannot be read any more."""
    try:
        return engine.thumbnail(hit).read_bytes()
    except (ImageError, OSError):  # e.g. the file was deleted after it was indexed
        return encode_jpeg(np.full((8, 8, 3), 200, np.uint8))


class SearchBox(widgets.VBox):
    """A query box, a top-k slider, a category filter, a message area and a grid of results.

    Build it with `search_box(engine)`. Its parts are attributes, so code can drive it:

    Attributes:
        query: `Text`; a new value (Enter, or leaving the box) runs the search.
        top_k: `IntSlider`, how many results.
        category: `Dropdown` of the collection's categories ("" = all), or None when there are none.
        button: the Search `Button`.
        output: `Output` area with one line about the results, or the error message.
        results: `GridBox` of result cards (thumbnail, caption, "more like this").
        hits: the `Hit`s shown, best first.
        more_buttons: one "more like this" `Button` per hit, in the same order.
        after, before, place, camera, text: `Text` filters (date range, place, camera, text in the photo;
            notebook 06); literal: `Checkbox`, search the query's words as they are (no filters read from it).
        person: `Dropdown` of the named people ("" = anyone; notebook 07), or None when no one is named.
        applied: the filters the last search applied, by name (shown in the output area).
    """

    def __init__(
        self, engine: SearchEngine, top_k: int | None = None, max_top_k: int = 20, columns: int = 5, size: int = 128
    ) -> None:
        self.engine, self.size = engine, size
        self.hits: list[Hit] = []
        self.more_buttons: list[widgets.Button] = []
        self.applied: dict[str, str] = {}
        self._repeat: Callable[[], None] | None = None  # re-runs the last search when top_k or category change
        top_k = min(top_k or engine.config.top_k, max_top_k)
        self.query = widgets.Text(
            placeholder="describe the picture, e.g. a fire truck", continuous_update=False, description="Query"
        )
        self.button = widgets.Button(description="Search", button_style="primary", icon="search")
        self.top_k = widgets.IntSlider(value=top_k, min=1, max=max_top_k, description="top k", continuous_update=False)
        categories = engine.store.categories()
        self.category = (
            widgets.Dropdown(
                options=[("all categories", ALL_CATEGORIES), *((c, c) for c in categories)], description="Category"
            )
            if categories
            else None
        )
        self.output = widgets.Output()
        self.results = widgets.GridBox(
            layout=widgets.Layout(grid_template_columns=f"repeat({columns}, {size + 32}px)", grid_gap="8px")
        )
        self.query.observe(lambda change: self.search(), names="value")
        self.button.on_click(lambda _: self.search())
        self.top_k.observe(self._changed, names="value")
        controls = [self.query, self.button, self.top_k]
        if self.category is not None:
            self.category.observe(self._changed, names="value")
            controls.append(self.category)
        hints = {"after": "YYYY, YYYY-MM, YYYY-MM-DD", "before": "e.g. 2022-06", "place": "city, region, country",
                 "camera": "make or model", "text": "text in the photo"}  # fmt: skip
        for name, hint in hints.items():
            setattr(self, name, widgets.Text(placeholder=hint, description=name, continuous_update=False))
        self.literal = widgets.Checkbox(description="search my words as they are")
        faces = engine.store.faces.exists()
        named = sorted({p.name for p in engine.people() if p.name}, key=str.casefold) if faces else []
        self.person = (
            widgets.Dropdown(options=[("anyone", ""), *((n, n) for n in named)], description="Person")
            if named
            else None
        )
        filters = [getattr(self, name) for name in hints]
        people = [self.person] if self.person is not None else []
        for box in [*filters, self.literal, *people]:  # a changed filter runs the last search again
            box.observe(self._changed, names="value")
        super().__init__(
            [
                widgets.HBox(controls[:2]),
                widgets.HBox(controls[2:]),
                widgets.HBox(filters[:3]),
                widgets.HBox([*filters[3:], self.literal, *people]),
                self.output,
                self.results,
            ]
        )

    def filters(self) -> Filters:
        """The filters typed in the boxes (raises ValueError, shown as the message, for a date that is not one)."""
        person = self.person.value if self.person is not None else None
        return Filters(
            self.after.value, self.before.value, self.place.value, self.camera.value, self.text.value, person
        )

    @property
    def message(self) -> str:
        """The text shown in the output area ("" when empty)."""
        return "".join(o.get("data", {}).get("text/plain", o.get("text", "")) for o in self.output.outputs)

    def _say(self, text: str, error: bool = False) -> None:
        style = "color:#b00020" if error else "color:#555"
        self.output.outputs = (
            {
                "output_type": "display_data",
                "data": {"text/plain": text, "text/html": f'<div style="{style}">{html.escape(text)}</div>'},
                "metadata": {},
            },
        )

    def _filter(self) -> str | None:
        return (self.category.value or None) if self.category is not None else None

    def _changed(self, change: dict) -> None:
        if self._repeat is not None:
            self._guard(self._repeat)

    def search(self) -> list[Hit]:
        """Search for the text in `query` among the photos that pass the filters and show the hits (or a message
        saying what is wrong); places, dates and quoted words in the query filter too, unless `literal`."""
        text = self.query.value

        def run() -> None:  # ValueError for an empty query without filters, or a date that is not one
            found = self.engine.find(text, self.filters(), self.top_k.value, self._filter(), self.literal.value)
            self.applied = {k: v + (" (read from the query)" if k in found.understood else "")
                            for k, v in found.filters.applied().items()}  # fmt: skip
            self._show(found.hits, f"“{found.text}”" if found.text else "the newest photos", found.notice)
            self._repeat = run

        self._guard(run)
        return self.hits

    def more_like_this(self, hit: Hit) -> list[Hit]:
        """Search with `hit`'s image instead of text (image -> image) and show the hits."""

        def run() -> None:
            filters = self.filters()
            hits = self.engine.search_image(hit.path, self.top_k.value, self._filter(), filters)
            self.applied = filters.applied()
            self._show(hits, f"images like “{hit.caption or hit.label}”")
            self._repeat = run

        self._guard(run)
        return self.hits

    def _guard(self, run: Callable[[], None]) -> None:
        """Run a search; any failure becomes a message in the output area, never a traceback."""
        self.button.disabled = True
        try:
            run()
        except Exception as err:
            if isinstance(err, EngineClosedError):  # e.g. after "Run All": the last cell closes the engine
                text = (
                    "the search engine was closed (engine.close(), the notebook's last cell): run the cell that "
                    "opens it (engine = SearchEngine.open(...)) again, then this search box's cell"
                )
            elif isinstance(err, ImageError):
                text = f"cannot read that image: {err}"
            elif isinstance(err, ValueError):  # what the user can fix: an empty or huge query
                text = str(err)
            else:  # a widget callback's traceback would go to a log nobody reads
                text = f"the search failed: {(str(err).strip() or type(err).__name__).splitlines()[0]}"
            self._repeat = None
            self._say(text, error=True)
            self._set_hits([])
        finally:
            self.button.disabled = False

    def _show(self, hits: list[Hit], what: str, notice: str | None = None) -> None:
        where = f" in {self._filter()}" if self._filter() else ""
        if self.applied:
            where += "; filters: " + ", ".join(f"{k} {v}" for k, v in self.applied.items())
        if hits:
            self._say(f"top {len(hits)} for {what}{where}" + (f"; {notice}" if notice else ""))
        else:
            self._say(f"nothing found for {what}{where}: is anything indexed? (engine.info())", error=True)
        self._set_hits(hits)

    def _set_hits(self, hits: list[Hit]) -> None:
        self.hits = list(hits)
        self.more_buttons = [widgets.Button(description="more like this", icon="images") for _ in self.hits]
        cards = []
        for rank, (hit, more) in enumerate(zip(self.hits, self.more_buttons), start=1):
            more.on_click(lambda _, hit=hit: self.more_like_this(hit))
            more.layout.width = f"{self.size + 24}px"
            caption = widgets.HTML(
                f"<b>{rank}.</b> {hit.score:.3f}<br>{html.escape(hit.caption or '(no caption)')}"
                f"<br><small>{html.escape(hit.label)}</small>",
                layout=widgets.Layout(width=f"{self.size + 24}px"),
            )
            picture = widgets.Image(value=thumbnail(self.engine, hit), format="jpeg", width=self.size, height=self.size)
            picture.layout.object_fit = "contain"
            cards.append(widgets.VBox([picture, caption, more]))
        old, self.results.children = self.results.children, cards
        for card in old:  # release the replaced widgets in the kernel and the browser
            for part in card.children:
                part.close()
            card.close()


def search_box(
    engine: SearchEngine, top_k: int | None = None, max_top_k: int = 20, columns: int = 5, size: int = 128
) -> SearchBox:
    """An interactive text-to-image search box over `engine` (notebook 01).

    Args:
        engine: an open `SearchEngine` with images indexed.
        top_k: results shown at first (the slider changes it); `engine.config.top_k` if None.
        max_top_k: the slider's maximum.
        columns: result cards per row.
        size: thumbnail size in pixels (longer side).

    Returns:
        The `SearchBox` widget; display it by making it a cell's last line.

    Example:
        >>> box = search_box(engine, top_k=8)
        >>> box.query.value = "a fire truck"
        >>> box.more_buttons[0].click()          # images like the first hit
    """
    return SearchBox(engine, top_k=top_k, max_top_k=max_top_k, columns=columns, size=size)
