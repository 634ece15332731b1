"""JSON text from outside the function (a request body, a queue message, a caller's file), parsed so that every
malformed text fails the same way."""

from __future__ import annotations

import json
from typing import Any


def loads(text: str | bytes) -> Any:
    """`json.loads`, except that nesting too deep for the parser (``"[" * 100000``: a RecursionError, which is no
    ValueError) is raised as the ValueError malformed JSON raises: every caller's ``except ValueError`` then answers it
    as the sender's mistake (400 INVALID_REQUEST), never an unexpected failure (500)."""
    try:
        return json.loads(text)
    except RecursionError as error:
        raise ValueError("the JSON is nested too deeply") from error
