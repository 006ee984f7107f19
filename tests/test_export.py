"""``a2i export``: a tiny SounDiff-L (full) and a LoRA run, trained by the real trainer in demo mode at a tiny size,
exported, then loaded in a fresh process by plain diffusers (no a2i) with the lines of their own model card: the
same images as a2i's ``generate`` from the same embeddings and seeds, to within one intensity level.
Also: no pickle in an export, a second export is byte-identical, the card's metadata and results, the LoRA split of
fully trained modules, refused inputs, and ``--push-to-hub`` against the hub client with its transport replaced.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from a2i_utils.config import get_config
from a2i_utils.soundiff.export import (
    INFO_FILE,
    LORA_FILE,
    MODULES_FILE,
    SAMPLES_EMBEDS,
    STAND_IN,
    ExportError,
    export_run,
    lora_parts,
    push_to_hub,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

TINY = {"data.per_class": 3, "data.image_size": 32, "imagebind.mini_vision_epochs": 1,
        "imagebind.mini_audio_epochs": 1, "soundiff.image_size": 16, "soundiff.mini_vae_channels": (8, 8),
        "soundiff.mini_unet_channels": (16, 16), "soundiff.mini_text_dim": 16, "soundiff.mini_vae_steps": 2,
        "soundiff.mini_unet_steps": 2, "soundiff.mini_batch": 8, "soundiff.batch_size": 4, "soundiff.views": 1,
        "soundiff.steps": 3, "soundiff.sample_steps": 3, "soundiff.checkpoint_every": 0}

# Runs in a fresh interpreter: the card's own "Use" code block, then the grid's embeddings and seeds; no a2i.
PLAIN_DIFFUSERS = r"""
import json, re, sys
import numpy as np, torch
torch.set_num_threads(1)
folder, spec, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
card = open(f"{folder}/README.md").read()
code = re.search(r"## Use.*?```python\n(.*?)```", card, re.S).group(1)
code = re.sub(r'^DIR = .*$', f"DIR = {folder!r}", code, flags=re.M)
scope = {}
exec(code, scope)
pipe = scope["pipe"]
pipe.set_progress_bar_config(disable=True)
from safetensors.torch import load_file
emb = load_file(f"{folder}/samples_embeddings.safetensors")["image_embeds"]
jobs = [(i, j) for i in range(len(emb)) for j in range(spec["n"])]
images = pipe(image_embeds=emb[[i for i, _ in jobs]], prompt=[spec["prompt"]] * len(jobs),
              generator=[torch.Generator().manual_seed(spec["seed"] + j) for _, j in jobs],
              num_inference_steps=spec["steps"], guidance_scale=spec["guidance"], noise_level=spec["noise_level"],
              height=spec["size"], width=spec["size"], output_type="np").images
np.save(out, np.round(images * 255).astype(np.uint8).reshape(len(emb), spec["n"], *images.shape[1:]))
assert not [m for m in sys.modules if m.startswith("a2i")], "a2i was imported"
"""


def tiny_cfg(cache: Path, **extra):
    return get_config("demo", TINY | {"cache_dir": cache} | extra)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A full SounDiff-L and a LoRA SounDiff-L, trained for 3 steps each on a tiny demo tree (one cache)."""
    from a2i_utils.data import prepare_dataset
    from a2i_utils.devices import cpu_threads
    from a2i_utils.imagebind.embedder import load_imagebind
    from a2i_utils.soundiff.pipeline import load_pipeline
    from a2i_utils.soundiff.training import load_or_finetune, variant_of

    cache = tmp_path_factory.mktemp("export-cache")
    out = {}
    with cpu_threads(1):
        for kind, lora in (("full", False), ("lora", True)):
            cfg = tiny_cfg(cache, **{"soundiff.lora": lora})
            ds, emb = prepare_dataset(cfg, progress=False), load_imagebind(cfg, progress=False)
            tuned, _ = load_or_finetune(cfg, variant_of(cfg, "L"), load_pipeline(cfg, progress=False), ds, emb,
                                        progress=False)
            out[kind] = (cfg, tuned)
    return out


