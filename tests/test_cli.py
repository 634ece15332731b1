"""The local CLI as a user runs it: a real subprocess, real files, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from diarization.result import load_schema

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {key: value for key, value in os.environ.items() if key != "MODEL_DIR"}
    full_env.update(PYTHONPATH=str(ROOT / "function"), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "diarization", *map(str, args)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: str, exit_code: int) -> str:
    assert done.returncode == exit_code, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {code}: "), done.stderr
    return lines[0]


def test_json_to_stdout_on_the_sample(sample_path: Path, tiny_model_dir: Path) -> None:
    done = run_cli(sample_path, "--model-dir", tiny_model_dir, "--threads", "1")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    jsonschema.validate(result, load_schema())
    assert result["audio"]["duration_seconds"] == 30.0 and result["model"]["num_threads"] == 1
    assert "warning: UNTRAINED MODEL" in done.stderr


def test_rttm_to_a_file_with_model_dir_from_the_environment(
    encoded_samples: dict[str, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out" / "call.rttm"
    done = run_cli(
        encoded_samples["mp3"],
        "--format",
        "rttm",
        "--output",
        output,
        "--num-speakers",
        "2",
        env={"MODEL_DIR": str(tiny_model_dir)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    lines = output.read_text().splitlines()
    assert lines and all(line.startswith("SPEAKER sample 1 ") for line in lines)
    assert {line.split()[7] for line in lines} == {"SPEAKER_00", "SPEAKER_01"}
    assert [p.name for p in output.parent.iterdir()] == ["call.rttm"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--num-speakers", "-1"], "INVALID_PARAMETER"),
        (["--min-speakers", "3", "--max-speakers", "2"], "INVALID_PARAMETER"),
        (["--num-speakers", "2", "--max-speakers", "3"], "INVALID_PARAMETER"),
        (["--num-speakers", "two"], "INVALID_PARAMETER"),
        (["--format", "xml"], "INVALID_PARAMETER"),
        (["--threads", "0"], "INVALID_PARAMETER"),
    ],
)
def test_bad_options(sample_path: Path, tiny_model_dir: Path, args: list[str], code: str) -> None:
    assert_one_line_error(run_cli(sample_path, "--model-dir", tiny_model_dir, *args), code, 2)


def test_bad_inputs(tmp_path: Path, tiny_model_dir: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(os.urandom(4096))
    for path, code in (
        (tmp_path / "missing.wav", "INPUT_NOT_FOUND"),
        (empty, "EMPTY_AUDIO"),
        (garbage, "INVALID_AUDIO"),
    ):
        assert_one_line_error(run_cli(path, "--model-dir", tiny_model_dir), code, 2)


def test_limits_from_the_environment(sample_path: Path, tiny_model_dir: Path) -> None:
    line = assert_one_line_error(
        run_cli(sample_path, env={"MODEL_DIR": str(tiny_model_dir), "MAX_AUDIO_SECONDS": "10"}), "AUDIO_TOO_LONG", 2
    )
    assert "MAX_AUDIO_SECONDS" in line
    assert_one_line_error(
        run_cli(sample_path, env={"MODEL_DIR": str(tiny_model_dir), "MAX_AUDIO_BYTES": "1000"}), "AUDIO_TOO_LARGE", 2
    )


def test_deployment_problems_exit_3(sample_path: Path, tmp_path: Path) -> None:
    line = assert_one_line_error(run_cli(sample_path, "--model-dir", tmp_path / "nowhere"), "MODEL_NOT_FOUND", 3)
    assert str(tmp_path / "nowhere") in line
    assert_one_line_error(
        run_cli(sample_path, env={"DEVICE": "tpu", "MODEL_DIR": str(tmp_path)}), "CONFIGURATION_ERROR", 3
    )
