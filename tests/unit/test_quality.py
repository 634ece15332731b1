"""The accuracy harness (`make quality`): scoring conventions, the data cache, the page and the regression gate.

Scoring is checked on hand-made references and hypotheses whose answer is worked out in each test; the
data cache on small synthetic archives (the real one is a 14 MB download); one real run scores pyannote's
sample with the tiny random-weight pipeline through every condition.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyannote.core import Annotation, Segment, Timeline

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import quality_data
from quality import main
from quality_data import QualityDataError, extract, fetch, reference_key, verify
from quality_gate import TOLERANCE, check, figures, thresholds_from
from quality_metrics import Components, detection_components, diarization_components, pooled, speaker_count
from quality_page import UNTRAINED, render


def annotation(*turns: tuple[float, float, str]) -> Annotation:
    result = Annotation(uri="file")
    for index, (start, end, speaker) in enumerate(turns):
        result[Segment(start, end), index] = speaker
    return result


def uem(start: float, end: float) -> Timeline:
    return Timeline([Segment(start, end)])


REFERENCE = annotation((0, 10, "A"), (10, 20, "B"))
HYPOTHESIS = annotation((0, 12, "s1"), (12, 18, "s2"), (20, 22, "s3"))
"""s1 runs 2 s into B's turn (confusion 2 s), s2 stops 2 s early (missed 2 s), s3 speaks after the UEM."""


def test_der_counts_missed_false_alarm_and_confusion_inside_the_uem_only() -> None:
    inside = diarization_components(REFERENCE, HYPOTHESIS, uem(0, 20))
    assert inside == Components(total=20.0, missed=2.0, false_alarm=0.0, confusion=2.0)
    assert inside.error_rate == pytest.approx(0.2)

    wider = diarization_components(REFERENCE, HYPOTHESIS, uem(0, 22))
    assert wider.false_alarm == pytest.approx(2.0)
    assert wider.error_rate == pytest.approx(0.3)


def test_the_collar_leaves_a_quarter_second_either_side_of_each_reference_boundary_unscored() -> None:
    # Boundaries at 0, 10 and 20: scored are 0.25-9.75 and 10.25-19.75 (19 s); the confusion shrinks to
    # 10.25-12 and the miss to 18-19.75. pyannote.metrics' own collar=0.25 would leave only 0.125 s a side.
    scored = diarization_components(REFERENCE, HYPOTHESIS, uem(0, 20), collar=0.25)
    assert scored.total == pytest.approx(19.0)
    assert scored.confusion == pytest.approx(1.75)
    assert scored.missed == pytest.approx(1.75)
    assert scored.error_rate == pytest.approx(3.5 / 19)


def test_overlapping_speech_is_scored() -> None:
    reference = annotation((0, 10, "A"), (5, 10, "B"))
    single_speaker = annotation((0, 10, "s"))
    components = diarization_components(reference, single_speaker, uem(0, 10))
    assert components.total == pytest.approx(15.0)
    assert components.missed == pytest.approx(5.0)
    assert components.error_rate == pytest.approx(1 / 3)


def test_speech_detection_ignores_who_speaks_and_respects_the_uem() -> None:
    reference = annotation((0, 10, "A"), (5, 15, "B"))
    speech = Timeline([Segment(0, 12)])
    assert detection_components(reference, speech, uem(0, 15)) == Components(total=15.0, missed=3.0, false_alarm=0.0)
    assert detection_components(reference, speech, uem(0, 12)).error_rate == 0.0
    assert detection_components(reference, Timeline([Segment(0, 20)]), uem(0, 20)).false_alarm == pytest.approx(5.0)


def test_group_rates_are_pooled_not_averaged() -> None:
    little_speech = Components(total=10.0, missed=5.0, false_alarm=0.0, confusion=0.0)
    much_speech = Components(total=90.0, missed=0.0, false_alarm=0.0, confusion=0.0)
    assert pooled([little_speech, much_speech]).error_rate == pytest.approx(0.05)


def test_speakers_are_counted_inside_the_scored_region() -> None:
    assert speaker_count(HYPOTHESIS, uem(0, 20)) == 2
    assert speaker_count(HYPOTHESIS, uem(0, 22)) == 3


def test_the_train_file_with_a_non_ascii_name_finds_its_reference() -> None:
    assert reference_key("trñ00") == "trn00"
    assert reference_key("dev00") == "dev00"


