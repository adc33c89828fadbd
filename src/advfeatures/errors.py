"""Errors that mean "the input was wrong": the CLI turns them into one line and exit code 2."""

from __future__ import annotations


class BadInputError(ValueError):
    """The user gave something unusable (a path, a shape, an option). The message names it and the fix."""


class CorruptFileError(BadInputError):
    """A file exists but cannot be trusted (truncated, wrong format, missing keys)."""
