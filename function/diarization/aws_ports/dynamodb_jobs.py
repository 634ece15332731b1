"""Jobs in DynamoDB: what the API promised, and what happened (queued -> running -> succeeded|failed).

A job runs once, on one input version: the first start records it (``run_input``, ``run_version``) in the same
conditional write that marks the job running, and no other input or version starts it afterwards.

Every change is conditional, so a job ends once: a late or repeated report (a second delivery, a GPU
failure notification after its success) finds the job ended and changes nothing. Jobs that wait for the
same GPU inference are listed on one item of the same table, ``inference-{id}``, which also keeps the
inference's outcome once it has ended, so a job that starts waiting afterwards ends at once, and what was routed
(input, SageMaker's output and failure locations), against which a completion notification is checked.

Deadlines: a running job, and a routed inference without an outcome, carry ``running`` = "1" and ``deadline``
(Unix seconds), the keys of the sparse index ``running-by-deadline``; ending removes both, so the index holds only
open work and the overdue-job sweep queries exactly what is late. A job waiting for an inference leaves the
index: the inference's deadline ends it (see ``diarization.service.overdue``).

Webhook outbox: the write that ends a job with a ``callback_url`` also records its delivery (``webhook`` =
``{"status": "pending"}``) and puts the job in the same index under ``running`` = "webhook", ``deadline`` = when the
sweep may send it again (``WEBHOOK_RESEND_AFTER_SECONDS`` later). Queueing it, or any recorded attempt, takes it out;
what is still there after that grace period was never queued (a failed send, a crash in between) and the sweep sends
it (``diarization.service.webhooks.ResendWebhooks``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import boto3

from diarization.aws_ports.dynamodb import conditionally
from diarization.core.hints import SpeakerHints
from diarization.core.voiceprints import Voiceprint
from diarization.service.locations import ObjectRef
from diarization.service.ordering import Order, version_of
from diarization.service.overdue import (
    DEFAULT_FANOUT_DEADLINE_SECONDS,
    DEFAULT_GPU_DEADLINE_SECONDS,
    DEFAULT_JOB_DEADLINE_SECONDS,
)
from diarization.service.routing import SAGEMAKER, STEPFUNCTIONS, Routing
from diarization.service.webhooks import WEBHOOK_RESEND_AFTER_SECONDS

JOB_ID = re.compile(r"^[0-9a-f]{32}\Z")
"""What ``diarization.service.jobs.new_job_id`` makes: anything else is no job."""
OPEN = "#s IN (:queued, :running)"
INFERENCE_PREFIX = "inference-"
"""Not a job id (JOB_ID), so GET /jobs/{id} can never read these items."""
OVERDUE_INDEX = "running-by-deadline"
RUNNING = "1"
OUTBOX = "webhook"
"""`running` of an ended job whose webhook delivery is recorded but not yet known to be queued."""


class DynamoJobStore:
    def __init__(
        self,
        table_name: str,
        ttl_days: int,
        resource: Any | None = None,
        *,
        job_deadline_seconds: float = DEFAULT_JOB_DEADLINE_SECONDS,
        gpu_deadline_seconds: float = DEFAULT_GPU_DEADLINE_SECONDS,
        fanout_deadline_seconds: float = DEFAULT_FANOUT_DEADLINE_SECONDS,
    ) -> None:
        self.table = (resource or boto3.resource("dynamodb")).Table(table_name)
        self.ttl_seconds = ttl_days * 86400
        self.job_deadline_seconds = job_deadline_seconds
        self.gpu_deadline_seconds = gpu_deadline_seconds
        self.fanout_deadline_seconds = fanout_deadline_seconds
        self.on_end: Callable[[str], None] | None = None
        """Told the id of each job that ends, once (webhooks: ``diarization.service.webhooks.WebhookEvents``)."""

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

    def mark_running(self, job_id: str, run: ObjectRef) -> bool:
        """False when the job does not exist (e.g. an upload path invented by hand), has ended, or has started on
        another run (one conditional write: of two uploads racing, one starts the job). A redelivery keeps the first
        start's deadline (it bounds all deliveries together) and its run."""
        deadline = int(time.time() + self.job_deadline_seconds)
        version = version_of(run)
        same = "#pi = :input" + (" AND #pv = :version" if version else "")
        return self._update(
            job_id,
            "running",
            {},
            sets=[
                "#r = :one",
                "#d = if_not_exists(#d, :deadline)",
                "#pi = if_not_exists(#pi, :input)",
                "#pv = if_not_exists(#pv, :version)",
            ],
            condition=f" AND (attribute_not_exists(#pi) OR ({same}))",
            values={":one": RUNNING, ":deadline": deadline, ":input": run.uri, ":version": version},
        )

    def finish(self, job_id: str, outcome: dict[str, Any]) -> bool:
        """False when the job had already ended: the first terminal state stays."""
        return self._end(job_id, outcome, "")

    def end_overdue(self, job_id: str, outcome: dict[str, Any], now: float) -> bool:
        """`finish`, only while the job is still running and its deadline has passed."""
        return self._end(job_id, outcome, " AND #s = :running AND #d < :now", {":now": _storable(float(now))})

    def overdue_jobs(self, now: float) -> list[str]:
        return [item_id for item_id in self._overdue(now) if not item_id.startswith(INFERENCE_PREFIX)]

    def unqueued_webhooks(self, now: float) -> list[str]:
        """Ended jobs whose webhook was recorded before `now` minus the grace period and never queued."""
        found = []
        for job_id in self._overdue(now, OUTBOX):
            item = self.table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item") or {}
            if item.get("running") == OUTBOX:  # the index lags: the item itself says whether it is still unqueued
                found.append(job_id)
        return found

    def webhook_queued(self, job_id: str) -> None:
        """The delivery is in the queue: the job leaves the outbox."""
        conditionally(
            lambda: self.table.update_item(
                Key={"job_id": job_id},
                UpdateExpression="REMOVE #r, #d",
                ConditionExpression="#r = :outbox",
                ExpressionAttributeNames={"#r": "running", "#d": "deadline"},
                ExpressionAttributeValues={":outbox": OUTBOX},
            )
        )

    def record_routing(self, routing: Routing) -> None:
        """A GPU routing overwrites an earlier one of the same id and its outcome: a new submission is a new inference.
        A fan-out's id is its execution's name, made from the run (one run, one execution): recording the same run
        again keeps an outcome it already has, so a redelivery cannot reopen an inference that has ended."""
        now = int(time.time())
        ref = routing.ref
        fanout = routing.engine == STEPFUNCTIONS
        fields = {
            "input_bucket": ref.bucket,
            "input_key": ref.key,
            "version_id": ref.version_id,
            "etag": ref.etag,
            "output_location": routing.output_location,
            "failure_location": routing.failure_location,
            "formats": None if routing.formats is None else list(routing.formats),
            # One JSON string, as jobs keep them: boto3 refuses Python floats in DynamoDB items.
            "voiceprints": json.dumps([v.to_dict() for v in routing.voiceprints]) if routing.voiceprints else None,
            "engine": routing.engine,
            "hints": None if routing.hints is None else json.dumps(routing.hints.to_dict()),
            "order": None if routing.order is None else [routing.order.position, routing.order.version],
            "submitted_at": now,
            "deadline": int(now + (self.fanout_deadline_seconds if fanout else self.gpu_deadline_seconds)),
            "running": RUNNING,
        }
        names = {f"#f{index}": name for index, name in enumerate(fields)}
        values = {f":f{index}": value for index, value in enumerate(fields.values())}
        sets = [f"#f{index} = :f{index}" for index in range(len(fields))]
        update = "SET " + ", ".join([*sets, "#e = if_not_exists(#e, :expires)"])
        conditionally(
            lambda: self.table.update_item(
                Key={"job_id": INFERENCE_PREFIX + routing.inference_id},
                UpdateExpression=update if fanout else update + " REMOVE #o",
                ExpressionAttributeNames={**names, "#e": "expires_at", "#o": "outcome"},
                ExpressionAttributeValues={**values, ":expires": now + self.ttl_seconds},
                **({"ConditionExpression": "attribute_not_exists(#o)"} if fanout else {}),
            )
        )

    def routing(self, inference_id: str) -> Routing | None:
        key = {"job_id": INFERENCE_PREFIX + inference_id}
        item = self.table.get_item(Key=key, ConsistentRead=True).get("Item")
        if item is None or "input_key" not in item:
            return None  # no routing recorded: only jobs waiting (or an item from before routings were recorded)
        item = _plain(item)
        hints, order = item.get("hints"), item.get("order")
        return Routing(
            inference_id=inference_id,
            ref=ObjectRef(item["input_bucket"], item["input_key"], item.get("version_id"), item.get("etag")),
            output_location=item.get("output_location"),
            failure_location=item.get("failure_location"),
            submitted_at=item.get("submitted_at"),
            deadline=item.get("deadline"),
            ended="outcome" in item,
            formats=None if item.get("formats") is None else tuple(item["formats"]),
            voiceprints=tuple(Voiceprint.from_dict(body) for body in json.loads(item.get("voiceprints") or "[]")),
            engine=str(item.get("engine") or SAGEMAKER),
            hints=None if hints is None else SpeakerHints.from_mapping(json.loads(hints)),
            order=None if order is None else Order(*order),
        )

    def overdue_routings(self, now: float) -> list[Routing]:
        found = []
        for item_id in self._overdue(now):
            if item_id.startswith(INFERENCE_PREFIX):
                routing = self.routing(item_id.removeprefix(INFERENCE_PREFIX))
                # The index is eventually consistent: the item itself says whether it is still open and late.
                if routing is not None and not routing.ended and (routing.deadline or now) < now:
                    found.append(routing)
        return found

    def wait_for_inference(self, job_id: str, inference_id: str) -> dict[str, Any] | None:
        """List the job under the inference; the inference's outcome if it has already ended. The job leaves the
        deadline index: the inference's own deadline ends it together with the inference."""
        self._leave_index(job_id)
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
        conditionally(
            lambda: self.table.update_item(
                Key={"job_id": INFERENCE_PREFIX + inference_id},
                UpdateExpression="SET #o = :outcome, #e = if_not_exists(#e, :expires) REMOVE #r, #d",
                ConditionExpression="attribute_not_exists(#o)",
                ExpressionAttributeNames={"#o": "outcome", "#e": "expires_at", "#r": "running", "#d": "deadline"},
                ExpressionAttributeValues={":outcome": _storable(outcome), ":expires": now + self.ttl_seconds},
            )
        )
        item = self.table.get_item(Key={"job_id": INFERENCE_PREFIX + inference_id}, ConsistentRead=True).get("Item")
        return sorted(str(job) for job in (item or {}).get("waiting", set()))

    def _end(self, job_id: str, outcome: dict[str, Any], condition: str, values: dict[str, Any] | None = None) -> bool:
        """A terminal state; the job leaves the deadline index. With a callback URL the same write records the
        webhook's delivery in the outbox (see the module's docstring), so a crash before it is queued loses nothing."""
        status = "succeeded" if outcome.get("status") == "succeeded" else "failed"
        fields: dict[str, Any] = {"outcome": _storable(outcome)}
        # The callback URL is fixed when the job is created: read first, it decides what the conditional write sets.
        item = self.table.get_item(Key={"job_id": job_id}, ConsistentRead=True, ProjectionExpression="callback_url")
        if item.get("Item", {}).get("callback_url"):
            fields["webhook"] = {"status": "pending"}
            resend = int(time.time() + WEBHOOK_RESEND_AFTER_SECONDS)
            values = {**(values or {}), ":outbox": OUTBOX, ":resend": resend}
            ended = self._update(
                job_id, status, fields, sets=["#r = :outbox", "#d = :resend"], condition=condition, values=values
            )
        else:
            ended = self._update(job_id, status, fields, removes=["#r", "#d"], condition=condition, values=values)
        if ended and self.on_end is not None:
            self.on_end(job_id)  # every terminal transition passes here, on every path: queue the webhook now
        return ended

    def record_webhook(self, job_id: str, state: dict[str, Any]) -> None:
        """The job's webhook delivery state (`webhook`); an attempt was made, so the job leaves the outbox. Only for
        an ended job: one that has expired meanwhile is not created again."""
        conditionally(
            lambda: self.table.update_item(
                Key={"job_id": job_id},
                UpdateExpression="SET #w = :w REMOVE #r, #d",
                ConditionExpression="attribute_exists(job_id) AND #s IN (:succeeded, :failed)",
                ExpressionAttributeNames={"#w": "webhook", "#r": "running", "#d": "deadline", "#s": "status"},
                ExpressionAttributeValues={":w": _storable(state), ":succeeded": "succeeded", ":failed": "failed"},
            )
        )

    def _overdue(self, now: float, running: str = RUNNING) -> list[str]:
        """Ids of items in the sparse index under `running` whose deadline has passed (keys only)."""
        ids: list[str] = []
        query: dict[str, Any] = {
            "IndexName": OVERDUE_INDEX,
            "KeyConditionExpression": "#r = :running AND #d < :now",
            "ExpressionAttributeNames": {"#r": "running", "#d": "deadline"},
            "ExpressionAttributeValues": {":running": running, ":now": _storable(float(now))},
        }
        while True:
            page = self.table.query(**query)
            ids += [str(item["job_id"]) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return ids
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _leave_index(self, job_id: str) -> None:
        conditionally(
            lambda: self.table.update_item(
                Key={"job_id": job_id},
                UpdateExpression="REMOVE #r, #d",
                ConditionExpression="#s = :running",
                ExpressionAttributeNames={"#r": "running", "#d": "deadline", "#s": "status"},
                ExpressionAttributeValues={":running": "running"},
            )
        )

    def _update(
        self,
        job_id: str,
        status: str,
        fields: dict[str, Any],
        *,
        sets: list[str] | None = None,
        removes: list[str] | None = None,
        condition: str = "",
        values: dict[str, Any] | None = None,
    ) -> bool:
        """Only while the job is open (queued or running), and `condition` holds. `#r` and `#d` name the index keys,
        `#pi` and `#pv` the job's run."""
        names = {
            "#s": "status",
            "#u": "updated_at",
            "#r": "running",
            "#d": "deadline",
            "#pi": "run_input",
            "#pv": "run_version",
        }
        all_values: dict[str, Any] = {":s": status, ":u": int(time.time()), **(values or {})}
        expressions = ["#s = :s", "#u = :u", *(sets or [])]
        for index, (name, value) in enumerate(fields.items()):
            names[f"#f{index}"] = name
            all_values[f":f{index}"] = value
            expressions.append(f"#f{index} = :f{index}")
        all_values.update({":queued": "queued", ":running": "running"})
        update = "SET " + ", ".join(expressions) + (" REMOVE " + ", ".join(removes) if removes else "")
        used = {name for name in names if name in update or name in condition or name in OPEN}
        return conditionally(
            lambda: self.table.update_item(
                Key={"job_id": job_id},
                UpdateExpression=update,
                ConditionExpression=f"attribute_exists(job_id) AND {OPEN}{condition}",
                ExpressionAttributeNames={name: names[name] for name in used},
                ExpressionAttributeValues=all_values,
            )
        )


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
