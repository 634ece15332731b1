"""The timeline picture of a result: one lane per speaker, overlap hatched, a time axis, a title.

The geometry is computed once, as a list of shapes (`scene`); `svg` writes them as SVG text and `png` paints them with
Pillow, so both pictures agree. Deterministic: the same result gives the same bytes (no dates, no random ids).
Works from the result's JSON form (schema v1), like ``diarization.outputs.formats``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from diarization.outputs.labels import label_of

WIDTH = 960
GUTTER = 160
"""Left of the lanes: speaker labels."""
RIGHT = 24
TOP = 64
LANE = 26
LANE_GAP = 10
AXIS = 56
"""Below the lanes: ticks, their labels and the legend."""
HATCH_SPACING = 6
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
"""Colour-blind-friendly enough to tell lanes apart; red is kept for the overlap."""
OVERLAP = "#d62728"
FONT = "DejaVu Sans, Arial, Helvetica, sans-serif"
NICE_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800)
MAX_TICKS = 10
MAX_LABEL = 20
MAX_TITLE = 90


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    fill: str
    opacity: float = 1.0
    hatched: bool = False
    role: str = ""
    """What it stands for: ``bar``, ``overlap``, ``lane``, ``legend`` (tests and SVG class names read it)."""


@dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    stroke: str
    role: str = ""


@dataclass(frozen=True)
class Text:
    x: float
    y: float
    text: str
    size: int
    anchor: str = "start"
    """``start``, ``middle`` or ``end``, as SVG's text-anchor."""
    fill: str = "#222222"
    role: str = ""


Shape = Rect | Line | Text


def scene(result: Mapping[str, Any]) -> tuple[int, int, list[Shape]]:
    """Width, height and shapes, back to front."""
    speakers = [speaker["id"] for speaker in result.get("speakers", [])]
    label = label_of(result)
    segments = result.get("segments", [])
    duration = max([float(result["audio"]["duration_seconds"]), *(float(s["end"]) for s in segments), 0.001])
    lanes = max(len(speakers), 1)
    plot_width = WIDTH - GUTTER - RIGHT
    lanes_bottom = TOP + lanes * (LANE + LANE_GAP) - LANE_GAP
    height = lanes_bottom + AXIS

    def x_of(seconds: float) -> float:
        return round(GUTTER + plot_width * min(max(seconds, 0.0), duration) / duration, 2)

    name = str(result["input"]["uri"]).rstrip("/").rsplit("/", 1)[-1] or "audio"
    title = f"{_clip(name, MAX_TITLE)} · {_clock(duration, duration)} · {_count(len(speakers), 'speaker')}"
    shapes: list[Shape] = [
        Rect(0, 0, WIDTH, height, "#ffffff", role="background"),
        Text(16, 30, title, 16, role="title"),
    ]
    for lane, speaker in enumerate(speakers):
        y = TOP + lane * (LANE + LANE_GAP)
        colour = PALETTE[lane % len(PALETTE)]
        shapes.append(Rect(GUTTER, y, plot_width, LANE, "#f1f3f5", role="lane"))
        shapes.append(Text(GUTTER - 10, y + LANE / 2 + 5, _clip(label(speaker), MAX_LABEL), 13, "end", role="label"))
        for s in segments:
            if s["speaker"] == speaker:
                left, right = x_of(float(s["start"])), x_of(float(s["end"]))
                shapes.append(Rect(left, y, max(right - left, 1.0), LANE, colour, role="bar"))
    if not speakers:
        shapes.append(Rect(GUTTER, TOP, plot_width, LANE, "#f1f3f5", role="lane"))
        shapes.append(Text(GUTTER + plot_width / 2, TOP + LANE / 2 + 5, "no speech", 13, "middle", role="label"))
    overlaps = overlap_spans(segments)
    for start, end in overlaps:
        left, right = x_of(start), x_of(end)
        top = TOP - LANE_GAP / 2
        shapes.append(
            Rect(left, top, max(right - left, 1.0), lanes_bottom - top + LANE_GAP / 2, OVERLAP, 0.3, True, "overlap")
        )
    shapes.append(Line(GUTTER, lanes_bottom + 8, GUTTER + plot_width, lanes_bottom + 8, "#444444", "axis"))
    step = tick_step(duration)
    for index in range(int(duration / step + 1e-9) + 1):
        seconds = index * step
        x = x_of(seconds)
        shapes.append(Line(x, lanes_bottom + 8, x, lanes_bottom + 13, "#444444", "tick"))
        shapes.append(Text(x, lanes_bottom + 28, _clock(seconds, duration), 11, "middle", "#444444", "tick"))
    if overlaps:
        total = sum(end - start for start, end in overlaps)
        legend_y = lanes_bottom + 38
        shapes.append(Rect(GUTTER, legend_y, 14, 12, OVERLAP, 0.3, True, "legend"))
        shapes.append(Text(GUTTER + 20, legend_y + 11, f"overlap ({total:.1f} s)", 11, fill="#444444", role="legend"))
    return WIDTH, height, shapes


