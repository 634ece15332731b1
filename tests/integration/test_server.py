"""The SageMaker inference server, started the way SageMaker starts it (`serve`), over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from diarization.core.result import load_schema
from infra.media import encode_as, speech_like
from infra.runtime_emulator import ROOT
from support.inference_container import Container


@pytest.fixture(scope="module")
def container(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    server = Container(tiny_model_dir, tmp_path_factory.mktemp("server") / "server.log", MAX_AUDIO_BYTES="6000000")
    server.wait_ready()
    yield server
    assert server.stop() == 0


def test_ping_answers_503_until_the_model_is_loaded(tiny_model_dir: Path, tmp_path: Path) -> None:
    server = Container(tiny_model_dir, tmp_path / "server.log")
    try:
        status, body = server.request("GET", "/ping")  # torch and pyannote take seconds to import
        assert (status, body["status"]) == (503, "loading")
        health = server.wait_ready()
    finally:
        assert server.stop() == 0
    assert health["device"]["device"] == "cpu" and health["device"]["torch_version"].startswith("2.14.1")
    assert health["pyannote_version"] == "4.0.7" and health["model"]["trained"] is False


@pytest.mark.parametrize(
    ("extension", "content_type"),
    [
        ("wav", "audio/wav"),
        ("mp3", "application/octet-stream"),
        ("ogg", "audio/ogg; codecs=opus"),
        ("webm", "video/webm"),
    ],
)
def test_audio_bodies(container: Container, encoded_samples, extension: str, content_type: str) -> None:
    status, result = container.request(
        "POST", "/invocations", encoded_samples[extension].read_bytes(), {"Content-Type": content_type}
    )
    assert status == 200, result
    jsonschema.validate(result, load_schema())
    assert result["audio"]["duration_seconds"] == pytest.approx(30.0, abs=0.06)


def test_hints_and_input_uri_from_custom_attributes(container: Container, encoded_samples) -> None:
    headers = {
        "Content-Type": "audio/flac",
        "X-Amzn-SageMaker-Custom-Attributes": "num_speakers=2, input_uri=s3://bucket/audio/x.flac",
    }
    status, result = container.request("POST", "/invocations", encoded_samples["flac"].read_bytes(), headers)
    assert status == 200 and result["speaker_count"] == 2 and result["parameters"]["num_speakers"] == 2
    assert result["input"]["uri"] == "s3://bucket/audio/x.flac"
    assert "speaker_embeddings" not in result  # only when asked for, as in JSON requests

    headers["X-Amzn-SageMaker-Custom-Attributes"] += ",speaker_embeddings=true"
    status, result = container.request("POST", "/invocations", encoded_samples["flac"].read_bytes(), headers)
    assert status == 200 and set(result["speaker_embeddings"]) == {speaker["id"] for speaker in result["speakers"]}


def test_json_body_with_an_s3_uri(
    container: Container, moto_endpoint: str, encoded_samples, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket="server-input")
    boto3.client("s3").put_object(Bucket="server-input", Key="a/b.m4a", Body=encoded_samples["m4a"].read_bytes())
    # this container must see moto: start one with the session's AWS environment
    server = Container(tiny_model_dir, tmp_path / "server.log")
    try:
        server.wait_ready()
        body = json.dumps({"s3_uri": "s3://server-input/a/b.m4a", "max_speakers": 1}).encode()
        status, result = server.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        assert status == 200 and result["input"]["uri"] == "s3://server-input/a/b.m4a" and result["speaker_count"] <= 1
        status, error = server.request(
            "POST",
            "/invocations",
            json.dumps({"s3_uri": "s3://server-input/none"}).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 404 and error["error"]["code"] == "INPUT_NOT_FOUND"
        # Voiceprints travel in the request; one made by another model is refused before diarizing.
        foreign = {
            "format": "voiceprint-1",
            "name": "alice",
            "model": {"name": "community-1", "revision": "r1", "dimension": 2},
            "created_at": "2026-11-26T00:00:00+00:00",
            "embedding": [0.6, 0.8],
        }
        body = json.dumps({"s3_uri": "s3://server-input/a/b.m4a", "voiceprints": [foreign]}).encode()
        status, error = server.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        assert status == 409 and error["error"]["code"] == "VOICEPRINT_MODEL_MISMATCH"
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"hello", {"Content-Type": "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        (b"\x00garbage" * 500, {"Content-Type": "audio/wav"}, 422, "INVALID_AUDIO"),
        (b"", {"Content-Type": "audio/wav"}, 422, "EMPTY_AUDIO"),
        (b"{not json", {"Content-Type": "application/json"}, 400, "INVALID_REQUEST"),
        (b"[" * 100_000, {"Content-Type": "application/json"}, 400, "INVALID_REQUEST"),
        (b'{"s3_uri": "s3://b/k", "extra": 1}', {"Content-Type": "application/json"}, 400, "INVALID_REQUEST"),
        (b'{"s3_uri": "https://x/y"}', {"Content-Type": "application/json"}, 400, "INVALID_PARAMETER"),
        (
            b'{"s3_uri": "s3://b/k", "voiceprints": "alice"}',
            {"Content-Type": "application/json"},
            400,
            "INVALID_REQUEST",
        ),
        (
            b'{"s3_uri": "s3://b/k", "voiceprints": [{"name": "a"}]}',
            {"Content-Type": "application/json"},
            400,
            "INVALID_VOICEPRINT",
        ),
        (
            b"x",
            {"Content-Type": "audio/wav", "X-Amzn-SageMaker-Custom-Attributes": "num_speakers=two"},
            400,
            "INVALID_PARAMETER",
        ),
        (
            b"x",
            {"Content-Type": "audio/wav", "X-Amzn-SageMaker-Custom-Attributes": "num_speakers=0"},
            400,
            "INVALID_PARAMETER",
        ),
        (
            b"x",
            {"Content-Type": "audio/wav", "X-Amzn-SageMaker-Custom-Attributes": "garbage"},
            400,
            "INVALID_PARAMETER",
        ),
        (
            b"x",
            {"Content-Type": "audio/wav", "X-Amzn-SageMaker-Custom-Attributes": "speaker_embeddings=yes"},
            400,
            "INVALID_PARAMETER",
        ),
    ],
)
def test_bad_requests_are_4xx_and_the_server_lives_on(
    container: Container, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    got_status, got = container.request("POST", "/invocations", body, headers)
    assert (got_status, got["error"]["code"]) == (status, code), got
    assert container.request("GET", "/ping")[0] == 200


def test_oversize_body_is_refused(container: Container) -> None:
    status, body = container.request("POST", "/invocations", b"\x00" * 6_000_001, {"Content-Type": "audio/wav"})
    assert status == 413 and body["error"]["code"] == "AUDIO_TOO_LARGE"


def test_unknown_routes(container: Container) -> None:
    assert container.request("GET", "/health")[0] == 404
    assert container.request("POST", "/ping")[0] == 404


def test_concurrent_requests_are_bounded(container: Container, tmp_path: Path) -> None:
    audio = encode_as(speech_like(60.0), 16_000, tmp_path, "flac").read_bytes()
    results: list[int] = []
    peak = 0

    def send() -> None:
        results.append(container.request("POST", "/invocations", audio, {"Content-Type": "audio/flac"})[0])

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        peak = max(peak, container.request("GET", "/ping")[1]["active_invocations"])
        time.sleep(0.01)
    assert results == [200] * 4
    assert peak == 1  # MAX_CONCURRENT_INVOCATIONS defaults to 1: never two pipelines at once


def test_sigterm_finishes_the_request_in_flight(tiny_model_dir: Path, tmp_path: Path) -> None:
    server = Container(tiny_model_dir, tmp_path / "server.log")
    server.wait_ready()
    audio = encode_as(speech_like(240.0), 16_000, tmp_path, "flac").read_bytes()
    outcome: dict[str, Any] = {}

    def send() -> None:
        outcome["response"] = server.request("POST", "/invocations", audio, {"Content-Type": "audio/flac"})

    thread = threading.Thread(target=send)
    thread.start()
    while server.request("GET", "/ping")[1]["active_invocations"] == 0:
        time.sleep(0.01)
    server.process.send_signal(signal.SIGTERM)
    thread.join(timeout=120)
    assert server.process.wait(timeout=60) == 0
    status, result = outcome["response"]
    assert status == 200 and result["audio"]["duration_seconds"] == pytest.approx(240.0, abs=0.1)
    with pytest.raises(ConnectionRefusedError):
        server.request("GET", "/ping")


def test_train_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "diarization.entrypoint", "train"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "function")},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "does not train" in done.stderr


def raw_exchange(container: Container, request: bytes) -> tuple[int, dict[str, Any], bytes]:
    """Bytes no well-behaved client library would send; the server closes the connection after each of these."""
    with socket.create_connection(("127.0.0.1", container.port), timeout=30) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)  # what a client that stops sending looks like to the server
        raw = b""
        while chunk := connection.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body), raw


INVOCATIONS = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status", "code", "message"),
    [
        (INVOCATIONS + b"\r\n", 400, "INVALID_REQUEST", "Content-Length is required"),
        (INVOCATIONS + b"Content-Length: abc\r\n\r\nabc", 400, "INVALID_REQUEST", "non-negative whole number"),
        (INVOCATIONS + b"Content-Length: -5\r\n\r\n", 400, "INVALID_REQUEST", "non-negative whole number"),
        (INVOCATIONS + b"Content-Length: 1_0\r\n\r\n0123456789", 400, "INVALID_REQUEST", "non-negative whole number"),
        (INVOCATIONS + b"Content-Length: +3\r\n\r\nabc", 400, "INVALID_REQUEST", "non-negative whole number"),
        (INVOCATIONS + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, "INVALID_REQUEST", "one "),
        (INVOCATIONS + b"Content-Length: 100\r\n\r\n" + b"x" * 10, 400, "INVALID_REQUEST", "ended after 10 of"),
        (INVOCATIONS + b"Content-Length: 6000001\r\n\r\n" + b"x" * 10, 413, "AUDIO_TOO_LARGE", "6000001 bytes"),
        (b"GARBAGE\r\n\r\n", 400, "INVALID_REQUEST", "Bad request"),
        (b"POST /invocations HTTP/9.9\r\n\r\n", 505, "INVALID_REQUEST", "Invalid HTTP version"),
        (b"PUT /invocations HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, "INVALID_REQUEST", "'PUT' is not allowed"),
        (INVOCATIONS + b"X-Long: " + b"a" * 70_000 + b"\r\n\r\n", 431, "INVALID_REQUEST", "Line too long"),
    ],
    ids=[
        "no-length",
        "not-a-number",
        "negative",
        "underscore",
        "plus-sign",
        "two-lengths",
        "short-body",
        "over-the-limit-announced",
        "bad-request-line",
        "bad-version",
        "unknown-method",
        "header-too-long",
    ],
)
def test_malformed_requests_get_a_4xx_error_body_and_no_internals(
    container: Container, request_bytes: bytes, status: int, code: str, message: str
) -> None:
    got_status, body, raw = raw_exchange(container, request_bytes)
    assert (got_status, body["error"]["code"]) == (status, code), body
    assert message in body["error"]["message"]
    assert b"Traceback" not in raw and b"ValueError" not in raw and b"invalid literal" not in raw
    assert b"Content-Type: application/json" in raw
    assert container.request("GET", "/ping")[0] == 200


def test_an_unexpected_failure_is_a_500_with_an_error_id_and_no_exception_text(
    moto_endpoint: str, encoded_samples, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A real fault on the server's side: its temporary directory disappears after startup (a lost volume). Once torch
    is imported Python keeps the resolved directory, so the next S3 input cannot be staged: an OSError no code maps."""
    import boto3

    boto3.client("s3").create_bucket(Bucket="server-faults")
    boto3.client("s3").put_object(Bucket="server-faults", Key="a.flac", Body=encoded_samples["flac"].read_bytes())
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    log = tmp_path / "server.log"
    server = Container(tiny_model_dir, log, TMPDIR=str(scratch))
    try:
        server.wait_ready()
        scratch.rmdir()
        body = json.dumps({"s3_uri": "s3://server-faults/a.flac"}).encode()
        status, error = server.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        assert server.request("GET", "/ping")[0] == 200
    finally:
        server.stop()
    assert status == 500 and error["error"]["code"] == "INTERNAL_ERROR", error
    error_id = error["error"]["details"]["error_id"]
    assert error["error"]["message"] == f"An unexpected error occurred; the server logged it with error id {error_id}."
    assert str(scratch) not in json.dumps(error) and "FileNotFoundError" not in json.dumps(error)
    logged = log.read_text()
    assert f"error id {error_id}" in logged and "FileNotFoundError" in logged and "Traceback" in logged
