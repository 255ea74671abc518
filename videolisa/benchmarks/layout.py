"""Parsing helpers shared by the benchmark readers: JSON files, typed fields, frame folders, image sizes.

Every helper raises :class:`~videolisa.errors.MissingFilesError` for a missing file or folder and
:class:`~videolisa.errors.InvalidInputError` for a malformed one, with a message that names the file and
the entry (``where``).
"""

from __future__ import annotations

import json
import ntpath
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from videolisa.errors import InvalidInputError, MissingFilesError

FRAME_SUFFIX = ".jpg"


def read_json(path: Path, what: str, encodings: Sequence[str] = ("utf-8",)) -> Any:
    """Load a JSON file, trying each text encoding in turn (ReasonSeg has some cp1252 files)."""
    if not path.is_file():
        raise MissingFilesError(f"{what} not found: {path}")
    raw = path.read_bytes()
    for encoding in encodings:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise InvalidInputError(f"{what} {path} is not valid JSON: {error}") from error
    raise InvalidInputError(f"{what} {path} is not text in any of the encodings {', '.join(encodings)}")


def _type_names(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(kind.__name__ for kind in types)


def require_mapping(value: Any, where: str) -> dict[str, Any]:
    """``value`` must be a JSON object."""
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def require_field(mapping: Any, key: str, expected: type | tuple[type, ...], where: str) -> Any:
    """``mapping[key]``, which must exist and have the expected type (a bool is not accepted as an int)."""
    value = require_mapping(mapping, where).get(key)
    if key not in mapping:
        raise InvalidInputError(f"{where}: missing field {key!r}")
    types = expected if isinstance(expected, tuple) else (expected,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise InvalidInputError(
            f"{where}: field {key!r} must be {_type_names(expected)}, got {type(value).__name__} {value!r:.60}"
        )
    return value


def require_string_list(mapping: Any, key: str, where: str, allow_empty: bool = False) -> tuple[str, ...]:
    """``mapping[key]`` as a tuple of strings."""
    values = require_field(mapping, key, list, where)
    if not values and not allow_empty:
        raise InvalidInputError(f"{where}: field {key!r} is empty")
    for value in values:
        if not isinstance(value, str):
            raise InvalidInputError(f"{where}: field {key!r} must list strings, found {type(value).__name__} {value!r}")
    return tuple(values)


def require_id_list(mapping: Any, key: str, where: str) -> tuple[str, ...]:
    """``mapping[key]``: a non-empty list of integer or string ids, returned as strings."""
    values = require_field(mapping, key, list, where)
    if not values:
        raise InvalidInputError(f"{where}: field {key!r} is empty")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise InvalidInputError(f"{where}: field {key!r} must list integer ids, found {value!r}")
    return tuple(str(value) for value in values)


def require_plain_name(value: str, what: str, where: str) -> str:
    """``value``, which must be usable as ONE file or folder name: benchmark ids become parts of output paths
    (``<out>/predictions/<video>/<exp_id>``), so an id with a path separator (``/`` or ``\\``), a drive, NUL,
    or that is empty, ``.`` or ``..`` could make a run write or delete outside its output folder."""
    if (
        value in ("", ".", "..")
        or any(character in value for character in ("/", "\\", "\0"))
        or ntpath.splitdrive(value)[0]
    ):
        raise InvalidInputError(
            f"{where}: {what} {value!r} is not a plain file name (ids may not be empty, '.' or '..', or contain "
            "path separators, a drive or NUL)"
        )
    return value


def require_flag(mapping: Any, key: str, where: str) -> bool:
    """A boolean field; 0 and 1 are accepted as well."""
    value = require_field(mapping, key, (bool, int), where)
    if value not in (0, 1):
        raise InvalidInputError(f"{where}: field {key!r} must be true or false, got {value!r}")
    return bool(value)


def list_frame_names(folder: Path, suffix: str = FRAME_SUFFIX) -> tuple[str, ...]:
    """Stems of the ``*<suffix>`` files of a frame folder, in sorted file-name order (``sorted(glob(...))``)."""
    if not folder.is_dir():
        raise MissingFilesError(f"frames folder not found: {folder}")
    names = sorted(path.name for path in folder.iterdir() if path.name.endswith(suffix))
    if not names:
        raise MissingFilesError(f"no {suffix} frames in {folder}")
    return tuple(name[: -len(suffix)] for name in names)


def require_listed_frames(listed: Sequence[str], on_disk: Sequence[str], folder: Path) -> None:
    """Every frame a meta file lists must exist in the frame folder."""
    present = set(on_disk)
    for name in listed:
        if name not in present:
            raise MissingFilesError(f"frame {name}{FRAME_SUFFIX} listed in the meta file is missing from {folder}")


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image, read from its header."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise MissingFilesError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError) as error:
        raise InvalidInputError(f"cannot read image {path}: {error}") from error
    return height, width
