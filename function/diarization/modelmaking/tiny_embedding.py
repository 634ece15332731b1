"""A ~20k-parameter speaker embedding model for fast tests of the real pipeline.

pyannote's own debug embedding model cannot take the per-speaker ``weights``
the diarization pipeline passes, so this one does: a strided 1-D conv front-end,
weighted statistics pooling (pyannote's ``StatsPool``) and a linear projection.
It lives in the package because a checkpoint stores its import path.
"""

from __future__ import annotations

import torch
from pyannote.audio.core.model import Model
from pyannote.audio.models.blocks.pooling import StatsPool
from torch import nn


class TinySpeakerEmbedding(Model):  # type: ignore[misc]  # pyannote ships no type information
    def __init__(self, sample_rate: int = 16000, num_channels: int = 1, dimension: int = 32, task: None = None) -> None:
        super().__init__(sample_rate=sample_rate, num_channels=num_channels, task=task)
        self.save_hyperparameters("dimension")
        self.frontend = nn.Sequential(
            nn.Conv1d(num_channels, 32, kernel_size=400, stride=160),
            nn.ReLU(),
            nn.Conv1d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        self.pooling = StatsPool()
        self.projection = nn.Linear(128, dimension)

    @property
    def dimension(self) -> int:
        return int(self.hparams.dimension)

    def forward(self, waveforms: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        frames = self.frontend(waveforms)
        return self.projection(self.pooling(frames, weights=weights))
