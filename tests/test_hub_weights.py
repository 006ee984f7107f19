"""Full mode's SD 2.1 UnCLIP weights (issue 16), without a network: a loopback server stands in for the hub.

A hub-shaped folder of tiny components of the real classes (U-Net, VAE, CLIP text encoder, image normaliser,
tokenizer, schedulers, feature extractor, and an image encoder, ``.bin`` duplicates and fp16 variants that must NOT
be fetched) is served with the two routes the loader uses: ``/api/models/<id>/revision/<rev>`` and
``/<id>/resolve/<commit>/<file>`` (with Range). ``HF_ENDPOINT`` points at it. The request log shows what arrives.
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest
import torch

from a2i_utils.cli import is_user_error
from a2i_utils.config import get_config
from a2i_utils.downloads import DownloadError
from a2i_utils.io import sha256_file
from a2i_utils.soundiff import weights
from a2i_utils.soundiff.weights import WeightsError, select_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

REPO_ID = "mirror-org/sd21-unclip-tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
UNET = "unet/diffusion_pytorch_model.safetensors"
UNET16 = "unet/diffusion_pytorch_model.fp16.safetensors"
WANTED = {
    "model_index.json", "feature_extractor/preprocessor_config.json", "scheduler/scheduler_config.json",
    "image_noising_scheduler/scheduler_config.json", "unet/config.json", UNET, "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json", "text_encoder/model.safetensors",
    "image_normalizer/config.json", "image_normalizer/diffusion_pytorch_model.safetensors",
}


def _tiny_pipeline():
    """A random StableUnCLIP pipeline of tiny real components, with a tiny real CLIP image encoder."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from a2i_utils.soundiff.mini import build_unet, build_vae, offline_tokenizer, tiny_text_encoder
    from a2i_utils.soundiff.pipeline import assemble

    sc = get_config("demo", {"soundiff.mini_vae_channels": (8, 8), "soundiff.mini_unet_channels": (16, 16),
                             "soundiff.mini_text_dim": 16}).soundiff
    torch.manual_seed(0)
    tok = offline_tokenizer(20)
    pipe = assemble(build_unet(sc, 16, 8), build_vae(sc), tiny_text_encoder(len(tok), 16, 20), tok, 16, 16)
    pipe.image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=8, projection_dim=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
        image_size=16, patch_size=8))
    return pipe


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory) -> Path:
    """The repository as a hub holds it: what we load, plus what we must never fetch."""
    from diffusers import StableUnCLIPImg2ImgPipeline

    folder = tmp_path_factory.mktemp("hub") / "repo"
    pipe = _tiny_pipeline()
    StableUnCLIPImg2ImgPipeline(**pipe.components).save_pretrained(folder)
    pipe.unet.half().save_pretrained(folder / "unet", variant="fp16")  # an fp16 U-Net (no other fp16 safetensors)
    for name in ("unet/diffusion_pytorch_model.bin", "text_encoder/pytorch_model.bin",
                 "image_normalizer/diffusion_pytorch_model.fp16.bin", "image_encoder/pytorch_model.bin"):
        (folder / name).write_bytes(b"a pickle that must never be fetched")
    assert (folder / "image_encoder" / "model.safetensors").is_file()
    return folder


class Hub:
    """A loopback stand-in for the hub: the model API and ``resolve`` (with Range) for ``repos``; a request log.

    ``cut[name]`` drops the connection of the next download of ``name`` after that many bytes (once);
    ``swap[name]`` serves other bytes of the same length for it.
    """

    def __init__(self, repos: dict[str, Path]):
        self.repos, self.log, self.cut, self.swap = repos, [], {}, {}
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802  (http.server's name)
                parts = self.path.split("/")
                if parts[1:3] == ["api", "models"] and parts[-2] == "revision":
                    return self._api("/".join(parts[3:-2]))
                if len(parts) > 5 and parts[3] == "resolve":
                    return self._resolve("/".join(parts[1:3]), parts[4], "/".join(parts[5:]))
                self.send_error(404)

            def _api(self, repo):
                hub.log.append(("api", repo))
                folder = hub.repos.get(repo)
                if folder is None:
                    return self.send_error(404)
                files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
                self._send(200, json.dumps({"id": repo, "sha": COMMIT,
                                            "siblings": [{"rfilename": f} for f in files]}).encode(), {})

            def _resolve(self, repo, commit, name):
                start = int(self.headers.get("Range", "bytes=0-")[6:].split("-")[0] or 0)
                hub.log.append((name, start))
                path = hub.repos[repo] / name if repo in hub.repos and commit == COMMIT else None
                if path is None or not path.is_file():
                    return self.send_error(404)
                body = path.read_bytes()
                if name in hub.swap:
                    body = bytes(255 - b for b in body)
                headers = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"} if start else {}
                self._send(206 if start else 200, body[start:], headers, cut=hub.cut.pop(name, None))

            def _send(self, status, body, headers, cut=None):
                self.send_response(status)
                for k, v in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body if cut is None else body[:cut])
                self.wfile.flush()
                if cut is not None:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_port}"

    def fetched(self) -> set[str]:
        return {name for name, _ in self.log if name != "api"}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hub(hub_folder, monkeypatch):
    """The stand-in hub serving ``hub_folder`` as REPO_ID, with the tiny U-Nets pinned (they are not Stability's)."""
    server = Hub({REPO_ID: hub_folder})
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setattr(weights, "PINNED_SHA256", {n: sha256_file(hub_folder / n) for n in (UNET, UNET16)})
    yield server
    server.close()


