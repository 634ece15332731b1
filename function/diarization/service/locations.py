"""Where inputs come from and where their results go: one mapping, used by every trigger.

``s3://B/{INPUT_PREFIX}{name}`` -> ``s3://{OUTPUT_BUCKET or B}/{OUTPUT_PREFIX}{name}.json`` (+ one key per selected
format: ``.rttm``, ``.srt``, ``.vtt``, ``.csv``, ``.pyannote.json``, ``.pyannoteai.json``, ``.svg``, ``.png``; see
``diarization.outputs.formats.SUFFIXES``), or ``.error.json`` on failure. ``{name}`` keeps sub-folders. Keys under the
output prefix are never inputs, whatever the bucket notification says, so a misconfigured trigger cannot loop.

The mapping keeps these user-facing names and is made injective by refusing two kinds of names, each with
a permanent error and an error object of its own (never a result):

- a name ending in ``.error``, ``.pyannote`` or ``.pyannoteai`` (INPUT_NAME_RESERVED): its result ``{name}.json``
  would be the error object (or a pyannote-format output) of the input without the suffix. Its error object is
  ``{name}.error.json`` (``x.wav.error.error.json``);
- a name under ``_key-too-long/`` (INPUT_NAME_RESERVED): that folder of the output prefix holds the
  fallback error objects below.

No two inputs share an output key. Write ``M`` and ``N`` for two different names (of one input prefix) and
let every key below follow the output prefix. Results exist only for accepted names. Two keys of the same suffix
(``M.json = N.json``, ``M.srt = N.srt``, ...) would need ``M = N``. Keys of different suffixes are equal only if one
suffix ends with the other: among the suffixes that is only ``.json`` inside ``.error.json``, ``.pyannote.json``
and ``.pyannoteai.json`` (``.pyannote.json`` does not end in ``.pyannoteai.json`` nor the other way round, nor
either in ``.error.json``). So ``M.json`` equals ``N.error.json``, ``N.pyannote.json`` or ``N.pyannoteai.json`` only
if ``M`` is ``N`` plus ``.error``, ``.pyannote`` or ``.pyannoteai``: such names are refused and have no result. A
key starts with ``_key-too-long/`` only if its name does (the folder has no ``.``; every suffix starts with
one), and those names are refused and their natural keys never written; so the fallback folder holds only
fallback error objects, one per input key (named by the key's SHA-256: distinct keys, distinct names, barring
a SHA-256 collision).

Byte limits: S3 keys are at most 1,024 bytes of UTF-8. The longest key an input can have is
``{OUTPUT_PREFIX}{name}.pyannoteai.json`` (every name may get every format, per request); if that or the input key
itself does not fit, the input is refused up front (KEY_TOO_LONG). An error object that cannot live at its natural
key goes to ``{OUTPUT_PREFIX}_key-too-long/{sha256 hex of the input key}.error.json``; the body names the full input
URI. Names under ``_key-too-long/`` use the same fallback, so their natural error key (which could be
some other input's fallback key) is never written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from diarization.errors import ConfigurationError, InputNameReservedError, InvalidParameterError, KeyTooLongError
from diarization.outputs.formats import DEFAULT_OUTPUT_FORMATS, OUTPUT_FORMATS, SUFFIXES

UPLOADS_FOLDER = "uploads/"
"""Under the input prefix: ``uploads/{job_id}/{filename}`` for files sent through the API's upload URL."""
MAX_KEY_BYTES = 1024
"""S3's limit on an object key, in bytes of UTF-8."""
RESERVED_SUFFIXES = (".error", ".pyannote", ".pyannoteai")
"""An input name ending in one would have a result named like another input's error object or pyannote output."""
KEY_TOO_LONG_FOLDER = "_key-too-long/"
"""Under the output prefix: error objects of inputs whose natural error key does not fit (or is reserved)."""
ERROR_SUFFIX = ".error.json"
LONGEST_SUFFIX = max([ERROR_SUFFIX, *SUFFIXES.values()], key=len)
"""The longest suffix an output key gets (``.pyannoteai.json``)."""


