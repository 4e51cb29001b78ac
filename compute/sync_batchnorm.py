"""BatchNorm over the whole global batch when several processes train one run (``TrainOptions.sync_batchnorm``).

Without it each process normalises its part of every global batch with that part's own statistics
(``compute.distributed``), so the smaller the parts, the further the run drifts from one process training the
whole batch (docs/scaling.md). :func:`synchronised_batchnorm` swaps every plain ``BatchNorm1d/2d/3d`` of the
trained modules for :class:`SynchronisedBatchNorm` for the length of the training, and back afterwards. In
training mode it takes the mean and variance of the global batch: every process sums its part's per-channel
sum, sum of squares and count with one all-reduce per layer in forward, and its backward all-reduces the two
per-channel gradient sums the normalisation's input gradient needs (the SyncBatchNorm math). In eval mode it
is a plain BatchNorm on the running statistics and talks to nobody, so rank 0 evaluates alone.

Why not ``torch.nn.SyncBatchNorm``: (a) it refuses CPU tensors (torch 2.14 raises "SyncBatchNorm expected input
tensor to be on GPU ..." as soon as a process group exists), and CPU training under gloo is this pipeline's main
multi-process setting; (b) it needs every process to run forward in every step, while a process whose part of a
short last batch is empty runs none (``compute.training``): every other process would wait in the layer's
collective for the two-hour timeout; (c) its backward sums the processes' unweighted gradient sums, right for
DDP's equal parts but not for the part-weighted gradients of ``TrainingProcesses.reduce_step``. So this class
runs on every device (the all-reduce goes through the process group's device: gloo on CPU, NCCL on CUDA).

Each step is told its part's share of the global batch (``begin_step``): the backward weights its gradient sums
by it, so unequal parts get the global batch's gradient; a step where some process's part is empty (fewer
samples than processes) is normalised per part, as without synchronisation, since the empty process runs no
layer. The layers have the state dict keys of ``nn.BatchNorm*d`` (same parameters and buffers), so checkpoints,
snapshots and the saved weights are those of the plain model. Layers of other BatchNorm subclasses (SGS's
time-masked BatchNorm) keep their own forward and stay per process. Every process must run the same layers in
the same order in a step, forward and backward: true of the models here, whose layers do not depend on the data.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from condi_pipe.compute.distributed import TrainingProcesses

PLAIN_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class _GlobalBatchNorm(torch.autograd.Function):
    """Batch normalisation of ``x`` with the per-channel mean and variance of every process's part together.

    The element-wise passes are torch's fused CPU/CUDA kernels: eval-mode ``batch_norm`` (normalising with given
    statistics) and its backward (the per-channel gradient sums); only the reductions are added."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float,
                layer: SynchronisedBatchNorm):
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()  # bf16 autocast: statistics in fp32
        channels, count = work.shape[1], work.numel() // work.shape[1]
        var, mean = torch.var_mean(work, [0, *range(2, work.dim())], correction=0)
        mean64 = mean.double()
        # per channel: sum, sum of squares; then the count. Float64, so Q/N - mean^2 loses nothing that matters.
        sums = layer.all_reduce(torch.cat([mean64 * count, (var.double() + mean64.square()) * count,
                                           mean64.new_tensor([float(count)])]))
        total = float(sums[-1])
        global_mean = sums[:channels] / total
        global_var = (sums[channels:2 * channels] / total - global_mean.square()).clamp_min(0)
        if running_mean is not None and running_var is not None:
            with torch.no_grad():
                running_mean.lerp_(global_mean.to(running_mean), momentum)
                running_var.lerp_((global_var * (total / max(total - 1.0, 1.0))).to(running_var), momentum)
        mean, var = global_mean.to(work.dtype), global_var.to(work.dtype)
        weight_ = None if weight is None else weight.to(work.dtype)
        out = F.batch_norm(work, mean, var, weight_, None if bias is None else bias.to(work.dtype), False, 0.0, eps)
        ctx.save_for_backward(work, weight_, mean, var)
        ctx.eps, ctx.total, ctx.layer, ctx.share, ctx.input_dtype = eps, total, layer, layer.part_share, x.dtype
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        work, weight, mean, var = ctx.saved_tensors
        grad = grad_out.to(work.dtype)
        ones = torch.ones_like(mean)
        # eval-mode backward, fused: sum(grad * xhat) and sum(grad) per channel (xhat = (x - mean) * invstd)
        _, sum_dy_xhat, sum_dy = torch.ops.aten.native_batch_norm_backward(
            grad, work, ones, mean, var, None, None, False, ctx.eps, [False, True, True])
        # This process back-propagates its part's mean loss, the global loss divided by its share: weighting the sums
        # by the share before adding them up gives the global loss's sums, dividing after puts them in this scale.
        channels = work.shape[1]
        global_sums = ctx.layer.all_reduce(torch.cat([sum_dy, sum_dy_xhat]).double() * ctx.share) / ctx.share
        mean_dy, mean_dy_xhat = global_sums[:channels] / ctx.total, global_sums[channels:] / ctx.total
        # grad_x = (grad - mean_dy - xhat * mean_dy_xhat) * invstd * weight = grad * a + x * b + c per channel
        invstd = torch.rsqrt(var.double() + ctx.eps)
        a = invstd * (1.0 if weight is None else weight.double())
        b = -a * invstd * mean_dy_xhat
        c = -a * mean_dy - b * mean.double()
        shape = (1, -1) + (1,) * (work.dim() - 2)
        # grad * a + c as an eval-mode batch_norm (mean 0, variance 1, eps 0): one fused pass, then x * b added
        grad_x = F.batch_norm(grad, torch.zeros_like(mean), ones, a.to(work.dtype), c.to(work.dtype), False, 0.0, 0.0)
        grad_x.addcmul_(work, b.to(work.dtype).view(shape))
        grad_weight = grad_bias = None
        if weight is not None:  # this part's own terms: reduce_step adds up the processes' parameter gradients
            grad_weight, grad_bias = sum_dy_xhat.to(weight.dtype), sum_dy.to(weight.dtype)
        return grad_x.to(ctx.input_dtype), grad_weight, grad_bias, None, None, None, None, None