def a2i_images(cfg, tuned, folder: Path) -> np.ndarray:
    """What a2i's generate draws from the export's sample embeddings: (N, n, H, W, 3) uint8."""
    from safetensors.torch import load_file

    from a2i_utils.soundiff.generate import generate

    info = json.loads((folder / INFO_FILE).read_text())["samples"]
    emb = load_file(str(folder / SAMPLES_EMBEDS))["image_embeds"]
    sc = cfg.soundiff
    return generate(tuned, emb, info["prompt"], n=len(info["seeds"]), seed=info["seeds"][0], steps=sc.sample_steps,
                    guidance=sc.guidance_scale, noise_level=sc.noise_level)


def plain_diffusers_images(cfg, folder: Path, tmp_path: Path) -> np.ndarray:
    """The same images drawn in a fresh process by diffusers alone, loading with the card's lines."""
    info = json.loads((folder / INFO_FILE).read_text())["samples"]
    sc = cfg.soundiff
    spec = {"n": len(info["seeds"]), "seed": info["seeds"][0], "prompt": info["prompt"], "steps": sc.sample_steps,
            "guidance": sc.guidance_scale, "noise_level": sc.noise_level, "size": info["size"]}
    out = tmp_path / "plain.npy"
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", PLAIN_DIFFUSERS, str(folder), json.dumps(spec), str(out)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(out, allow_pickle=False)


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_no_pickle(folder: Path) -> None:
    from safetensors import safe_open

    for name, data in files_of(folder).items():
        assert not name.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")), name
        assert not data.startswith((b"\x80", b"PK")), f"{name} looks like a pickle or a torch.save zip"
        if name.endswith(".safetensors"):
            with safe_open(str(folder / name), "pt") as f:
                assert list(f.keys())


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_export_round_trip_in_plain_diffusers(runs, kind, tmp_path, monkeypatch):
    cfg, tuned = runs[kind]
    folder = export_run(cfg, "L", tmp_path / "export")
    if kind == "full":
        assert json.loads((folder / "model_index.json").read_text())["image_encoder"] == [None, None]
        assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    else:
        assert (folder / LORA_FILE).is_file() and (folder / "base" / "model_index.json").is_file()
        assert not (folder / "unet").exists()
    assert_no_pickle(folder)
    assert str(cfg.cache_dir) not in "".join(d.decode("latin-1") for d in files_of(folder).values())
    ours = a2i_images(cfg, tuned, folder)
    theirs = plain_diffusers_images(cfg, folder, tmp_path)
    assert ours.shape == theirs.shape and ours.shape[:2] == (8, 3)
    assert np.abs(ours.astype(int) - theirs).max() <= 1
    assert ours.std() > 0  # not a blank image that any model would match

    again = export_run(cfg, "L", tmp_path / "again")
    assert files_of(again) == files_of(folder)  # byte for byte

    from a2i_utils.soundiff import pipeline  # a notebook hands its loaded base over: not loaded again, same export
    from a2i_utils.soundiff.pipeline import load_pipeline

    base = load_pipeline(cfg, progress=False)
    monkeypatch.setattr(pipeline, "load_pipeline", None)  # any call of it would fail
    assert files_of(export_run(cfg, "L", tmp_path / "handed", base=base)) == files_of(folder)


def test_card_metadata_and_provenance(runs, tmp_path):
    from huggingface_hub import ModelCard

    cfg, _ = runs["full"]
    folder = export_run(cfg, "L", tmp_path / "export")
    card = ModelCard.load(folder / "README.md")
    meta = card.data.to_dict()
    assert meta["license"] == "openrail++" and meta["pipeline_tag"] == "image-to-image"
    assert {"soundiff", "full-fine-tune"} <= set(meta["tags"])
    info = json.loads((folder / INFO_FILE).read_text())["run"]
    assert info["key"] in card.text and info["base_weights_sha256"] in card.text and info["data_sha256"] in card.text
    assert info["training"]["lora"] is False and info["variant"]["steps"] == 3 and info["seed"] == cfg.seed
    assert "No evaluation has been run" in card.text and "![samples](samples.png)" in card.text
    assert STAND_IN in card.text


