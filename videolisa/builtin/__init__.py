"""Models shipped inside the package, loadable offline as ``builtin:<name>``.

Each sub-directory holding a ``config.json`` is one model (safetensors weights, config, tokenizer and a
``MODEL_CARD.md`` saying what it is).
"""

from __future__ import annotations

from pathlib import Path

from videolisa.errors import MissingFilesError

BUILTIN_ROOT = Path(__file__).resolve().parent


def available_builtin_models() -> list[str]:
    """Names of the shipped models (``builtin:<name>``)."""
    return sorted(path.parent.name for path in BUILTIN_ROOT.glob("*/config.json"))


def builtin_model_dir(name: str) -> Path:
    """Directory of the shipped model ``name``; raises naming the available ones if unknown."""
    directory = BUILTIN_ROOT / name
    if not (directory / "config.json").is_file():
        available = ", ".join(f"builtin:{n}" for n in available_builtin_models()) or "none"
        raise MissingFilesError(f"no built-in model {name!r}; available: {available}")
    return directory
