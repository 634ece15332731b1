"""The SAM workflow a Lambda user runs, for real: `sam build` of the Dockerfile with Docker (BuildKit), then
`sam local invoke` of every sample event in events/ and `sam local start-api`, against the local AWS (moto server in
a container on a Docker network made for the test, which the function containers join). Slow: `make image-test`.

What this cannot show without an AWS account: IAM evaluation, the real Lambda service (SAM's emulator runs the
image), S3/SNS/SQS delivering events by themselves (the shipped events are handed over as files), API Gateway's IAM
authorizer (`sam local start-api` does not enforce auth).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from diarization.aws.settings import AwsSettings
from diarization.service.locations import Locations, ObjectRef
from infra.local_build import ROOT, build_image, sam_build, tool_env
from infra.local_sam import BUCKET, ENV_FILE, EXAMPLE_JOB_ID, FUNCTION, GPU_OUTPUT_FIXTURE, LocalAws, sam_env

LOCAL_IMAGE = "diarizationfunction:latest"
"""What `sam build` tags (the function's logical id, lower-cased): the `local` target, as root."""
DEPLOY_IMAGE = "diarization:local"
"""The `function` target, what a deployment ships (unprivileged user)."""


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=True, env=tool_env())
    return done.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def built() -> None:
    sam_build([])
    build_image(DEPLOY_IMAGE)


@pytest.fixture(scope="module")
def local_aws(built: None) -> Iterator[LocalAws]:
    suffix = uuid.uuid4().hex[:8]
    local = LocalAws(network=f"diarization-test-{suffix}", container=f"diarization-moto-{suffix}", port=free_port())
    local.start()
    local.seed()
    yield local
    local.stop()


def sam_invoke(local: LocalAws, event: Path) -> Any:
    """`sam local invoke` as a user types it; the function's answer is the last line SAM prints on stdout."""
    command = ["sam", "local", "invoke", FUNCTION, "--event", str(event), *local.sam_args()]
    done = subprocess.run(command, cwd=ROOT, env=sam_env(), capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines, done.stderr[-4000:]
    return json.loads(lines[-1])


def get_json(local: LocalAws, key: str) -> dict[str, Any]:
    return dict(json.loads(local.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()))


def test_images_carry_no_secret_and_the_deployed_one_runs_unprivileged(built: None) -> None:
    for image in (LOCAL_IMAGE, DEPLOY_IMAGE):
        (config,) = json.loads(docker("image", "inspect", image))
        assert config["Config"]["Entrypoint"] == ["/opt/venv/bin/python", "-m", "diarization.entrypoint"]
        assert config["Config"]["Cmd"] == ["diarization.handler.lambda_handler"]
        env = dict(item.split("=", 1) for item in config["Config"]["Env"])
        assert env["HF_HUB_OFFLINE"] == "1" and env["PYANNOTE_METRICS_ENABLED"] == "false"
        assert env["MODEL_DIR"] == "/opt/diarization/model"
        assert not any("TOKEN" in name or value.startswith("hf_") for name, value in env.items())
        history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image)
        assert "hf_" not in history.replace("hf_token", "")  # the secret's id appears, never a value
    assert json.loads(docker("image", "inspect", DEPLOY_IMAGE))[0]["Config"]["User"] == "1000:1000"
    assert json.loads(docker("image", "inspect", LOCAL_IMAGE))[0]["Config"]["User"] in ("", "root")


# Each shipped event: what the function answers with, and the object it is about.
INTERVIEW, WEEKLY, VOICEMAIL = "audio/interview.mp3", "audio/meetings/weekly sync.m4a", "audio/voicemail.wav"
EVENTS: list[tuple[str, str, str | None]] = [
    ("direct.json", "outcome", INTERVIEW),
    ("s3-put.json", "outcomes", WEEKLY),
    ("sqs-s3-notification.json", "batch", WEEKLY),
    ("eventbridge-object-created.json", "outcomes", INTERVIEW),
    ("sns-s3-notification.json", "outcomes", INTERVIEW),
    ("sqs-sns-s3-notification.json", "batch", INTERVIEW),
    ("api-create-job.json", "api-202", None),
    ("api-get-job.json", "api-200", None),
    ("api-diarize.json", "api-200", None),
    ("sagemaker-completion.json", "outcomes", INTERVIEW),
    ("sqs-dead-letter-destination.json", "gave-up", VOICEMAIL),
]


def test_every_shipped_event_is_covered() -> None:
    assert sorted(name for name, _, _ in EVENTS) == sorted(path.name for path in (ROOT / "events").glob("*.json"))


