"""The streamed latent pass of fine-tuning (soundiff/latents.py): bounded memory, only the kept views, cached on disk.

bench/bench_latents.py shows the same at 768 px with the real SD 2.1 VAE architecture; here a tiny VAE keeps it fast.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from a2i_utils.config import get_config
from a2i_utils.soundiff import training
from a2i_utils.soundiff.latents import (
    LatentCache,
    cache_latents,
    dihedral_views,
    encode_latent_dist,
    image_tensor,
    vae_identity,
)
from a2i_utils.soundiff.mini import build_vae

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

SIZE = 128  # px: big enough that the images, not the bookkeeping, dominate what a pass holds


def write_images(folder: Path, n: int, size: int = SIZE) -> list[Path]:
    """``n`` distinct random RGB PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def tiny_vae(size: int = SIZE):
    sc = get_config("demo", {"soundiff.image_size": size, "soundiff.mini_vae_channels": (8, 8)}).soundiff
    torch.manual_seed(0)
    return build_vae(sc).eval().requires_grad_(False)


class CountingVAE(torch.nn.Module):
    """A VAE that records the batch of every ``encode`` call (and its input dtype)."""

    def __init__(self, vae):
        super().__init__()
        self.vae, self.calls = vae, []
        self.config = vae.config

    @property
    def device(self):
        return self.vae.device

    @property
    def dtype(self):
        return self.vae.dtype

    def encode(self, x):
        self.calls.append((x.shape[0], x.dtype))
        return self.vae.encode(x)


def _prepare(tmp_path: Path, vae, paths: list[Path], views: int = 1, batch: int = 2):
    """prepare_training_data (the data path of fine-tuning), with the audio embeddings stubbed."""
    cfg = get_config("demo", {"cache_dir": tmp_path / "cache", "soundiff.image_size": SIZE, "soundiff.views": views,
                              "soundiff.latent_batch": batch})
    pairs = [SimpleNamespace(id=p.stem, image_path=p, audio_path=p) for p in paths]
    pipe = SimpleNamespace(vae=vae)
    return training.prepare_training_data(cfg, pipe, pairs, None, progress=False)


@pytest.fixture
def no_audio(monkeypatch):
    from a2i_utils.imagebind import cache

    monkeypatch.setattr(cache, "embed_files", lambda emb, paths, *a, **k: torch.zeros(len(paths), 4))


def _peak_traced(fn) -> int:
    """Peak bytes that Python and numpy allocate while ``fn`` runs (torch's own allocations are not traced)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_latent_pass_memory_does_not_grow_with_the_pairs(tmp_path, no_audio):
    """8x the pairs, about the same peak: the old pass stacked every image (uint8, then float) at once."""
    vae = tiny_vae()
    few, many = write_images(tmp_path / "few", 2), write_images(tmp_path / "many", 16)
    _prepare(tmp_path / "warm", vae, write_images(tmp_path / "warm-img", 2))  # imports and first-call caches
    peak_few = _peak_traced(lambda: _prepare(tmp_path / "a", vae, few))
    peak_many = _peak_traced(lambda: _prepare(tmp_path / "b", vae, many))
    image_bytes = SIZE * SIZE * 3
    assert peak_many <= 1.2 * peak_few, (peak_few, peak_many)
    assert peak_many - peak_few < 4 * image_bytes, (peak_few, peak_many)  # the old pass held 2 x 14 images more


def test_only_the_kept_views_are_built_and_encoded_a_batch_at_a_time(tmp_path, no_audio):
    vae = CountingVAE(tiny_vae())
    data = _prepare(tmp_path, vae, write_images(tmp_path / "img", 5), views=1, batch=2)
    assert [b for b, _ in vae.calls] == [2, 2, 1]  # one view, batches of 2: never all 5 images at once
    assert dihedral_views(torch.zeros(3, 3, 4, 4), 1).shape == (1, 3, 3, 4, 4)
    assert len(data.latents) == 5 and data.latents.views == 1
    vae.calls.clear()
    _prepare(tmp_path, vae, write_images(tmp_path / "img2", 3, size=SIZE), views=2, batch=4)
    assert [b for b, _ in vae.calls] == [3, 3]  # two views of one batch


def test_dihedral_views_keep_their_order_and_build_only_what_is_asked():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    old = torch.stack([torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)])
    assert torch.equal(dihedral_views(x), old)  # the miniature's pretraining sees the same 8 views
    for v in (1, 3, 8):
        assert torch.equal(dihedral_views(x, v), old[:v])
    with pytest.raises(ValueError, match="views"):
        dihedral_views(x, 9)


def test_cached_latents_equal_a_direct_encoding_and_a_second_run_reads_them(tmp_path, no_audio):
    vae = CountingVAE(tiny_vae())
    paths = write_images(tmp_path / "img", 4)
    data = _prepare(tmp_path, vae, paths, views=2, batch=3)
    views = dihedral_views(image_tensor(paths, SIZE), 2)  # (2, 4, 3, H, W): the old way, all at once
    for v in range(2):
        mean, std = encode_latent_dist(vae.vae, views[v])
        got_mean, got_std = data.latents.read(torch.arange(4), torch.full((4,), v))
        assert torch.allclose(got_mean, mean, rtol=2e-3, atol=2e-3)  # float16 on disk
        assert torch.allclose(got_std, std, rtol=2e-3, atol=1e-4)
    vae.calls.clear()
    again = _prepare(tmp_path, vae, paths, views=2, batch=3)
    assert vae.calls == [] and again.latents.paths == data.latents.paths  # all read back, none encoded
    data.latents.paths[1].unlink()  # as a run killed before that entry
    (data.latents.paths[2]).write_bytes(b"garbage")  # a damaged entry counts as missing
    _prepare(tmp_path, vae, paths, views=2, batch=3)
    assert [b for b, _ in vae.calls] == [2, 2]  # only those two, in one batch of two views


def test_the_vae_gets_its_own_dtype_and_its_weights_key_the_cache(tmp_path, no_audio):
    vae = CountingVAE(tiny_vae().to(torch.bfloat16))
    data = _prepare(tmp_path, vae, write_images(tmp_path / "img", 2))
    assert {d for _, d in vae.calls} == {torch.bfloat16}  # uint8 -> float -> the VAE's dtype
    mean, _ = data.latents.read(torch.tensor([0, 1]), torch.tensor([0, 0]))
    assert mean.dtype == torch.float32 and torch.isfinite(mean).all()
    fp32 = tiny_vae()
    assert vae_identity(fp32) != vae_identity(vae.vae)  # bf16 latents are not fp32 ones
    assert vae_identity(fp32) == vae_identity(tiny_vae())
    cache = LatentCache(tmp_path, vae_identity(fp32), SIZE, 1)
    assert cache.root != LatentCache(tmp_path, vae_identity(fp32), SIZE, 8).root


def test_an_unreadable_image_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        cache_latents(tiny_vae(), [bad], SIZE, 1, tmp_path / "cache", progress=False)
