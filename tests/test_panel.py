"""The panel of notebook 06 as a person uses it (issue 22), on a stand-in loader and a slow stand-in generator.

The stand-in draws an image whose colour says which recording it was made from, so a test can tell, at the very
moment an image is shown, whether it sits beside its own recording's ground truth. The real generation path is
tested in ``test_evaluation_cli.py``; the browser check (``make browser``) drives the same panel in JupyterLab.
"""

from __future__ import annotations

import datetime
import io
import random
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from a2i_utils.config import get_config
from a2i_utils.data import Pair, load_image
from a2i_utils.evaluation import panel as panel_mod
from a2i_utils.evaluation.panel import (
    NO_IMAGE,
    NO_RECORDING,
    NO_TRUTH_UPLOAD,
    SEED_MAX,
    UPLOAD,
    GenerationPanel,
    parse_seed,
    png_bytes,
)
from a2i_utils.evaluation.systems import System

LABELS_ = ("forest", "harbour", "airport")


def colour_of(k: int) -> int:
    """The grey level of the stand-in's images for recording ``k`` (99: a file that is no held-out recording)."""
    return 20 + 40 * k if k != 99 else 250


class StandInLoader:
    """The Loader's interface: held-out pairs, a config, embeddings that name the recording, systems on request."""

    def __init__(self, cfg, pairs):
        self.cfg, self.dataset = cfg, SimpleNamespace(test=pairs)
        self.index = {Path(p.audio_path): k for k, p in enumerate(pairs)}
        self._systems: dict[str, System] = {}
        self.gates: dict[str, threading.Event] = {}  # a model whose loading waits for its event
        self.loads: list[str] = []

    def audio_embeddings(self, paths) -> torch.Tensor:
        return torch.tensor([[float(self.index.get(Path(paths[0]), 99))]])  # (1, 1): which recording

    def system(self, name: str) -> System:
        if name not in self._systems:
            self.loads.append(name)
            if name in self.gates:
                assert self.gates[name].wait(10), "the test never released the model's loading"
            self._systems[name] = System(name, None, "")
        return self._systems[name]


class SlowDraw:
    """A stand-in for ``draw``: waits ``delay()`` seconds, then an image (1, 1, 4, 4, 3) coloured by the recording."""

    def __init__(self):
        self.calls: list[dict] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.delay = lambda: 0.0

    def __call__(self, loader, system, audio, prompt="", n=1, seed=None, guidance=None, noise_level=None):
        self.calls.append({"system": system.name, "prompt": prompt, "seed": seed, "guidance": guidance,
                           "noise_level": noise_level})
        self.started.set()
        assert self.release.wait(10), "the test never released the generation"
        time.sleep(self.delay())
        return np.full((1, n, 4, 4, 3), colour_of(int(audio[0, 0])), np.uint8)


def write_wav(path: Path, seconds: float = 0.5, rate: int = 16_000, fmt: str | None = None) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format=fmt)
    return path


@pytest.fixture
def slow_draw(monkeypatch):
    d = SlowDraw()
    monkeypatch.setattr(panel_mod, "draw", d)
    return d


@pytest.fixture
def ui(tmp_path, slow_draw):
    """A panel over three held-out pairs (distinct images and sounds) on the stand-in loader."""
    pairs = []
    for k, label in enumerate(LABELS_):
        img = tmp_path / f"{k}.png"
        Image.fromarray(np.full((8, 8, 3), 60 * k + 30, np.uint8)).save(img)
        pairs.append(Pair(f"0000{k}", f"0000{k}", label, img, write_wav(tmp_path / f"{k}.wav", 0.5 + 0.1 * k), "val"))
    cfg = get_config("demo", {"cache_dir": tmp_path / "cache"})
    return GenerationPanel(StandInLoader(cfg, pairs))


def truth_png(ui, k: int) -> bytes:
    return png_bytes(load_image(ui.pairs[k].image_path, ui.loader.cfg.soundiff.image_size))


def recording_of(png: bytes) -> int:
    """Which recording the stand-in drew this (upscaled) image for."""
    grey = int(np.asarray(Image.open(io.BytesIO(png)))[0, 0, 0])
    return {colour_of(k): k for k in (0, 1, 2, 99)}[grey]


def upload_item(name: str, data: bytes) -> dict:
    return {"name": name, "content": memoryview(data), "size": len(data), "type": "audio/wav",
            "last_modified": datetime.datetime.now(datetime.timezone.utc)}


def generate(ui) -> None:
    ui.start()
    ui.thread.join(timeout=30)
    assert not ui.thread.is_alive()


# ----------------------------------------------------------------------------------------------------------
# 1. Never an image beside the wrong recording
# ----------------------------------------------------------------------------------------------------------
def watch_pairing(ui) -> list[str]:
    """Record every moment a generated image is shown beside another recording's ground truth or player."""
    problems: list[str] = []

    def check(change) -> None:
        if change["new"] == NO_IMAGE:
            return
        k = recording_of(change["new"])
        if ui.truth.value != truth_png(ui, k) or ui.audio.value != Path(ui.pairs[k].audio_path).read_bytes():
            problems.append(f"image of recording {k} shown beside recording {ui.recording.value}")

    ui.image.observe(check, names="value")
    return problems


