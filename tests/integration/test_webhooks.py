"""Webhooks: callback URLs on POST /jobs, signed deliveries to a local HTTPS receiver, retries, dead letters.

The receiver is a real TLS server on 127.0.0.1 with a certificate made here for `localhost`; the function trusts it
only through WEBHOOK_CA_BUNDLE, and reaches a loopback address only because WEBHOOK_ALLOWED_NETWORKS says so. It
checks each request with the verification snippet from docs/lambda.md, executed as written.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_api import ALICE, ALICE_AGAIN, BOB, call, post_upload, process_queue
from test_faults import completion, dead_lettered, inference_of

from diarization.aws.api import ANONYMOUS
from diarization.aws.app import FunctionApp
from diarization.aws_ports import webhook_http
from diarization.aws_ports.webhook_http import HttpsSender
from diarization.errors import ConfigurationError
from diarization.service.callbacks import CallbackPolicy
from diarization.service.locations import ObjectRef
from diarization.service.model import Invocation
from diarization.service.webhooks import (
    WEBHOOK_RESEND_AFTER_SECONDS,
    DeliverWebhook,
    WebhookEvents,
    event_id,
    owner_key,
    retry_delay,
    signature,
)
from infra.local_aws import REGION, Deployment, LambdaContext, create_deployment
from support.fakes import MemoryJobs, RecordingTelemetry
from support.webhook_docs import readme_verify

SECRET = "s3cr3t-" + "x" * 40
ANONYMOUS_KEY = owner_key(SECRET.encode(), ANONYMOUS).hex()
"""The signing key of callers without an IAM context (`call` without a caller), the owner of most jobs here."""


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for `localhost` (also its own CA, so it can be the only trusted one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool
    status: int


@dataclass
class Receiver:
    """An HTTPS endpoint answering `statuses` in turn (then 200), recording every request."""

    port: int
    statuses: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    key: str = ANONYMOUS_KEY
    """What the receiver checks signatures with: its owner's `webhook_signing_key`."""

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}/hooks/diarization?tenant=a"

    @property
    def accepted(self) -> list[Received]:
        return [request for request in self.requests if request.status == 200]


