"""Bake a pretrained pipeline into a self-contained local directory, then prove it works.

Runs at image build time (``docker build --secret id=hf_token,...``): downloads
the pipeline with a Hugging Face token, makes every model reference local
(``$model/...``), records the exact commit, then loads the result with
``HF_HUB_OFFLINE=1`` and diarizes a few seconds of generated audio. A build
whose model does not load fails here instead of at the first request. Last, it compares
the embedding trunk in fp32 and bf16 on real speech and records the verdict in
``precision.json`` (:mod:`diarization.core.precision`): ``EMBEDDING_PRECISION=auto`` uses bf16
only where this proof passed.

Usage: ``python -m diarization.modelmaking.bake OUT_DIR [--model ID] [--revision REV] [--token-file PATH]
[--audio WAV ...]``
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import io
import os
import shutil
import sys
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from diarization.core.modeldir import CONFIG_FILE, LOCAL_PREFIX, ModelManifest, read_config, write_manifest
from diarization.core.precision import Proof
from diarization.errors import (
    DiarizationError,
    HubAccessDeniedError,
    HubTokenMissingError,
    HubUnavailableError,
)

DEFAULT_MODEL = "pyannote/speaker-diarization-community-1"
DEFAULT_TOKEN_FILE = Path("/run/secrets/hf_token")
"""Where ``RUN --mount=type=secret,id=hf_token`` puts the BuildKit secret."""
MODEL_KEYS = ("segmentation", "embedding", "plda")

GETTING_ACCESS = (
    "To get a token: (1) sign in at https://huggingface.co and accept the conditions on the model's page "
    "(https://huggingface.co/{model}); (2) create a read token at https://huggingface.co/settings/tokens; "
    "(3) pass it as HF_TOKEN=hf_... or in a file (--token-file, default /run/secrets/hf_token; "
    "for images: `docker build --secret id=hf_token,env=HF_TOKEN .`)."
)

Downloader = Callable[[str, str | None, str, Path], str]
"""(repo_id, revision, token, destination) -> resolved commit; fills destination with the repo's files."""


def resolve_token(token_file: Path | None, model: str, env: dict[str, str] | None = None) -> str:
    """HF_TOKEN from the environment, else the secret file; never from an argument (shell history, ps)."""
    env = dict(os.environ) if env is None else env
    token = env.get("HF_TOKEN", "").strip()
    source = "HF_TOKEN"
    if not token and token_file is not None and token_file.is_file():
        token = token_file.read_text().strip()
        source = str(token_file)
    if not token:
        raise HubTokenMissingError(
            f"No Hugging Face token: HF_TOKEN is not set and {token_file} does not exist. "
            + GETTING_ACCESS.format(model=model)
        )
    if not token.startswith("hf_"):
        raise HubAccessDeniedError(
            f"The token from {source} does not look like a Hugging Face token (they start with 'hf_'). "
            + GETTING_ACCESS.format(model=model)
        )
    return token


def hub_download(repo_id: str, revision: str | None, token: str, destination: Path) -> str:
    """Download one model repository from the hub; map hub failures to clear, typed errors."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    help_text = GETTING_ACCESS.format(model=repo_id)
    try:
        commit = HfApi().model_info(repo_id, revision=revision, token=token).sha
        snapshot_download(repo_id, revision=commit, token=token, local_dir=destination)
    except GatedRepoError as error:
        raise HubAccessDeniedError(
            f"Access to {repo_id} is gated and this token's account has not accepted its conditions. {help_text}",
            model=repo_id,
        ) from error
    except RevisionNotFoundError as error:
        raise HubUnavailableError(f"{repo_id} has no revision {revision!r}.", model=repo_id) from error
    except RepositoryNotFoundError as error:
        raise HubAccessDeniedError(
            f"{repo_id} was not found with this token: the token is invalid or has no access. {help_text}",
            model=repo_id,
        ) from error
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise HubAccessDeniedError(f"The hub rejected the token ({status}). {help_text}", model=repo_id) from error
        raise HubUnavailableError(f"Downloading {repo_id} failed: {error}", model=repo_id) from error
    except Exception as error:  # transport errors (connection refused, DNS, TLS) have no common base class
        raise HubUnavailableError(
            f"Could not reach the Hugging Face hub to download {repo_id}: {type(error).__name__}: {error}",
            model=repo_id,
        ) from error
    return commit or revision or "unknown"


def bake(
    out_dir: Path,
    model: str = DEFAULT_MODEL,
    revision: str | None = None,
    token: str = "",
    download: Downloader = hub_download,
    verify: bool = True,
    recordings: tuple[Path, ...] = (),
) -> ModelManifest:
    """Download ``model`` into ``out_dir`` with every reference local, then verify it."""
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    commit = download(model, revision, token, staging)
    localize_references(staging, token, download)
    manifest = ModelManifest(
        name=model,
        revision=commit,
        trained=True,
        source="huggingface",
        created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        pyannote_version=importlib.metadata.version("pyannote.audio"),
    )
    write_manifest(staging, manifest)
    if verify:
        verify_model_dir(staging)
        prove_precision(staging, recordings)
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return manifest


def localize_references(model_dir: Path, token: str, download: Downloader) -> None:
    """Rewrite hub references in config.yaml (e.g. 3.1's ``pyannote/segmentation-3.0``) to local copies."""
    config = read_config(model_dir)
    params: dict[str, Any] = config["pipeline"].setdefault("params", {})
    changed = False
    for key in MODEL_KEYS:
        reference = params.get(key)
        if isinstance(reference, dict):
            repo, revision, subfolder = (
                reference.get("checkpoint"),
                reference.get("revision"),
                reference.get("subfolder"),
            )
        elif isinstance(reference, str) and not reference.startswith(LOCAL_PREFIX):
            repo, revision, subfolder = reference.split("@")[0], ([*reference.split("@"), None])[1], None
        else:
            continue
        if not isinstance(repo, str) or Path(repo).is_absolute():
            continue
        target = model_dir / key
        fetched = model_dir / f".{key}-download"
        download(repo, revision, token, fetched)
        source = fetched / subfolder if subfolder else fetched
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(source), target)
        shutil.rmtree(fetched, ignore_errors=True)
        params[key] = f"{LOCAL_PREFIX}{key}"
        changed = True
    if changed:
        (model_dir / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))


