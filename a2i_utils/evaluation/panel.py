"""An interactive panel (ipywidgets): pick a held-out recording or upload one, listen, generate, compare.

In a notebook: ``GenerationPanel(loader).show()``; on Colab (or any Jupyter): ``from a2i_utils.evaluation.panel
import panel; panel()`` builds the loader of the preset itself. Generation runs in a background thread; the
button is disabled and the status line says "loading ..." or "working ..." until the image is there, so the kernel
stays responsive. The same code runs in demo and full mode: only the loader's config differs.

What a person sees is kept consistent: the generated image is shown only beside the recording (ground truth and
player) it was made from, with a caption naming the recording, model, seed and settings. A recording change while
an image is being generated drops that image (a lock orders the check and the display).
"""

from __future__ import annotations

import hashlib
import html
import io
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from a2i_utils.evaluation.systems import LABELS, NAMED, Loader, draw

DISPLAY_PX = 192  # images are shown at this size (nearest-neighbour upscaling of the small demo images)
UPLOAD = -1  # the recording dropdown's value for "the uploaded file"
SEED_MAX = 2**32 - 1  # seeds are whole numbers 0 .. SEED_MAX
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
CONTROLS_PX = 430  # width of the controls column: fixed, so no message can push the images aside
STATIC_TEXT = "(the interactive generation panel: run this cell in a live kernel to use it)"
SAME_SETTINGS_NOTE = ("The same recording, model, seed and settings always give the same image, on purpose "
                      "(every draw is seeded): change the seed for another image.")
NOISE_HINT = ("noise level: noise added to the sound's embedding before drawing (unCLIP's augmentation). "
              "0 = use it as heard; higher = a freer, less faithful picture.")
GUIDANCE_HINT = ("guidance: how strongly the image follows the sound. 1 = no extra push; higher = closer to "
                 "what the model links with the sound, less varied, eventually oversaturated.")