def overlap_spans(segments: list[Mapping[str, Any]]) -> list[tuple[float, float]]:
    """Where two or more speakers talk at once, as merged (start, end) spans."""
    events = sorted([(float(s["start"]), 1) for s in segments] + [(float(s["end"]), -1) for s in segments])
    spans: list[tuple[float, float]] = []
    active, opened = 0, 0.0
    for time, delta in events:
        if active < 2 <= active + delta:
            opened = time
        elif active >= 2 > active + delta and time > opened:
            if spans and spans[-1][1] >= opened:
                spans[-1] = (spans[-1][0], time)
            else:
                spans.append((opened, time))
        active += delta
    return spans


def tick_step(duration: float) -> float:
    """The smallest round step that gives at most MAX_TICKS intervals."""
    return next((step for step in NICE_STEPS if duration / step <= MAX_TICKS), NICE_STEPS[-1] * 2)


def svg(result: Mapping[str, Any]) -> str:
    width, height, shapes = scene(result)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family={quoteattr(FONT)}>',
        f"<title>{escape(_title_of(shapes))}</title>",
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)">'
        f'<rect width="6" height="6" fill="{OVERLAP}" fill-opacity="0.12"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{OVERLAP}" stroke-width="3"/></pattern></defs>',
    ]
    for shape in shapes:
        if isinstance(shape, Rect):
            fill = "url(#hatch)" if shape.hatched else shape.fill
            extra = f' fill-opacity="{shape.opacity}"' if shape.opacity < 1 and not shape.hatched else ""
            outline = f' stroke="{OVERLAP}" stroke-opacity="0.6"' if shape.hatched else ""
            rect = f'x="{shape.x}" y="{shape.y}" width="{shape.width}" height="{shape.height}"'
            out.append(f'<rect class="{shape.role}" {rect} fill="{fill}"{extra}{outline}/>')
        elif isinstance(shape, Line):
            coordinates = f'x1="{shape.x1}" y1="{shape.y1}" x2="{shape.x2}" y2="{shape.y2}"'
            out.append(f'<line class="{shape.role}" {coordinates} stroke="{shape.stroke}"/>')
        else:
            out.append(
                f'<text class="{shape.role}" x="{shape.x}" y="{shape.y}" font-size="{shape.size}" '
                f'text-anchor="{shape.anchor}" fill="{shape.fill}">{escape(shape.text)}</text>'
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def png(result: Mapping[str, Any], scale: int = 2) -> bytes:
    """Twice the SVG's size by default: crisp on high-density screens, still small (a few tens of kB)."""
    from PIL import Image, ImageDraw, ImageFont  # only a PNG pays for Pillow

    width, height, shapes = scene(result)
    image = Image.new("RGB", (width * scale, height * scale), "#ffffff")
    draw = ImageDraw.Draw(image, "RGBA")
    fonts: dict[int, Any] = {}
    for shape in shapes:
        if isinstance(shape, Rect):
            box = _scaled(scale, shape.x, shape.y, shape.x + shape.width, shape.y + shape.height)
            if shape.hatched:
                draw.rectangle(box, fill=_rgba(shape.fill, 0.12), outline=_rgba(shape.fill, 0.6))
                for line in _hatch_lines(*box, HATCH_SPACING * scale):
                    draw.line(line, fill=_rgba(shape.fill, 0.55), width=scale)
            else:
                draw.rectangle(box, fill=_rgba(shape.fill, shape.opacity))
        elif isinstance(shape, Line):
            draw.line(_scaled(scale, shape.x1, shape.y1, shape.x2, shape.y2), fill=shape.stroke, width=scale)
        else:
            font = fonts.setdefault(shape.size, ImageFont.load_default(shape.size * scale))
            anchor = {"start": "ls", "middle": "ms", "end": "rs"}[shape.anchor]
            draw.text((shape.x * scale, shape.y * scale), shape.text, fill=shape.fill, font=font, anchor=anchor)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _hatch_lines(x0: float, y0: float, x1: float, y1: float, spacing: int) -> list[tuple[float, float, float, float]]:
    """45° lines clipped to the box: from the bottom or right edge to the left or top edge."""
    width, height = x1 - x0, y1 - y0
    lines = []
    offset = float(spacing)
    while offset < width + height:
        start = (x0 + offset, y1) if offset <= width else (x1, y1 - (offset - width))
        end = (x0, y1 - offset) if offset <= height else (x0 + (offset - height), y0)
        lines.append((*start, *end))
        offset += spacing
    return lines


def _scaled(scale: int, *values: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (value * scale for value in values)
    return (x0, y0, x1, y1)


def _rgba(colour: str, opacity: float) -> tuple[int, int, int, int]:
    return (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16), round(255 * opacity))


def _title_of(shapes: list[Shape]) -> str:
    return next(shape.text for shape in shapes if isinstance(shape, Text) and shape.role == "title")


def _clock(seconds: float, duration: float) -> str:
    """Seconds under a minute, ``m:ss`` under an hour, else ``h:mm:ss``."""
    if duration < 60:
        return f"{seconds:.1f} s" if seconds % 1 else f"{seconds:.0f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if duration >= 3600 else f"{minutes}:{secs:02d}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