def _cfg(tmp_path, **soundiff):
    over = {"cache_dir": tmp_path / "cache", "device": "cpu", "soundiff.pretrained_id": REPO_ID}
    return get_config("full", over | {f"soundiff.{k}": v for k, v in soundiff.items()})


# ----------------------------------------------------------------------------------------------------------
# The default, and what is fetched
# ----------------------------------------------------------------------------------------------------------
def test_the_default_source_is_the_community_mirror_and_the_withdrawn_id_is_gone():
    sc = get_config("full").soundiff
    assert sc.pretrained_id == "sd2-community/stable-diffusion-2-1-unclip" == weights.KNOWN_MIRRORS[0]
    assert sc.revision == "main" and sc.variant is None
    assert weights.PINNED_SHA256[UNET].startswith("902a190c84ff")  # FACTS §8: Stability's "h" U-Net
    assert weights.PINNED_SHA256[UNET16].startswith("a11c42f0619d")


def test_only_the_wanted_files_are_fetched_and_the_pipeline_loads_from_them(tmp_path, hub, hub_folder, monkeypatch):
    from a2i_utils.soundiff.pipeline import ImageEncoderStandIn, load_pretrained_pipeline

    pipe = load_pretrained_pipeline(_cfg(tmp_path), progress=False)
    tokenizer = {p.relative_to(hub_folder).as_posix() for p in (hub_folder / "tokenizer").iterdir()}
    assert hub.fetched() == WANTED | tokenizer and "tokenizer/tokenizer_config.json" in tokenizer
    assert not any(n.endswith(".bin") or n.startswith("image_encoder/") or ".fp16." in n for n in hub.fetched())
    assert isinstance(pipe.image_encoder, ImageEncoderStandIn)
    saved = _tiny_pipeline().unet.state_dict()  # the same seed: the weights that were served
    assert all(torch.equal(v, saved[k]) for k, v in pipe.unet.state_dict().items())
    assert pipe.key == f"sd21-unclip-{weights.PINNED_SHA256[UNET][:16]}"  # the content, not the mirror's name

    hub.log.clear()  # a second load: everything verified in the cache, no network at all
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_pretrained_pipeline(_cfg(tmp_path), progress=False).key == pipe.key and hub.log == []


def test_variant_fp16_fetches_the_fp16_unet_and_fp32_where_a_component_has_no_fp16_safetensors(tmp_path, hub):
    folder, files, _ = weights.ensure_weights(_cfg(tmp_path, variant="fp16"), progress=False)
    assert UNET16 in hub.fetched() and UNET not in hub.fetched()
    assert weights.component_variants(files) == {"unet": "fp16", "vae": None, "text_encoder": None,
                                                 "image_normalizer": None}  # (its fp16 file is a .bin: never)
    assert not (folder / "image_normalizer/diffusion_pytorch_model.fp16.bin").exists()
    from a2i_utils.soundiff.pipeline import load_pretrained_pipeline

    pipe = load_pretrained_pipeline(_cfg(tmp_path, variant="fp16"), progress=False)  # on the CPU: fp32 from fp16
    half = _tiny_pipeline().unet.half().float().state_dict()
    assert pipe.unet.dtype == torch.float32 and all(torch.equal(v, half[k]) for k, v in pipe.unet.state_dict().items())
    assert pipe.key == f"sd21-unclip-{weights.PINNED_SHA256[UNET16][:16]}"


def test_select_files_refuses_a_component_that_only_has_a_pickle():
    names = WANTED - {"vae/diffusion_pytorch_model.safetensors"} | {"vae/diffusion_pytorch_model.bin",
                                                                      "tokenizer/vocab.json"}
    with pytest.raises(WeightsError, match=r"^somewhere: no safetensors weights for vae .*never loads pickled"):
        select_files(names, None, "somewhere")
    with pytest.raises(ValueError, match="soundiff.variant"):
        weights.source_of(get_config("full", {"soundiff.variant": "bf16"}))


# ----------------------------------------------------------------------------------------------------------
# Content pinning
# ----------------------------------------------------------------------------------------------------------
def test_a_unet_of_another_hash_is_refused_by_name_and_never_lands(tmp_path, hub):
    hub.swap[UNET] = True  # the mirror serves other bytes under the U-Net's name
    with pytest.raises(WeightsError, match=r"unet/diffusion_pytorch_model\.safetensors: downloaded from .* SHA-256 "
                                           r".*deleted.*refused: not Stability's original"):
        weights.ensure_weights(_cfg(tmp_path), progress=False)
    unet_dir = tmp_path / "cache" / "weights" / REPO_ID.replace("/", "--") / "snapshots" / COMMIT / "unet"
    assert sorted(p.name for p in unet_dir.iterdir() if not p.name.endswith(".lock")) == ["config.json"]


