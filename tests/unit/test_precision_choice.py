"""bf16 embedding trunk: the choice per machine and directory, read from cpuinfo-shaped inputs and proof files.

Machines with and without native bf16 are simulated by the detection input (:class:`Machine`), not by mocking
torch; agreement with fp32 on real speech is in integration/test_precision.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diarization.core.config import Settings
from diarization.core.precision import (
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
