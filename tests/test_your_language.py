"""Search in your language: months and places as other languages write them, districts found by their city,
the text in photos without case or accents and in Chinese (issue 33)."""

from __future__ import annotations

import unicodedata

import pytest
from babel.dates import get_month_names

from t2i_helpers.config import Config
from t2i_helpers.data.exif import header_metadata
from t2i_helpers.data.places import LANGUAGES
from t2i_helpers.engine import SearchEngine
from t2i_helpers.measure.places import city_photos, largest_cities
from t2i_helpers.pipelines.understand import understand
from t2i_helpers.store.filters import Filters, text_key
from t2i_helpers.store.keywords import SPARSE_FIELD

from .photos import LISBON, write_photo

PLACES = {"lisbon", "portugal", "essen", "germany", "berlin", "turkey"}
JUNE_2022 = {"after": "2022-06", "before": "2022-06"}
CENTRAL_BERLIN = (52.5200, 13.4050)  # GeoNames' nearest place of 15,000 people or more: the district Mitte


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ("ein Hund am Strand in Lissabon im Juni 2022", "ein Hund am Strand"),
        ("un chien sur la plage à Lisbonne en juin 2022", "un chien sur la plage"),
        ("un perro en la playa en Lisboa junio de 2022", "un perro en la playa"),
        ("un cane sulla spiaggia vicino a Lisbona giugno 2022", "un cane sulla spiaggia"),
        ("um cão na praia em Lisboa junho de 2022", "um cão na praia"),
        ("een hond op het strand in Lissabon juni 2022", "een hond op het strand"),
        ("a dog on the beach in Lisbon june 2022", "a dog on the beach"),
    ],
)
def test_a_month_and_a_place_are_read_in_seven_languages(query, text):
    assert understand(query, PLACES) == (text, Filters(place="Lisbon", **JUNE_2022))


def test_every_cldr_month_name_and_abbreviation_is_read_with_or_without_its_accent():
    for language in LANGUAGES:
        for width in ("wide", "abbreviated"):
            for number, name in get_month_names(width, locale=language).items():
                bare = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
                for typed in {name, name.upper(), bare}:
                    read = understand(f"a photo {typed} 2021", set()).filters
                    assert (read.after, read.text) == (f"2021-{number:02d}", None), (language, typed)


def test_places_are_read_only_where_written_as_places_and_stored():
    assert understand("ein Foto vom Essen", PLACES) == ("ein Foto vom Essen", Filters())  # food, not the city
    assert understand("das Essen im Juni 2022", PLACES) == ("das Essen", Filters(**JUNE_2022))
    assert understand("ein Foto vom Essen in Essen", PLACES) == ("ein Foto vom Essen", Filters(place="Essen"))
    assert understand("Essen in Lissabon", PLACES) == ("Essen", Filters(place="Lisbon"))  # the place after "in"
    assert understand("Fotos aus Deutschland", PLACES).filters == Filters(place="Germany")  # CLDR's country name
    assert understand("photos près de Lisbonne", PLACES) == ("photos", Filters(place="Lisbon"))
    assert understand("a turkey on a farm", PLACES).filters == Filters()  # as before: an animal
    assert understand("the Lisbon tram", PLACES) == ("the tram", Filters(place="Lisbon"))
    assert understand("une photo à Paris", PLACES).filters == Filters()  # no photo taken there
    assert understand("a photo in Lissabon", {"berlin"}).filters == Filters()  # Lisbon is not stored


def test_the_fifty_largest_cities_find_their_photos_also_where_a_district_is_nearest():
    table = city_photos(largest_cities(50))  # each city's centre, and 3 km north, east, south and west of it
    centre = table[table.position == "centre"]
    assert len(centre) == 50 and centre.found.all(), centre[~centre.found]
    inside = table[table.same_country]  # 3 km south of Shenzhen is Hong Kong
    assert inside.found.all(), inside[~inside.found]
    assert (~inside.found_nearest).sum() >= 10  # districts named for the nearest place: the case this fixes


