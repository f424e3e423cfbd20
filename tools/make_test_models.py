"""Writes the trained models that the tests ship, so the suite loads them instead of training them each run.

The export and quantization tests' claims (int8 and int16x8 agreement with
Keras, the serving signature, ONNX, a quantization-aware twin that starts where
the float student ended) only mean something on trained models with real
activation ranges. This script trains them once with the recipe the tests used
(the MobileNetV2 for 4 epochs where the test trained 2), on the shipped real sample (1,800 training images; 200 held out), and saves
them without optimizer state into tests/data:

- `resnet20_fashion_mnist_sample.keras`: ResNet-20, seed 0, Adam 3e-3, 4 epochs (tests/test_export.py);
- `mobilenet_v2_035_fashion_mnist_sample.keras`: MobileNetV2 width 0.35, seed 0, Adam 3e-3, 4 epochs (tests/test_quantize.py).

    python tools/make_test_models.py
"""

from __future__ import annotations

import argparse
import os

import keras

import kdistill
from kdistill.fit_build import build_before_fit
from kdistill.models import saving

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data")
SAMPLE = os.path.join(DATA, "fashion-mnist-sample")
#: file name -> (student name, builder options, epochs)
MODELS = {
    "resnet20_fashion_mnist_sample.keras": ("resnet20", {}, 4),
    "mobilenet_v2_035_fashion_mnist_sample.keras": ("mobilenet_v2", {"width": 0.35}, 4),
}


def train(name: str, options: dict, epochs: int, seed: int = 0) -> keras.Model:
    """The registered student `name` trained on the shipped sample's 1,800 training images."""
    splits = kdistill.data.load("fashion_mnist", data_dir=SAMPLE, batch_size=32, validation_fraction=0.1)
    keras.utils.set_random_seed(seed)
    student = kdistill.students.get(name, num_classes=10, **options)
    student.compile(
        optimizer=keras.optimizers.Adam(3e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    build_before_fit(student, splits.train)
    student.fit(splits.train, epochs=epochs, verbose=2)
    return student


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=DATA)
    parser.add_argument("--only", choices=sorted(MODELS), help="write this file only")
    args = parser.parse_args(argv)
    for file_name, (name, options, epochs) in MODELS.items():
        if args.only in (None, file_name):
            path = saving.save_for_inference(train(name, options, epochs), os.path.join(args.output_dir, file_name))
            print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
