"""Compact soft labels: the teacher's top-k logits per view, and the dense logits KD reads back.

A cache of many views per image holds logits for every view; for 1,000 classes
that is 4 KB per view in float32. With `top_k=k` a view keeps its k largest
logits (float16), their class indices, and one float16 "filler" logit that
stands for each of the other classes:

    filler = logsumexp(logits outside the top k) - log(classes - k)

Read back, the other classes all get the filler logit. The convention for the
missing mass is TinyViT's (Wu et al., ECCV 2022; microsoft/Cream, TinyViT/main.py,
`minor_value = (1.0 - logits_value.sum(-1)) / (num_classes - topk)`): the
probability the top k leave is spread evenly over the other classes. TinyViT
stores probabilities at temperature 1; kdistill stores logits, so that KD at
any temperature reads dense logits. At T = 1 the expanded logits give exactly
TinyViT's distribution (the top k's probabilities are the teacher's own, up to
float16 rounding); at other temperatures the other classes share one logit,
where the teacher's differ, which is the approximation this format makes.

Example:
    >>> import numpy as np
    >>> logits = np.array([[4.0, 1.0, 0.0, -1.0, 2.0]], "float32")
    >>> stored = compress(logits, 2)
    >>> stored["indices"].tolist(), stored["values"].tolist()
    ([[0, 4]], [[4.0, 2.0]])
    >>> dense = expand(stored["values"], stored["indices"], stored["filler"], 5)
    >>> probabilities = lambda z: np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    >>> bool(np.allclose(probabilities(dense)[0, [0, 4]], probabilities(logits)[0, [0, 4]], atol=1e-3))
    True
"""

from __future__ import annotations

import numpy as np

__all__ = ["compress", "expand", "bytes_per_view", "index_dtype", "check_top_k"]


def index_dtype(classes: int) -> str:
    """The smallest dtype that holds a class index: uint16 up to 65,536 classes, int32 above."""
    return "uint16" if classes <= 65536 else "int32"


def check_top_k(top_k: int | None, classes: int) -> None:
    """Refuses a `top_k` that is not a whole number in [1, classes - 1], saying what to do instead."""
    if top_k is None:
        return
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k < classes:
        raise ValueError(
            f"top_k must be a whole number from 1 to {classes - 1} (the teacher has {classes} classes), received {top_k!r}. "
            "Leave it out to store every logit."
        )


def compress(logits: np.ndarray, top_k: int) -> dict:
    """`{"values", "indices", "filler"}` of `(..., classes)` logits: the top k (largest first) and the filler of the rest."""
    logits = np.asarray(logits, "float32")
    classes = logits.shape[-1]
    indices = np.argsort(-logits, axis=-1, kind="stable")[..., :top_k]
    values = np.take_along_axis(logits, indices, axis=-1)
    rest = logits.copy()
    np.put_along_axis(rest, indices, -np.inf, axis=-1)
    peak = rest.max(axis=-1, keepdims=True)
    filler = peak[..., 0] + np.log(np.exp(rest - peak).sum(axis=-1)) - np.log(classes - top_k)
    return {
        "values": values.astype("float16"),
        "indices": indices.astype(index_dtype(classes)),
        "filler": filler.astype("float16"),
    }


def expand(values: np.ndarray, indices: np.ndarray, filler: np.ndarray, classes: int) -> np.ndarray:
    """Dense float32 `(..., classes)` logits: the stored top k in place, the filler everywhere else."""
    values, filler = np.asarray(values, "float32"), np.asarray(filler, "float32")
    dense = np.repeat(filler[..., None], classes, axis=-1)
    np.put_along_axis(dense, np.asarray(indices, "int64"), values, axis=-1)
    return dense


def bytes_per_view(top_k: int, classes: int) -> int:
    """Bytes the logits of one view take on disk: k float16 values, k indices and one float16 filler.

    Example (ImageNet, top-10): 10 x 2 + 10 x 2 + 2 = 42 bytes, where all 1,000 float32 logits take 4,000.
        >>> bytes_per_view(10, 1000)
        42
    """
    return top_k * (2 + np.dtype(index_dtype(classes)).itemsize) + 2
