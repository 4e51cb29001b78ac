"""pipeline.runtime_choice: the layout and dtype a model runs in are chosen by timing, bf16 only when it agrees with
fp32, and a recorded choice is reused for the same model and machine, re-timed on another."""

from __future__ import annotations

import shutil
import time

import pytest
import torch
from torch import nn

from condi_pipe.compute.clip_inference import ModelRef
from condi_pipe.compute.runtime_choice import (
    BF16,
    CHANNELS_LAST,
    FP32,
    NCDHW,
    Bf16Tolerance,
    RuntimeChoice,
    choose_runtime,
    resolve_runtime,
    typical_batch,
)
from condi_pipe.compute.torch_runtime import RuntimeOptions, autocast
from condi_pipe.models.base import ClipOutput
from condi_pipe.storage.runtime_choices import MACHINE_CACHE_ENV, read_machine_record, record_machine_record
from condi_pipe.storage.store import Store

CPU = torch.device("cpu")
SLOW = 0.25  # seconds a slow path sleeps: far above the tiny models' own time (~1 ms) and a busy machine's stalls


class TinyNet(nn.Module):
    """A 3D conv net small enough to time in milliseconds, that sleeps on the path named by ``slow_on``
    (``"ncdhw"``, ``"channels_last_3d"`` or ``"fp32"``), so which candidate is fastest is known."""

    def __init__(self, slow_on: str | None = None, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, classes)
        self.slow_on = slow_on

    def preprocess(self, clips: torch.Tensor) -> torch.Tensor:
        return clips.permute(0, 4, 1, 2, 3).float() / 255

    def forward(self, x: torch.Tensor) -> ClipOutput:
        channels_last = x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()
        path = {True: CHANNELS_LAST, False: NCDHW}[channels_last]
        if self.slow_on in (path, FP32 if not torch.is_autocast_enabled("cpu") else None):
            time.sleep(SLOW)
        features = self.conv(x).relu().mean(dim=(2, 3, 4))
        return ClipOutput(self.fc(features), None, features)


class NearTie(TinyNet):
    """Class 1 beats class 0 by 0.1% in fp32; bf16 rounds the two weights to the same value, so its argmax is 0:
    bf16 disagrees with fp32 on every clip (and is the fast path, so only the agreement check can refuse it)."""

    def __init__(self) -> None:
        super().__init__(slow_on=FP32, classes=2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0] * 8, [1.001] * 8]))
            self.fc.bias.zero_()


def _clips(n: int = 6) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randint(0, 255, (n, 4, 16, 16, 3), dtype=torch.uint8)


@pytest.mark.parametrize("slow_on, expected", [(CHANNELS_LAST, NCDHW), (NCDHW, CHANNELS_LAST)])
def test_the_layout_that_is_not_slow_is_chosen(slow_on, expected):
    choice = choose_runtime(TinyNet(slow_on), _clips(), CPU, "off", batch=2, repeats=3)
    assert (choice.layout, choice.dtype) == (expected, FP32)
    assert set(choice.seconds) == {f"{NCDHW}/{FP32}", f"{CHANNELS_LAST}/{FP32}"}
    assert choice.seconds[f"{slow_on}/{FP32}"] >= SLOW
    assert choice.repeats == 3 and choice.agreement == {}
    assert choice.runtime(RuntimeOptions(threads=1)) == RuntimeOptions(threads=1, bf16=False,
                                                                       channels_last=expected == CHANNELS_LAST)


def test_auto_takes_bf16_when_it_is_faster_and_agrees():
    choice = choose_runtime(TinyNet(slow_on=FP32), _clips(), CPU, "auto", batch=2, repeats=2)
    assert len(choice.seconds) == 4 and choice.dtype == BF16
    assert choice.seconds[f"{choice.layout}/{BF16}"] == min(choice.seconds.values())
    for name in (f"{NCDHW}/{BF16}", f"{CHANNELS_LAST}/{BF16}"):
        agreement = choice.agreement[name]
        assert agreement.clips == 6 and agreement.within(choice.tolerance), agreement
    assert choice.runtime(RuntimeOptions(bf16="auto")).bf16 is True


