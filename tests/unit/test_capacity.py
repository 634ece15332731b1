"""The memory capacity guard (issue #10, item 5): the clustering estimate and the typed error. The estimate's check
against pyannote's own clustering is in integration/test_capacity_clustering.py (docs/CAPACITY.md has the table)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import clustering_memory as bench

from diarization.aws.settings import AwsSettings
from diarization.core import capacity
from diarization.core.result import load_schema
from diarization.errors import ERROR_CODES, AudioTooLongForMemoryError
from diarization.service.locations import Locations, ObjectRef
from diarization.service.publishing import ERROR_SCHEMA_VERSION, Publisher
from support.fakes import MemoryStore, RecordingTelemetry

MIB = 2**20
GIB = 2**30
LAMBDA_MAX = 10_240 * MIB
BASELINE = GIB


def test_the_estimate_is_quadratic_below_the_switch_to_vector_linkage_and_linear_from_it() -> None:
    switch = capacity.VECTOR_LINKAGE_MIN_EMBEDDINGS
    assert switch == 10_000
    quarter, half = capacity.clustering_bytes_for_embeddings(2_500), capacity.clustering_bytes_for_embeddings(5_000)
    assert 3.0 < (half - capacity.CLUSTERING_BYTES_CONSTANT) / (quarter - capacity.CLUSTERING_BYTES_CONSTANT) < 4.0
    assert half >= 8 * 5_000**2
    # from the switch on: 20 kB per embedding, never below scipy's just under the switch (so never decreasing)
    floor = capacity.clustering_bytes_for_embeddings(switch - 1)
    assert capacity.clustering_bytes_for_embeddings(switch) == floor
    fifty_thousand = capacity.clustering_bytes_for_embeddings(50_000)
    assert (
        fifty_thousand == capacity.VECTOR_CLUSTERING_BYTES_PER_EMBEDDING * 50_000 + capacity.CLUSTERING_BYTES_CONSTANT
    )
    assert fifty_thousand < 8 * 50_000**2 / 15
    sizes = range(2, 120_000, 997)
    estimates = [capacity.clustering_bytes_for_embeddings(n) for n in sizes]
    assert estimates == sorted(estimates)
    # worst case by default: 3 embeddings per chunk
    assert capacity.num_embeddings(3600) == 3 * 3591
    assert capacity.estimate_clustering_bytes(1800, active_speakers_per_chunk=1.5) < 2**30 / 4


def test_reconstruction_is_the_larger_peak_of_a_long_file() -> None:
    """With no n² left in clustering, pyannote's (chunks, 589, clusters) float64 arrays are what grows most."""
    four_hours = 4 * 3600.0
    assert capacity.reconstruction_bytes(four_hours) == 2 * 589 * 8 * 20 * capacity.num_chunks(four_hours)
    assert capacity.reconstruction_bytes(four_hours) > capacity.estimate_clustering_bytes(four_hours)
    assert capacity.estimate_peak_bytes(four_hours, BASELINE) == (
        BASELINE
        + capacity.RETAINED_INFERENCE_BYTES
        + capacity.PIPELINE_BYTES_PER_CHUNK * capacity.num_chunks(four_hours)
        + capacity.reconstruction_bytes(four_hours)
    )
    assert capacity.estimate_peak_bytes(four_hours, BASELINE) < 5 * GIB


def test_time_not_memory_bounds_a_long_file_on_lambdas_largest_function() -> None:
    reduce_budget = 600.0  # of the reduce's 900 s, the rest for loading, shards, reconstruction and the result
    by_time = capacity.max_audio_seconds_for_clustering_time(reduce_budget)
    assert capacity.estimate_clustering_seconds(by_time) <= reduce_budget
    assert capacity.estimate_clustering_seconds(by_time + 1) > reduce_budget
    assert capacity.max_audio_seconds_for_clustering_time(reduce_budget, 2.5) > by_time
    assert by_time < capacity.max_audio_seconds(LAMBDA_MAX, BASELINE)
    # the time grows faster than n²: twice the audio takes more than 4 times as long
    assert capacity.estimate_clustering_seconds(7200) > 4 * capacity.estimate_clustering_seconds(3600)


def test_the_guard_and_the_pipeline_switch_at_the_same_size() -> None:
    from diarization.core import linkage

    assert capacity.VECTOR_LINKAGE_MIN_EMBEDDINGS == linkage.VECTOR_LINKAGE_MIN_EMBEDDINGS


def test_chunks_follow_pyannotes_sliding_window() -> None:
    # Inference.slide: (samples - window) // step + 1 full windows, plus a padded one for a remainder
    assert [capacity.num_chunks(s) for s in (0.5, 10, 10.5, 11, 600, 600.5)] == [1, 1, 2, 2, 591, 592]
    assert all(capacity.num_chunks(s) == bench.num_chunks(s) for s in (3, 10, 600, 3600.25, 7200))


def test_a_short_file_passes() -> None:
    capacity.check_memory(600, LAMBDA_MAX, BASELINE)
    capacity.check_memory(3600, LAMBDA_MAX, BASELINE + 3600 * capacity.WAVEFORM_BYTES_PER_SECOND)


