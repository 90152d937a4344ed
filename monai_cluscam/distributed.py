"""Sharing one ``explain`` run between the processes ``torchrun`` starts.

``torchrun --nproc_per_node=N -m monai_cluscam explain ...`` starts N copies of the command line with
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` set. :func:`cohort` joins them in a ``torch.distributed`` process
group (gloo on CPU, NCCL on GPU, each GPU process on ``cuda:LOCAL_RANK``); without ``WORLD_SIZE > 1`` it is a
cohort of one and nothing is initialised. Rank 0 plans the run and gathers the results; every rank explains
its share of the inputs (``inputs[rank::world_size]``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = ["Cohort", "cohort", "cohort_device"]

T = TypeVar("T")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError as err:
        raise ValueError(f"environment variable {name}={value!r} is not an integer; launch with torchrun.") from err


@dataclass(frozen=True)
class Cohort:
    """The processes sharing a run: this one's ``rank`` among ``world_size``.

    With ``world_size == 1`` every method is a no-op (``gather`` and ``broadcast`` return their argument).
    """

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process plans the run and writes the merged tables (rank 0)."""
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: every ``world_size``-th item from position ``rank``.

        Example:
            >>> Cohort(rank=1, world_size=2).shard(["a", "b", "c", "d", "e"])
            ['b', 'd']
        """
        return list(items[self.rank :: self.world_size])

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value``, on every rank (``value`` is ignored elsewhere)."""
        if self.world_size == 1:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.world_size == 1:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values


def cohort_device(requested: str | torch.device | None) -> torch.device:
    """The device this process explains on: ``requested`` (None: CUDA when available, else CPU).

    Under ``torchrun`` a CUDA device without an index becomes ``cuda:LOCAL_RANK``, so each process gets
    its own GPU (with more processes than GPUs, they take turns: ``LOCAL_RANK % device_count``).

    Example:
        >>> cohort_device("cpu")
        device(type='cpu')
    """
    device = torch.device(requested) if requested is not None else None
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and device.index is None and _env_int("WORLD_SIZE", 1) > 1:
        device = torch.device("cuda", _env_int("LOCAL_RANK", 0) % max(1, torch.cuda.device_count()))
    return device


def _backend(device: torch.device) -> str:
    """NCCL when each process of this machine has a GPU of its own; gloo otherwise (CPU, or GPUs shared)."""
    if device.type == "cuda" and _env_int("LOCAL_WORLD_SIZE", 1) <= torch.cuda.device_count():
        return "nccl"
    return "gloo"


@contextmanager
def cohort(device: torch.device) -> Iterator[Cohort]:
    """Join the process group ``torchrun`` set up (only when ``WORLD_SIZE > 1``) and leave it afterwards.

    The backend is NCCL when ``device`` is a GPU and each process of the machine has one of its own, gloo
    otherwise (only small Python objects travel: the input list and the results).

    Raises:
        RuntimeError: ``WORLD_SIZE > 1`` but this torch build has no ``torch.distributed``.

    Example:
        >>> with cohort(torch.device("cpu")) as group:  # no WORLD_SIZE: a cohort of one
        ...     group.rank, group.world_size
        (0, 1)
    """
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        yield Cohort()
        return
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build lacks torch.distributed; run one process instead.")
    joined = not dist.is_initialized()
    if joined:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=_backend(device))
    try:
        yield Cohort(rank=dist.get_rank(), world_size=dist.get_world_size())
    finally:
        if joined:
            dist.destroy_process_group()
