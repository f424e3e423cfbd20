"""Shared set-up of the example scripts: arguments, the offline data, a teacher trained once and reused."""

import argparse
import logging
import os

import keras

import kdistill
from kdistill.run import training as recipes


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a small run (about a minute on 2 CPU cores)")
    parser.add_argument(
        "--data-dir", default=None, help="folder with the Fashion-MNIST files (default: data/ or the Debian package)"
    )
    parser.add_argument(
        "--teacher",
        default=os.path.join("saved_models", "examples", "teacher.keras"),
        help="a trained teacher; trained once and saved there if missing",
    )
    parser.add_argument("--output-dir", default=os.path.join("saved_models", "examples"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    keras.utils.set_random_seed(0)
    return args


def data(args, batch_size: int = 64) -> kdistill.data.Splits:
    """Offline Fashion-MNIST at 32x32 (2,000 training and 1,000 test images with --quick)."""
    return kdistill.data.load(
        "fashion_mnist",
        data_dir=args.data_dir,
        batch_size=batch_size,
        train_limit=2000 if args.quick else None,
        test_limit=1000 if args.quick else None,
    )


def teacher(args, splits) -> keras.Model:
    """The saved teacher, or a ResNet50 trained now (1 epoch with --quick, 4 otherwise) and saved for the next example."""
    if os.path.exists(args.teacher):
        return kdistill.teachers.load(args.teacher)
    model, _ = recipes.train_teacher(splits, args.teacher, epochs=1 if args.quick else 4, verbose=2)
    return model


def epochs(args, full: int = 5) -> int:
    return 1 if args.quick else full


def validation(args, splits):
    """The validation split, or None with --quick (one fewer graph to compile in a one-minute run)."""
    return None if args.quick else splits.validation
