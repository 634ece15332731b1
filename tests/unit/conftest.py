"""The unit tier's use cases: the real Diarizer around the model-free engine double, wired to in-memory ports."""

from __future__ import annotations

from pathlib import Path

import pytest

from diarization.core.engine import Diarizer
from support.engine_double import model_free_diarizer
from support.service import Service, make_service


@pytest.fixture(scope="session")
def diarizer() -> Diarizer:
    return model_free_diarizer()


@pytest.fixture()
def service(diarizer: Diarizer, tmp_path: Path) -> Service:
    return make_service(diarizer, tmp_path)
