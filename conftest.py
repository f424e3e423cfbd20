"""Doctest settings: quiet TensorFlow and no network, for doctests and tests alike."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KDISTILL_OFFLINE"] = "1"

# Helper scripts that tests run in subprocesses (their own TensorFlow set-up) are not test modules.
collect_ignore_glob = ["tests/_*.py"]
