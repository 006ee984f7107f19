"""``a2i generate`` on files a test writes (WAV and FLAC at odd rates, stereo, broken files), on a tiny pipeline.

The pipeline is a random tiny StableUnCLIP (16 px) and the ImageBind a small stand-in over the real audio
preprocessing (the real reader, resampler and fbank), so the test takes seconds; the file handling, the
embedding cache, generation, reranking, file names and exit status are the real ones.
"""

from __future__ import annotations

import copy
import datetime
import functools

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from a2i_utils.cli import main
from a2i_utils.config import get_config
from a2i_utils.evaluation import systems
from a2i_utils.soundiff.mini import build_unet, build_vae, offline_tokenizer, tiny_text_encoder
from a2i_utils.soundiff.pipeline import assemble

D = 16
TINY = {"soundiff.image_size": 16, "soundiff.mini_vae_channels": (8, 8), "soundiff.mini_unet_channels": (16, 16),
        "soundiff.mini_text_dim": 16}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@functools.lru_cache(maxsize=1)
def _tiny_pipe():
    sc = get_config("demo", TINY).soundiff
    torch.manual_seed(0)
    tok = offline_tokenizer(20)
    pipe = assemble(build_unet(sc, D, 8), build_vae(sc), tiny_text_encoder(len(tok), 16, 20, 0), tok, D, 16)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.image_normalizer):
        m.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class TinyEmbedder:
    """ImageBind's interface over a fixed random projection of its real inputs (fbank clips, images)."""

    identity = "tiny-test-embedder"
    device = "cpu"
    dtype = torch.float32
    embed_dim = D

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.audio = torch.randn(128, D, generator=g)
        self.vision = torch.randn(3, D, generator=g)

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        if modality == "audio":
            return x.mean(dim=(1, 2, 4)) @ self.audio * 20 / D  # (B, 3, 1, 128, 204) -> (B, D)
        return x.mean(dim=(2, 3)) @ self.vision  # (B, 3, 224, 224) -> (B, D)


@pytest.fixture
def tiny_loader(monkeypatch, tmp_path):
    """Every Loader gets the tiny pipeline as every system and the stand-in embedder."""
    pipe = copy.deepcopy(_tiny_pipe())
    monkeypatch.setattr(systems.Loader, "embedder", property(lambda self: TinyEmbedder()))
    monkeypatch.setattr(systems.Loader, "base", property(lambda self: pipe))
    monkeypatch.setenv("A2I_CACHE", str(tmp_path / "cache"))
    return pipe


def write_audio(path, rate: int, seconds: float, channels: int = 1, fmt: str | None = None):
    """A chirp with a little noise, written with soundfile."""
    t = np.arange(int(rate * seconds)) / rate
    x = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.01 * np.random.default_rng(0).standard_normal(len(t))
    data = np.stack([x, 0.5 * x], axis=1)[:, :channels] if channels > 1 else x
    sf.write(path, data.astype(np.float32), rate, format=fmt)
    return path


def test_generate_reads_wav_flac_and_stereo_at_other_rates(tiny_loader, tmp_path):
    files = [write_audio(tmp_path / "a.wav", 44_100, 3.0),
             write_audio(tmp_path / "b.flac", 8_000, 12.0),
             write_audio(tmp_path / "c.wav", 48_000, 1.5, channels=2)]
    out = tmp_path / "out"
    status = main(["generate", *map(str, files), "--model", "baseline", "--n", "2", "--steps", "2", "--seed", "5",
                   "--out", str(out), "--set", "soundiff.image_size=16"])
    assert status == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == sorted(f"{s}-baseline-seed{k}.png" for s in "abc" for k in (5, 6))
    img = np.asarray(Image.open(out / "a-baseline-seed5.png"))
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8 and img.std() > 0


def test_generate_is_reproducible_and_seeds_differ(tiny_loader, tmp_path):
    f = write_audio(tmp_path / "a.wav", 32_000, 4.0)
    outs = []
    for k, seed in enumerate(("3", "3", "4")):
        out = tmp_path / f"o{k}"
        assert main(["generate", str(f), "--model", "baseline", "--steps", "2", "--seed", seed, "--out", str(out),
                     "--set", "soundiff.image_size=16"]) == 0
        outs.append(np.asarray(Image.open(next(out.glob("*.png")))))
    assert np.array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


def test_a_bad_file_is_named_and_skipped_while_the_others_generate(tiny_loader, tmp_path, capsys):
    good = write_audio(tmp_path / "good.flac", 11_025, 2.5)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.ogg"
    text.write_text("not audio")
    missing = tmp_path / "missing.wav"
    out = tmp_path / "out"
    status = main(["generate", str(empty), str(good), str(text), str(missing), "--model", "baseline", "--steps", "2",
                   "--out", str(out), "--set", "soundiff.image_size=16"])
    err = capsys.readouterr().err
    assert status == 1
    for bad in (empty, text, missing):
        assert f"skipped {bad}" in err
    assert "empty" in err
    assert [p.name.split("-")[0] for p in out.glob("*.png")] == ["good"]


