"""The trained projection head: no leakage, starts as ConSE, improves held-out recall, saves and loads."""

from __future__ import annotations

import numpy as np
import pytest

from t2i_helpers.data.datasets import split_by_image
from t2i_helpers.data.images import read_image
from t2i_helpers.measure.finetune import Features, caption_recall, train_head
from t2i_helpers.models.encoders import load_encoder
from t2i_helpers.models.projection import ProjectionHead


@pytest.fixture(scope="module")
def split(bundled):
    return split_by_image(bundled, test_fraction=0.2, seed=0)


def test_split_is_by_image_content_and_reproducible(bundled, split):
    train, test = split
    assert len(train) + len(test) == len(bundled)
    train_ids = {read_image(p)[0] for p in train.path}
    assert not train_ids & {read_image(p)[0] for p in test.path}  # the duplicated photo stays on one side
    again = split_by_image(bundled, test_fraction=0.2, seed=0)[1]
    assert list(again.path) == list(test.path)


def test_head_improves_held_out_recall(encoder, split, tmp_path):
    train, test = split
    head, history = train_head(encoder, train, epochs=150)
    assert history.epoch.iloc[0] == 0 and np.isnan(history.loss.iloc[0])  # epoch 0 = plain ConSE
    assert history.loss.iloc[-1] < history.loss.iloc[1]
    held_out = Features.compute(encoder, test)
    before = caption_recall(held_out.captions, held_out.conse)
    after = caption_recall(held_out.captions, head.apply(held_out.conse, held_out.logits))
    # measured with the full 300 epochs: R@10 0.37 -> 0.71 on the 157 held-out photos
    assert after["R@10"] >= before["R@10"] + 0.1

    path = head.save(tmp_path / "head.npz")
    assert ProjectionHead.load(path).tag == head.tag
    with_head = load_encoder(f"conse-head:{path}")
    assert with_head.name == f"conse-effnet-minilm+head-{head.tag}"
    images = [read_image(p)[1] for p in test.path[:4]]
    expected = head.apply(encoder.encode_images(images), encoder.image_logits(images))
    np.testing.assert_allclose(with_head.encode_images(images), expected, atol=1e-5)


def test_zero_head_is_exactly_conse(encoder, split):
    zero = ProjectionHead(np.zeros((1000, 384), np.float32), np.zeros(384, np.float32))
    images = [read_image(p)[1] for p in split[1].path[:3]]
    np.testing.assert_allclose(
        zero.apply(encoder.encode_images(images), encoder.image_logits(images)),
        encoder.encode_images(images),
        atol=1e-6,
    )