def forget_earlier_runs(local: LocalAws) -> None:
    """Empty the idempotency table and the results, so that each event is processed (not replayed) and writes anew."""
    table = json.loads(ENV_FILE.read_text())[FUNCTION]["IDEMPOTENCY_TABLE"]
    ddb, s3 = local.client("dynamodb"), local.client("s3")
    for item in ddb.scan(TableName=table)["Items"]:
        ddb.delete_item(TableName=table, Key={"id": item["id"]})
    for listed in s3.list_objects_v2(Bucket=BUCKET, Prefix="results/").get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=listed["Key"])


def check_api_answer(name: str, answer: dict[str, Any], status: int) -> None:
    assert answer["statusCode"] == status, answer
    body = json.loads(answer["body"])
    if name == "api-create-job.json":
        assert body["status"] == "queued" and body["upload"]["url"].startswith("http://moto:5000/"), body
    elif name == "api-get-job.json":
        assert body["job_id"] == EXAMPLE_JOB_ID and body["status"] == "queued", body
    else:
        assert body["input"]["uri"] == f"s3://{BUCKET}/{INTERVIEW}" and body["segments"], body


@pytest.mark.parametrize(("name", "answers", "key"), EVENTS, ids=[name for name, _, _ in EVENTS])
def test_sam_local_invoke_of_each_shipped_event(local_aws: LocalAws, name: str, answers: str, key: str | None) -> None:
    forget_earlier_runs(local_aws)
    answer = sam_invoke(local_aws, ROOT / "events" / name)
    if key is None:
        check_api_answer(name, answer, int(answers.removeprefix("api-")))
        return
    ref = ObjectRef(BUCKET, key)
    if answers == "gave-up":  # the dead-letter consumer: no diarization, an error object
        assert answer == {"batchItemFailures": []}
        error = get_json(local_aws, Locations(AwsSettings()).outputs(ref).error_key)
        assert error["input"]["uri"] == ref.uri and error["error"]["code"] == "INTERNAL_ERROR", error
        return
    if answers == "batch":
        assert answer == {"batchItemFailures": []}
    else:
        outcomes = [answer] if answers == "outcome" else answer["outcomes"]
        assert [outcome["status"] for outcome in outcomes] == ["succeeded"], outcomes
    result = get_json(local_aws, Locations(AwsSettings()).outputs(ref).json_key)
    assert result["input"]["uri"] == ref.uri
    if name == "sagemaker-completion.json":
        assert result["model"]["name"] == json.loads(GPU_OUTPUT_FIXTURE.read_text())["model"]["name"]
    else:
        assert result["model"]["name"] == "offline-production-untrained"  # baked in by `sam build`
        assert result["speaker_count"] >= 1


def request(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    payload = json.dumps(body).encode() if body is not None else None
    call = urllib.request.Request(url, data=payload, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(call, timeout=600) as response:  # loopback only
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@pytest.fixture(scope="module")
def local_api(local_aws: LocalAws, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("api") / "start-api.log").open("wb")
    command = ["sam", "local", "start-api", "--host", "127.0.0.1", "--port", str(port), "--warm-containers", "LAZY"]
    process = subprocess.Popen(
        [*command, *local_aws.sam_args()], cwd=ROOT, env=sam_env(), stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert process.poll() is None, Path(log.name).read_text()[-4000:]
        time.sleep(0.5)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=60)
    # The warm function container outlives a killed CLI; remove whatever SAM left on this test's network.
    for container in docker("ps", "-aq", "--filter", f"network={local_aws.network}").split():
        if container != local_aws.container:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False, env=tool_env())


def test_sam_local_start_api_serves_the_three_routes(local_api: str, local_aws: LocalAws) -> None:
    status, job = request(f"{local_api}/jobs", "POST", {"upload": True, "filename": "team call.mp3", "num_speakers": 2})
    assert status == 202, job
    # The function signs URLs for the endpoint it was given (moto's name on the Docker network); from this host, moto
    # is on loopback. moto checks no signature, so only the address changes.
    upload = urllib.parse.urlsplit(job["upload"]["url"])._replace(netloc=f"127.0.0.1:{local_aws.port}").geturl()
    audio = local_aws.client("s3").get_object(Bucket=BUCKET, Key="audio/interview.mp3")["Body"].read()
    posted = requests.post(upload, data=job["upload"]["fields"], files={"file": ("audio", audio)}, timeout=60)
    assert posted.status_code == 204

    status, polled = request(f"{local_api}/jobs/{job['job_id']}")
    assert status == 200 and polled["job_id"] == job["job_id"] and polled["status"] == "queued", polled

    status, result = request(f"{local_api}/diarize", "POST", {"s3_uri": job["input"], "num_speakers": 2})
    assert status == 200, result
    assert result["input"]["uri"] == job["input"] and result["speaker_count"] == 2

    status, error = request(f"{local_api}/jobs/{uuid.uuid4().hex}")
    assert status == 404 and error["error"]["code"], error