class SynchronisedBatchNorm(_BatchNorm):
    """A BatchNorm layer whose training statistics are the global batch's (see the module docstring)."""

    def __init__(self, plain: _BatchNorm, processes: TrainingProcesses) -> None:
        super().__init__(plain.num_features, plain.eps, plain.momentum, plain.affine, plain.track_running_stats,
                         device="meta")
        # the plain layer's own tensors, not copies: the optimizer's parameters and the state dict stay the same
        self.weight, self.bias = plain.weight, plain.bias
        self.running_mean, self.running_var = plain.running_mean, plain.running_var
        self.num_batches_tracked = plain.num_batches_tracked
        self.training = plain.training
        self.plain_type = type(plain)
        self.processes = processes
        self.part_share = 1.0  # this process's share of the current step's global batch
        self.synchronise = True  # False for a step in which some process has an empty part

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def all_reduce(self, values: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        on_comm = values.to(self.processes.comm_device)
        dist.all_reduce(on_comm)
        return on_comm.to(values.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.synchronise):
            return super().forward(x)
        self._check_input_dim(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average, as nn.BatchNorm
                momentum = 1.0 / float(self.num_batches_tracked)
        tracked = self.track_running_stats
        return _GlobalBatchNorm.apply(x, self.weight, self.bias, self.running_mean if tracked else None,
                                      self.running_var if tracked else None, momentum, self.eps, self)

    def plain(self) -> _BatchNorm:
        """The ``nn.BatchNorm*d`` this layer replaced, holding the same tensors."""
        layer = self.plain_type(self.num_features, self.eps, self.momentum, self.affine, self.track_running_stats,
                                device="meta")
        layer.weight, layer.bias = self.weight, self.bias
        layer.running_mean, layer.running_var = self.running_mean, self.running_var
        layer.num_batches_tracked = self.num_batches_tracked
        layer.training = self.training
        return layer


class BatchNormSync:
    """The synchronised layers of one training run; the loop tells them each step's share (:meth:`begin_step`)."""

    def __init__(self, processes: TrainingProcesses, enabled: bool) -> None:
        self.processes = processes
        self.enabled = enabled and processes.distributed  # one process: nothing to synchronise
        self.layers: list[tuple[nn.Module, str, SynchronisedBatchNorm]] = []

    def convert(self, modules: Iterable[nn.Module]) -> None:
        """Replace every plain BatchNorm inside ``modules`` (in place) by a synchronised one."""
        if not self.enabled:
            return
        for module in modules:
            for parent in list(module.modules()):
                for name, child in list(parent.named_children()):
                    if type(child) in PLAIN_BATCHNORMS:
                        synced = SynchronisedBatchNorm(child, self.processes)
                        setattr(parent, name, synced)
                        self.layers.append((parent, name, synced))

    def begin_step(self, part_size: int, global_size: int) -> None:
        """This process trains ``part_size`` of the step's ``global_size`` samples; every process learns the same
        ``global_size``, so all agree whether some part is empty (fewer samples than processes)."""
        synchronise = global_size >= self.processes.world_size
        for _, _, layer in self.layers:
            layer.synchronise, layer.part_share = synchronise, part_size / global_size if global_size else 1.0

    def restore(self) -> None:
        """Put the plain BatchNorm layers back (with the trained tensors)."""
        for parent, name, layer in reversed(self.layers):
            setattr(parent, name, layer.plain())
        self.layers.clear()


@contextmanager
def synchronised_batchnorm(processes: TrainingProcesses, enabled: bool) -> Iterator[BatchNormSync]:
    """A :class:`BatchNormSync` whose converted layers are plain again on leaving (also after an error)."""
    sync = BatchNormSync(processes, enabled)
    try:
        yield sync
    finally:
        sync.restore()
