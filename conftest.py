"""Doctest settings: quiet TensorFlow and no network, for doctests and tests alike."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KDISTILL_OFFLINE"] = "1"
