"""Jobs in DynamoDB: what the API promised, and what happened (queued -> running -> succeeded|failed)."""

from __future__ import annotations

import re
import time
import uuid
from decimal import Decimal
from typing import Any

import boto3
from botocore.exceptions import ClientError

JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    def __init__(self, table_name: str, ttl_days: int, resource: Any | None = None) -> None:
        self.table = (resource or boto3.resource("dynamodb")).Table(table_name)
        self.ttl_seconds = ttl_days * 86400

    def create(self, job_id: str, **fields: Any) -> dict[str, Any]:
        now = int(time.time())
        item = {
            "job_id": job_id,
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
        """False when the job does not exist (e.g. an upload path invented by hand)."""
        return self._update(job_id, "running", {}, only_if="#s IN (:queued, :running)")

    def finish(self, job_id: str, outcome: dict[str, Any]) -> bool:
        status = "succeeded" if outcome.get("status") == "succeeded" else "failed"
        fields = {"outcome": _storable(outcome)}
        return self._update(job_id, status, fields, only_if=None)

    def _update(self, job_id: str, status: str, fields: dict[str, Any], only_if: str | None) -> bool:
        names = {"#s": "status", "#u": "updated_at"}
        values: dict[str, Any] = {":s": status, ":u": int(time.time())}
        sets = ["#s = :s", "#u = :u"]
        for index, (name, value) in enumerate(fields.items()):
            names[f"#f{index}"] = name
            values[f":f{index}"] = value
            sets.append(f"#f{index} = :f{index}")
        condition = "attribute_exists(job_id)"
        if only_if:
            condition += f" AND {only_if}"
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
