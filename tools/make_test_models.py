"""Writes the trained model that the export tests ship, so the suite loads it instead of training it each run.

The export tests' claims (int8 and int16x8 agreement with Keras, the serving
signature, ONNX) only mean something on a trained model with real activation
ranges. Training it took about a minute of the suite's time on 2 CPU cores;
this script trains it once, exactly as the tests' fixture did (ResNet-20, seed 0,
Adam 3e-3, 4 epochs on the 1,800 training images of the shipped real sample), and
saves it without optimizer state:

    python tools/make_test_models.py --output tests/data/resnet20_fashion_mnist_sample.keras
"""

from __future__ import annotations

import argparse
import os

import keras

import kdistill
from kdistill.fit_build import build_before_fit
from kdistill.models import saving

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data", "fashion-mnist-sample")


def train_resnet20(epochs: int = 4, seed: int = 0) -> keras.Model:
    """ResNet-20 trained on the shipped sample's 1,800 training images (200 are held out for validation)."""
    splits = kdistill.data.load("fashion_mnist", data_dir=SAMPLE, batch_size=32, validation_fraction=0.1)
    keras.utils.set_random_seed(seed)
    student = kdistill.students.get("resnet20", num_classes=10)
    student.compile(optimizer=keras.optimizers.Adam(3e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    build_before_fit(student, splits.train)
    student.fit(splits.train, epochs=epochs, verbose=2)
    return student


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join(os.path.dirname(SAMPLE), "resnet20_fashion_mnist_sample.keras"))
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)
    saving.save_for_inference(train_resnet20(args.epochs), args.output)
    print("wrote", args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
