"""The full-smoke preset: every full-mode path at full size with random weights, nothing downloaded.

On this CPU the full-size models cannot run in a test, so the notebook-shaped sequence runs at reduced size
(a small ``ImageBindModel`` in place of ``imagebind_huge``) and the full-size pipeline is built on the meta device.
"""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

from a2i_utils.config import get_config
from a2i_utils.data import prepare_dataset
from a2i_utils.imagebind.cache import EmbeddingCache, EmbedStats, embed_files, file_hash, run_key
from a2i_utils.imagebind.embedder import load_imagebind, random_imagebind_huge
from a2i_utils.imagebind.mini import build_mini
from a2i_utils.memory import free
from a2i_utils.soundiff.pipeline import count_params_m, full_size_modules

SMALL_IB = {"imagebind.embed_dim": 32, "imagebind.mini_dim": 32, "imagebind.mini_blocks": 1,
            "imagebind.mini_heads": 2}


def test_full_smoke_is_full_size_with_nothing_to_download():
    full, smoke = get_config("full"), get_config("full-smoke")
    for section in ("transformer", "features"):
        keep = {"steps", "overfit_steps", "overfit_pairs"}
        a, b = getattr(full, section).__dict__, getattr(smoke, section).__dict__
        assert {k: v for k, v in a.items() if k not in keep} == {k: v for k, v in b.items() if k not in keep}
    assert (smoke.soundiff.image_size, smoke.soundiff.dtype) == (full.soundiff.image_size, full.soundiff.dtype)
    assert smoke.data.source == "synthetic" and smoke.data.image_size == full.data.image_size
    assert smoke.imagebind.model == "huge-random" and smoke.soundiff.model == "dry-run"
    assert smoke.transformer.steps <= 10 and smoke.soundiff.steps <= 10 and smoke.soundiff.sample_steps <= 5


def test_unknown_imagebind_model_names_the_choices():
    cfg = get_config("demo", {"imagebind.model": "giant"})
    with pytest.raises(ValueError, match="huge, mini, huge-random"):
        load_imagebind(cfg)


def test_notebook_sequence_caches_embeddings_then_frees_imagebind_before_the_pipeline(tmp_path):
    cfg = get_config("full-smoke", {"cache_dir": tmp_path / "cache", "device": "cpu", "data.per_class": 2,
                                    "data.image_size": 32, **SMALL_IB})
    ds = prepare_dataset(cfg, progress=False)  # the synthetic data, as full-smoke uses
    paths = [p.audio_path for p in ds.val]

    # notebook 04: embeddings with the (here: small) randomly initialised ImageBind, into the cache
    small = get_config("demo", SMALL_IB)
    embedder = random_imagebind_huge(cfg, builder=lambda: build_mini(small))
    assert embedder.identity == f"imagebind_huge-random-seed{cfg.seed}"
    emb = embed_files(embedder, paths, "audio", cfg, progress=False)  # (N, 32)
    identity, run = embedder.identity, run_key(embedder)
    model_ref = weakref.ref(embedder.model)

    # ... then ImageBind is freed before the pipeline loads, and proven unreferenced
    namespace = {"embedder": embedder}
    del embedder
    assert free(namespace, "embedder") > 0
    assert model_ref() is None

    # notebook 05: the full-size pipeline's networks (meta device: no memory), with ImageBind gone
    mods = full_size_modules("meta")
    assert count_params_m(mods["unet"]) == 870.2 and count_params_m(mods["vae"]) == 83.7
    assert model_ref() is None

    # a later cell that needs an embedding finds it in the cache, without ImageBind
    cache = EmbeddingCache(cfg.embeddings_dir, identity, run)
    again = torch.stack([cache.get("audio", file_hash(p)) for p in paths])
    torch.testing.assert_close(again, emb)

    # and a reload of the same random model finds every embedding there (nothing computed again)
    stats = EmbedStats()
    embed_files(random_imagebind_huge(cfg, builder=lambda: build_mini(small)), paths, "audio", cfg,
                progress=False, stats=stats)
    assert stats.computed == 0 and stats.hits + stats.duplicates == len(paths)


def test_env_overrides_apply_on_top_of_the_preset_and_name_the_variable(monkeypatch):
    monkeypatch.setenv("A2I_OVERRIDES", '{"soundiff.image_size": 64, "soundiff.mini_unet_channels": [8, 16]}')
    cfg = get_config("full-smoke")
    assert cfg.soundiff.image_size == 64 and cfg.soundiff.mini_unet_channels == (8, 16)
    assert get_config("full-smoke", {"soundiff.image_size": 32}).soundiff.image_size == 32  # explicit beats env
    monkeypatch.setenv("A2I_OVERRIDES", "image_size=64")
    with pytest.raises(ValueError, match="A2I_OVERRIDES"):
        get_config("full-smoke")


def test_full_smoke_has_the_pairs_notebook_01_corrupts():
    """Notebook 01 damages copies of 5 pairs of one scene and expects 1 usable: 4 per class left it none."""
    assert get_config("full-smoke").data.per_class >= 5


