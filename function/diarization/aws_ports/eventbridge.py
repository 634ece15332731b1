"""Optional EventBridge events when a file is done, for pipelines that react to results."""

from __future__ import annotations

import json
import logging
from typing import Any

import boto3

SOURCE = "serverless-diarization"
SUCCEEDED, FAILED = "Diarization Succeeded", "Diarization Failed"

logger = logging.getLogger("diarization")


class EventBridgeNotifier:
    def __init__(self, bus_name: str, client: Any | None = None) -> None:
        self.bus_name = bus_name
        self.client = client or boto3.client("events")

    def publish(self, outcome: dict[str, Any]) -> bool:
        """Best effort: the result is already in S3, so a failed publish is logged, never retried by reprocessing."""
        detail_type = SUCCEEDED if outcome.get("status") == "succeeded" else FAILED
        try:
            response = self.client.put_events(
                Entries=[
                    {
                        "Source": SOURCE,
                        "DetailType": detail_type,
                        "Detail": json.dumps(outcome, default=str),
                        "EventBusName": self.bus_name,
                    }
                ]
            )
        except Exception:
            logger.exception("could not publish %r to event bus %s", detail_type, self.bus_name)
            return False
        if response.get("FailedEntryCount"):
            logger.error("event bus %s rejected %r: %s", self.bus_name, detail_type, response.get("Entries"))
            return False
        return True
