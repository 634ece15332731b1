"""Fan-out core: shards computed independently (each from only its own samples) and reduced give exactly the
single-process answer, and the reduce refuses parts that do not cover the file once.

The audio is real speech: pyannote's 30 s sample followed by AMI meeting excerpts from pyannote.audio's sdist (the
quality harness's data, CC-BY-4.0), so speakers change across shard boundaries.
"""

from __future__ import annotations

import dataclasses
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diarization.core.audio import SAMPLE_RATE, DecodedAudio, decode_audio
from diarization.core.config import Settings
from diarization.core.engine import SILENCE_WARNING, Diarizer, peak_of
from diarization.core.hints import SpeakerHints
from diarization.core.result import AudioFacts, DiarizationResult
from diarization.fanout.plan import Grid, ShardRange, batch_alignment, plan_shards
from diarization.fanout.shards import compute_shard, grid_for, reduce_shards, shard_plan
from infra.media import read_wav

TOLERANCE = 1e-4
"""Centroids may differ by float rounding at most (they are bit-identical when measured)."""

SPEECH = (("sample.wav", 30.0), ("tst00.wav", 12.5))
"""42.5 s: pyannote's sample (2 speakers), then the start of an AMI meeting excerpt (others); 34 chunks, the last
one padded."""


@pytest.fixture(scope="module")
def speech(models_root: Path, sample_path: Path) -> DecodedAudio:
    """Real speech across shard boundaries, 16 kHz mono float32: five shards, and short enough for CI's two cores
    (each pipeline runs it once per hint set, plus once in shards)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from quality_data import fetch

    data = fetch(models_root / "quality-data")
    pieces = []
    for name, seconds in SPEECH:
        path = sample_path if name == "sample.wav" else data / name
        pieces.append(decode_audio(path, max_bytes=10**8, max_seconds=60).samples[: int(seconds * SAMPLE_RATE)])
    return decoded(np.concatenate(pieces))


def decoded(samples: np.ndarray) -> DecodedAudio:
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    facts = AudioFacts(len(samples) / SAMPLE_RATE, SAMPLE_RATE, 1, "pcm_s16le", "wav", 2 * len(samples))
    return DecodedAudio(samples, facts)


def fan_out(diarizer: Diarizer, audio: DecodedAudio, chunks_per_shard: int) -> list[bytes]:
    """Every shard from a copy of only its own samples (nothing else of the file is reachable)."""
    plan = shard_plan(diarizer, len(audio.samples), chunks_per_shard)
    return [compute_shard(diarizer, audio.samples[s.sample_start : s.sample_stop].copy(), s) for s in plan]


def reduce(diarizer: Diarizer, parts: Sequence[bytes], audio: DecodedAudio, hints: SpeakerHints, **kw: Any) -> Any:
    return reduce_shards(
        diarizer, parts, len(audio.samples), audio.facts, hints, "speech.wav", peak=peak_of(audio.samples), **kw
    )


def assert_same(fanned: DiarizationResult, single: DiarizationResult) -> None:
    assert fanned.to_rttm() == single.to_rttm()
    assert fanned.segments == single.segments
    assert fanned.exclusive_segments == single.exclusive_segments
    assert fanned.speakers == single.speakers
    assert fanned.warnings == single.warnings
    assert fanned.model == single.model and fanned.parameters == single.parameters
    assert fanned.identities == single.identities and fanned.identification == single.identification
    assert set(fanned.speaker_embeddings) == set(single.speaker_embeddings)
    for label, centroid in single.speaker_embeddings.items():
        np.testing.assert_allclose(fanned.speaker_embeddings[label], centroid, rtol=0, atol=TOLERANCE)
    without_timings = {k: v for k, v in fanned.to_dict().items() if k != "timings"}
    assert without_timings == {k: v for k, v in single.to_dict().items() if k != "timings"}


# -- plan and refusals (tiny model, seconds) ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> Diarizer:
    """Batches of 4 (chunks; chunk-speaker pairs for its upstream embedding step): shards of 4 chunks."""
    settings = Settings(model_dir=tiny_model_dir, num_threads=2, embedding_batch_size=4, segmentation_batch_size=4)
    return Diarizer.from_settings(settings)


@pytest.fixture(scope="module")
def short_speech(sample_path: Path) -> DecodedAudio:
    samples, _ = read_wav(sample_path)
    """17 chunks: shards [0, 4) … [12, 16) and the padded last chunk alone in [16, 17)."""
    return decoded(samples[: 25 * SAMPLE_RATE + 4000])


@pytest.fixture(scope="module")
def tiny_parts(tiny: Diarizer, short_speech: DecodedAudio) -> list[bytes]:
    return fan_out(tiny, short_speech, 4)


def test_the_grid_is_pyannotes_and_covers_every_sample() -> None:
    grid = Grid(num_samples=27 * SAMPLE_RATE + 4000, window=160_000, step=16_000)
    assert (grid.full_chunks, grid.has_padded_chunk, grid.num_chunks) == (18, True, 19)
    assert grid.samples_for(0, 4) == (0, 3 * 16_000 + 160_000)
    assert grid.samples_for(16, 19) == (16 * 16_000, grid.num_samples), "the padded chunk reads to the end"
    exact = Grid(num_samples=20 * 16_000 + 160_000, window=160_000, step=16_000)
    assert (exact.num_chunks, exact.has_padded_chunk) == (21, False)
    short = Grid(num_samples=1000, window=160_000, step=16_000)
    assert (short.full_chunks, short.num_chunks, short.samples_for(0, 1)) == (0, 1, (0, 1000))
    with pytest.raises(ValueError, match=r"chunks \[3, 20\) are not within \[0, 19\)"):
        grid.samples_for(3, 20)


def test_shards_are_contiguous_batch_aligned_and_complete() -> None:
    grid = Grid(num_samples=600 * SAMPLE_RATE, window=160_000, step=16_000)
    plan = plan_shards(grid, chunks_per_shard=100, alignment=batch_alignment(4, 32))
    assert [(s.first_chunk, s.stop_chunk) for s in plan] == [(0, 96), (96, 192), (192, 288), (288, 384),
                                                             (384, 480), (480, 576), (576, 591)]  # fmt: skip
    assert all(s.first_chunk % 32 == 0 for s in plan) and plan[-1].sample_stop == grid.num_samples
    assert plan_shards(grid, chunks_per_shard=5, alignment=32)[0].stop_chunk == 32, "never below one alignment"
    assert ShardRange.from_dict(plan[2].to_dict()) == plan[2]
    with pytest.raises(ValueError, match="must be positive"):
        plan_shards(grid, chunks_per_shard=0, alignment=4)


def test_the_loaded_pipeline_gives_the_grid_and_alignment(tiny: Diarizer) -> None:
    pipeline = tiny.loaded.pipeline
    grid = grid_for(tiny, 600 * SAMPLE_RATE)
    assert (grid.window, grid.step) == (160_000, 16_000)
    alignment = batch_alignment(pipeline.segmentation_batch_size, pipeline.embedding_batch_size)
    assert all(s.first_chunk % alignment == 0 for s in shard_plan(tiny, 600 * SAMPLE_RATE, 50))
    with pytest.raises(ValueError, match="no samples"):
        grid_for(tiny, 0)


def test_tiny_shards_reduce_to_the_single_run(
    tiny: Diarizer, short_speech: DecodedAudio, tiny_parts: list[bytes]
) -> None:
    assert len(tiny_parts) == 5
    with np.load(io.BytesIO(tiny_parts[-1]), allow_pickle=False) as last:
        assert (int(last["first_chunk"]), int(last["stop_chunk"])) == (16, 17), "the padded chunk alone"
    single = tiny.diarize_decoded(short_speech, SpeakerHints(), "speech.wav")
    assert single.segments
    assert_same(reduce(tiny, tiny_parts, short_speech, SpeakerHints()), single)
    assert_same(reduce(tiny, list(reversed(tiny_parts)), short_speech, SpeakerHints()), single)


def test_identification_names_the_same_speakers(
    tiny: Diarizer, short_speech: DecodedAudio, tiny_parts: list[bytes]
) -> None:
    voiceprint, _ = tiny.enroll_decoded(short_speech, "alice", "alice.wav")
    single = tiny.diarize_decoded(short_speech, SpeakerHints(), "speech.wav", voiceprints=[voiceprint])
    fanned = reduce(tiny, tiny_parts, short_speech, SpeakerHints(), voiceprints=[voiceprint], include_embeddings=True)
    assert "alice" in {speaker.name for speaker in single.speakers}
    assert_same(fanned, dataclasses.replace(single, include_embeddings=True))


def test_a_shard_refuses_samples_that_are_not_its_range(tiny: Diarizer, short_speech: DecodedAudio) -> None:
    shard = shard_plan(tiny, len(short_speech.samples), 4)[1]
    samples = short_speech.samples[shard.sample_start : shard.sample_stop]
    with pytest.raises(ValueError, match=r"reads samples \[64000, 272000\) \(208000\), but 207999 were given"):
        compute_shard(tiny, samples[:-1], shard)
    with pytest.raises(ValueError, match="1-D float32, not 1-D float64"):
        compute_shard(tiny, samples.astype(np.float64), shard)
    wrong = dataclasses.replace(shard, stop_chunk=shard.stop_chunk + 1)
    with pytest.raises(ValueError, match=r"pyannote cut 4 chunks from its samples, not the 5 of chunks \[4, 9\)"):
        compute_shard(tiny, samples, wrong)


def test_the_reduce_refuses_missing_overlapping_duplicate_and_foreign_parts(
    tiny: Diarizer, short_speech: DecodedAudio, tiny_parts: list[bytes]
) -> None:
    hints = SpeakerHints()
    partial = io.BytesIO()
    np.savez(partial, segmentations=np.zeros((4, 589, 3), dtype=np.float32))
    cases = {
        r"a shard part is missing: chunks \[4, 8\) are in no part": [tiny_parts[0], *tiny_parts[2:]],
        r"a shard part is missing: chunks \[16, 17\) are in no part": tiny_parts[:-1],
        r"overlap or repeat: chunks \[4, 8\) start before chunk 8": [*tiny_parts, tiny_parts[1]],
        "no shard parts": [],
        "not a shard output": [*tiny_parts[:-1], b"PK\x03\x04 not an npz"],
        "lacks embeddings, first_chunk, sample_start": [*tiny_parts[:-1], partial.getvalue()],
    }
    for message, parts in cases.items():
        with pytest.raises(ValueError, match=message):
            reduce(tiny, parts, short_speech, hints)
    longer = decoded(np.concatenate([short_speech.samples, short_speech.samples[:8000]]))
    with pytest.raises(ValueError, match=r"chunks \[16, 17\) was cut from samples \[256000, 404000\)"):
        reduce(tiny, tiny_parts, longer, hints)
    with pytest.raises(ValueError, match="shard parts disagree on frames, speakers or embedding size"):
        reduce(tiny, [widened(tiny_parts[0]), *tiny_parts[1:]], short_speech, hints)
    another_model = [widened(part) for part in tiny_parts]
    with pytest.raises(ValueError, match=r"the parts hold \d+-dim embeddings; this model makes \d+-dim ones"):
        reduce(tiny, another_model, short_speech, hints)
    overlapping = fan_out(tiny, short_speech, 8)
    with pytest.raises(ValueError, match="overlap or repeat"):
        reduce(tiny, [*tiny_parts[:2], overlapping[0], *tiny_parts[2:]], short_speech, hints)


def widened(part: bytes) -> bytes:
    """The part with one more embedding dimension, as another embedding model would have made it."""
    with np.load(io.BytesIO(part), allow_pickle=False) as loaded:
        arrays = {name: loaded[name] for name in loaded.files}
    arrays["embeddings"] = np.pad(arrays["embeddings"], ((0, 0), (0, 0), (0, 1)))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_a_part_is_plain_arrays_and_loads_without_pickle(tiny_parts: list[bytes]) -> None:
    with np.load(io.BytesIO(tiny_parts[0]), allow_pickle=False) as part:
        assert part["segmentations"].dtype == np.float32 and part["segmentations"].shape[0] == 4
        assert part["embeddings"].dtype == np.float32 and part["embeddings"].shape[:2] == (4, 3)
        assert (int(part["first_chunk"]), int(part["stop_chunk"])) == (0, 4)


def test_silence_is_the_silent_result_without_clustering(tiny: Diarizer) -> None:
    silent = decoded(np.zeros(25 * SAMPLE_RATE, dtype=np.float32))
    parts = fan_out(tiny, silent, 4)
    fanned = reduce(tiny, parts, silent, SpeakerHints(num_speakers=2))
    single = tiny.diarize_decoded(silent, SpeakerHints(num_speakers=2), "speech.wav")
    assert fanned.segments == [] and SILENCE_WARNING in fanned.warnings
    assert_same(fanned, single)


HINTS = (SpeakerHints(), SpeakerHints(num_speakers=2))


@pytest.fixture(scope="module")
def multilabel(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Diarizer:
    """The tiny pipeline with a multilabel (not powerset) segmentation model, as pyannote/segmentation 2.x was: its
    output is thresholded per chunk (``segmentation.threshold``) before the embedding step, so a shard has to binarize
    its own chunks exactly as the single run does."""
    import shutil

    import torch
    import yaml
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.segmentation.debug import SimpleSegmentationModel

    from diarization.modelmaking.offline import save_model

    model_dir = tmp_path_factory.mktemp("multilabel") / "pipeline"
    shutil.copytree(tiny_model_dir, model_dir)
    torch.manual_seed(0)
    model = SimpleSegmentationModel()
    model.specifications = Specifications(
        problem=Problem.MULTI_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=10.0,
        warm_up=(0.0, 0.0),
        classes=["speaker#1", "speaker#2", "speaker#3"],
        permutation_invariant=True,
    )
    model.build()
    save_model(model.eval(), model_dir / "segmentation" / "pytorch_model.bin")
    config = yaml.safe_load((model_dir / "config.yaml").read_text())
    config["params"]["segmentation"]["threshold"] = 0.5
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    settings = Settings(model_dir=model_dir, num_threads=2, embedding_batch_size=4, segmentation_batch_size=4)
    return Diarizer.from_settings(settings)


def test_a_multilabel_segmentation_model_reduces_to_the_single_run(
    multilabel: Diarizer, short_speech: DecodedAudio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shards' embeddings are exactly those of the single run (recorded from pyannote's own call, a spy and not a
    stand-in) and so are the turns. Both are needed: embeddings of unthresholded masks differ by ~5e-3 and can still
    cluster the same."""
    pipeline = multilabel.loaded.pipeline
    computed: list[np.ndarray] = []
    upstream = pipeline.get_embeddings

    def recording(*args: Any, **kwargs: Any) -> np.ndarray:
        computed.append(upstream(*args, **kwargs))
        return computed[-1]

    monkeypatch.setattr(pipeline, "get_embeddings", recording)
    singles = {hints: multilabel.diarize_decoded(short_speech, hints, "speech.wav") for hints in HINTS}
    monkeypatch.undo()

    parts = fan_out(multilabel, short_speech, 4)
    sharded = np.concatenate([np.load(io.BytesIO(part), allow_pickle=False)["embeddings"] for part in parts])
    np.testing.assert_array_equal(sharded, computed[0])
    for hints, single in singles.items():
        assert len(single.segments) > 10 and len(single.speakers) > 1  # thresholded turns, not all-speech or silence
        assert_same(reduce(multilabel, parts, short_speech, hints), single)


