"""The fast embedding path: pyannote's speaker embeddings, computed with a third of the work.

Why: on CPU pyannote spends almost all of its time in the embedding step, and it runs the
WeSpeaker ResNet trunk once per (chunk, local speaker) pair although the speaker only enters
the statistics pooling after the trunk. :class:`SharedTrunkDiarization` runs the trunk once
per chunk and pools it with every local speaker's weights (the WeSpeaker pooling accepts
``(batch, speakers, frames)`` weights). The chunks, crops, masks, the rule choosing the
overlap-free mask and the pooling are pyannote's own, so the embeddings match upstream's to
float32 rounding (the equivalence tests hold them to 1e-4 and to an identical RTTM).

:func:`optimize_trunk` also folds each batch norm into the convolution before it and stores
the trunk's weights channels-last (oneDNN's fastest fp32 layout on x86): both are exact
algebra, differing from upstream only in float rounding.

``trunk_precision`` (set by the loader from :mod:`diarization.core.precision`) runs only the trunk
(the ResNet's ``forward_frames``, after the fp32 fbank) under bf16/fp16 autocast and casts its
output back to fp32 before pooling: pooling, PLDA and clustering always see fp32, and pyannote's
own inference (which converts outputs to numpy and rejects bf16) is not touched.

``FAST_EMBEDDINGS=false`` keeps pyannote's own code path untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from pyannote.audio.models.embedding.wespeaker import BaseWeSpeakerResNet
from pyannote.audio.pipelines import SpeakerDiarization
from pyannote.core import Segment, SlidingWindowFeature
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


class SharedTrunkDiarization(SpeakerDiarization):  # type: ignore[misc]
    """pyannote's ``SpeakerDiarization`` with one ResNet trunk pass per chunk instead of per speaker.

    ``embedding_batch_size`` counts chunks here (each carrying all its local speakers),
    not (chunk, speaker) pairs.
    """

    trunk_precision = "fp32"
    """``fp32``, ``bf16`` or ``fp16``: the arithmetic of the ResNet trunk alone."""

    def get_embeddings(
        self,
        file: Any,
        binary_segmentations: SlidingWindowFeature,
        exclude_overlap: bool = False,
        hook: Callable[..., Any] | None = None,
    ) -> np.ndarray:
        if self.training:  # hyper-parameter tuning caches embeddings upstream; keep its code
            cached: np.ndarray = super().get_embeddings(
                file, binary_segmentations, exclude_overlap=exclude_overlap, hook=hook
            )
            return cached

        num_chunks = binary_segmentations.data.shape[0]
        weights = torch.from_numpy(pooling_weights(self._embedding, binary_segmentations, exclude_overlap))
        model = self._embedding.model_
        device = self._embedding.device
        batch_size = max(1, int(self.embedding_batch_size))
        batch_count = math.ceil(num_chunks / batch_size)
        if hook is not None:
            hook("embeddings", None, total=batch_count, completed=0)

        batches = []
        with torch.inference_mode():
            for index, (first, chunks) in enumerate(_batches(binary_segmentations, batch_size), 1):
                waveforms = torch.stack([self._audio.crop(file, chunk, mode="pad")[0] for chunk in chunks])
                frames = _trunk(model, waveforms.to(device), self.trunk_precision)
                speaker_weights = weights[first : first + len(chunks)].to(device)
                embeddings = model.forward_embedding(frames, weights=speaker_weights).cpu().numpy()
                batches.append(embeddings)
                if hook is not None:
                    hook("embeddings", embeddings, total=batch_count, completed=index)
        return np.concatenate(batches)


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _trunk(model: Any, waveforms: torch.Tensor, precision: str) -> torch.Tensor:
    """The ResNet's frame features in fp32, computed in ``precision``; the fbank front end stays fp32: its
    mel filterbank sums power spectra of 16-bit-scaled samples before the log, where bf16's 8-bit mantissa
    would lose small bands next to loud ones; the trunk then sees (and autocast rounds) only log energies."""
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        frames: torch.Tensor = model.forward_frames(waveforms)
        return frames
    fbank = model.compute_fbank(waveforms)
    with torch.autocast(waveforms.device.type, dtype=dtype):
        frames = model.resnet.forward_frames(fbank)
    return frames.float()


def pooling_weights(embedding: Any, binary_segmentations: SlidingWindowFeature, exclude_overlap: bool) -> np.ndarray:
    """``(chunks, speakers, frames)`` pooling weights, chosen exactly as upstream's ``get_embeddings`` does.

    With ``exclude_overlap`` a speaker's overlap-free frames are used when there are more of
    them than the embedding model's minimum input, else all of its frames; NaN (partial
    stitching) counts as inactive.
    """
    data = binary_segmentations.data
    num_frames = data.shape[1]
    masks = np.nan_to_num(data, nan=0.0).astype(np.float32)
    if exclude_overlap:
        num_samples = binary_segmentations.sliding_window.duration * embedding.sample_rate
        min_num_frames = math.ceil(num_frames * embedding.min_num_samples / num_samples)
        clean_frames = 1.0 * (np.sum(data, axis=2, keepdims=True) < 2)
        clean_masks = np.nan_to_num(data * clean_frames, nan=0.0).astype(np.float32)
        use_clean = np.sum(clean_masks, axis=1, keepdims=True) > min_num_frames
        masks = np.where(use_clean, clean_masks, masks)
    return np.ascontiguousarray(masks.transpose(0, 2, 1))


def _batches(segmentations: SlidingWindowFeature, size: int) -> Iterator[tuple[int, list[Segment]]]:
    chunks = [chunk for chunk, _ in segmentations]
    for first in range(0, len(chunks), size):
        yield first, chunks[first : first + size]


def supports_shared_trunk(pipeline: Any) -> bool:
    """Only pyannote's own diarization class with a WeSpeaker ResNet embedding has the split forward."""
    embedding = getattr(pipeline, "_embedding", None)
    return type(pipeline) is SpeakerDiarization and isinstance(getattr(embedding, "model_", None), BaseWeSpeakerResNet)


def accelerate(pipeline: Any) -> bool:
    """Switch a loaded pipeline to the fast path in place; False (and untouched) if it does not apply.

    The class is swapped rather than the pipeline rebuilt because ``Pipeline.from_pretrained``
    instantiates the class named in ``config.yaml``; the subclass adds no state.
    """
    if not supports_shared_trunk(pipeline):
        return False
    optimize_trunk(pipeline._embedding.model_.resnet)
    pipeline.__class__ = SharedTrunkDiarization
    return True


def optimize_trunk(resnet: nn.Module) -> None:
    """Fold every eval-mode batch norm into its convolution and store weights channels-last."""
    resnet.conv1, resnet.bn1 = _fold(resnet.conv1, resnet.bn1)
    for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        for block in layer:
            for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
                if hasattr(block, conv_name) and isinstance(getattr(block, bn_name, None), nn.BatchNorm2d):
                    conv, bn = _fold(getattr(block, conv_name), getattr(block, bn_name))
                    setattr(block, conv_name, conv)
                    setattr(block, bn_name, bn)
            shortcut = getattr(block, "shortcut", None)
            if isinstance(shortcut, nn.Sequential) and len(shortcut) == 2:
                conv, _ = _fold(shortcut[0], shortcut[1])
                block.shortcut = nn.Sequential(conv)
    resnet.to(memory_format=torch.channels_last)


def _fold(conv: nn.Module, bn: nn.Module) -> tuple[nn.Module, nn.Module]:
    if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
        return conv, bn
    return fuse_conv_bn_eval(conv.eval(), bn.eval()), nn.Identity()
