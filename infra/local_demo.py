"""The main job, locally, with no AWS account: `make demo`.

Starts a local S3/SQS/DynamoDB (moto server), creates the deployment the function expects, uploads
pyannote's 30 s sample recording under audio/, takes the real S3 -> SQS notification, invokes the
function through the official Lambda Runtime Interface Emulator and `python -m awslambdaric`, and
prints the JSON result it wrote to results/. Timing facts go to stderr.

Usage: python -m infra.local_demo MODEL_DIR [AUDIO_FILE]
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from infra.local_aws import create_deployment, start_local_aws
from infra.runtime_emulator import Emulator

ROOT = Path(__file__).resolve().parents[1]


def sample_recording() -> Path:
    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pyannote.audio is not installed: run `make setup`")
    return Path(next(iter(spec.submodule_search_locations))) / "sample" / "sample.wav"


def note(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    model_dir = Path(sys.argv[1]).resolve()
    audio = Path(sys.argv[2]) if len(sys.argv) > 2 else sample_recording()
    server, endpoint = start_local_aws()
    try:
        deployment = create_deployment()
        note(f"local AWS at {endpoint}: bucket {deployment.bucket}, queue and tables created")
        key = f"audio/{audio.name}"
        deployment.s3.put_object(Bucket=deployment.bucket, Key=key, Body=audio.read_bytes())
        messages = deployment.notifications()
        note(f"uploaded s3://{deployment.bucket}/{key}; {len(messages)} notification(s) on the queue")

        env = {
            **os.environ,
            **deployment.env,
            "MODEL_DIR": str(model_dir),
            "PYTHONPATH": str(ROOT / "function"),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": "900",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "10240",
        }
        with tempfile.TemporaryDirectory() as folder:
            emulator = Emulator(env)
            started = time.perf_counter()
            emulator.start(Path(folder) / "function.log")
            try:
                status, response = emulator.invoke(deployment.sqs_event(messages), timeout=900)
                first = time.perf_counter() - started
                if status != 200 or response != {"batchItemFailures": []}:
                    note(f"the function failed ({status}): {json.dumps(response)[:2000]}")
                    note(emulator.logs()[-3000:])
                    return 1
                name = key[len("audio/") :]
                result_key = f"results/{name}.json"
                result = deployment.get_json(result_key)
                ready = _ready_seconds(emulator.logs())
                started = time.perf_counter()
                emulator.invoke({"bucket": deployment.bucket, "key": key, "num_speakers": 2}, timeout=900)
                warm = time.perf_counter() - started
                again = deployment.get_json(result_key)
            finally:
                emulator.stop()
        print(json.dumps(result, indent=2, ensure_ascii=False))
        note(f"result: s3://{deployment.bucket}/{result_key} (+ .rttm)")
        if ready is not None:
            note(f"cold start (init phase: imports, settings, model load): {ready:.1f} s")
        note(
            f"first invocation, cold, end to end: {first:.1f} s (diarization {result['timings']['diarize_seconds']} s)"
        )
        overhead = warm - again["timings"]["total_seconds"]
        note(f"second invocation, warm: {warm:.2f} s, of which {overhead:.2f} s outside decode + diarize")
        note(f"speakers found: {result['speaker_count']}")
        if not result["model"]["trained"]:
            note("UNTRAINED model (random weights): the speakers above are not meaningful; see docs/models.md")
        elif result["model"].get("stand_in"):
            note(f"trained, with a stand-in for community-1's networks: {result['model']['stand_in']}")
        return 0
    finally:
        server.stop()


def _ready_seconds(logs: str) -> float | None:
    """The emulator's own measure of the init phase: `INIT REPORT(durationMs: ...)`."""
    match = re.search(r"INIT REPORT\(durationMs: ([0-9.]+)\)", logs)
    return float(match.group(1)) / 1000 if match else None


if __name__ == "__main__":
    sys.exit(main())
