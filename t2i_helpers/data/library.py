"""A generated phone-style photo library with known dates, places, cameras and printed words (notebook 06).

Photos are made from images that ship inside installed packages (matplotlib's, scikit-learn's and Gradio's
sample photos as busy backgrounds, the bundled Tux Paint cut-outs pasted on them when they were fetched) and
written as JPEGs with the EXIF a phone or camera writes: DateTimeOriginal (with OffsetTimeOriginal from the
phone, without from the camera), Make/Model, GPS of a few real cities in all four hemispheres; some photos carry
no EXIF at all. A share of them are photos of printed text: shop signs, receipts and screenshots, drawn in several
fonts and sizes, slightly rotated, on busy backgrounds. `generate_library` returns the ground truth.

Example:
    >>> truth = generate_library("data/library", photos=300)
    >>> truth[truth.city == "Lisbon"].file.tolist()   # the photos taken in Lisbon
"""

from __future__ import annotations

import importlib.util
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from .datasets import DatasetError, load_bundled
from .exif import DATE_TAKEN, EXIF_IFD, GPS_IFD, MAKE, MODEL, OFFSET_TAKEN

COLUMNS = ["file", "kind", "taken_at", "lat", "lon", "city", "country", "make", "model", "words", "caption"]


class City(NamedTuple):
    """A place photos are taken in, with the UTC offset its phone writes."""

    name: str
    country: str
    lat: float
    lon: float
    offset: str


# Real city centres, all four hemispheres (north/south of the equator, east/west of Greenwich).
CITIES = (
    City("Lisbon", "Portugal", 38.7167, -9.1333, "+00:00"),
    City("Tokyo", "Japan", 35.6895, 139.6917, "+09:00"),
    City("Sydney", "Australia", -33.8678, 151.2073, "+10:00"),
    City("Buenos Aires", "Argentina", -34.6131, -58.3772, "-03:00"),
    City("Cape Town", "South Africa", -33.9258, 18.4232, "+02:00"),
    City("Reykjavik", "Iceland", 64.1355, -21.8954, "+00:00"),
)
# Two cameras: the phone writes GPS and the time offset, the older camera neither (as such cameras do).
PHONE, CAMERA = ("Apple", "iPhone 13"), ("Canon", "Canon EOS 80D")
# Words printed on signs, receipts and screenshots: each is printed on one photo only.
WORDS = (
    "GELATERIA PHARMACY BAKERY PIZZERIA BOOKSHOP FLORIST BARBER TAVERNA BISTRO CINEMA MUSEUM LIBRARY "
    "HARDWARE LAUNDRY JEWELLER OPTICIAN BUTCHER FISHMONGER CHEMIST TOBACCO SOUVENIRS BOUTIQUE HOSTEL "
    "PASTELARIA SUSHI RAMEN NOODLES DUMPLINGS TEAHOUSE BREWERY WINERY CIDER ESPRESSO CAPPUCCINO CROISSANT "
    "BAGUETTE PRETZEL WAFFLES PANCAKES LEMONADE SMOOTHIE YOGURT AVOCADO MANGO PAPAYA COCONUT PINEAPPLE "
    "HARBOUR LIGHTHOUSE STATION PLATFORM TERMINAL GALLERY THEATRE STADIUM MARKET BAZAAR GARAGE PARKING "
    "TICKETS ENTRANCE EXIT PHARMACIE APOTHEKE FARMACIA PANADERIA CARNICERIA LIBRERIA HELADERIA "
    "BOARDING INVOICE REFUND MEETING BIRTHDAY WEDDING ALBUM PLAYLIST WEATHER CALENDAR REMINDER "
    "TRATTORIA OSTERIA CANTINA TAQUERIA BURRITO NACHOS CHURROS PAELLA TAPAS SANGRIA GOULASH STRUDEL "
    "BRATWURST SCHNITZEL FONDUE RACLETTE CREPERIE PATISSERIE CHOCOLATIER CONFECTIONERY DELICATESSEN "
    "GROCERY SUPERMARKET DRUGSTORE STATIONERY POSTOFFICE BANK EXCHANGE PAWNSHOP TAILOR COBBLER LOCKSMITH "
    "VETERINARY DENTIST CLINIC HOSPITAL SCHOOL KINDERGARTEN UNIVERSITY CHAPEL CATHEDRAL MONASTERY CASTLE "
    "PALACE FORTRESS AQUARIUM PLANETARIUM OBSERVATORY BOTANICAL ZOOLOGICAL CAROUSEL ARCADE BOWLING "
    "KARAOKE DISCOTHEQUE JAZZCLUB OPERA BALLET CONCERT FESTIVAL CARNIVAL PARADE REGATTA MARATHON "
    "CHECKOUT PASSWORD DOWNLOAD UPDATE BATTERY CHARGER WIRELESS BLUETOOTH"
).split()
# Package files used as photos (whichever are installed; matplotlib's ships with the course's core dependencies).
BACKGROUNDS = (
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("gradio", "media_assets/images/tower.jpg"),
    ("gradio", "media_assets/images/cheetah.jpg"),
    ("gradio", "test_data/cheetah2.jpg"),
)
FONTS = (
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSans.ttf",
    "DejaVuSerif.ttf",
    "STIXGeneralBol.ttf",
)
FIRST_DAY, DAYS = datetime(2019, 1, 1), 6 * 365


