"""Output formats and the timeline picture, each read back by an independent parser: `srt` and `webvtt-py` for
subtitles, the `csv` module, pyannote's own RTTM loader and `serialize()`, an XML parser for the SVG, Pillow for the
PNG. Hand-made results: fast, and every edge (overlap, a speaker name, hours, odd characters) is chosen."""

from __future__ import annotations

import csv
import datetime
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import srt
import webvtt
from PIL import Image

from diarization.core.result import AudioFacts, DiarizationResult, ModelInfo, Segment, Timings
from diarization.errors import UnknownFormatError
from diarization.outputs import formats, timeline

SVG = "{http://www.w3.org/2000/svg}"
SEGMENTS = [
    Segment(0.5, 4.25, "SPEAKER_00"),
    Segment(3.5, 7.0, "SPEAKER_01"),
    Segment(8.0, 3725.125, "SPEAKER_00"),  # past an hour: the clock's hours field
]
EXCLUSIVE = [
    Segment(0.5, 3.5, "SPEAKER_00"),
    Segment(3.5, 7.0, "SPEAKER_01"),
    Segment(8.0, 3725.125, "SPEAKER_00"),
]


def make_result(
    segments: list[Segment] = SEGMENTS, exclusive: list[Segment] = EXCLUSIVE, duration: float = 3730.0
) -> dict[str, Any]:
    return DiarizationResult(
        input_uri="s3://bucket/audio/Team call 1.m4a",
        audio=AudioFacts(duration, 44_100, 2, "aac", "mov,mp4,m4a,3gp,3g2,mj2", 1234),
        parameters={"num_speakers": None, "min_speakers": None, "max_speakers": None},
        segments=segments,
        exclusive_segments=exclusive,
        model=ModelInfo("m", None, True, "4.0.7", "2.14.1", None, "cpu", "cpu", 2),
        timings=Timings(0.1, 1.0, 1.1, 0.11),
    ).to_dict()


def named(result: dict[str, Any], speaker: str, name: str) -> dict[str, Any]:
    """What identification (issue 12, item 1) adds: a `name` on the speaker's entry."""
    for entry in result["speakers"]:
        if entry["id"] == speaker:
            entry["name"] = name
    return result


def text(result: dict[str, Any], name: str) -> str:
    return formats.render(result, name).decode("utf-8")


def test_srt_has_one_numbered_cue_per_exclusive_turn() -> None:
    cues = list(srt.parse(text(make_result(), "srt")))
    assert [cue.index for cue in cues] == [1, 2, 3]
    assert [(cue.start, cue.end) for cue in cues] == [
        (datetime.timedelta(seconds=s.start), datetime.timedelta(seconds=s.end)) for s in EXCLUSIVE
    ]
    assert [cue.content for cue in cues] == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_00"]
    assert "01:02:05,125" in text(make_result(), "srt")  # 3725.125 s: comma before the milliseconds


def test_vtt_reads_back_with_webvtt_py() -> None:
    body = text(make_result(), "vtt")
    assert body.startswith("WEBVTT\n\n")
    captions = webvtt.from_string(body)
    assert [(c.start, c.end, c.text) for c in captions] == [
        ("00:00:00.500", "00:00:03.500", "SPEAKER_00"),
        ("00:00:03.500", "00:00:07.000", "SPEAKER_01"),
        ("00:00:08.000", "01:02:05.125", "SPEAKER_00"),
    ]


def test_subtitles_show_a_name_safely() -> None:
    """A user-chosen name cannot end a cue early (blank line), fake a timing line (-->) or inject markup (WebVTT)."""
    result = named(make_result(), "SPEAKER_01", "Ana <b> & Bo\n\n--> x")
    cues = list(srt.parse(text(result, "srt")))
    assert len(cues) == 3 and cues[1].content == "Ana <b> & Bo -> x"
    captions = webvtt.from_string(text(result, "vtt"))
    assert len(captions) == 3 and captions[1].raw_text == "Ana &lt;b&gt; &amp; Bo -&gt; x"
    assert captions[0].text == "SPEAKER_00"


def test_csv_rows_are_rfc4180_with_names_quoted_and_formulas_defused() -> None:
    result = named(named(make_result(), "SPEAKER_00", 'Smith, "Jo"'), "SPEAKER_01", "=HYPERLINK(1)")
    body = text(result, "csv")
    assert body.count("\r\n") == len(SEGMENTS) + 1
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0] == ["start", "end", "duration", "speaker"]
    assert rows[1:] == [
        ["0.500", "4.250", "3.750", 'Smith, "Jo"'],
        ["3.500", "7.000", "3.500", "'=HYPERLINK(1)"],
        ["8.000", "3725.125", "3717.125", 'Smith, "Jo"'],
    ]


def test_rttm_reads_back_with_pyannote(tmp_path: Path) -> None:
    from pyannote.database.util import load_rttm

    path = tmp_path / "out.rttm"
    path.write_text(text(make_result(), "rttm"))
    (uri, annotation), *_ = load_rttm(path).items()
    assert uri == "Team_call_1"
    turns = [(round(t.start, 3), round(t.end, 3), label) for t, _, label in annotation.itertracks(yield_label=True)]
    assert turns == [(s.start, s.end, s.speaker) for s in SEGMENTS]