# -- the equivalence on real speech (the item 1) -----------------------------------------------------------


@pytest.fixture(scope="module")
def production(production_model_dir: Path) -> Diarizer:
    """The production architecture with random weights on the fast embedding path, CPU batch sizes (4 and 1)."""
    diarizer = Diarizer.from_settings(Settings(model_dir=production_model_dir, device="cpu", num_threads=2))
    assert diarizer.loaded.fast_embeddings
    return diarizer


@pytest.fixture(scope="module")
def real(real_model_dir: Path) -> Diarizer:
    """Trained segmentation-3.0 and the GE2E stand-in embedding: pyannote's upstream embedding step. Batches of 8
    (measured twice as fast here as the default 32) so shards of 8 chunks align."""
    settings = Settings(
        model_dir=real_model_dir, device="cpu", num_threads=2, embedding_batch_size=8, segmentation_batch_size=8
    )
    diarizer = Diarizer.from_settings(settings)
    assert not diarizer.loaded.fast_embeddings
    return diarizer


SHARD_CHUNKS = {"production": 4, "real": 8}
"""Shards of 4 and 8 chunks (the alignments of the two pipelines' batch sizes)."""
SECONDS = {"production": 25.25, "real": 42.5}
"""Five shards each: production 17 chunks, the last shard the padded chunk alone (the fast path costs the most
here, so its audio is shorter); real weights 34 chunks, the last shard chunks 32 and 33 (padded)."""


