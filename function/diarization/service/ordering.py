"""Which version of an input key is newer, so outputs always describe the newest one.

Events arrive in any order (SQS, SNS and EventBridge do not keep S3's), and redeliveries and late GPU
reports come on top. Before any output is written or deleted on behalf of a version:

1. that version must still be the key's current version (a HEAD): an older version never writes, never
   deletes, whatever its outcome (INPUT_CHANGED included); its run ends as ``skipped`` (superseded);
2. a conditional write to the key's ordering record must succeed (see :class:`~diarization.service.ports.
   OrderingRecord`): the record keeps the order of the version whose outputs were written last, so a run that
   passed (1) just before a newer version was written and published cannot overwrite it, and a failure
   never replaces a success of the same version (a late GPU ``Failed`` after ``Completed``).

The order of a version: the event's ``sequencer`` when the processed version is the one the event named, and its
Last-Modified second. S3 documents the sequencer as a hexadecimal string that orders events of the same key:
right-pad the shorter one with zeros, then compare them as strings. When both versions carry one, the sequencer
alone decides (:func:`not_older`): Last-Modified is when an upload *started*, so a large multipart upload that
completes after a small overwrite has the earlier Last-Modified and is still the newer version. Otherwise
Last-Modified decides, then the sequencer: events without one (direct invocations, job messages, the API,
SageMaker completions), and events whose version is gone (a stale ETag: the current version is processed instead)
process the current version, which rule 1 checks again before writing.
"""

from __future__ import annotations

from dataclasses import dataclass

from diarization.service.locations import ObjectRef

SEQUENCER_WIDTH = 64
"""S3 sequencers are 16–20 hex digits today; padded to a fixed width they compare as strings."""

SUPERSEDED = "superseded: a newer version of the input has been (or is being) processed; its outputs are left alone"


@dataclass(frozen=True)
class Order:
    """A processed version's place among the key's versions, and its identity (version id, else ETag)."""

    position: str
    """``{Last-Modified}|{padded sequencer}`` (the sequencer empty when the event named no sequencer for it)."""
    version: str

    @property
    def sequencer(self) -> str:
        """The padded sequencer ("" when there is none)."""
        return self.position.partition("|")[2]


def not_older(order: Order, held: Order) -> bool:
    """Whether `order` may follow `held` (it is the same place or later): by sequencer when both have one, else by
    position (Last-Modified first)."""
    if order.sequencer and held.sequencer:
        return order.sequencer >= held.sequencer
    return order.position >= held.position


def version_of(ref: ObjectRef) -> str:
    return ref.version_id or ref.etag or ""


def order_of(ref: ObjectRef, sequencer: str | None) -> Order:
    """`ref` as HEAD returned it (with its Last-Modified); `sequencer` only if the event named this version."""
    padded = sequencer.strip().upper().ljust(SEQUENCER_WIDTH, "0") if sequencer else ""
    return Order(f"{ref.last_modified or ''}|{padded}", version_of(ref))
