"""Exceptions that the CLI turns into one stderr line and a non-zero exit."""


class VQAError(Exception):
    """A user-facing error whose message says what is wrong and how to fix it."""


class InputError(VQAError):
    """An input file is missing, malformed, or inconsistent with another one."""


class ResourceError(VQAError):
    """A model or weights file (spaCy vectors, VGG16 weights) cannot be found or loaded."""


class Overloaded(VQAError):
    """Too many requests are waiting (``max_queue``): try again after ``retry_after`` seconds.

    A server answers it 503 with ``Retry-After``; nothing was computed for the request.
    """

    def __init__(self, message: str, *, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(Overloaded):
    """A request waited longer than its deadline (``request_timeout_ms``) for its batch; its work was
    dropped from the queue, or its result discarded."""
