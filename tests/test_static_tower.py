"""The static text tower (model2vec, an option of the ConSE encoder): quality on the bundled photos, its cache."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from t2i_helpers.data.images import read_image
from t2i_helpers.engine import SearchEngine
from t2i_helpers.measure.finetune import caption_recall
from t2i_helpers.models import static_tower
from t2i_helpers.models.conse import ConSEEncoder
from t2i_helpers.models.encoders import load_encoder

model2vec = pytest.importorskip("model2vec", reason='the static text tower: pip install -e ".[static]"')


@pytest.fixture(scope="module")
def static():
    return load_encoder("conse-effnet-static-minilm")  # `t2i serve --encoder conse-effnet-static-minilm`


def test_static_text_tower_is_an_option_within_003_of_the_default(static, encoder, bundled):
    """Same image embeddings, faster queries; measured R@10 0.234 vs the default's 0.264 (docs/performance.md)."""
    assert (static.backend, static.text_backend, static.name) == (encoder.backend, "static", encoder.name)
    images = [read_image(p)[1] for p in bundled.path]
    image_embeddings = encoder.encode_images(images)
    np.testing.assert_allclose(static.encode_images(images[:4]), image_embeddings[:4], atol=1e-6)
    captions = list(bundled.caption)
    default = caption_recall(encoder.encode_texts(captions), image_embeddings, (10,))["R@10"]
    fast = caption_recall(static.encode_texts(captions), image_embeddings, (10,))["R@10"]
    assert fast >= 0.225 and default - fast <= 0.03, (default, fast)


def test_the_static_encoder_searches_a_collection_the_default_built(engine, bundled):
    """What `t2i serve --encoder conse-effnet-static-minilm` does with an index made by the default encoder."""
    fast = SearchEngine.open_index(engine.config, encoder="conse-effnet-static-minilm")
    try:
        assert fast.encoder.text_backend == "static" and fast.store.count() == engine.store.count()
        captions = list(bundled.caption[:40])
        found = [hits[0].caption for hits in fast.search_many(captions, top_k=10)]
        assert sum(f == c for f, c in zip(found, captions, strict=True)) >= 5  # the first hit is often the photo
    finally:
        fast.close()


def test_static_embeddings_are_normalized_and_do_not_depend_on_their_batch(static, bundled):
    texts = [*bundled.caption[:50], "red car", "RED CAR"]
    together = static.encode_texts(texts)
    assert together.shape == (len(texts), 384) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([static.encode_texts([t]) for t in texts]), together, atol=1e-6)
    np.testing.assert_allclose(together[-1], together[-2], atol=1e-6)  # MiniLM's word pieces are lower case


def test_static_is_a_text_backend_only():
    with pytest.raises(ValueError, match="backend must be one of"):
        ConSEEncoder(backend="static")


def _tiny(calls: list):
    """A build that saves a three-word table (red, car, unknown)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    def build(folder):
        calls.append(folder)
        tokenizer = Tokenizer(WordLevel({"[UNK]": 0, "red": 1, "car": 2}, unk_token="[UNK]"))
        tokenizer.pre_tokenizer = Whitespace()
        model2vec.StaticModel(np.eye(3, dtype=np.float32), tokenizer, normalize=True).save_pretrained(folder)

    return build


def test_a_table_is_built_once_then_taken_from_the_cache(tmp_path):
    calls = []
    model = static_tower.static_model(tmp_path, _tiny(calls), key="a")
    np.testing.assert_allclose(model.encode(["red car"]), [[0, 0.5**0.5, 0.5**0.5]], atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a current table is used without a word
        static_tower.static_model(tmp_path, _tiny(calls), key="a")
    assert len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["minilm-static-a"]  # no partial folders left


@pytest.mark.parametrize("damage", ["other sources", "truncated", "key missing"])
def test_a_stale_or_damaged_table_is_rebuilt_never_used(tmp_path, damage):
    calls = []
    static_tower.static_model(tmp_path, _tiny(calls), key="a")
    folder = tmp_path / "minilm-static-a"
    if damage == "other sources":  # e.g. copied over by hand
        (folder / "t2i_key").write_text("b")
    elif damage == "truncated":
        table = folder / "model.safetensors"
        table.write_bytes(table.read_bytes()[:20])
    else:
        (folder / "t2i_key").unlink()
    with pytest.warns(UserWarning, match="rebuilding it"):
        model = static_tower.static_model(tmp_path, _tiny(calls), key="a")
    assert len(calls) == 2
    np.testing.assert_allclose(model.encode(["car"]), [[0, 0, 1]], atol=1e-6)


def test_the_key_follows_the_settings(monkeypatch):
    before = static_tower.static_key()
    assert before == static_tower.static_key()
    monkeypatch.setitem(static_tower.SETTINGS, "pca_dims", 256)
    assert static_tower.static_key() != before