def test_oracle_clustering_that_matches_only_silent_local_speakers_gives_no_speech() -> None:
    # The segmentation's only active local speaker (2) talks all the time; a 0.7 s reference turn disagrees least
    # with a silent one, which pyannote then drops: nothing is left, and pyannote 4.0.7 would fail reconstructing.
    from pyannote.core import SlidingWindow, SlidingWindowFeature
    from quality_pipelines import NoSpeakerMatchedError, _OracleClustering

    data = np.zeros((21, 100, 3))
    data[:, :, 2] = 1
    segmentations = SlidingWindowFeature(data, SlidingWindow(start=0.0, duration=10.0, step=1.0))
    frames = SlidingWindow(start=0.0, duration=0.1, step=0.1)
    clustering = _OracleClustering(metric="not_applicable")

    short_turn = {"uri": "f", "annotation": annotation((20.7, 21.4, "A")), "duration": 30.0}
    with pytest.raises(NoSpeakerMatchedError):
        clustering(embeddings=None, segmentations=segmentations, file=short_turn, frames=frames)

    whole_file = {"uri": "f", "annotation": annotation((0, 30, "A")), "duration": 30.0}
    hard_clusters, _, _ = clustering(embeddings=None, segmentations=segmentations, file=whole_file, frames=frames)
    assert (hard_clusters[:, 2] == 0).all() and (hard_clusters[:, :2] == -2).all()


# --- the data cache ---------------------------------------------------------------------------------


