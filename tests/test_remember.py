"""Search by what people remember: time, place and camera from EXIF, filters in Milvus, queries that name them."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from t2i_helpers.cli import main
from t2i_helpers.config import Config
from t2i_helpers.data.exif import NO_OFFSET, header_metadata
from t2i_helpers.engine import SearchEngine
from t2i_helpers.pipelines.understand import understand
from t2i_helpers.store.filters import Filters, parse_day, text_key

from .conftest import index_counts
from .photos import write_library, write_photo

INJECTIONS = ['x" or id > 0 or "', 'x\\" or id > 0 or \\"', "x' or id > 0 or '", 'x") or (id > 0', "%", "_"]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return write_library(tmp_path_factory.mktemp("library"))


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, library, encoder):
    config = Config(uri=str(tmp_path_factory.mktemp("milvus") / "remember.db"))
    engine = SearchEngine.open(config, encoder)
    report = engine.index(next(iter(library.values())).parent, progress=False)
    assert report.summary() == "added 8, unchanged 0, updated 0, removed 0, skipped 0"
    yield engine
    engine.close()


def _names(hits) -> set[str]:
    return {hit.path.rsplit("/", 1)[-1].removesuffix(".jpg") for hit in hits}


def test_the_header_is_stored_as_fields_and_a_broken_one_leaves_nulls(indexed, library):
    by_name = {h.path.rsplit("/", 1)[-1]: h for h in indexed.store.newest(10)}
    assert by_name["lisbon.jpg"].taken_at == "2022-06-15T14:30:00+01:00"
    assert by_name["sydney.jpg"].taken_at == "2023-01-20T10:00:00"  # no offset in the photo: none made up
    assert by_name["rio.jpg"].taken_at == "2022-06-30T22:00:00-03:00"
    assert by_name["lisbon.jpg"].place == "Lisbon, Portugal" and by_name["lisbon.jpg"].camera == "Canon EOS R5"
    assert by_name["tokyo.jpg"].place == "Tokyo, Japan"
    assert by_name["sydney.jpg"].place == "Sydney, New South Wales, Australia"
    assert by_name["rio.jpg"].place == "Rio de Janeiro, Brazil" and by_name["rio.jpg"].camera == ""
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in indexed.store.get(h.id for h in by_name.values())}
    for name in ("no_exif.jpg", "bad_date.jpg", "broken.jpg"):  # the file's time, marked as such
        assert rows[name]["taken_from"] == "file" and by_name[name].place == ""
        assert by_name[name].taken_from == "file" and by_name[name].when() == f"file time {by_name[name].taken_at}"
    assert by_name["lisbon.jpg"].taken_from == "exif" and by_name["lisbon.jpg"].when() == "2022-06-15T14:30:00+01:00"
    assert rows["sydney.jpg"]["taken_offset"] == NO_OFFSET and rows["bad_date.jpg"]["camera"] == "Canon EOS R5"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (Filters(after="2022", before="2022"), {"lisbon", "tokyo", "rio"}),
        (Filters(after="2022-06", before="2022-06"), {"lisbon", "rio"}),
        (Filters(after="2022-06-30", before="2022-06-30"), {"rio"}),  # inclusive, in the photo's own time
        (Filters(before="2019-12-31"), {"lisbon_old"}),
        (Filters(after="2023"), {"sydney", "bad_date", "broken"}),  # without a date in EXIF: the file's, today
        (Filters(place="LISBON"), {"lisbon", "lisbon_old"}),
        (Filters(place="portugal"), {"lisbon", "lisbon_old"}),
        (Filters(place="New South Wales"), {"sydney"}),
        (Filters(place="Lisbon", after="2022"), {"lisbon"}),
        (Filters(camera="canon"), {"lisbon", "sydney", "bad_date"}),
        (Filters(camera="Pixel 7"), {"lisbon_old", "tokyo"}),
        (Filters(camera="google pixel 7", place="japan"), {"tokyo"}),
    ],
)
def test_filters_return_exactly_the_photos_that_match(indexed, filters, expected):
    found = indexed.find(None, filters, top_k=20)
    assert _names(found.hits) == expected and found.text is None
    vector = indexed.search("a photo", top_k=20, filters=filters)
    assert _names(vector) == expected


def test_filters_only_list_newest_first(indexed):
    hits = indexed.find(None, Filters(place="lisbon"), top_k=5).hits
    assert [h.taken_at[:4] for h in hits] == ["2022", "2019"]


@pytest.mark.parametrize("value", INJECTIONS)
def test_user_text_never_changes_the_meaning_of_an_expression(indexed, value):
    for filters in (Filters(place=value), Filters(camera=value), Filters(place=value, camera=value)):
        assert indexed.find("a photo", filters, top_k=20).hits == []
        assert indexed.find(None, filters, top_k=20).hits == []
    assert indexed.search("a photo", 20, category=value) == []


def test_bad_dates_and_empty_searches_are_one_sentence():
    for bad in ("2022-13", "22", "2022/06", "June", "0999", "2022-1", "2022-02-32"):
        with pytest.raises(ValueError, match="is not a date"):
            Filters(after=bad)
    assert parse_day("2023-02-30") == parse_day("2023-02", last=True)  # past the month's end: its last day
    with pytest.raises(ValueError, match="no letters or digits"):
        Filters(text='%"_')
    assert parse_day("2024-02", last=True).day == 29 and text_key("Fresh  Bakery!") == "freshbakery"


def test_names_are_matched_without_their_accents(tmp_path):
    photo = write_photo(tmp_path / "reykjavik.jpg", 1, "2021:03:02 10:00:00", gps=(64.1355, -21.8954))
    read = header_metadata(photo, mtime_ns=0)
    assert read["place"].startswith("Reykjavík") and "reykjavik" in read["place_keys"]  # shown as named
    places = set(read["place_keys"])
    for typed in ("Reykjavik", "Reykjavík", "REYKJAVÍK"):  # typed with or without the accent
        assert understand(f"the harbour in {typed}", places).filters == Filters(place=typed)
    assert Filters(place="Reykjavík").expression() == Filters(place="reykjavik").expression()


def test_the_query_names_places_dates_and_words_only_as_places_the_collection_has():
    places = {"lisbon", "portugal", "turkey", "rio de janeiro"}
    read = understand("a dog on the beach in Lisbon", places)
    assert read.text == "a dog on the beach" and read.filters == Filters(place="Lisbon")
    read = understand('the "gelateria" sign june 2022', places)
    assert read.text == "the sign" and read.filters == Filters(after="2022-06", before="2022-06", text="gelateria")
    assert understand("a street in 2019", places) == (("a street"), Filters(after="2019", before="2019"))
    assert understand("a turkey on a farm", places).filters == Filters()  # an animal, not a country
    assert understand("a market in turkey", places).filters == Filters(place="turkey")  # written as a place
    assert understand("a market in Rio de Janeiro", places).filters == Filters(place="Rio de Janeiro")
    assert understand("a dog in Paris", places) == ("a dog in Paris", Filters())  # no photo taken there


def test_find_applies_what_the_query_names_and_literal_turns_it_off(indexed):
    found = indexed.find("a photo in Tokyo", top_k=20)
    assert _names(found.hits) == {"tokyo"} and found.understood == {"place": "Tokyo"} and found.text == "a photo"
    found = indexed.find("Lisbon 2019", top_k=20)  # nothing left to embed: newest first
    assert _names(found.hits) == {"lisbon_old"} and found.text is None
    literal = indexed.find("a photo in Tokyo", top_k=20, literal=True)
    assert len(literal.hits) == 8 and literal.understood == {} and literal.text == "a photo in Tokyo"
    given = indexed.find("a photo in Tokyo", Filters(place="lisbon"), top_k=20)  # what is given wins
    assert _names(given.hits) == {"lisbon", "lisbon_old"} and given.understood == {}
    with pytest.raises(ValueError, match="query is empty"):
        indexed.find("   ")


def test_cli_search_with_filters_json_and_what_it_read(tmp_path, library, capsys):
    uri = str(tmp_path / "cli.db")
    folder = str(next(iter(library.values())).parent)
    assert main(["index", folder, "--uri", uri]) == 0
    capsys.readouterr()
    assert main(["search", "--place", "lisbon", "--after", "2022", "--json", "--uri", uri]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(h["rank"], h["place"], h["camera"], h["taken_at"]) for h in hits] == [
        (1, "Lisbon, Portugal", "Canon EOS R5", "2022-06-15T14:30:00+01:00")
    ]
    assert {"score", "path", "text"} <= set(hits[0])
    assert main(["search", "a photo taken in Japan", "--uri", uri, "-k", "3"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1 and "tokyo.jpg" in out and "read from the query: place 'Japan'" in err
    assert main(["search", "a photo taken in Japan", "--literal", "--uri", uri, "-k", "3"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3 and "read from the query" not in err
    assert main(["search", "a photo", "--literal", "--uri", uri, "-k", "8"]) == 0
    lines = {line.split()[2].rsplit("/", 1)[-1]: line for line in capsys.readouterr().out.splitlines()}
    assert "(file time 20" in lines["no_exif.jpg"] and "file time" not in lines["lisbon.jpg"]  # a file's mtime, said so
    assert main(["search", "--after", "2022-13", "--uri", uri]) == 1
    assert "is not a date" in capsys.readouterr().err
    assert main(["search", "--uri", uri]) == 1
    assert "query is empty" in capsys.readouterr().err


def test_search_image_takes_filters(indexed, library):
    hits = indexed.search_image(library["tokyo"], top_k=5, filters=Filters(camera="canon"))
    assert _names(hits) == {"lisbon", "sydney", "bad_date"}


def test_index_prints_counts_and_a_second_run_adds_nothing(tmp_path, library):
    uri = str(tmp_path / "twice.db")
    folder = str(next(iter(library.values())).parent)
    run = [sys.executable, "-m", "t2i_helpers.cli", "index", folder, "--uri", uri]
    first = subprocess.run(run, capture_output=True, text=True, timeout=300, check=True)
    assert index_counts(first.stdout) == "added 8, unchanged 0, updated 0, removed 0, skipped 0"
    second = subprocess.run(run, capture_output=True, text=True, timeout=300, check=True)
    assert index_counts(second.stdout) == "added 0, unchanged 8, updated 0, removed 0, skipped 0"


def test_api_search_takes_the_filters_and_says_which_it_applied(indexed, tmp_path):
    from t2i_helpers.serve.server import BackgroundServer, serve_app

    with BackgroundServer(serve_app(indexed, upload_dir=tmp_path / "uploads")) as server:
        answer = httpx.get(f"{server.url}/search", params={"place": "lisbon", "k": 5})
        assert answer.status_code == 200 and json.loads(answer.headers["T2I-Filters"]) == {"place": "lisbon"}
        assert [(h["place"], h["taken_at"]) for h in answer.json()] == [
            ("Lisbon, Portugal", "2022-06-15T14:30:00+01:00"),
            ("Lisbon, Portugal", "2019-12-31T23:59:59+00:00"),
        ]
        assert {"camera", "text"} <= set(answer.json()[0])
        read = httpx.get(f"{server.url}/search", params={"q": "a photo in Tokyo", "camera": "pixel 7"})
        assert [h["place"] for h in read.json()] == ["Tokyo, Japan"]
        assert json.loads(read.headers["T2I-Filters-Read"]) == {"place": "Tokyo"}
        assert json.loads(read.headers["T2I-Filters"]) == {"place": "Tokyo", "camera": "pixel 7"}
        literal = httpx.get(f"{server.url}/search", params={"q": "a photo in Tokyo", "literal": True, "k": 8})
        assert len(literal.json()) == 8 and json.loads(literal.headers["T2I-Filters-Read"]) == {}
        for value in INJECTIONS:
            assert httpx.get(f"{server.url}/search", params={"q": "a photo", "place": value}).json() == []
        bad = httpx.get(f"{server.url}/search", params={"after": "2022-13"})
        assert bad.status_code == 422
        newest = httpx.get(f"{server.url}/search", params={"k": 2})  # nothing asked: the newest photos
        assert newest.status_code == 200 and len(newest.json()) == 2


def test_the_widget_filters_by_date_place_camera_and_shows_what_it_applied(indexed):
    from t2i_helpers.explore.widgets import search_box

    box = search_box(indexed, top_k=10)
    box.place.value = "lisbon"
    box.search()  # no query: the newest photos taken there
    assert [h.path.rsplit("/", 1)[-1] for h in box.hits] == ["lisbon.jpg", "lisbon_old.jpg"]
    assert "newest photos" in box.message and "filters: place lisbon" in box.message
    box.after.value = "2022"  # a changed filter runs the search again
    assert [h.place for h in box.hits] == ["Lisbon, Portugal"]
    box.place.value, box.after.value = "", ""
    box.query.value = "a photo in Tokyo"
    assert [h.place for h in box.hits] == ["Tokyo, Japan"] and "place Tokyo (read from the query)" in box.message
    box.literal.value = True
    assert len(box.hits) == 8 and "filters" not in box.message
    box.camera.value = "canon"
    assert {h.camera for h in box.hits} == {"Canon EOS R5"} and "filters: camera canon" in box.message
    box.before.value = "2022-13"
    assert box.hits == [] and "is not a date" in box.message