def test_a_recording_change_during_generation_drops_the_image(ui, slow_draw):
    problems = watch_pairing(ui)
    slow_draw.release.clear()
    ui.start()
    assert slow_draw.started.wait(10)
    ui.recording.value = 1  # while the image of recording 0 is being drawn
    slow_draw.release.set()
    ui.thread.join(timeout=10)
    assert problems == []
    assert ui.image.value == NO_IMAGE and ui.caption.value == "" and ui.last_image is None
    assert ui.truth.value == truth_png(ui, 1)
    assert "recording changed" in ui.status.value and "dropped" in ui.status.value
    assert not ui.button.disabled


def test_no_interleaving_of_changes_and_generations_pairs_an_image_with_another_recording(ui, slow_draw):
    problems = watch_pairing(ui)
    rng = random.Random(0)
    slow_draw.delay = lambda: rng.uniform(0, 0.004)
    shown = 0
    for _ in range(40):
        ui.start()
        time.sleep(rng.uniform(0, 0.004))
        ui.recording.value = rng.choice([k for k in range(3) if k != ui.recording.value])
        ui.thread.join(timeout=10)
        shown += ui.image.value != NO_IMAGE
        if ui.image.value != NO_IMAGE:  # what stays on screen belongs together too
            assert recording_of(ui.image.value) == ui.recording.value
    assert problems == []
    assert shown < 40  # some generations really were overtaken by a change


# ----------------------------------------------------------------------------------------------------------
# 2. Caption, placeholders, a recording change
# ----------------------------------------------------------------------------------------------------------
def test_the_caption_names_recording_model_seed_and_settings(ui, slow_draw):
    ui.recording.value = 2
    ui.model.value = "soundiff-l"
    ui.prompt.value = "satellite image"
    ui.seed.value = "123"
    ui.noise.value = 100
    ui.guidance.value = 5.5
    generate(ui)
    assert recording_of(ui.image.value) == 2
    for part in ("airport · 00002", "SounDiff-L", "seed 123", "noise level 100", "guidance 5.5",
                 "prompt &#x27;satellite image&#x27;"):
        assert part in ui.caption.value, (part, ui.caption.value)
    assert slow_draw.calls[-1] == {"system": "soundiff-l", "prompt": "satellite image", "seed": 123, "guidance": 5.5,
                                   "noise_level": 100}
    ui.seed.value = "7"  # the caption keeps saying what made the image on screen
    assert "seed 123" in ui.caption.value


def test_a_recording_change_clears_the_image_and_shows_the_new_recording(ui):
    generate(ui)
    assert recording_of(ui.image.value) == 0 and "forest · 00000" in ui.caption.value
    ui.recording.value = 1
    assert ui.image.value == NO_IMAGE and ui.caption.value == ""
    assert ui.truth.value == truth_png(ui, 1) and "harbour · 00001" in ui.truth_caption.value
    assert ui.audio.value == Path(ui.pairs[1].audio_path).read_bytes()


def test_no_slot_is_ever_empty_so_no_broken_image_icon(ui):
    assert ui.image.value == NO_IMAGE and ui.truth.value == truth_png(ui, 0)
    ui.recording.value = UPLOAD
    for png in (ui.image.value, ui.truth.value):
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        Image.open(io.BytesIO(png)).verify()


# ----------------------------------------------------------------------------------------------------------
# 3. Uploads
# ----------------------------------------------------------------------------------------------------------
def test_a_rejected_upload_names_only_the_file_is_not_kept_and_a_later_good_one_clears_it(ui, tmp_path):
    uploads = Path(ui.loader.cfg.cache_dir) / "uploads"
    ui.upload.value = (upload_item("broken.wav", b"RIFF0000WAVEjunk"),)
    msg = ui.status.value
    assert msg.startswith("broken.wav: not used:"), msg
    assert "/" not in msg and "a2i-upload" not in msg and str(tmp_path) not in msg
    assert ui.upload.value == ()  # not counted on the button
    assert not uploads.exists() or not any(uploads.iterdir())  # not kept
    assert ui.recording.value == 0 and ui.image.value == NO_IMAGE
    good = write_wav(tmp_path / "mine.wav", 1.0).read_bytes()
    ui.upload.value = (upload_item("mine.wav", good),)
    assert ui.status.value == "using the uploaded file mine.wav"
    assert ui.recording.value == UPLOAD and ui.audio.value == good
    assert [p.read_bytes() for p in uploads.iterdir()] == [good]
    assert ui.truth.value == NO_TRUTH_UPLOAD and ui.truth_caption.value == ""
    generate(ui)
    assert recording_of(ui.image.value) == 99 and "uploaded file mine.wav" in ui.caption.value


