"""Shared fixtures: offline pipelines generated once per session, real audio files."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from diarization.config import Settings
from diarization.runtime import prepare_environment
from media import FORMATS, encode_as, read_wav, sample_wav

prepare_environment(offline=True)


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated pipelines; MODELS_CACHE (set by `make test`) reuses them across runs."""
    cached = os.environ.get("MODELS_CACHE")
    return Path(cached) if cached else tmp_path_factory.mktemp("models")


def _pipeline(root: Path, variant: str) -> Path:
    """Generate once; the name hashes the generator's code so a cached copy is never stale."""
    from diarization import offline, tiny_embedding
    from diarization.modeldir import MANIFEST_FILE
    from diarization.offline import write_offline_pipeline

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
    from local_aws import FAKE_CREDENTIALS, start_local_aws

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


@pytest.fixture(scope="session")
def weights_cache(models_root: Path) -> Path:
    return models_root / "real-weights-cache"


@pytest.fixture(scope="session")
def real_model_dir(models_root: Path, weights_cache: Path) -> Path:
    """Written once per generator version: the name hashes the code that writes it."""
    from diarization import ge2e_embedding, offline
    from diarization.modeldir import MANIFEST_FILE
    from diarization.realweights import onnx_segmentation, pipeline

    digest = hashlib.sha256()
    for module in (pipeline, onnx_segmentation, ge2e_embedding, offline):
        digest.update(Path(str(module.__file__)).read_bytes())
    path = models_root / f"real-weights-{digest.hexdigest()[:12]}"
    if not (path / MANIFEST_FILE).is_file():
        pipeline.write_real_pipeline(path, weights_cache)
    return path
