"""Finding KerasHub presets: a name, a `kaggle://` handle or a local folder becomes the folder that holds the preset.

`kdistill.models.hub` builds teachers and students from the folder (`load_preset` reads it); with `KDISTILL_OFFLINE`
set, a preset name is read from KerasHub's download cache (`cache_folder(name)`) or fails at once, saying how to fill it.

Example:
    >>> preset_folder("keras_hub:/no/such/folder")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Unknown KerasHub preset '/no/such/folder': not a local folder, ...
"""

from __future__ import annotations

import os

from kdistill.errors import did_you_mean
from kdistill.models import saving

__all__ = ["PREFIX", "cache_folder", "preset_folder", "load_preset"]

#: what starts a KerasHub model's name in `teachers.get`, `students.get`, the CLI and configs
PREFIX = "keras_hub:"

_INSTALL = (
    'KerasHub is not installed: `pip install "kdistill[hub]"` (beside tensorflow-cpu: '
    "`pip install --no-deps keras-hub==0.32.0` and its other requirements; see the README section KerasHub)."
)


def _keras_hub():
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError(_INSTALL) from error
    return keras_hub


# === Presets: names, handles, folders ===


def _kaggle_handle(preset: str) -> str | None:
    """The versioned Kaggle handle of a built-in preset name or a `kaggle://` handle, else None."""
    if preset.startswith("kaggle://"):
        return preset
    from keras_hub.src.utils.preset_utils import BUILTIN_PRESETS

    return BUILTIN_PRESETS[preset]["kaggle_handle"] if preset in BUILTIN_PRESETS else None


def cache_folder(preset: str) -> str:
    """Where KerasHub's downloader (kagglehub) keeps a preset: `$KAGGLEHUB_CACHE/models/<owner>/<model>/keras/<variant>/<version>`.

    Example:
        >>> cache_folder("keras_hub:resnet_18_imagenet").endswith(os.path.join("models", "keras", "resnetv1", "keras", "resnet_18_imagenet", "3"))
        True
    """
    preset = preset.removeprefix(PREFIX)
    _keras_hub()
    handle = _kaggle_handle(preset)
    if handle is None:
        raise ValueError(
            f"{preset!r} is neither a built-in KerasHub preset nor a kaggle:// handle, so it has no download cache folder."
        )
    parts = handle.removeprefix("kaggle://").split("/")
    if len(parts) != 5:
        raise ValueError(
            f"A cached preset needs a versioned handle kaggle://<owner>/<model>/keras/<variant>/<version>, received {handle!r}."
        )
    root = os.environ.get("KAGGLEHUB_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "kagglehub"))
    return os.path.join(root, "models", *parts)


def _offline_help(preset: str, folder: str) -> str:
    handle = _kaggle_handle(preset) or preset
    return (
        f"On a machine with network, run `python -c \"import kagglehub; print(kagglehub.model_download('{handle.removeprefix('kaggle://')}'))\"` "
        f"and copy the folder it prints to {folder!r} (KAGGLEHUB_CACHE moves that cache), or save the model with "
        f"`keras_hub.models.ImageClassifier.from_preset('{preset}').save_to_preset('{preset}')` (a backbone preset: "
        f"keras_hub.models.Backbone) and pass 'keras_hub:/path/to/{preset}'. Local preset folders never need the network."
    )


def preset_folder(preset: str) -> str:
    """The local folder holding `preset`: the folder itself, or the download cache, downloading only when allowed.

    Raises:
        ValueError: offline (`KDISTILL_OFFLINE`) for a preset that is not cached,
            naming the cache folder and how to fill it; online, when the download fails.
    """
    preset = preset.removeprefix(PREFIX)
    if os.path.isdir(preset):
        if not os.path.exists(os.path.join(preset, "config.json")):
            raise ValueError(
                f"{preset!r} is a folder but not a KerasHub preset (no config.json). Write one with "
                "`model.save_to_preset(folder)` on a KerasHub backbone or classifier."
            )
        return preset
    _keras_hub()
    handle = _kaggle_handle(preset)
    if handle is None:
        from keras_hub.src.utils.preset_utils import BUILTIN_PRESETS

        raise ValueError(
            f"Unknown KerasHub preset {preset!r}: not a local folder, a built-in preset name "
            f"(`keras_hub.models.Backbone.presets`) or a kaggle:// handle.{did_you_mean(preset, BUILTIN_PRESETS)}"
        )
    folder = cache_folder(preset)
    if os.path.exists(os.path.join(folder, "config.json")):
        return folder
    if saving.offline():
        raise ValueError(
            f"KerasHub preset {preset!r} is not in the download cache ({folder!r}) and KDISTILL_OFFLINE is set, so it is "
            f"not downloaded. {_offline_help(preset, folder)}"
        )
    try:
        import kagglehub

        return kagglehub.model_download(handle.removeprefix("kaggle://"))
    except Exception as error:
        raise ValueError(
            f"Could not download the KerasHub preset {preset!r} ({type(error).__name__}: {error}). "
            f"{_offline_help(preset, folder)}"
        ) from error


def load_preset(folder: str):
    """(backbone, classifier or None, image converter or None) of a local preset folder."""
    keras_hub = _keras_hub()
    classifier = None
    if os.path.exists(os.path.join(folder, "task.json")):
        classifier = keras_hub.models.ImageClassifier.from_preset(folder)
        backbone = classifier.backbone
        converter = getattr(getattr(classifier, "preprocessor", None), "image_converter", None)
    else:
        backbone = keras_hub.models.Backbone.from_preset(folder)
        converter = None
        if os.path.exists(os.path.join(folder, "image_converter.json")):
            converter = keras_hub.layers.ImageConverter.from_preset(folder)
    return backbone, classifier, converter