def test_a_file_that_changes_after_its_first_verified_use_is_refused_and_deleted(tmp_path, hub):
    folder, _, stamp = weights.ensure_weights(_cfg(tmp_path), progress=False)
    vae = folder / "vae" / "diffusion_pytorch_model.safetensors"
    assert stamp["files"]["vae/diffusion_pytorch_model.safetensors"]["sha256"] == sha256_file(vae)  # recorded
    vae.write_bytes(b"x" * vae.stat().st_size)  # same size, other bytes: the modification time gives it away
    with pytest.raises(WeightsError, match=rf"^{vae}: SHA-256 .* differs .*first verified use.*deleted it"):
        weights.ensure_weights(_cfg(tmp_path), progress=False)
    assert not vae.exists()
    folder2, _, _ = weights.ensure_weights(_cfg(tmp_path), progress=False)  # downloaded again, verified again
    assert sha256_file(folder2 / "vae" / "diffusion_pytorch_model.safetensors") == sha256_file(
        Path(hub.repos[REPO_ID]) / "vae" / "diffusion_pytorch_model.safetensors")


def test_a_local_folder_is_used_as_it_is_and_its_wrong_unet_refused_and_kept(tmp_path, hub, hub_folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = get_config("full", {"cache_dir": tmp_path / "cache", "soundiff.pretrained_id": str(hub_folder)})
    folder, files, _ = weights.ensure_weights(cfg, progress=False)
    assert folder == hub_folder.resolve() and set(files) - {f for f in files if f.startswith("tokenizer/")} == WANTED
    source, rows = weights.cache_report(cfg)  # what doctor shows: the folder, its four weight files verified
    assert source.startswith(f"local folder {hub_folder.resolve()}") and [s for s, _ in rows] == ["ok"] * 4
    monkeypatch.setattr(weights, "PINNED_SHA256", {UNET: "0" * 64})
    with pytest.raises(WeightsError, match=rf"{UNET}: SHA-256 .* differs from 0000.*pinned.*not loaded"):
        weights.ensure_weights(cfg, progress=False)
    assert (hub_folder / UNET).is_file() and hub.log == []  # a user's file is kept; no network was used


# ----------------------------------------------------------------------------------------------------------
# Failures: one message, and resuming
# ----------------------------------------------------------------------------------------------------------
def test_a_404_gives_one_message_with_the_mirrors_and_the_local_folder(tmp_path, hub):
    cfg = _cfg(tmp_path, pretrained_id="stabilityai/stable-diffusion-2-1-unclip")
    with pytest.raises(WeightsError) as info:
        weights.ensure_weights(cfg, progress=False)
    msg = str(info.value)
    assert "stabilityai/stable-diffusion-2-1-unclip (revision main) answered 404" in msg
    assert "withdrew" in msg and "sd2-community/stable-diffusion-2-1-unclip" in msg and "radames/" in msg
    assert "set soundiff.pretrained_id to its folder" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback
    assert is_user_error(info.value)  # so `a2i` prints it as one line


def test_offline_and_unreachable_give_the_message_too(tmp_path, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match=r"HF_HUB_OFFLINE is set .*Known mirrors"):
        weights.ensure_weights(_cfg(tmp_path), progress=False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(WeightsError, match=r"could not reach http://127\.0\.0\.1:9 .*offline\?.*Known mirrors"):
        weights.ensure_weights(_cfg(tmp_path), progress=False)


def test_an_interrupted_download_resumes_where_it_stopped(tmp_path, hub):
    size = (hub.repos[REPO_ID] / UNET).stat().st_size
    hub.cut[UNET] = size // 2
    with pytest.raises(DownloadError, match=r"diffusion_pytorch_model\.safetensors\.part: download .*run again"):
        weights.ensure_weights(_cfg(tmp_path), progress=False)
    hub.log.clear()
    folder, _, _ = weights.ensure_weights(_cfg(tmp_path), progress=False)
    assert (UNET, size // 2) in hub.log  # a Range request from the byte where it stopped
    assert not {"model_index.json", "unet/config.json"} & hub.fetched()  # files done before: not fetched again
    assert sha256_file(folder / UNET) == weights.PINNED_SHA256[UNET]


def test_the_report_shows_the_source_what_is_cached_and_the_hashes(tmp_path, hub):
    cfg = _cfg(tmp_path)
    source, rows = weights.cache_report(cfg)
    assert REPO_ID in source and [s for s, _ in rows] == ["missing"]
    weights.ensure_weights(cfg, progress=False)
    source, rows = weights.cache_report(cfg, rehash=True)
    assert [s for s, _ in rows] == ["ok"] * 4 and "pinned" in rows[0][1]