@pytest.fixture(scope="module")
def inputs(speech: DecodedAudio) -> dict[str, DecodedAudio]:
    return {name: decoded(speech.samples[: int(seconds * SAMPLE_RATE)]) for name, seconds in SECONDS.items()}


@pytest.fixture(scope="module")
def shard_parts() -> dict[str, list[bytes]]:
    """Each pipeline's parts, computed once (a shard does not depend on the speaker-count hints) by its first test."""
    return {}


@pytest.mark.parametrize(
    ("pipeline", "hints"),
    [
        ("production", SpeakerHints(num_speakers=4)),
        ("production", SpeakerHints()),
        ("real", SpeakerHints()),
        ("real", SpeakerHints(num_speakers=3)),
    ],
    ids=["production-forced-4", "production-free", "real-free", "real-forced-3"],
)
def test_fanned_out_shards_give_the_single_runs_answer(
    request: pytest.FixtureRequest,
    inputs: dict[str, DecodedAudio],
    shard_parts: dict[str, list[bytes]],
    pipeline: str,
    hints: SpeakerHints,
) -> None:
    diarizer: Diarizer = request.getfixturevalue(pipeline)
    audio = inputs[pipeline]
    if pipeline not in shard_parts:
        shard_parts[pipeline] = fan_out(diarizer, audio, SHARD_CHUNKS[pipeline])
    parts = shard_parts[pipeline]
    assert len(parts) == 5
    single = diarizer.diarize_decoded(audio, hints, "speech.wav")
    assert single.segments
    assert len(single.speakers) == (hints.num_speakers or len(single.speakers))
    assert_same(reduce(diarizer, parts, audio, hints), single)
