"""The CLI's --format and --plot: a real subprocess on real audio, read back with independent parsers."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import srt
import webvtt
from PIL import Image
from test_cli import assert_one_line_error, run_cli


def test_subtitles_to_a_file_and_a_png_picture(sample_path: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    output, picture = tmp_path / "talk.srt", tmp_path / "pictures" / "talk.png"
    done = run_cli(sample_path, "--model-dir", tiny_model_dir, "--format", "srt", "-o", output, "--plot", picture)
    assert done.returncode == 0, done.stderr
    cues = list(srt.parse(output.read_text()))
    assert cues and all(cue.content.startswith("SPEAKER_") for cue in cues)
    assert [cue.index for cue in cues] == list(range(1, len(cues) + 1))
    with Image.open(picture) as image:
        assert image.format == "PNG" and image.size[0] == 1920


def test_webvtt_to_stdout_and_an_svg_picture(sample_path: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    picture = tmp_path / "talk.SVG"
    done = run_cli(sample_path, "--model-dir", tiny_model_dir, "--format", "vtt", "--plot", picture)
    assert done.returncode == 0, done.stderr
    assert len(webvtt.from_string(done.stdout)) > 0
    root = ET.fromstring(picture.read_text())  # noqa: S314  (our own output)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"


def test_a_picture_of_another_kind_is_refused_before_any_work(sample_path: Path, tmp_path: Path) -> None:
    done = run_cli(sample_path, "--model-dir", tmp_path / "no-model", "--plot", tmp_path / "talk.gif")
    assert "the picture is .svg or .png" in assert_one_line_error(done, "INVALID_PARAMETER", 2)
    assert not (tmp_path / "talk.gif").exists()
