"""Reading a run's config file: the mapping in a YAML or JSON file, refused with its line when a key is set twice.

Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "run.yaml")
    >>> _ = open(path, "w").write("student: resnet8x4\\nepochs: 2\\n")
    >>> read_config_file(path)
    {'student': 'resnet8x4', 'epochs': 2}
"""

from __future__ import annotations

import json
import os
from typing import Any

from kdistill.errors import UserError, shorten, shown

__all__ = ["read_config_file"]


def read_config_file(path: str) -> dict:
    """The mapping in a YAML or JSON config file (`kdistill distill --config`); `UserError` naming the file when it holds none.

    Example:
        >>> import tempfile
        >>> listed = os.path.join(tempfile.mkdtemp(), "run.yaml")
        >>> _ = open(listed, "w").write("- student: resnet8x4\\n")
        >>> read_config_file(listed)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        kdistill.errors.UserError: Config file '.../run.yaml' must hold `key: value` lines (a mapping), but it holds a list. ...
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"Config file {path!r} does not exist.")
    with open(path) as handle:
        text = handle.read()
    import yaml

    try:
        values = _parse_config(text, json_file=path.endswith(".json"))
    except _DuplicateKey as duplicate:
        raise UserError(
            f"Config file {path!r} sets {shown(duplicate.key)} twice{duplicate.where}; only the last one would count. "
            "Keep one."
        ) from None
    except yaml.YAMLError as error:
        raise UserError(f"Config file {path!r} is not valid YAML: {shorten(str(error), 1000)}") from None
    except ValueError as error:  # json.JSONDecodeError
        raise UserError(f"Config file {path!r} is not valid JSON: {error}.") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        example = (
            "`student: resnet8x4`, not `- student: resnet8x4`" if isinstance(values, list) else "`student: resnet8x4`"
        )
        raise UserError(
            f"Config file {path!r} must hold `key: value` lines (a mapping), but it holds a {type(values).__name__}. "
            f"Write one key per line without a leading dash: {example}."
        )
    return values


class _DuplicateKey(Exception):
    """A config mapping sets a key twice (YAML and JSON keep the last silently)."""

    def __init__(self, key: Any, lines: tuple = ()):
        super().__init__(key)
        self.key, self.where = key, f" (lines {lines[0]} and {lines[1]})" if lines else ""


def _parse_config(text: str, json_file: bool) -> Any:
    """The value a YAML or JSON config file holds; `_DuplicateKey` for a key set twice in one mapping."""
    if json_file:

        def unique(pairs):
            keys = [key for key, _ in pairs]
            for key in keys:
                if keys.count(key) > 1:
                    raise _DuplicateKey(key)
            return dict(pairs)

        return json.loads(text, object_pairs_hook=unique)
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            first_lines = {}
            for key_node, _ in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key is None or key == "<<":  # a merge key may repeat
                    continue
                if key in first_lines:
                    raise _DuplicateKey(key, (first_lines[key], key_node.start_mark.line + 1))
                first_lines[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep)

    return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: no Python tags
