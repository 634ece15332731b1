"""Output formats of a result: one renderer per format, from the result's JSON form (schema v1).

Pure Python and no AWS: the CLI, the Lambda and the GPU completion render the same bytes. Working from the dict (not
`DiarizationResult`) lets the completion render what the GPU container wrote without rebuilding the object.

- ``json``: the result itself; ``rttm``: NIST RTTM of the segments (overlap kept), as ``result.to_rttm()``.
- ``srt`` / ``vtt``: subtitles of the *exclusive* segments (one speaker at a time, as subtitles need), one cue per turn.
- ``csv``: one row per segment, ``start,end,duration,speaker`` (RFC 4180).
- ``pyannote``: pyannote.audio 4's ``DiarizeOutput.serialize()``: ``diarization``, ``exclusive_diarization``.
- ``pyannoteai``: the ``output`` object of pyannoteAI's diarization jobs: ``diarization``, ``exclusiveDiarization``.
- ``svg`` / ``png``: the timeline picture (``diarization.outputs.timeline``).

Subtitles, CSV and the picture show a speaker's ``name`` when the result has one (identification), else its id;
RTTM and the pyannote formats keep the ids, as the tools that read them do.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from diarization.core.result import Segment, rttm_from_segments
from diarization.errors import UnknownFormatError
from diarization.outputs.labels import label_of

TEXT_FORMATS = ("json", "rttm", "srt", "vtt", "csv", "pyannote", "pyannoteai")
"""What the CLI's --format writes."""
PICTURE_FORMATS = ("svg", "png")
OUTPUT_FORMATS = ("rttm", "srt", "vtt", "csv", "pyannote", "pyannoteai", "svg", "png")
"""What may be written beside the JSON result on S3 (the JSON always is)."""
DEFAULT_OUTPUT_FORMATS = ("rttm",)
SUFFIXES = {
    "json": ".json",
    "rttm": ".rttm",
    "srt": ".srt",
    "vtt": ".vtt",
    "csv": ".csv",
    "pyannote": ".pyannote.json",
    "pyannoteai": ".pyannoteai.json",
    "svg": ".svg",
    "png": ".png",
}
"""Appended to the input's name for its output key or file (see ``diarization.service.locations``)."""
UTF8 = "; charset=utf-8"
CONTENT_TYPES = {
    "json": "application/json" + UTF8,
    "rttm": "text/plain" + UTF8,
    "srt": "application/x-subrip" + UTF8,
    "vtt": "text/vtt" + UTF8,
    "csv": "text/csv" + UTF8,
    "pyannote": "application/json" + UTF8,
    "pyannoteai": "application/json" + UTF8,
    "svg": "image/svg+xml" + UTF8,
    "png": "image/png",
}
SPREADSHEET_FORMULA = ("=", "+", "-", "@", "\t", "\r")
"""A CSV cell starting with one of these runs as a formula in spreadsheets (CSV injection): a user-chosen speaker
name must not. Such a cell gets a leading apostrophe, OWASP's advice."""


def parse_formats(value: object, parameter: str = "formats") -> tuple[str, ...]:
    """Names of extra outputs (a list, or text separated by commas) -> canonical order, no repeats. ``json`` is
    accepted and ignored: the result is always written."""
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(name, str) for name in names):
        raise UnknownFormatError(
            f"{parameter} must be a list of format names ({', '.join(OUTPUT_FORMATS)}), not {value!r}.",
            parameter=parameter,
            allowed=list(OUTPUT_FORMATS),
        )
    wanted = {name.strip().lower() for name in names if name.strip()}
    unknown = sorted(wanted - set(OUTPUT_FORMATS) - {"json"})
    if unknown:
        raise UnknownFormatError(
            f"{parameter}: unknown format(s) {unknown}; choose from {', '.join(OUTPUT_FORMATS)} "
            "(the JSON result is always written).",
            parameter=parameter,
            unknown=unknown,
            allowed=list(OUTPUT_FORMATS),
        )
    return tuple(name for name in OUTPUT_FORMATS if name in wanted)