@pytest.fixture()
def receiver(certificate: tuple[Path, Path]) -> Iterator[Receiver]:
    verify = readme_verify()
    state = Receiver(0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = state.statuses.pop(0) if state.statuses else 200
            headers = dict(self.headers.items())
            verified = verify(state.key, state.url, headers, body)
            state.requests.append(Received(headers, body, verified, status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture()
def down_receiver() -> Receiver:
    """A port nothing listens on: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return Receiver(port)


@dataclass
class Hooks:
    queue_url: str
    queue_arn: str
    dlq_url: str

    def deliver(self, app: FunctionApp, wait: int = 1) -> list[dict[str, Any]]:
        """Hand what the webhook queue holds now to the function, as the event source mapping would; the failures."""
        sqs = boto3.client("sqs")
        messages = sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait,
            AttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        if not messages:
            return []
        event = {
            "Records": [
                {
                    "messageId": message["MessageId"],
                    "receiptHandle": message["ReceiptHandle"],
                    "body": message["Body"],
                    "attributes": {"ApproximateReceiveCount": message["Attributes"]["ApproximateReceiveCount"]},
                    "messageAttributes": {},
                    "md5OfBody": message["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue_arn,
                    "awsRegion": REGION,
                }
                for message in messages
            ]
        }
        response = app.lambda_handler(event, LambdaContext())
        succeeded = {message["MessageId"] for message in messages} - {
            failure["itemIdentifier"] for failure in response["batchItemFailures"]
        }
        for message in messages:  # what the event source mapping does with the batch's successes
            if message["MessageId"] in succeeded:
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return list(response["batchItemFailures"])

    def dead_letters(self) -> list[dict[str, Any]]:
        messages = boto3.client("sqs").receive_message(QueueUrl=self.dlq_url, WaitTimeSeconds=1).get("Messages", [])
        return [json.loads(message["Body"]) for message in messages]


MAX_ATTEMPTS = 3
CALLERS = [("alice", ALICE), ("alice again", ALICE_AGAIN), ("bob", BOB), ("anonymous", None)]


def add_webhooks(deployment: Deployment, receiver: Receiver, certificate: Path) -> Hooks:
    """The template's webhook resources on moto: queue + dead-letter queue, the secret in SSM, the settings."""
    sqs, suffix = boto3.client("sqs"), deployment.bucket.removeprefix("audio-")
    dlq_url = sqs.create_queue(QueueName=f"webhooks-dlq-{suffix}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_ATTEMPTS)}
    queue_url = sqs.create_queue(
        QueueName=f"webhooks-{suffix}", Attributes={"VisibilityTimeout": "30", "RedrivePolicy": json.dumps(redrive)}
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    parameter = f"/diarization/{suffix}/webhook-secret"
    boto3.client("ssm").put_parameter(Name=parameter, Value=SECRET, Type="SecureString")
    deployment.env.update(
        WEBHOOK_ALLOWED_HOSTS=f"*.hooks.example.com, localhost:{receiver.port}",
        WEBHOOK_SECRET_PARAMETER=parameter,
        WEBHOOK_QUEUE_URL=queue_url,
        WEBHOOK_QUEUE_ARN=queue_arn,
        WEBHOOK_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        WEBHOOK_RETRY_SECONDS="1",
        WEBHOOK_CA_BUNDLE=str(certificate),
        WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8,::1/128",
    )
    return Hooks(queue_url, queue_arn, dlq_url)


def make_app(deployment: Deployment, model_dir: Path, workdir: Path) -> FunctionApp:
    app = FunctionApp({**os.environ, **deployment.env, "MODEL_DIR": str(model_dir), "NUM_THREADS": "2"})
    app.diarize_object.workdir = app.api.diarize_sync.workdir = workdir
    return app


@pytest.fixture()
def deployment(moto_endpoint: str) -> Deployment:
    return create_deployment()


def failing_job(app: FunctionApp, deployment: Deployment, callback_url: str) -> dict[str, Any]:
    """A job that ends quickly: its upload is not audio (INVALID_AUDIO), its error object is written."""
    status, job = call(app, "POST", "/jobs", {"upload": True, "filename": "x.wav", "callback_url": callback_url})
    assert status == 202, job
    key = f"audio/uploads/{job['job_id']}/x.wav"
    deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=b"not audio" * 100)
    process_queue(app, deployment, 1)
    return job


def test_a_finished_job_is_delivered_signed(
    deployment: Deployment,
    receiver: Receiver,
    certificate: tuple[Path, Path],
    tiny_model_dir: Path,
    tmp_path: Path,
    encoded_samples: dict[str, Path],
) -> None:
    hooks = add_webhooks(deployment, receiver, certificate[0])
    app = make_app(deployment, tiny_model_dir, tmp_path)
    status, job = call(app, "POST", "/jobs", {"upload": True, "filename": "call.m4a", "callback_url": receiver.url})
    assert status == 202 and job["callback_url"] == receiver.url and job["webhook_signing_key"] == receiver.key
    assert call(app, "GET", job["status_url"])[1]["webhook"] == {"status": "waiting"}
    assert post_upload(job, encoded_samples["m4a"].read_bytes()) == 204
    process_queue(app, deployment, 1)
    _, done = call(app, "GET", job["status_url"])
    assert done["status"] == "succeeded" and done["webhook"] == {"status": "pending"}  # ended; delivery queued

    assert hooks.deliver(app) == []
    (request,) = receiver.requests
    assert request.verified and request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Diarization-Event-Id"] == event_id(job["job_id"])
    event = json.loads(request.body)
    assert event["type"] == "job.ended" and event["job_id"] == job["job_id"] and event["status"] == "succeeded"
    assert event["event_id"] == event_id(job["job_id"]) and event["input"] == job["input"]
    assert (
        event["outcome"]["output"]["json"] == job["result"]["json"]
        and event["outcome"]["speaker_count"] == done["speaker_count"]
    )
    _, seen = call(app, "GET", job["status_url"])
    assert seen["callback_url"] == receiver.url
    assert seen["webhook"]["status"] == "delivered" and seen["webhook"]["attempts"] == 1
    assert hooks.deliver(app) == [] and len(receiver.requests) == 1  # deleted after its 2xx: sent once


def test_a_tampered_or_stale_delivery_fails_the_readme_check() -> None:
    verify = readme_verify()
    body, now, url = b'{"status":"failed"}', int(time.time()), "https://a.hooks.example.com/x"
    key = owner_key(SECRET.encode(), "123456789012:AROAALICE")
    headers = {"X-Diarization-Signature": signature(key, now, url, body)}
    assert verify(key.hex(), url, headers, body)
    assert not verify(key.hex(), url, headers, body.replace(b"failed", b"succeeded"))
    assert not verify(owner_key(b"another secret", "123456789012:AROAALICE").hex(), url, headers, body)
    old = {"X-Diarization-Signature": signature(key, now - 3600, url, body)}
    assert not verify(key.hex(), url, old, body)


def test_each_caller_gets_its_own_signing_key_with_its_callback_url(
    deployment: Deployment, receiver: Receiver, certificate: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The key comes back from POST /jobs with a callback URL: the same for every job (and session) of one caller,
    another for another caller, never the master secret; none without a callback URL."""
    add_webhooks(deployment, receiver, certificate[0])
    app = make_app(deployment, tiny_model_dir, tmp_path)
    body = {"upload": True, "filename": "a.wav", "callback_url": receiver.url}
    keys = {name: call(app, "POST", "/jobs", body, caller=who)[1]["webhook_signing_key"] for name, who in CALLERS}
    assert keys["alice"] == keys["alice again"] == owner_key(SECRET.encode(), "123456789012:AROAALICE").hex()
    assert keys["bob"] == owner_key(SECRET.encode(), "123456789012:AIDABOB").hex() != keys["alice"]
    assert keys["anonymous"] == ANONYMOUS_KEY and SECRET.encode().hex() not in keys.values()
    assert "webhook_signing_key" not in call(app, "POST", "/jobs", {"upload": True, "filename": "a.wav"})[1]


def test_a_500_then_a_200_is_delivered_once_with_one_event_id(
    deployment: Deployment, receiver: Receiver, certificate: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    hooks = add_webhooks(deployment, receiver, certificate[0])
    app = make_app(deployment, tiny_model_dir, tmp_path)
    receiver.statuses = [500]
    job = failing_job(app, deployment, receiver.url)

    assert len(hooks.deliver(app)) == 1  # the 500: reported failed, hidden for the retry delay (1 s here)
    _, seen = call(app, "GET", job["status_url"])
    assert seen["status"] == "failed" and seen["error"]["code"] == "INVALID_AUDIO"
    assert seen["webhook"]["status"] == "retrying" and "HTTP 500" in seen["webhook"]["last_error"]
    assert hooks.deliver(app, wait=0) == [] and len(receiver.requests) == 1  # not before its delay
    time.sleep(1.2)
    assert hooks.deliver(app) == []
    assert [request.status for request in receiver.requests] == [500, 200]
    assert all(request.verified for request in receiver.requests)
    ids = {request.headers["X-Diarization-Event-Id"] for request in receiver.requests}
    assert ids == {event_id(job["job_id"])}
    event = json.loads(receiver.accepted[0].body)
    assert event["status"] == "failed" and event["outcome"]["error"]["code"] == "INVALID_AUDIO"
    assert call(app, "GET", job["status_url"])[1]["webhook"]["status"] == "delivered"
    assert hooks.deliver(app, wait=2) == [] and len(receiver.accepted) == 1


def test_a_receiver_that_is_down_is_retried_then_dead_lettered(
    deployment: Deployment,
    down_receiver: Receiver,
    certificate: tuple[Path, Path],
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    hooks = add_webhooks(deployment, down_receiver, certificate[0])
    app = make_app(deployment, tiny_model_dir, tmp_path)
    job = failing_job(app, deployment, down_receiver.url)
    error_key = job["result"]["error"].removeprefix(f"s3://{deployment.bucket}/")
    assert deployment.get_json(error_key)["error"]["code"] == "INVALID_AUDIO"  # written, whatever the webhook does

    attempts = []
    deadline = time.monotonic() + 30
    while len(attempts) < MAX_ATTEMPTS and time.monotonic() < deadline:
        if hooks.deliver(app):
            attempts.append(call(app, "GET", job["status_url"])[1]["webhook"])
    assert [attempt["attempts"] for attempt in attempts] == [1, 2, 3]
    assert [attempt["status"] for attempt in attempts] == ["retrying", "retrying", "dead"]
    assert "Connection refused" in attempts[-1]["last_error"]
    assert hooks.deliver(app) == []  # the next receive finds it past maxReceiveCount: SQS's redrive moves it
    (dead,) = hooks.dead_letters()
    assert dead["job_id"] == job["job_id"] and dead["payload"]["event_id"] == event_id(job["job_id"])
    _, seen = call(app, "GET", job["status_url"])
    assert seen["status"] == "failed" and seen["error"]["code"] == "INVALID_AUDIO"


def test_the_overdue_sweep_ending_a_job_sends_its_webhook(
    deployment: Deployment, receiver: Receiver, certificate: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Every terminal transition goes through the job store's end; the sweep's is the one no request is behind."""
    hooks = add_webhooks(deployment, receiver, certificate[0])
    app = make_app(deployment, tiny_model_dir, tmp_path)
    status, job = call(app, "POST", "/jobs", {"upload": True, "filename": "a.wav", "callback_url": receiver.url})
    assert status == 202 and app.end_overdue_jobs is not None
    jobs = app.end_overdue_jobs.jobs
    assert jobs.mark_running(job["job_id"], ObjectRef(deployment.bucket, f"audio/uploads/{job['job_id']}/a.wav"))
    app.end_overdue_jobs(time.time() + 10 * 86400, Invocation.from_remaining(None, "sweep"))
    assert hooks.deliver(app) == []
    event = json.loads(receiver.accepted[0].body)
    assert event["status"] == "failed" and event["outcome"]["error"]["code"] == "JOB_DEADLINE_EXCEEDED"


def test_a_webhook_never_queued_is_sent_by_the_sweep(
    deployment: Deployment, receiver: Receiver, certificate: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The write that ends the job records its delivery; the process dies before queueing it (here: the job store's
    end hook does nothing). GET /jobs says pending, and no longer forever: the sweep queues it after the grace
    period, once, with the job's one event id."""
    hooks = add_webhooks(deployment, receiver, certificate[0])
    app = make_app(deployment, tiny_model_dir, tmp_path)
    assert app.end_overdue_jobs is not None
    jobs = app.end_overdue_jobs.jobs
    queue_it, jobs.on_end = jobs.on_end, lambda job_id: None
    job = failing_job(app, deployment, receiver.url)
    _, seen = call(app, "GET", job["status_url"])
    assert seen["status"] == "failed" and seen["webhook"] == {"status": "pending"}
    assert hooks.deliver(app, wait=0) == [] and receiver.requests == []

    jobs.on_end = queue_it  # a new container
    app.sweep(LambdaContext(), now=time.time() + 10)  # within the grace period: left to the job's own path
    assert hooks.deliver(app) == [] and receiver.requests == []
    app.sweep(LambdaContext(), now=time.time() + WEBHOOK_RESEND_AFTER_SECONDS + 60)
    assert hooks.deliver(app) == []
    (request,) = receiver.requests
    assert request.verified and request.headers["X-Diarization-Event-Id"] == event_id(job["job_id"])
    assert json.loads(request.body)["outcome"]["error"]["code"] == "INVALID_AUDIO"
    assert call(app, "GET", job["status_url"])[1]["webhook"]["status"] == "delivered"
    app.sweep(LambdaContext(), now=time.time() + WEBHOOK_RESEND_AFTER_SECONDS + 120)  # delivered: not again
    assert hooks.deliver(app) == [] and len(receiver.requests) == 1


BAD_URLS = [
    ("http://a.hooks.example.com/x", 400, "CALLBACK_URL_INVALID", "not_https"),
    ("https://user:pw@a.hooks.example.com/x", 400, "CALLBACK_URL_INVALID", "userinfo"),
    ("https://a.hooks.example.com@evil.example/x", 400, "CALLBACK_URL_INVALID", "userinfo"),
    ("https://169.254.169.254/latest/meta-data", 400, "CALLBACK_URL_INVALID", "ip_address"),
    ("https://[::1]/x", 400, "CALLBACK_URL_INVALID", "ip_address"),
    ("https://2130706433/x", 400, "CALLBACK_URL_INVALID", "ip_address"),
    ("https://a.hooks.example.com/" + "x" * 2048, 400, "CALLBACK_URL_INVALID", "too_long"),
    ("https://a.hooks.example.com/x#frag", 400, "CALLBACK_URL_INVALID", "fragment"),
    ("https://a.hooks.example.com/x y", 400, "CALLBACK_URL_INVALID", "characters"),
    ("https://a.hooks.example.com/café", 400, "CALLBACK_URL_INVALID", "not_ascii"),  # was a 202, then retried forever
    ("https://evil.example\\.a.hooks.example.com/x", 400, "CALLBACK_URL_INVALID", "backslash"),  # was a 202
    ("https://a.hooks.example.com:99999/x", 400, "CALLBACK_URL_INVALID", "malformed"),
    ("https:///x", 400, "CALLBACK_URL_INVALID", "no_host"),
    (42, 400, "CALLBACK_URL_INVALID", "not_a_string"),
    ("https://hooks.example.com/x", 400, "CALLBACK_HOST_NOT_ALLOWED", None),  # the suffix itself is not a subdomain
    ("https://evil-hooks.example.com/x", 400, "CALLBACK_HOST_NOT_ALLOWED", None),
    ("https://a.hooks.example.com.evil.example/x", 400, "CALLBACK_HOST_NOT_ALLOWED", None),
    ("https://a.hooks.example.com:8443/x", 400, "CALLBACK_HOST_NOT_ALLOWED", None),  # 443 only, unless listed
    ("https://localhost/x", 400, "CALLBACK_HOST_NOT_ALLOWED", None),  # listed with another port
]


def test_bad_callback_urls_are_refused_before_any_job(
    deployment: Deployment, receiver: Receiver, certificate: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    add_webhooks(deployment, receiver, certificate[0])
    app = make_app(deployment, tiny_model_dir, tmp_path)
    for url, status, code, reason in BAD_URLS:
        got, body = call(app, "POST", "/jobs", {"upload": True, "filename": "a.wav", "callback_url": url})
        assert (got, body["error"]["code"]) == (status, code), url
        assert body["error"].get("details", {}).get("reason") == reason if reason else True, url
    accepted, _ = call(
        app, "POST", "/jobs", {"upload": True, "filename": "a.wav", "callback_url": "https://A.hooks.example.com/x"}
    )
    assert accepted == 202
    assert len(boto3.client("dynamodb").scan(TableName=deployment.jobs_table)["Items"]) == 1


def test_without_allowed_hosts_a_callback_is_refused(
    deployment: Deployment, tiny_model_dir: Path, tmp_path: Path
) -> None:
    app = make_app(deployment, tiny_model_dir, tmp_path)
    status, body = call(
        app, "POST", "/jobs", {"upload": True, "filename": "a.wav", "callback_url": "https://a.example.com/"}
    )
    assert (status, body["error"]["code"]) == (400, "WEBHOOKS_DISABLED")
    assert boto3.client("dynamodb").scan(TableName=deployment.jobs_table)["Items"] == []


@pytest.mark.parametrize(
    "hosts", ["10.0.0.1", "*.com", "exa mple.com", "hooks.example.com:0", "hooks.example.com:https", "*.*.example.com"]
)
def test_invalid_allow_lists_are_configuration_errors(hosts: str) -> None:
    with pytest.raises(ConfigurationError, match="WEBHOOK_ALLOWED_HOSTS"):
        CallbackPolicy.parse(hosts)


def test_enabled_webhooks_need_their_queue_and_secret(deployment: Deployment, tiny_model_dir: Path) -> None:
    env = {**os.environ, **deployment.env, "MODEL_DIR": str(tiny_model_dir), "WEBHOOK_ALLOWED_HOSTS": "a.example.com"}
    with pytest.raises(ConfigurationError, match="WEBHOOK_SECRET_PARAMETER, WEBHOOK_QUEUE_URL, WEBHOOK_QUEUE_ARN"):
        FunctionApp(env)


def test_retries_double_up_to_fifteen_minutes() -> None:
    assert [retry_delay(attempt, 30) for attempt in range(1, 9)] == [30, 60, 120, 240, 480, 900, 900, 900]


def test_a_lost_delivery_queue_does_not_fail_the_job_or_its_result(
    deployment: Deployment, receiver: Receiver, certificate: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Queueing the webhook is the last step of a job's end; if SQS refuses it, the job and its outputs stand."""
    hooks = add_webhooks(deployment, receiver, certificate[0])
    app = make_app(deployment, tiny_model_dir, tmp_path)
    boto3.client("sqs").delete_queue(QueueUrl=hooks.queue_url)
    job = failing_job(app, deployment, receiver.url)  # the work queue's batch reports no failure
    error_key = job["result"]["error"].removeprefix(f"s3://{deployment.bucket}/")
    assert deployment.get_json(error_key)["error"]["code"] == "INVALID_AUDIO"
    _, seen = call(app, "GET", job["status_url"])
    assert seen["status"] == "failed" and seen["webhook"] == {"status": "pending"} and receiver.requests == []


class Recorded:
    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = []

    def record_webhook(self, job_id: str, state: dict[str, Any]) -> None:
        self.states.append(state)


def deliver_once(receiver: Receiver, sender: HttpsSender) -> tuple[str, str | None]:
    policy = CallbackPolicy.parse(f"localhost:{receiver.port}")
    deliver = DeliverWebhook(policy, SECRET.encode, sender, Recorded(), logging.getLogger("test"))
    payload = {"event_id": event_id("0" * 32), "status": "failed"}
    message = {"job_id": "0" * 32, "owner": ANONYMOUS, "callback_url": receiver.url, "payload": payload}
    delivery = deliver(message, attempt=1)
    return delivery.status, delivery.error


def test_the_sender_only_reaches_public_addresses_and_trusted_certificates(
    receiver: Receiver, certificate: tuple[Path, Path]
) -> None:
    """localhost is an allowed name here, but it resolves to loopback: refused unless the network is exempt. The
    receiver's self-signed certificate is trusted only through the CA bundle setting."""
    status, error = deliver_once(receiver, HttpsSender(str(certificate[0])))
    assert status == "retry" and error and "not a public address" in error
    status, error = deliver_once(receiver, HttpsSender(None, [ipaddress.ip_network("127.0.0.0/8")]))
    assert status == "retry" and error and "CERTIFICATE_VERIFY_FAILED" in error
    assert receiver.requests == []  # neither attempt sent a byte of the payload
    sender = HttpsSender(str(certificate[0]), [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")])
    assert deliver_once(receiver, sender) == ("delivered", None)


@contextlib.contextmanager
def stalling_receiver(certificate: tuple[Path, Path], chunks: list[bytes], every: float = 0.2) -> Iterator[Receiver]:
    """A TLS receiver that reads the request, then sends `chunks` one every `every` seconds: each read the sender
    makes gets a byte well within any per-operation timeout."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        try:
            connection, _ = listener.accept()
            with context.wrap_socket(connection, server_side=True) as tls:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += tls.recv(65536)
                for chunk in chunks:
                    if stop.wait(every):
                        return
                    tls.sendall(chunk)
        except OSError:
            return  # the sender hung up: what the test wants

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield Receiver(listener.getsockname()[1])
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


STALLS = {
    # the status line, then one header's value a byte at a time for 8 s, then a 200
    "trickled headers": [b"HTTP/1.1 200 OK\r\nX-Slow: ", *[b"a"] * 40, b"\r\nContent-Length: 0\r\n\r\n"],
    # 100 Continue without end (8 s of them), then a 200
    "endless 100 Continue": [*[b"HTTP/1.1 100 Continue\r\n\r\n"] * 40, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
}


@pytest.mark.parametrize("stall", sorted(STALLS))
def test_a_slow_receiver_is_cut_off_at_the_attempts_deadline(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, stall: str
) -> None:
    """One deadline per attempt, not a timeout per read: the attempt ends within it (loosely: under twice) as a
    retryable failure. Before, each byte reset the 5 s timeout and the attempt lasted as long as the receiver liked."""
    monkeypatch.setattr(webhook_http, "TIMEOUT_SECONDS", 1.0)
    sender = HttpsSender(str(certificate[0]), [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")])
    with stalling_receiver(certificate, STALLS[stall]) as receiver:
        started = time.monotonic()
        status, error = deliver_once(receiver, sender)
        elapsed = time.monotonic() - started
    assert status == "retry" and error and "within 1 s" in error, (status, error)
    assert elapsed < 2 * 1.0, elapsed


def test_redirects_are_not_followed(receiver: Receiver, certificate: tuple[Path, Path]) -> None:
    receiver.statuses = [302]
    sender = HttpsSender(str(certificate[0]), [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")])
    status, error = deliver_once(receiver, sender)
    assert status == "retry" and error == "the receiver answered HTTP 302" and len(receiver.requests) == 1


def test_a_dead_lettered_job_sends_its_webhook(
    deployment: Deployment, receiver: Receiver, certificate: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The dead-letter consumer's end of a job (the work was killed: timeout, out of memory) is announced too."""
    hooks = add_webhooks(deployment, receiver, certificate[0])
    app = make_app(deployment, tiny_model_dir, tmp_path)
    key = "audio/killed.wav"
    deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=b"RIFF" + b"\0" * 100)
    body = {"s3_uri": f"s3://{deployment.bucket}/{key}", "callback_url": receiver.url}
    job = call(app, "POST", "/jobs", body)[1]
    messages = [m for m in deployment.receive(wait=1) if '"job_id"' in m["Body"]]
    assert app.lambda_handler(dead_lettered(deployment, messages), LambdaContext()) == {"batchItemFailures": []}
    assert hooks.deliver(app) == []
    event = json.loads(receiver.accepted[0].body)
    assert event["job_id"] == job["job_id"] and event["outcome"]["error"]["code"] == "INTERNAL_ERROR"


class BrokenQueue:
    def enqueue(self, delivery: dict[str, Any]) -> None:
        raise ConnectionError("SQS is unreachable")


class Unreachable:
    """A sender that must not be called."""

    def post(self, url: str, body: bytes, headers: Any) -> int:
        raise AssertionError("sent")


def test_queueing_failures_are_counted_not_raised() -> None:
    jobs, telemetry = MemoryJobs(), RecordingTelemetry()
    jobs.create("j1", callback_url="https://a.example.com/", status="failed")
    WebhookEvents(jobs, jobs, BrokenQueue(), logging.getLogger("test"), telemetry).job_ended("j1")
    assert telemetry.failures == ["WEBHOOK_NOT_QUEUED"]


def test_a_url_the_allow_list_no_longer_has_is_dead_at_once_and_an_unreadable_secret_is_retried() -> None:
    message = {"job_id": "j1", "callback_url": "https://a.example.com/x", "payload": {"event_id": "e1"}}
    record, log = Recorded(), logging.getLogger("test")
    shrunk = DeliverWebhook(CallbackPolicy.parse("b.example.com"), SECRET.encode, Unreachable(), record, log)
    delivery = shrunk(message, attempt=1)
    assert delivery.status == "dead" and delivery.error and "CALLBACK_HOST_NOT_ALLOWED" in delivery.error
    assert record.states[-1]["status"] == "dead" and record.states[-1]["attempts"] == 1

    def unreadable() -> bytes:
        raise ConfigurationError("WEBHOOK_SECRET_PARAMETER: no SSM parameter '/x'.")

    policy = CallbackPolicy.parse("a.example.com")
    deliver = DeliverWebhook(policy, unreadable, Unreachable(), record, log, max_attempts=3, retry_seconds=30)
    assert (deliver(message, attempt=2).status, deliver(message, attempt=2).retry_in) == ("retry", 60)
    assert deliver(message, attempt=3).status == "dead"  # the last attempt: the queue dead-letters it
    assert "no SSM parameter" in record.states[-1]["last_error"]


def test_a_gpu_completion_ending_a_job_sends_its_webhook(
    deployment: Deployment,
    receiver: Receiver,
    certificate: tuple[Path, Path],
    tiny_model_dir: Path,
    tmp_path: Path,
    encoded_samples: dict[str, Path],
) -> None:
    """A job routed to the GPU ends when SageMaker's notification arrives (here: the inference failed)."""
    hooks = add_webhooks(deployment, receiver, certificate[0])
    deployment.env.update(SAGEMAKER_ENDPOINT_NAME="gpu", GPU_THRESHOLD_SECONDS="10")
    app = make_app(deployment, tiny_model_dir, tmp_path)
    key = "audio/long.flac"
    deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=encoded_samples["flac"].read_bytes())
    body = {"s3_uri": f"s3://{deployment.bucket}/{key}", "callback_url": receiver.url}
    job = call(app, "POST", "/jobs", body)[1]
    messages = [m for m in deployment.receive(wait=1) if '"job_id"' in m["Body"]]
    assert app.lambda_handler(deployment.sqs_event(messages), LambdaContext()) == {"batchItemFailures": []}
    assert call(app, "GET", job["status_url"])[1]["status"] == "running"  # routed: no webhook yet
    assert hooks.deliver(app, wait=0) == [] and receiver.requests == []

    app.lambda_handler(completion(deployment, key, inference_of(deployment, job["job_id"]), "Failed"), LambdaContext())
    assert hooks.deliver(app) == []
    event = json.loads(receiver.accepted[0].body)
    assert event["job_id"] == job["job_id"] and event["outcome"]["error"]["code"] == "GPU_INFERENCE_FAILED"
