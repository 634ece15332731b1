"""Where the command line reads audio and writes results: local files, folders, standard input and ``s3://``.

Every failure is a typed error naming the input or output, so the CLI can report it in one line and go on
with the next input.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from diarization.core.audio import AudioSource
from diarization.errors import (
    AudioTooLargeError,
    DiarizationError,
    InputNotFoundError,
    InvalidParameterError,
    OutputNotWritableError,
)
from diarization.service.locations import ObjectRef

if TYPE_CHECKING:
    from diarization.aws_ports.s3 import S3Store

STDIN = "-"
AUDIO_EXTENSIONS = frozenset(
    {".aac", ".aif", ".aiff", ".amr", ".caf", ".flac", ".m4a", ".mka", ".mkv", ".mov", ".mp3", ".mp4", ".oga"}
    | {".ogg", ".opus", ".wav", ".webm", ".wma"}
)
"""What a folder input picks up (case-insensitive); a file named on the command line is read whatever its name."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def child(self, name: str) -> S3Location:
        return S3Location(self.bucket, f"{self.key.rstrip('/')}/{name}" if self.key else name)


Location = Path | S3Location


@dataclass(frozen=True)
class Input:
    """One audio input as the user named it (``label``), with the name its outputs are derived from."""

    label: str
    source: Path | S3Location | None
    """None for standard input."""
    problem: DiarizationError | None = None
    """Set when the input cannot be used at all (e.g. a folder without audio); reported like a failed input."""

    @property
    def uri(self) -> str:
        """What the result records as ``input.uri``."""
        if self.source is None:
            return "stdin"
        return self.source.uri if isinstance(self.source, S3Location) else str(self.source)

    @property
    def stem(self) -> str:
        if self.source is None:
            return "stdin"
        name = PurePosixPath(self.source.key).name if isinstance(self.source, S3Location) else self.source.name
        return PurePosixPath(name).stem or "audio"


def parse_location(text: str, *, option: str, folder: bool = False) -> Location:
    """A local path or ``s3://bucket/key`` (``key`` may be empty or end in ``/`` only for a folder)."""
    if not text.startswith("s3://"):
        return Path(text)
    bucket, _, key = text.removeprefix("s3://").partition("/")
    if not bucket or (not folder and (not key or key.endswith("/"))):
        what = "s3://bucket[/prefix]" if folder else "s3://bucket/key (an object, not a folder)"
        raise InvalidParameterError(f"{option} {text!r} is not {what}.", parameter=option)
    return S3Location(bucket, key)


def expand_inputs(names: list[str]) -> list[Input]:
    """Files as given; a folder becomes the audio files directly inside it, sorted by name."""
    if names.count(STDIN) > 1:
        raise InvalidParameterError("'-' (standard input) can be read only once.", parameter="audio")
    inputs: list[Input] = []
    for name in names:
        if name == STDIN:
            inputs.append(Input(name, None))
            continue
        location = parse_location(name, option="input")
        if isinstance(location, S3Location) or not location.is_dir():
            inputs.append(Input(name, location))
            continue
        files = sorted(p for p in location.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        if not files:
            problem = InputNotFoundError(
                f"Folder {name!r} holds no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}).", path=name
            )
            inputs.append(Input(name, location, problem))
        inputs.extend(Input(str(path), path) for path in files)
    return inputs


def output_names(inputs: list[Input], extension: str) -> list[str]:
    """One file name per input, from its stem; ``-2``, ``-3``... where stems repeat. Compared case-insensitively:
    ``Call.wav`` and ``call.mp3`` would overwrite each other on macOS's and Windows' default file systems."""
    taken: set[str] = set()
    names = []
    for item in inputs:
        candidate, number = item.stem, 2
        while candidate.casefold() in taken:
            candidate, number = f"{item.stem}-{number}", number + 1
        taken.add(candidate.casefold())
        names.append(f"{candidate}.{extension}")
    return names


def prepare_folder(folder: Location) -> None:
    """Create a local output folder before any work, so a typo fails in milliseconds, not after diarizing."""
    if isinstance(folder, S3Location):
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        message = f"Cannot create folder {str(folder)!r}: {error.strerror}."
        raise OutputNotWritableError(message, path=str(folder)) from error


class Storage:
    """Reads inputs and writes outputs: files and standard input here, ``s3://`` through the S3 port (made once, on
    first use, with the caller's usual AWS credentials)."""

    def __init__(self) -> None:
        self._s3: S3Store | None = None

    def check_credentials(self) -> None:
        """Fail before any work when S3 is named and boto3 finds no credentials (its normal resolution)."""
        self.s3()

    def s3(self) -> S3Store:
        if self._s3 is None:
            from diarization.aws_ports.s3 import S3Store  # boto3 only when s3:// is named: --help stays fast

            self._s3 = S3Store.with_default_credentials()
        return self._s3

    @contextmanager
    def audio(self, item: Input, max_bytes: int) -> Iterator[AudioSource]:
        """The input as a path or bytes for the decoder; a downloaded copy is deleted afterwards."""
        if item.problem is not None:
            raise item.problem
        if item.source is None:
            yield _read_stdin(max_bytes)
        elif isinstance(item.source, S3Location):
            with tempfile.TemporaryDirectory(prefix="diarize-") as scratch:
                path = Path(scratch) / "audio"
                self.s3().download(ObjectRef(item.source.bucket, item.source.key), path, max_bytes)
                yield path
        else:
            yield item.source

    def write(self, target: Location, data: bytes, content_type: str) -> None:
        if isinstance(target, Path):
            write_atomically(target, data)
        else:
            self.s3().write(target.bucket, target.key, data, content_type)


def _read_stdin(max_bytes: int) -> bytes:
    if sys.stdin is None or sys.stdin.isatty():
        raise InvalidParameterError(
            "'-' reads audio from standard input, which is a terminal: pipe a file in (diarize - < call.wav).",
            parameter="audio",
        )
    data = sys.stdin.buffer.read(max_bytes + 1)  # one byte more tells "too large" without reading it all
    if len(data) > max_bytes:
        raise AudioTooLargeError(
            f"Standard input holds more than {max_bytes} bytes, the limit (MAX_AUDIO_BYTES).", max_bytes=max_bytes
        )
    return data


def write_atomically(path: Path, data: bytes) -> None:
    """Never leave a half-written result behind (e.g. on Ctrl-C). The file gets the mode ``open()`` would give it:
    an existing file keeps its own, a new one 0666 less the umask (mkstemp alone would leave 0600)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as error:
        raise OutputNotWritableError(f"Cannot write {str(path)!r}: {error.strerror}.", path=str(path)) from error
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as error:
        os.unlink(tmp)
        if isinstance(error, OSError):
            raise OutputNotWritableError(f"Cannot write {str(path)!r}: {error.strerror}.", path=str(path)) from error
        raise


def _umask() -> int:
    """The process umask; reading it means setting it, and the CLI is single-threaded here."""
    current = os.umask(0o022)
    os.umask(current)
    return current
