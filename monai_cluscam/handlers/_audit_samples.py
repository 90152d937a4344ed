"""The audit set of :class:`~monai_cluscam.handlers.AttributionAuditHandler`, read the same way whatever its
form (tensors, a sequence of per-sample dicts, a loader of batched dicts): per-sample ``(image, mask, label)``
triples, then batches of them stacked for the explainer."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader

from monai_cluscam.handlers._common import split_batch
from monai_cluscam.transforms import class_index_of
from monai_cluscam.utils import plain_tensor

__all__ = ["AuditBatch", "audit_batches", "audit_samples"]

Sample = tuple[torch.Tensor, Any, Any]


class AuditBatch(NamedTuple):
    """Audit samples explained together.

    Attributes:
        start: index of the first sample in the audit set.
        images: the images as given (a ``MetaTensor`` keeps its metadata, for the overlays).
        x: ``(B, C, *spatial)`` float images stacked as plain tensors.
        masks: ``(B, 1, *spatial)`` masks stacked, or None when the audit set has none.
        labels: the class index of each sample, or None when the audit set has no labels.
    """

    start: int
    images: list[torch.Tensor]
    x: torch.Tensor
    masks: torch.Tensor | None
    labels: list[int] | None


def audit_samples(
    data: torch.Tensor | Sequence[Mapping] | Iterable[Mapping],
    masks: torch.Tensor | None = None,
    labels: torch.Tensor | Sequence[int] | None = None,
    image_key: str = "image",
    mask_key: str = "mask",
    label_key: str = "label",
) -> Iterator[Sample]:
    """``(image, mask or None, label or None)`` for every audit sample, channel-first, unbatched.

    ``data`` is a tensor ``(N, C, *spatial)`` (with ``masks``/``labels``), a sequence of per-sample dicts (a list
    or a MONAI ``Dataset``), or a ``DataLoader`` (or other iterable) of batched dicts, which are split here.
    """
    if isinstance(data, torch.Tensor):
        n = data.shape[0]
        for name, extra in (("masks", masks), ("labels", labels)):
            if extra is not None and len(extra) != n:
                raise ValueError(f"{name} has {len(extra)} entries for {n} audit images; give one per image.")
        for i in range(n):
            yield data[i], None if masks is None else masks[i], None if labels is None else labels[i]
        return
    sized = hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, DataLoader)
    items = (data[i] for i in range(len(data))) if sized else data
    for item in items:
        if not isinstance(item, Mapping) or image_key not in item:
            raise ValueError(
                f"audit data must give dicts holding {image_key!r}; got "
                f"{sorted(item) if isinstance(item, Mapping) else type(item).__name__}. Set image_key."
            )
        if sized:
            yield item[image_key], item.get(mask_key), item.get(label_key)
            continue
        images = split_batch(item[image_key])
        item_masks = split_batch(item[mask_key]) if mask_key in item else [None] * len(images)
        item_labels = split_batch(item[label_key]) if label_key in item else [None] * len(images)
        yield from zip(images, item_masks, item_labels, strict=True)


def audit_batches(samples: Iterable[Sample], batch_size: int) -> Iterator[AuditBatch]:
    """``samples`` in batches of ``batch_size`` (the last may be smaller), images and masks stacked.

    Raises:
        ValueError: an image or mask is not a tensor, or some samples have masks (labels) and others not.
    """
    chunk: list[Sample] = []
    start = 0
    present: dict[str, bool] = {}
    for sample in samples:
        chunk.append(sample)
        if len(chunk) == batch_size:
            yield _stack(chunk, start, present)
            start += len(chunk)
            chunk = []
    if chunk:
        yield _stack(chunk, start, present)


def _stack(chunk: list[Sample], start: int, present: dict[str, bool]) -> AuditBatch:
    images, masks, labels = (list(column) for column in zip(*chunk, strict=True))
    has_masks = _all_or_none(masks, "masks", present)
    has_labels = _all_or_none(labels, "labels", present)
    return AuditBatch(
        start=start,
        images=images,
        x=torch.stack([_plain(img) for img in images]).float(),
        masks=torch.stack([_plain(m) for m in masks]) if has_masks else None,
        labels=[class_index_of(lab) for lab in labels] if has_labels else None,
    )


def _plain(t: Any) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"audit images and masks must be torch.Tensors; got {type(t).__name__}.")
    return plain_tensor(t)


def _all_or_none(values: list, name: str, present: dict[str, bool]) -> bool:
    """Whether every sample has ``name``; raises when only some have it, in this batch or against earlier ones."""
    flags = [v is not None for v in values]
    if any(flags) != all(flags) or present.setdefault(name, all(flags)) != all(flags):
        raise ValueError(f"some audit samples have {name} and others not; give {name} for all or none.")
    return all(flags)
