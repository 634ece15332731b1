"""End to end through the real Lambda runtime: the RIE, awslambdaric, module init, moto server."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local_aws import Deployment, create_deployment
from infra.runtime_emulator import ROOT, Emulator, emulator_name, find_emulator


def function_env(deployment: Deployment, model_dir: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
        **deployment.env,
        "MODEL_DIR": str(model_dir),
        "NUM_THREADS": "2",
        "PYTHONPATH": str(ROOT / "function"),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": "300",
    }


@pytest.fixture()
def deployment(moto_endpoint: str) -> Deployment:
    return create_deployment()


@pytest.fixture()
def emulator(deployment: Deployment, tiny_model_dir: Path, tmp_path: Path) -> Iterator[Emulator]:
    emulator = Emulator(function_env(deployment, tiny_model_dir))
    emulator.start(tmp_path / "function.log")
    yield emulator
    emulator.stop()


def test_upload_notification_through_the_runtime_and_a_warm_second_call(
    emulator: Emulator, deployment: Deployment, encoded_samples
) -> None:
    deployment.s3.put_object(
        Bucket=deployment.bucket, Key="audio/rie/first call.mp3", Body=encoded_samples["mp3"].read_bytes()
    )
    messages = deployment.notifications()

    status, response = emulator.invoke(deployment.sqs_event(messages))
    assert status == 200, emulator.logs()[-3000:]
    assert response == {"batchItemFailures": []}
    result = deployment.get_json("results/rie/first call.mp3.json")
    assert result["model"]["name"] == "offline-tiny-untrained" and result["speaker_count"] >= 1

    deployment.s3.put_object(
        Bucket=deployment.bucket, Key="audio/rie/second.wav", Body=encoded_samples["wav"].read_bytes()
    )
    started = time.perf_counter()
    status, outcome = emulator.invoke({"bucket": deployment.bucket, "key": "audio/rie/second.wav"})
    warm_seconds = time.perf_counter() - started
    assert status == 200 and outcome["status"] == "succeeded", outcome
    assert warm_seconds < 30  # no model reload: the tiny pipeline takes about a second warm

    records = [json.loads(line) for line in emulator.logs().splitlines() if line.startswith("{")]
    assert [r["message"] for r in records if r.get("message") == "ready"] == ["ready"]  # init ran once
    cold = [r["cold_start"] for r in records if r.get("message") == "diarized"]
    assert cold == [True, False]


def test_a_missing_model_is_an_init_error(deployment: Deployment, tmp_path: Path) -> None:
    emulator = Emulator(function_env(deployment, tmp_path / "no-model"))
    emulator.start(tmp_path / "function.log")
    try:
        status, body = emulator.invoke({"bucket": deployment.bucket, "key": "audio/x.wav"})
    finally:
        emulator.stop()
    assert status == 502 and body["errorType"] == "ModelNotFoundError", body
    assert body["errorMessage"].startswith(f"MODEL_NOT_FOUND: Model directory '{tmp_path / 'no-model'}' does not exist")
    assert "python -m diarization.modelmaking.offline" in body["errorMessage"]


@pytest.mark.parametrize(
    ("machine", "binary"),
    [
        ("x86_64", "aws-lambda-rie-x86_64"),
        ("AMD64", "aws-lambda-rie-x86_64"),  # what Windows reports
        ("aarch64", "aws-lambda-rie-arm64"),  # Linux on ARM (Graviton, Raspberry Pi)
        ("arm64", "aws-lambda-rie-arm64"),  # macOS on Apple silicon
        ("ARM64", "aws-lambda-rie-arm64"),
    ],
)
def test_the_emulator_matches_the_machine(machine: str, binary: str) -> None:
    assert emulator_name(machine) == binary


def test_both_emulators_ship_with_the_tools_and_can_be_overridden(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LAMBDA_RIE", raising=False)
    for machine, name in (("aarch64", "aws-lambda-rie-arm64"), ("x86_64", "aws-lambda-rie-x86_64")):
        found = find_emulator(machine)
        assert found.name == name and found.parent.match("samcli/local/rapid") and os.access(found, os.X_OK)
    monkeypatch.setenv("LAMBDA_RIE", str(tmp_path / "my-rie"))
    assert find_emulator("aarch64") == tmp_path / "my-rie"  # an explicit binary wins over everything
