"""Enroll, read, delete and resolve a caller's voiceprints: the API's /voiceprints routes and `voiceprints` fields.

Voiceprints are stored per owner (the API's caller identity): a name resolves only within the caller's own
voiceprints, so one caller can neither read nor use nor overwrite another's. Enrollment is a synchronous
diarization of the sample (same limits as POST /diarize) whose dominant speaker's centroid is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from diarization.core.hints import SpeakerHints
from diarization.core.voiceprints import MAX_VOICEPRINTS, Voiceprint, check_name, enroll
from diarization.errors import InvalidRequestError, VoiceprintNotFoundError
from diarization.service.locations import ObjectRef
from diarization.service.sync import DiarizeSync, SyncRequest


class VoiceprintStore(Protocol):
    def get(self, owner: str, name: str) -> dict[str, Any] | None: ...

    def put(self, owner: str, name: str, body: dict[str, Any]) -> None: ...

    def delete(self, owner: str, name: str) -> bool:
        """True if it existed."""


class Voiceprints:
    def __init__(self, diarize_sync: DiarizeSync, store: VoiceprintStore) -> None:
        self.diarize_sync = diarize_sync
        self.store = store

    def enroll(self, owner: str, name: str, source: bytes | ObjectRef, input_name: str) -> Voiceprint:
        """Replaces a voiceprint of the same name: enrolling again is how a caller improves one."""
        check_name(name)
        result = self.diarize_sync(SyncRequest(source, SpeakerHints(), input_name))
        speaking = {speaker.id: speaker.speaking_seconds for speaker in result.speakers}
        voiceprint = enroll(name, self.diarize_sync.diarizer.embedding_model(), speaking, result.speaker_embeddings)
        self.store.put(owner, name, voiceprint.to_dict())
        return voiceprint

    def get(self, owner: str, name: str) -> Voiceprint:
        body = self.store.get(owner, check_name(name))
        if body is None:
            raise VoiceprintNotFoundError(f"No voiceprint {name!r}: enroll it with POST /voiceprints.", name=name)
        return Voiceprint.from_dict(body)

    def delete(self, owner: str, name: str) -> None:
        if not self.store.delete(owner, check_name(name)):
            raise VoiceprintNotFoundError(f"No voiceprint {name!r}.", name=name)

    def for_drops(self, owner: str | None, names: tuple[str, ...]) -> Callable[[], tuple[Voiceprint, ...]] | None:
        """The voiceprints objects dropped into the bucket (no job, no caller) are matched against: the deployment
        names an owner and some of its voiceprints (DROP_VOICEPRINT_OWNER, DROP_VOICEPRINTS)."""
        if owner is None or not names:
            return None
        return lambda: self.resolve(owner, list(names))

    def resolve(self, owner: str, names: Any) -> tuple[Voiceprint, ...]:
        """A request's `voiceprints` field: a list of distinct names, each enrolled by this caller."""
        if names is None:
            return ()
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise InvalidRequestError('"voiceprints" must be a list of voiceprint names.')
        if len(set(names)) != len(names) or len(names) > MAX_VOICEPRINTS:
            raise InvalidRequestError(f'"voiceprints" must name at most {MAX_VOICEPRINTS} distinct voiceprints.')
        return tuple(self.get(owner, name) for name in names)
