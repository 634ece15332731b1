"""Local command line: ``python -m diarization AUDIO [options]``.

Exit status: 0 success; 2 bad usage or input (the user can fix it); 3 model or
configuration problem (the deployment can fix it); 1 unexpected failure. Every
failure prints one line, ``error: CODE: message``, and no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from diarization.config import Settings
from diarization.errors import DiarizationError, InvalidParameterError

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_DEPLOYMENT = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise InvalidParameterError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m diarization",
        description="Who spoke when: diarize one audio file with a local pyannote pipeline.",
        epilog="Settings not given as options come from the environment (MODEL_DIR, DEVICE, NUM_THREADS, "
        "MAX_AUDIO_SECONDS, MAX_AUDIO_BYTES, ...; see README.md).",
    )
    parser.add_argument("audio", type=Path, nargs="?", help="audio file: wav, flac, mp3, m4a/aac, ogg/opus, webm, ...")
    parser.add_argument("--num-speakers", type=int, metavar="N", help="exact number of speakers, if known")
    parser.add_argument("--min-speakers", type=int, metavar="A", help="lower bound on the number of speakers")
    parser.add_argument("--max-speakers", type=int, metavar="B", help="upper bound on the number of speakers")
    parser.add_argument("--format", choices=("json", "rttm"), default="json", help="output format (default: json)")
    parser.add_argument("--output", "-o", type=Path, metavar="PATH", help="write here instead of standard output")
    parser.add_argument("--model-dir", type=Path, metavar="DIR", help="pipeline directory (default: $MODEL_DIR)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: $DEVICE or auto")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: $NUM_THREADS or all CPUs)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log loading and device details to stderr")
    voices = parser.add_argument_group("voiceprints (identify known speakers)")
    voices.add_argument(
        "--enroll", nargs=2, metavar=("NAME", "FILE"), help="make NAME's voiceprint from FILE (a few seconds of them)"
    )
    voices.add_argument("--identify", metavar="NAME,...", help="name the speakers matching these voiceprints")
    voices.add_argument(
        "--voiceprints", type=Path, default=Path("voiceprints"), metavar="DIR", help="default: ./voiceprints"
    )
    voices.add_argument("--speaker-embeddings", action="store_true", help="add each speaker's embedding to the JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except InvalidParameterError as error:
        return _fail(error)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return _run(args)
    except DiarizationError as error:
        return _fail(error)
    except KeyboardInterrupt:
        print("error: INTERRUPTED: stopped by the user", file=sys.stderr)
        return 130
    except Exception as error:  # the one place an unexpected failure becomes a one-line message
        print(f"error: INTERNAL_ERROR: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_INTERNAL


def _run(args: argparse.Namespace) -> int:
    from diarization.hints import SpeakerHints

    if args.threads is not None and args.threads < 1:
        raise InvalidParameterError(f"--threads={args.threads} must be at least 1.", parameter="threads")
    hints = SpeakerHints(args.num_speakers, args.min_speakers, args.max_speakers)
    settings = Settings.from_env(model_dir=args.model_dir, device=args.device, num_threads=args.threads)

    from diarization import voiceprint_files
    from diarization.engine import Diarizer, decode_within_limits

    if args.enroll:
        return _enroll(args, settings)
    if args.audio is None:
        raise InvalidParameterError("Give an audio file (or --enroll NAME FILE); see --help.", parameter="audio")
    names = [name.strip() for name in args.identify.split(",")] if args.identify else []
    voiceprints = voiceprint_files.load(args.voiceprints, names)  # before decoding: a typo fails at once
    # Decode before loading: a bad file fails in milliseconds instead of after the model load.
    audio, decode_seconds = decode_within_limits(settings, args.audio)
    diarizer = Diarizer.from_settings(settings)
    result = diarizer.diarize_decoded(
        audio, hints, str(args.audio), decode_seconds, voiceprints, include_embeddings=args.speaker_embeddings
    )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    text = result.to_json() if args.format == "json" else result.to_rttm()
    if args.output is None:
        sys.stdout.write(text)
    else:
        _write_atomically(args.output, text)
    return EXIT_OK


def _enroll(args: argparse.Namespace, settings: Settings) -> int:
    """Write NAME's voiceprint to the voiceprints folder; says on stderr which speaker of the sample it took."""
    from diarization import voiceprint_files
    from diarization.engine import Diarizer, decode_within_limits
    from diarization.voiceprints import check_name

    if args.audio is not None or args.identify:
        raise InvalidParameterError("--enroll NAME FILE takes no other audio file and no --identify.")
    name, sample = check_name(args.enroll[0]), Path(args.enroll[1])
    audio, decode_seconds = decode_within_limits(settings, sample)
    voiceprint, result = Diarizer.from_settings(settings).enroll_decoded(audio, name, str(sample), decode_seconds)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    path = voiceprint_files.save(args.voiceprints, voiceprint)
    taken = voiceprint.enrollment
    found = (
        f"{taken['speakers_found']} speakers found, took the one who spoke most: " if len(result.speakers) > 1 else ""
    )
    print(
        f"enrolled {name!r} from {sample} ({found}{taken['speaker']}, {taken['speaking_seconds']} s): {path}",
        file=sys.stderr,
    )
    return EXIT_OK


def _write_atomically(path: Path, text: str) -> None:
    """Never leave a half-written result behind (e.g. on Ctrl-C)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _fail(error: DiarizationError) -> int:
    print(f"error: {error.code}: {error.message}", file=sys.stderr)
    if error.http_status < 500:
        return EXIT_INPUT
    return EXIT_INTERNAL if error.code == "INTERNAL_ERROR" else EXIT_DEPLOYMENT
