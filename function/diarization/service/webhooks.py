"""Webhooks: when a job that named a ``callback_url`` ends, its outcome is POSTed there, signed.

Delivery design: a job's end records the delivery on the job, in the same conditional write that ends it (an
outbox), then *enqueues* it (one SQS message); the same function consumes that queue. What was recorded but never
queued (a failed send, a crash in between) is queued by the scheduled sweep (`ResendWebhooks`) once
`WEBHOOK_RESEND_AFTER_SECONDS` have passed. Ending a job happens on every path (a Lambda run, a GPU completion, the
dead-letter consumer, the overdue sweep), always after the result or error object is written; a slow or dead
receiver must not hold up or fail any of them, and a Lambda may not live long enough for the retries a receiver's
outage needs. The queue gives retries that outlive an invocation: a failed attempt hides its message for a growing
delay (`retry_delay`), and after `max_attempts` the queue's redrive policy moves it to the webhook dead-letter queue
(with an alarm). Each attempt's state is recorded on the job (`webhook` in ``GET /jobs/{id}``).

At-least-once: a delivery whose 2xx answer was lost, or that the sweep queued again, is sent again with the same
``X-Diarization-Event-Id`` and body; receivers deduplicate on it.

Signature: ``X-Diarization-Signature: t=<unix seconds>,v2=<hex>``, HMAC-SHA256 over ``f"{t}\n{url}\n"`` + body, with
the job owner's signing key: `owner_key`, HMAC-SHA256 of the owner's identity under the deployment's master secret,
which never leaves the function. So one tenant cannot sign for another (each has a different key), nor replay a
delivery it received to another URL (the URL is signed; a callback URL has no newline). The owner learns its key from
``POST /jobs`` (``webhook_signing_key``, with a ``callback_url``). Receivers check the signature and reject old
timestamps (replays to the same URL within the tolerance are deduplicated by event id).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from diarization.errors import (
    CallbackHostNotAllowedError,
    CallbackUrlInvalidError,
    DiarizationError,
    WebhooksDisabledError,
)
from diarization.service.callbacks import CallbackPolicy
from diarization.service.ports import (
    JobStore,
    Log,
    Telemetry,
    WebhookOutbox,
    WebhookQueue,
    WebhookRecord,
    WebhookSender,
)

EVENT_TYPE = "job.ended"
EVENT_NAMESPACE = uuid.UUID("6f1c2a4e-3b0d-4c6e-9a57-2d8e1f0b7c93")
SIGNATURE_HEADER = "X-Diarization-Signature"
EVENT_ID_HEADER = "X-Diarization-Event-Id"
DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_RETRY_SECONDS = 30.0
REFUSED = (WebhooksDisabledError, CallbackUrlInvalidError, CallbackHostNotAllowedError)
"""The URL is no longer allowed: not retried."""
WEBHOOK_RESEND_AFTER_SECONDS = 300
"""A delivery recorded this long ago and still not queued was lost on its way (its job's path failed or died after
the write that ended the job): the sweep queues it. Queueing normally follows that write within milliseconds."""
KEY_CONTEXT = b"diarization webhook signing key v2\n"
"""What an owner's key is derived for: the master secret's HMAC of this + the owner (never used for anything else)."""
MAX_RETRY_DELAY_SECONDS = 900
"""The longest delay SQS allows on one message (visibility timeout is at most 12 h; 15 min keeps retries useful)."""


def event_id(job_id: str) -> str:
    """One per job: a job ends once, so every delivery of its end carries the same id."""
    return str(uuid.uuid5(EVENT_NAMESPACE, job_id))


def owner_key(master: bytes, owner: str) -> bytes:
    """The signing key of one owner (the API's caller identity): derived, so nothing per tenant is stored, and a key
    gives away neither the master secret nor another owner's key."""
    return hmac.new(master, KEY_CONTEXT + owner.encode(), hashlib.sha256).digest()


def signature(key: bytes, timestamp: int, url: str, body: bytes) -> str:
    """`key`: the owner's (`owner_key`); the URL is signed with the body, so a delivery is valid only where it was
    sent."""
    digest = hmac.new(key, f"{timestamp}\n{url}\n".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v2={digest}"


class SigningKeys:
    """Each owner's key, from the deployment's master secret (`master`: read when needed, so a rotation is seen)."""

    def __init__(self, master: Callable[[], bytes]) -> None:
        self.master = master

    def __call__(self, owner: str) -> str:
        """The key as the owner gets it (``webhook_signing_key``): hex."""
        return owner_key(self.master(), owner).hex()


def retry_delay(attempt: int, base_seconds: float) -> int:
    """Seconds before attempt `attempt + 1`: doubling from `base_seconds`, at most 15 minutes."""
    return int(min(MAX_RETRY_DELAY_SECONDS, base_seconds * 2 ** (attempt - 1)))


class WebhookEvents:
    """Called by the job store each time a job ends (exactly once per job), and by the sweep for deliveries that
    were recorded but never queued: queue the job's webhook, if it has one."""

    def __init__(
        self, jobs: JobStore, outbox: WebhookOutbox, queue: WebhookQueue, log: Log, telemetry: Telemetry
    ) -> None:
        self.jobs = jobs
        self.outbox = outbox
        self.queue = queue
        self.log = log
        self.telemetry = telemetry

    def job_ended(self, job_id: str) -> None:
        # Whatever goes wrong here must not fail the caller: the job has ended and its outputs are written; raising
        # would make its path retry work that is done. The delivery stays in the outbox and the sweep queues it.
        try:
            job = self.jobs.get(job_id)
            if job is None or not job.get("callback_url"):
                return
            delivery = {
                "job_id": job_id,
                "owner": str(job.get("owner") or ""),  # whose key signs it
                "callback_url": job["callback_url"],
                "payload": payload_of(job),
            }
            self.queue.enqueue(delivery)
            self.outbox.webhook_queued(job_id)
        except Exception as error:  # see above: nothing may escape into the result's path
            self.telemetry.failure("WEBHOOK_NOT_QUEUED")
            self.log.warning("webhook not queued (the sweep will): %s", error, extra={"job_id": job_id})


def payload_of(job: Mapping[str, Any]) -> dict[str, Any]:
    """The event, from the ended job's item alone: queued again, it is the same event with the same body."""
    job_id = str(job["job_id"])
    return {
        "event_id": event_id(job_id),
        "type": EVENT_TYPE,
        "job_id": job_id,
        "status": job["status"],
        "input": job.get("input"),
        "created_at": job.get("created_at"),
        "ended_at": job.get("updated_at"),
        "outcome": job.get("outcome"),
    }


class ResendWebhooks:
    """The sweep's part (same schedule as ``EndOverdueJobs``): queue the deliveries that were recorded when their
    job ended but never queued."""

    def __init__(self, outbox: WebhookOutbox, events: WebhookEvents, telemetry: Telemetry) -> None:
        self.outbox = outbox
        self.events = events
        self.telemetry = telemetry

    def __call__(self, now: float) -> list[str]:
        """The ids of the jobs whose delivery was queued again (`now`: the sweep's clock, Unix seconds)."""
        job_ids = self.outbox.unqueued_webhooks(now)
        for job_id in job_ids:
            self.events.job_ended(job_id)
        if job_ids:
            self.telemetry.metric("WebhooksQueuedBySweep", "Count", len(job_ids))
        return job_ids


@dataclass(frozen=True)
class Delivery:
    """`delivered`; `retry` (after `retry_in` seconds); or `dead` (the last attempt failed, or the URL is no
    longer allowed): the message goes to the webhook dead-letter queue."""

    status: str
    attempt: int
    retry_in: int | None = None
    error: str | None = None


class DeliverWebhook:
    def __init__(
        self,
        policy: CallbackPolicy,
        secret: Callable[[], bytes],
        sender: WebhookSender,
        record: WebhookRecord,
        log: Log,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.secret = secret
        self.sender = sender
        self.record = record
        self.log = log
        self.max_attempts = max_attempts
        self.retry_seconds = retry_seconds
        self.clock = clock

    def __call__(self, message: Mapping[str, Any], attempt: int) -> Delivery:
        """One attempt (`attempt` counts from 1: SQS's receive count)."""
        job_id, url, payload = str(message["job_id"]), message["callback_url"], message["payload"]
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        try:
            # Checked again: the allow-list may have shrunk since the job was created.
            self.policy.check(url)
            timestamp = int(self.clock())
            key = owner_key(self.secret(), str(message.get("owner") or ""))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "serverless-diarization-webhook/1",
                EVENT_ID_HEADER: str(payload["event_id"]),
                SIGNATURE_HEADER: signature(key, timestamp, url, body),
            }
            status = self.sender.post(url, body, headers)
        except REFUSED as error:
            return self._finish(job_id, payload, Delivery("dead", attempt, error=str(error)))
        except DiarizationError as error:  # no answer, or the secret cannot be read (fixable): retried
            return self._failed(job_id, payload, attempt, str(error))
        if 200 <= status < 300:
            return self._finish(job_id, payload, Delivery("delivered", attempt))
        # Redirects are not followed (a redirect could point anywhere, around the allow-list): a failure like others.
        return self._failed(job_id, payload, attempt, f"the receiver answered HTTP {status}")

    def _failed(self, job_id: str, payload: Mapping[str, Any], attempt: int, error: str) -> Delivery:
        if attempt >= self.max_attempts:
            return self._finish(job_id, payload, Delivery("dead", attempt, error=error))
        delay = retry_delay(attempt, self.retry_seconds)
        return self._finish(job_id, payload, Delivery("retry", attempt, retry_in=delay, error=error))

    def _finish(self, job_id: str, payload: Mapping[str, Any], delivery: Delivery) -> Delivery:
        state = {
            "event_id": payload["event_id"],
            "status": {"retry": "retrying"}.get(delivery.status, delivery.status),
            "attempts": delivery.attempt,
            "updated_at": int(self.clock()),
        }
        if delivery.error:
            state["last_error"] = delivery.error
        log = self.log.info if delivery.status == "delivered" else self.log.warning
        log("webhook %s", state["status"], extra={"job_id": job_id, **state})
        self.record.record_webhook(job_id, state)
        return delivery