def package_file(package: str, relative: str) -> Path | None:
    """A file inside an installed package (found without importing it), or None."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def backgrounds() -> list[Image.Image]:
    """The sample photos of the installed packages, as RGB images."""
    found = [package_file(package, relative) for package, relative in BACKGROUNDS]
    images = [Image.open(path).convert("RGB") for path in found if path]
    if not images:
        raise DatasetError("no package sample photo found: install matplotlib (a core dependency)")
    return images


def fonts() -> list[Path]:
    """TrueType fonts that ship with matplotlib."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [folder / name for name in FONTS if (folder / name).is_file()]


def _stamps(data_dir: str | Path | None) -> pd.DataFrame:
    """The bundled cut-outs with their captions, or an empty frame where they were not fetched."""
    try:
        return load_bundled(data_dir)
    except DatasetError:
        return pd.DataFrame(columns=["path", "caption"])


def _scene(rng: random.Random, sources: list[Image.Image], size: tuple[int, int]) -> Image.Image:
    """A random crop of a sample photo, flipped and tinted at random, at `size`."""
    source = rng.choice(sources)
    w, h = source.size
    scale = rng.uniform(0.55, 1.0)
    cw, ch = int(w * scale), int(w * scale * size[1] / size[0])
    if ch > h:
        ch, cw = int(h * scale), int(h * scale * size[0] / size[1])
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    scene = source.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        scene = scene.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    tint = np.array([rng.uniform(0.8, 1.2) for _ in range(3)], dtype=np.float32)
    return Image.fromarray(np.clip(np.asarray(scene, dtype=np.float32) * tint, 0, 255).astype(np.uint8))


def _paste(scene: Image.Image, piece: Image.Image, rng: random.Random, angle: float) -> None:
    """Paste `piece` (with its transparency), rotated by `angle` degrees, somewhere inside `scene`."""
    piece = piece.convert("RGBA").rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)
    x = rng.randint(0, max(0, scene.width - piece.width))
    y = rng.randint(0, max(0, scene.height - piece.height))
    scene.paste(piece, (x, y), piece)


def _fit(piece: Image.Image, width: int, height: int, grow: bool = False) -> Image.Image:
    """`piece` shrunk (or grown, with `grow`) to fit inside width x height."""
    scale = min(width / piece.width, height / piece.height)
    if scale < 1.0 or grow:
        piece = piece.resize((int(piece.width * scale), int(piece.height * scale)), Image.Resampling.LANCZOS)
    return piece


def _text_block(lines: list[tuple[str, ImageFont.FreeTypeFont]], ink: tuple, paper: tuple, pad: int) -> Image.Image:
    """Lines of text, each in its own font, on a plain rectangle."""
    boxes = [font.getbbox(text) for text, font in lines]
    width = max(box[2] for box in boxes) + 2 * pad
    height = sum(box[3] for box in boxes) + pad * (len(lines) + 1)
    block = Image.new("RGBA", (width, height), (*paper, 255))
    draw, y = ImageDraw.Draw(block), pad
    for (text, font), box in zip(lines, boxes):
        draw.text((pad, y), text, font=font, fill=ink)
        y += box[3] + pad
    return block


