"""Process-wide setup that must happen before torch or pyannote is imported, and device choice.

pyannote 4 sends telemetry by default and huggingface_hub may try the network;
a Lambda or SageMaker container must do neither, so both are switched off here,
once, before the first import.
"""

from __future__ import annotations

import logging
import os
import platform
import warnings
from dataclasses import dataclass
from typing import Any

from diarization.errors import DeviceUnavailableError

logger = logging.getLogger("diarization")


def prepare_environment(offline: bool = True) -> None:
    """Disable telemetry (always) and the hub (unless baking); hush the torchcodec warning.

    torchcodec needs system FFmpeg libraries, which we deliberately do not ship: audio is
    decoded with PyAV and handed to pyannote in memory, so its import warning is noise.
    """
    os.environ["PYANNOTE_METRICS_ENABLED"] = "false"
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=r"(?s).*torchcodec.*")
    # Emitted by pyannote's own probing and its debug model's MFCC; neither affects results.
    warnings.filterwarnings("ignore", message=r"std\(\): degrees of freedom is <= 0")
    warnings.filterwarnings("ignore", message=r"At least one mel filterbank has all zero values")


@dataclass(frozen=True)
class DeviceInfo:
    """The device a pipeline runs on, as reported in results and health checks."""

    device: str
    name: str
    num_threads: int
    torch_version: str
    cuda_version: str | None
    memory_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "name": self.name,
            "num_threads": self.num_threads,
            "torch_version": self.torch_version,
            "cuda_version": self.cuda_version,
            "memory_bytes": self.memory_bytes,
        }


def select_device(requested: str, num_threads: int) -> DeviceInfo:
    """Resolve ``auto|cpu|cuda`` to a torch device, set the CPU thread count, and log the choice."""
    import torch

    torch.set_num_threads(num_threads)
    cuda_ok = torch.cuda.is_available()
    if requested == "cuda" and not cuda_ok:
        raise DeviceUnavailableError(
            "DEVICE=cuda but no CUDA device is usable here "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}). "
            "Use DEVICE=auto to fall back to the CPU, or run on a GPU instance.",
        )
    if requested in ("auto", "cuda") and cuda_ok:
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info = DeviceInfo(
            device=f"cuda:{index}",
            name=props.name,
            num_threads=num_threads,
            torch_version=torch.__version__,
            cuda_version=torch.version.cuda,
            memory_bytes=int(props.total_memory),
        )
        logger.info(
            "using GPU %s (%.1f GiB) with torch %s, CUDA %s",
            info.name,
            props.total_memory / 2**30,
            info.torch_version,
            info.cuda_version,
        )
        return info
    info = DeviceInfo(
        device="cpu",
        name=_cpu_name(),
        num_threads=num_threads,
        torch_version=torch.__version__,
        cuda_version=None,
        memory_bytes=None,
    )
    reason = "requested" if requested == "cpu" else "no CUDA device available"
    logger.info("using CPU (%s) with %d threads, torch %s", reason, num_threads, info.torch_version)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()
