"""Views of images that a teacher cache stores and replays: crop, flip, and mixes of two images (mixup, cutmix).

A view is drawn once, when the cache is built, and kept as a few numbers per
image: where it was cropped from the zero-padded image (`dy`, `dx`), whether it
was flipped, and for a mixed view the partner image, the partner's own crop and
flip, and how the two were mixed (mixup's ratio, cutmix's box). `render` turns
those numbers back into the exact pixels: the cache's builder shows them to the
teacher and training shows the same pixels to the student, so teacher and
student see the same image ("consistent teaching", Beyer et al., CVPR 2022).

Mixed views follow the function-matching recipe of Beyer et al.: the mixing
ratio is drawn from U(0, 1) and the partner uniformly from the whole cache
(labelled and unlabelled images alike). With both `mixup` and `cutmix`, each
view picks one of the two with equal odds (as timm's `Mixup(switch_prob=0.5)`).

Example:
    >>> import numpy as np
    >>> images = np.arange(4 * 8 * 8 * 3, dtype="float32").reshape(4, 8, 8, 3)
    >>> crops, mixes = draw(4, 2, 8, ("crop", "flip", "mixup"), seed=0)
    >>> crops.shape, mixes.partner.shape
    ((4, 2, 3), (4, 2))
    >>> shown = render(images, np.arange(4), crops[:, 0], mixes.view(0))
    >>> shown.shape
    (4, 8, 8, 3)
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

__all__ = [
    "VIEW_AUGMENTATIONS",
    "MIXES",
    "VIEW_STREAM",
    "Mixes",
    "crop_padding",
    "draw",
    "draw_views",
    "apply_views",
    "render",
    "mixed_labels",
]

#: the augmentations a teacher cache can replay: each view stores what rebuilds it
VIEW_AUGMENTATIONS = ("crop", "flip", "mixup", "cutmix")
#: the augmentations that mix two images (their labels become a mix of two one-hot rows)
MIXES = ("mixup", "cutmix")
#: added to the seed for the stream that picks each example's view (ViewBatches and tf_pipeline.views_by_pass)
VIEW_STREAM = 7919
_NONE, _MIXUP, _CUTMIX = 0, 1, 2


def crop_padding(image_size: int) -> int:
    """The zero padding around an image that `crop` draws its crops from (as `augmentation`'s ZeroPadding2D + RandomCrop)."""
    return max(2, image_size // 8)


@dataclasses.dataclass
class Mixes:
    """How each stored view mixes its image with a partner (arrays of shape `(count, views, ...)`).

    Attributes:
        kind: 0 for no mix, 1 for mixup, 2 for cutmix.
        partner: the index of the partner image in the cache.
        partner_crop: the partner's own `[dy, dx, flip]`.
        ratio: the share of the view's own image (mixup's weight; for cutmix, 1 - the box's share of the pixels).
        box: cutmix's `[y0, x0, y1, x1]`, the rectangle filled from the partner (empty for mixup).
    """

    kind: np.ndarray
    partner: np.ndarray
    partner_crop: np.ndarray
    ratio: np.ndarray
    box: np.ndarray

    def view(self, number: int | np.ndarray) -> "Mixes":
        """The mixes of one view per image: `number` is a view index, or one per image."""
        rows = np.arange(self.kind.shape[0])
        return Mixes(*(getattr(self, field.name)[rows, number] for field in dataclasses.fields(self)))

    def rows(self, rows: np.ndarray) -> "Mixes":
        """The mixes of some images (all their views)."""
        return Mixes(*(np.asarray(getattr(self, field.name)[rows]) for field in dataclasses.fields(self)))

    def arrays(self) -> dict:
        """`{name: array}` for storing (`Mixes(**arrays)` reads them back)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


def check(augment: Sequence[str]) -> None:
    """Refuses augmentations a cache cannot replay, naming the ones it can."""
    unknown = sorted(set(augment) - set(VIEW_AUGMENTATIONS))
    if unknown:
        raise ValueError(
            f"A teacher cache replays {', '.join(VIEW_AUGMENTATIONS)} only; {unknown} change images in ways it cannot store. "
            "Train with the live teacher for those, or drop them."
        )


def draw_views(count: int, views: int, image_size: int, augment: Sequence[str], seed: int = 0, rng=None) -> np.ndarray:
    """`(count, views, 3)` int16 view parameters `[dy, dx, flip]`: a crop offset into the padded image and a horizontal flip.

    Example:
        >>> draw_views(2, 3, 32, ("crop", "flip")).shape
        (2, 3, 3)
    """
    check(augment)
    rng = np.random.default_rng(seed) if rng is None else rng
    pad = crop_padding(image_size)
    params = np.zeros((count, views, 3), "int16")
    params[..., :2] = pad  # centred: no crop
    if "crop" in augment:
        params[..., :2] = rng.integers(0, 2 * pad + 1, (count, views, 2))
    if "flip" in augment:
        params[..., 2] = rng.integers(0, 2, (count, views))
    return params


def draw(
    count: int, views: int, image_size: int, augment: Sequence[str], seed: int = 0
) -> tuple[np.ndarray, Mixes | None]:
    """Every view's crop and flip, and its mix when `augment` names mixup or cutmix (else None).

    The crops and flips are those `draw_views` draws for the same seed, so a cache
    without mixes stores the views it always did.
    """
    rng = np.random.default_rng(seed)
    crops = draw_views(count, views, image_size, augment, rng=rng)
    kinds = [kind for name, kind in (("mixup", _MIXUP), ("cutmix", _CUTMIX)) if name in augment]
    if not kinds:
        return crops, None
    shape = (count, views)
    kind = np.asarray(kinds, "int8")[rng.integers(0, len(kinds), shape)]
    partner = rng.integers(0, count, shape).astype("int32")
    partner_crop = draw_views(count, views, image_size, augment, rng=rng)
    ratio = rng.uniform(0.0, 1.0, shape).astype("float32")
    box = np.zeros(shape + (4,), "int16")
    cut = kind == _CUTMIX
    box[cut], ratio[cut] = _cutmix_boxes(ratio[cut], image_size, rng)
    return crops, Mixes(kind, partner, partner_crop, ratio, box)


def _cutmix_boxes(ratio: np.ndarray, size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """CutMix's boxes (Yun et al. 2019): side `size * sqrt(1 - ratio)` around a uniform centre, clipped; the ratio the clipped box leaves."""
    side = np.round(size * np.sqrt(1.0 - ratio)).astype("int64")
    centre = rng.integers(0, size, (len(ratio), 2))
    low = np.clip(centre - side[:, None] // 2, 0, size)
    high = np.clip(centre + side[:, None] // 2, 0, size)
    kept = 1.0 - (high - low).prod(axis=1) / float(size * size)
    return np.concatenate([low, high], axis=1).astype("int16"), kept.astype("float32")


def apply_views(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Each image cropped from its zero-padded self at `[dy, dx]` and flipped left-right where `flip` is 1 (exact, NumPy).

    One gather for the whole batch (no Python loop over images).
    """
    images = np.asarray(images)
    params = np.asarray(params, "int64")
    count, height, width = images.shape[:3]
    pad = crop_padding(height)
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = params[:, 0, None] + np.arange(height)  # (count, height)
    steps = np.where(params[:, 2, None] == 1, np.arange(width)[::-1], np.arange(width))
    columns = params[:, 1, None] + steps  # (count, width), reversed where flipped
    return padded[np.arange(count)[:, None, None], rows[:, :, None], columns[:, None, :]]


def render(source: np.ndarray, rows: np.ndarray, crops: np.ndarray, mixes: Mixes | None = None) -> np.ndarray:
    """The float32 pixels of one view of each of `source[rows]`: cropped and flipped, then mixed with its partner.

    Args:
        source: every image of the cache (an array or a memory map); partners are read from it.
        rows: the images to show.
        crops: `(len(rows), 3)` crops and flips of those images.
        mixes: their mixes (one view per image, `Mixes.view`), or None.
    """
    rows = np.asarray(rows)
    shown = apply_views(_read(source, rows), crops)
    if mixes is None or not np.any(mixes.kind != _NONE):
        return shown
    partners = apply_views(_read(source, np.asarray(mixes.partner)), mixes.partner_crop)
    ratio = np.where(mixes.kind == _MIXUP, mixes.ratio, 1.0).astype("float32")[:, None, None, None]
    mixed = ratio * shown + (1.0 - ratio) * partners
    height, width = shown.shape[1:3]
    box = np.asarray(mixes.box, "int64")
    inside = (
        (np.arange(height)[None, :, None] >= box[:, 0, None, None])
        & (np.arange(height)[None, :, None] < box[:, 2, None, None])
        & (np.arange(width)[None, None, :] >= box[:, 1, None, None])
        & (np.arange(width)[None, None, :] < box[:, 3, None, None])
    )
    cut = (mixes.kind == _CUTMIX)[:, None, None] & inside
    return np.where(cut[..., None], partners, mixed)


def mixed_labels(labels: np.ndarray, partner_labels: np.ndarray, mixes: Mixes, num_classes: int) -> np.ndarray:
    """One-hot rows mixed as the images were: `ratio * onehot(label) + (1 - ratio) * onehot(partner's)`.

    A view that involves an unlabelled image (label < 0) gets a row of zeros: its
    cross-entropy is 0, and only the distillation terms learn from it.
    """
    labels, partner_labels = np.asarray(labels, "int64"), np.asarray(partner_labels, "int64")
    eye = np.eye(num_classes, dtype="float32")
    ratio = np.where(mixes.kind == _NONE, 1.0, mixes.ratio).astype("float32")[:, None]
    rows = ratio * eye[np.clip(labels, 0, None)] + (1.0 - ratio) * eye[np.clip(partner_labels, 0, None)]
    unlabelled = (labels < 0) | ((partner_labels < 0) & (mixes.kind != _NONE))
    rows[unlabelled] = 0.0
    return rows


def _read(source: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`source[rows]` as float32, reading a memory map in ascending order (fast) and putting the rows back in place."""
    order = np.argsort(rows, kind="stable")
    back = np.argsort(order, kind="stable")
    return np.asarray(source[rows[order]], dtype="float32")[back]