def _sign(words: list[str], rng: random.Random, faces: list[Path], size: tuple[int, int]) -> Image.Image:
    """A shop sign: one or two words in large letters (two words sometimes run together, as on real signs)."""
    font = ImageFont.truetype(str(rng.choice(faces)), int(size[1] * rng.uniform(0.06, 0.12)))
    text = (" " if rng.random() < 0.7 else "").join(words)
    colours = [((255, 255, 255), (150, 20, 30)), ((20, 20, 20), (240, 210, 60)), ((250, 250, 240), (20, 60, 120))]
    ink, paper = rng.choice(colours)
    return _text_block([(text, font)], ink, paper, pad=int(font.size * 0.5))


def _receipt(words: list[str], rng: random.Random, faces: list[Path], size: tuple[int, int]) -> Image.Image:
    """A shop receipt: the shop's name, one item line per further word with a price, and a total."""
    face = rng.choice(faces)
    big = ImageFont.truetype(str(face), int(size[1] * rng.uniform(0.045, 0.06)))
    small = ImageFont.truetype(str(face), int(size[1] * rng.uniform(0.028, 0.035)))
    prices = [rng.randint(100, 2000) / 100 for _ in words[1:]]
    lines = [(words[0], big)] + [(f"{word.lower()}  {price:6.2f}", small) for word, price in zip(words[1:], prices)]
    lines.append((f"total  {sum(prices):6.2f}", small))
    return _text_block(lines, (30, 30, 30), (248, 246, 236), pad=int(small.size * 0.6))


def _screenshot(words: list[str], rng: random.Random, faces: list[Path], size: tuple[int, int]) -> Image.Image:
    """A phone screenshot: a title bar and a message or two on a light screen (no camera, no place)."""
    width, height = size[1], size[0]  # portrait
    screen = Image.new("RGB", (width, height), (246, 246, 250))
    draw = ImageDraw.Draw(screen)
    face = rng.choice(faces)
    title = ImageFont.truetype(str(face), int(width * 0.06))
    body = ImageFont.truetype(str(face), int(width * 0.04))
    draw.rectangle((0, 0, width, int(height * 0.1)), fill=(40, 110, 220))
    draw.text((int(width * 0.05), int(height * 0.03)), words[0].capitalize(), font=title, fill=(255, 255, 255))
    y, left, right = int(height * 0.15), int(width * 0.05), int(width * 0.9)
    for word in words[1:]:
        draw.rounded_rectangle((left, y, right, y + int(height * 0.08)), 20, fill=(225, 230, 240))
        message = f"{word.capitalize()} at 10:30"
        draw.text((int(width * 0.08), y + int(height * 0.02)), message, font=body, fill=(20, 20, 20))
        y += int(height * 0.12)
    return screen


def photo_exif(taken: datetime | None, camera: tuple[str, str] | None, city: City | None) -> Image.Exif:
    """The EXIF a phone (date with offset, GPS) or a camera (date, no offset) writes (also used by benchmarks)."""
    exif = Image.Exif()
    if camera:
        exif[MAKE], exif[MODEL] = camera
    if taken:
        exif.get_ifd(EXIF_IFD)[DATE_TAKEN] = taken.strftime("%Y:%m:%d %H:%M:%S")
        if camera == PHONE and city:
            exif.get_ifd(EXIF_IFD)[OFFSET_TAKEN] = city.offset
    if city:
        gps = exif.get_ifd(GPS_IFD)
        gps[1], gps[2] = ("N" if city.lat >= 0 else "S"), _dms(city.lat)
        gps[3], gps[4] = ("E" if city.lon >= 0 else "W"), _dms(city.lon)
    return exif


def _dms(value: float) -> tuple[float, float, float]:
    """Degrees as EXIF's (degrees, minutes, seconds)."""
    value = abs(value)
    degrees, minutes = int(value), int(value * 60) % 60
    return float(degrees), float(minutes), round((value * 3600) % 60, 2)