def test_card_carries_a2i_evaluate_results(runs, tmp_path):
    cfg, _ = runs["full"]
    results = tmp_path / "results"
    results.mkdir()
    (results / "metrics.csv").write_text(
        "system,n_recordings,AIC,AIC_lo,AIC_hi,FD,FD_lo,FD_hi\n"
        "held-out images (reference),13,1.0,1.0,1.0,,,\n"
        "baseline,13,0.25,0.1,0.4,90.5,80.0,100.0\n"
        "SounDiff-L,13,0.5,0.3,0.7,70.25,60.0,80.0\n"
        "SounDiff-S,13,0.4,0.2,0.6,75.0,65.0,85.0\n")
    folder = export_run(cfg, "L", tmp_path / "export", results=results)
    text = (folder / "README.md").read_text()
    assert "| SounDiff-L | 13 | 0.500 [0.300, 0.700] | 70.250 [60.000, 80.000] |" in text
    assert "| baseline | 13 |" in text and "SounDiff-S" not in text and "No evaluation" not in text
    (results / "metrics.csv").write_text("system,n_recordings,AIC,AIC_lo,AIC_hi\nbaseline,13,0.2,0.1,0.3\n")
    with pytest.raises(ExportError, match=r"metrics\.csv: no row for 'SounDiff-L'"):
        export_run(cfg, "L", tmp_path / "other", results=results)


def test_refused_inputs_name_the_folder(runs, tmp_path):
    cfg, _ = runs["full"]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match=f"^{busy}: exists and is not an earlier a2i export"):
        export_run(cfg, "L", busy)
    assert (busy / "notes.txt").read_text() == "mine"
    with pytest.raises(ExportError, match="is not trained"):
        export_run(tiny_cfg(cfg.cache_dir, **{"soundiff.steps": 4}), "L", tmp_path / "x")
    run = next((Path(cfg.cache_dir) / "checkpoints" / "soundiff").glob("soundiff-L-*"))
    other = tiny_cfg(cfg.cache_dir, **{"soundiff.lora": not (run / "lora").is_dir(), "soundiff.lr": 0.5})
    with pytest.raises(ExportError, match=f"^{run}: this run was trained with other settings"):
        export_run(other, str(run), tmp_path / "y")
    with pytest.raises(ExportError, match="not a SounDiff run folder"):
        export_run(cfg, str(tmp_path), tmp_path / "z")