def test_only_bad_files_generate_nothing(tiny_loader, tmp_path, capsys):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert main(["generate", str(empty), "--model", "baseline", "--out", str(tmp_path / "o")]) == 1
    assert "nothing generated" in capsys.readouterr().err


def test_rerank_keeps_the_candidate_nearest_the_recording(tiny_loader, tmp_path):
    from a2i_utils.evaluation.metrics import embed_images
    from a2i_utils.evaluation.rerank import audio_image_similarity, rerank_generate
    from a2i_utils.soundiff.generate import generate

    emb = TinyEmbedder()
    audio = torch.randn(2, D)
    kw = {"prompt": "", "seed": 0, "steps": 2, "guidance": 3.0, "noise_level": 0}
    chosen, sim = rerank_generate(tiny_loader, audio, audio, emb, k=3, n=1, **kw)
    cands = generate(tiny_loader, audio, n=3, **kw)  # the same seeds 0, 1, 2
    s = audio_image_similarity(embed_images(emb, cands).reshape(2, 3, -1), audio)  # (2, 3)
    for i in range(2):
        assert np.array_equal(chosen[i, 0], cands[i, int(s[i].argmax())])
        assert sim[i, 0] == pytest.approx(float(s[i].max()), abs=1e-5)
    out = tmp_path / "o"
    f = write_audio(tmp_path / "r.wav", 24_000, 3.0)
    assert main(["generate", str(f), "--model", "baseline", "--steps", "2", "--rerank", "3", "--n", "2", "--seed", "0",
                 "--out", str(out), "--set", "soundiff.image_size=16"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["r-baseline-seed0-best3.png", "r-baseline-seed3-best3.png"]


def test_unknown_model_is_a_clear_error(tiny_loader, tmp_path, capsys):
    f = write_audio(tmp_path / "a.wav", 16_000, 2.0)
    assert main(["generate", str(f), "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "not one of baseline, soundiff-l, soundiff-s" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# The panel
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_panel(tiny_loader, tmp_path, monkeypatch):
    """A panel over two written held-out pairs, on the tiny pipeline."""
    from types import SimpleNamespace

    from a2i_utils.data import Pair
    from a2i_utils.evaluation.panel import GenerationPanel

    pairs = []
    for k, label in enumerate(("forest", "harbour")):
        img = tmp_path / f"{k}.jpg"
        Image.fromarray(np.full((32, 32, 3), 40 * k + 50, np.uint8)).save(img)
        pairs.append(Pair(f"0000{k}", f"0000{k}", label, img, write_audio(tmp_path / f"{k}.wav", 22_050, 3.0), "val"))
    monkeypatch.setattr(systems.Loader, "dataset", property(lambda self: SimpleNamespace(test=pairs)))
    loader = systems.Loader(get_config("demo", TINY | {"cache_dir": tmp_path / "cache"}), progress=False)
    return GenerationPanel(loader, systems=("baseline",))


def test_panel_generates_in_the_background_with_a_working_state(tiny_panel):
    p = tiny_panel
    p.seed.value = "7"  # the seed box is text, validated (issue 22)
    p.start()
    assert p.button.disabled and p.status.value.startswith(("loading baseline", "working"))  # first use: loading
    p.thread.join(timeout=60)
    assert not p.button.disabled and p.status.value.startswith("done"), p.status.value
    audio = p.loader.audio_embeddings([p.pairs[0].audio_path])
    direct = systems.draw(p.loader, p.loader.system("baseline"), audio, "", n=1, seed=7)[0, 0]
    assert np.array_equal(p.last_image, direct)
    assert p.image.value[:4] == b"\x89PNG" and p.truth.value[:4] == b"\x89PNG"


def test_panel_takes_an_uploaded_recording_and_reports_a_bad_one(tiny_panel, tmp_path):
    from a2i_utils.evaluation.panel import UPLOAD

    p = tiny_panel
    p.recording.value = UPLOAD
    assert "no file uploaded" in p.status.value
    p.background = False
    p.start()
    assert p.status.value.startswith("error: no file uploaded")
    p.set_upload(write_audio(tmp_path / "mine.flac", 12_000, 5.0))
    assert p.audio.format == "flac" and len(p.audio.value) > 0
    p.start()
    assert p.status.value.startswith("done") and p.last_image.shape == (16, 16, 3)
    p.upload.value = ({"name": "broken.wav", "content": memoryview(b"RIFF0000WAVEjunk"), "size": 16,
                       "type": "audio/wav",
                       "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    assert p.status.value.startswith("broken.wav:")


def test_evaluate_refuses_fewer_than_three_recordings_before_drawing(tmp_path, capsys, monkeypatch):
    """FD/KD intervals need 3 recordings: said at once, before any model is loaded or image drawn."""
    from a2i_utils.evaluation import systems

    def no_loader(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad argument was refused")

    monkeypatch.setattr(systems, "Loader", no_loader)
    assert main(["evaluate", "--n-recordings", "2", "--out", str(tmp_path / "o")]) == 2
    assert "at least 3 recordings" in capsys.readouterr().err
