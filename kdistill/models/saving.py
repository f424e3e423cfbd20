"""Loading saved Keras models with errors that say what went wrong, and saving them whole."""

from __future__ import annotations

import os
import zipfile

import keras

from kdistill.files import atomic_write
from kdistill.errors import UserError, shorten
from kdistill.models import checks, graph

# Importing registers kdistill's layers so saved models that use them load.
from kdistill.models import preprocessing as _preprocessing  # noqa: F401


def keras_cache_path(file_name: str) -> str:
    """Where Keras keeps a downloaded weights file: `$KERAS_HOME/models/<file_name>` (default `~/.keras/models`)."""
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(keras_home, "models", file_name)


def offline() -> bool:
    """True when `KDISTILL_OFFLINE` is set: weights missing from Keras' cache must fail at once instead of downloading."""
    return os.environ.get("KDISTILL_OFFLINE", "").lower() in ("1", "true", "yes")


def is_full_model_file(path: str) -> bool:
    """True for a .keras archive or an .h5 file that holds a whole model (not only weights)."""
    if path.endswith(".keras"):
        return True
    if path.endswith(".h5") and not path.endswith(".weights.h5"):
        import h5py

        try:
            with h5py.File(path, "r") as handle:
                return "model_config" in handle.attrs
        except OSError as error:
            raise ValueError(
                f"Cannot read {path!r} as an HDF5 file ({error}). Is it truncated or not a Keras file?"
            ) from None
    return False


def load_model(path: str, role: str, classifier: bool = True) -> keras.Model:
    """Loads a whole saved model with `safe_mode=True`; checks it is a classifier unless `classifier` is False (segmenters).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when it cannot be read as a Keras model.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{role.capitalize()} file {path!r} does not exist. Train one with `kdistill train-teacher` "
            "or pass the path of a saved .keras/.h5 model."
        )
    _check_model_file(path)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:
        if "safe_mode" in str(error):  # Keras' advice (safe_mode=False) is for a Python user who trusts the file
            raise UserError(
                f"Cannot load the {role} from {path!r}: it holds Python code (a Lambda layer or a lambda), which kdistill does "
                "not run from a model file, as that code could do anything. Rebuild the model with a registered layer in "
                "place of the Lambda (keras.saving.register_keras_serializable) and save it again."
            ) from error
        raise ValueError(
            f"Cannot load the {role} from {path!r}: {type(error).__name__}: {shorten(str(error))}. "
            "Is the file complete (not truncated) and saved by Keras 3 (`model.save('x.keras')`)?"
        ) from error
    if classifier:
        checks.check_classifier(model, role, path, logits=role == "teacher")
    return model


def load_weights(model: keras.Model, path: str, role: str, name: str, fix: str) -> keras.Model:
    """Loads a weights file into `model` (built as `name`); a file of another architecture raises one ValueError ending in `fix`."""
    try:
        model.load_weights(path)
    except Exception as error:
        raise ValueError(
            f"The weights in {path!r} do not fit the {role} {name!r} ({type(error).__name__}: {error}). {fix}"
        ) from error
    return model


def _check_model_file(path: str) -> None:
    """UserError for a folder or a `.keras` file that is not a whole zip archive (Keras said "File not found" for each)."""
    if os.path.isdir(path):
        raise UserError(
            f"{path!r} is a folder, not a Keras model file: pass the .keras file written by model.save() (a SavedModel "
            "or a folder of weights cannot be loaded as a Keras model)."
        )
    with open(path, "rb") as handle:
        head = handle.read(4)
    if path.endswith(".keras") and head != b"PK\x03\x04":
        raise UserError(
            f"{path!r} is not a Keras model file: a .keras file is a zip archive written by model.save(), and this one "
            f"starts with {head!r}. Pass the file the model was saved to."
        )
    if path.endswith(".keras") and not zipfile.is_zipfile(path):  # a zip's directory is at its end: a cut copy has none
        raise UserError(
            f"{path!r} is truncated: it starts as a .keras zip archive but ends before the archive's directory, as a copy "
            "or download that stopped does. Copy or save the model again (`model.save('x.keras')`)."
        )


def save_for_inference(model: keras.Model, path: str) -> str:
    """Saves `model` without optimizer state (an uncompiled functional copy sharing its weights), whole or not at all.

    The file is written under a temporary name in the same folder and renamed
    into place when complete (`kdistill.files.atomic_write`), so a kill or a
    full disk mid-write leaves the previous file (if any) intact and no partial
    one. A killed save's unfinished copy starts with `kdistill.files.partial_prefix(path)`.
    """
    # one tensor, not a list of one: a model saved with a list of inputs warns on every call with a plain batch
    inputs = graph.call_inputs(model)
    outputs = model.outputs[0] if len(model.outputs) == 1 else model.outputs
    try:
        with atomic_write(path, suffix=".keras") as partial:
            keras.Model(inputs, outputs, name=model.name).save(partial)
    except OSError as error:  # e.g. a full disk: h5py/zipfile name no file; name the one that could not be written
        raise OSError(error.errno, error.strerror or str(error), path) from error
    return path


def set_batch_norm_momentum(model: keras.Model, momentum: float | None) -> keras.Model:
    """Sets every BatchNormalization layer's momentum (None leaves them as built).

    Keras' MobileNets use 0.999, whose moving statistics need thousands of
    steps to settle: after a short schedule their inference accuracy is at
    chance level even when training accuracy is high. 0.9 settles in ~50 steps.
    """
    if momentum is None:
        return model
    if not 0.0 < momentum < 1.0:
        raise ValueError(f"batch_norm_momentum must be in (0, 1), received {momentum}.")
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
    return model
