"""Adapters map a student feature to its teacher's shape so a loss can compare them.

* `projection` — one per tap: 1x1 Conv + BN (maps, with spatial alignment) or Dense (vectors);
* `review` — ReviewKD's attention-based fusion of the student's taps, deepest first.

`FeatureDistiller(adapter="projection" | "review")` picks one.
"""

from kdistill.adapters import projection, review

#: adapter names FeatureDistiller accepts
ADAPTERS = ("projection", "review")

__all__ = ["projection", "review", "ADAPTERS"]