class Layout(Protocol):
    """Where inputs and outputs live (the Lambda host's `AwsSettings` is one)."""

    @property
    def input_bucket(self) -> str | None: ...

    @property
    def input_prefix(self) -> str: ...

    @property
    def output_bucket(self) -> str | None: ...

    @property
    def output_prefix(self) -> str: ...


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    last_modified: str | None = field(default=None, compare=False)
    """From HEAD, as sortable UTC text (``2026-11-25T20:55:01Z``); orders versions of one key."""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class OutputLocations:
    bucket: str
    json_key: str
    error_key: str
    format_keys: dict[str, str]
    """Every format's key (``diarization.outputs.formats.OUTPUT_FORMATS``), selected or not."""
    formats: tuple[str, ...] = DEFAULT_OUTPUT_FORMATS
    """The formats written beside the JSON for this request."""

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    @property
    def rttm_key(self) -> str:
        return self.format_keys["rttm"]

    @property
    def written(self) -> dict[str, str]:
        """What a success writes: ``json`` and each selected format -> its key."""
        return {"json": self.json_key, **{name: self.format_keys[name] for name in self.formats}}

    @property
    def unselected(self) -> tuple[str, ...]:
        """Format keys a success removes: a stale output of another selection would describe an older version."""
        return tuple(key for name, key in self.format_keys.items() if name not in self.formats)

    @property
    def results(self) -> tuple[str, ...]:
        """What an error object replaces (a failure removes a stale result in every format)."""
        return (self.json_key, *self.format_keys.values())

    def output_uris(self) -> dict[str, str]:
        return {name: self.uri(key) for name, key in self.written.items()}


@dataclass(frozen=True)
class ErrorLocation:
    """Where the error object of a refused input goes. It has no result keys: those would be another input's."""

    bucket: str
    error_key: str
    results: tuple[str, ...] = ()

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


class Locations:
    def __init__(self, settings: Layout) -> None:
        fallback = settings.output_prefix + KEY_TOO_LONG_FOLDER + "0" * 64 + ERROR_SUFFIX
        if utf8_bytes(fallback) > MAX_KEY_BYTES:
            raise ConfigurationError(
                f"OUTPUT_PREFIX is {utf8_bytes(settings.output_prefix)} bytes long: error objects of over-long "
                f"names would not fit S3's {MAX_KEY_BYTES}-byte keys. Use a shorter OUTPUT_PREFIX."
            )
        self.settings = settings

    def output_bucket(self, input_bucket: str) -> str:
        return self.settings.output_bucket or input_bucket

    def skip_reason(self, ref: ObjectRef) -> str | None:
        """Why this object is not an input (None: it is one)."""
        s = self.settings
        if ref.bucket == self.output_bucket(ref.bucket) and ref.key.startswith(s.output_prefix):
            return f"under the output prefix {s.output_prefix!r}"
        if s.input_bucket and s.output_bucket and ref.bucket == s.output_bucket and ref.bucket != s.input_bucket:
            return "in the output bucket"
        if not ref.key.startswith(s.input_prefix):
            return f"outside the input prefix {s.input_prefix!r}"
        if ref.key.endswith("/") or ref.key == s.input_prefix:
            return "a folder marker, not a file"
        return None

    def name(self, ref: ObjectRef) -> str:
        return ref.key[len(self.settings.input_prefix) :]

    def refusal(self, ref: ObjectRef) -> InputNameReservedError | KeyTooLongError | None:
        """Why this input can have no outputs of its own (None: it can); see the module's docstring."""
        name = self.name(ref)
        if name.endswith(RESERVED_SUFFIXES) or name.startswith(KEY_TOO_LONG_FOLDER):
            return InputNameReservedError(
                f"{ref.uri}: names ending in {', '.join(map(repr, RESERVED_SUFFIXES))} or starting with "
                f"{KEY_TOO_LONG_FOLDER!r} are reserved for outputs (the result of 'x.error' would be the error "
                "object of 'x'). Rename the input.",
                uri=ref.uri,
            )
        too_long = key_too_long(ref)
        if too_long:
            return too_long
        longest = self.settings.output_prefix + name + LONGEST_SUFFIX
        if utf8_bytes(longest) > MAX_KEY_BYTES:
            return KeyTooLongError(
                f"The name is too long: its longest output key (OUTPUT_PREFIX + name + {LONGEST_SUFFIX!r}) would be "
                f"{utf8_bytes(longest)} bytes of UTF-8; S3 keys end at {MAX_KEY_BYTES}. Use a name of at most "
                f"{MAX_KEY_BYTES - utf8_bytes(longest) + utf8_bytes(name)} bytes.",
                uri=ref.uri,
                key_bytes=utf8_bytes(longest),
                max_bytes=MAX_KEY_BYTES,
            )
        return None

    def check(self, ref: ObjectRef) -> ObjectRef:
        refusal = self.refusal(ref)
        if refusal:
            raise refusal
        return ref

    def outputs(self, ref: ObjectRef, formats: tuple[str, ...] = DEFAULT_OUTPUT_FORMATS) -> OutputLocations:
        """Result, format and error keys of an accepted input; a refused one raises its refusal (it has no result
        keys). `formats`: those a success writes (validated by ``diarization.outputs.formats.parse_formats``)."""
        self.check(ref)
        base = self.settings.output_prefix + self.name(ref)
        return OutputLocations(
            bucket=self.output_bucket(ref.bucket),
            json_key=f"{base}{SUFFIXES['json']}",
            error_key=f"{base}{ERROR_SUFFIX}",
            format_keys={name: f"{base}{SUFFIXES[name]}" for name in OUTPUT_FORMATS},
            formats=formats,
        )

    def error_location(self, ref: ObjectRef) -> OutputLocations | ErrorLocation:
        """Where a failure of this input is written, whatever its name: its outputs if it is accepted, else its
        natural error key (names ending in ``.error``) or, when that does not fit or is reserved, the fallback;
        a refused input has no result keys to remove."""
        if self.refusal(ref) is None:
            return self.outputs(ref)
        bucket = self.output_bucket(ref.bucket)
        name = self.name(ref)
        natural = self.settings.output_prefix + name + ERROR_SUFFIX
        if utf8_bytes(natural) > MAX_KEY_BYTES or name.startswith(KEY_TOO_LONG_FOLDER):
            digest = hashlib.sha256(ref.key.encode("utf-8")).hexdigest()
            return ErrorLocation(bucket, f"{self.settings.output_prefix}{KEY_TOO_LONG_FOLDER}{digest}{ERROR_SUFFIX}")
        return ErrorLocation(bucket, natural)

    def upload_key(self, job_id: str, filename: str) -> str:
        return f"{self.settings.input_prefix}{UPLOADS_FOLDER}{job_id}/{filename}"

    def job_id_of_upload(self, ref: ObjectRef) -> str | None:
        """The job an uploaded object belongs to, from its key (no lookup needed)."""
        name = self.name(ref)
        if not name.startswith(UPLOADS_FOLDER):
            return None
        job_id, _, rest = name[len(UPLOADS_FOLDER) :].partition("/")
        return job_id if job_id and rest else None

    def parse_input_uri(self, uri: object) -> ObjectRef:
        """An ``s3://`` URI a user sent: must be a file under the configured input bucket and prefix."""
        ref = parse_s3_uri(uri)
        if self.settings.input_bucket is None or ref.bucket != self.settings.input_bucket:
            raise InvalidParameterError(
                f"s3_uri must be in the input bucket {self.settings.input_bucket!r}, not {ref.bucket!r}.",
                parameter="s3_uri",
            )
        reason = self.skip_reason(ref)
        if reason:
            raise InvalidParameterError(
                f"s3_uri {uri!r} is {reason}; put audio under s3://{ref.bucket}/{self.settings.input_prefix}.",
                parameter="s3_uri",
            )
        return self.check(ref)