def render(result: Mapping[str, Any], format_name: str) -> bytes:
    """The bytes of one format (UTF-8 for text formats)."""
    if format_name in PICTURE_FORMATS:
        from diarization.outputs.timeline import png, svg  # Pillow only when drawing a PNG

        return svg(result).encode("utf-8") if format_name == "svg" else png(result)
    renderer = _TEXT_RENDERERS.get(format_name)
    if renderer is None:
        raise UnknownFormatError(
            f"Unknown format {format_name!r}; choose from {', '.join(TEXT_FORMATS + PICTURE_FORMATS)}.",
            unknown=[format_name],
            allowed=list(TEXT_FORMATS + PICTURE_FORMATS),
        )
    return renderer(result).encode("utf-8")


def to_json(result: Mapping[str, Any]) -> str:
    return json.dumps(result, indent=2, ensure_ascii=False) + "\n"


def to_rttm(result: Mapping[str, Any]) -> str:
    segments = [Segment(s["start"], s["end"], s["speaker"]) for s in result["segments"]]
    return rttm_from_segments(result["input"]["uri"], segments)


def to_srt(result: Mapping[str, Any]) -> str:
    label = label_of(result)
    cues = (
        f"{index}\n{_clock(s['start'], ',')} --> {_clock(s['end'], ',')}\n{_cue_text(label(s['speaker']))}\n"
        for index, s in enumerate(result["exclusive_segments"], start=1)
    )
    return "\n".join(cues)


def to_vtt(result: Mapping[str, Any]) -> str:
    label = label_of(result)
    cues = (
        f"{_clock(s['start'], '.')} --> {_clock(s['end'], '.')}\n{_vtt_escape(_cue_text(label(s['speaker'])))}\n"
        for s in result["exclusive_segments"]
    )
    return "WEBVTT\n\n" + "\n".join(cues)


def to_csv(result: Mapping[str, Any]) -> str:
    label = label_of(result)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180: CRLF, quotes where needed
    writer.writerow(["start", "end", "duration", "speaker"])
    for s in result["segments"]:
        start, end = float(s["start"]), float(s["end"])
        writer.writerow([f"{start:.3f}", f"{end:.3f}", f"{end - start:.3f}", _csv_safe(label(s["speaker"]))])
    return buffer.getvalue()


def to_pyannote(result: Mapping[str, Any]) -> str:
    body = {
        "diarization": _turns(result["segments"]),
        "exclusive_diarization": _turns(result["exclusive_segments"]),
    }
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"


def to_pyannoteai(result: Mapping[str, Any]) -> str:
    body = {
        "diarization": _turns(result["segments"]),
        "exclusiveDiarization": _turns(result["exclusive_segments"]),
    }
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"


_TEXT_RENDERERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "json": to_json,
    "rttm": to_rttm,
    "srt": to_srt,
    "vtt": to_vtt,
    "csv": to_csv,
    "pyannote": to_pyannote,
    "pyannoteai": to_pyannoteai,
}


def _turns(segments: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"start": round(s["start"], 3), "end": round(s["end"], 3), "speaker": s["speaker"]} for s in segments]


def _clock(seconds: float, decimal: str) -> str:
    """``HH:MM:SS,mmm`` (SRT) or ``HH:MM:SS.mmm`` (WebVTT), rounded to the millisecond."""
    millis = round(max(float(seconds), 0.0) * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _cue_text(label: str) -> str:
    """One line: a blank line would end the cue, and ``-->`` would read as a timing line."""
    return re.sub(r"\s+", " ", label).replace("-->", "->").strip() or "?"


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _csv_safe(text: str) -> str:
    return "'" + text if text.startswith(SPREADSHEET_FORMULA) else text
