"""Shared fixtures (offline pipelines generated once per session, real audio files, moto) and the test tiers.

A test's tier is its directory: ``unit/`` (no model, no moto, no Docker, no AWS tools; `make test-fast`),
``integration/`` (real pyannote, moto server, the runtime emulator) and ``image/`` (Docker and the SAM CLI). The
marker of the same name is added here, never by hand, and a unit test that asks for a heavy fixture fails collection.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from diarization.core.config import Settings
from diarization.core.runtime import prepare_environment
from infra.media import FORMATS, encode_as, read_wav, sample_wav
from infra.runtime_emulator import free_port

prepare_environment(offline=True)

TIERS = ("unit", "integration", "image")
HEAVY_FIXTURES = frozenset(
    {"models_root", "tiny_model_dir", "production_model_dir", "real_model_dir", "weights_cache", "tiny_settings"}
    | {"moto_endpoint", "iam_enforcing_s3"}
)
"""What the unit tier may not ask for: generated or downloaded models, and moto."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.path)).relative_to(Path(__file__).parent).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/{{{','.join(TIERS)}}}/, by tier")
        item.add_marker(tier)
        heavy = HEAVY_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if tier == "unit" and heavy:
            raise pytest.UsageError(f"{item.nodeid} is a unit test but uses {sorted(heavy)}: move it to integration/")


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated pipelines; MODELS_CACHE (set by `make test`) reuses them across runs."""
    cached = os.environ.get("MODELS_CACHE")
    return Path(cached) if cached else tmp_path_factory.mktemp("models")


def _pipeline(root: Path, variant: str) -> Path:
    """Generate once; the name hashes the generator's code so a cached copy is never stale."""
    from diarization.core.modeldir import MANIFEST_FILE
    from diarization.modelmaking import offline, tiny_embedding
    from diarization.modelmaking.offline import write_offline_pipeline

    digest = hashlib.sha256()
    for module in (offline, tiny_embedding):
        digest.update(Path(str(module.__file__)).read_bytes())
    path = root / f"offline-{variant}-{digest.hexdigest()[:12]}"
    if not (path / MANIFEST_FILE).is_file():
        write_offline_pipeline(path, variant=variant, seed=0)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(models_root: Path) -> Path:
    return _pipeline(models_root, "tiny")


@pytest.fixture(scope="session")
def production_model_dir(models_root: Path) -> Path:
    return _pipeline(models_root, "production")


@pytest.fixture(scope="session")
def weights_cache(models_root: Path) -> Path:
    return models_root / "real-weights-cache"


@pytest.fixture(scope="session")
def real_model_dir(models_root: Path, weights_cache: Path) -> Path:
    """Written once per generator version: the name hashes the code that writes it."""
    from diarization.core.modeldir import MANIFEST_FILE
    from diarization.modelmaking import ge2e_embedding, offline
    from diarization.modelmaking.realweights import onnx_segmentation, pipeline

    digest = hashlib.sha256()
    for module in (pipeline, onnx_segmentation, ge2e_embedding, offline):
        digest.update(Path(str(module.__file__)).read_bytes())
    path = models_root / f"real-weights-{digest.hexdigest()[:12]}"
    if not (path / MANIFEST_FILE).is_file():
        pipeline.write_real_pipeline(path, weights_cache)
    return path


@pytest.fixture(scope="session")
def sample_extent(sample_samples: tuple[np.ndarray, int]) -> Any:
    """The whole recording: what is scored (pyannote.metrics would otherwise guess it from the turns)."""
    from pyannote.core import Segment, Timeline

    samples, rate = sample_samples
    return Timeline([Segment(0.0, len(samples) / rate)])


@pytest.fixture(scope="session")
def sample_reference(sample_path: Path) -> Any:
    from pyannote.database.util import load_rttm

    return next(iter(load_rttm(str(sample_path.with_suffix(".rttm"))).values()))


@pytest.fixture(scope="session")
def tiny_settings(tiny_model_dir: Path) -> Settings:
    return Settings(model_dir=tiny_model_dir, num_threads=2)


@pytest.fixture(scope="session")
def sample_path() -> Path:
    return sample_wav()


@pytest.fixture(scope="session")
def sample_samples() -> tuple[np.ndarray, int]:
    return read_wav(sample_wav())


@pytest.fixture(scope="session")
def encoded_samples(
    tmp_path_factory: pytest.TempPathFactory, sample_samples: tuple[np.ndarray, int]
) -> dict[str, Path]:
    """The 30 s sample encoded in every supported format (various rates and channel counts)."""
    directory = tmp_path_factory.mktemp("encoded")
    samples, rate = sample_samples
    return {extension: encode_as(samples, rate, directory, extension, stem="sample") for extension in FORMATS}


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto in server mode, shared by the session; the environment points boto3 at it."""
    from infra.local_aws import FAKE_CREDENTIALS, start_local_aws

    names = [*FAKE_CREDENTIALS, "AWS_ENDPOINT_URL", "POWERTOOLS_TRACE_DISABLED"]
    saved = {name: os.environ.get(name) for name in names}
    server, endpoint = start_local_aws()
    yield endpoint
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture()
def iam_enforcing_s3(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A second moto server that enforces IAM: after 5 set-up requests, every call is checked against
    the caller's policy. The function's user may write results but not read inputs."""
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "5"}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        admin = {
            "endpoint_url": endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": "admin",
            "aws_secret_access_key": "admin",
        }
        s3, iam = boto3.client("s3", **admin), boto3.client("iam", **admin)
        s3.create_bucket(Bucket="locked-audio")
        s3.put_object(Bucket="locked-audio", Key="audio/secret.wav", Body=b"RIFF....")
        iam.create_user(UserName="function")
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:PutObject", "s3:DeleteObject"],
                    "Resource": "arn:aws:s3:::locked-audio/results/*",
                }
            ],
        }
        iam.put_user_policy(UserName="function", PolicyName="results-only", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="function")["AccessKey"]
        yield endpoint, {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    finally:
        server.terminate()
        server.wait(timeout=10)