@pytest.fixture
def tiny_sdist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An archive laid out like the sdist, with the pins pointed at it: the real one is a 14 MB download."""
    files = {"a.rttm": b"SPEAKER a 1 0.0 1.0 <NA> <NA> A <NA> <NA>\n", "a.wav": b"RIFF not really audio"}
    sdist = tmp_path / "downloads" / quality_data.SDIST
    sdist.parent.mkdir()
    with tarfile.open(sdist, "w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(f"pkg/tests/data/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    monkeypatch.setattr(quality_data, "MEMBERS", {"pkg/tests/data/": tuple(files)})
    monkeypatch.setattr(quality_data, "FILE_SHA256", {n: hashlib.sha256(c).hexdigest() for n, c in files.items()})
    monkeypatch.setattr(quality_data, "SDIST_SHA256", quality_data.sha256(sdist))
    return sdist


def test_a_verified_sdist_is_extracted_and_reused_from_the_cache(tiny_sdist: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    tiny_sdist.replace(cache / quality_data.SDIST)
    data_dir = fetch(cache)
    assert sorted(path.name for path in data_dir.iterdir()) == ["a.rttm", "a.wav"]
    assert fetch(cache) == data_dir


def test_an_sdist_with_another_hash_is_refused_and_nothing_is_extracted(tiny_sdist: Path, tmp_path: Path) -> None:
    tiny_sdist.write_bytes(tiny_sdist.read_bytes() + b"tampered")
    with pytest.raises(QualityDataError, match="not the pinned") as raised:
        extract(tiny_sdist, tmp_path / "data")
    assert raised.value.code == "QUALITY_DATA_INVALID"
    assert not (tmp_path / "data").exists()


def test_a_corrupted_cache_is_refused_naming_the_files_and_the_fix(tiny_sdist: Path, tmp_path: Path) -> None:
    data_dir = extract(tiny_sdist, tmp_path / "data")
    (data_dir / "a.wav").write_bytes(b"other audio")
    (data_dir / "a.rttm").unlink()
    with pytest.raises(QualityDataError, match=r"\(missing a\.rttm; changed a\.wav\)\. Delete the cache directory"):
        fetch(tmp_path)
    with pytest.raises(QualityDataError):
        verify(data_dir)


def test_an_sdist_without_a_pinned_file_is_refused(
    tiny_sdist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quality_data, "MEMBERS", {"pkg/tests/data/": ("a.wav", "b.wav")})
    with pytest.raises(QualityDataError, match=r"has no file pkg/tests/data/b\.wav"):
        extract(tiny_sdist, tmp_path / "data")
    assert not list(tmp_path.glob("data*"))


# --- the page and the gate, on synthetic runs ---------------------------------------------------------


def scored_item(uri: str, subset: str, missed: float, speakers: int = 2) -> dict[str, Any]:
    """A file with 20 s of reference speech and `missed` seconds missed under every condition."""
    components = Components(total=20.0, missed=missed, false_alarm=1.0, confusion=1.0).to_dict()
    condition = {"speakers": speakers, "no_collar": components, "collar": components}
    return {
        "uri": uri,
        "subset": subset,
        "duration": 30.0,
        "reference_speakers": 2,
        "speech": Components(total=20.0, missed=missed, false_alarm=1.0).to_dict(),
        "conditions": {"pipeline": condition, "num_speakers": dict(condition, speakers=2), "oracle": condition},
    }


def synthetic_run(trained: bool = False, missed: float = 2.0) -> dict[str, Any]:
    items = [
        scored_item("sample", "sample", missed),
        scored_item("tst00", "test", missed, speakers=1),
        scored_item("tst01", "test", 0.0),
        scored_item("dev00", "development", 4.0),
    ]
    return {
        "started": "2026-11-26 03:00 UTC",
        "commit": "abc1234",
        "model_dir": "/models/x",
        "model": {"name": "x", "revision": "seed-0", "trained": trained, "source": "offline"},
        "clustering": {"name": "VBxClustering", "threshold": 0.6},
        "pyannote_version": "4.0.7",
        "threads": 2,
        "collar_seconds": 0.25,
        "items": items,
        "figures": figures(items),
    }


def test_figures_are_pooled_error_rates_per_group() -> None:
    values = synthetic_run()["figures"]
    assert values["sample/der"] == pytest.approx(0.2)
    assert values["test/der"] == pytest.approx((2 + 2 + 0 + 2) / 40)
    assert values["development/speech_detection_error"] == pytest.approx(0.25)
    assert "train/der" not in values


def test_page_names_the_model_flags_random_weights_and_separates_test_from_tuning_data() -> None:
    page = render(synthetic_run())
    assert "model **x** (revision seed-0, source offline), **untrained (random weights)**" in page
    assert UNTRAINED in page
    assert "CC BY 4.0" in page
    assert "| test | 2 | 15.0 % | 15.0 % | 5.0 % | 5.0 % | 5.0 % | 15.0 % | 15.0 % | 10.0 % | 1 of 2 |" in page
    assert "| tst00 | test | 2 / 1 / 2 | 20.0 % | 20.0 % | 10.0 % | 5.0 % | 5.0 % | 20.0 % | 20.0 % | 15.0 % |" in page
    assert "Not measured in this run: train." in page
    tested, tuning = page.split("## Per file — Train and development")
    assert "| tst01 |" in tested and "| dev00 |" not in tested
    assert "| dev00 | development |" in tuning

    trained = render(synthetic_run(trained=True))
    assert "**trained**" in trained and UNTRAINED not in trained


def test_the_page_can_be_rewritten_from_a_runs_results(tmp_path: Path) -> None:
    results, page = tmp_path / "quality.json", tmp_path / "QUALITY.md"
    results.write_text(json.dumps(synthetic_run()))
    assert main(["--render", "--results", str(results), "--output", str(page)]) == 0
    assert page.read_text() == render(synthetic_run())


def test_an_unknown_subset_is_refused_before_any_work(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["--subsets", "test,eval", "--cache-dir", "/nonexistent"])
    assert raised.value.code == 2
    assert "unknown subset(s) eval: choose from train, development, test, sample" in capsys.readouterr().err


def test_gate_passes_the_run_it_recorded_and_drift_within_tolerance() -> None:
    thresholds = thresholds_from(synthetic_run())
    assert check(thresholds, synthetic_run()) == []
    drifted = synthetic_run(missed=2.0 + 20 * TOLERANCE * 0.9)
    assert check(thresholds, drifted) == []
    assert check(thresholds, synthetic_run(missed=0.0)) == []


def test_gate_fails_each_figure_worse_than_recorded_plus_tolerance() -> None:
    thresholds = thresholds_from(synthetic_run())
    failures = check(thresholds, synthetic_run(missed=2.0 + 20 * TOLERANCE * 1.5))
    assert "sample/der: 0.2300 is worse than the recorded 0.2000 + tolerance 0.0200" in failures
    # Only sample's figures fail: test pools tst00 (which got worse) with tst01 (which did not), so its figures
    # move by half the drift, within tolerance; development did not change.
    assert {failure.split(":")[0] for failure in failures} == {
        f"sample/{figure}"
        for figure in ("der", "der_collar", "der_num_speakers", "der_oracle", "speech_detection_error")
    }


def test_gate_fails_a_figure_that_was_not_measured_and_another_model() -> None:
    thresholds = thresholds_from(synthetic_run())
    partial = synthetic_run()
    del partial["figures"]["test/der_oracle"]
    assert check(thresholds, partial) == ["test/der_oracle: not measured in this run (recorded 0.1500)"]

    other = synthetic_run(trained=True)
    [failure] = check(thresholds, other)
    assert "thresholds were recorded for model" in failure and "record new thresholds" in failure


# --- one real run ------------------------------------------------------------------------------------
