"""Voiceprints in S3: ``s3://BUCKET/{VOICEPRINT_PREFIX}{owner hash}/{name}.json``.

The owner's SHA-256 (not the owner itself) names the folder: keys stay one plain path segment whatever the
principal id holds, and listing the bucket does not reveal which principals use the API.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from botocore.exceptions import ClientError

from diarization.aws.settings import AwsSettings
from diarization.aws_ports.s3 import NOT_FOUND, S3Store


class S3VoiceprintStore:
    def __init__(self, store: S3Store, settings: AwsSettings) -> None:
        self.store = store
        self.settings = settings

    def _where(self, owner: str, name: str) -> tuple[str, str]:
        bucket, prefix = self.settings.voiceprint_location()
        return bucket, f"{prefix}{hashlib.sha256(owner.encode('utf-8')).hexdigest()[:32]}/{name}.json"

    def get(self, owner: str, name: str) -> dict[str, Any] | None:
        bucket, key = self._where(owner, name)
        try:
            body = self.store.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in NOT_FOUND:
                return None
            raise
        value: dict[str, Any] = json.loads(body)
        return value

    def put(self, owner: str, name: str, body: dict[str, Any]) -> None:
        self.store.put_json(*self._where(owner, name), body)

    def delete(self, owner: str, name: str) -> bool:
        exists = self.get(owner, name) is not None
        if exists:
            self.store.delete(*self._where(owner, name))
        return exists
