"""Resemblyzer's trained GE2E speaker encoder as a pyannote embedding model (a stand-in).

The network is resemblyzer's (3-layer LSTM 40→256, linear 256→256, ReLU, L2 norm) on the
features it was trained with: 40-band power (not log) mel spectrogram, 25 ms windows every 10 ms,
at -30 dBFS or louder. Only its weights are used; resemblyzer itself (which imports librosa and
webrtcvad) is not needed at run time: torchaudio computes the same mel filterbank (Slaney scale
and normalisation, periodic Hann window).

pyannote passes per-frame ``weights`` for the speaker of interest. Resemblyzer trims silence
and embeds 1.6 s partials of what remains, averaging them; here the speaker's frames play the
part of the speech that survives trimming: the mel frames whose weight is at least 0.5 are
concatenated, cut into partials of :data:`PARTIAL_FRAMES` every :data:`PARTIAL_STEP` frames
(resemblyzer's 1.3 partials per second), and the L2-normalised mean of the partial embeddings is
the embedding. A speaker with no frames gets NaN, which pyannote's clustering skips.

It is a *stand-in* for community-1's WeSpeaker ResNet34: trained on other data for another
purpose (GE2E verification), so pair it with agglomerative clustering, not VBx's PLDA.
It lives in the package because a checkpoint stores its import path.
"""

from __future__ import annotations

import torch
import torchaudio
from pyannote.audio.core.model import Model
from torch import nn
from torch.nn.utils.rnn import pack_sequence

MEL_BANDS = 40
WINDOW = 400
"""25 ms at 16 kHz."""
HOP = 160
"""10 ms at 16 kHz."""
PARTIAL_FRAMES = 160
"""1.6 s, the length resemblyzer was trained on."""
PARTIAL_STEP = 77
"""round(16000 / 1.3 / 160): resemblyzer's default rate of 1.3 partials per second."""
TARGET_DBFS = -30.0
"""Resemblyzer raises quieter audio to this level (never lowers louder audio)."""
SPEAKER_WEIGHT = 0.5
"""A mel frame belongs to the speaker when its (interpolated) weight reaches this."""


class GE2ESpeakerEmbedding(Model):  # type: ignore[misc]  # pyannote ships no type information
    def __init__(
        self, sample_rate: int = 16000, num_channels: int = 1, hidden_size: int = 256, task: None = None
    ) -> None:
        super().__init__(sample_rate=sample_rate, num_channels=num_channels, task=task)
        self.save_hyperparameters("hidden_size")
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=WINDOW,
            hop_length=HOP,
            n_mels=MEL_BANDS,
            power=2.0,
            norm="slaney",
            mel_scale="slaney",
            center=True,
            pad_mode="constant",
        )
        self.lstm = nn.LSTM(MEL_BANDS, hidden_size, num_layers=3, batch_first=True)
        self.linear = nn.Linear(hidden_size, hidden_size)

    @property
    def dimension(self) -> int:
        return int(self.hparams.hidden_size)

    def forward(self, waveforms: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, channel, sample) audio and optional (batch, frame) speaker weights → (batch, 256)."""
        if waveforms.shape[-1] < WINDOW:
            # pyannote probes for the shortest input a model accepts to size its masks: one window.
            raise ValueError(f"GE2E needs at least {WINDOW} samples (25 ms), got {waveforms.shape[-1]}")
        audio = _raise_to_level(waveforms.mean(dim=1))
        mels = self.mel(audio).transpose(1, 2)
        if weights is None:
            keep = torch.ones(mels.shape[:2], dtype=torch.bool, device=mels.device)
        else:
            frames = nn.functional.interpolate(weights[:, None].float(), size=mels.shape[1], mode="nearest")[:, 0]
            keep = frames >= SPEAKER_WEIGHT
        partials: list[torch.Tensor] = []
        owners: list[int] = []
        for index, (mel, selected) in enumerate(zip(mels, keep, strict=True)):
            for partial in _partials(mel[selected]):
                partials.append(partial)
                owners.append(index)
        embeddings = torch.full((mels.shape[0], self.dimension), float("nan"), device=mels.device)
        if not partials:
            return embeddings
        _, (hidden, _) = self.lstm(pack_sequence(partials, enforce_sorted=False))
        partial_embeddings = nn.functional.normalize(torch.relu(self.linear(hidden[-1])), dim=1)
        owner = torch.tensor(owners, device=mels.device)
        for index in owner.unique():
            embeddings[index] = nn.functional.normalize(partial_embeddings[owner == index].mean(dim=0), dim=0)
        return embeddings


def _raise_to_level(audio: torch.Tensor) -> torch.Tensor:
    """Each row scaled up to TARGET_DBFS if quieter; digital silence stays silent."""
    rms = audio.pow(2).mean(dim=1, keepdim=True).sqrt()
    gain = torch.where(rms > 0, 10 ** (TARGET_DBFS / 20) / rms.clamp_min(1e-12), torch.ones_like(rms))
    return audio * gain.clamp_min(1.0)


def _partials(frames: torch.Tensor) -> list[torch.Tensor]:
    """1.6 s windows every 0.77 s covering all ``frames``; one shorter window when there are fewer."""
    count = frames.shape[0]
    if count == 0:
        return []
    if count <= PARTIAL_FRAMES:
        return [frames]
    starts = list(range(0, count - PARTIAL_FRAMES + 1, PARTIAL_STEP))
    if starts[-1] + PARTIAL_FRAMES < count:
        starts.append(count - PARTIAL_FRAMES)
    return [frames[start : start + PARTIAL_FRAMES] for start in starts]


def load_resemblyzer_weights(model: GE2ESpeakerEmbedding, checkpoint: dict[str, object]) -> None:
    """Copy resemblyzer's ``pretrained.pt`` network weights in; its GE2E loss scalars are not part of the encoder."""
    state = checkpoint.get("model_state")
    if not isinstance(state, dict):
        raise ValueError("not a resemblyzer checkpoint: no model_state")
    encoder = {key: value for key, value in state.items() if key.startswith(("lstm.", "linear."))}
    model.load_state_dict({**model.state_dict(), **encoder}, strict=True)
    expected = {key for key in model.state_dict() if key.startswith(("lstm.", "linear."))}
    if set(encoder) != expected:
        raise ValueError(f"resemblyzer checkpoint lacks {sorted(expected - set(encoder))}")
