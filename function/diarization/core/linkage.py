"""Centroid linkage in O(n·d) memory for pyannote's clustering, above the size where scipy's n² would not fit.

pyannote's ``VBxClustering`` (community-1) and ``AgglomerativeClustering`` (the real-weights pipeline, method
``centroid``) start with ``scipy.cluster.hierarchy.linkage(X, method="centroid", metric="euclidean")``. scipy builds
the condensed distance matrix and works on a copy of it: 8·n² bytes, ~10 GiB for the ~36,000 embeddings of a busy
4 h meeting (docs/CAPACITY.md). fastcluster's ``linkage_vector`` runs the same stepwise centroid algorithm on the
vectors themselves (Müllner's generic algorithm with nearest-neighbour lists, the one scipy's ``fast_linkage`` is
derived from), in O(n·d) memory.

Exactness (docs/CAPACITY.md, "Exactness"; tests/test_linkage.py): on real and synthetic embeddings both give the
same merges in the same order, heights within a few 1e-15 (scipy updates distances with the Lance–Williams formula,
fastcluster recomputes them from the merged centroids) and identical ``fcluster`` labels. They differ only where
two candidate merges are at exactly the same distance: the two break such ties differently. With duplicate
embeddings (distance 0) only the pairing among the duplicates differs, not the heights nor the flat clusters;
with many exact ties at non-zero distances (points on a lattice) the dendrograms can diverge. Real speaker
embeddings are not on a lattice; where scipy itself breaks such a tie, its choice is an artefact of the input order.

fastcluster is slower (it recomputes distances from the centroids' coordinates where scipy updates stored ones:
1.6–2.5× scipy's CPU time at the sizes both fit), so scipy keeps
every clustering up to :data:`VECTOR_LINKAGE_MIN_EMBEDDINGS` embeddings, where its matrices still fit the
smallest function the template allows, and fastcluster takes the larger ones. The threshold is fixed, not read
from the memory available, so that a file clusters the same way on every deployment and in the fan-out reduce.

The substitution is local to the pipeline it is applied to (:func:`use_vector_linkage`, called by the loader):
the instance's clustering class is swapped for a subclass whose method is pyannote's own code, bound to a
namespace in which ``linkage`` is :func:`linkage`. Nothing in pyannote's or scipy's modules is modified, so
another pipeline in the same process keeps upstream's behaviour.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import fastcluster
import numpy as np
from pyannote.audio.pipelines.clustering import AgglomerativeClustering, VBxClustering
from scipy.cluster.hierarchy import linkage as scipy_linkage

VECTOR_LINKAGE_MIN_EMBEDDINGS = 10_000
"""From this many embeddings on, centroid linkage runs in O(n·d) memory. scipy's 8·n² is 763 MiB at 10,000
(about 67 min of a busy meeting), which still fits a 3,008 MB function next to the loaded pipeline; above it
scipy's matrices would grow to 4.7 GiB at 25,000 and 9.7 GiB at 36,000."""


def linkage(
    y: Any,
    method: str = "single",
    metric: str = "euclidean",
    optimal_ordering: bool = False,
    *,
    min_embeddings: int | None = None,
) -> np.ndarray:
    """``scipy.cluster.hierarchy.linkage`` as pyannote's clustering calls it, with centroid linkage on
    ``min_embeddings`` (default :data:`VECTOR_LINKAGE_MIN_EMBEDDINGS`) or more observation vectors computed by
    ``fastcluster.linkage_vector``. Everything else goes to scipy unchanged."""
    threshold = VECTOR_LINKAGE_MIN_EMBEDDINGS if min_embeddings is None else min_embeddings
    if (
        method != "centroid"
        or metric != "euclidean"
        or optimal_ordering
        or np.ndim(y) != 2
        or np.shape(y)[0] < max(threshold, 2)
    ):
        result: np.ndarray = scipy_linkage(y, method=method, metric=metric, optimal_ordering=optimal_ordering)
        return result
    vectors = np.asarray(y, dtype=np.float64)
    if not np.all(np.isfinite(vectors)):
        # scipy refuses non-finite distances; fastcluster's result would be undefined (its own docs).
        raise ValueError("The condensed distance matrix must contain only finite values.")
    vector_result: np.ndarray = fastcluster.linkage_vector(vectors, method="centroid", metric="euclidean")
    return vector_result


def rebind(function: Callable[..., Any], **names: Any) -> Callable[..., Any]:
    """``function`` (pyannote's own code object) resolving the given global ``names`` to other objects."""
    namespace = {**function.__globals__, **names}
    rebound = types.FunctionType(
        function.__code__, namespace, function.__name__, function.__defaults__, function.__closure__
    )
    rebound.__kwdefaults__ = function.__kwdefaults__
    rebound.__qualname__ = function.__qualname__
    rebound.__doc__ = function.__doc__
    return rebound


class VectorLinkageVBxClustering(VBxClustering):  # type: ignore[misc]
    """pyannote's ``VBxClustering``, its ``linkage`` call being :func:`linkage`."""

    __call__ = rebind(VBxClustering.__call__, linkage=linkage)


class VectorLinkageAgglomerativeClustering(AgglomerativeClustering):  # type: ignore[misc]
    """pyannote's ``AgglomerativeClustering``, its ``linkage`` call being :func:`linkage`."""

    cluster = rebind(AgglomerativeClustering.cluster, linkage=linkage)


_SUBSTITUTES: dict[type, type] = {
    VBxClustering: VectorLinkageVBxClustering,
    AgglomerativeClustering: VectorLinkageAgglomerativeClustering,
}


def use_vector_linkage(pipeline: Any) -> bool:
    """Swap the loaded pipeline's clustering to the substitute of its class, in place; False (untouched) when its
    clustering is another class (e.g. ``OracleClustering``, or a subclass someone else made). The subclasses add
    no state, so swapping the instance's class keeps its hyper-parameters."""
    clustering = getattr(pipeline, "clustering", None)
    substitute = _SUBSTITUTES.get(type(clustering))
    if substitute is None:
        return False
    clustering.__class__ = substitute
    return True
