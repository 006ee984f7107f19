"""SounDiff on tiny components (seconds): target, conditioning, generation, checkpoints, LoRA, full-size configs."""

from __future__ import annotations

import copy
import functools
import json

import numpy as np
import pytest
import torch

from a2i_utils.config import get_config
from a2i_utils.io import CheckpointError
from a2i_utils.soundiff.conditioning import class_labels, drop_condition, encode_prompt
from a2i_utils.soundiff.generate import generate, generate_cached, generation_key
from a2i_utils.soundiff.latents import LatentTensors
from a2i_utils.soundiff.mini import build_unet, build_vae, offline_tokenizer, tiny_text_encoder
from a2i_utils.soundiff.pipeline import ImageEncoderStandIn, assemble, count_params_m, full_size_modules
from a2i_utils.soundiff.reference import CONFIGS, PARAMS_M
from a2i_utils.soundiff.training import (
    TrainingData,
    diffusion_loss,
    finetune,
    load_finetuned,
    noise_scheduler_of,
    training_target,
    variant_of,
)

D = 16  # embedding width of the tiny pipelines
TINY = {"soundiff.image_size": 16, "soundiff.mini_vae_channels": (8, 8), "soundiff.mini_unet_channels": (16, 16),
        "soundiff.mini_text_dim": 16, "soundiff.batch_size": 4, "soundiff.views": 2, "soundiff.lr": 1e-2,
        "soundiff.lr_end": 1e-3, "soundiff.checkpoint_every": 2, "soundiff.cond_dropout": 0.5}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def tiny_pipe(prediction_type: str = "v_prediction", seed: int = 0):
    """A fresh copy of a random tiny StableUnCLIP pipeline (16 px, 8 x 8 latents, embeddings of D dims)."""
    return copy.deepcopy(_tiny_pipe(prediction_type, seed))


@functools.lru_cache(maxsize=4)
def _tiny_pipe(prediction_type: str, seed: int):
    """Built once per module (the tokenizer takes seconds to build)."""
    sc = get_config("demo", TINY).soundiff
    torch.manual_seed(seed)
    tok = offline_tokenizer(20)
    sched = {k: v for k, v in CONFIGS["scheduler"].items() if not k.startswith("_")} | {
        "prediction_type": prediction_type}
    pipe = assemble(build_unet(sc, D, 8), build_vae(sc), tiny_text_encoder(len(tok), 16, 20, seed), tok, D, 16,
                    scheduler_config=sched)
    pipe.image_normalizer.mean.data.normal_(0, 0.1)
    pipe.image_normalizer.std.data.uniform_(0.5, 2.0)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.image_normalizer):
        m.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_data(n: int = 6, seed: int = 0) -> TrainingData:
    """Random cached latents (2 views) and embeddings, as prepare_training_data returns them."""
    g = torch.Generator().manual_seed(seed)
    latents = LatentTensors(torch.randn(2, n, 4, 8, 8, generator=g), torch.rand(2, n, 4, 8, 8, generator=g) * 0.1)
    return TrainingData(latents, torch.randn(n, D, generator=g), 0.5, [f"{i:05d}" for i in range(n)])


# ----------------------------------------------------------------------------------------------------------
# The target and the noising
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["v_prediction", "epsilon"])
def test_target_is_the_schedulers_prediction_type(kind):
    sched = noise_scheduler_of(tiny_pipe(kind))
    x0, eps = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([0, 500, 999])
    target = training_target(sched, x0, eps, t)
    if kind == "epsilon":
        assert torch.equal(target, eps)
    else:
        assert torch.allclose(target, sched.get_velocity(x0, eps, t))
        a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
        assert torch.allclose(target, a.sqrt() * eps - (1 - a).sqrt() * x0, atol=1e-6)  # v, not the noise
        assert not torch.allclose(target, eps, atol=1e-2)


def test_unsupported_prediction_type_is_refused():
    sched = noise_scheduler_of(tiny_pipe())
    sched.register_to_config(prediction_type="sample")
    with pytest.raises(ValueError, match="prediction_type"):
        training_target(sched, torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8), torch.tensor([1]))