def test_full_smoke_split_has_validation_and_test_places_in_every_class():
    """At 5 pairs per class one scene had 2 places (seed 42), so notebook 01 found no test pair for it."""
    from collections import defaultdict

    from a2i_utils.data.dataset import _split_counts
    from a2i_utils.data.synth import plan_tree

    cfg = get_config("full-smoke")
    places = defaultdict(set)
    for item in plan_tree(cfg.data.per_class, cfg.seed):
        places[item["label"]].add(item["base_id"])
    for label, ids in places.items():
        n_val, n_test = _split_counts(len(ids), cfg.data.val_fraction, cfg.data.test_fraction)
        assert n_val >= 1 and n_test >= 1, (label, len(ids))


def test_dry_run_pipeline_draws_at_the_configured_size_and_never_builds_the_image_encoder(monkeypatch):
    """The full-smoke pipeline generated at its native 768 px whatever soundiff.image_size said (hours on a CPU),
    and built the 632 M-parameter CLIP image encoder only to drop it."""
    from a2i_utils.soundiff import mini, pipeline

    asked = []

    def small_modules(device, dtype, names=pipeline.FULL_SIZE_MODULES):  # the same classes, tiny
        asked.extend(names)
        sc = get_config("demo").soundiff
        built = {"unet": lambda: mini.build_unet(sc, 1024, 8), "vae": lambda: mini.build_vae(sc),
                 "text_encoder": lambda: mini.tiny_text_encoder(260, sc.mini_text_dim)}
        return {n: built[n]().to(dtype) for n in names}

    monkeypatch.setattr(pipeline, "full_size_modules", small_modules)
    cfg = get_config("full-smoke", {"device": "cpu", "soundiff.image_size": 64})
    pipe = pipeline.load_pipeline(cfg)
    assert "image_encoder" not in asked
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 64
    assert pipe.unet.dtype == torch.bfloat16  # the preset's dtype, as on a GPU


# Full mode runs SounDiff in bfloat16 (the preset's soundiff.dtype), on a GPU or here on the CPU: every input a
# model is handed must be in its device and dtype.
def test_diffusion_loss_runs_on_a_bfloat16_model():
    """Noise drawn in float32 made bfloat16 latents float32 ('mat1 and mat2 must have the same dtype')."""
    from test_soundiff import D, tiny_pipe

    from a2i_utils.soundiff.conditioning import encode_prompt
    from a2i_utils.soundiff.training import diffusion_loss, noise_scheduler_of

    pipe = tiny_pipe().to(dtype=torch.bfloat16)
    x0, emb = torch.randn(2, 4, 8, 8).bfloat16(), torch.randn(2, D).bfloat16()
    prompt = encode_prompt(pipe, "")
    loss = diffusion_loss(pipe, pipe.unet, noise_scheduler_of(pipe), x0, emb, prompt.expand(2, -1, -1), prompt, 0,
                          torch.tensor([False, True]), torch.Generator().manual_seed(3))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_encode_prompt_runs_where_the_text_encoder_is():
    """The token ids went to the CPU whatever the text encoder's device (on a GPU: a device mismatch)."""
    from test_soundiff import tiny_pipe

    from a2i_utils.soundiff.conditioning import encode_prompt

    pipe = tiny_pipe()
    pipe.text_encoder.to("meta")  # stands in for a GPU: any CPU tensor fed to it fails
    assert encode_prompt(pipe, "").device.type == "meta"


def test_full_smoke_imagebind_is_built_only_when_something_must_be_embedded(tmp_path):
    """Notebook 05 loads ImageBind, then finds every embedding in the cache: the 4.8 GB random ImageBind-huge was
    built anyway, beside the pipeline (two large models at once)."""
    import soundfile as sf

    cfg = get_config("full-smoke", {"cache_dir": tmp_path / "cache", "device": "cpu", **SMALL_IB})
    small, builds = get_config("demo", SMALL_IB), []
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.wav")
        sf.write(paths[-1], np.full(16_000, 0.1 * (i + 1), np.float32), 16_000)

    def builder():
        builds.append(1)
        return build_mini(small)

    first = random_imagebind_huge(cfg, builder=builder)
    assert not first.built and first.embed_dim == 32 and builds == []
    emb = embed_files(first, paths, "audio", cfg, progress=False)  # (2, 32)
    assert first.built and builds == [1]

    again = random_imagebind_huge(cfg, builder=builder)
    assert torch.equal(embed_files(again, paths, "audio", cfg, progress=False), emb)
    assert not again.built and builds == [1]  # all cached: never built
    assert again.embed("audio", torch.zeros(1, 3, 1, 128, 204)).shape == (1, 32) and again.built  # on demand


@pytest.mark.parametrize("lora", [True, False])
def test_finetune_runs_on_a_bfloat16_pipeline_on_the_cpu(tmp_path, lora):
    """full-smoke's pipeline is bfloat16 on the CPU too, where accelerate autocasts nothing: the float32 latents,
    embeddings and the bf16 prompt met a U-Net of another dtype ('Input type (float) and bias type (BFloat16)')."""
    from test_soundiff import TINY, tiny_data, tiny_pipe

    from a2i_utils.soundiff.training import finetune, variant_of

    pipe, data = tiny_pipe().to(dtype=torch.bfloat16), tiny_data()
    cfg = get_config("demo", TINY | {"cache_dir": tmp_path, "device": "cpu", "soundiff.dtype": "bfloat16",
                                     "soundiff.lora": lora, "soundiff.lora_rank": 4, "soundiff.checkpoint_every": 0})
    history = finetune(cfg, pipe, data, variant_of(cfg, "L", steps=2), tmp_path / "run", progress=False)
    assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))
