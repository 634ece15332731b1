"""Voiceprints on a local disk (the CLI's ``--voiceprints DIR``): one ``NAME.json`` per voiceprint."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from diarization.core import jsontext
from diarization.core.voiceprints import Voiceprint, check_name
from diarization.errors import InvalidVoiceprintError, VoiceprintNotFoundError


def path_of(directory: Path, name: str) -> Path:
    """``check_name`` keeps the name a plain file name: no separator, no leading dot."""
    return directory / f"{check_name(name)}.json"


def save(directory: Path, voiceprint: Voiceprint) -> Path:
    """Write atomically (a voiceprint is replaced whole or not at all), readable like any file the user writes."""
    path = path_of(directory, voiceprint.name)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(voiceprint.to_dict(), indent=2) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def load(directory: Path, names: Iterable[str]) -> list[Voiceprint]:
    voiceprints = []
    for name in names:
        path = path_of(directory, name)
        try:
            body = jsontext.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise VoiceprintNotFoundError(
                f"No voiceprint {name!r} in {str(directory)!r}: enroll it with --enroll {name} FILE.", name=name
            ) from error
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise InvalidVoiceprintError(f"{path} is not a readable voiceprint ({error}).", name=name) from error
        voiceprint = Voiceprint.from_dict(body)
        if voiceprint.name != name:
            raise InvalidVoiceprintError(f"{path} holds the voiceprint of {voiceprint.name!r}, not {name!r}.")
        voiceprints.append(voiceprint)
    return voiceprints