def test_bf16_is_refused_when_it_disagrees_with_fp32_beyond_the_tolerance():
    choice = choose_runtime(NearTie(), _clips(), CPU, "auto", batch=2, repeats=2)
    assert choice.dtype == FP32  # although bf16 was faster
    assert min(choice.seconds[f"{layout}/{BF16}"] for layout in (NCDHW, CHANNELS_LAST)) < min(
        choice.seconds[f"{layout}/{FP32}"] for layout in (NCDHW, CHANNELS_LAST))
    agreement = choice.agreement[f"{NCDHW}/{BF16}"]
    assert agreement.top1_agreement < choice.tolerance.min_top1_agreement
    assert "bf16 refused" in choice.describe()
    # --bf16 on is the user's decision: bf16 is used, its disagreement still recorded
    forced = choose_runtime(NearTie(), _clips(), CPU, "on", batch=2, repeats=1)
    assert forced.dtype == BF16 and not forced.agreement[f"{forced.layout}/{BF16}"].within(Bf16Tolerance())
    # a model that really runs in bf16 under the chosen runtime predicts what the calibration saw
    model, batch = NearTie(), NearTie().preprocess(_clips(2))
    with torch.inference_mode(), autocast(forced.runtime(RuntimeOptions()), CPU):
        assert (model(batch).logits.float().argmax(1) == 0).all()
    with torch.inference_mode():
        assert (model(batch).logits.argmax(1) == 1).all()


def test_a_choice_round_trips_through_json():
    choice = choose_runtime(TinyNet(), _clips(2), CPU, "auto", batch=1, repeats=1)
    again = RuntimeChoice.from_json(choice.to_json())
    assert again == choice and again.reused and not choice.reused


def test_typical_batch_is_the_median_video_capped():
    assert typical_batch([1, 7, 8, 9, 100], 64) == 8
    assert typical_batch([100, 200], 64) == 64
    assert typical_batch([], 64) == 1


def test_a_recorded_choice_is_reused_and_another_machine_key_re_times(synth_store, tmp_path, monkeypatch):
    monkeypatch.setenv(MACHINE_CACHE_ENV, "off")  # the store's own record only
    store_dir = tmp_path / "store"
    shutil.copytree(synth_store, store_dir)
    store = Store(str(store_dir))
    ref = ModelRef("shufflenetv2_3d", 10, width=0.25)
    logs: list[str] = []
    quick = dict(batch=2, calibration=2, repeats=1, log=logs.append)
    runtime, first = resolve_runtime(store, ref, RuntimeOptions(threads=2), **quick)
    assert not first.reused and first.machine.threads == 2 and first.machine.torch_version == torch.__version__
    assert runtime.channels_last == (first.layout == CHANNELS_LAST) and runtime.bf16 is False
    records = sorted((store_dir / "runtime").glob("*.json"))
    assert len(records) == 1
    _, again = resolve_runtime(store, ref, RuntimeOptions(threads=2), **quick)
    assert again.reused and again == first  # the recorded timings, not new ones
    assert "recorded" in logs[-1] and "timed" in logs[0]
    # another thread count is another machine as far as timings go: timed again and recorded beside the first
    _, other = resolve_runtime(store, ref, RuntimeOptions(threads=1), **quick)
    assert not other.reused and other.machine.threads == 1
    assert len(list((store_dir / "runtime").glob("*.json"))) == 2
    # a choice pinned by an interrupted stage run wins over the record, even from another machine
    foreign = {**first.to_json(), "layout": NCDHW if first.layout == CHANNELS_LAST else CHANNELS_LAST,
               "machine": {**first.to_json()["machine"], "device_name": "another CPU"}}
    runtime, pinned = resolve_runtime(store, ref, RuntimeOptions(threads=2), pinned=foreign, **quick)
    assert pinned.layout == foreign["layout"] and runtime.channels_last == (foreign["layout"] == CHANNELS_LAST)
    assert "interrupted run" in logs[-1]
    torch.set_num_threads(2)


def test_a_choice_timed_for_one_store_holds_for_every_store_on_the_machine(synth_store, tmp_path, monkeypatch):
    """Two stores made on one machine compute a model in one runtime (the layouts' outputs differ in the last
    bits), whatever a second timing would say; with the machine's cache off, each store times its own."""
    monkeypatch.setenv(MACHINE_CACHE_ENV, str(tmp_path / "machine"))
    stores = []
    for name in ("a", "b", "c"):
        shutil.copytree(synth_store, tmp_path / name)
        stores.append(Store(str(tmp_path / name)))
    quick = dict(batch=2, calibration=2, repeats=1, log=lambda message: None)
    # another store's teacher: the same architecture under other weights is the same choice (fp32 and bf16 off)
    _, first = resolve_runtime(stores[0], ModelRef("shufflenetv2_3d", 10, width=0.25), RuntimeOptions(threads=2),
                               **quick)
    assert not first.reused and len(list((tmp_path / "machine").glob("*.json"))) == 1
    _, second = resolve_runtime(stores[1], ModelRef("shufflenetv2_3d", 10, width=0.25, weights_sha256="0" * 64),
                                RuntimeOptions(threads=2), **quick)
    assert second.reused and second == first
    assert len(list((tmp_path / "b" / "runtime").glob("*.json"))) == 1  # and the store records it too
    monkeypatch.setenv(MACHINE_CACHE_ENV, "off")
    _, third = resolve_runtime(stores[2], ModelRef("shufflenetv2_3d", 10, width=0.25), RuntimeOptions(threads=2),
                               **quick)
    assert not third.reused
    torch.set_num_threads(2)


