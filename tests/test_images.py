"""Photo files as phones make them: EXIF orientation, big JPEGs decoded at reduced scale, HEIC/AVIF, thumbnails."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from t2i_helpers.config import Config
from t2i_helpers.data.datasets import scan_folder
from t2i_helpers.data.images import (
    MAX_SIDE,
    ORIENTATION_TAG,
    ImageError,
    Thumbnails,
    content_id,
    decode_image,
    jpeg_scale,
    read_image,
    shrink,
    upright,
)
from t2i_helpers.engine import SearchEngine

# The stored pixels of a photo taken with EXIF orientation o are the upright photo turned by the inverse of o.
_STORED = {
    3: lambda a: np.rot90(a, 2),
    6: lambda a: np.rot90(a, 1),
    8: lambda a: np.rot90(a, -1),
}


def _photo(bundled, index: int = 0, width: int = 640) -> np.ndarray:
    """A real photo (a bundled stamp on white), scaled so that its longer side is `width` pixels."""
    image = read_image(bundled.path.iloc[index])[1]
    scale = width / max(image.shape[:2])
    return cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)), cv2.INTER_CUBIC)


def _jpeg(pixels: np.ndarray, orientation: int = 1, quality: int = 95) -> bytes:
    image, out = Image.fromarray(pixels), io.BytesIO()
    exif = image.getexif()
    if orientation != 1:
        exif[ORIENTATION_TAG] = orientation
    image.save(out, "JPEG", quality=quality, subsampling=0, exif=exif.tobytes())
    return out.getvalue()


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_an_exif_rotated_jpeg_decodes_to_its_upright_twin(bundled, orientation):
    twin = decode_image(_jpeg(_photo(bundled)[:480, :320]))  # sides a multiple of 16: JPEG blocks rotate exactly
    rotated = _jpeg(np.ascontiguousarray(_STORED[orientation](twin)), orientation)
    decoded = decode_image(rotated)
    assert decoded.shape == twin.shape
    assert np.abs(decoded.astype(int) - twin).mean() < 1.0  # the same pixels, up to JPEG rounding
    ignored = cv2.cvtColor(cv2.imdecode(np.frombuffer(rotated, np.uint8), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    assert ignored.shape != twin.shape or np.abs(ignored.astype(int) - twin).mean() > 20  # the tag mattered


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillows_exif_transpose(orientation):
    pixels = np.random.default_rng(orientation).integers(0, 255, (6, 10, 3), dtype=np.uint8)
    image, out = Image.fromarray(pixels), io.BytesIO()
    exif = image.getexif()
    exif[ORIENTATION_TAG] = orientation
    image.save(out, "PNG", exif=exif.tobytes())  # lossless: the pixels must match exactly
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(out.getvalue()))).convert("RGB"))
    np.testing.assert_array_equal(decode_image(out.getvalue()), expected)
    np.testing.assert_array_equal(upright(pixels, orientation), expected)


def test_an_exif_rotated_photo_embeds_like_its_upright_twin(bundled, encoder):
    upright_photo = decode_image(_jpeg(_photo(bundled, 3)))
    rotated = decode_image(_jpeg(np.ascontiguousarray(_STORED[6](upright_photo)), 6))
    sideways = np.ascontiguousarray(_STORED[6](upright_photo))
    a, b, c = encoder.encode_images([upright_photo, rotated, sideways])
    assert a @ b > 0.99 and a @ b > a @ c + 0.02


SCALES = [(4032, 3024, 260, 8), (4032, 3024, 400, 4), (1600, 1200, 260, 4), (1000, 750, 260, 2), (500, 400, 260, 1)]


@pytest.mark.parametrize(("width", "height", "min_side", "scale"), [*SCALES, (4032, 3024, None, 1)])
def test_jpeg_scale_is_the_smallest_that_covers_the_model_input(width, height, min_side, scale):
    assert jpeg_scale(width, height, min_side) == scale


def test_a_big_jpeg_is_decoded_reduced_upright_and_embeds_like_the_full_decode(bundled, encoder):
    data = _jpeg(np.ascontiguousarray(_STORED[6](_photo(bundled, 7, width=2816))), 6, quality=90)
    reduced, full = decode_image(data, min_side=260), decode_image(data)
    assert full.shape[0] > full.shape[1]  # portrait, as the EXIF tag says
    assert reduced.shape[:2] == (full.shape[0] // 8, full.shape[1] // 8)  # 1/8: the short side still >= 260
    assert min(reduced.shape[:2]) >= 260
    a, b = encoder.encode_images([shrink(full, MAX_SIDE), reduced])
    assert a @ b > 0.98


def test_png_and_small_images_are_decoded_as_before(bundled):
    """The bundled photos (PNG) decode to exactly the same pixels with or without a size hint."""
    for path in bundled.path.iloc[:20]:
        data = open(path, "rb").read()
        np.testing.assert_array_equal(decode_image(data, min_side=260), decode_image(data))


def test_heic_and_avif_are_listed_indexed_and_found(tmp_path, bundled, encoder):
    pytest.importorskip("pillow_heif")
    folder = tmp_path / "phone"
    folder.mkdir()
    for i, suffix in enumerate([".heic", ".HEIF", ".avif"]):
        Image.fromarray(_photo(bundled, 20 + i, 800)).save(folder / f"IMG_{i}{suffix}", quality=90)
    (folder / "broken.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    listed = sorted(p.rsplit("/", 1)[-1] for p in scan_folder(folder).path)
    assert listed == ["IMG_0.heic", "IMG_1.HEIF", "IMG_2.avif", "broken.heic"]
    engine = SearchEngine.open(Config(uri=str(tmp_path / "heic.db"), data_dir=tmp_path), encoder)
    report = engine.index(folder, progress=False)
    assert report.added == 3 and [s.path.rsplit("/", 1)[-1] for s in report.skipped] == ["broken.heic"]
    for path in sorted(folder.glob("IMG_*")):
        assert engine.search_image(path, top_k=1)[0].path == str(path)
    engine.close()


def test_thumbnails_exist_for_every_indexed_image_within_the_size(tmp_path, bundled, encoder):
    folder = tmp_path / "photos"
    folder.mkdir()
    portrait = cv2.resize(_photo(bundled, 5), (800, 1200))  # width, height
    (folder / "portrait.jpg").write_bytes(_jpeg(np.ascontiguousarray(_STORED[6](portrait)), 6))  # stored landscape
    for i in range(4):
        (folder / f"{i}.png").write_bytes(open(bundled.path.iloc[30 + i], "rb").read())
    config = Config(uri=str(tmp_path / "t.db"), data_dir=tmp_path, thumbnail_size=96)
    engine = SearchEngine.open(config, encoder)
    assert engine.index(folder, progress=False).added == 5
    thumbnails = Thumbnails(config.thumbnail_dir, 96)
    for image_id, path in engine.store.paths().items():
        with Image.open(thumbnails.path(image_id)) as thumb:
            assert max(thumb.size) <= 96 and thumb.format == "JPEG"
            if path.endswith("portrait.jpg"):
                assert thumb.size[1] > thumb.size[0]  # upright: EXIF applied
    engine.close()


def test_a_missing_thumbnail_is_made_on_first_use_and_a_changed_file_refused(tmp_path, bundled):
    path = tmp_path / "a.png"
    path.write_bytes(open(bundled.path.iloc[2], "rb").read())
    image_id = content_id(path.read_bytes())
    thumbnails = Thumbnails(tmp_path / "thumbs", 64)
    made = thumbnails.ensure(image_id, path)
    assert made == thumbnails.path(image_id) and max(Image.open(made).size) <= 64
    with pytest.raises(ImageError, match="changed after it was indexed"):
        thumbnails.ensure(image_id + 1, path)
