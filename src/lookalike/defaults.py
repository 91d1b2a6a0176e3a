"""Project-wide defaults, in one place."""
from __future__ import annotations


def default_descriptors() -> list[str]:
    """Descriptors a new collection gets when none are named."""
    return ["color:space=hsv,bins=8"]
