"""bf16 embedding trunk: the choice per machine and directory, and agreement with fp32 on real speech.

The agreement tests run the real segmentation-3.0 weights (so the turns come from real speech
detection) with the production WeSpeaker ResNet34 architecture (random weights: community-1's
trained embedding is not reachable here), VBx and PLDA from the offline generator.
Machines with and without native bf16 are simulated by the detection input (:class:`Machine`),
not by mocking torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
from pathlib import Path

import pytest

from diarization.core.config import Settings
from diarization.core.engine import Diarizer
from diarization.core.fastpath import SharedTrunkDiarization
from diarization.core.loader import load_pipeline
from diarization.core.modeldir import MANIFEST_FILE
from diarization.core.precision import (
    MIN_COSINE,
    PRECISION_FILE,
    Proof,
    detect_machine,
    native_bf16,
    write_proof,
)
from diarization.modelmaking.proof import prove, sample_recording


@pytest.fixture(scope="session")
def mixed_model_dir(models_root: Path, production_model_dir: Path) -> Path:
    """Real segmentation-3.0 + production-architecture embedding, VBx and PLDA; cached by the generators' code."""
    from diarization.modelmaking import offline
    from diarization.modelmaking.realweights import onnx_segmentation, pipeline

    digest = hashlib.sha256()
    for module in (offline, onnx_segmentation, pipeline):
        digest.update(Path(str(module.__file__)).read_bytes())
    path = models_root / f"mixed-real-segmentation-{digest.hexdigest()[:12]}"
    if not (path / MANIFEST_FILE).is_file():
        pipeline.write_mixed_pipeline(path, production_model_dir, models_root / "real-weights-cache", "test")
    return path


@pytest.fixture(scope="session")
def ami_tst00(models_root: Path) -> Path:
    """A 4-speaker AMI excerpt (CC-BY-4.0) from pyannote.audio's sdist, cached like the quality harness's."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from quality_data import fetch

    return fetch(models_root / "quality-data") / "tst00.wav"


@pytest.fixture(scope="module")
def proof(mixed_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, ami_tst00: Path) -> Proof:
    """One proof shared by the agreement tests: sample (2 speakers) and tst00 (4 in the reference), forced counts.

    Free counts are left to ``bake``/``prove`` (they agreed too when measured: docs/PERFORMANCE.md): each
    adds an fp32 and a bf16 run, and this file must stay within CI's time budget.
    """
    return prove(
        mixed_model_dir,
        [sample_recording(), ami_tst00],
        threads=2,
        speakers={"sample.wav": 2, "tst00.wav": 4},
        free=False,
    )


# -- detection and choice -------------------------------------------------------------------------


def test_generated_directories_claim_no_proof_and_say_so(
    production_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from diarization.modelmaking import offline

    assert not (production_model_dir / PRECISION_FILE).exists()
    assert offline.main([str(tmp_path / "generated"), "--variant", "tiny"]) == 0
    assert not (tmp_path / "generated" / PRECISION_FILE).exists()
    said = capsys.readouterr().err
    assert f"has no {PRECISION_FILE}" in said and "EMBEDDING_PRECISION=auto runs it in fp32" in said


def test_loading_an_unproven_directory_with_auto_gives_fp32_and_logs_why(
    production_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = tmp_path / "unproven"  # a directory no earlier test loaded, so this load logs
    shutil.copytree(production_model_dir, fresh)
    caplog.set_level(logging.INFO, logger="diarization")
    loaded = load_pipeline(Settings(model_dir=fresh, device="cpu", num_threads=2))
    assert loaded.embedding_precision == "fp32" and loaded.pipeline.trunk_precision == "fp32"
    assert "not proven" in loaded.precision_reason
    assert any(
        "embedding precision fp32" in record.getMessage() and "not proven" in record.getMessage()
        for record in caplog.records
    )


def test_the_tiny_model_reports_fp32_in_the_result(tiny_model_dir: Path) -> None:
    diarizer = Diarizer.from_settings(Settings(model_dir=tiny_model_dir, num_threads=2, embedding_precision="bf16"))
    assert diarizer.loaded.embedding_precision == "fp32"
    assert diarizer.model_info().embedding_precision == "fp32"


def test_the_prove_command_and_bake_verify_only_record_a_verdict(tiny_model_dir: Path, tmp_path: Path) -> None:
    from diarization.modelmaking import bake, proof

    for name, run in (
        ("prove", lambda d: proof.main([str(d), "--threads", "2"])),
        ("verify", lambda d: bake.main([str(d), "--verify-only"])),
    ):
        model_dir = tmp_path / name
        shutil.copytree(tiny_model_dir, model_dir)
        assert run(model_dir) == 0
        recorded = json.loads((model_dir / PRECISION_FILE).read_text())
        assert recorded["proven"] == ["fp32"] and "no WeSpeaker ResNet trunk" in recorded["reason"]


# -- agreement on real speech ---------------------------------------------------------------------


def test_bf16_agrees_with_fp32_on_real_speech(proof: Proof) -> None:
    forced = [check for check in proof.checks if check["num_speakers"] is not None]
    assert {check["recording"] for check in forced} == {"sample.wav", "tst00.wav"}
    for check in forced:
        assert check["rttm_identical"], check
        assert check["turns"] > 0
    for check in proof.checks:
        assert check["min_cosine"] >= MIN_COSINE, check


def test_a_proven_directory_loads_bf16_on_this_machine_and_reports_it(
    mixed_model_dir: Path, proof: Proof, tmp_path: Path
) -> None:
    if "bf16" not in proof.proven:
        pytest.fail(f"bf16 was not proven: {json.dumps(proof.checks)}")
    proven_dir = tmp_path / "proven"
    shutil.copytree(mixed_model_dir, proven_dir)
    write_proof(proven_dir, proof)
    loaded = load_pipeline(Settings(model_dir=proven_dir, device="cpu", num_threads=2))
    expected = "bf16" if native_bf16(detect_machine()) else "fp32"
    assert loaded.embedding_precision == expected
    assert isinstance(loaded.pipeline, SharedTrunkDiarization) and loaded.pipeline.trunk_precision == expected
