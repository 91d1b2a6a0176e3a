"""Parsing shared by the CLI's repeated ``--flag key=value`` options."""
from __future__ import annotations

from typing import Any, Callable, Iterable

from .errors import ConfigError


def parse_key_values(pairs: Iterable[str], flag: str, parse_value: Callable[[str], Any]) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": parse_value("1"), "b": parse_value("x")}``.

    Raises:
        ConfigError: an item without ``=`` or with an empty key (the message names ``flag``).
    """
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"{flag} takes key=value, got {pair!r}")
        out[key.strip()] = parse_value(value.strip())
    return out
