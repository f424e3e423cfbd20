"""Adapters map the student's features to its teacher's shapes so a loss can compare them.

* `projection` — one per tap: 1x1 Conv + BN (maps, with spatial alignment) or Dense (vectors);
* `review` — ReviewKD's attention-based fusion of the student's taps, deepest first;
* `base` — the `Adapter` layer they share and the registry of names (`get`, `available`, `register`).

`FeatureDistiller(adapter="projection" | "review")` picks one by name, as
`kdistill.losses.get` picks a loss; a new adapter is one `Adapter` subclass
registered with `@register("name")` (see CONTRIBUTING.md).
"""

from kdistill.adapters import base, projection, review
from kdistill.adapters.base import Adapter, available, check, get, register
from kdistill.adapters.projection import ProjectionAdapter
from kdistill.adapters.review import ReviewAdapter

__all__ = [
    "base",
    "projection",
    "review",
    "Adapter",
    "ProjectionAdapter",
    "ReviewAdapter",
    "get",
    "available",
    "check",
    "register",
]
