"""Adapters map a student feature to its teacher's shape so a loss can compare them.

* `projection` — one per tap: 1x1 Conv + BN (maps, with spatial alignment) or Dense (vectors);
* `review` — ReviewKD's attention-based fusion of the student's taps, deepest first.

`FeatureDistiller(adapter="projection" | "review")` picks one; `factory`
builds, applies and describes either through one set of calls.
"""

from kdistill.adapters import factory, projection, review
from kdistill.adapters.factory import ADAPTERS

__all__ = ["factory", "projection", "review", "ADAPTERS"]