def test_pyannote_and_pyannoteai_match_the_originals_keys() -> None:
    from pyannote.audio.pipelines.speaker_diarization import DiarizeOutput
    from pyannote.core import Annotation
    from pyannote.core import Segment as Turn

    def annotation(segments: list[Segment]) -> Annotation:
        value = Annotation()
        for index, s in enumerate(segments):
            value[Turn(s.start, s.end), index] = s.speaker
        return value

    expected = DiarizeOutput(annotation(SEGMENTS), annotation(EXCLUSIVE)).serialize()
    result = named(make_result(), "SPEAKER_00", "Ana")  # the pyannote formats keep ids, as pyannote does
    assert json.loads(text(result, "pyannote")) == expected
    ai = json.loads(text(result, "pyannoteai"))
    assert ai == {"diarization": expected["diarization"], "exclusiveDiarization": expected["exclusive_diarization"]}


def test_json_is_the_result() -> None:
    result = make_result()
    assert json.loads(text(result, "json")) == result


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("srt,vtt", ("srt", "vtt")),
        (["png", "SRT", "json", "srt"], ("srt", "png")),
        ([], ()),
        ("", ()),
        ("json", ()),
    ],
)
def test_format_lists_are_canonical(value: object, expected: tuple[str, ...]) -> None:
    assert formats.parse_formats(value) == expected


@pytest.mark.parametrize("value", [["docx"], "srt,mp4", 3, [1], {"srt": True}, None])
def test_a_bad_format_is_a_typed_error(value: object) -> None:
    with pytest.raises(UnknownFormatError) as raised:
        formats.parse_formats(value)
    assert raised.value.code == "UNKNOWN_FORMAT" and raised.value.http_status == 400
    assert raised.value.details["allowed"] == list(formats.OUTPUT_FORMATS)
    with pytest.raises(UnknownFormatError):
        formats.render(make_result(), "docx")


def parse_svg(body: str) -> ET.Element:
    return ET.fromstring(body)  # noqa: S314  (our own output, parsed in a test)


def by_class(root: ET.Element, tag: str, role: str) -> list[ET.Element]:
    return [element for element in root.iter(SVG + tag) if element.get("class") == role]


def test_svg_has_a_lane_per_speaker_bars_inside_the_axis_and_overlap() -> None:
    result = named(make_result(), "SPEAKER_01", "Ana & <Bo>")
    body = timeline.svg(result)
    root = parse_svg(body)
    lanes = by_class(root, "rect", "lane")
    labels = [element.text for element in by_class(root, "text", "label")]
    assert len(lanes) == 2 and labels == ["SPEAKER_00", "Ana & <Bo>"]
    (axis,) = by_class(root, "line", "axis")
    left, right = float(axis.get("x1", "")), float(axis.get("x2", ""))
    bars = by_class(root, "rect", "bar")
    assert len(bars) == len(SEGMENTS)
    for bar in bars:
        x, width = float(bar.get("x", "")), float(bar.get("width", ""))
        assert left <= x and x + width <= right + 0.01
    lane_tops = [float(lane.get("y", "")) for lane in lanes]
    assert sorted({float(bar.get("y", "")) for bar in bars}) == lane_tops  # every bar sits in a lane
    (overlap,) = by_class(root, "rect", "overlap")  # 3.5-4.25 s, across the lanes, hatched
    assert overlap.get("fill") == "url(#hatch)"
    scale = (right - left) / 3730.0
    assert float(overlap.get("x", "")) == pytest.approx(left + 3.5 * scale, abs=0.01)
    assert float(overlap.get("width", "")) == pytest.approx(max(0.75 * scale, 1.0), abs=0.01)  # at least a pixel
    ticks = [element.text for element in by_class(root, "text", "tick")]
    assert ticks[0] == "0:00:00" and ticks[1] == "0:10:00" and len(ticks) <= timeline.MAX_TICKS + 1
    (title,) = by_class(root, "text", "title")
    assert title.text == "Team call 1.m4a · 1:02:10 · 2 speakers"
    assert timeline.svg(result) == body  # deterministic


def test_svg_of_silence_says_so() -> None:
    root = parse_svg(timeline.svg(make_result([], [], 4.0)))
    assert [element.text for element in by_class(root, "text", "label")] == ["no speech"]
    assert not by_class(root, "rect", "bar") and not by_class(root, "rect", "overlap")
    ticks = [element.text for element in by_class(root, "text", "tick")]
    assert ticks[:3] == ["0 s", "0.5 s", "1 s"] and ticks[-1] == "4 s" and len(ticks) == 9


@pytest.mark.parametrize(
    ("duration", "step"), [(4.0, 0.5), (30.0, 5), (59.0, 10), (600.0, 60), (3730.0, 600), (36000.0, 3600)]
)
def test_tick_steps_are_round_and_few(duration: float, step: float) -> None:
    assert timeline.tick_step(duration) == step


def test_overlap_spans_merge_and_ignore_touching_turns() -> None:
    segments = [
        {"start": 0.0, "end": 2.0, "speaker": "A"},
        {"start": 2.0, "end": 3.0, "speaker": "B"},  # touches A: no overlap
        {"start": 2.5, "end": 5.0, "speaker": "C"},
        {"start": 4.0, "end": 6.0, "speaker": "A"},
    ]
    assert timeline.overlap_spans(segments) == [(2.5, 3.0), (4.0, 5.0)]


def test_png_opens_with_pillow_and_is_not_blank() -> None:
    image = Image.open(io.BytesIO(formats.render(make_result(), "png")))
    width, height, _ = timeline.scene(make_result())
    assert image.format == "PNG" and image.size == (width * 2, height * 2)
    colours = image.convert("RGB").getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 20  # bars, hatching, anti-aliased text: not a blank canvas
    bar = timeline.PALETTE[0]
    assert any(abs(c[0] - int(bar[1:3], 16)) < 8 and abs(c[2] - int(bar[5:7], 16)) < 8 for _, c in colours)