@pytest.mark.parametrize("layout", [NCDHW, CHANNELS_LAST])
def test_a_pinned_layout_with_a_pinned_dtype_times_nothing(layout, synth_store, tmp_path, monkeypatch):
    monkeypatch.setenv(MACHINE_CACHE_ENV, str(tmp_path / "machine"))
    logs: list[str] = []
    store = Store(str(synth_store))  # read only: nothing is recorded for a choice nobody made
    runtime, choice = resolve_runtime(store, ModelRef("no_such_model", 10), RuntimeOptions(layout=layout, bf16=True),
                                      batch=4, log=logs.append)
    assert (choice.layout, choice.dtype, choice.seconds, choice.repeats) == (layout, BF16, {}, 0)
    assert runtime.channels_last == (layout == CHANNELS_LAST) and runtime.bf16 is True
    assert "pinned" in choice.describe() and not (tmp_path / "machine").exists() and logs == []
    assert RuntimeOptions(layout="channels-last").layout == CHANNELS_LAST
    with pytest.raises(ValueError, match="layout must be one of"):
        RuntimeOptions(layout="nchw")


def test_a_pinned_layout_under_bf16_auto_times_only_its_dtypes():
    choice = choose_runtime(TinyNet(slow_on=FP32), _clips(), CPU, "auto", batch=2, repeats=1, layout=NCDHW)
    assert sorted(choice.seconds) == [f"{NCDHW}/{BF16}", f"{NCDHW}/{FP32}"] and choice.layout == NCDHW


def test_the_first_choice_recorded_on_the_machine_wins(tmp_path, monkeypatch):
    """Processes that timed at once agree on the first writer's choice; a damaged record is replaced."""
    monkeypatch.setenv(MACHINE_CACHE_ENV, str(tmp_path))
    identity = {"model": {"name": "m"}, "batch": 2}
    assert record_machine_record(identity, {"layout": NCDHW}) == ({"layout": NCDHW}, None)
    assert record_machine_record(identity, {"layout": CHANNELS_LAST}) == ({"layout": NCDHW}, None)
    assert read_machine_record(identity) == {"layout": NCDHW}
    assert read_machine_record({**identity, "batch": 3}) is None
    (record,) = tmp_path.glob("*.json")
    record.write_text("{not json")
    assert read_machine_record(identity) is None
    assert record_machine_record(identity, {"layout": CHANNELS_LAST}) == ({"layout": CHANNELS_LAST}, None)
    assert read_machine_record(identity) == {"layout": CHANNELS_LAST}
    assert [p.name for p in tmp_path.iterdir()] == [record.name]  # no temporary file left behind


def test_a_models_flop_table_is_counted_once_per_machine_and_architecture(tmp_path, monkeypatch):
    """Counting imports torch._dynamo (1.7 s a process): a second count of the same architecture reads the
    machine's record, another class count or SGS placement counts again, a damaged record is counted again."""
    import condi_pipe.compute.clip_inference as clip_inference
    from condi_pipe.compute.clip_inference import model_flop_table

    monkeypatch.setenv(MACHINE_CACHE_ENV, str(tmp_path))
    counted = []
    real = clip_inference.flop_table
    monkeypatch.setattr(clip_inference, "flop_table", lambda model, shape: counted.append(shape) or real(model, shape))
    plain = ModelRef("resnet10_3d_motion_tiny", 10)
    first = model_flop_table(plain)
    assert first == real(plain.build(device="meta")) and len(counted) == 1
    assert model_flop_table(ModelRef("resnet10_3d_motion_tiny", 10, weights_path="elsewhere.pt")) == first
    assert len(counted) == 1  # the weights do not matter: read back
    wider_head = model_flop_table(ModelRef("resnet10_3d_motion_tiny", 400))
    with_sgs = model_flop_table(ModelRef("resnet10_3d_motion_tiny", 10, sgs_stage="res3"))
    assert len(counted) == 3 and wider_head.fixed > first.fixed and with_sgs.after_sgs
    assert model_flop_table(ModelRef("resnet10_3d_motion_tiny", 10, sgs_stage="res3")) == with_sgs and len(counted) == 3
    for record in tmp_path.glob("*.json"):
        record.write_text('{"identity": 1}')
    assert model_flop_table(plain) == first and len(counted) == 4
    monkeypatch.setenv(MACHINE_CACHE_ENV, "off")
    assert model_flop_table(plain) == first and len(counted) == 5