def png_bytes(image: np.ndarray, px: int = DISPLAY_PX) -> bytes:
    """uint8 (H, W, 3) -> PNG bytes, upscaled by an integer factor to about ``px``."""
    from PIL import Image

    k = max(1, px // image.shape[0])
    buf = io.BytesIO()
    Image.fromarray(image.repeat(k, 0).repeat(k, 1)).save(buf, format="PNG")
    return buf.getvalue()


def placeholder_png(text: str, px: int = DISPLAY_PX) -> bytes:
    """A light grey ``px`` x ``px`` PNG with ``text`` in it: what an image slot shows when it has no image."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (px, px), (238, 238, 238))
    draw_ = ImageDraw.Draw(img)
    draw_.rectangle((0, 0, px - 1, px - 1), outline=(200, 200, 200))
    for k, line in enumerate(text.split("\n")):
        draw_.text((12, px // 2 - 12 + 14 * k), line, fill=(110, 110, 110))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


NO_IMAGE = placeholder_png("no image yet for this\nrecording: press Generate")
NO_TRUTH_UPLOAD = placeholder_png("an uploaded file has\nno ground truth")
NO_RECORDING = placeholder_png("no file uploaded yet")


def parse_seed(text: str) -> int:
    """The seed typed in the box: a whole number 0 .. SEED_MAX, else ValueError with what is allowed."""
    t = str(text).strip()
    if not t.isdigit() or int(t) > SEED_MAX:
        raise ValueError(f"seed must be a whole number from 0 to {SEED_MAX}, not {t!r}")
    return int(t)


@dataclass(frozen=True)
class Request:
    """What one press of Generate asked for, fixed when it was pressed (the caption says exactly this)."""

    recording: str  # "forest · 00012" or "uploaded file mine.flac"
    audio: Path
    model: str
    prompt: str
    seed: int
    noise_level: int
    guidance: float
    shown: int  # the panel's recording counter when pressed: the image is shown only if it has not moved

    def caption(self) -> str:
        """One line naming the recording, model, seed and settings that made the image."""
        prompt = repr(self.prompt) if self.prompt else "none"
        return (f"{self.recording} · {LABELS.get(self.model, self.model)} · seed {self.seed} · "
                f"noise level {self.noise_level} · guidance {self.guidance:g} · prompt {prompt}")


class GenerationPanel:
    """The widgets, their state, and one synchronous :meth:`generate_now` that the button runs in a thread."""

    def __init__(self, loader: Loader, systems=tuple(NAMED), background: bool = True) -> None:
        from a2i_utils.imagebind.retrieval import one_pair_per_recording

        self.loader, self.background = loader, background
        self.pairs = one_pair_per_recording(loader.dataset.test)  # the test recordings, as in notebook 06
        self.upload_path: Path | None = None
        self.upload_name = ""
        self.thread: threading.Thread | None = None
        self.last_image: np.ndarray | None = None
        self.last_request: Request | None = None
        self._lock = threading.Lock()  # orders "which recording is shown" against "show this image"
        self._shown = 0  # bumped at every recording change: an image made for an older value is dropped
        self._used: set[str] = set()  # models this panel has loaded (a first use may train or load: "loading")
        self._seed = loader.cfg.seed
        self._build_widgets(systems)
        self._show_recording()

    def _build_widgets(self, systems) -> None:
        """Create the controls, the two image slots with captions, and the status line."""
        import ipywidgets as w

        sc, wide = self.loader.cfg.soundiff, {"width": f"{CONTROLS_PX - 10}px"}
        options = [(f"{p.label} · {p.id}", i) for i, p in enumerate(self.pairs)] + [("uploaded file", UPLOAD)]
        self.recording = w.Dropdown(options=options, value=0, description="recording", layout=wide)
        self.upload = w.FileUpload(accept=",".join(AUDIO_SUFFIXES), multiple=False,
                                   description="upload WAV/FLAC/OGG", layout={"width": "230px"})
        self.audio = w.Audio(autoplay=False, loop=False, controls=True)
        self.model = w.Dropdown(options=[(LABELS.get(s, s), s) for s in systems], value=systems[0],
                                description="model", layout=wide)
        self.prompt = w.Text(value="", placeholder="(none)", description="prompt", layout=wide)
        self.seed = w.Text(value=str(self._seed), description="seed", placeholder=f"0 .. {SEED_MAX}",
                           continuous_update=False, tooltip=f"a whole number from 0 to {SEED_MAX}")
        self.noise = w.IntSlider(value=sc.noise_level, min=0, max=999, step=10, description="noise level",
                                 tooltip=NOISE_HINT, layout=wide)
        self.guidance = w.FloatSlider(value=sc.guidance_scale, min=1.0, max=15.0, step=0.5, description="guidance",
                                      tooltip=GUIDANCE_HINT, layout=wide)
        self.hints = w.HTML(_small(NOISE_HINT) + "<br>" + _small(GUIDANCE_HINT), layout=wide)
        self.note = w.HTML(_small(SAME_SETTINGS_NOTE), layout=wide)
        self.button = w.Button(description="Generate", button_style="primary", icon="paint-brush")
        # Fixed size, wrapping: a long message (a rejected upload) grows neither the column nor the page sideways.
        self.status = w.HTML(value="ready", layout={"width": f"{CONTROLS_PX - 10}px", "min_height": "3.6em"})
        px = {"width": f"{DISPLAY_PX}px", "height": f"{DISPLAY_PX}px"}
        self.image = w.Image(value=NO_IMAGE, format="png", width=DISPLAY_PX, height=DISPLAY_PX, layout=px)
        self.truth = w.Image(value=NO_IMAGE, format="png", width=DISPLAY_PX, height=DISPLAY_PX, layout=px)
        cap = {"width": f"{DISPLAY_PX}px", "min_height": "6em"}
        self.caption = w.HTML(value="", layout=cap)
        self.truth_caption = w.HTML(value="", layout=cap)
        for name in ("recording", "upload", "audio", "model", "prompt", "seed", "noise", "guidance", "button", "status",
                     "image", "truth", "caption", "truth_caption"):
            getattr(self, name).add_class(f"a2i-{name.replace('_', '-')}")  # stable handles for scripts/browser_check
        self.recording.observe(lambda _: self._show_recording(), names="value")
        self.upload.observe(lambda _: self._take_upload(), names="value")
        self.seed.observe(lambda _: self._check_seed(), names="value")
        self.button.on_click(lambda _: self.start())

    def say(self, text: str) -> None:
        """Put ``text`` on the status line (plain text, escaped)."""
        self.status.value = html.escape(text)

    # -- inputs -----------------------------------------------------------------------------------------
    def audio_path(self) -> Path:
        """The recording to generate from: the chosen held-out one, or the uploaded file."""
        if self.recording.value == UPLOAD:
            if self.upload_path is None:
                raise ValueError("no file uploaded yet: use the upload button first")
            return self.upload_path
        return Path(self.pairs[self.recording.value].audio_path)

    def recording_name(self) -> str:
        """The chosen recording as the caption names it."""
        if self.recording.value == UPLOAD:
            return f"uploaded file {self.upload_name}"
        p = self.pairs[self.recording.value]
        return f"{p.label} · {p.id}"

    def _show_recording(self) -> None:
        """Show the chosen recording: player, ground truth, and no generated image (it belonged to another)."""
        with self._lock:
            self._shown += 1
            self.image.value, self.caption.value = NO_IMAGE, ""
            self.last_image = None
            if self.recording.value == UPLOAD and self.upload_path is None:
                self.audio.value, self.audio.layout.visibility = b"", "hidden"  # nothing to play
                self.truth.value, self.truth_caption.value = NO_RECORDING, ""
                self.say("no file uploaded yet: use the upload button first")
                return
            path = self.audio_path()
            self.audio.format = path.suffix.lstrip(".").lower() or "wav"
            self.audio.value, self.audio.layout.visibility = path.read_bytes(), "visible"
            self.truth.value = self._truth_png()
            upload = self.recording.value == UPLOAD  # its placeholder already says there is no ground truth
            self.truth_caption.value = "" if upload else html.escape(f"ground truth of {self.recording_name()}")
            working = self.thread is not None and self.thread.is_alive()
            self.say("working (the recording changed: that image will be dropped) ..." if working else "ready")

    def _truth_png(self) -> bytes:
        """The chosen held-out recording's true image (PNG), or the placeholder of an upload."""
        from a2i_utils.data import load_image

        if self.recording.value == UPLOAD:
            return NO_TRUTH_UPLOAD
        return png_bytes(load_image(self.pairs[self.recording.value].image_path, self.loader.cfg.soundiff.image_size))

    def _check_seed(self) -> None:
        """Keep the seed box a whole number in range: anything else is reset to the last valid seed."""
        try:
            self._seed = parse_seed(self.seed.value)
        except ValueError as err:
            self.say(str(err))
        self.seed.value = str(self._seed)  # "3.7" or "-1" does not stay on screen while another seed is used

    def _take_upload(self) -> None:
        """Validate the uploaded file, keep it in the cache (named by its hash) and select it; reject it otherwise."""
        if not self.upload.value:
            return
        item = self.upload.value[0]
        data, name = bytes(item["content"]), Path(item["name"]).name
        try:
            self._validate_upload(name, data)
        except ValueError as err:
            self.upload.value = ()  # not counted on the button, not kept anywhere
            self.say(f"{name}: not used: {err}")
            return
        from a2i_utils.io import atomic_write_bytes

        digest = hashlib.sha256(data).hexdigest()[:16]
        path = Path(self.loader.cfg.cache_dir) / "uploads" / f"{digest}{Path(name).suffix.lower()}"
        atomic_write_bytes(path, data)
        self.set_upload(path, name)
        self.say(f"using the uploaded file {name}")

    @staticmethod
    def _validate_upload(name: str, data: bytes) -> None:
        """Decode ``data`` from a private temporary file; ValueError naming only ``name`` if it is no usable audio."""
        from a2i_utils.data.audio import load_audio

        suffix = Path(name).suffix.lower()
        if suffix not in AUDIO_SUFFIXES:
            raise ValueError(f"not a WAV, FLAC or OGG file ({suffix or 'no extension'})")
        with tempfile.TemporaryDirectory(prefix="a2i-upload-") as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            try:
                load_audio(path, 16_000)
            except ValueError as err:  # our messages start with the file's path: a person knows only the name
                raise ValueError(str(err).replace(f"{path}: ", "").replace(str(path), name)) from None

    def set_upload(self, path: Path, name: str | None = None) -> None:
        """Use ``path`` as the uploaded recording and select it (also for scripts and tests)."""
        self.upload_path, self.upload_name = Path(path), name or Path(path).name
        if self.recording.value == UPLOAD:
            self._show_recording()
        else:
            self.recording.value = UPLOAD

    # -- generation -----------------------------------------------------------------------------------------
    def request(self) -> Request:
        """The current settings, fixed (ValueError if there is no recording to generate from)."""
        return Request(self.recording_name(), self.audio_path(), self.model.value, self.prompt.value,
                       self._seed, int(self.noise.value), float(self.guidance.value), self._shown)

    def generate_now(self, req: Request | None = None) -> np.ndarray:
        """Generate one image (H, W, 3) for ``req`` (default: the current settings) and show it if still current."""
        req = req or self.request()
        audio = self.loader.audio_embeddings([req.audio])  # (1, D)
        system = self.loader.system(req.model)
        self._used.add(req.model)
        self.say(f"working: {LABELS.get(req.model, req.model)}, seed {req.seed} ...")
        image = draw(self.loader, system, audio, req.prompt, n=1, seed=req.seed, guidance=req.guidance,
                     noise_level=req.noise_level)[0, 0]  # (H, W, 3)
        if not self._show(req, image):
            raise RecordingChanged("the recording changed while generating: that image was dropped; "
                                   "press Generate again")
        return image

    def _show(self, req: Request, image: np.ndarray) -> bool:
        """Show ``image`` with its caption if the recording it was made from is still the one shown."""
        with self._lock:
            if req.shown != self._shown:
                return False
            self.last_image, self.last_request = image, req
            self.caption.value = html.escape(req.caption())
            self.image.value = png_bytes(image)
            return True

    def _run(self, req: Request) -> None:
        """The button's work: generate, report the time or the error, re-enable the button."""
        t0 = time.perf_counter()
        try:
            self.generate_now(req)
            self.say(f"done in {time.perf_counter() - t0:.1f} s")
        except RecordingChanged as err:
            self.say(str(err))
        except Exception as err:  # noqa: BLE001  (shown in the panel: a widget callback has nowhere else to raise)
            self.say(f"error: {err}")
        finally:
            self.button.disabled = False

    def start(self) -> None:
        """Say "loading" or "working", then generate in a background thread (here when ``background`` is False)."""
        if self.thread is not None and self.thread.is_alive():
            return
        try:
            req = self.request()
        except ValueError as err:
            self.say(f"error: {err}")
            return
        label = LABELS.get(req.model, req.model)
        self.button.disabled = True
        # A first use may load or even train the model (seconds to minutes): say so. The loader keeps what it loaded.
        first = req.model not in self._used and req.model not in getattr(self.loader, "_systems", {})
        self.say(f"loading {label}… (first use of this model: it may take a while)" if first
                 else f"working: {label}, seed {req.seed} ...")
        if not self.background:
            self._run(req)
            return
        self.thread = threading.Thread(target=self._run, args=(req,), daemon=True)
        self.thread.start()

    # -- layout ---------------------------------------------------------------------------------------------
    def widget(self):
        """The panel as one ipywidgets box: controls on the left, the two images with captions on the right."""
        import ipywidgets as w

        style = w.HTML("<style>.a2i-panel .widget-html-content { line-height: 1.35; }</style>")
        controls = w.VBox([style, self.recording, self.upload, self.audio, self.model, self.prompt, self.seed,
                           self.noise, self.guidance, self.hints, self.button, self.status, self.note],
                          layout={"width": f"{CONTROLS_PX}px", "min_width": f"{CONTROLS_PX}px"})
        slot = {"width": f"{DISPLAY_PX + 12}px", "align_items": "flex-start"}
        images = w.HBox([w.VBox([w.HTML("<b>generated</b>"), self.image, self.caption], layout=slot),
                         w.VBox([w.HTML("<b>ground truth</b>"), self.truth, self.truth_caption], layout=slot)],
                        layout={"align_items": "flex-start"})
        box = w.HBox([controls, images], layout={"align_items": "flex-start"})
        box.add_class("a2i-panel")
        return box

    def show(self) -> GenerationPanel:
        """Display the panel (in a notebook) and return it.

        A viewer without the live widget (a stored notebook, a kernel that is gone) shows the output's text: a
        sentence saying what to do, not the widget's repr (``HBox(children=(VBox(...``)."""
        from IPython.display import display

        bundle = self.widget()._repr_mimebundle_()  # {"application/vnd.jupyter.widget-view+json": ..., "text/plain"}
        bundle["text/plain"] = STATIC_TEXT
        display(bundle, raw=True)
        return self


class RecordingChanged(RuntimeError):
    """The recording was changed while its image was being generated: the image is not shown."""


def _small(text: str) -> str:
    """``text`` as a small grey HTML line (escaped)."""
    return f'<span style="font-size: 0.85em; color: #555">{html.escape(text)}</span>'


def panel(mode: str | None = None, overrides: dict | None = None) -> GenerationPanel:
    """Build and display the panel for the preset ``mode`` (default: A2I_MODE or demo): the Colab entry point."""
    from a2i_utils.config import get_config

    return GenerationPanel(Loader(get_config(mode, overrides), progress=True)).show()
