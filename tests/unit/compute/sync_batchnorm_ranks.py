"""What each rank of the synchronised-BatchNorm test runs (not a test module: the test puts this folder on
``sys.path``, so the processes ``torch.multiprocessing.spawn`` starts import it as ``sync_batchnorm_ranks``)."""

from __future__ import annotations

import copy
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from condi_pipe.compute.distributed import TrainingProcesses
from condi_pipe.compute.sync_batchnorm import BatchNormSync, SynchronisedBatchNorm

WORLD = 2


class TinyVideoNet(nn.Module):
    """Conv3d -> BatchNorm3d -> ReLU -> pool -> Linear: the gradient reaches the convolution only through the
    normalisation, so a wrong input gradient of the synchronised layer shows in the convolution's gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, kernel_size=1)
        self.bn = nn.BatchNorm3d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3, 4)))


def mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


def check_rank(rank: int, port: int) -> None:
    torch.set_num_threads(1)
    # a short timeout: a rank waiting in a collective the other never joins fails the test instead of hanging it
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        processes = TrainingProcesses(WORLD, rank, rank, WORLD, "gloo")
        _global_statistics_and_gradient(processes)
        _empty_part_and_evaluation(processes)
    finally:
        dist.destroy_process_group()


def _global_statistics_and_gradient(processes: TrainingProcesses) -> None:
    torch.manual_seed(0)  # the same model and batch on both ranks
    model = TinyVideoNet()
    # an offset and scale per channel, so a part's statistics differ clearly from the whole batch's
    x = torch.randn(5, 3, 2, 3, 3) * torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1, 1) + 2.0
    x[:2] += 4.0  # rank 0's part (samples 0-2) is shifted away from rank 1's (samples 3-4)
    y = torch.tensor([0, 1, 2, 0, 1])
    plain = copy.deepcopy(model)
    expected_out = plain.bn(plain.conv(x)).detach()  # the full batch's BatchNorm, as one process computes it
    expected_running = (plain.bn.running_mean.clone(), plain.bn.running_var.clone())
    expected_grads = torch.autograd.grad(mean_loss(plain, x, y), list(plain.parameters()))
    keys = model.state_dict().keys()

    sync = BatchNormSync(processes, enabled=True)
    sync.convert([model])
    assert isinstance(model.bn, SynchronisedBatchNorm) and model.state_dict().keys() == keys
    part = processes.shard(torch.arange(len(x)))  # 3 and 2 samples: unequal parts
    sync.begin_step(len(part), len(x))
    out = model.bn(model.conv(x[part]))
    torch.testing.assert_close(out, expected_out[part], rtol=1e-5, atol=1e-5)
    # the running statistics took the full batch's mean and unbiased variance
    torch.testing.assert_close((model.bn.running_mean, model.bn.running_var), expected_running, rtol=1e-5, atol=1e-6)

    model.zero_grad(set_to_none=True)
    sync.begin_step(len(part), len(x))
    loss = mean_loss(model, x[part], y[part])
    loss.backward()
    params = list(model.parameters())
    processes.reduce_step(params, len(part) / len(x), {"loss": float(loss)}, len(part), ["loss"])
    for param, expected in zip(params, expected_grads):
        torch.testing.assert_close(param.grad, expected, rtol=1e-4, atol=1e-6)

    sync.restore()
    assert type(model.bn) is nn.BatchNorm3d and model.state_dict().keys() == keys
    assert model.bn.weight is params[2]  # the trained tensors themselves, not copies


def _empty_part_and_evaluation(processes: TrainingProcesses) -> None:
    """One sample for two ranks: rank 1 runs nothing, rank 0 normalises alone; in eval mode rank 0 runs alone."""
    torch.manual_seed(1)
    model = TinyVideoNet()
    plain = copy.deepcopy(model)
    sync = BatchNormSync(processes, enabled=True)
    sync.convert([model])
    x = torch.randn(1, 3, 2, 3, 3)
    sync.begin_step(len(processes.shard(x)), len(x))
    if processes.is_main:
        torch.testing.assert_close(model(x), plain(x))  # its own statistics: no collective to wait in
        model.eval()
        plain.eval()
        torch.testing.assert_close(model(x), plain(x))  # the running statistics, no collective either
    dist.barrier()
