"""User-facing error types.

Anything raised as a :class:`VideoLisaError` is a problem with the user's input, files or
environment; the CLI prints its message (which names the input and what was expected) and exits
with status 2 instead of showing a traceback.
"""

from __future__ import annotations


class VideoLisaError(Exception):
    """Base class of every error whose message is meant for the user."""


class InvalidInputError(VideoLisaError, ValueError):
    """An argument, file or value does not have the expected form."""


class VideoReadError(InvalidInputError):
    """A video, frame folder or image cannot be opened or decoded."""


class CheckpointError(VideoLisaError, ValueError):
    """A checkpoint has unmapped, missing or mis-shaped tensors, or an unusable config."""


class MissingFilesError(VideoLisaError, FileNotFoundError):
    """Files needed to load a model or a dataset are not there."""
