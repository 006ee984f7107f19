"""An interactive panel (ipywidgets): pick a held-out recording or upload one, listen, generate, compare.

In a notebook: ``GenerationPanel(loader).show()``; on Colab (or any Jupyter): ``from a2i_utils.evaluation.panel
import panel; panel()`` builds the loader of the preset itself. Generation runs in a background thread; the
button is disabled and the status line says "working" until the image is there, so the kernel stays responsive.
The same code runs in demo and full mode: only the loader's config differs.
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np

from a2i_utils.evaluation.systems import LABELS, NAMED, Loader, draw

DISPLAY_PX = 192  # images are shown at this size (nearest-neighbour upscaling of the small demo images)
UPLOAD = -1  # the recording dropdown's value for "the uploaded file"


def png_bytes(image: np.ndarray, px: int = DISPLAY_PX) -> bytes:
    """uint8 (H, W, 3) -> PNG bytes, upscaled by an integer factor to about ``px``."""
    from PIL import Image

    k = max(1, px // image.shape[0])
    buf = io.BytesIO()
    Image.fromarray(image.repeat(k, 0).repeat(k, 1)).save(buf, format="PNG")
    return buf.getvalue()


class GenerationPanel:
    """The widgets, their state, and one synchronous :meth:`generate_now` that the button runs in a thread."""

    def __init__(self, loader: Loader, systems=tuple(NAMED), background: bool = True) -> None:
        import ipywidgets as w

        from a2i_utils.imagebind.retrieval import one_pair_per_recording

        self.loader, self.background = loader, background
        self.pairs = one_pair_per_recording(loader.dataset.val)
        self.upload_path: Path | None = None
        self.thread: threading.Thread | None = None
        self.last_image: np.ndarray | None = None
        sc = loader.cfg.soundiff
        options = [(f"{p.label} · {p.id}", i) for i, p in enumerate(self.pairs)] + [("uploaded file", UPLOAD)]
        self.recording = w.Dropdown(options=options, value=0, description="recording")
        self.upload = w.FileUpload(accept=".wav,.flac,.ogg", multiple=False, description="upload WAV")
        self.audio = w.Audio(autoplay=False, loop=False, controls=True)
        self.model = w.Dropdown(options=[(LABELS.get(s, s), s) for s in systems], value=systems[0],
                                description="model")
        self.prompt = w.Text(value="", placeholder="(none)", description="prompt")
        self.seed = w.IntText(value=loader.cfg.seed, description="seed")
        self.noise = w.IntSlider(value=sc.noise_level, min=0, max=999, step=10, description="noise level")
        self.guidance = w.FloatSlider(value=sc.guidance_scale, min=1.0, max=15.0, step=0.5, description="guidance")
        self.button = w.Button(description="Generate", button_style="primary", icon="paint-brush")
        self.status = w.Label(value="ready")
        self.image = w.Image(format="png", width=DISPLAY_PX, height=DISPLAY_PX)
        self.truth = w.Image(format="png", width=DISPLAY_PX, height=DISPLAY_PX)
        self.recording.observe(lambda _: self._show_recording(), names="value")
        self.upload.observe(lambda _: self._take_upload(), names="value")
        self.button.on_click(lambda _: self.start())
        self._show_recording()

    # -- inputs -----------------------------------------------------------------------------------------
    def audio_path(self) -> Path:
        """The recording to generate from: the chosen held-out one, or the uploaded file."""
        if self.recording.value == UPLOAD:
            if self.upload_path is None:
                raise ValueError("no file uploaded yet: use the upload button first")
            return self.upload_path
        return Path(self.pairs[self.recording.value].audio_path)

    def _show_recording(self) -> None:
        """Load the chosen recording into the player and its ground-truth image beside the output."""
        from a2i_utils.data import load_image

        try:
            path = self.audio_path()
        except ValueError as err:
            self.status.value = str(err)
            return
        self.audio.format = path.suffix.lstrip(".").lower() or "wav"
        self.audio.value = path.read_bytes()
        if self.recording.value == UPLOAD:
            self.truth.value = png_bytes(np.full((8, 8, 3), 235, np.uint8))  # no ground truth for an upload
        else:
            size = self.loader.cfg.soundiff.image_size
            self.truth.value = png_bytes(load_image(self.pairs[self.recording.value].image_path, size))

    def _take_upload(self) -> None:
        """Write the uploaded file into the cache (named by its hash), validate it, select it."""
        import hashlib

        from a2i_utils.data.audio import load_audio

        if not self.upload.value:
            return
        item = self.upload.value[0]
        data = bytes(item["content"])
        name = Path(item["name"])
        path = Path(self.loader.cfg.cache_dir) / "uploads" / f"{hashlib.sha256(data).hexdigest()[:16]}{name.suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        try:
            load_audio(path, 16_000)
        except ValueError as err:
            self.status.value = f"{name}: {err}"
            return
        self.set_upload(path)

    def set_upload(self, path: Path) -> None:
        """Use ``path`` as the uploaded recording and select it (also for scripts and tests)."""
        self.upload_path = Path(path)
        if self.recording.value == UPLOAD:
            self._show_recording()
        else:
            self.recording.value = UPLOAD

    # -- generation -----------------------------------------------------------------------------------------
    def generate_now(self) -> np.ndarray:
        """Generate one image (H, W, 3) with the current settings, synchronously, and show it."""
        audio = self.loader.audio_embeddings([self.audio_path()])  # (1, D)
        system = self.loader.system(self.model.value)
        image = draw(self.loader, system, audio, self.prompt.value, n=1, seed=int(self.seed.value),
                     guidance=float(self.guidance.value), noise_level=int(self.noise.value))[0, 0]
        self.last_image = image
        self.image.value = png_bytes(image)
        return image

    def _run(self) -> None:
        """The button's work: generate, report the time or the error, re-enable the button."""
        t0 = time.perf_counter()
        try:
            self.generate_now()
            self.status.value = f"done in {time.perf_counter() - t0:.1f} s"
        except Exception as err:  # noqa: BLE001  (shown in the panel: a widget callback has nowhere else to raise)
            self.status.value = f"error: {err}"
        finally:
            self.button.disabled = False

    def start(self) -> None:
        """Show "working", then generate in a background thread (or here when ``background`` is False)."""
        if self.thread is not None and self.thread.is_alive():
            return
        self.button.disabled = True
        self.status.value = f"working: {LABELS.get(self.model.value, self.model.value)}, seed {self.seed.value} ..."
        if not self.background:
            self._run()
            return
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    # -- layout ---------------------------------------------------------------------------------------------
    def widget(self):
        """The panel as one ipywidgets box."""
        import ipywidgets as w

        controls = w.VBox([self.recording, self.upload, self.audio, self.model, self.prompt, self.seed, self.noise,
                           self.guidance, w.HBox([self.button, self.status])])
        images = w.HBox([w.VBox([w.Label("generated"), self.image]), w.VBox([w.Label("ground truth"), self.truth])])
        return w.HBox([controls, images])

    def show(self) -> GenerationPanel:
        """Display the panel (in a notebook) and return it."""
        from IPython.display import display

        display(self.widget())
        return self


def panel(mode: str | None = None, overrides: dict | None = None) -> GenerationPanel:
    """Build and display the panel for the preset ``mode`` (default: A2I_MODE or demo): the Colab entry point."""
    from a2i_utils.config import get_config

    return GenerationPanel(Loader(get_config(mode, overrides), progress=True)).show()