def parse_s3_uri(uri: object) -> ObjectRef:
    """``s3://bucket/key`` with a safe key; anything else is an INVALID_PARAMETER."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise InvalidParameterError(f"s3_uri must look like s3://bucket/key, not {uri!r}.", parameter="s3_uri")
    parts = urlsplit(uri)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if parts.query or parts.fragment or not bucket or not key:
        raise InvalidParameterError(f"s3_uri must look like s3://bucket/key, not {uri!r}.", parameter="s3_uri")
    check_safe_name(key, "s3_uri")
    return ObjectRef(bucket, key)


def utf8_bytes(text: str) -> int:
    """S3 counts key lengths in bytes of UTF-8, not characters: "é" is 2."""
    return len(text.encode("utf-8"))


def key_too_long(ref: ObjectRef) -> KeyTooLongError | None:
    """A key S3 cannot hold names no object: asking S3 about it only returns an unmapped 400."""
    size = utf8_bytes(ref.key)
    if size <= MAX_KEY_BYTES:
        return None
    return KeyTooLongError(
        f"s3://{ref.bucket}/{ref.key[:64]}… is {size} bytes long (UTF-8); S3 keys end at {MAX_KEY_BYTES}.",
        uri=ref.uri,
        key_bytes=size,
        max_bytes=MAX_KEY_BYTES,
    )


def check_safe_name(name: str, parameter: str) -> str:
    """Reject names that could escape their folder or confuse S3 consoles and shells, and names longer than any
    S3 key may be (the tighter limit, that every output key fits, is `Locations.refusal`'s)."""
    if utf8_bytes(name) > MAX_KEY_BYTES:
        raise KeyTooLongError(
            f"{parameter} is {utf8_bytes(name)} bytes long (UTF-8); S3 keys end at {MAX_KEY_BYTES} bytes.",
            parameter=parameter,
            key_bytes=utf8_bytes(name),
            max_bytes=MAX_KEY_BYTES,
        )
    segments = name.split("/")
    if (
        not name
        or any(segment in ("", ".", "..") for segment in segments)
        or any(ord(char) < 32 or char in "\\\x7f" for char in name)
    ):
        raise InvalidParameterError(
            f"{parameter} {name!r} is not a safe object name (no empty, '.' or '..' segments, "
            "backslashes or control characters).",
            parameter=parameter,
        )
    return name
