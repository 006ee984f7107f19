"""Memory-lean loading of the full-mode ImageBind (meta device, memory-mapped file, assign) and freeing a model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import weakref

import pytest
import torch
from torch import nn

from a2i_utils.config import get_config
from a2i_utils.imagebind.huge import (
    build_empty,
    convert_state_dict,
    huge_checkpoint_path,
    load_imagebind_huge,
    load_verified_weights,
)
from a2i_utils.imagebind.mini import build_mini
from a2i_utils.memory import StillReferencedError, free, is_referenced, tensor_bytes

SMALL = {"imagebind.embed_dim": 32, "imagebind.mini_dim": 32, "imagebind.mini_blocks": 1, "imagebind.mini_heads": 2}


def _cfg(tmp_path):
    return get_config("demo", {"cache_dir": tmp_path / "cache", "device": "cpu", **SMALL})


def _write_checkpoint(cfg, seed: int = 0) -> nn.Module:
    """A small ImageBindModel saved where full mode expects imagebind_huge.pth; returns the reference model."""
    torch.manual_seed(seed)
    model = build_mini(cfg)
    path = huge_checkpoint_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def _mapped_ranges(path) -> list[tuple[int, int]]:
    """Address ranges of this process that map ``path`` (Linux /proc/self/maps)."""
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith(str(path)):
                lo, hi = line.split()[0].split("-")
                ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


def test_model_is_built_on_the_meta_device(tmp_path):
    """The builder runs with parameters on the meta device: no random init, no second set of weights."""
    cfg = _cfg(tmp_path)
    _write_checkpoint(cfg)
    seen = []

    def builder():
        model = build_mini(cfg)
        seen.append({p.device.type for p in model.parameters()})
        return model

    emb = load_imagebind_huge(cfg, progress=False, download=False, builder=builder)
    assert seen == [{"meta"}]
    assert {p.device.type for p in emb.model.parameters()} == {"cpu"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_cpu_weights_are_the_mapped_file_not_a_copy(tmp_path):
    """On the CPU in float32 every parameter lives in the memory-mapped checkpoint: nothing was copied."""
    cfg = _cfg(tmp_path)
    ref = _write_checkpoint(cfg)
    emb = load_imagebind_huge(cfg, progress=False, download=False, builder=lambda: build_mini(cfg))
    ranges = _mapped_ranges(huge_checkpoint_path(cfg))
    assert ranges, "the checkpoint is not memory-mapped"
    params = dict(emb.model.named_parameters())
    outside = [n for n, p in params.items() if not any(lo <= p.data_ptr() < hi for lo, hi in ranges)]
    assert outside == []
    for k, v in ref.state_dict().items():  # and they are the file's values
        torch.testing.assert_close(emb.model.state_dict()[k], v, rtol=0, atol=0)
    x = torch.randn(2, 3, 1, 128, 204)
    assert emb.embed("audio", x).shape == (2, 32)


def test_target_dtype_is_applied_while_loading(tmp_path):
    cfg = _cfg(tmp_path)
    ref = _write_checkpoint(cfg)
    model = build_empty(lambda: build_mini(cfg))
    stamp = load_verified_weights(model, huge_checkpoint_path(cfg), device="cpu", dtype=torch.bfloat16)
    assert stamp["tensors"] == len(ref.state_dict())
    floats = {t.dtype for t in model.state_dict().values() if t.is_floating_point()}
    assert floats == {torch.bfloat16}
    w = "modality_heads.audio.2.weight"
    torch.testing.assert_close(model.state_dict()[w], ref.state_dict()[w].bfloat16(), rtol=0, atol=0)


def test_without_a_dtype_the_models_dtypes_are_kept(tmp_path):
    """A half-precision file loaded into a float32 model gives float32 weights, as a copying load would."""
    cfg = _cfg(tmp_path)
    ref = _write_checkpoint(cfg)
    path = huge_checkpoint_path(cfg)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in ref.state_dict().items()}, path)
    model = build_empty(lambda: build_mini(cfg))
    load_verified_weights(model, path)
    assert {t.dtype for t in model.state_dict().values() if t.is_floating_point()} == {torch.float32}


def test_convert_state_dict_holds_one_tensor_twice_at_most():
    sd = {"a": torch.ones(3), "b": torch.arange(4), "c": torch.zeros(2, dtype=torch.float64)}
    same = sd["a"]
    out = convert_state_dict(sd, "cpu", torch.float16)
    assert sd == {}  # emptied as it went
    assert out["a"].dtype == out["c"].dtype == torch.float16 and out["b"].dtype == torch.int64  # ints kept
    kept = convert_state_dict({"a": same}, "cpu", torch.float32)
    assert kept["a"] is same  # nothing to convert: the very tensor (a mapped one stays mapped)


PEAK_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from torch import nn
    from a2i_utils.config import get_config
    from a2i_utils.imagebind.huge import huge_checkpoint_path, load_imagebind_huge
    from a2i_utils.memory import peak_rss_bytes, reset_peak_rss, rss_bytes

    torch.set_num_threads(1)
    cfg = get_config("demo", {"cache_dir": sys.argv[1], "device": "cpu"})
    build = lambda: nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(48)])  # 201 MB of float32
    path = huge_checkpoint_path(cfg)
    path.parent.mkdir(parents=True)
    torch.save(build().state_dict(), path)
    import gc; gc.collect()
    before = rss_bytes()
    assert reset_peak_rss()
    emb = load_imagebind_huge(cfg, progress=False, download=False, builder=build)
    total = sum(float(p.sum()) for p in emb.model.parameters())  # touch every weight
    print(json.dumps({"file": path.stat().st_size, "extra": peak_rss_bytes() - before, "sum": total}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS reset through /proc/self/clear_refs")
def test_peak_memory_of_loading_is_about_one_checkpoint(tmp_path):
    """Loading (and touching every weight) adds at most 1.3x the file to the peak; the old way added ~2x."""
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / "cache")], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["extra"] <= 1.3 * r["file"], f"peak grew by {r['extra'] / r['file']:.2f}x the checkpoint"


# ----------------------------------------------------------------------------------------------------------
# Freeing a large model: one large model at a time
# ----------------------------------------------------------------------------------------------------------
def test_free_deletes_the_model_and_proves_it_gone():
    model = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 4))
    ref = weakref.ref(model)
    namespace = {"model": model, "other": 1}
    del model
    freed = free(namespace, "model")
    assert freed == (256 * 256 + 256 + 4 * 256 + 4) * 4
    assert "model" not in namespace and namespace["other"] == 1
    assert not is_referenced(ref)


def test_free_refuses_when_something_still_holds_the_model():
    """A forgotten reference (IPython's output history, a list) is named, not silently kept in memory."""
    model = nn.Linear(64, 64)
    namespace = {"model": model, "Out": {3: model}}
    del model
    with pytest.raises(StillReferencedError, match=r"model \(Linear\) is still referenced by: a dict under key 3"):
        free(namespace, "model")
    assert "model" not in namespace  # the name itself is gone; the message says what else to delete
    namespace["Out"].clear()


def test_free_of_an_embedder_checks_its_model_too(tmp_path):
    """An Embedder freed while its ``model`` is still held elsewhere does not count as freed."""
    cfg = _cfg(tmp_path)
    _write_checkpoint(cfg)

    class Stage:  # an object holding the model as an attribute, as a notebook stage would
        pass

    stage = Stage()
    stage.embedder = load_imagebind_huge(cfg, progress=False, download=False, builder=lambda: build_mini(cfg))
    size = tensor_bytes(stage.embedder)
    assert size > 0
    keep = [stage.embedder.model]
    with pytest.raises(StillReferencedError, match=r"embedder \(ImageBindModel\) is still referenced by: a list"):
        free(stage, "embedder")
    assert not hasattr(stage, "embedder")
    stage.embedder = load_imagebind_huge(cfg, progress=False, download=False, builder=lambda: build_mini(cfg))
    keep.clear()
    ref = weakref.ref(stage.embedder.model)
    assert free(stage, "embedder") == size
    assert not is_referenced(ref)
