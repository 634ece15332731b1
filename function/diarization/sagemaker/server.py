"""The SageMaker inference server: `serve` starts it on port 8080 (GET /ping, POST /invocations).

The same core as the Lambda function, in a long-running process: the pipeline loads in the background
(/ping answers 503 until it is ready), requests run at most MAX_CONCURRENT_INVOCATIONS at a time so GPU
memory is never oversubscribed, and SIGTERM stops accepting, finishes what is in flight, then exits.
Asynchronous endpoints post the input object's bytes; hints (and the input's URI, for the result) come
in the X-Amzn-SageMaker-Custom-Attributes header, and `speaker_embeddings=true` there asks for the speakers'
centroids (the Lambda function names routed results with them). A JSON body
`{"s3_uri", hints, "voiceprints": [voiceprint objects]}` names the speakers that match the voiceprints it carries.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from diarization.core import jsontext
from diarization.core.capacity import MemoryBudget
from diarization.core.config import Settings
from diarization.core.engine import Diarizer
from diarization.core.environment import Kind, Table, Variable, read
from diarization.core.hints import HINT_NAMES, SpeakerHints
from diarization.core.voiceprints import Voiceprint
from diarization.errors import (
    AudioTooLargeError,
    DiarizationError,
    InvalidParameterError,
    InvalidRequestError,
    NotFoundError,
)
from diarization.service.locations import ObjectRef, parse_s3_uri
from diarization.service.ports import ObjectStore
from diarization.service.sync import DiarizeSync, SyncRequest

logger = logging.getLogger("diarization.server")

SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")
ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
AUDIO_TYPES = ("audio/", "video/webm", "video/mp4", "video/ogg", "application/octet-stream")
CONTENT_LENGTH = re.compile(r"^[0-9]{1,19}\Z")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class ServerSettings:
    """The inference server's own settings (the core's come from ``Settings``)."""

    port: int = 8080
    max_concurrent: int = 1
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerSettings:
        values, problems = read(SERVER_TABLE, env)
        if problems:
            raise SERVER_TABLE.error(problems)
        return cls(**values)  # type: ignore[arg-type]


SERVER_TABLE = Table(
    title="SageMaker server settings",
    see="docs/configuration.md",
    variables=(
        Variable(
            "SAGEMAKER_BIND_TO_PORT",
            "port",
            Kind.WHOLE,
            "`8080`",
            "The port `serve` listens on (SageMaker sets it when it needs another).",
            minimum=1,
            maximum=65535,
        ),
        Variable(
            "MAX_CONCURRENT_INVOCATIONS",
            "max_concurrent",
            Kind.WHOLE,
            "`1`",
            "Files diarized at once; more wait (`/ping` stays healthy). More than 1 only multiplies the pipeline's "
            "peak memory: one call already uses every CPU or the GPU.",
            minimum=1,
        ),
        Variable("LOG_LEVEL", "log_level", Kind.CHOICE, "`info`", "The server's log level.", choices=LOG_LEVELS),
    ),
)
"""Digits only: `int()` would also take signs, blanks and underscores, which no HTTP client sends."""


class UnsupportedMediaTypeError(DiarizationError):
    code = "UNSUPPORTED_MEDIA_TYPE"
    http_status = 415


class NotReadyError(DiarizationError):
    code = "NOT_READY"
    http_status = 503


def parse_attributes(header: str | None) -> dict[str, str]:
    """`num_speakers=2,input_uri=s3://b/k`: comma- or semicolon-separated key=value pairs."""
    attributes: dict[str, str] = {}
    for part in (header or "").replace(";", ",").split(","):
        if part.strip():
            key, separator, value = part.partition("=")
            if not separator:
                raise InvalidParameterError(f"Custom attribute {part.strip()!r} is not key=value.")
            attributes[key.strip()] = value.strip()
    return attributes


def hints_from_attributes(attributes: dict[str, str]) -> dict[str, int]:
    hints = {}
    for name in HINT_NAMES:
        if name in attributes:
            try:
                hints[name] = int(attributes[name])
            except ValueError:
                raise InvalidParameterError(
                    f"{name}={attributes[name]!r} in {ATTRIBUTES_HEADER} is not a whole number.", parameter=name
                ) from None
    return hints


class InferenceService:
    """State shared by request threads: the pipeline (once loaded) and the concurrency slots."""

    def __init__(self, settings: Settings, max_concurrent: int) -> None:
        self.settings = settings
        self.slots = threading.BoundedSemaphore(max_concurrent)
        self.max_concurrent = max_concurrent
        self.diarizer: Diarizer | None = None
        self.load_error: DiarizationError | None = None
        self.loaded = threading.Event()
        self.active = 0
        self._count = threading.Lock()
        self._store: ObjectStore | None = None
        # Clustering runs in the instance's host memory: a file that would not fit gets AUDIO_TOO_LONG_FOR_MEMORY
        # (413) instead of a killed worker (docs/CAPACITY.md). The limit is the cgroup's, else MemTotal.
        self.memory = MemoryBudget.of_this_process()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """At most `max_concurrent` decodes+diarizations at once; the rest wait their turn."""
        with self.slots:
            with self._count:
                self.active += 1
            try:
                yield
            finally:
                with self._count:
                    self.active -= 1

    def load(self) -> None:
        try:
            self.diarizer = Diarizer.from_settings(self.settings)
            logger.info("ready: %s", json.dumps(self.health()))
        except DiarizationError as error:
            self.load_error = error
            logger.error("the model failed to load: %s", error)
        finally:
            self.loaded.set()

    def health(self) -> dict[str, Any]:
        if self.diarizer is None:
            status = "failed" if self.load_error else "loading"
            return {"status": status, "error": self.load_error.to_dict() if self.load_error else None}
        loaded = self.diarizer.loaded
        return {
            "status": "ready",
            "model": loaded.manifest.to_dict(),
            "device": loaded.device.to_dict(),
            "pyannote_version": loaded.pyannote_version,
            "load_seconds": round(loaded.load_seconds, 3),
            "max_concurrent_invocations": self.max_concurrent,
            "active_invocations": self.active,
        }

    def invoke(self, content_type: str, body: bytes, attributes: dict[str, str]) -> dict[str, Any]:
        if self.diarizer is None:
            raise self.load_error or NotReadyError("The model is still loading; retry when /ping answers 200.")
        media = content_type.split(";")[0].strip().lower()
        hints_in = hints_from_attributes(attributes)
        if media == "application/json":
            request = _json_object(body)
            unknown = sorted(set(request) - {"s3_uri", "voiceprints", "speaker_embeddings", *HINT_NAMES})
            if unknown or "s3_uri" not in request:
                raise InvalidRequestError(
                    f'JSON bodies take "s3_uri", hints, "voiceprints" and "speaker_embeddings" (unknown: {unknown}).'
                )
            hints = SpeakerHints.from_mapping({**hints_in, **{k: v for k, v in request.items() if k in HINT_NAMES}})
            ref = parse_s3_uri(request["s3_uri"])
            work = SyncRequest(
                ref,
                hints,
                ref.uri,
                _voiceprints(request.get("voiceprints", [])),
                request.get("speaker_embeddings") is True,
            )
        elif media.startswith(AUDIO_TYPES):
            name = unquote(attributes.get("input_uri", "")) or "upload"
            embeddings = _flag(attributes, "speaker_embeddings")
            work = SyncRequest(body, SpeakerHints.from_mapping(hints_in), name, include_embeddings=embeddings)
        else:
            raise UnsupportedMediaTypeError(
                f"Content-Type {content_type!r} is not supported: send audio bytes (audio/*, "
                'application/octet-stream) or application/json {"s3_uri": ...}.'
            )
        store = self._object_store() if isinstance(work.source, ObjectRef) else None
        return DiarizeSync(self.diarizer, store, memory=self.memory)(work, gate=self.slot()).to_dict()

    def _object_store(self) -> ObjectStore:
        """S3, created on first use: endpoints fed with bytes never need boto3."""
        if self._store is None:
            from diarization.aws_ports.s3 import S3Store

            self._store = S3Store()
        return self._store


def _flag(attributes: dict[str, str], name: str) -> bool:
    """A custom attribute that is `true` or `false` (absent: false)."""
    value = attributes.get(name, "false")
    if value not in ("true", "false"):
        raise InvalidParameterError(f"{name}={value!r} in {ATTRIBUTES_HEADER} is not true or false.", parameter=name)
    return value == "true"


def _voiceprints(value: Any) -> tuple[Voiceprint, ...]:
    """Voiceprints travel whole in the request: the server never reads a caller's stored voiceprints itself."""
    if not isinstance(value, list):
        raise InvalidRequestError('"voiceprints" must be a list of voiceprint objects (as GET /voiceprints/{name}).')
    return tuple(Voiceprint.from_dict(item) for item in value)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = jsontext.loads(body or b"")
    except ValueError as error:
        raise InvalidRequestError(f"The body is not valid JSON: {error}.") from error
    if not isinstance(value, dict):
        raise InvalidRequestError("The JSON body must be an object.")
    return value


