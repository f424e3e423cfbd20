"""Writes the small real Fashion-MNIST sample that the test suite ships.

The tests must run offline and without `make data`, yet some claims (int8
agreement with the Keras student) only mean something on real images. This
script copies the first `--train` training and `--test` test images of the full
Fashion-MNIST files (from `make data`) into gzipped IDX files of the same
format, so the tests read them with the real loader:

    python tools/make_fashion_mnist_sample.py --source data/fashion-mnist \
        --output tests/data/fashion-mnist-sample --train 2000 --test 1000

Fashion-MNIST is (c) Zalando SE, released under the MIT license; see
tests/data/fashion-mnist-sample/README.md.
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct

import numpy as np

from kdistill.data import read_idx


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes an unsigned-byte IDX file, gzipped with a fixed timestamp (so reruns give identical bytes)."""
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        handle.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=os.path.join("data", "fashion-mnist"))
    parser.add_argument("--output", default=os.path.join("tests", "data", "fashion-mnist-sample"))
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=1000)
    args = parser.parse_args()
    os.makedirs(args.output, exist_ok=True)
    for split, count in (("train", args.train), ("t10k", args.test)):
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{split}-{kind}-ubyte.gz"
            write_idx(os.path.join(args.output, name), read_idx(os.path.join(args.source, name))[:count])


if __name__ == "__main__":
    main()
