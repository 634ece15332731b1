"""The command line, ``diarize`` (``python -m diarization`` is the same program): ``diarize INPUT... [options]``.

An input is an audio file, a folder of audio files, ``-`` (standard input) or ``s3://bucket/key``. One input
writes to standard output or ``--output``; several (or a folder) write one file each into ``--output-dir``.

Exit status: 0 success; 2 bad usage or input (the user can fix it); 3 model or configuration problem (the
deployment can fix it); 1 unexpected failure; 130 interrupted. Every failure prints one line,
``error: CODE: message``, and no traceback. With several inputs a failed input does not stop the others: each
failure names its input, a summary line follows, and the exit status is the worst failure's (1 over 3 over 2).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, NoReturn

from diarization import __version__
from diarization.cli.io import (
    STDIN,
    Input,
    Location,
    S3Location,
    Storage,
    expand_inputs,
    output_names,
    parse_location,
    prepare_folder,
)
from diarization.cli.progress import Progress
from diarization.core.config import Settings
from diarization.errors import DiarizationError, InvalidParameterError, OutputNotWritableError
from diarization.outputs.formats import CONTENT_TYPES, SUFFIXES, TEXT_FORMATS
from diarization.outputs.formats import render as render_format

if TYPE_CHECKING:
    from diarization.core.engine import Diarizer
    from diarization.core.hints import SpeakerHints
    from diarization.core.result import DiarizationResult
    from diarization.core.voiceprints import Voiceprint

PROG = "diarize"
EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_DEPLOYMENT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
SEVERITY = {EXIT_OK: 0, EXIT_INPUT: 1, EXIT_DEPLOYMENT: 2, EXIT_INTERNAL: 3}
"""Which failure a run with several inputs reports: an unexpected one needs a look even when bad inputs also failed."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise InvalidParameterError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Who spoke when: diarize audio with a local pyannote pipeline. "
        "`python -m diarization` is the same program.",
        epilog="Settings not given as options come from the environment (MODEL_DIR, DEVICE, NUM_THREADS, "
        "MAX_AUDIO_SECONDS, MAX_AUDIO_BYTES, ...; see docs/configuration.md). s3:// uses boto3's usual credentials and "
        "AWS_ENDPOINT_URL.",
    )
    parser.add_argument(
        "audio",
        nargs="*",
        metavar="INPUT",
        help="audio file (wav, flac, mp3, m4a/aac, ogg/opus, webm, ...), folder of audio files, "
        "- for standard input, or s3://bucket/key",
    )
    parser.add_argument("--num-speakers", type=int, metavar="N", help="exact number of speakers, if known")
    parser.add_argument("--min-speakers", type=int, metavar="A", help="lower bound on the number of speakers")
    parser.add_argument("--max-speakers", type=int, metavar="B", help="upper bound on the number of speakers")
    _add_output_options(parser)
    parser.add_argument("--model-dir", type=Path, metavar="DIR", help="pipeline directory (default: $MODEL_DIR)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: $DEVICE or auto")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: $NUM_THREADS or all CPUs)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress display (errors and warnings stay)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log loading and device details to stderr")
    parser.add_argument("--version", action="version", version=version_text())
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


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=TEXT_FORMATS, default="json", help="output format (default: json)")
    parser.add_argument(
        "--plot", metavar="PATH", help="one input: also draw the timeline picture, PATH.svg or .png (or s3://...)"
    )
    parser.add_argument(
        "--output", "-o", metavar="PATH", help="one input: write here (a path or s3://bucket/key), not to stdout"
    )
    parser.add_argument(
        "--output-dir",
        metavar="DIR",
        help="write one file per input here (a folder or s3://bucket/prefix), named after the input",
    )


def render(result: DiarizationResult, output_format: str) -> tuple[bytes, str]:
    """The result in ``output_format`` (see :mod:`diarization.outputs.formats`), and its media type (for S3)."""
    return render_format(result.to_dict(), output_format), CONTENT_TYPES[output_format]