def _metadata(kind: str, rng: random.Random) -> tuple[datetime | None, tuple[str, str] | None, City | None]:
    """Date, camera and place of one photo: some photos have no EXIF, screenshots have a date only."""
    taken = FIRST_DAY + timedelta(days=rng.randrange(DAYS), seconds=rng.randrange(8 * 3600, 22 * 3600))
    if kind == "screenshot":
        return taken, None, None
    if rng.random() < 0.12:
        return None, None, None
    camera = PHONE if rng.random() < 0.6 else CAMERA
    city = rng.choice(CITIES) if camera == PHONE or rng.random() < 0.5 else None
    return taken, camera, city


def generate_library(
    folder: str | Path,
    photos: int = 320,
    texts: int = 48,
    size: tuple[int, int] = (1600, 1200),
    seed: int = 0,
    data_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Write a phone-style library of JPEGs into `folder` and return its ground truth.

    Args:
        folder: where the JPEGs go (created).
        photos: how many photos in all.
        texts: how many of them are photos of printed text (signs, receipts, screenshots in 3:2:1).
        size: the photos' width and height in pixels (screenshots are portrait).
        seed: the same seed writes the same library.
        data_dir: where the bundled cut-outs live (pasted on the scenes when they were fetched).

    Returns:
        One row per photo: file (name in `folder`), kind, taken_at (ISO 8601 local time with its offset when
        the photo has one, missing without EXIF), lat, lon, city, country, make, model (EXIF Make and Model),
        words (the printed words, space-separated, each on this photo only), caption (the cut-out's or "").
    """
    if texts > photos or not 0 < photos:
        raise ValueError(f"a library needs 0 < texts <= photos, not texts={texts}, photos={photos}")
    rng, folder = random.Random(seed), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sources, faces, stamps = backgrounds(), fonts(), _stamps(data_dir)
    kinds = (["sign", "sign", "sign", "receipt", "receipt", "screenshot"] * texts)[:texts]
    kinds += ["photo"] * (photos - texts)
    rng.shuffle(kinds)
    vocabulary = iter(rng.sample(WORDS, len(WORDS)))
    per_kind = {"sign": (1, 2), "receipt": (2, 4), "screenshot": (2, 3)}
    rows = []
    for index, kind in enumerate(kinds):
        words, caption = [], ""
        if kind in per_kind:
            try:
                words = [next(vocabulary) for _ in range(rng.randint(*per_kind[kind]))]
            except StopIteration:
                raise ValueError(f"{texts} text photos need more than the {len(WORDS)} words known") from None
        if kind == "screenshot":
            image = _screenshot(words, rng, faces, size)
        else:
            image = _scene(rng, sources, size)
            if kind == "photo" and len(stamps):
                stamp = stamps.iloc[rng.randrange(len(stamps))]
                share = rng.uniform(0.4, 0.7)
                piece = _fit(Image.open(stamp.path), int(size[0] * share), int(size[1] * share), grow=True)
                _paste(image, piece, rng, 0.0)
                caption = str(stamp.caption)
            elif kind != "photo":
                draw = _sign if kind == "sign" else _receipt
                piece = _fit(draw(words, rng, faces, size), int(size[0] * 0.9), int(size[1] * 0.85))
                _paste(image, piece, rng, rng.uniform(-6, 6))
        taken, camera, city = _metadata(kind, rng)
        name = f"IMG_{index:04d}.jpg"
        image.convert("RGB").save(folder / name, "JPEG", quality=88, exif=photo_exif(taken, camera, city))
        offset = city.offset if taken and camera == PHONE and city else ""
        rows.append(
            {
                "file": name,
                "kind": kind,
                "taken_at": taken.isoformat() + offset if taken else None,
                "lat": city.lat if city else None,
                "lon": city.lon if city else None,
                "city": city.name if city else None,
                "country": city.country if city else None,
                "make": camera[0] if camera else None,
                "model": camera[1] if camera else None,
                "words": " ".join(words),
                "caption": caption,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)
