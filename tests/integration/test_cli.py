"""The local CLI as a user runs it: a real subprocess, real files, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import tomllib
from pathlib import Path

import boto3
import jsonschema
import pytest

from diarization.core.result import load_schema
from infra.media import speech_like, write_float_wav
from infra.runtime_emulator import free_port

ROOT = Path(__file__).resolve().parents[2]
NO_AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL")


def run_cli(
    *args: str | Path,
    env: dict[str, str] | None = None,
    stdin: bytes | int | None = None,
    drop: tuple[str, ...] = (),
    program: list[str] | None = None,
    umask: int = 0o022,
) -> subprocess.CompletedProcess[str]:
    """``stdin``: bytes to pipe in, or a file descriptor (e.g. a terminal); ``drop``: variables to unset."""
    full_env = {key: value for key, value in os.environ.items() if key != "MODEL_DIR" and key not in drop}
    full_env.update(PYTHONPATH=str(ROOT / "function"), **(env or {}))
    done = subprocess.run(
        [*(program or [sys.executable, "-m", "diarization"]), *map(str, args)],
        env=full_env,
        input=stdin if isinstance(stdin, bytes) else None,
        stdin=None if isinstance(stdin, bytes) else stdin,
        capture_output=True,
        timeout=300,
        preexec_fn=lambda: os.umask(umask),
    )
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: str, exit_code: int) -> str:
    assert done.returncode == exit_code, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {code}: "), done.stderr
    return lines[0]


def assert_fails_at_the_end(done: subprocess.CompletedProcess[str], code: str, exit_code: int) -> str:
    """A failure after diarizing (writing the output): the warnings come first, the error is the last line."""
    assert done.returncode == exit_code, done.stderr
    assert done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {code}: ") and "error:" not in done.stderr.replace(last, ""), done.stderr
    return last


def test_json_to_stdout_on_the_sample(sample_path: Path, tiny_model_dir: Path) -> None:
    done = run_cli(sample_path, "--model-dir", tiny_model_dir, "--threads", "1")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    jsonschema.validate(result, load_schema())
    assert result["audio"]["duration_seconds"] == 30.0 and result["model"]["num_threads"] == 1
    assert "warning: UNTRAINED MODEL" in done.stderr
    assert "segmentation" not in done.stderr and "%" not in done.stderr  # a pipe gets no progress display


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
        (["--output", "s3://bucket"], "INVALID_PARAMETER"),
        (["--output", "s3://bucket/folder/"], "INVALID_PARAMETER"),
        (["--output-dir", "s3://"], "INVALID_PARAMETER"),
        (["--output", "x.json", "--output-dir", "out"], "INVALID_PARAMETER"),
        (["s3:///key"], "INVALID_PARAMETER"),
        (["-", "-"], "INVALID_PARAMETER"),
        (["another.wav"], "INVALID_PARAMETER"),
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


def read_terminal(master: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_on_a_terminal(sample_path: Path, tiny_model_dir: Path, tmp_path: Path, quiet: bool) -> None:
    """Standard error is a pseudo-terminal (standard output stays a pipe, as in `diarize x.wav > x.json`)."""
    (tmp_path / "call.wav").write_bytes(sample_path.read_bytes())
    master, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "diarization", "call.wav", "--model-dir", str(tiny_model_dir)]
        + (["--quiet"] if quiet else []),
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT / "function"), "TERM": "xterm", "COLUMNS": "120"},
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    shown = read_terminal(master)
    os.close(master)
    assert process.stdout is not None
    result = json.loads(process.stdout.read())
    assert process.wait(timeout=60) == 0 and result["audio"]["duration_seconds"] == 30.0
    stages = ("decoding", "loading the model", "segmentation", "counting speakers", "speaker embeddings", "clustering")
    if quiet:
        assert "warning: UNTRAINED MODEL" in shown
        assert not any(stage in shown for stage in stages) and "%" not in shown
    else:
        assert all(f"call.wav: {stage}" in shown for stage in stages), shown
        assert "100%" in shown


def test_a_folder_and_files_into_an_output_dir(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "calls"
    (folder / "nested").mkdir(parents=True)
    for path in (folder / "call.wav", folder / "Call.WAV", folder / "nested" / "skipped.wav", tmp_path / "call.wav"):
        write_float_wav(speech_like(4.0), 16_000, path)
    (folder / "broken.mp3").write_bytes(os.urandom(2048))
    (folder / "notes.txt").write_text("not audio: a folder picks audio files by extension")
    output = tmp_path / "results" / "run1"
    output.mkdir(parents=True)
    kept = output / "call-3.json"
    kept.write_text("an earlier run's result")
    kept.chmod(0o600)
    done = run_cli(folder, tmp_path / "call.wav", "--output-dir", output, "--model-dir", tiny_model_dir, umask=0o027)
    assert done.returncode == 2, done.stderr  # the worst failure: a bad input
    assert done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: INVALID_AUDIO: {folder / 'broken.mp3'}: The input is not a readable audio file "
        "(Invalid data found when processing input)."
    ]
    assert done.stderr.splitlines()[-1] == f"diarize: 3 of 4 inputs diarized into {output}, 1 failed"
    # Sorted by name (upper case first); repeated stems, compared case-insensitively, get -2, -3.
    written = {p.name: json.loads(p.read_text()) for p in output.iterdir()}
    assert {name: result["input"]["uri"] for name, result in written.items()} == {
        "Call.json": str(folder / "Call.WAV"),
        "call-2.json": str(folder / "call.wav"),
        "call-3.json": str(tmp_path / "call.wav"),
    }
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in output.iterdir()}
    assert modes == {"Call.json": "0o640", "call-2.json": "0o640", "call-3.json": "0o600"}  # new: 0666 less umask


def test_batch_problems(tmp_path: Path, tiny_model_dir: Path) -> None:
    audio = write_float_wav(speech_like(2.0), 16_000, tmp_path / "a.wav")
    empty_folder = tmp_path / "empty"
    empty_folder.mkdir()
    (empty_folder / "readme.txt").write_text("no audio here")
    done = run_cli(empty_folder, "--output-dir", tmp_path / "out", "--model-dir", tiny_model_dir)
    assert done.returncode == 2 and "error: INPUT_NOT_FOUND: " in done.stderr and "holds no audio files" in done.stderr
    assert done.stderr.splitlines()[-1] == f"diarize: 0 of 1 inputs diarized into {tmp_path / 'out'}, 1 failed"
    assert_one_line_error(run_cli(empty_folder, "--model-dir", tiny_model_dir), "INVALID_PARAMETER", 2)
    # A model that cannot load stops the run: every other input would fail the same way.
    stopped = run_cli(audio, audio, "--output-dir", tmp_path / "out2", "--model-dir", tmp_path / "nowhere")
    assert_one_line_error(stopped, "MODEL_NOT_FOUND", 3)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for option in ("--output-dir", "--output"):
        line = assert_one_line_error(
            run_cli(audio, option, blocker / "below", "--model-dir", tiny_model_dir), "OUTPUT_NOT_WRITABLE", 2
        )
        assert str(blocker) in line
    assert_one_line_error(run_cli(audio, "--output", tmp_path, "--model-dir", tiny_model_dir), "OUTPUT_NOT_WRITABLE", 2)
    # The worst failure sets the exit status: an unexpected one (S3 unreachable) over a bad input.
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF but not audio")
    unreachable = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "1"}
    unreachable |= {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    mixed = run_cli(broken, "s3://cli-audio/call.wav", "--output-dir", tmp_path / "out3", env=unreachable, drop=NO_AWS)
    assert mixed.returncode == 1, mixed.stderr
    assert [line.split(":")[1] for line in mixed.stderr.splitlines() if line.startswith("error:")] == [
        " INVALID_AUDIO",
        " INTERNAL_ERROR",
    ]
    assert "s3://cli-audio/call.wav: EndpointConnectionError" in mixed.stderr
    assert mixed.stderr.splitlines()[-1] == f"diarize: 0 of 2 inputs diarized into {tmp_path / 'out3'}, 2 failed"


def test_standard_input(encoded_samples: dict[str, Path], tiny_model_dir: Path, tmp_path: Path) -> None:
    done = run_cli("-", "--format", "rttm", "--model-dir", tiny_model_dir, stdin=encoded_samples["mp3"].read_bytes())
    assert done.returncode == 0, done.stderr
    assert done.stdout and all(line.startswith("SPEAKER stdin 1 ") for line in done.stdout.splitlines())
    assert_one_line_error(run_cli("-", "--model-dir", tiny_model_dir, stdin=b""), "EMPTY_AUDIO", 2)
    too_large = run_cli("-", env={"MODEL_DIR": str(tiny_model_dir), "MAX_AUDIO_BYTES": "1000"}, stdin=bytes(5000))
    assert "MAX_AUDIO_BYTES" in assert_one_line_error(too_large, "AUDIO_TOO_LARGE", 2)
    master, terminal = pty.openpty()
    try:
        line = assert_one_line_error(
            run_cli("-", "--model-dir", tiny_model_dir, stdin=terminal), "INVALID_PARAMETER", 2
        )
    finally:
        os.close(master)
        os.close(terminal)
    assert "terminal" in line


def test_version_and_one_program_name() -> None:
    """`diarize` (the console script `make setup` installs) and `python -m diarization` are one program."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"diarize": "diarization.cli.main:main"}
    import importlib.metadata

    expected = (
        f"diarize 0.1.0 (pyannote.audio {importlib.metadata.version('pyannote.audio')}, "
        f"torch {importlib.metadata.version('torch')})\n"
    )
    for program in ([sys.executable, "-m", "diarization"], [str(Path(sys.executable).parent / "diarize")]):
        version = run_cli("--version", program=program)
        assert (version.returncode, version.stdout) == (0, expected), version.stderr
        usage = run_cli("--help", program=program)
        assert usage.returncode == 0 and usage.stdout.startswith("usage: diarize ")
        assert "`python -m diarization` is the same program" in " ".join(usage.stdout.split())
        assert run_cli(program=program).stderr.startswith("error: INVALID_PARAMETER: Give an audio input")


