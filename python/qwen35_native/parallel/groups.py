"""Process groups of tensor parallelism: a rank's place (rank, world size, device) and its collectives.

Two groups per tensor-parallel world: the main group (NCCL when the ranks run on CUDA, gloo on the CPU) carries the
model's all-reduces and the logits all-gather; a gloo "control" group carries host-side messages from rank 0 (the
engine's step plans, ``runner.py``). The control group never times out on its own (followers may wait for the next
request indefinitely); a dead peer still fails it at once (its sockets close).

The main group's timeout is ``QWEN35_TP_TIMEOUT`` seconds (default 600): a collective that waits longer for a peer
raises instead of hanging.

Tests: tests/parallel/test_tp_group.py, test_layout.py.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

CONTROL_TIMEOUT = datetime.timedelta(days=30)


def collective_timeout() -> datetime.timedelta:
    value = os.environ.get("QWEN35_TP_TIMEOUT", "600")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"qwen35_native: QWEN35_TP_TIMEOUT must be a number of seconds, got {value!r}") from None
    return datetime.timedelta(seconds=seconds)


@dataclass(eq=False)
class TPContext:
    """A rank of a tensor-parallel world. ``group`` None: no collectives (world 1 without a process group, or a
    rank's shard built alone to inspect loading)."""

    rank: int
    world_size: int
    device: torch.device
    group: object | None = None
    control: object | None = None
    owns_default_group: bool = False   # this context created the default group (and destroys it)

    @property
    def backend(self) -> str | None:
        return None if self.group is None else str(dist.get_backend(self.group))

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sums ``t`` over the ranks, in place; returns it."""
        if self.group is not None:
            dist.all_reduce(t, group=self.group)
        return t

    def all_gather_columns(self, t: torch.Tensor) -> torch.Tensor:
        """``[M, n]`` on every rank -> ``[M, world * n]``: rank r's block at columns ``[r*n, (r+1)*n)``."""
        if self.group is None or self.world_size == 1:
            return t
        M, n = t.shape
        out = torch.empty(self.world_size * M, n, dtype=t.dtype, device=t.device)
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        gather(out, t.contiguous(), group=self.group)
        return out.view(self.world_size, M, n).permute(1, 0, 2).reshape(M, self.world_size * n)

    def all_min(self, value: int) -> int:
        """The smallest of every rank's ``value`` (host int; through the control group)."""
        if self.control is None:
            return value
        t = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MIN, group=self.control)
        return int(t.item())

    def destroy(self) -> None:
        """Destroys the groups this context created (idempotent)."""
        if self.group is None:
            return
        if self.owns_default_group and dist.is_initialized():
            dist.destroy_process_group()
        elif self.control is not None and dist.is_initialized():
            dist.destroy_process_group(self.control)
        self.group = self.control = None


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: torch.device | str | None, index: int) -> torch.device:
    """The device of the rank with local index ``index``: ``cuda:<base + index>`` (base: the given device's index,
    0 by default) or the CPU."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"qwen35_native: tensor parallelism runs on cuda or cpu devices, got {device}")
    if not torch.cuda.is_available():
        raise ValueError("qwen35_native: device='cuda' but CUDA is not available")
    local = (device.index or 0) + index
    if local >= torch.cuda.device_count():
        raise ValueError(f"qwen35_native: tensor-parallel rank on cuda:{local} needs {local + 1} GPUs, this machine "
                         f"has {torch.cuda.device_count()}")
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def _control_group():
    return dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)


def init_group(rank: int, world_size: int, device: torch.device, store) -> TPContext:
    """Creates the default process group (rank ``rank`` of ``world_size``, rendezvous through ``store``) and the
    control group; the returned context owns both."""
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend_for(device), store=store, rank=rank, world_size=world_size,
                            timeout=collective_timeout(), **kwargs)
    return TPContext(rank, world_size, device, dist.group.WORLD, _control_group(), owns_default_group=True)


def torchrun_world() -> int | None:
    """WORLD_SIZE of a ``torchrun`` launch (None outside one)."""
    value = os.environ.get("WORLD_SIZE")
    return int(value) if value else None


def join_torchrun(world_size: int, device: torch.device | str | None) -> TPContext:
    """Joins the ``torchrun`` world (the default group, created from the environment unless the script already
    did): rank = ``RANK``, device = ``cuda:LOCAL_RANK`` (or the CPU)."""
    env_world = torchrun_world()
    if dist.is_initialized():
        env_world = dist.get_world_size()
    if env_world != world_size:
        raise ValueError(f"qwen35_native: tensor_parallel_size={world_size} but this torchrun world has "
                         f"{env_world} ranks; run torchrun --nproc-per-node {world_size}")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda" and dev.index not in (None, local_rank):
        raise ValueError(f"qwen35_native: under torchrun each rank uses cuda:LOCAL_RANK (here cuda:{local_rank}); "
                         f"pass device='cuda', not {dev}")
    dev = rank_device(None if dev is None else dev.type, local_rank)
    owns = False
    if not dist.is_initialized():
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend_for(dev), init_method="env://", timeout=collective_timeout(), **kwargs)
        owns = True
    return TPContext(dist.get_rank(), world_size, dev, dist.group.WORLD, _control_group(), owns_default_group=owns)