def test_a_file_of_another_kind_is_rejected_by_its_extension(ui):
    ui.upload.value = (upload_item("song.mp3", b"ID3\x03\x00junk"),)
    assert ui.status.value == "song.mp3: not used: not a WAV, FLAC or OGG file (.mp3)"
    assert ui.upload.value == ()


@pytest.mark.parametrize("fmt", ["FLAC", "OGG"])
def test_flac_and_ogg_are_taken_as_the_button_says(ui, tmp_path, fmt):
    assert all(k in ui.upload.description for k in ("WAV", "FLAC", "OGG"))
    assert set(ui.upload.accept.split(",")) == {".wav", ".flac", ".ogg"}
    data = write_wav(tmp_path / f"x.{fmt.lower()}", 1.0, fmt=fmt).read_bytes()
    ui.upload.value = (upload_item(f"x.{fmt.lower()}", data),)
    assert ui.status.value == f"using the uploaded file x.{fmt.lower()}" and ui.audio.format == fmt.lower()


def test_uploaded_file_chosen_with_nothing_uploaded_clears_player_and_ground_truth(ui):
    assert ui.audio.value  # recording 0 is in the player
    ui.recording.value = UPLOAD
    assert ui.audio.value == b"" and ui.audio.layout.visibility == "hidden"
    assert ui.truth.value == NO_RECORDING and ui.truth_caption.value == "" and ui.image.value == NO_IMAGE
    assert "no file uploaded" in ui.status.value
    ui.start()
    assert ui.thread is None and ui.status.value.startswith("error: no file uploaded")
    ui.recording.value = 1
    assert ui.audio.layout.visibility == "visible" and ui.status.value == "ready"


# ----------------------------------------------------------------------------------------------------------
# 4. Smaller things
# ----------------------------------------------------------------------------------------------------------
def test_a_first_press_that_loads_a_model_says_loading(ui):
    ui.model.value = "soundiff-l"
    ui.loader.gates["soundiff-l"] = gate = threading.Event()
    ui.start()
    assert ui.status.value.startswith("loading SounDiff-L…"), ui.status.value
    assert ui.button.disabled
    gate.set()
    ui.thread.join(timeout=10)
    assert ui.status.value.startswith("done")
    ui.start()  # loaded now: straight to work
    assert ui.status.value.startswith("working: SounDiff-L"), ui.status.value
    ui.thread.join(timeout=10)
    assert ui.loader.loads == ["soundiff-l"]


def test_a_model_the_loader_already_holds_is_not_announced_as_loading(ui):
    ui.loader.system("baseline")
    ui.start()
    assert ui.status.value.startswith("working: baseline")
    ui.thread.join(timeout=10)


@pytest.mark.parametrize("typed", ["3.7", "-1", "99999999999", "abc", ""])
def test_the_seed_box_keeps_only_whole_seeds_in_range(ui, slow_draw, typed):
    ui.seed.value = "5"
    ui.seed.value = typed
    assert ui.seed.value == "5"  # what is on screen is what is used
    assert f"from 0 to {SEED_MAX}" in ui.status.value
    generate(ui)
    assert slow_draw.calls[-1]["seed"] == 5 and "seed 5 " in ui.caption.value


def test_parse_seed_bounds():
    assert parse_seed(" 0 ") == 0 and parse_seed(str(SEED_MAX)) == SEED_MAX
    for bad in ("-1", str(SEED_MAX + 1), "1e3", "3.0"):
        with pytest.raises(ValueError, match="whole number"):
            parse_seed(bad)


def widget_texts(box) -> str:
    """Every HTML/Label text in a widget tree."""
    texts = [getattr(box, "value", "")] if box.__class__.__name__ in ("HTML", "Label") else []
    for child in getattr(box, "children", ()):
        texts.append(widget_texts(child))
    return "\n".join(t for t in texts if isinstance(t, str))


def test_hints_and_the_same_settings_note_are_visible(ui):
    shown = widget_texts(ui.widget())
    assert "noise level: noise added to the sound" in shown and "guidance: how strongly" in shown
    assert "same image, on purpose" in shown
    assert ui.noise.tooltip and ui.guidance.tooltip


def test_messages_and_images_have_fixed_sizes_so_nothing_jumps(ui):
    box = ui.widget()
    controls, images = box.children
    assert controls.layout.width == controls.layout.min_width  # a long message wraps inside, never widens it
    assert ui.status.layout.width and ui.status.layout.min_height
    assert ui.image.layout.width == ui.image.layout.height == f"{panel_mod.DISPLAY_PX}px"
    assert ui.caption.layout.min_height and box.layout.align_items == "flex-start"


def test_the_displayed_panel_reads_as_a_sentence_where_no_live_widget_is(ui, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append((obj, raw)))
    assert ui.show() is ui
    (bundle, raw), = shown
    assert raw and bundle["text/plain"] == panel_mod.STATIC_TEXT  # not "HBox(children=(VBox(..."
    assert "model_id" in bundle["application/vnd.jupyter.widget-view+json"]
