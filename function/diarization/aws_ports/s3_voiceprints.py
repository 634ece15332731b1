"""Voiceprints in S3: ``s3://BUCKET/{VOICEPRINT_PREFIX}{owner hash}/{name}.json``.

The owner's SHA-256 (not the owner itself) names the folder: keys stay one plain path segment whatever the
principal id holds, and listing the bucket does not reveal which principals use the API.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from diarization.aws_ports.s3 import S3Store


class S3VoiceprintStore:
    def __init__(self, store: S3Store, location: Callable[[], tuple[str, str]]) -> None:
        """`location`: the voiceprints' (bucket, prefix), asked for at each use, so a deployment whose settings leave
        them nowhere (the host's ``AwsSettings.voiceprint_location`` raises then) is only refused when it uses them."""
        self.store = store
        self.location = location

    def _where(self, owner: str, name: str) -> tuple[str, str]:
        bucket, prefix = self.location()
        return bucket, f"{prefix}{hashlib.sha256(owner.encode('utf-8')).hexdigest()[:32]}/{name}.json"

    def get(self, owner: str, name: str) -> dict[str, Any] | None:
        return self.store.find_json(*self._where(owner, name))

    def put(self, owner: str, name: str, body: dict[str, Any]) -> None:
        self.store.put_json(*self._where(owner, name), body)

    def delete(self, owner: str, name: str) -> bool:
        exists = self.get(owner, name) is not None
        if exists:
            self.store.delete(*self._where(owner, name))
        return exists
