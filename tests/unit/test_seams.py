"""Where two paths meet on one key or one job, with in-memory ports: a GPU completion against a Lambda run of a newer
version, and a second upload against a job that is already running.

Each scenario ends with the invariant of tests/integration/test_faults.py (``support.service.assert_invariant``):
every input has exactly one of {result, error object}, describing its current version, and every job has ended.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from diarization.core.engine import Diarizer
from diarization.core.hints import SpeakerHints
from diarization.service.model import Invocation
from diarization.service.outcomes import Routed, Skipped, Succeeded
from infra.media import encode_as, speech_like
from support.service import BUCKET, assert_invariant, make_service, notification, request


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
@pytest.mark.parametrize("status", ["Completed", "Failed"])
def test_a_late_gpu_report_never_replaces_a_newer_versions_result(
    diarizer: Diarizer, tmp_path: Path, encoded_samples: dict[str, Path], versioned: bool, status: str
) -> None:
    """v1 (30 s) is routed to the GPU, which reads it; a short v2 replaces the key and is diarized here; then v1's
    report arrives. It is about v1, which is no longer current: skipped, v2's result stays, v1's job ends failed with
    INPUT_CHANGED naming v2's outputs (never succeeded with v2's result)."""
    service = make_service(diarizer, tmp_path, versioned=versioned, gpu_above=10.0)
    key, long, short = "audio/talk.wav", encoded_samples["wav"], encode_as(speech_like(4.0), 16_000, tmp_path, "flac")
    service.store.put(BUCKET, key, long.read_bytes())
    service.jobs.create("job1", input=f"s3://{BUCKET}/{key}")
    routed = service.diarize_object(request(key, job_id="job1"), Invocation())
    assert isinstance(routed, Routed)
    gpu_output = diarizer.diarize(long, SpeakerHints(), f"s3://{BUCKET}/{key}").to_dict()  # what the GPU read: v1
    service.store.put_json("gpu", f"out/{routed.inference_id}.out", gpu_output)
    service.store.put(BUCKET, key, short.read_bytes())
    assert isinstance(service.diarize_object(request(key), Invocation()), Succeeded)  # v2, here
    output = routed.output_location if status == "Completed" else None

    late = service.complete(notification(routed.inference_id, f"s3://{BUCKET}/{key}", output, status), Invocation())

    assert isinstance(late, Skipped) and late.reason.startswith("superseded"), late
    result = service.store.get_json(BUCKET, "results/talk.wav.json")
    assert result["input"]["size_bytes"] == len(short.read_bytes())
    assert result["audio"]["duration_seconds"] == pytest.approx(4.0, abs=0.1)
    job = service.jobs.jobs["job1"]
    assert job["status"] == "failed" and job["outcome"]["error"]["code"] == "INPUT_CHANGED"
    assert job["outcome"]["error"]["details"]["result"] == f"s3://{BUCKET}/results/talk.wav.json"
    assert_invariant(service)
