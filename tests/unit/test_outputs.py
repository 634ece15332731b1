"""Which formats are written beside the JSON result, per deployment and per job, and that the outputs of an input
always describe its latest version, whatever each version selected: the use cases against in-memory ports."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import replace
from pathlib import Path

import srt

from diarization.core.engine import Diarizer
from diarization.core.hints import SpeakerHints
from diarization.service.model import Invocation
from diarization.service.outcomes import Failed, Routed, Succeeded
from support.service import BUCKET, Service, make_service, notification, request

log = logging.getLogger("tests.outputs")


def test_a_jobs_formats_are_written_and_listed(service: Service, encoded_samples: dict[str, Path]) -> None:
    service.store.put(BUCKET, "audio/uploads/job1/talk.flac", encoded_samples["flac"].read_bytes())
    service.jobs.create("job1", formats=["srt", "csv", "png"])

    outcome = service.diarize_object(request("audio/uploads/job1/talk.flac"), Invocation())

    assert isinstance(outcome, Succeeded)
    base = "results/uploads/job1/talk.flac"
    assert outcome.output == {name: f"s3://{BUCKET}/{base}.{name}" for name in ("json", "srt", "csv", "png")}
    assert service.store.keys(BUCKET, "results/") == [f"{base}.{name}" for name in ("csv", "json", "png", "srt")]
    result = service.store.get_json(BUCKET, f"{base}.json")
    cues = list(srt.parse(service.store.objects[(BUCKET, f"{base}.srt")][-1].data.decode()))
    assert len(cues) == len(result["exclusive_segments"])
    rows = list(csv.reader(io.StringIO(service.store.objects[(BUCKET, f"{base}.csv")][-1].data.decode())))
    assert len(rows) == len(result["segments"]) + 1
    assert service.store.objects[(BUCKET, f"{base}.png")][-1].data.startswith(b"\x89PNG")
    assert service.jobs.jobs["job1"]["outcome"]["output"] == outcome.output


def test_a_job_may_ask_for_the_json_alone(service: Service, encoded_samples: dict[str, Path]) -> None:
    service.store.put(BUCKET, "audio/only.wav", encoded_samples["wav"].read_bytes())
    service.jobs.create("job2", formats=[])
    outcome = service.diarize_object(request("audio/only.wav", job_id="job2"), Invocation())
    assert isinstance(outcome, Succeeded) and list(outcome.output) == ["json"]
    assert service.store.keys(BUCKET, "results/") == ["results/only.wav.json"]


def test_the_deployments_formats_apply_to_plain_uploads(
    diarizer: Diarizer, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    service = make_service(diarizer, tmp_path)
    service.diarize_object.formats = ("vtt", "svg")
    service.store.put(BUCKET, "audio/plain.ogg", encoded_samples["ogg"].read_bytes())
    assert isinstance(service.diarize_object(request("audio/plain.ogg"), Invocation()), Succeeded)
    assert service.store.keys(BUCKET, "results/") == [
        "results/plain.ogg.json",
        "results/plain.ogg.svg",
        "results/plain.ogg.vtt",
    ]


def test_outputs_describe_the_latest_version_whatever_it_selected(
    service: Service, encoded_samples: dict[str, Path]
) -> None:
    """v1 writes srt+vtt; v2 (the deployment's rttm) removes them; a failing v3 removes every format."""
    key = "audio/talk.wav"
    service.store.put(BUCKET, key, encoded_samples["wav"].read_bytes())
    service.jobs.create("j1", formats=["srt", "vtt"])
    assert isinstance(service.diarize_object(request(key, job_id="j1"), Invocation()), Succeeded)
    assert service.store.keys(BUCKET, "results/") == [
        "results/talk.wav.json",
        "results/talk.wav.srt",
        "results/talk.wav.vtt",
    ]

    service.store.put(BUCKET, key, encoded_samples["flac"].read_bytes())
    assert isinstance(service.diarize_object(request(key), Invocation()), Succeeded)
    assert service.store.keys(BUCKET, "results/") == ["results/talk.wav.json", "results/talk.wav.rttm"]

    service.jobs.create("j3", formats=["png", "csv"])
    service.store.put(BUCKET, key, b"not audio" * 100)
    assert isinstance(service.diarize_object(request(key, job_id="j3"), Invocation()), Failed)
    assert service.store.keys(BUCKET, "results/") == ["results/talk.wav.error.json"]


def test_a_routed_job_keeps_its_formats_to_the_gpus_completion(
    diarizer: Diarizer, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    service = make_service(diarizer, tmp_path, gpu_above=10.0)
    service.store.put(BUCKET, "audio/long.wav", encoded_samples["wav"].read_bytes())
    service.jobs.create("job5", formats=["pyannote", "svg"])
    routed = service.diarize_object(request("audio/long.wav", job_id="job5"), Invocation())
    assert isinstance(routed, Routed)
    routing = service.jobs.routing(routed.inference_id)
    assert routing is not None and routing.formats == ("pyannote", "svg")
    gpu_result = diarizer.diarize(encoded_samples["wav"], SpeakerHints(), "s3://audio/audio/long.wav").to_dict()
    service.store.put_json("gpu", f"out/{routed.inference_id}.out", gpu_result)

    reported = notification(routed.inference_id, "s3://audio/audio/long.wav", routed.output_location)
    done = service.complete(reported, Invocation())

    assert isinstance(done, Succeeded) and set(done.output) == {"json", "pyannote", "svg"}
    assert service.store.keys(BUCKET, "results/") == [
        "results/long.wav.json",
        "results/long.wav.pyannote.json",
        "results/long.wav.svg",
    ]


def test_a_gpu_result_no_format_can_render_is_unreadable(
    diarizer: Diarizer, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    """Checked before anything is written: the job fails with an error object, not half the outputs."""
    service = make_service(diarizer, tmp_path, gpu_above=10.0)
    service.store.put(BUCKET, "audio/long.wav", encoded_samples["wav"].read_bytes())
    service.jobs.create("job6", formats=["srt"])
    routed = service.diarize_object(request("audio/long.wav", job_id="job6"), Invocation())
    assert isinstance(routed, Routed)
    gpu_result = diarizer.diarize(encoded_samples["wav"], SpeakerHints(), "s3://audio/audio/long.wav").to_dict()
    del gpu_result["exclusive_segments"]
    service.store.put_json("gpu", f"out/{routed.inference_id}.out", gpu_result)

    reported = notification(routed.inference_id, "s3://audio/audio/long.wav", routed.output_location)
    done = service.complete(reported, Invocation())

    assert isinstance(done, Failed) and done.error["code"] == "GPU_INFERENCE_FAILED"
    assert service.store.keys(BUCKET, "results/") == ["results/long.wav.error.json"]


def test_older_routings_without_formats_use_the_deployments(
    diarizer: Diarizer, tmp_path: Path, encoded_samples: dict[str, Path]
) -> None:
    service = make_service(diarizer, tmp_path, gpu_above=10.0)
    service.complete.formats = ("csv",)
    service.store.put(BUCKET, "audio/long.wav", encoded_samples["wav"].read_bytes())
    service.jobs.create("job7")
    routed = service.diarize_object(request("audio/long.wav", job_id="job7"), Invocation())
    assert isinstance(routed, Routed)
    inference = service.jobs.inferences[routed.inference_id]
    inference["routing"] = replace(inference["routing"], formats=None)  # recorded before formats existed
    gpu_result = diarizer.diarize(encoded_samples["wav"], SpeakerHints(), "s3://audio/audio/long.wav").to_dict()
    service.store.put_json("gpu", f"out/{routed.inference_id}.out", gpu_result)
    reported = notification(routed.inference_id, "s3://audio/audio/long.wav", routed.output_location)
    done = service.complete(reported, Invocation())
    assert isinstance(done, Succeeded) and set(done.output) == {"json", "csv"}
