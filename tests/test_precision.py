"""Mixed precision of SounDiff fine-tuning: which one "auto" picks (device answers mocked), fp16 with a gradient
scaler on the CPU: a step skipped for non-finite gradients leaves the LR schedule where it was and says so, and a
resumed fp16 run equals an uninterrupted one (the scaler's state is in the checkpoint)."""

from __future__ import annotations

import pytest
import torch
from test_soundiff import TINY, tiny_data, tiny_pipe

from a2i_utils import devices
from a2i_utils.config import get_config
from a2i_utils.soundiff import training
from a2i_utils.soundiff.training import finetune, load_finetuned, mixed_precision, variant_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _gpu(monkeypatch, native: bool) -> None:
    """Mock a CUDA GPU: bf16 "supported" with emulation everywhere, natively only when ``native`` (a T4: not)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)


@pytest.mark.parametrize(("native", "want"), [(False, "fp16"), (True, "bf16")])
def test_auto_is_bf16_only_where_the_gpu_has_it_natively(monkeypatch, native, want):
    _gpu(monkeypatch, native)
    cfg = get_config("demo")
    assert cfg.soundiff.mixed_precision == "auto"
    assert devices.native_bf16() is native
    assert mixed_precision(cfg, "cuda") == want  # a T4 (bf16 only emulated) trains in fp16
    assert mixed_precision(cfg, "cpu") == "no"
    assert mixed_precision(get_config("demo", {"soundiff.mixed_precision": "bf16"}), "cuda") == "bf16"  # as asked
    with pytest.raises(ValueError, match="mixed_precision"):
        mixed_precision(get_config("demo", {"soundiff.mixed_precision": "half"}), "cuda")


# ----------------------------------------------------------------------------------------------------------
# fp16 with a gradient scaler, on the CPU
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture
def fp16_on_cpu(monkeypatch):
    """Fine-tuning's accelerator in fp16 with a real ``GradScaler`` on the CPU (as accelerate sets up on a GPU).

    The first scale (2^40) overflows fp16 gradients, so step 1 is skipped; the scale then drops to 2^10 and
    doubles every 2 finite steps, so a resumed run that started its scaler afresh would take other steps."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    def make(cfg, device):
        AcceleratorState._reset_state(reset_partial_state=True)  # the state is per process: fp16 here only
        acc = Accelerator(mixed_precision="fp16", cpu=True)  # on the CPU accelerate gives no scaler: add one
        acc.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40, backoff_factor=2.0**-30, growth_interval=2)
        acc.native_amp = True  # fp16 autocast of the forward, scaled backward, unscale before clipping
        return acc

    monkeypatch.setattr(training, "make_accelerator", make)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _cfg(tmp_path):
    return get_config("demo", TINY | {"cache_dir": tmp_path})


def test_fp16_step_skipped_for_inf_gradients_skips_the_lr_schedule_too(tmp_path, fp16_on_cpu, capsys):
    cfg = _cfg(tmp_path)
    sc = cfg.soundiff
    history = finetune(cfg, tiny_pipe(), tiny_data(), variant_of(cfg, "L", steps=4), tmp_path / "run",
                       progress=False)
    assert history["skipped"] == [0]  # the loss log says which steps were skipped
    assert "step 1: gradients not finite in fp16: optimiser and LR schedule steps skipped" in capsys.readouterr().out
    lrs = [training.linear_lr(k, 4, sc.lr, sc.lr_end) for k in range(3)]
    assert history["lr"] == pytest.approx([lrs[0], lrs[0], lrs[1], lrs[2]])  # the schedule waits for an update
    assert all(torch.isfinite(torch.tensor(history["loss"])))


def test_resumed_fp16_run_equals_an_uninterrupted_one(tmp_path, fp16_on_cpu):
    pipe, data, cfg = tiny_pipe(), tiny_data(), _cfg(tmp_path)
    variant = variant_of(cfg, "L", steps=6)
    whole = finetune(cfg, pipe, data, variant, tmp_path / "whole", progress=False)
    finetune(cfg, pipe, data, variant, tmp_path / "cut", progress=False, stop_after=3)
    rest = finetune(cfg, pipe, data, variant, tmp_path / "cut", resume="latest", progress=False)
    assert whole["skipped"] == rest["skipped"] == [0]
    assert rest["loss"] == whole["loss"] and rest["lr"] == whole["lr"]  # bit for bit
    a = load_finetuned(pipe, tmp_path / "whole").unet.state_dict()
    b = load_finetuned(pipe, tmp_path / "cut").unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_backward_runs_outside_autocast(tmp_path, monkeypatch):
    """As accelerate's examples: the forward under autocast, the backward after it."""
    from accelerate import Accelerator

    inside = []

    class Recording(Accelerator):
        def autocast(self, *a, **k):
            import contextlib

            @contextlib.contextmanager
            def block():
                inside.append(True)
                try:
                    with super(Recording, self).autocast(*a, **k):
                        yield
                finally:
                    inside.pop()

            return block()

        def backward(self, loss, **kwargs):
            assert not inside, "backward inside the autocast block"
            return super().backward(loss, **kwargs)

    monkeypatch.setattr(training, "make_accelerator", lambda cfg, device: Recording(cpu=True))
    cfg = _cfg(tmp_path)
    history = finetune(cfg, tiny_pipe(), tiny_data(), variant_of(cfg, "L", steps=2), tmp_path / "run", progress=False)
    assert len(history["loss"]) == 2


def test_no_mixed_precision_with_a_bf16_lora_and_its_float32_class_embedding_is_refused():
    """LoRA trains the class embedding whole, in float32; beside a bf16 base with no autocast one matmul would mix
    dtypes on the GPU. The config is refused up front, naming the two ways out."""
    cfg = get_config("demo", {"soundiff.mixed_precision": "no", "soundiff.lora": True, "soundiff.dtype": "bfloat16"})
    with pytest.raises(ValueError, match="lora_class_embedding=False"):
        mixed_precision(cfg, "cuda")
    assert mixed_precision(get_config("demo", {"soundiff.mixed_precision": "no", "soundiff.lora": True,
                                               "soundiff.dtype": "bfloat16", "soundiff.lora_class_embedding": False}),
                           "cuda") == "no"


def test_a_second_run_with_another_precision_in_the_same_process():
    """accelerate's process-wide state refused a bf16 run after a float32 one ("AcceleratorState has already been
    initialized"): in a notebook re-run with other settings, or a test session. make_accelerator starts afresh."""
    from accelerate import Accelerator

    Accelerator(mixed_precision="no", cpu=True)
    acc = training.make_accelerator(get_config("demo", {"soundiff.mixed_precision": "bf16"}), "cpu")
    assert acc.mixed_precision == "bf16"
    acc = training.make_accelerator(get_config("demo"), "cpu")
    assert acc.mixed_precision == "no"
