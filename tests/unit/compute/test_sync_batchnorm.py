"""Synchronised BatchNorm (``compute.sync_batchnorm``) over a real 2-process gloo group: the global batch's
statistics and gradient from unequal parts, plain BatchNorm state dicts, and no collective where a rank runs alone."""

from __future__ import annotations

import importlib
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from condi_pipe.compute.distributed import SINGLE_PROCESS
from condi_pipe.compute.sync_batchnorm import synchronised_batchnorm

HERE = Path(__file__).parent


@pytest.fixture
def ranks(monkeypatch):
    """``sync_batchnorm_ranks.py``, importable by the spawned processes (its folder on ``sys.path``)."""
    monkeypatch.syspath_prepend(str(HERE))
    return importlib.import_module("sync_batchnorm_ranks")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ranks_normalise_and_differentiate_as_one_process_on_the_whole_batch(ranks):
    """Parts of 3 and 2 samples: each rank's output is its slice of the full-batch BatchNorm output, the running
    statistics are the full batch's, the part-weighted gradient sum is the full batch's (the convolution before the
    layer included), and the layers are plain ``BatchNorm3d`` again afterwards, with the same state dict keys."""
    mp.spawn(ranks.check_rank, args=(_free_port(),), nprocs=ranks.WORLD, join=True)


def test_one_process_converts_nothing():
    model = nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4))
    with synchronised_batchnorm(SINGLE_PROCESS, True) as sync:
        sync.convert([model])
        assert type(model[1]) is nn.BatchNorm3d and not sync.layers
        sync.begin_step(1, 1)
        assert model(torch.randn(2, 3, 1, 2, 2)).shape == (2, 4, 1, 2, 2)


def test_the_stage_configuration_records_the_option_only_when_it_is_on():
    """On, it is part of the stage's configuration (a run with it is not taken for one without); off, the
    configuration is the one recorded before the option existed, so finished runs are not redone."""
    from dataclasses import replace

    from condi_pipe.pipeline.stage import _config_changes
    from condi_pipe.stages.distill_request import DistillRequest
    from condi_pipe.stages.teacher_train import TeacherTrainRequest

    for request in (DistillRequest("condi-sr", "shufflenetv2_3d", "resnet10_3d_small", 0.25),
                    TeacherTrainRequest("resnet10_3d_small")):
        off, on = request.config(), replace(request, train=replace(request.train, sync_batchnorm=True)).config()
        assert "sync_batchnorm" not in off["train"] and on["train"]["sync_batchnorm"] is True
        assert _config_changes(off, on) == ["train.sync_batchnorm"]
