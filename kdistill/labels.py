"""Label conventions every wing shares (a leaf: it imports nothing from kdistill).

Example:
    >>> from kdistill.labels import UNLABELED
    >>> UNLABELED
    -1
"""

__all__ = ["UNLABELED"]

#: the label of a transfer-set image (no label): any integer label below 0 is read as one (`kdistill.UNLABELED`)
UNLABELED = -1
