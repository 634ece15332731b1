"""Baking: token handling, hub errors (against a local HTTP server), localisation and verification.

The Hugging Face hub cannot be reached here. Token and HTTP error handling run the real
huggingface_hub client against a local server that answers like the hub does. The
download itself is replaced by a stand-in that copies real pipeline directories: it is the
one part with no local equivalent, and everything after it (localising references, the
manifest, offline verification) is the real code.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from diarization.core.modeldir import check_model_dir, read_manifest
from diarization.core.precision import read_proof
from diarization.errors import HubAccessDeniedError, HubTokenMissingError
from diarization.modelmaking.bake import bake, resolve_token

ROOT = Path(__file__).resolve().parents[2]


def test_token_from_environment_wins(tmp_path: Path) -> None:
    secret = tmp_path / "hf_token"
    secret.write_text("hf_fromfile\n")
    assert resolve_token(secret, "m", env={"HF_TOKEN": "hf_fromenv"}) == "hf_fromenv"
    assert resolve_token(secret, "m", env={}) == "hf_fromfile"


def test_missing_token_explains_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(HubTokenMissingError) as caught:
        resolve_token(tmp_path / "absent", "pyannote/speaker-diarization-community-1", env={})
    message = caught.value.message
    assert "HF_TOKEN is not set" in message
    assert (
        "accept the conditions" in message
        and "https://huggingface.co/pyannote/speaker-diarization-community-1" in message
    )
    assert "https://huggingface.co/settings/tokens" in message and "--secret id=hf_token" in message
    assert caught.value.code == "HF_TOKEN_MISSING"


def test_a_non_token_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(HubAccessDeniedError, match="start with 'hf_'"):
        resolve_token(None, "m", env={"HF_TOKEN": "my-password"})


def copying_hub(repos: dict[str, Path]):
    """Stand-in for the hub download: copies a local directory per repository id."""
    calls: list[tuple[str, str | None]] = []

    def download(repo_id: str, revision: str | None, token: str, destination: Path) -> str:
        calls.append((repo_id, revision))
        shutil.copytree(repos[repo_id], destination)
        return f"commit-of-{repo_id}"

    return download, calls


def test_bake_localizes_hub_references_and_verifies(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A 3.1-style config names other hub repos; the baked directory must need none of them."""
    pipeline_repo = tmp_path / "hub" / "pipeline"
    shutil.copytree(tiny_model_dir, pipeline_repo)
    (pipeline_repo / "diarization-model.json").unlink()
    shutil.move(str(pipeline_repo / "segmentation"), tmp_path / "hub" / "segmentation-repo")
    shutil.move(str(pipeline_repo / "embedding"), tmp_path / "hub" / "embedding-repo-root")
    nested = tmp_path / "hub" / "embedding-repo"
    (nested).mkdir()
    shutil.move(str(tmp_path / "hub" / "embedding-repo-root"), nested / "weights")
    config = yaml.safe_load((pipeline_repo / "config.yaml").read_text())
    config["pipeline"]["params"]["segmentation"] = "acme/segmentation@v2"
    config["pipeline"]["params"]["embedding"] = {"checkpoint": "acme/embedding", "subfolder": "weights"}
    (pipeline_repo / "config.yaml").write_text(yaml.safe_dump(config))

    download, calls = copying_hub(
        {
            "acme/diarization": pipeline_repo,
            "acme/segmentation": tmp_path / "hub" / "segmentation-repo",
            "acme/embedding": nested,
        }
    )
    out = tmp_path / "baked"
    manifest = bake(out, "acme/diarization", "main", "hf_x", download=download)

    assert calls == [("acme/diarization", "main"), ("acme/segmentation", "v2"), ("acme/embedding", None)]
    params = check_model_dir(out)["pipeline"]["params"]
    assert (params["segmentation"], params["embedding"], params["plda"]) == (
        "$model/segmentation",
        "$model/embedding",
        "$model/plda",
    )
    assert (out / "embedding" / "pytorch_model.bin").is_file()
    assert read_manifest(out) == manifest
    assert manifest.trained and manifest.revision == "commit-of-acme/diarization" and manifest.source == "huggingface"
    assert not (out.with_name("baked.partial")).exists()
    proof = read_proof(out)  # the tiny stand-in has no ResNet trunk: bake records fp32 only, and why
    assert proof.proven == ("fp32",) and "no WeSpeaker ResNet trunk" in proof.reason and proof.created_at


def test_bake_that_cannot_load_fails_and_leaves_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "hub" / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "embedding" / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    download, _ = copying_hub({"acme/broken": broken})
    with pytest.raises(Exception, match="MODEL_INVALID"):
        bake(tmp_path / "out", "acme/broken", None, "hf_x", download=download)
    assert not (tmp_path / "out").exists()


class FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers like huggingface.co does for a bad token, a gated repo, or a missing repo."""

    def do_GET(self) -> None:
        if "gated" in self.path:
            self.send_response(403)
            self.send_header("X-Error-Code", "GatedRepo")
        elif "missing" in self.path:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
        else:
            self.send_response(401)
        body = b'{"error": "denied"}'
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def fake_hub() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def run_bake(tmp_path: Path, endpoint: str, model: str, token: str = "hf_badtoken") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env.update(HF_ENDPOINT=endpoint, HF_TOKEN=token, PYTHONPATH=str(ROOT / "function"), HF_HOME=str(tmp_path / "hf"))
    return subprocess.run(
        [sys.executable, "-m", "diarization.modelmaking.bake", str(tmp_path / "out"), "--model", model],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("model", "code", "fragment"),
    [
        ("acme/gated-model", "HF_ACCESS_DENIED", "has not accepted its conditions"),
        ("acme/missing-model", "HF_ACCESS_DENIED", "token is invalid or has no access"),
        ("acme/any-model", "HF_ACCESS_DENIED", "rejected the token (401)"),
    ],
)
def test_hub_rejections_are_clear_one_line_errors(
    fake_hub: str, tmp_path: Path, model: str, code: str, fragment: str
) -> None:
    done = run_bake(tmp_path, fake_hub, model)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {code}: ") and fragment in lines[-1], done.stderr
    assert "settings/tokens" in lines[-1] and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_unreachable_hub(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    done = run_bake(tmp_path, f"http://127.0.0.1:{closed_port}", "acme/model")
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: HF_HUB_UNAVAILABLE: Could not reach")


def test_missing_token_on_the_command_line(tmp_path: Path) -> None:
    done = run_bake(tmp_path, "http://127.0.0.1:9", "acme/model", token="")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: HF_TOKEN_MISSING: ")
