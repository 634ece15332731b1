"""Jobs in DynamoDB: what the API promised, and what happened (queued -> running -> succeeded|failed).

Every change is conditional, so a job ends once: a late or repeated report (a second delivery, a GPU
failure notification after its success) finds the job ended and changes nothing. Jobs that wait for the
same GPU inference are listed on one item of the same table, ``inference-{id}``, which also keeps the
inference's outcome once it has ended, so a job that starts waiting afterwards ends at once.
"""

from __future__ import annotations

import re
import time
import uuid
from decimal import Decimal
from typing import Any

import boto3
from botocore.exceptions import ClientError

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
OPEN = "#s IN (:queued, :running)"
INFERENCE_PREFIX = "inference-"
"""Not a job id (JOB_ID), so GET /jobs/{id} can never read these items."""


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    def __init__(self, table_name: str, ttl_days: int, resource: Any | None = None) -> None:
        self.table = (resource or boto3.resource("dynamodb")).Table(table_name)
        self.ttl_seconds = ttl_days * 86400

    def create(self, job_id: str, *, owner: str, **fields: Any) -> dict[str, Any]:
        """`owner`: the caller that created the job (see diarization.aws.api.owner_of); only it may see the job."""
        now = int(time.time())
        item = {
            "job_id": job_id,
            "owner": owner,
            "status": "queued",
            "created_at": now,
            "updated_at": now,
            "expires_at": now + self.ttl_seconds,
            **{key: value for key, value in fields.items() if value is not None},
        }
        self.table.put_item(Item=item, ConditionExpression="attribute_not_exists(job_id)")
        return item

    def get(self, job_id: str) -> dict[str, Any] | None:
        if not JOB_ID.match(job_id):
            return None
        item = self.table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item")
        return None if item is None else _plain(item)

    def mark_running(self, job_id: str) -> bool:
        """False when the job does not exist (e.g. an upload path invented by hand) or has ended."""
        return self._update(job_id, "running", {})

    def finish(self, job_id: str, outcome: dict[str, Any]) -> bool:
        """False when the job had already ended: the first terminal state stays."""
        status = "succeeded" if outcome.get("status") == "succeeded" else "failed"
        fields = {"outcome": _storable(outcome)}
        return self._update(job_id, status, fields)

    def wait_for_inference(self, job_id: str, inference_id: str) -> dict[str, Any] | None:
        """List the job under the inference; the inference's outcome if it has already ended."""
        now = int(time.time())
        response = self.table.update_item(
            Key={"job_id": INFERENCE_PREFIX + inference_id},
            UpdateExpression="ADD #w :job SET #e = if_not_exists(#e, :expires)",
            ExpressionAttributeNames={"#w": "waiting", "#e": "expires_at"},
            ExpressionAttributeValues={":job": {job_id}, ":expires": now + self.ttl_seconds},
            ReturnValues="ALL_NEW",
        )
        outcome = response.get("Attributes", {}).get("outcome")
        return None if outcome is None else dict(_plain(outcome))

    def end_inference(self, inference_id: str, outcome: dict[str, Any]) -> list[str]:
        """Keep the inference's first outcome; the ids of the jobs waiting for it."""
        now = int(time.time())
        try:
            self.table.update_item(
                Key={"job_id": INFERENCE_PREFIX + inference_id},
                UpdateExpression="SET #o = :outcome, #e = if_not_exists(#e, :expires)",
                ConditionExpression="attribute_not_exists(#o)",
                ExpressionAttributeNames={"#o": "outcome", "#e": "expires_at"},
                ExpressionAttributeValues={":outcome": _storable(outcome), ":expires": now + self.ttl_seconds},
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
        item = self.table.get_item(Key={"job_id": INFERENCE_PREFIX + inference_id}, ConsistentRead=True).get("Item")
        return sorted(str(job) for job in (item or {}).get("waiting", set()))

    def _update(self, job_id: str, status: str, fields: dict[str, Any]) -> bool:
        """Only while the job is open (queued or running)."""
        names = {"#s": "status", "#u": "updated_at"}
        values: dict[str, Any] = {":s": status, ":u": int(time.time())}
        sets = ["#s = :s", "#u = :u"]
        for index, (name, value) in enumerate(fields.items()):
            names[f"#f{index}"] = name
            values[f":f{index}"] = value
            sets.append(f"#f{index} = :f{index}")
        condition = f"attribute_exists(job_id) AND {OPEN}"
        values.update({":queued": "queued", ":running": "running"})
        try:
            self.table.update_item(
                Key={"job_id": job_id},
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True


def _plain(value: Any) -> Any:
    """DynamoDB hands numbers back as Decimal; callers (and JSON) want int or float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _storable(value: Any) -> Any:
    """DynamoDB refuses floats: store them as Decimal."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {key: _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value
