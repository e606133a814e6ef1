"""Streams of concatenated JSON objects, as `go list -json` and the Docker engine's image load print them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


def json_objects(text: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of `text`, one after another, with or without whitespace between (others skipped)."""
    decoder = json.JSONDecoder()
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return
        value, pos = decoder.raw_decode(text, pos)
        if isinstance(value, dict):
            yield value
