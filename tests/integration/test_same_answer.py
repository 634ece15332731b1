"""Same answer through every path: pyannote's sample in every supported format, at other rates and in stereo,
diarized with the real-weights pipeline by the engine, the CLI, the Lambda function (moto server and the real runtime
emulator) and the SageMaker server, scored against pyannote's annotation.

This is what catches decoding, resampling, channel-mixing and timing bugs: each one changes the waveform the models
see, and so the turns. Every answer is compared with the engine's answer on the original 16 kHz mono WAV; a lossy or
resampled file may differ from it by FRAME_SECONDS at each turn boundary and no more. The paths add nothing: for the
same file, the CLI, the Lambda function and the SageMaker server give exactly the engine's turns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diarization.core.audio import SAMPLE_RATE, decode_audio
from diarization.core.config import Settings
from diarization.core.engine import Diarizer
from infra.local_aws import Deployment, create_deployment
from infra.media import FORMATS, encode
from infra.runtime_emulator import ROOT, Emulator
from support.inference_container import Container

FRAME_SECONDS = 270 / SAMPLE_RATE
"""segmentation-3.0's output frame, 16.9 ms (SincNet's stride of 10 samples, then three max-pools of 3): the tolerance.

pyannote decides speech and speakers frame by frame. A lossy codec (27 to 74 dB SNR on these files) or a resampler
changes the waveform slightly, which may flip a frame whose activation lies near the decision threshold: the frames at
a turn's boundary. So each boundary of the original answer may move by one frame, no more. Two answers may then differ
by at most 2 × turns frames of speech (the original has 11 turns: 0.371 s), and their DERs by that over the reference's
speech (22.46 s: 0.0165). Measured when written: at most 0.169 s and 0.0024. A timing bug moves every boundary (a 32 ms
shift breaks the budget, see test_adts_aac_is_late_by_the_encoder_priming_and_the_budget_sees_it); a wrong rate, a lost
or cancelled channel or a truncation break it by far.
"""

ADTS_PRIMING_SAMPLES = 1024
"""FFmpeg's AAC encoder starts every stream with 1024 samples of priming (at the stream's rate). MP4 (.m4a) records
them in its edit list and the decoder drops them; ADTS (.aac) has no field for them, so every decoder plays them and
the turns of a raw .aac file come 1024 / rate late: 32 ms at 32 kHz, the format's limit, not a decoding bug. The
comparison takes them off."""

RATES = (8_000, 22_050, 44_100, 48_000)
LOSSLESS = ("wav-16000", "flac-16000")
"""Bit-exact re-encodings of the original (16 kHz mono, 16-bit): the answer must be exactly the original's."""
VARIANTS = (*FORMATS, *(f"wav-{rate}" for rate in RATES), "stereo-same", "stereo-quieter-right")
PATH_VARIANTS = ("original", "m4a", "wav-8000")
"""The paths run the original, AAC in MP4 (lossy, 22.05 kHz, stereo: codec, rate and downmix in one file) and
narrowband telephone audio; the engine runs every variant."""

Segments = Sequence[Mapping[str, Any]]


