"""The dependencies the use cases share, as one value: built once by the host, passed to each use case."""

from __future__ import annotations

from dataclasses import dataclass

from diarization.errors import ConfigurationError
from diarization.service.locations import Locations
from diarization.service.ports import JobStore, Log, ObjectStore, Telemetry
from diarization.service.publishing import Publisher


@dataclass(frozen=True)
class Shared:
    locations: Locations
    """Where inputs come from and where their outputs go."""
    store: ObjectStore
    publisher: Publisher
    """Writes outcomes (results or error objects, events, failure metrics)."""
    jobs: JobStore | None
    """None: the deployment has no job store (JOBS_TABLE)."""
    log: Log
    telemetry: Telemetry

    def require_jobs(self) -> JobStore:
        """The job store, for what cannot work without one."""
        if self.jobs is None:
            raise ConfigurationError("JOBS_TABLE is not set: this deployment has no job store.")
        return self.jobs


class UseCase:
    """A use case's shared dependencies by name (``self.store``, ``self.log`` ...), from the one value it is given.
    ``jobs`` is left to each use case: some work without a job store, others require one (``require_jobs``)."""

    def __init__(self, shared: Shared) -> None:
        self.locations = shared.locations
        self.store = shared.store
        self.publisher = shared.publisher
        self.log = shared.log
        self.telemetry = shared.telemetry