def test_cli_exports_a_run_folder(runs, tmp_path, capsys):
    from a2i_utils.cli import main

    cfg, _ = runs["lora"]
    run = next(p for p in (Path(cfg.cache_dir) / "checkpoints" / "soundiff").glob("soundiff-L-*")
               if (p / "lora").is_dir())
    argv = ["export", str(run), "--out", str(tmp_path / "cli"), "--cache", str(cfg.cache_dir), "--lora"]
    argv += [a for k, v in TINY.items() for a in ("--set", f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}")]
    assert main(argv) == 0
    assert LORA_FILE in capsys.readouterr().out
    assert main(argv + ["--what", "pipeline"]) == 2  # a LoRA run is not a full pipeline: one error line
    assert "cannot be exported as 'pipeline'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# LoRA runs that also train whole modules (e.g. class_embedding): what load_lora_weights can carry
# ----------------------------------------------------------------------------------------------------------
def test_lora_with_fully_trained_modules_loads_in_plain_diffusers(tmp_path):
    """load_lora_weights keeps only the LoRA layers; the class_embedding trained with them goes in a second file."""
    from diffusers import StableUnCLIPImg2ImgPipeline
    from safetensors.torch import load_file

    from a2i_utils.soundiff.mini import build_unet
    from a2i_utils.soundiff.training import add_lora

    sc = get_config("demo", TINY).soundiff
    torch.manual_seed(0)
    base = build_unet(sc, 16, 8).eval()
    tuned = build_unet(sc, 16, 8).eval()
    tuned.load_state_dict(base.state_dict())
    add_lora(tuned, 4, seed=0)
    with torch.no_grad():
        for n, p in tuned.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)  # a trained adapter (B starts at zero)
        tuned.class_embedding.linear_1.weight.add_(0.5)  # a fully trained module
    lora, full, meta = lora_parts(tuned, base)
    assert set(full) == {"class_embedding.linear_1.weight"} and meta["r"] == 4
    StableUnCLIPImg2ImgPipeline.save_lora_weights(tmp_path, unet_lora_layers=lora, unet_lora_adapter_metadata=meta)
    from safetensors.torch import save_file

    save_file(full, str(tmp_path / MODULES_FILE))

    class Holder(torch.nn.Module):  # load_lora_into_unet only needs pipe.unet
        pass

    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    hidden, labels = torch.randn(2, 20, 16), torch.randn(2, 32)
    with torch.no_grad():
        want = tuned(x, t, encoder_hidden_states=hidden, class_labels=labels).sample
        plain = build_unet(sc, 16, 8).eval()
        plain.load_state_dict(base.state_dict())
        plain.load_lora_adapter(str(tmp_path / LORA_FILE), prefix="unet")
        lora_only = plain(x, t, encoder_hidden_states=hidden, class_labels=labels).sample
        missing, unexpected = plain.load_state_dict(load_file(str(tmp_path / MODULES_FILE)), strict=False)
        got = plain(x, t, encoder_hidden_states=hidden, class_labels=labels).sample
    assert not unexpected
    assert not torch.allclose(lora_only, want, atol=1e-4)  # the LoRA file alone does not carry the module
    assert torch.allclose(got, want, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# --push-to-hub: the hub client's own upload, its HTTP transport replaced (no network)
# ----------------------------------------------------------------------------------------------------------
def test_push_to_hub_uploads_every_file_with_the_users_token(runs, tmp_path, monkeypatch):
    import httpx2
    from huggingface_hub.utils import set_client_factory

    cfg, _ = runs["lora"]
    folder = export_run(cfg, "L", tmp_path / "export")
    seen, uploaded = [], {}

    def hub(request):
        path = request.url.path
        seen.append((request.method, path, request.headers.get("authorization")))
        if path == "/api/validate-yaml":
            assert "license: openrail++" in json.loads(request.content)["content"]
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if path == "/api/repos/create":
            return httpx2.Response(200, json={"url": "https://hub.test/me/soundiff", "name": "me/soundiff"})
        if path.endswith("/preupload/main"):
            files = json.loads(request.content)["files"]
            return httpx2.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular",
                                                         "shouldIgnore": False} for f in files]})
        if path.endswith("/commit/main"):
            for line in request.content.decode().splitlines():
                op = json.loads(line)
                if op["key"] == "file":
                    uploaded[op["value"]["path"]] = base64.b64decode(op["value"]["content"])
            return httpx2.Response(200, json={"commitUrl": "https://hub.test/me/soundiff/commit/1",
                                              "commitOid": "1" * 40})
        return httpx2.Response(404, json={"error": f"unexpected {request.method} {path}"})

    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "https://hub.test")
    set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub)))
    try:
        url = push_to_hub(folder, "me/soundiff", token="hf_user_token")
    finally:
        from huggingface_hub.utils._http import default_client_factory

        set_client_factory(default_client_factory)
    assert url == "https://hub.test/me/soundiff/commit/1"
    assert uploaded == files_of(folder)
    writes = [auth for method, path, auth in seen if method == "POST"]  # create, YAML check, preupload, commit
    assert len(writes) == 4 and set(writes) == {"Bearer hf_user_token"}
    assert {p for _, p, _ in seen} >= {"/api/repos/create", "/api/models/me/soundiff/commit/main"}
    with pytest.raises(ExportError, match="not an a2i export"):
        push_to_hub(tmp_path, "me/soundiff", token="x")