def test_a_photo_in_central_berlin_is_stored_with_its_city(tmp_path):
    stored = header_metadata(write_photo(tmp_path / "mitte.jpg", 1, gps=CENTRAL_BERLIN), mtime_ns=0)
    assert stored["place"] == "Mitte, Berlin, State of Berlin, Germany"
    assert stored["place_keys"] == ["berlin", "germany", "mitte", "state of berlin"]


@pytest.fixture(scope="module")
def collection(tmp_path_factory, encoder):
    """A real milvus-lite collection: a photo in central Berlin, one in Lisbon, and three signs whose text is
    stored as the OCR pass stores it (one with the key rows stored before keys dropped accents hold)."""
    folder = tmp_path_factory.mktemp("photos")
    for seed, (name, gps) in enumerate({"berlin": CENTRAL_BERLIN, "lisbon": LISBON, **SIGNS}.items(), 1):
        write_photo(folder / f"{name}.jpg", seed, "2022:06:15 14:30:00", "+01:00", gps)
    engine = SearchEngine.open(Config(uri=str(tmp_path_factory.mktemp("milvus") / "languages.db")), encoder)
    engine.index(folder, progress=False)
    ids = {h.path.rsplit("/", 1)[-1].removesuffix(".jpg"): h.id for h in engine.store.newest(10)}
    engine.store.update({ids[name]: {"ocr_text": text} for name, text in SIGNS_READ.items()})
    store = engine.store
    old = dict(store.client.get(store.collection, ids=[ids["old_sign"]], output_fields=["*"])[0])
    old.pop(SPARSE_FIELD, None)  # Milvus fills the BM25 vector itself
    store.client.upsert(store.collection, [{**old, "ocr_key": "altebäckerei"}])  # as written before this change
    yield engine
    engine.close()


SIGNS = {"umlaut_sign": None, "plain_sign": None, "chinese_sign": None, "old_sign": None}
SIGNS_READ = {
    "umlaut_sign": "BÄCKEREI MÜLLER",
    "plain_sign": "BACKEREI",
    "chinese_sign": "新鲜面包店 营业中",  # "fresh bakery, open", no spaces between words
    "old_sign": "ALTE BÄCKEREI",
}


def _found(engine, query=None, **filters) -> set[str]:
    hits = engine.find(query, Filters(**filters) if filters else None, top_k=10).hits
    return {h.path.rsplit("/", 1)[-1].removesuffix(".jpg") for h in hits}


def test_a_photo_in_a_district_is_found_by_its_city_and_a_place_by_its_other_names(collection):
    assert _found(collection, place="Berlin") == _found(collection, place="Mitte") == {"berlin"}
    assert _found(collection, "a photo in Berlin") == {"berlin"}
    assert _found(collection, place="Deutschland") == {"berlin"}
    for name in ("Lissabon", "Lisbonne", "Lisboa", "lisbon"):
        assert _found(collection, place=name) == {"lisbon"}
        assert _found(collection, f"a photo in {name}") == {"lisbon"}
    found = collection.find("ein Foto in Lissabon im Juni 2022", top_k=10)
    assert found.understood == {"place": "Lisbon", **JUNE_2022} and found.text == "ein Foto"


def test_the_text_in_photos_matches_without_case_or_accents_and_in_chinese(collection):
    bakeries = {"umlaut_sign", "plain_sign", "old_sign"}
    assert _found(collection, text="bäckerei") == _found(collection, text="Bäckerei") == bakeries
    assert _found(collection, text="BACKEREI") == bakeries - {"old_sign"}  # its key kept the accent: see docs
    assert _found(collection, text="backerei muller") == {"umlaut_sign"}
    assert _found(collection, text="面包") == _found(collection, text="面 包 店") == {"chinese_sign"}
    assert _found(collection, "a photo", text="营业中") == {"chinese_sign"}
    assert text_key("ＢÄＣＫＥＲＥＩ") == "backerei" and text_key("ガ") == "ガ"  # a voicing mark is not an accent
    assert Filters(text='bäcker" or id > 0 or "').expression() == (
        '(ocr_key like "%backerorid0or%" or ocr_key like "%bäckerorid0or%")'
    )
