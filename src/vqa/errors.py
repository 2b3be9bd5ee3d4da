"""Exceptions that the CLI turns into one stderr line and a non-zero exit."""


class VQAError(Exception):
    """A user-facing error whose message says what is wrong and how to fix it."""


class InputError(VQAError):
    """An input file is missing, malformed, or inconsistent with another one."""


class ResourceError(VQAError):
    """A model or weights file (spaCy vectors, VGG16 weights) cannot be found or loaded."""