class Handler(BaseHTTPRequestHandler):
    service: InferenceService
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/ping":
            return self._error(NotFoundError(f"No route GET {self.path}: use GET /ping or POST /invocations."))
        health = self.service.health()
        self._send(200 if health["status"] == "ready" else 503, health)

    def do_POST(self) -> None:
        if self.path.split("?")[0] != "/invocations":
            return self._error(NotFoundError(f"No route POST {self.path}: use POST /invocations."))
        try:
            body = self._read_body()
            attributes = parse_attributes(self.headers.get(ATTRIBUTES_HEADER))
            result = self.service.invoke(self.headers.get("Content-Type", ""), body, attributes)
        except DiarizationError as error:
            return self._error(error)
        except Exception:  # the server must survive anything a request does, and tell the caller nothing internal
            error_id = uuid.uuid4().hex
            logger.exception("unexpected failure, error id %s", error_id)
            return self._error(
                DiarizationError(
                    f"An unexpected error occurred; the server logged it with error id {error_id}.",
                    error_id=error_id,
                )
            )
        self._send(200, result)

    def _read_body(self) -> bytes:
        """Exactly Content-Length bytes, at most MAX_AUDIO_BYTES; a malformed length is the caller's mistake (400)."""
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            self.close_connection = True  # a body of unknown length may follow: the connection cannot be reused
            raise InvalidRequestError("Content-Length is required.")
        if len(lengths) > 1 or not CONTENT_LENGTH.match(lengths[0]):
            self.close_connection = True  # where this body ends is unknown
            raise InvalidRequestError(
                "Content-Length must be one non-negative whole number of bytes.", content_length=lengths[:3]
            )
        size = int(lengths[0])
        limit = self.service.settings.max_audio_bytes
        if size > limit:
            # Drain it without keeping it: a client still sending would otherwise see a broken pipe, not the 413.
            remaining = size
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)
            self.close_connection = True
            raise AudioTooLargeError(f"The body is {size} bytes; the limit is {limit} bytes (MAX_AUDIO_BYTES).")
        body = self.rfile.read(size)
        if len(body) != size:
            self.close_connection = True
            raise InvalidRequestError(
                f"The body ended after {len(body)} of the {size} bytes Content-Length announced.",
                received_bytes=len(body),
                content_length=size,
            )
        return body

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line or headers, an unknown method): our error body, not
        its HTML page. An unknown method is a 405 here, not 501: it is the caller's mistake, not a server fault."""
        self.close_connection = True
        if self.request_version == self.default_request_version:
            # An unreadable request line leaves "HTTP/0.9", which would answer without a status line or headers.
            self.request_version = self.protocol_version
        if code == HTTPStatus.NOT_IMPLEMENTED:
            code, message = HTTPStatus.METHOD_NOT_ALLOWED, f"Method {self.command!r} is not allowed: use GET or POST."
        reason = message or HTTPStatus(code).phrase
        self._send(code, {"error": {"code": InvalidRequestError.code, "message": reason}})

    def _error(self, error: DiarizationError) -> None:
        self._send(error.http_status, {"error": error.to_dict()})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)


