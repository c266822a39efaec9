"""Data parallelism over ``torchrun`` ranks, and the hardware a run uses (the device itself comes from
``imfcodec.devices.resolve_device``, as for the codec).

Gradients are averaged across ranks with one flat all-reduce per optimizer step (rather than
torch's DistributedDataParallel wrapper, whose hooks assume one forward per backward and every
parameter used -- neither holds with a GAN and per-term skipping). Same result, simpler; the cost
is no overlap of communication with the backward pass.
"""

from __future__ import annotations

import os
import platform

import torch
import torch.distributed as dist

from imfcodec.devices import resolve_device  # noqa: F401 - its one home; importable from here as before


class Dist:
    """Rank/world info; no-ops when not launched by torchrun."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.owns_group = False

    def init(self, device: torch.device) -> None:
        if self.enabled and not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend=backend)
            self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_module(self, module: torch.nn.Module) -> None:
        if self.enabled:
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, 0)

    def allreduce_mean_(self, tensors: list[torch.Tensor]) -> None:
        """Average tensors across ranks in place, as one flat buffer."""
        if not self.enabled or not tensors:
            return
        flat = torch.cat([t.reshape(-1).float() for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world
        i = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[i:i + n].view_as(t))
            i += n

    def any(self, flag: bool, device: torch.device) -> bool:
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def sync_grads(d: Dist, params: list[torch.nn.Parameter]) -> None:
    """Average gradients across ranks (missing gradients count as zero on every rank)."""
    if not d.enabled:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    d.allreduce_mean_([p.grad for p in params])


def params_digest(*modules: torch.nn.Module | None) -> str:
    """sha256 of all parameters and buffers (to check that DDP replicas agree)."""
    import hashlib

    h = hashlib.sha256()
    for m in modules:
        if m is None:
            continue
        for k, v in sorted(m.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def hardware_string(device: torch.device, world: int = 1) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{world}x {name}"
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads" + (f", {world} processes" if world > 1 else "")