def extension(output_format: str) -> str:
    """The file name extension of an ``--output-dir`` output in ``output_format`` (``pyannote.json``, ...)."""
    return SUFFIXES[output_format].removeprefix(".")


def version_text() -> str:
    """Read from the installed packages' metadata: importing torch for its version would take seconds."""

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return f"{PROG} {__version__} (pyannote.audio {installed('pyannote.audio')}, torch {installed('torch')})"


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
        return EXIT_INTERRUPTED
    except Exception as error:  # the one place an unexpected failure becomes a one-line message
        print(f"error: INTERNAL_ERROR: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_INTERNAL


@dataclass
class _Run:
    """What every input shares: settings, the model (loaded once, on first need) and where outputs go."""

    settings: Settings
    hints: SpeakerHints
    output_format: str
    progress: bool
    voiceprints: tuple[Voiceprint, ...] = ()
    include_embeddings: bool = False
    storage: Storage = field(default_factory=Storage)
    diarizer: Diarizer | None = None

    def diarize(self, item: Input) -> DiarizationResult:
        from diarization.core.engine import Diarizer, decode_within_limits

        with Progress(item.label, enabled=self.progress) as progress:
            progress.stage("decoding")
            # Decode before loading: a bad file fails in milliseconds instead of after the model load.
            with self.storage.audio(item, self.settings.max_audio_bytes) as source:
                audio, decode_seconds = decode_within_limits(self.settings, source)
            progress.stage("decoding", done=True)
            if self.diarizer is None:
                progress.stage("loading the model")
                self.diarizer = Diarizer.from_settings(self.settings)
                progress.stage("loading the model", done=True)
            return self.diarizer.diarize_decoded(
                audio,
                self.hints,
                item.uri,
                decode_seconds,
                hook=progress.hook,
                voiceprints=self.voiceprints,
                include_embeddings=self.include_embeddings,
            )

    def write(self, result: DiarizationResult, target: Location | None, output_format: str | None = None) -> None:
        data, content_type = render(result, output_format or self.output_format)
        if target is None:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        else:
            self.storage.write(target, data, content_type)


def _run(args: argparse.Namespace) -> int:
    from diarization.cli import voiceprint_files
    from diarization.core.hints import SpeakerHints

    if args.threads is not None and args.threads < 1:
        raise InvalidParameterError(f"--threads={args.threads} must be at least 1.", parameter="threads")
    hints = SpeakerHints(args.num_speakers, args.min_speakers, args.max_speakers)
    plot = None if args.plot is None else parse_location(args.plot, option="--plot")
    plot_format = None if plot is None else PurePosixPath(str(args.plot)).suffix.lower().lstrip(".")
    if plot_format not in (None, "svg", "png"):
        raise InvalidParameterError(f"--plot {args.plot}: the picture is .svg or .png.", parameter="plot")
    settings = Settings.from_env(model_dir=args.model_dir, device=args.device, num_threads=args.threads)
    if args.enroll:
        return _enroll(args, settings)
    if not args.audio:
        raise InvalidParameterError("Give an audio input (or --enroll NAME FILE); see --help.", parameter="audio")
    names = [name.strip() for name in args.identify.split(",")] if args.identify else []
    voiceprints = tuple(voiceprint_files.load(args.voiceprints, names))  # before any input: a typo fails at once
    inputs = expand_inputs(args.audio)
    if args.output is not None and args.output_dir is not None:
        raise InvalidParameterError("Give --output (one input) or --output-dir (any number), not both.")
    batch = args.output_dir is not None or len(args.audio) > 1 or any(_is_folder(name) for name in args.audio)
    if batch and args.output_dir is None:
        raise InvalidParameterError(
            "Several inputs (or a folder) need --output-dir: one output file per input.", parameter="output_dir"
        )
    if batch and plot is not None:
        raise InvalidParameterError("--plot draws one input's picture: give one input.", parameter="plot")
    run = _Run(
        settings,
        hints,
        args.format,
        progress=not args.quiet and sys.stderr.isatty(),
        voiceprints=voiceprints,
        include_embeddings=args.speaker_embeddings,
    )
    if not batch:
        output = None if args.output is None else parse_location(args.output, option="--output")
        if isinstance(output, Path):
            if output.is_dir():
                raise OutputNotWritableError(f"--output {str(output)!r} is a folder; use --output-dir for a folder.")
            prepare_folder(output.parent)
        if isinstance(plot, Path):
            prepare_folder(plot.parent)
        _check_credentials(run, [*inputs, output, plot])
        return _single(run, inputs[0], output, plot, plot_format)
    folder = parse_location(args.output_dir, option="--output-dir", folder=True)
    _check_credentials(run, [*inputs, folder])
    prepare_folder(folder)
    return _batch(run, inputs, folder)


def _is_folder(name: str) -> bool:
    return name != STDIN and not name.startswith("s3://") and Path(name).is_dir()


def _check_credentials(run: _Run, places: list[Input | Location | None]) -> None:
    """Fail before any work when S3 is named without credentials, not after minutes of diarizing."""
    for place in places:
        if isinstance(place, S3Location) or (isinstance(place, Input) and isinstance(place.source, S3Location)):
            run.storage.check_credentials()
            return


def _single(run: _Run, item: Input, output: Location | None, plot: Location | None, plot_format: str | None) -> int:
    result = run.diarize(item)
    _warn(result, prefix="")
    run.write(result, output)
    if plot is not None:
        run.write(result, plot, plot_format)
    return EXIT_OK


def _batch(run: _Run, inputs: list[Input], folder: Location) -> int:
    worst, failed = EXIT_OK, 0
    for item, name in zip(inputs, output_names(inputs, extension(run.output_format)), strict=True):
        target = folder.child(name) if isinstance(folder, S3Location) else folder / name
        try:
            result = run.diarize(item)
            _warn(result, prefix=f"{item.label}: ")
            run.write(result, target)
        except DiarizationError as error:
            if run.diarizer is None and _is_deployment(error):
                raise  # the model or device is unusable: every other input would fail the same way
            status = _fail(error, prefix=f"{item.label}: ")
        except Exception as error:  # an unexpected failure of one input must not lose the others
            print(f"error: INTERNAL_ERROR: {item.label}: {type(error).__name__}: {error}", file=sys.stderr)
            status = EXIT_INTERNAL
        else:
            status = EXIT_OK
            if run.progress:
                print(f"{item.label} -> {_where(target)}", file=sys.stderr)
        if status != EXIT_OK:
            failed += 1
            worst = max(worst, status, key=SEVERITY.__getitem__)
    done = len(inputs) - failed
    print(f"{PROG}: {done} of {len(inputs)} inputs diarized into {_where(folder)}, {failed} failed", file=sys.stderr)
    return worst


def _enroll(args: argparse.Namespace, settings: Settings) -> int:
    """Write NAME's voiceprint to the voiceprints folder; says on stderr which speaker of the sample it took."""
    from diarization.cli import voiceprint_files
    from diarization.core.engine import Diarizer, decode_within_limits
    from diarization.core.voiceprints import check_name

    if args.audio or args.identify:
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


def _where(location: Location) -> str:
    return location.uri if isinstance(location, S3Location) else str(location)


def _warn(result: DiarizationResult, prefix: str) -> None:
    for warning in result.warnings:
        print(f"warning: {prefix}{warning}", file=sys.stderr)


def _is_deployment(error: DiarizationError) -> bool:
    return _status(error) == EXIT_DEPLOYMENT


def _status(error: DiarizationError) -> int:
    if error.http_status < 500:
        return EXIT_INPUT
    return EXIT_INTERNAL if error.code == "INTERNAL_ERROR" else EXIT_DEPLOYMENT


def _fail(error: DiarizationError, prefix: str = "") -> int:
    print(f"error: {error.code}: {prefix}{error.message}", file=sys.stderr)
    return _status(error)
