"""Compact soft labels: the teacher's top-k logits and one filler logit (TinyViT's convention for the missing mass)."""

import numpy as np
import pytest

from kdistill.run.teacher_cache import top_k


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)


def test_expanded_top_k_logits_give_tinyvits_soft_labels_at_temperature_one():
    logits = np.random.default_rng(0).normal(0, 3, (6, 4, 20)).astype("float32")  # (images, views, classes)
    stored = top_k.compress(logits, 5)
    assert (
        stored["values"].dtype == np.float16
        and stored["indices"].dtype == np.uint16
        and stored["filler"].shape == (6, 4)
    )
    dense = top_k.expand(stored["values"], stored["indices"], stored["filler"], 20)
    # TinyViT (microsoft/Cream, TinyViT/main.py): probabilities of the top k, the rest (1 - their sum) / (classes - k)
    # each
    probabilities = _softmax(logits)
    index = np.argsort(-logits, axis=-1)[..., :5]
    values = np.take_along_axis(probabilities, index, -1)
    minor = (1.0 - values.sum(-1, keepdims=True)) / (20 - 5)
    reference = np.repeat(minor, 20, axis=-1)
    np.put_along_axis(reference, index, values, axis=-1)
    np.testing.assert_allclose(_softmax(dense), reference, atol=2e-3)


def test_bytes_per_view_and_range_checks():
    assert top_k.bytes_per_view(10, 1000) == 42  # the ImageNet arithmetic in docs/teacher-cache.md
    assert top_k.bytes_per_view(10, 100_000) == 62  # int32 indices above 65,536 classes
    with pytest.raises(ValueError, match="from 1 to 9"):
        top_k.check_top_k(10, 10)