def test_loss_regresses_v_on_ddpm_noised_latents():
    """The loss is the MSE between the U-Net on DDPM-noised latents and get_velocity, recomputed by hand."""
    pipe = tiny_pipe()
    sched = noise_scheduler_of(pipe)
    x0, emb = torch.randn(2, 4, 8, 8), torch.randn(2, D)
    prompt = encode_prompt(pipe, "")
    drop = torch.tensor([False, False])
    loss = diffusion_loss(pipe, pipe.unet, sched, x0, emb, prompt.expand(2, -1, -1), prompt, 0, drop,
                          torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # the same draws, in the same order
    eps = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (2,), generator=g)
    emb_noise = torch.randn(emb.shape, generator=g)
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * x0 + (1 - a).sqrt() * eps  # DDPM forward process (not x + sigma * eps)
    labels = pipe.noise_image_embeddings(emb, 0, noise=emb_noise)
    pred = pipe.unet(noisy, t, encoder_hidden_states=prompt.expand(2, -1, -1), class_labels=labels).sample
    want = torch.nn.functional.mse_loss(pred, a.sqrt() * eps - (1 - a).sqrt() * x0)
    assert torch.allclose(loss, want, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Conditioning: as the pipeline builds it
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("level", [0, 250, 999])
def test_class_labels_equal_the_pipelines_noise_image_embeddings(level):
    pipe = tiny_pipe()
    emb, noise = torch.randn(3, D) * 3, torch.randn(3, D)
    ours = class_labels(pipe, emb, level, noise=noise)
    assert ours.shape == (3, 2 * D)
    assert torch.allclose(ours, pipe.noise_image_embeddings(emb, level, noise=noise), atol=1e-6)


def test_class_labels_take_one_noise_level_per_sample():
    pipe = tiny_pipe()
    emb, noise = torch.randn(2, D), torch.randn(2, D)
    both = class_labels(pipe, emb, torch.tensor([0, 600]), noise=noise)
    for i, level in enumerate((0, 600)):
        assert torch.allclose(both[i], pipe.noise_image_embeddings(emb[i : i + 1], level, noise=noise[i : i + 1])[0],
                              atol=1e-6)


def test_dropped_condition_is_the_pipelines_unconditional_input():
    """With guidance, the pipeline feeds the U-Net an unconditional half; drop_condition gives exactly that."""
    pipe = tiny_pipe()
    seen = []
    pipe.unet.register_forward_hook(lambda m, args, kwargs, out: seen.append(kwargs), with_kwargs=True)
    emb = torch.randn(2, D)
    pipe(image_embeds=emb, prompt=["satellite image"] * 2, num_inference_steps=1, guidance_scale=3.0,
         output_type="latent", generator=[torch.Generator().manual_seed(i) for i in range(2)])
    labels, hidden = seen[0]["class_labels"], seen[0]["encoder_hidden_states"]  # (4, 2D), (4, L, C)
    uncond_labels, cond_labels = labels.chunk(2)
    uncond_prompt, cond_prompt = hidden.chunk(2)
    ours_labels, ours_prompt = drop_condition(cond_labels, cond_prompt, encode_prompt(pipe, ""),
                                              torch.tensor([True, True]))
    assert torch.equal(ours_labels, uncond_labels) and not uncond_labels.any()  # zeros of the whole 2D vector
    assert torch.allclose(ours_prompt, uncond_prompt)  # the encoded empty prompt
    kept, _ = drop_condition(cond_labels, cond_prompt, encode_prompt(pipe, ""), torch.tensor([False, True]))
    assert torch.equal(kept[0], cond_labels[0]) and not kept[1].any()


# ----------------------------------------------------------------------------------------------------------
# The pipeline and the generation core
# ----------------------------------------------------------------------------------------------------------
def test_stand_in_answers_the_dtype_and_refuses_to_encode():
    pipe = tiny_pipe()
    assert isinstance(pipe.image_encoder, ImageEncoderStandIn)
    assert sum(p.numel() for p in pipe.image_encoder.parameters()) == 0
    assert next(pipe.image_encoder.parameters()).dtype == torch.float32
    with pytest.raises(RuntimeError, match="stand-in"):
        pipe(image=torch.zeros(1, 3, 16, 16), num_inference_steps=1)


def test_same_seed_same_image_in_any_batch():
    pipe = tiny_pipe()
    emb = torch.randn(3, D)
    a = generate(pipe, emb, n=2, seed=5, steps=3, guidance=2.0, batch_size=6)  # (3, 2, 16, 16, 3)
    b = generate(pipe, emb, n=2, seed=5, steps=3, guidance=2.0, batch_size=1)
    assert a.shape == (3, 2, 16, 16, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # batch composition changes at most the rounding
    c = generate(pipe, emb[1:2], n=1, seed=6, steps=3, guidance=2.0)
    assert np.abs(c[0, 0].astype(int) - a[1, 1].astype(int)).max() <= 1  # image j uses seed + j
    assert np.abs(a[:, 0].astype(int) - a[:, 1].astype(int)).max() > 5  # different seeds, different images


def test_the_prompt_is_encoded_once_per_call_and_images_match_the_pipelines_own_encoding():
    pipe, emb = tiny_pipe(), torch.randn(3, D)
    rows = []
    hook = pipe.text_encoder.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    try:
        ours = generate(pipe, emb, "satellite image", n=2, seed=5, steps=2, guidance=3.0, batch_size=2)  # 3 batches
    finally:
        hook.remove()
    assert rows == [1, 1]  # the prompt and the unconditional "" once each (it was 2 x 2 rows in each of 3 batches)
    gens = [torch.Generator().manual_seed(5 + j) for _ in range(3) for j in range(2)]
    theirs = pipe(image_embeds=emb.repeat_interleave(2, 0), prompt=["satellite image"] * 6, generator=gens,
                  num_inference_steps=2, guidance_scale=3.0, noise_level=0, height=16, width=16,
                  output_type="np").images  # (6, 16, 16, 3): the pipeline encoding 6 copies of each prompt
    theirs = np.round(theirs * 255).astype(int).reshape(3, 2, 16, 16, 3)  # (N, n, H, W, 3)
    assert np.abs(ours.astype(int) - theirs).max() <= 1
    unguided = generate(pipe, emb[:1], "satellite image", n=1, seed=5, steps=2, guidance=1.0)  # no "" branch
    assert unguided.shape == (1, 1, 16, 16, 3)


def test_a_repeated_generation_is_loaded_and_any_change_draws_again(tmp_path, monkeypatch, capsys):
    import a2i_utils.soundiff.generate as gen

    cfg, pipe, emb = _cfg(tmp_path), tiny_pipe(), torch.randn(3, D)
    pipe.key = "tiny-weights-v1"
    calls = []
    real = gen.generate
    monkeypatch.setattr(gen, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    args = {"n": 2, "seed": 5, "steps": 2, "guidance": 2.0}
    first = generate_cached(cfg, pipe, emb, **args)  # (3, 2, 16, 16, 3)
    assert np.array_equal(first, real(pipe, emb, **args))
    assert np.array_equal(generate_cached(cfg, pipe, emb, **args), first) and len(calls) == 1  # loaded
    path = tmp_path / "generated" / f"{generation_key(pipe, emb, '', **args, noise_level=0)}.npy"
    path.write_bytes(b"damaged")  # drawn again, with a message naming the file, and replaced
    assert np.array_equal(generate_cached(cfg, pipe, emb, **args), first) and len(calls) == 2
    assert str(path) in capsys.readouterr().out and np.array_equal(np.load(path), first)
    changes = [(emb + 1e-3, {}), (emb, {"seed": 6}), (emb, {"guidance": 3.0}), (emb, {"prompt": "a"}),
               (emb, {"n": 1}), (emb, {"steps": 3}), (emb, {"noise_level": 10})]
    for embeds, change in changes:
        generate_cached(cfg, pipe, embeds, **(args | change))
    assert len(calls) == 2 + len(changes)  # every change drew again
    pipe.scheduler.register_to_config(timestep_spacing="trailing")  # a sampler tweaked in place
    generate_cached(cfg, pipe, emb, **args)
    pipe.unet.register_to_config(sample_size=4)  # another default image size (8 px)
    assert generate_cached(cfg, pipe, emb, **args).shape == (3, 2, 8, 8, 3)
    pipe.key = "tiny-weights-v2"  # other weights
    generate_cached(cfg, pipe, emb, **args)
    del pipe.key  # no identity (a dry run, an ablation's pipeline): never cached
    generate_cached(cfg, pipe, emb, **args)
    generate_cached(cfg, pipe, emb, **args)
    assert len(calls) == 2 + len(changes) + 5


# ----------------------------------------------------------------------------------------------------------
# Training: resume, saving, loading
# ----------------------------------------------------------------------------------------------------------
def _cfg(tmp_path, **extra):
    return get_config("demo", TINY | {"cache_dir": tmp_path} | extra)


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    pipe, data = tiny_pipe(), tiny_data()
    cfg = _cfg(tmp_path)
    variant = variant_of(cfg, "L", steps=5)
    whole = finetune(cfg, pipe, data, variant, tmp_path / "whole", progress=False)
    part = finetune(cfg, pipe, data, variant, tmp_path / "cut", progress=False, stop_after=3)
    assert len(part["loss"]) == 3 and not (tmp_path / "cut" / "unet").exists()
    assert sorted(p.name for p in (tmp_path / "cut").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    rest = finetune(cfg, pipe, data, variant, tmp_path / "cut", resume="latest", progress=False)
    assert np.allclose(rest["loss"], whole["loss"], atol=1e-6) and np.allclose(rest["lr"], whole["lr"])
    a = load_finetuned(pipe, tmp_path / "whole").unet.state_dict()
    b = load_finetuned(pipe, tmp_path / "cut").unet.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    sc = cfg.soundiff
    assert whole["lr"] == pytest.approx([sc.lr + (sc.lr_end - sc.lr) * k / 5 for k in range(5)])  # each step's own
    assert whole["skipped"] == []  # no fp16 step to skip


def test_lora_run_is_fixed_by_the_seed_and_resumes_exactly(tmp_path):
    """The adapters' initialisation comes from the seed, not from the caller's random state; resume is bitwise."""
    pipe, data = tiny_pipe(), tiny_data()
    cfg = _cfg(tmp_path, **{"soundiff.lora": True, "soundiff.lora_rank": 4})
    variant = variant_of(cfg, "L", steps=4)
    torch.manual_seed(1)
    whole = finetune(cfg, pipe, data, variant, tmp_path / "whole", progress=False)
    torch.manual_seed(2)  # another caller state
    finetune(cfg, pipe, data, variant, tmp_path / "cut", progress=False, stop_after=3)
    state = torch.get_rng_state()
    rest = finetune(cfg, pipe, data, variant, tmp_path / "cut", resume="latest", progress=False)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left alone
    assert rest["loss"] == whole["loss"]  # bit for bit
    a = load_finetuned(pipe, tmp_path / "whole").unet.state_dict()
    b = load_finetuned(pipe, tmp_path / "cut").unet.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("class_embedding", [True, False])
def test_lora_fine_tunes_share_the_base_weights_and_leave_them_untouched(tmp_path, class_embedding):
    """Training a LoRA and loading it copy no frozen base tensor (the full U-Net is held once, not once per
    pipeline), and leave the base's tensors, dtypes and flags as they were."""
    pipe, data = tiny_pipe(), tiny_data()
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    cfg = _cfg(tmp_path, **{"soundiff.lora": True, "soundiff.lora_rank": 4,
                            "soundiff.lora_class_embedding": class_embedding})
    finetune(cfg, pipe, data, variant_of(cfg, "L", steps=3), tmp_path / "run", progress=False)
    tuned = load_finetuned(pipe, tmp_path / "run")
    after = pipe.unet.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) and after[k].dtype == v.dtype for k, v in before.items())
    assert not any(p.requires_grad for p in pipe.unet.parameters())
    base = {p.data_ptr() for p in pipe.unet.parameters()}
    tuned_params = dict(tuned.unet.named_parameters())
    own = {n for n, p in tuned_params.items() if p.data_ptr() not in base}
    assert own == {n for n in tuned_params if "lora_" in n or (class_embedding and n.startswith("class_embedding."))}
    emb = torch.randn(2, D)  # and the tuned pipeline draws other images than the base
    assert np.abs(generate(tuned, emb, steps=2, guidance=2.0).astype(int)
                  - generate(pipe, emb, steps=2, guidance=2.0).astype(int)).max() > 0


def test_damaged_checkpoint_is_an_error_naming_the_file(tmp_path):
    pipe, data = tiny_pipe(), tiny_data()
    cfg = _cfg(tmp_path)
    variant = variant_of(cfg, "L", steps=4)
    finetune(cfg, pipe, data, variant, tmp_path / "run", progress=False, stop_after=2)
    (tmp_path / "run" / "checkpoint-2" / "trainable.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="checkpoint-2"):
        finetune(cfg, pipe, data, variant, tmp_path / "run", resume="latest", progress=False)


@pytest.mark.parametrize("lora", [False, True])
def test_saved_weights_load_into_the_pipeline_and_generate(tmp_path, lora, monkeypatch):
    from a2i_utils.soundiff import training

    trained = {}  # the fine-tuned U-Net's tensors as save_final receives them
    save = training.save_final
    monkeypatch.setattr(training, "save_final", lambda f, unet, lo: (
        trained.update({k: v.detach().clone() for k, v in unet.state_dict().items()}), save(f, unet, lo))[1])
    pipe, data = tiny_pipe(), tiny_data()
    cfg = _cfg(tmp_path, **{"soundiff.lora": lora, "soundiff.lora_rank": 4})
    history = finetune(cfg, pipe, data, variant_of(cfg, "L", steps=3), tmp_path / "run", progress=False)
    assert len(history["loss"]) == 3 and history["samples_per_s"] > 0
    saved = tmp_path / "run" / ("lora" if lora else "unet")
    assert list(saved.glob("*.safetensors")), f"no safetensors in {saved}"
    tuned = load_finetuned(pipe, tmp_path / "run")
    emb = torch.randn(2, D)
    before = generate(pipe, emb, n=1, seed=0, steps=3, guidance=2.0)
    after = generate(tuned, emb, n=1, seed=0, steps=3, guidance=2.0)
    assert after.shape == (2, 1, 16, 16, 3)
    assert np.abs(after.astype(int) - before.astype(int)).max() > 0  # the fine-tune changed the images
    if lora:
        assert any("lora" in n for n, _ in tuned.unet.named_parameters())
        names = {n for n, _ in tuned.unet.named_parameters()}
        assert sum("lora_" in n for n in names) == sum("lora_" in n for n in trained) > 0  # every adapter loaded
        ce = {k: v for k, v in tuned.unet.state_dict().items() if k.startswith("class_embedding.")}
        assert ce and all(torch.equal(v, trained[k]) for k, v in ce.items())  # trained whole, and loaded
        assert not torch.equal(ce["class_embedding.linear_1.weight"],
                               pipe.unet.state_dict()["class_embedding.linear_1.weight"])
    assert not any("lora" in n for n, _ in pipe.unet.named_parameters())  # the base pipeline is untouched
    assert json.loads((tmp_path / "run" / "history.json").read_text())["loss"] == history["loss"]


def test_variants_and_their_settings():
    cfg = get_config("demo")
    assert variant_of(cfg, "L").prompt == "" and variant_of(cfg, "L").subset is None
    s = variant_of(cfg, "S")
    assert (s.prompt, s.subset, s.steps) == ("satellite image", "train station", cfg.soundiff.steps_s)
    assert variant_of(cfg, "S", prompt="a photo", subset="").subset is None
    with pytest.raises(ValueError, match="variant"):
        variant_of(cfg, "XL")


# ----------------------------------------------------------------------------------------------------------
# Full size, on the meta device
# ----------------------------------------------------------------------------------------------------------
def test_full_size_configs_build_on_meta_with_the_expected_parameter_counts():
    mods = full_size_modules("meta")
    counts = {k: count_params_m(m) for k, m in mods.items()}
    assert counts == PARAMS_M
    assert all(p.is_meta for p in mods["unet"].parameters())
    unet = mods["unet"].config
    assert unet.projection_class_embeddings_input_dim == 2 * CONFIGS["image_normalizer"]["embedding_dim"] == 2048
    assert CONFIGS["scheduler"]["prediction_type"] == "v_prediction"


def test_full_mode_loader_reads_a_saved_pipeline_and_attaches_the_stand_in(tmp_path, monkeypatch):
    """The full-mode path (verified safetensors, image_encoder=None, stand-in) on a local folder, offline."""
    from diffusers import StableUnCLIPImg2ImgPipeline

    from a2i_utils.io import sha256_file
    from a2i_utils.soundiff import weights
    from a2i_utils.soundiff.pipeline import load_pipeline

    pipe = tiny_pipe()
    saved = StableUnCLIPImg2ImgPipeline(**(pipe.components | {"image_encoder": None}))
    saved.save_pretrained(tmp_path / "sd21-unclip-like")
    folder = str(tmp_path / "sd21-unclip-like")
    unet_file = "unet/diffusion_pytorch_model.safetensors"  # the tiny U-Net is not Stability's: pin it instead
    monkeypatch.setattr(weights, "PINNED_SHA256", {unet_file: sha256_file(tmp_path / "sd21-unclip-like" / unet_file)})
    cfg = get_config("full", {"cache_dir": tmp_path / "cache", "soundiff.pretrained_id": folder, "device": "cpu"})
    loaded = load_pipeline(cfg)
    assert isinstance(loaded.image_encoder, ImageEncoderStandIn) and loaded.unet.dtype == torch.float32  # CPU: fp32
    emb = torch.randn(1, D)
    a = generate(pipe, emb, n=1, seed=0, steps=2, guidance=2.0)
    b = generate(loaded, emb, n=1, seed=0, steps=2, guidance=2.0)
    assert np.array_equal(a, b)
