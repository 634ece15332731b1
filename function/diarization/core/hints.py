"""Speaker-count hints, validated before any expensive work."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from diarization.errors import InvalidParameterError

MAX_SPEAKERS_LIMIT = 64
"""Far above what diarization is reliable for; a larger hint is almost certainly a mistake."""

HINT_NAMES = ("num_speakers", "min_speakers", "max_speakers")


@dataclass(frozen=True)
class SpeakerHints:
    """``num_speakers`` fixes the count; ``min_speakers``/``max_speakers`` bound it. Never both."""

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    def __post_init__(self) -> None:
        for name in HINT_NAMES:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidParameterError(f"{name} must be a whole number, not {value!r}.", parameter=name)
            if not 1 <= value <= MAX_SPEAKERS_LIMIT:
                raise InvalidParameterError(
                    f"{name}={value} is out of range: use 1 to {MAX_SPEAKERS_LIMIT}.", parameter=name
                )
        if self.num_speakers is not None and (self.min_speakers is not None or self.max_speakers is not None):
            raise InvalidParameterError(
                "Give either num_speakers, or min_speakers/max_speakers, not both.", parameter="num_speakers"
            )
        if self.min_speakers is not None and self.max_speakers is not None and self.min_speakers > self.max_speakers:
            raise InvalidParameterError(
                f"min_speakers={self.min_speakers} is greater than max_speakers={self.max_speakers}.",
                parameter="min_speakers",
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SpeakerHints:
        """From a request body: absent and null mean no hint; anything else must be an integer."""
        return cls(**{name: values.get(name) for name in HINT_NAMES})

    def to_dict(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in HINT_NAMES}

    def as_pipeline_kwargs(self) -> dict[str, int]:
        return {name: value for name, value in self.to_dict().items() if value is not None}
