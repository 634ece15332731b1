"""A local AWS for the demo and the tests: moto in server mode over HTTP, and the deployment the function expects.

The function talks to it through `AWS_ENDPOINT_URL`, exactly as it talks to AWS: same boto3 calls,
same wire protocol, real S3 -> SQS notifications and real EventBridge rules.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


def start_local_aws() -> tuple[ThreadedMotoServer, str]:
    """Start moto server on a free loopback port and point this process's boto3 (and children) at it."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(FAKE_CREDENTIALS, AWS_ENDPOINT_URL=endpoint, POWERTOOLS_TRACE_DISABLED="true")
    return server, endpoint


JOBS_TABLE: dict[str, Any] = {
    "KeySchema": [{"AttributeName": "job_id", "KeyType": "HASH"}],
    "AttributeDefinitions": [
        {"AttributeName": "job_id", "AttributeType": "S"},
        {"AttributeName": "running", "AttributeType": "S"},
        {"AttributeName": "deadline", "AttributeType": "N"},
    ],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": "running-by-deadline",
            "KeySchema": [
                {"AttributeName": "running", "KeyType": "HASH"},
                {"AttributeName": "deadline", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }
    ],
    "BillingMode": "PAY_PER_REQUEST",
}
"""The jobs table as template.yaml defines it: key `job_id`, and the sparse index the overdue-job sweep queries."""


@dataclass
class Deployment:
    """One isolated stack: bucket -> notification -> queue (+DLQ), tables, event bus -> capture queue."""

    bucket: str
    queue_url: str
    dlq_url: str
    idempotency_table: str
    jobs_table: str
    ordering_table: str
    bus_name: str
    events_queue_url: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def s3(self) -> Any:
        return boto3.client("s3")

    @property
    def sqs(self) -> Any:
        return boto3.client("sqs")

    def receive(self, queue_url: str | None = None, wait: int = 2, max_messages: int = 10) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=queue_url or self.queue_url, MaxNumberOfMessages=max_messages, WaitTimeSeconds=wait
        )
        return list(response.get("Messages", []))

    def notifications(self, expected: int = 1) -> list[dict[str, Any]]:
        """Receive from the work queue until `expected` S3 notifications (besides s3:TestEvent) arrived."""
        messages: list[dict[str, Any]] = []
        for _ in range(20):
            messages += self.receive(wait=1)
            if sum('"Records"' in message["Body"] for message in messages) >= expected:
                return messages
        raise TimeoutError(f"{len(messages)} messages arrived, {expected} notification(s) expected")

    def sqs_event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The event Lambda's SQS poller builds from received messages."""
        arn = f"arn:aws:sqs:{REGION}:123456789012:{self.queue_url.rsplit('/', 1)[-1]}"
        return {
            "Records": [
                {
                    "messageId": message["MessageId"],
                    "receiptHandle": message["ReceiptHandle"],
                    "body": message["Body"],
                    "attributes": {"ApproximateReceiveCount": "1"},
                    "messageAttributes": {},
                    "md5OfBody": message["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn,
                    "awsRegion": REGION,
                }
                for message in messages
            ]
        }

    def captured_events(self, wait: int = 1) -> list[dict[str, Any]]:
        return [json.loads(m["Body"]) for m in self.receive(self.events_queue_url, wait=wait)]

    def get_json(self, key: str) -> dict[str, Any]:
        return dict(json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()))

    def object_keys(self, prefix: str = "") -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for item in listing.get("Contents", []))


def create_deployment(versioned: bool = False) -> Deployment:
    suffix = uuid.uuid4().hex[:10]
    s3, sqs, ddb, events = (boto3.client(name) for name in ("s3", "sqs", "dynamodb", "events"))
    bucket = f"audio-{suffix}"
    s3.create_bucket(Bucket=bucket)
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    dlq_url = sqs.create_queue(QueueName=f"dlq-{suffix}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=f"work-{suffix}",
        Attributes={
            "VisibilityTimeout": "5",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}),
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "audio/"}]}},
                }
            ]
        },
    )
    idempotency_table, jobs_table, ordering_table = f"idempotency-{suffix}", f"jobs-{suffix}", f"ordering-{suffix}"
    for table, key in ((idempotency_table, "id"), (ordering_table, "object")):
        ddb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    ddb.create_table(TableName=jobs_table, **JOBS_TABLE)
    bus_name = f"bus-{suffix}"
    events.create_event_bus(Name=bus_name)
    events_queue_url = sqs.create_queue(QueueName=f"events-{suffix}")["QueueUrl"]
    events_queue_arn = sqs.get_queue_attributes(QueueUrl=events_queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name=f"all-{suffix}", EventBusName=bus_name, EventPattern=json.dumps({"source": ["serverless-diarization"]})
    )
    events.put_targets(
        Rule=f"all-{suffix}", EventBusName=bus_name, Targets=[{"Id": "capture", "Arn": events_queue_arn}]
    )
    deployment = Deployment(
        bucket, queue_url, dlq_url, idempotency_table, jobs_table, ordering_table, bus_name, events_queue_url
    )
    deployment.env = {
        "INPUT_BUCKET": bucket,
        "IDEMPOTENCY_TABLE": idempotency_table,
        "JOBS_TABLE": jobs_table,
        "ORDERING_TABLE": ordering_table,
        "EVENT_BUS_NAME": bus_name,
        "WORK_QUEUE_URL": queue_url,
        "DEAD_LETTER_QUEUE_ARN": dlq_arn,
        "POWERTOOLS_SERVICE_NAME": "diarization",
        "POWERTOOLS_METRICS_NAMESPACE": "DiarizationTest",
    }
    return deployment


@dataclass
class LambdaContext:
    """The context object Lambda passes to a handler (name, ARN, request id, remaining time).

    In-process tests build it here; the runtime tests get the real one from awslambdaric.
    """

    remaining_seconds: float = 900.0
    function_name: str = "diarization"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 10240
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return int(self.remaining_seconds * 1000)
