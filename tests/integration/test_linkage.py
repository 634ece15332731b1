"""Centroid linkage in O(n·d) memory (issue #13, item 3): fastcluster's ``linkage_vector`` gives scipy's dendrogram,
and the loaded pipelines cluster through it (docs/CAPACITY.md, "Exactness").

The fast tests use the capacity bench's seeded synthetic meeting (speakers whose embeddings drift from chunk to
chunk, the structure that makes centroid linkage produce inversions) and two tie cases built from it: duplicated
embeddings (what a recording that repeats itself gives) and points on a lattice (many exact ties at non-zero
distances, where the two algorithms' tie-breaking shows). The real-weights test takes its embeddings from the
trained pipeline on the sample recording."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import fastcluster
import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster
from scipy.cluster.hierarchy import linkage as scipy_linkage

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import clustering_memory as bench

from diarization.core import linkage
from diarization.core.config import Settings
from diarization.core.engine import Diarizer

THRESHOLDS = (0.5, 0.6)
"""The real-weights pipeline's and community-1's clustering thresholds."""


def normalized_meeting(chunks: int = 400, seed: int = 0) -> np.ndarray:
    embeddings, _, _ = bench.synthetic_inputs(chunks, 2.5, speakers=6, seed=seed)
    vectors = embeddings.reshape(-1, embeddings.shape[-1])
    vectors = vectors[~np.isnan(vectors).any(axis=1)]
    normalized: np.ndarray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return normalized


def assert_same_dendrogram(matrix: np.ndarray, vector: np.ndarray) -> None:
    np.testing.assert_array_equal(matrix[:, [0, 1, 3]], vector[:, [0, 1, 3]])  # same merges, in the same order
    np.testing.assert_allclose(vector[:, 2], matrix[:, 2], rtol=0, atol=1e-12)
    for threshold in THRESHOLDS:
        np.testing.assert_array_equal(
            fcluster(vector, threshold, criterion="distance"), fcluster(matrix, threshold, criterion="distance")
        )


def test_vector_linkage_gives_scipys_dendrogram_on_a_seeded_meeting() -> None:
    vectors = normalized_meeting()
    matrix = scipy_linkage(vectors, method="centroid", metric="euclidean")
    assert np.sum(np.diff(matrix[:, 2]) < 0) > 100, "centroid linkage's inversions are part of what is compared"
    assert_same_dendrogram(matrix, linkage.linkage(vectors, method="centroid", metric="euclidean", min_embeddings=0))


def test_duplicated_embeddings_pair_differently_with_the_same_heights_and_clusters() -> None:
    """Distance-0 ties: the two algorithms merge the duplicates in another order, nothing else changes."""
    vectors = normalized_meeting(200)
    twice = np.concatenate([vectors, vectors])
    matrix = scipy_linkage(twice, method="centroid", metric="euclidean")
    vector = linkage.linkage(twice, method="centroid", metric="euclidean", min_embeddings=0)
    assert not np.array_equal(matrix[:, :2], vector[:, :2])
    np.testing.assert_allclose(np.sort(vector[:, 2]), np.sort(matrix[:, 2]), rtol=0, atol=1e-12)
    for threshold in THRESHOLDS:
        np.testing.assert_array_equal(
            fcluster(vector, threshold, criterion="distance"), fcluster(matrix, threshold, criterion="distance")
        )


def test_exact_ties_at_non_zero_distances_can_change_the_dendrogram() -> None:
    """The documented limit: on a lattice every step has several closest pairs, and which one goes first is each
    implementation's own choice (scipy's depends on the input order too)."""
    lattice = np.array([[i, j] for i in range(20) for j in range(20)], dtype=np.float64) * 0.05
    matrix = scipy_linkage(lattice, method="centroid", metric="euclidean")
    vector = linkage.linkage(lattice, method="centroid", metric="euclidean", min_embeddings=0)
    assert np.max(np.abs(np.sort(matrix[:, 2]) - np.sort(vector[:, 2]))) > 0.01


def test_scipy_below_the_threshold_fastcluster_from_it_and_other_methods_untouched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vectors = normalized_meeting(40)
    calls: list[int] = []
    real_vector_linkage = fastcluster.linkage_vector

    def counting(points: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(points))
        return real_vector_linkage(points, *args, **kwargs)

    monkeypatch.setattr(fastcluster, "linkage_vector", counting)  # a spy: the real function still runs
    n = len(vectors)
    below = linkage.linkage(vectors, method="centroid", metric="euclidean", min_embeddings=n + 1)
    np.testing.assert_array_equal(below, scipy_linkage(vectors, method="centroid", metric="euclidean"))
    assert calls == []
    at = linkage.linkage(vectors, method="centroid", metric="euclidean", min_embeddings=n)
    np.testing.assert_array_equal(at, real_vector_linkage(vectors.astype(np.float64), method="centroid"))
    assert calls == [n]
    for method, metric in (("average", "cosine"), ("single", "euclidean"), ("ward", "euclidean")):
        np.testing.assert_array_equal(
            linkage.linkage(vectors, method=method, metric=metric, min_embeddings=0),
            scipy_linkage(vectors, method=method, metric=metric),
        )
    assert calls == [n]
    assert linkage.VECTOR_LINKAGE_MIN_EMBEDDINGS == 10_000


def test_non_finite_embeddings_are_refused_as_scipy_refuses_them() -> None:
    vectors = normalized_meeting(40)
    vectors[3, 5] = np.nan
    with pytest.raises(ValueError, match="must contain only finite values"):
        scipy_linkage(vectors, method="centroid", metric="euclidean")
    with pytest.raises(ValueError, match="must contain only finite values"):
        linkage.linkage(vectors, method="centroid", metric="euclidean", min_embeddings=0)


def spy_on_vector_linkage(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """Every point set fastcluster clusters (the real function still runs), with the threshold at 0 so that
    every centroid linkage goes to it."""
    seen: list[np.ndarray] = []
    real_vector_linkage = fastcluster.linkage_vector

    def recording(points: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(np.array(points, copy=True))
        return real_vector_linkage(points, *args, **kwargs)

    monkeypatch.setattr(fastcluster, "linkage_vector", recording)
    monkeypatch.setattr(linkage, "VECTOR_LINKAGE_MIN_EMBEDDINGS", 0)
    return seen


def test_the_vbx_pipeline_clusters_through_the_substitute_with_the_same_result(
    tiny_model_dir: Path, sample_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    diarizer = Diarizer.from_settings(Settings(model_dir=tiny_model_dir, num_threads=2))
    assert diarizer.loaded.vector_linkage
    assert type(diarizer.loaded.pipeline.clustering) is linkage.VectorLinkageVBxClustering
    upstream = diarizer.diarize(sample_path)  # 30 s: far below the threshold, scipy
    seen = spy_on_vector_linkage(monkeypatch)
    substituted = diarizer.diarize(sample_path)
    assert len(seen) == 1 and len(seen[0]) >= 2
    assert substituted.segments == upstream.segments
    assert_same_dendrogram(
        scipy_linkage(seen[0], method="centroid", metric="euclidean"),
        linkage.linkage(seen[0], method="centroid", metric="euclidean", min_embeddings=0),
    )


def test_the_real_weights_pipeline_gives_the_same_dendrogram_on_its_own_embeddings(
    real_model_dir: Path, sample_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trained segmentation, GE2E embeddings, agglomerative centroid clustering at 0.5."""
    diarizer = Diarizer.from_settings(Settings(model_dir=real_model_dir, num_threads=2))
    assert type(diarizer.loaded.pipeline.clustering) is linkage.VectorLinkageAgglomerativeClustering
    seen = spy_on_vector_linkage(monkeypatch)
    substituted = diarizer.diarize(sample_path)
    assert len(seen) == 1 and len(seen[0]) > 20
    monkeypatch.setattr(linkage, "VECTOR_LINKAGE_MIN_EMBEDDINGS", 10**9)
    assert diarizer.diarize(sample_path).segments == substituted.segments
    assert len(seen) == 1  # scipy this time
    embeddings = seen[0]
    assert_same_dendrogram(
        scipy_linkage(embeddings, method="centroid", metric="euclidean"),
        linkage.linkage(embeddings, method="centroid", metric="euclidean", min_embeddings=0),
    )
