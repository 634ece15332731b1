"""The memory estimate held against pyannote's own clustering (VBx on ~1,500 embeddings), peak RSS measured in a
fresh process (docs/CAPACITY.md has the full table; the estimate's arithmetic is tested in unit/test_capacity.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import clustering_memory as bench

from diarization.core import capacity


@pytest.mark.parametrize("linkage", ["scipy", "vector"])
def test_the_estimate_holds_for_pyannotes_real_clustering(linkage: str) -> None:
    """~1,500 embeddings through pyannote's VBxClustering, peak RSS measured in a fresh process, with scipy's
    linkage and with fastcluster's (forced at this size; the estimate's linear part is what it is held to)."""
    command = [sys.executable, str(Path(bench.__file__)), "--worker", "--chunks", "600", "--active-per-chunk", "2.5"]
    finished = subprocess.run(
        [*command, "--linkage", linkage], capture_output=True, text=True, timeout=120, check=False
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    row = json.loads(finished.stdout.strip().splitlines()[-1])
    if not row["peak_reset"]:
        pytest.skip("the kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
    assert row["embeddings"] == row["generated_active"], "pyannote kept other embeddings than the generator made"
    assert 1400 < row["embeddings"] < 1600 and row["clusters_found"] >= 2
    measured = row["peak_increase_bytes"]
    n = row["embeddings"]
    if linkage == "scipy":
        estimated = capacity.clustering_bytes_for_embeddings(n)
        assert measured <= estimated <= 4 * measured, (measured, estimated)
    else:
        estimated = capacity.VECTOR_CLUSTERING_BYTES_PER_EMBEDDING * n + capacity.CLUSTERING_BYTES_CONSTANT
        assert measured <= estimated, (measured, estimated)
