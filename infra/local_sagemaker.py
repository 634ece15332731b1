"""A local stand-in for SageMaker asynchronous inference, for tests and demos without AWS.

It plays the service between the Lambda function and the inference container: the InvokeEndpointAsync
API over HTTP (boto3 reaches it through AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME and cannot tell it from
AWS), a queue worked one request at a time (MaxConcurrentInvocationsPerInstance=1), the read of the
InputLocation object from S3, the POST to the container's /invocations, the output or failure object
in S3, and the success or error notification on SNS. moto's own invoke_endpoint_async is canned (it
neither reads the input nor calls a container), so it would hide exactly the bugs this path can have.
"""

from __future__ import annotations

import datetime
import http.client
import json
import queue
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3


class AsyncEndpointStandIn:
    def __init__(
        self, endpoint_name: str, container_port: int, output_path: str, success_topic: str, error_topic: str
    ) -> None:
        self.endpoint_name = endpoint_name
        self.container_port = container_port
        self.output_bucket, _, prefix = output_path.removeprefix("s3://").partition("/")
        self.output_prefix = prefix.rstrip("/") + "/" if prefix else ""
        self.success_topic = success_topic
        self.error_topic = error_topic
        self.requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.submitted: list[dict[str, Any]] = []
        self.running = threading.Event()
        self.running.set()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                stand_in._accept(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._threads = [
            threading.Thread(target=self.server.serve_forever, daemon=True),
            threading.Thread(target=self._work, daemon=True),
        ]

    def start(self) -> AsyncEndpointStandIn:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.requests.put(None)
        self.server.shutdown()

    def wait_idle(self, timeout: float = 600) -> None:
        """Until every accepted request has been processed and notified."""
        done = threading.Event()
        self.requests.put({"barrier": done})
        if not done.wait(timeout):
            raise TimeoutError("the stand-in endpoint is still busy")

    def _accept(self, request: BaseHTTPRequestHandler) -> None:
        parts = request.path.strip("/").split("/")
        headers = request.headers
        if len(parts) != 3 or parts[0] != "endpoints" or parts[2] != "async-invocations":
            return self._reply(
                request, 404, {"message": f"Unknown path {request.path}"}, error="UnknownOperationException"
            )
        if parts[1] != self.endpoint_name:
            return self._reply(request, 400, {"message": f"Endpoint {parts[1]} not found."}, error="ValidationError")
        input_location = headers.get("X-Amzn-SageMaker-InputLocation")
        if not input_location or not input_location.startswith("s3://"):
            return self._reply(request, 400, {"message": "InputLocation is required."}, error="ValidationError")
        inference_id = headers.get("X-Amzn-SageMaker-Inference-Id") or str(uuid.uuid4())
        job = {
            "inference_id": inference_id,
            "input_location": input_location,
            "content_type": headers.get("X-Amzn-SageMaker-Content-Type", "application/octet-stream"),
            "custom_attributes": headers.get("X-Amzn-SageMaker-Custom-Attributes", ""),
            "output_key": f"{self.output_prefix}{inference_id}.out",
            "failure_key": f"{self.output_prefix}failures/{inference_id}-error.out",
        }
        self.submitted.append(job)
        self.requests.put(job)
        return self._reply(
            request,
            202,
            {"InferenceId": inference_id},
            extra={
                "X-Amzn-SageMaker-OutputLocation": f"s3://{self.output_bucket}/{job['output_key']}",
                "X-Amzn-SageMaker-FailureLocation": f"s3://{self.output_bucket}/{job['failure_key']}",
            },
        )

    @staticmethod
    def _reply(
        request: BaseHTTPRequestHandler,
        status: int,
        body: dict[str, Any],
        error: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        if error:
            request.send_header("X-Amzn-ErrorType", error)
        for name, value in (extra or {}).items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(data)

    def _work(self) -> None:
        s3, sns = boto3.client("s3"), boto3.client("sns")
        while (job := self.requests.get()) is not None:
            if "barrier" in job:
                job["barrier"].set()
                continue
            self.running.wait()  # tests clear it to act between acceptance and processing
            received = _now()
            bucket, _, key = job["input_location"].removeprefix("s3://").partition("/")
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            connection = http.client.HTTPConnection("127.0.0.1", self.container_port, timeout=3600)
            connection.request(
                "POST",
                "/invocations",
                body=body,
                headers={
                    "Content-Type": job["content_type"],
                    "X-Amzn-SageMaker-Custom-Attributes": job["custom_attributes"],
                },
            )
            response = connection.getresponse()
            payload = response.read()
            connection.close()
            notification: dict[str, Any] = {
                "awsRegion": s3.meta.region_name,
                "eventTime": _now(),
                "receivedTime": received,
                "requestParameters": {
                    "contentType": job["content_type"],
                    "endpointName": self.endpoint_name,
                    "inputLocation": job["input_location"],
                },
                "inferenceId": job["inference_id"],
                "eventVersion": "1.0",
                "eventSource": "aws:sagemaker",
                "eventName": "InferenceResult",
            }
            if response.status == 200:
                s3.put_object(Bucket=self.output_bucket, Key=job["output_key"], Body=payload)
                notification["invocationStatus"] = "Completed"
                notification["responseParameters"] = {
                    "contentType": response.getheader("Content-Type", "application/json"),
                    "outputLocation": f"s3://{self.output_bucket}/{job['output_key']}",
                }
                topic = self.success_topic
            else:
                s3.put_object(Bucket=self.output_bucket, Key=job["failure_key"], Body=payload)
                notification["invocationStatus"] = "Failed"
                notification["failureReason"] = (
                    f"ClientError: Received client error ({response.status}) from primary with message "
                    f'"{payload[:200].decode(errors="replace")}".'
                )
                notification["responseParameters"] = {
                    "contentType": response.getheader("Content-Type", "application/json"),
                    "failureLocation": f"s3://{self.output_bucket}/{job['failure_key']}",
                }
                topic = self.error_topic
            sns.publish(TopicArn=topic, Message=json.dumps(notification))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sns_event(sqs_messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The event Lambda receives from an SNS subscription, rebuilt from SNS envelopes delivered to SQS."""
    records = []
    for message in sqs_messages:
        envelope = json.loads(message["Body"])
        records.append(
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"{envelope['TopicArn']}:{uuid.uuid4()}",
                "Sns": {
                    "Type": envelope["Type"],
                    "MessageId": envelope["MessageId"],
                    "TopicArn": envelope["TopicArn"],
                    "Subject": envelope.get("Subject"),
                    "Message": envelope["Message"],
                    "Timestamp": envelope["Timestamp"],
                    "SignatureVersion": envelope.get("SignatureVersion", "1"),
                    "Signature": envelope.get("Signature", ""),
                    "SigningCertUrl": envelope.get("SigningCertURL", ""),
                    "UnsubscribeUrl": envelope.get("UnsubscribeURL", ""),
                    "MessageAttributes": envelope.get("MessageAttributes", {}),
                },
            }
        )
    return {"Records": records}


def topic_with_queue(name: str) -> tuple[str, str]:
    """An SNS topic and an SQS queue subscribed to it (to collect what the topic publishes)."""
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name=name)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"{name}-inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    return topic, queue_url
