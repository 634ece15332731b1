"""The real image: built from the Dockerfile with buildah, its own entrypoint run behind the Lambda
Runtime Interface Emulator, against moto server. Slow (the build installs torch): `make image-test`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from local_aws import create_deployment
from runtime_emulator import ROOT, Emulator

pytestmark = pytest.mark.image

IMAGE = "localhost/diarization:test"
BUILDAH = [
    "buildah",
    "--storage-driver",
    "vfs",
    "--root",
    str(ROOT / ".build/containers/root"),
    "--runroot",
    str(ROOT / ".build/containers/run"),
]


@pytest.fixture(scope="module")
def image() -> str:
    subprocess.run(["bash", str(ROOT / "infra/image/build-local.sh"), IMAGE], cwd=ROOT, check=True, timeout=3600)
    return IMAGE


def inspect(image: str) -> dict:
    done = subprocess.run([*BUILDAH, "inspect", "--type", "image", image], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


def test_configuration_of_the_image(image: str) -> None:
    config = inspect(image)["OCIv1"]["config"]
    assert config["Entrypoint"] == ["/opt/venv/bin/python", "-m", "diarization.entrypoint"]
    assert config["Cmd"] == ["diarization.handler.lambda_handler"]
    assert config["User"] == "1000:1000"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["HF_HUB_OFFLINE"] == "1" and env["PYANNOTE_METRICS_ENABLED"] == "false"
    assert env["MODEL_DIR"] == "/opt/diarization/model"
    assert not any("TOKEN" in name or value.startswith("hf_") for name, value in env.items())
    history = json.dumps(inspect(image)["History"])
    assert "hf_" not in history.replace("hf_token", "")  # the secret's id appears, never a value


def test_the_image_entrypoint_diarizes_an_upload(
    image: str, moto_endpoint: str, encoded_samples, tmp_path: Path
) -> None:
    deployment = create_deployment()
    env = {**os.environ, **deployment.env, "AWS_LAMBDA_FUNCTION_TIMEOUT": "900", "NUM_THREADS": "2"}
    emulator = Emulator(env, command=["bash", str(ROOT / "infra/image/run-in-image.sh"), image], cwd=ROOT)
    deployment.s3.put_object(
        Bucket=deployment.bucket, Key="audio/image test.ogg", Body=encoded_samples["ogg"].read_bytes()
    )
    messages = deployment.notifications()
    emulator.start(tmp_path / "function.log")
    try:
        status, response = emulator.invoke(deployment.sqs_event(messages), timeout=900)
        assert status == 200 and response == {"batchItemFailures": []}, emulator.logs()[-4000:]
        status, outcome = emulator.invoke(
            {"bucket": deployment.bucket, "key": "audio/image test.ogg", "num_speakers": 2}
        )
        assert status == 200 and outcome["status"] == "succeeded", outcome
    finally:
        emulator.stop()
    result = deployment.get_json("results/image test.ogg.json")
    assert result["model"]["name"] == "offline-production-untrained"  # baked into the image at build time
    assert result["model"]["torch_version"].startswith("2.14.1")
    assert result["audio"]["original"]["codec"] == "opus"