def verify_model_dir(model_dir: Path, seconds: float = 6.0) -> dict[str, Any]:
    """Load the directory fully offline and diarize generated audio; raises on any failure."""
    from diarization.core.config import Settings
    from diarization.core.engine import Diarizer
    from diarization.core.runtime import prepare_environment

    prepare_environment(offline=True)
    rate = 16_000
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    noise = 0.02 * np.random.default_rng(0).standard_normal(t.size)
    samples = (tone + noise).astype(np.float32)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((samples * 32767).astype("<i2").tobytes())
    result = Diarizer.from_settings(Settings(model_dir=model_dir)).diarize(
        buffer.getvalue(), input_uri="bake-verification.wav"
    )
    if abs(result.audio.duration_seconds - seconds) > 0.01:
        raise RuntimeError(f"verification decoded {result.audio.duration_seconds} s instead of {seconds} s")
    return result.to_dict()


def prove_precision(model_dir: Path, recordings: tuple[Path, ...] = ()) -> Proof:
    """Compare fp32 and bf16 on pyannote's sample and ``recordings``; record the verdict in the directory.

    A disagreement is not a failed build: the directory records fp32 and why, and ``auto`` keeps fp32.
    """
    from diarization.core.precision import write_proof
    from diarization.modelmaking.proof import prove, sample_recording

    proof = prove(model_dir, [sample_recording(), *recordings])
    write_proof(model_dir, proof)
    print(f"precision: proven {', '.join(proof.proven)}: {proof.reason}", file=sys.stderr)
    return proof


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diarization.modelmaking.bake", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument(
        "--model", default=os.environ.get("HF_MODEL", DEFAULT_MODEL), help=f"default: $HF_MODEL or {DEFAULT_MODEL}"
    )
    parser.add_argument(
        "--revision",
        default=os.environ.get("HF_REVISION") or None,
        help="branch, tag or commit (default: $HF_REVISION or main)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=DEFAULT_TOKEN_FILE,
        help=f"used when HF_TOKEN is unset (default: {DEFAULT_TOKEN_FILE})",
    )
    parser.add_argument("--verify-only", action="store_true", help="only load and test an existing OUT_DIR")
    parser.add_argument(
        "--audio",
        type=Path,
        action="append",
        default=[],
        help="more real recordings for the fp32/bf16 agreement check (pyannote's sample is always used)",
    )
    args = parser.parse_args(argv)
    from diarization.core.runtime import prepare_environment

    prepare_environment(offline=args.verify_only)
    try:
        if args.verify_only:
            verify_model_dir(args.out_dir)
            prove_precision(args.out_dir, tuple(args.audio))
            print(f"verified {args.out_dir}: loads offline and diarizes generated audio", file=sys.stderr)
            return 0
        token = resolve_token(args.token_file, args.model)
        manifest = bake(args.out_dir, args.model, args.revision, token, recordings=tuple(args.audio))
    except DiarizationError as error:
        print(f"error: {error.code}: {error.message}", file=sys.stderr)
        return 2 if error.http_status < 500 else 3
    print(f"baked {manifest.name}@{manifest.revision} into {args.out_dir} and verified it offline", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
