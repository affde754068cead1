"""Reading visitcal's JSON files (``repo.json``, ``camera.json``, ``skymap.json``, provenance records) with
errors that name the file and the field: a malformed file is a one-line `JsonReadError`, never a
``KeyError``, ``AttributeError`` or a multi-line validation dump.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from pydantic import ValidationError

__all__ = ["JsonReadError", "json_fields", "read_json", "validation_message"]


class JsonReadError(ValueError):
    """A JSON file visitcal reads (``repo.json``, ``camera.json``, ``skymap.json``, a provenance record) is not
    valid JSON or lacks or has a bad field; the one-line message names the file and the field, ``path`` the
    file."""

    def __init__(self, message: str, *, path=None):
        super().__init__(message)
        self.path = None if path is None else str(path)

    def __reduce__(self):
        return (_rebuild, (type(self), self.args[0], self.path))


def _rebuild(cls, message, path):
    return cls(message, path=path)


def read_json(path, *, expect: type | None = dict):
    """The JSON document of ``path``.

    Parameters
    ----------
    path : path-like
    expect : type, optional
        The type the top-level value must have (a JSON object by default; None: any).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    JsonReadError
        Not UTF-8 text, not valid JSON (the message gives the line and column), or not an ``expect``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise JsonReadError(f"{path}: not UTF-8 text (byte {err.start})", path=path) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise JsonReadError(f"{path}: not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}",
                            path=path) from None
    if expect is not None and not isinstance(doc, expect):
        want = {dict: "a JSON object", list: "a JSON array"}.get(expect, expect.__name__)
        raise JsonReadError(f"{path}: expected {want}, got {type(doc).__name__}", path=path)
    return doc


def validation_message(err: ValidationError, prefix: str = "") -> str:
    """One line for a pydantic ``ValidationError``: the first error's field (dotted, after ``prefix``) and
    message, and how many more there are."""
    errors = err.errors()
    first = errors[0]
    loc = ".".join(str(part) for part in first["loc"])
    field = f"{prefix}{loc}" if loc else prefix.rstrip(".")
    msg = first["msg"].removeprefix("Value error, ")  # a validator's own message is already in our words
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"field {field}: {msg}{more}" if field else f"{msg}{more}"


@contextlib.contextmanager
def json_fields(path, prefix: str = ""):
    """Turn what reading the fields of ``path``'s document raises into a one-line `JsonReadError`.

    A ``KeyError`` (a missing field), a pydantic ``ValidationError`` (a bad value: the field's dotted name
    after ``prefix``), and a ``TypeError``, ``AttributeError`` or ``ValueError`` (a value of the wrong shape)
    each become a `JsonReadError` naming the file; a `JsonReadError` passes unchanged.
    """
    try:
        yield
    except JsonReadError:
        raise
    except KeyError as err:
        key = err.args[0] if err.args else "?"
        raise JsonReadError(f"{path}: missing field {prefix}{key}", path=path) from None
    except ValidationError as err:
        raise JsonReadError(f"{path}: {validation_message(err, prefix)}", path=path) from None
    except (TypeError, AttributeError, ValueError, IndexError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise JsonReadError(f"{path}: malformed{(' ' + prefix.rstrip('.')) if prefix else ''}: {first}",
                            path=path) from None
