"""The shipped miniatures (``a2i_utils/pretrained/``) come from the recipe in the code, on the demo world's train split.

The proof: each card's config, seed and model version are the code's; its files have its SHA-256s; the demo world's
data give its cache key (so the notebooks load exactly it); and the first steps of every training stage, run again
from the seed here, give the card's first losses bit for bit (CPU, one thread, as ``make pretrained`` trains). The
last needs the demo world (made once in the test cache, as ``test_soundiff_demo`` and the notebooks need it too).
"""

from __future__ import annotations

import json

import pytest
import torch

from a2i_utils.checkpoints import PRETRAINED_DIR, SHIPPED_ENV, find_shipped, hash_problems, read_card
from a2i_utils.config import get_config
from a2i_utils.imagebind import mini as ib_mini
from a2i_utils.soundiff import mini as sd_mini

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FIRST = 3  # steps of each stage run again
BUDGET_MB = 25


def _json(value):
    """``value`` as a card holds it (tuples become lists)."""
    return json.loads(json.dumps(value))


def shipped_card(name: str) -> dict:
    card = read_card(name)
    assert card is not None, f"no shipped miniature {name} in {PRETRAINED_DIR}: run `make pretrained`"
    return card


@pytest.fixture(scope="module")
def ib_card() -> dict:
    return shipped_card(ib_mini.SHIPPED_NAME)


@pytest.fixture(scope="module")
def sd_card() -> dict:
    return shipped_card(sd_mini.SHIPPED_NAME)


def _common_checks(card: dict, cfg) -> None:
    assert card["seed"] == cfg.seed and card["code"]["commit"]
    assert {k: len(v) for k, v in card["losses"].items()} == card["steps"]
    assert (PRETRAINED_DIR / card["loss_plot"]).is_file()
    assert hash_problems(card) == []