@pytest.fixture(scope="module")
def variants(
    sample_path: Path,
    encoded_samples: dict[str, Path],
    sample_samples: tuple[np.ndarray, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("variants")
    samples, rate = sample_samples
    files = {"original": sample_path, **encoded_samples}
    for out_rate in (*RATES, SAMPLE_RATE):
        files[f"wav-{out_rate}"] = encode(
            samples, rate, directory / f"sample-{out_rate}.wav", "wav", "pcm_s16le", "s16", out_rate, 1
        )
    files["flac-16000"] = encode(samples, rate, directory / "sample-16000.flac", "flac", "flac", "s16", SAMPLE_RATE, 1)
    files["stereo-same"] = _stereo_wav(samples, samples, rate, directory / "stereo-same.wav")
    # -12 dB on the right, as from a microphone nearer the left speaker
    files["stereo-quieter-right"] = _stereo_wav(samples, samples / 4, rate, directory / "stereo-quieter-right.wav")
    return files


def _stereo_wav(left: np.ndarray, right: np.ndarray, rate: int, path: Path) -> Path:
    """Written with the standard library, not FFmpeg: the decoder is checked against an independent writer."""
    frames = np.round(np.stack([left, right], axis=1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(2)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(frames.tobytes())
    return path


@pytest.fixture(scope="module")
def diarizer(real_model_dir: Path) -> Diarizer:
    return Diarizer.from_settings(Settings(model_dir=real_model_dir, num_threads=2))


@pytest.fixture(scope="module")
def engine_answer(diarizer: Diarizer, variants: dict[str, Path]) -> Callable[[str], list[dict[str, Any]]]:
    """The engine's turns for a variant, computed once: the paths are compared with them."""

    @cache
    def answer(variant: str) -> list[dict[str, Any]]:
        return [asdict(segment) for segment in diarizer.diarize(variants[variant]).segments]

    return answer


def annotation(segments: Segments, shift: float = 0.0) -> Any:
    from pyannote.core import Annotation, Segment

    turns = Annotation()
    for turn in segments:
        turns[Segment(turn["start"] - shift, turn["end"] - shift)] = turn["speaker"]
    return turns


def speech_differing(first: Any, second: Any, extent: Any) -> float:
    """Seconds where two answers disagree (speech, non-speech or speaker, under the best speaker mapping)."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    detail = DiarizationErrorRate()(first, second, uem=extent, detailed=True)
    return float(detail["missed detection"] + detail["false alarm"] + detail["confusion"])


def der(reference: Any, hypothesis: Any, extent: Any) -> float:
    from pyannote.metrics.diarization import DiarizationErrorRate

    return float(DiarizationErrorRate()(reference, hypothesis, uem=extent))


def assert_same_answer(
    label: str, segments: Segments, original: Segments, reference: Any, extent: Any, shift: float = 0.0
) -> None:
    ours, theirs = annotation(segments, shift), annotation(original)
    budget = 2 * len(original) * FRAME_SECONDS
    differing = speech_differing(theirs, ours, extent)
    error, original_error = der(reference, ours, extent), der(reference, theirs, extent)
    print(f"{label}: DER {error:.4f} (original {original_error:.4f}), {differing:.3f} s differ (budget {budget:.3f} s)")
    assert len(ours.labels()) == 2, f"{label}: {ours.labels()}"
    assert differing <= budget, f"{label}: {differing:.3f} s of speech differ from the original's answer"
    assert abs(error - original_error) <= budget / reference.get_timeline().support().duration(), label


def shift_of(variant: str, variants: dict[str, Path]) -> float:
    if variant != "aac":
        return 0.0
    rate = decode_audio(variants[variant], max_bytes=10**8, max_seconds=60).facts.sample_rate
    return ADTS_PRIMING_SAMPLES / rate


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_format_rate_and_layout_gives_the_original_answer(
    variant: str,
    variants: dict[str, Path],
    engine_answer: Callable[[str], list[dict[str, Any]]],
    sample_reference: Any,
    sample_extent: Any,
) -> None:
    assert_same_answer(
        f"engine {variant}",
        engine_answer(variant),
        engine_answer("original"),
        sample_reference,
        sample_extent,
        shift_of(variant, variants),
    )


@pytest.mark.parametrize("variant", LOSSLESS)
def test_lossless_16k_mono_gives_exactly_the_original_answer(
    variant: str,
    variants: dict[str, Path],
    sample_samples: tuple[np.ndarray, int],
    engine_answer: Callable[[str], list[dict[str, Any]]],
) -> None:
    decoded = decode_audio(variants[variant], max_bytes=10**8, max_seconds=60)
    assert np.array_equal(decoded.samples, sample_samples[0]), "the same samples reach the model"
    assert engine_answer(variant) == engine_answer("original")


def test_adts_aac_is_late_by_the_encoder_priming_and_the_budget_sees_it(
    variants: dict[str, Path],
    sample_samples: tuple[np.ndarray, int],
    engine_answer: Callable[[str], list[dict[str, Any]]],
    sample_extent: Any,
) -> None:
    decoded = decode_audio(variants["aac"], max_bytes=10**8, max_seconds=60)
    lag = ADTS_PRIMING_SAMPLES * SAMPLE_RATE // decoded.facts.sample_rate
    original = sample_samples[0]

    def snr_db(delay: int) -> float:
        late = decoded.samples[delay : delay + original.size]
        return float(10 * np.log10(np.sum(original**2) / np.sum((late - original) ** 2)))

    assert snr_db(lag) > 30 > snr_db(0), "the decoded stream is the original, exactly `lag` samples late"
    budget = 2 * len(engine_answer("original")) * FRAME_SECONDS
    unshifted = speech_differing(annotation(engine_answer("original")), annotation(engine_answer("aac")), sample_extent)
    assert unshifted > budget, "a 32 ms shift of every turn is more than codecs explain"


@pytest.fixture(scope="module")
def path_files(variants: dict[str, Path]) -> dict[str, Path]:
    return {variant: variants[variant] for variant in PATH_VARIANTS}


def run_cli(path: Path, model_dir: Path) -> dict[str, Any]:
    env = {key: value for key, value in os.environ.items() if key != "MODEL_DIR"}
    env["PYTHONPATH"] = str(ROOT / "function")
    done = subprocess.run(
        [sys.executable, "-m", "diarization", str(path), "--model-dir", str(model_dir), "--threads", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.mark.parametrize("variant", PATH_VARIANTS)
def test_the_cli_gives_the_engines_answer(
    variant: str,
    path_files: dict[str, Path],
    real_model_dir: Path,
    engine_answer: Callable[[str], list[dict[str, Any]]],
    sample_reference: Any,
    sample_extent: Any,
) -> None:
    result = run_cli(path_files[variant], real_model_dir)
    assert result["segments"] == engine_answer(variant)
    assert result["speaker_count"] == 2 and result["model"]["trained"] is True
    assert_same_answer(f"cli {variant}", result["segments"], engine_answer("original"), sample_reference, sample_extent)


@pytest.fixture(scope="module")
def lambda_results(
    moto_endpoint: str, real_model_dir: Path, path_files: dict[str, Path], tmp_path_factory
) -> dict[str, Any]:
    """One SQS batch of the S3 notifications for every path file, through the real runtime emulator."""
    deployment = create_deployment()
    emulator = Emulator(_function_env(deployment, real_model_dir))
    emulator.start(tmp_path_factory.mktemp("lambda") / "function.log")
    try:
        for variant, path in path_files.items():
            deployment.s3.put_object(
                Bucket=deployment.bucket, Key=f"audio/{variant}{path.suffix}", Body=path.read_bytes()
            )
        status, response = emulator.invoke(deployment.sqs_event(deployment.notifications(len(path_files))))
        assert (status, response) == (200, {"batchItemFailures": []}), emulator.logs()[-3000:]
    finally:
        emulator.stop()
    return {
        variant: deployment.get_json(f"results/{variant}{path.suffix}.json") for variant, path in path_files.items()
    }


def _function_env(deployment: Deployment, model_dir: Path) -> dict[str, str]:
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith("PYTEST")},
        **deployment.env,
        "MODEL_DIR": str(model_dir),
        "NUM_THREADS": "2",
        "PYTHONPATH": str(ROOT / "function"),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": "300",
    }


@pytest.mark.parametrize("variant", PATH_VARIANTS)
def test_the_lambda_function_gives_the_engines_answer(
    variant: str,
    lambda_results: dict[str, Any],
    engine_answer: Callable[[str], list[dict[str, Any]]],
    sample_reference: Any,
    sample_extent: Any,
) -> None:
    result = lambda_results[variant]
    assert result["segments"] == engine_answer(variant)
    assert result["speaker_count"] == 2 and result["model"]["trained"] is True
    assert_same_answer(
        f"lambda {variant}", result["segments"], engine_answer("original"), sample_reference, sample_extent
    )


@pytest.fixture(scope="module")
def server(real_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    container = Container(real_model_dir, tmp_path_factory.mktemp("server") / "server.log")
    container.wait_ready()
    yield container
    assert container.stop() == 0


@pytest.mark.parametrize("variant", PATH_VARIANTS)
def test_the_sagemaker_server_gives_the_engines_answer(
    variant: str,
    server: Container,
    path_files: dict[str, Path],
    engine_answer: Callable[[str], list[dict[str, Any]]],
    sample_reference: Any,
    sample_extent: Any,
) -> None:
    body = path_files[variant].read_bytes()
    status, result = server.request("POST", "/invocations", body, {"Content-Type": "application/octet-stream"})
    assert status == 200, result
    assert result["segments"] == engine_answer(variant)
    assert result["speaker_count"] == 2 and result["model"]["trained"] is True
    assert_same_answer(
        f"sagemaker {variant}", result["segments"], engine_answer("original"), sample_reference, sample_extent
    )