class Server(ThreadingHTTPServer):
    daemon_threads = False  # SIGTERM waits for requests in flight
    block_on_close = True


def model_dir(settings: Settings) -> Path:
    """SageMaker mounts a model under /opt/ml/model when the Model resource names one; else the baked one."""
    if (SAGEMAKER_MODEL_DIR / "config.yaml").is_file():
        return SAGEMAKER_MODEL_DIR
    return settings.model_dir


def main() -> int:
    server_settings = ServerSettings.from_env(os.environ)
    logging.basicConfig(
        level=server_settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings.from_env()
    settings = Settings(**{**settings.__dict__, "model_dir": model_dir(settings)})
    port, max_concurrent = server_settings.port, server_settings.max_concurrent
    service = InferenceService(settings, max_concurrent)
    handler = type("BoundHandler", (Handler,), {"service": service})
    server = Server(("0.0.0.0", port), handler)  # noqa: S104 - SageMaker reaches the container from outside
    threading.Thread(target=service.load, name="model-load", daemon=True).start()

    def stop(signum: int, _frame: Any) -> None:
        logger.info("signal %d: finishing requests in flight, then exiting", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("listening on port %d (max %d concurrent invocations)", port, max_concurrent)
    server.serve_forever()
    server.server_close()  # joins the request threads
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
