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
import torch

from diarization.core.config import Settings
from diarization.core.engine import Diarizer
from diarization.core.fastpath import SharedTrunkDiarization
from diarization.core.loader import load_pipeline
from diarization.core.modeldir import MANIFEST_FILE
from diarization.core.precision import (
    MIN_COSINE,
    PRECISION_FILE,
    Machine,
    Proof,
    choose_precision,
    cpu_flags,
    detect_machine,
    native_bf16,
    read_proof,
    write_proof,
)
from diarization.errors import ERROR_CODES, ConfigurationError, PrecisionUnsupportedError
from diarization.modelmaking.proof import prove, sample_recording

EPYC_FLAGS = frozenset(["fpu", "sse2", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"])
"""This project's build machines (AMD EPYC, Zen 4): AVX-512 with native bf16."""
SKYLAKE_FLAGS = frozenset(["fpu", "sse2", "avx2", "avx512f", "avx512bw", "avx512vl"])
"""AVX-512 without bf16: oneDNN still offers bf16 kernels (torch says so) but emulates them, slower than fp32."""
GRAVITON2_FEATURES = frozenset(
    ["fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "asimddp"]
)

BF16_MACHINE = Machine(cpu_flags=EPYC_FLAGS, cpu_capability="AVX512", onednn_bf16=True)
EMULATING_MACHINE = Machine(cpu_flags=SKYLAKE_FLAGS, cpu_capability="AVX512", onednn_bf16=True)
ARM_MACHINE = Machine(cpu_flags=GRAVITON2_FEATURES, cpu_capability="DEFAULT", onednn_bf16=False)
AVX2_MACHINE = Machine(cpu_flags=frozenset(["fpu", "avx2", "avx512_bf16"]), cpu_capability="AVX2", onednn_bf16=True)
"""A bf16 flag but torch dispatching only AVX2 kernels (e.g. ATEN_CPU_CAPABILITY=avx2): not native for torch."""
PROVEN = Proof(proven=("fp32", "bf16"), reason="test")
UNPROVEN = Proof()


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
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
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


def test_native_bf16_needs_the_flag_avx512_kernels_and_onednn() -> None:
    assert native_bf16(BF16_MACHINE)
    assert native_bf16(Machine(frozenset({"amx_bf16"}), "AVX512", True))
    assert not native_bf16(EMULATING_MACHINE)
    assert not native_bf16(ARM_MACHINE)
    assert not native_bf16(AVX2_MACHINE)
    assert not native_bf16(Machine(EPYC_FLAGS, "AVX512", onednn_bf16=False))


def test_cpu_flags_are_read_from_x86_and_arm_cpuinfo() -> None:
    x86 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx512_bf16 avx2\n\nprocessor\t: 1\nflags\t: fpu\n"
    assert cpu_flags(x86) == {"fpu", "avx512_bf16", "avx2"}
    assert cpu_flags("processor\t: 0\nFeatures\t: fp asimd bf16\n") == {"fp", "asimd", "bf16"}
    assert cpu_flags("") == frozenset()


def test_this_machine_is_detected_from_its_own_cpuinfo_and_torch() -> None:
    machine = detect_machine()
    assert machine.cpu_capability == torch.backends.cpu.get_cpu_capability()
    assert machine.cpu_flags == cpu_flags(Path("/proc/cpuinfo").read_text())


def test_auto_picks_bf16_only_on_native_bf16_with_a_proven_directory() -> None:
    chosen = choose_precision("auto", BF16_MACHINE, "cpu", PROVEN)
    assert chosen.precision == "bf16" and "natively" in chosen.reason
    for machine in (EMULATING_MACHINE, ARM_MACHINE, AVX2_MACHINE):
        chosen = choose_precision("auto", machine, "cpu", PROVEN)
        assert chosen.precision == "fp32" and "no native bf16" in chosen.reason


def test_auto_on_an_unproven_directory_is_fp32_and_says_why() -> None:
    chosen = choose_precision("auto", BF16_MACHINE, "cpu", UNPROVEN)
    assert chosen.precision == "fp32"
    assert "not proven" in chosen.reason and PRECISION_FILE in chosen.reason
    failed = Proof(proven=("fp32",), reason="bf16 disagreed with fp32 on sample.wav")
    assert "disagreed" in choose_precision("auto", BF16_MACHINE, "cpu", failed).reason


def test_explicit_settings_are_honoured_and_flag_a_missing_proof() -> None:
    assert choose_precision("fp32", BF16_MACHINE, "cpu", PROVEN).precision == "fp32"
    forced = choose_precision("bf16", EMULATING_MACHINE, "cpu", UNPROVEN)
    assert forced.precision == "bf16" and "not proven" in forced.reason
    assert "not proven" not in choose_precision("bf16", BF16_MACHINE, "cpu", PROVEN).reason


def test_cuda_choices() -> None:
    """No GPU here: the CUDA paths are covered only through this pure function."""
    gpu = Machine(frozenset(), "AVX2", onednn_bf16=False, cuda_bf16=True)
    assert choose_precision("auto", gpu, "cuda", PROVEN).precision == "bf16"
    assert choose_precision("auto", gpu, "cuda:0", PROVEN).precision == "bf16", "the loader passes torch's name"
    assert choose_precision("auto", gpu, "cuda", UNPROVEN).precision == "fp32"
    old_gpu = Machine(frozenset(), "AVX2", onednn_bf16=False, cuda_bf16=False)
    assert choose_precision("auto", old_gpu, "cuda", PROVEN).precision == "fp32"
    assert choose_precision("fp16", gpu, "cuda", UNPROVEN).precision == "fp16"


def test_fp16_on_cpu_is_a_typed_error() -> None:
    with pytest.raises(PrecisionUnsupportedError) as raised:
        choose_precision("fp16", BF16_MACHINE, "cpu", PROVEN)
    assert raised.value.code == "PRECISION_UNSUPPORTED" and ERROR_CODES["PRECISION_UNSUPPORTED"] is type(raised.value)
    assert "GPU" in raised.value.message


def test_a_model_without_the_resnet_trunk_stays_fp32_and_says_so() -> None:
    chosen = choose_precision("bf16", BF16_MACHINE, "cpu", PROVEN, trunk=False)
    assert chosen.precision == "fp32" and "no WeSpeaker ResNet trunk" in chosen.reason


@pytest.mark.parametrize("value", ["bfloat16", "int8", "half", "fp64"])
def test_a_bad_setting_is_a_configuration_error_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({"EMBEDDING_PRECISION": value})
    assert raised.value.code == "CONFIGURATION_ERROR"
    assert "EMBEDDING_PRECISION" in raised.value.message and "auto, fp32, bf16, fp16" in raised.value.message
    with pytest.raises(ConfigurationError):
        choose_precision(value, BF16_MACHINE, "cpu", PROVEN)


def test_good_settings_are_read_case_insensitively() -> None:
    assert Settings.from_env({}).embedding_precision == "auto"
    assert Settings.from_env({"EMBEDDING_PRECISION": " BF16 "}).embedding_precision == "bf16"


def test_a_missing_or_unreadable_proof_is_fp32_only(tmp_path: Path) -> None:
    assert read_proof(tmp_path).proven == ("fp32",)
    (tmp_path / PRECISION_FILE).write_text("{not json")
    unreadable = read_proof(tmp_path)
    assert unreadable.proven == ("fp32",) and "unreadable" in unreadable.reason
    write_proof(tmp_path, PROVEN)
    assert read_proof(tmp_path).proven == ("fp32", "bf16")


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
