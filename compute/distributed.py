"""Training in several processes started by ``torchrun`` (one process per GPU, or several CPU processes).

``torchrun --nproc_per_node=N --no-python condi-pipe distill ...`` starts N copies of the command with
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` (and the rendezvous address) in their environment;
:func:`training_processes` joins them into one process group: gloo on CPU, NCCL with ``--device cuda`` (each
process then uses ``cuda:LOCAL_RANK``). Without ``WORLD_SIZE`` (or with 1) nothing is initialised and training
runs exactly as a single process always did.

How the processes share one training run (``pipeline.training``):

* **Same global batches.** Every process draws the epoch's seeded order and batches exactly as one process
  would; rank r trains on its contiguous part of every global batch (:meth:`TrainingProcesses.shard`).
* **Same gradient.** After each backward pass the gradients are summed over the processes in one flat
  all-reduce per dtype, each weighted by its part's share of the global batch, so the sum is the gradient of
  the global batch's mean loss, as one process computes it, except for (a) BatchNorm, which normalises with
  the batch statistics of each process's part (unless ``TrainOptions.sync_batchnorm``:
  ``compute.sync_batchnorm``), (b) losses that choose samples within a batch (bce-conf's balancing, st-conf's
  hints) or a rank's own dropout masks, which choose within each part, and (c) float summation order. Every
  process then takes the same SGD step, so all hold the same weights (checked after every epoch). Gradients
  are reduced by hand rather than by DistributedDataParallel: the tasks call sub-modules outside ``forward``
  (the video head), leave parameters unused (a confidence head under st-ent) and need the step's loss terms
  summed over the processes (st-conf's lambda), and a process whose part of a short last batch is empty must
  still join the reduction; one reduction after backward does all of that.
* **One writer.** Rank 0 alone takes the store lock, evaluates, writes checkpoints, history and the stage
  record; the others read the store only. Rank 0 tells them whether to train, skip (already done) or stop
  (an error before training) through :meth:`TrainingProcesses.share`.
* BatchNorm running statistics are averaged over the processes after every epoch (before evaluation and
  the checkpoint); dropout draws from a per-rank stream re-seeded every epoch, so a resumed run matches an
  uninterrupted one with the same number of processes. A run may also be resumed with another number of
  processes: it continues with the same global batches and data order (its weights then match neither
  uninterrupted run byte for byte, only within the tolerance above).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn

from condi_pipe.compute.torch_runtime import RuntimeOptions

# Rank 0 evaluates and writes the checkpoint while the other processes already wait in the next epoch's first
# gradient reduction: the timeout has to cover a whole evaluation, not only a training step.
COLLECTIVE_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class TrainingProcesses:
    """This process's place among the processes training one run (a single process by default)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None
    comm_device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes to the store and logs."""
        return self.rank == 0

    def device(self, runtime: RuntimeOptions) -> torch.device:
        """The runtime's device; under torchrun with CUDA, ``cuda:LOCAL_RANK``."""
        device = runtime.torch_device()
        if self.distributed and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def shard(self, spec: Sequence) -> Sequence:
        """This rank's contiguous part of a global batch (the first ``len % world`` ranks get one more)."""
        if not self.distributed:
            return spec
        base, extra = divmod(len(spec), self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return spec[start : start + base + (1 if self.rank < extra else 0)]

    # -- messages from rank 0 -------------------------------------------------------------------------------
    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (small picklable objects)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.comm_device)
        return box[0]

    # -- gradients and state --------------------------------------------------------------------------------
    def reduce_step(self, params: Sequence[nn.Parameter], part_share: float, logs: dict[str, float] | None,
                    samples: int, columns: Sequence[str]) -> tuple[dict[str, float], list[float]]:
        """Sum every parameter's gradient over the ranks, each weighted by ``part_share`` (its part of the global
        batch), and the step's logs weighted by samples; returns the global batch's mean logs and the samples
        of each rank. A rank with an empty part passes ``logs=None``; a parameter no rank computed a gradient
        for keeps ``grad = None`` (SGD then leaves it alone, as in one process)."""
        import torch.distributed as dist

        # Per-step numbers in float64: has-gradient flags, samples-weighted logs, then samples one-hot at rank.
        rank_samples = [0.0] * self.world_size
        rank_samples[self.rank] = float(samples)
        stats = torch.tensor([float(p.grad is not None) for p in params]
                             + [float(logs[c]) * samples if logs is not None else 0.0 for c in columns]
                             + rank_samples, dtype=torch.float64)

        by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
        for param in params:
            by_dtype.setdefault(param.dtype, []).append(param)
        flats = {}
        for dtype, group in by_dtype.items():
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group])
            if part_share != 1.0:
                flat.mul_(part_share)
            flats[dtype] = flat.to(self.comm_device)
            dist.all_reduce(flats[dtype])
        stats = stats.to(self.comm_device)
        dist.all_reduce(stats)
        stats = stats.cpu()

        has_gradient = {id(p): stats[i] > 0 for i, p in enumerate(params)}
        for dtype, group in by_dtype.items():
            offset = 0
            for param in group:
                values = flats[dtype][offset : offset + param.numel()].view(param.shape)
                offset += param.numel()
                if not has_gradient[id(param)]:
                    param.grad = None
                    continue
                if param.grad is None:
                    param.grad = torch.empty_like(param)  # keeps the parameter's memory format
                param.grad.copy_(values)
        rank_samples = stats[len(params) + len(columns):].tolist()
        total = sum(rank_samples)
        sums = stats[len(params) : len(params) + len(columns)].tolist()
        return {c: (s / total if total else float("nan")) for c, s in zip(columns, sums)}, rank_samples

    def average_buffers(self, modules: Iterable[nn.Module]) -> None:
        """Average float buffers (BatchNorm running statistics) over the ranks; take rank 0's others (counters).

        Each rank's running mean is an exponential average of its parts' batch means, so the average over ranks
        is the exponential average of the global batches' means (equal parts); running variances average the
        parts' variances (without the spread between the parts' means)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        buffers = [b for m in modules for b in m.buffers()]
        floats = [b for b in buffers if b.is_floating_point()]
        if floats:
            flat = torch.cat([b.reshape(-1).to(torch.float64) for b in floats]).to(self.comm_device)
            dist.all_reduce(flat)
            flat = (flat / self.world_size).cpu()
            offset = 0
            for buffer in floats:
                buffer.copy_(flat[offset : offset + buffer.numel()].view(buffer.shape))
                offset += buffer.numel()
        for buffer in buffers:
            if not buffer.is_floating_point():
                value = buffer.to(self.comm_device).clone()
                dist.broadcast(value, src=0)
                buffer.copy_(value)

    def check_in_sync(self, modules: Iterable[nn.Module], when: str) -> None:
        """Raise if the ranks' weights differ (they take identical steps, so they never should)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        tensors = [t.detach() for m in modules for t in (*m.parameters(), *m.buffers())]
        fingerprint = torch.tensor([sum(float(t.double().sum()) for t in tensors),
                                    sum(float(t.double().abs().sum()) for t in tensors)], dtype=torch.float64)
        gathered = [torch.zeros_like(fingerprint).to(self.comm_device) for _ in range(self.world_size)]
        dist.all_gather(gathered, fingerprint.to(self.comm_device))
        if any(not torch.equal(g.cpu(), gathered[0].cpu()) for g in gathered):
            raise RuntimeError(f"the {self.world_size} training processes hold different weights {when}; "
                               "this is a bug (their gradient reductions differed)")


SINGLE_PROCESS = TrainingProcesses()


def launched_world_size() -> int:
    """How many processes torchrun started for this job (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


@contextmanager
def training_processes(runtime: RuntimeOptions) -> Iterator[TrainingProcesses]:
    """Join the processes torchrun started (initialising the process group, and destroying it afterwards), or
    use a group the caller already initialised; a single process outside torchrun."""
    import torch.distributed as dist

    already = dist.is_available() and dist.is_initialized()
    if not already and launched_world_size() <= 1:
        yield SINGLE_PROCESS
        return
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; run without torchrun")
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    cuda = runtime.torch_device().type == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank)
    if not already:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
    else:
        rank, world = dist.get_rank(), dist.get_world_size()
    backend = dist.get_backend()
    processes = TrainingProcesses(world, rank, local_rank, local_world, backend,
                                  torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu"))
    try:
        yield processes
    finally:
        if not already:
            dist.destroy_process_group()
