"""`sam local invoke` and `sam local start-api` of the real image against a local AWS — no account needed.

The local AWS is moto server in its own container (``local/moto:5.2.5``, built by ``local_build.py``) on a Docker
network made for it. The function containers that the SAM CLI starts join that network (``--docker-network``) and
reach moto by its alias ``moto``, which is what ``infra/sam-local/env.json`` (the env file handed to the SAM CLI)
points ``AWS_ENDPOINT_URL`` at. moto is also published on 127.0.0.1 only, for the seeding and the tests on this
host. Nothing is addressed by a bridge or host IP: traffic stays on loopback or inside the network created here.

The deployment is seeded with what the files in ``events/`` refer to: bucket ``example-audio-bucket`` with the
objects they name (pyannote's sample recording, encoded as the name says), the work and dead-letter queues, the
tables, an event bus, a job for ``events/api-get-job.json``, and the routing and GPU output that
``events/sagemaker-completion.json`` reports.

Usage (the Makefile's local-invoke / local-api):
    python -m infra.local_sam up                       # start (or reuse) and seed the local AWS
    python -m infra.local_sam invoke EVENT [SAM ARGS]  # up, then sam local invoke DiarizationFunction
    python -m infra.local_sam api [SAM ARGS]           # up, then sam local start-api (127.0.0.1:3000)
    python -m infra.local_sam down                     # remove the container and the network
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from diarization.aws_ports.dynamodb_jobs import DynamoJobStore
from diarization.service.locations import ObjectRef
from diarization.service.routing import Routing
from infra.local_aws import JOBS_TABLE
from infra.local_build import MOTO_IMAGE, ROOT, build_moto_image, run, tool_env
from infra.media import encode_as, read_wav, sample_wav

ENV_FILE = ROOT / "infra/sam-local/env.json"
FUNCTION = "DiarizationFunction"
REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
BUCKET = "example-audio-bucket"
EXAMPLE_JOB_ID = "0123456789abcdef0123456789abcdef"
"""The job `events/api-get-job.json` asks for."""
AUDIO_OBJECTS = {"audio/interview.mp3": "mp3", "audio/meetings/weekly sync.m4a": "m4a", "audio/voicemail.wav": "wav"}
GPU_OUTPUT_KEY = "async-output/interview.out"
GPU_OUTPUT_FIXTURE = ROOT / "infra/sam-local/gpu-output.json"
EXAMPLE_INFERENCE_ID = "example-inference"
"""The inference `events/sagemaker-completion.json` reports; seeded as routed, with GPU_OUTPUT_KEY as its output."""


@dataclass(frozen=True)
class LocalAws:
    """One moto container on one network; several can run side by side (tests pick their own names and port)."""

    network: str = "diarization-local"
    container: str = "diarization-moto"
    port: int = 45660

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, service: str) -> Any:
        return boto3.client(service, **self._connection())

    def resource(self, service: str) -> Any:
        return boto3.resource(service, **self._connection())

    def _connection(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.endpoint,
            "region_name": REGION,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",  # moto accepts any credentials
            "config": Config(retries={"max_attempts": 2}),
        }

    def start(self) -> None:
        """Network and container, reused when they already run."""
        build_moto_image()
        if _docker("network", "inspect", self.network).returncode != 0:
            run("docker", "network", "create", self.network, stdout=subprocess.DEVNULL)
        running = _docker("container", "inspect", "--format", "{{.State.Running}}", self.container)
        if running.stdout.strip() != "true":
            _docker("rm", "--force", self.container)  # stopped (e.g. the engine restarted): start afresh
            run(
                "docker", "run", "--detach", "--rm", "--name", self.container,
                "--network", self.network, "--network-alias", "moto",
                "--publish", f"127.0.0.1:{self.port}:5000",
                MOTO_IMAGE,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):  # noqa: S310 - loopback http
                    return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise RuntimeError(f"moto did not answer on {self.endpoint}: {_docker('logs', self.container).stdout!r}")

    def stop(self) -> None:
        _docker("rm", "--force", self.container)
        _docker("network", "rm", self.network)

    def seed(self) -> None:
        """Create what the env file and the sample events name (idempotent: existing things are kept)."""
        env = json.loads(ENV_FILE.read_text())[FUNCTION]
        s3, sqs, ddb, events = (self.client(name) for name in ("s3", "sqs", "dynamodb", "events"))
        s3.create_bucket(Bucket=env["INPUT_BUCKET"])
        s3.put_bucket_versioning(Bucket=env["INPUT_BUCKET"], VersioningConfiguration={"Status": "Enabled"})
        existing = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
        samples, rate = read_wav(sample_wav())
        with tempfile.TemporaryDirectory() as scratch:
            for key, extension in AUDIO_OBJECTS.items():
                if key not in existing:
                    path = encode_as(samples, rate, Path(scratch), extension)
                    s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
        s3.put_object(Bucket=BUCKET, Key=GPU_OUTPUT_KEY, Body=GPU_OUTPUT_FIXTURE.read_bytes())
        sqs.create_queue(QueueName=env["WORK_QUEUE_URL"].rsplit("/", 1)[-1])
        sqs.create_queue(QueueName=env["DEAD_LETTER_QUEUE_ARN"].rsplit(":", 1)[-1])
        tables = ddb.list_tables()["TableNames"]
        for table, key in ((env["IDEMPOTENCY_TABLE"], "id"), (env["ORDERING_TABLE"], "object")):
            if table not in tables:
                ddb.create_table(
                    TableName=table,
                    KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST",
                )
        if env["JOBS_TABLE"] not in tables:
            ddb.create_table(TableName=env["JOBS_TABLE"], **JOBS_TABLE)
        now = int(time.time())
        ddb.put_item(
            TableName=env["JOBS_TABLE"],
            Item={
                "job_id": {"S": EXAMPLE_JOB_ID},
                "owner": {"S": "anonymous"},  # what the sample event, without an IAM context, calls itself
                "status": {"S": "queued"},
                "input": {"S": f"s3://{BUCKET}/audio/interview.mp3"},
                "created_at": {"N": str(now)},
                "updated_at": {"N": str(now)},
                "expires_at": {"N": str(now + 86400)},
            },
        )
        # What routing would have recorded for the inference events/sagemaker-completion.json reports: a completion
        # is only trusted if it matches its routing (diarization.service.routing).
        DynamoJobStore(env["JOBS_TABLE"], 1, resource=self.resource("dynamodb")).record_routing(
            Routing(
                EXAMPLE_INFERENCE_ID,
                ObjectRef(BUCKET, "audio/interview.mp3"),
                output_location=f"s3://{BUCKET}/{GPU_OUTPUT_KEY}",
                failure_location=None,
            )
        )
        if env["EVENT_BUS_NAME"] not in {bus["Name"] for bus in events.list_event_buses()["EventBuses"]}:
            events.create_event_bus(Name=env["EVENT_BUS_NAME"])

    def sam_args(self) -> list[str]:
        """What every `sam local` command here adds: the env file, the network, and never a registry pull."""
        return ["--env-vars", str(ENV_FILE), "--docker-network", self.network, "--skip-pull-image", "--region", REGION]


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False, env=tool_env())  # noqa: S603,S607


def sam_env() -> dict[str, str]:
    """The SAM CLI hands the host's credentials to the function: moto's fake ones, never a real profile."""
    env = {**tool_env(), **CREDENTIALS, "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    env.pop("AWS_PROFILE", None)
    return env


def ensure_built() -> None:
    if not (ROOT / ".aws-sam/build/template.yaml").is_file():
        sys.exit("No .aws-sam/build: run `make build` first (sam build of the image).")


def main(argv: list[str]) -> None:
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    local = LocalAws()
    if command == "down":
        local.stop()
        return
    if command not in {"up", "invoke", "api"}:
        sys.exit(__doc__)
    local.start()
    local.seed()
    print(f"local AWS (moto) at {local.endpoint}, reachable as http://moto:5000 on network {local.network}")
    if command == "invoke":
        if not rest:
            sys.exit("usage: local_sam.py invoke EVENT [SAM ARGS]")
        ensure_built()
        sam = ["sam", "local", "invoke", FUNCTION, "--event", rest[0], *local.sam_args(), *rest[1:]]
        sys.exit(subprocess.run(sam, cwd=ROOT, env=sam_env(), check=False).returncode)  # noqa: S603
    if command == "api":
        ensure_built()
        sam = ["sam", "local", "start-api", "--host", "127.0.0.1", *local.sam_args(), *rest]
        sys.exit(subprocess.run(sam, cwd=ROOT, env=sam_env(), check=False).returncode)  # noqa: S603


if __name__ == "__main__":
    main(sys.argv[1:])
