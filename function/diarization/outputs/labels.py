"""What people read for a speaker: shared by the text formats and the timeline picture."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def label_of(result: Mapping[str, Any]) -> Callable[[str], str]:
    """Speaker id -> what people read: the speaker's ``name`` when identified, else the id."""
    names = {speaker["id"]: speaker.get("name") or speaker["id"] for speaker in result.get("speakers", [])}
    return lambda speaker: str(names.get(speaker, speaker))