def test_s3_inputs_and_outputs(moto_endpoint: str, tiny_model_dir: Path, sample_path: Path, tmp_path: Path) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="cli-audio")
    clip = write_float_wav(speech_like(3.0), 16_000, tmp_path / "clip.wav").read_bytes()
    for key in ("in/call.wav", "other/call.wav"):
        s3.put_object(Bucket="cli-audio", Key=key, Body=clip)
    done = run_cli(
        "s3://cli-audio/in/call.wav",
        "s3://cli-audio/other/call.wav",
        "--output-dir",
        "s3://cli-audio/results",
        "--model-dir",
        tiny_model_dir,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == "diarize: 2 of 2 inputs diarized into s3://cli-audio/results, 0 failed"
    for name, uri in (("call.json", "s3://cli-audio/in/call.wav"), ("call-2.json", "s3://cli-audio/other/call.wav")):
        stored = s3.get_object(Bucket="cli-audio", Key=f"results/{name}")
        assert stored["ContentType"] == "application/json; charset=utf-8"
        result = json.loads(stored["Body"].read())
        jsonschema.validate(result, load_schema())
        assert result["input"]["uri"] == uri and result["audio"]["duration_seconds"] == 3.0
    single = run_cli(
        "s3://cli-audio/in/call.wav",
        "--format",
        "rttm",
        "--output",
        "s3://cli-audio/one/call.rttm",
        "--model-dir",
        tiny_model_dir,
    )
    assert single.returncode == 0 and single.stdout == "", single.stderr
    rttm = s3.get_object(Bucket="cli-audio", Key="one/call.rttm")["Body"].read().decode()
    assert rttm.startswith("SPEAKER call 1 ")

    too_large = run_cli("s3://cli-audio/in/call.wav", env={"MODEL_DIR": str(tiny_model_dir), "MAX_AUDIO_BYTES": "1000"})
    line = assert_one_line_error(too_large, "AUDIO_TOO_LARGE", 2)
    assert f"s3://cli-audio/in/call.wav is {len(clip)} bytes" in line and "MAX_AUDIO_BYTES" in line
    for uri in ("s3://cli-audio/in/missing.wav", "s3://no-such-bucket/call.wav"):
        assert uri in assert_one_line_error(run_cli(uri, "--model-dir", tiny_model_dir), "INPUT_NOT_FOUND", 2)
    line = assert_fails_at_the_end(
        run_cli(sample_path, "--output", "s3://no-such-bucket/x.json", "--model-dir", tiny_model_dir),
        "OUTPUT_NOT_WRITABLE",
        2,
    )
    assert "s3://no-such-bucket/x.json" in line and "bucket does not exist" in line


def test_s3_without_credentials(tmp_path: Path, sample_path: Path, tiny_model_dir: Path) -> None:
    """boto3's whole chain finds nothing: no variables, no shared files, no instance metadata."""
    nothing = {
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for args in (["s3://cli-audio/in/call.wav"], [sample_path, "--output", "s3://cli-audio/out/call.json"]):
        done = run_cli(*args, "--model-dir", tiny_model_dir, env=nothing, drop=NO_AWS)
        assert "AWS_ACCESS_KEY_ID" in assert_one_line_error(done, "AWS_CREDENTIALS_MISSING", 2)


def test_s3_access_denied(
    iam_enforcing_s3: tuple[str, dict[str, str]], sample_path: Path, tiny_model_dir: Path
) -> None:
    """moto enforcing IAM: the user may write under results/ only."""
    endpoint, credentials = iam_enforcing_s3
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1", **credentials}
    denied = run_cli("s3://locked-audio/audio/secret.wav", "--model-dir", tiny_model_dir, env=env, drop=NO_AWS)
    line = assert_one_line_error(denied, "ACCESS_DENIED", 2)
    assert "s3://locked-audio/audio/secret.wav" in line and "s3:GetObject" in line
    outside = run_cli(
        sample_path,
        "--output",
        "s3://locked-audio/elsewhere/x.json",
        "--model-dir",
        tiny_model_dir,
        env=env,
        drop=NO_AWS,
    )
    assert "s3:PutObject" in assert_fails_at_the_end(outside, "OUTPUT_NOT_WRITABLE", 2)
