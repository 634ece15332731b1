"""The accuracy harness run for real: pyannote's sample scored with the tiny random-weight pipeline through every
condition, and the tuning grid (the scoring conventions, data cache, page and gate are in unit/test_quality.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pyannote.core import Segment, Timeline

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from quality import evaluate, tune
from quality_data import Item
from quality_gate import TOLERANCE, check, thresholds_from
from quality_page import render


def uem(start: float, end: float) -> Timeline:
    return Timeline([Segment(start, end)])


def test_real_run_on_the_sample_with_the_tiny_pipeline(tiny_model_dir: Path, sample_path: Path) -> None:
    from pyannote.database.util import load_rttm

    reference = load_rttm(sample_path.with_suffix(".rttm"))["sample"]
    run = evaluate([Item("sample", "sample", sample_path, reference, None)], tiny_model_dir, threads=2)

    [item] = run["items"]
    assert run["model"]["trained"] is False and run["model_dir"] == str(tiny_model_dir)
    assert item["duration"] == pytest.approx(30.0, abs=0.1)
    assert item["reference_speakers"] == 2
    # Scored over the whole file without a collar, the denominator is all of the reference's speech.
    reference_speech = sum(segment.duration for segment in reference.itersegments())
    for condition in ("pipeline", "num_speakers", "oracle"):
        assert item["conditions"][condition]["no_collar"]["total"] == pytest.approx(reference_speech)
    assert item["conditions"]["num_speakers"]["speakers"] == 2
    assert item["conditions"]["oracle"]["speakers"] <= 2
    assert set(run["figures"]) == {
        f"sample/{name}" for name in ("der", "der_collar", "der_num_speakers", "der_oracle", "speech_detection_error")
    }
    assert all(value >= 0 for value in run["figures"].values())

    thresholds = thresholds_from(run)
    assert check(thresholds, run) == []
    thresholds["thresholds"]["sample/der"] = run["figures"]["sample/der"] - 2 * TOLERANCE
    assert [failure.split(":")[0] for failure in check(thresholds, run)] == ["sample/der"]
    assert "| sample | sample | 2 /" in render(run)


def test_tuning_grid_searches_the_clustering_threshold_over_its_range(tiny_model_dir: Path, sample_path: Path) -> None:
    from pyannote.database.util import load_rttm

    reference = load_rttm(sample_path.with_suffix(".rttm"))["sample"]
    tuning = tune([Item("sample", "train", sample_path, reference, uem(0, 30))], tiny_model_dir, steps=3)

    assert [row["threshold"] for row in tuning["grid"]] == [0.5, 0.65, 0.8]  # VBx's declared range
    assert tuning["best"] == min(tuning["grid"], key=lambda row: row["der"])
    assert tuning["clustering"] == {"name": "VBxClustering", "threshold": 0.6, "Fa": 0.07, "Fb": 0.8}
    assert tuning["tuned_on"] == ["train"] and tuning["files"] == ["sample"]