def test_a_file_over_the_limit_raises_the_typed_error() -> None:
    seconds = 4 * 3600.0
    capacity.check_memory(seconds, LAMBDA_MAX, BASELINE)  # fits Lambda's maximum now that linkage is O(n·d)
    limit = 3008 * MIB  # the template's smallest setting
    with pytest.raises(AudioTooLongForMemoryError) as caught:
        capacity.check_memory(seconds, limit, BASELINE)
    error = caught.value
    assert error.code == "AUDIO_TOO_LONG_FOR_MEMORY" and ERROR_CODES[error.code] is AudioTooLongForMemoryError
    assert error.http_status == 413 and error.permanent
    details = error.details
    assert details["audio_seconds"] == seconds and details["limit_bytes"] == limit
    assert details["estimated_bytes"] == capacity.estimate_peak_bytes(seconds, BASELINE) > limit
    assert details["baseline_bytes"] == BASELINE
    assert 3600 < details["max_audio_seconds"] < seconds
    for advice in ("GPU endpoint", "split it into parts no longer than", "more memory"):
        assert advice in error.message
    gib = details["estimated_bytes"] / GIB
    assert str(error).startswith(f"AUDIO_TOO_LONG_FOR_MEMORY: 4 h 00 min of audio would need about {gib:.1f} GiB")


def test_the_error_object_validates_against_the_schema() -> None:
    with pytest.raises(AudioTooLongForMemoryError) as caught:
        capacity.check_memory(5 * 3600, 3008 * MIB, BASELINE)
    store = MemoryStore()
    ref = ObjectRef("bucket", "audio/long.wav", None, '"abc"')
    outputs = Locations(AwsSettings(input_bucket="bucket")).outputs(ref)
    Publisher(store, None, logging.getLogger("tests.capacity"), RecordingTelemetry()).failed(
        ref, outputs, caught.value, "req-1"
    )
    body = store.get_json(outputs.bucket, outputs.error_key)  # what Publisher.failed wrote
    assert body["schema_version"] == ERROR_SCHEMA_VERSION
    jsonschema.validate(json.loads(json.dumps(body)), load_schema("error-v1.json"))


def test_max_audio_seconds_is_the_boundary_of_check_memory() -> None:
    longest = capacity.max_audio_seconds(LAMBDA_MAX, BASELINE)
    capacity.check_memory(longest, LAMBDA_MAX, BASELINE)
    with pytest.raises(AudioTooLongForMemoryError):
        capacity.check_memory(longest + 1, LAMBDA_MAX, BASELINE)
    assert capacity.max_audio_seconds(3008 * MIB, BASELINE) < longest
    assert capacity.max_audio_seconds(BASELINE, BASELINE) == 0.0


def test_an_exact_embedding_count_replaces_the_worst_case() -> None:
    seconds, limit = 50 * 60.0, 2048 * MIB  # below the switch, where scipy's n² still decides
    with pytest.raises(AudioTooLongForMemoryError):
        capacity.check_memory(seconds, limit, BASELINE)
    capacity.check_memory(seconds, limit, BASELINE, embeddings=int(2.0 * capacity.num_chunks(seconds)))


def test_clustered_embeddings_counts_what_pyannote_keeps() -> None:
    embeddings, segmentations, active = bench.synthetic_inputs(400, 2.5, speakers=6, seed=1)
    assert capacity.clustered_embeddings(segmentations) == active
    assert 0.9 * 2.5 * 400 < active < 1.1 * 2.5 * 400
    valid = int((~np.isnan(embeddings).any(axis=2)).sum())  # kept ones plus a few that speak too little
    assert active < valid < 3 * 400


def test_memory_limit_from_lambda_the_cgroup_or_the_machine(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    lambda_env = {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "10240"}
    assert capacity.memory_limit_bytes(lambda_env, tmp_path, meminfo) == LAMBDA_MAX
    assert capacity.memory_limit_bytes({}, tmp_path, meminfo) is None
    meminfo.write_text("MemTotal:       16146176 kB\nMemFree:  1 kB\n")
    assert capacity.memory_limit_bytes({}, tmp_path, meminfo) == 16146176 * 1024
    (tmp_path / "memory.max").write_text("max\n")
    assert capacity.memory_limit_bytes({}, tmp_path, meminfo) == 16146176 * 1024
    (tmp_path / "memory.max").write_text(f"{4 * GIB}\n")
    assert capacity.memory_limit_bytes({}, tmp_path, meminfo) == 4 * GIB
    rss = capacity.current_rss_bytes()
    assert rss is None or rss > 10 * MIB


def test_the_budget_of_a_lambda_function_is_its_configured_memory() -> None:
    budget = capacity.MemoryBudget.of_this_process({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008"})
    assert budget is not None and budget.limit_bytes == 3008 * MIB
    capacity.MemoryBudget(3008 * MIB, lambda: BASELINE).check(600)
    with pytest.raises(AudioTooLongForMemoryError):
        capacity.MemoryBudget(3008 * MIB, lambda: BASELINE).check(4 * 3600)
    # where the memory in use cannot be read there is nothing to compare with: no check
    capacity.MemoryBudget(3008 * MIB, lambda: None).check(4 * 3600)