def test_imagebind_card_holds_the_codes_recipe_and_hashes(ib_card):
    cfg = get_config("demo")
    assert ib_card["config"] == _json(ib_mini.recipe_config(cfg)) and ib_card["model_version"] == ib_mini.MODEL_VERSION
    per_epoch = -(-ib_card["data"]["train_pairs"] // cfg.imagebind.mini_train_batch)
    assert ib_card["steps"] == {"vision": cfg.imagebind.mini_vision_epochs * per_epoch,
                                "audio": cfg.imagebind.mini_audio_epochs * per_epoch}
    _common_checks(ib_card, cfg)


def test_unclip_card_holds_the_codes_recipe_and_hashes(sd_card, ib_card):
    cfg = get_config("demo")
    assert sd_card["config"] == _json(sd_mini.recipe_config(cfg)) and sd_card["model_version"] == sd_mini.MODEL_VERSION
    assert sd_card["imagebind"] == ib_card["key"]
    assert sd_card["steps"] == {"vae": cfg.soundiff.mini_vae_steps, "unet": cfg.soundiff.mini_unet_steps}
    _common_checks(sd_card, cfg)
    shipped = {p.relative_to(PRETRAINED_DIR).as_posix() for p in (PRETRAINED_DIR / sd_mini.SHIPPED_NAME).rglob("*")
               if p.is_file()}
    assert shipped == set(sd_card["files"])  # nothing unhashed is loaded


def test_shipped_weights_fit_the_budget():
    files = [p for p in PRETRAINED_DIR.rglob("*") if p.is_file()]
    assert files and sum(p.stat().st_size for p in files) <= BUDGET_MB * 1e6


def test_find_shipped_refuses_another_key_a_changed_file_and_the_switch(tmp_path, monkeypatch, capsys):
    """A changed config (another key) trains and says so; so does a file whose hash differs, and A2I_NO_SHIPPED."""
    (tmp_path / "w.safetensors").write_bytes(b"weights")
    from a2i_utils.io import sha256_file

    card = {"key": "mini-v1-abc", "files": {"w.safetensors": sha256_file(tmp_path / "w.safetensors")}}
    (tmp_path / "m.card.json").write_text(json.dumps(card))
    assert find_shipped("m", "mini-v1-abc", "thing", tmp_path) == tmp_path
    assert "Loading the shipped pretrained thing" in capsys.readouterr().out
    assert find_shipped("m", "mini-v1-other", "thing", tmp_path) is None
    assert "another recipe or data" in capsys.readouterr().out
    monkeypatch.setenv(SHIPPED_ENV, "1")
    assert find_shipped("m", "mini-v1-abc", "thing", tmp_path) is None
    assert f"{SHIPPED_ENV} is set" in capsys.readouterr().out
    monkeypatch.delenv(SHIPPED_ENV)
    (tmp_path / "w.safetensors").write_bytes(b"weightz")
    assert find_shipped("m", "mini-v1-abc", "thing", tmp_path) is None
    out = capsys.readouterr().out
    assert "fails its hash check" in out and f"{tmp_path / 'w.safetensors'}: SHA-256" in out
    assert find_shipped("none", "mini-v1-abc", "thing", tmp_path) is None  # nothing shipped: train, quietly


# ----------------------------------------------------------------------------------------------------------
# On the demo world: its key, and the first steps of every stage
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo():
    from a2i_utils.data import prepare_dataset

    cfg = get_config("demo")  # the cache of the environment (make test: build/test-cache)
    return cfg, prepare_dataset(cfg, progress=False)


def test_the_demo_world_asks_for_the_shipped_imagebind(ib_card, demo):
    cfg, ds = demo
    assert ib_mini.mini_key(cfg, ds.pairs) == ib_card["key"]


def test_the_demo_world_asks_for_the_shipped_unclip(sd_card, ib_card, demo):
    cfg, ds = demo
    assert sd_mini.mini_unclip_key(cfg, ds.pairs, ib_card["key"]) == sd_card["key"]


def _shipped_imagebind(cfg):
    torch.manual_seed(cfg.seed)
    model = ib_mini.build_mini(cfg)
    ib_mini.load_mini_weights(model, PRETRAINED_DIR / ib_mini.SHIPPED_FILE)
    return model.eval().requires_grad_(False)


def test_first_imagebind_steps_reproduce_the_card(ib_card, demo):
    """Stage 1 from the seed; stage 2 from the seed's audio tower and the shipped (frozen) vision and text towers."""
    from a2i_utils.data import CLASSES
    from a2i_utils.imagebind.preprocess import load_audio_inputs, load_vision_inputs

    cfg, ds = demo
    ib, train, losses = cfg.imagebind, ds.train, ib_card["losses"]
    images = load_vision_inputs([p.image_path for p in train])  # (N, 3, 224, 224)
    labels = torch.tensor([CLASSES.index(p.label) for p in train])
    caps = ib_mini._captions(train)
    captions = [caps[p.id] for p in train] if all(p.id in caps for p in train) else None
    torch.manual_seed(cfg.seed)
    model = ib_mini.build_mini(cfg)
    got = ib_mini.train_vision_text(model, images, labels, CLASSES, ib, cfg.seed, False, captions, stop_after=FIRST)
    assert got == losses["vision"][:FIRST]

    torch.manual_seed(cfg.seed)
    model = ib_mini.build_mini(cfg)  # the seed's audio tower, as stage 2 starts (stage 1 never touches it)
    shipped = _shipped_imagebind(cfg).state_dict()
    model.load_state_dict({k: v for k, v in shipped.items() if ".audio." not in k}, strict=False)
    with torch.no_grad():
        targets = ib_mini.embed_in_batches(model.eval(), "vision", images, ib.batch_size)  # (N, D)
    n, bs = len(train), ib.mini_train_batch
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 1))  # stage 2's first epoch
    used = perm[: FIRST * bs]
    audio = torch.zeros(n, 3, 1, 128, 204)  # only the recordings of the first steps are read
    audio[used] = load_audio_inputs([train[i].audio_path for i in used.tolist()])
    groups = ib_mini.recording_groups(train) if ib.mini_mask_same_recording else None
    got = ib_mini.train_audio(model, audio, targets, ib, cfg.seed, False, groups, stop_after=FIRST)
    assert got == losses["audio"][:FIRST]


def test_first_unclip_steps_reproduce_the_card(sd_card, ib_card, demo, tmp_path):
    """The VAE from the seed; the U-Net from the seed on the shipped VAE's latents and ImageBind's embeddings."""
    from diffusers import AutoencoderKL

    from a2i_utils.imagebind.cache import embed_files
    from a2i_utils.imagebind.model import Embedder
    from a2i_utils.soundiff.latents import image_tensor

    cfg, ds = demo
    sc, train, losses = cfg.soundiff, ds.train, sd_card["losses"]
    images = image_tensor([p.image_path for p in train], sc.image_size)  # (N, 3, H, W)
    torch.manual_seed(cfg.seed)
    got = sd_mini.train_vae(sd_mini.build_vae(sc), images, sc, cfg.seed, False, stop_after=FIRST)
    assert got == losses["vae"][:FIRST]

    vae = AutoencoderKL.from_pretrained(PRETRAINED_DIR / sd_mini.SHIPPED_NAME / "vae", use_safetensors=True)
    vae = vae.eval().requires_grad_(False)
    embedder = Embedder(_shipped_imagebind(cfg), ib_card["key"])
    own = cfg.replace(cache_dir=tmp_path)  # embeddings computed here, not read from any cache
    embeds = embed_files(embedder, [p.image_path for p in train], "vision", own, progress=False)  # (N, D)
    pipe, latent_mean, latent_std = sd_mini.unet_stage_inputs(cfg, vae, images, embeds)
    _, history = sd_mini.pretrain_unet(pipe, latent_mean, latent_std, embeds, sc, cfg.seed, False, stop_after=FIRST)
    assert history["loss"] == losses["unet"][:FIRST]
