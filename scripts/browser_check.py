"""The generation panel as a person uses it: JupyterLab on 127.0.0.1, driven in headless Chromium by Playwright.

    python scripts/browser_check.py [--out build/browser]        # `make browser` installs what it needs first

It writes a small notebook that shows the panel over a tiny demo config (its own cache under ``--out``: trained
from scratch on the first run, ~2 minutes on 2 cores, reused afterwards), executes it headless the way
``scripts/run_notebooks.py store`` does and opens the stored copy un-run (a picture, no raw widget text), then runs
it in the browser and, as a person would: changes recording, model, seed and guidance; generates; uploads a bad and
a good file; changes the recording while an image is being generated. After each step it saves a screenshot
(``--out/NN-step.png``) and asserts what a person would check: the image, its caption, the ground truth and the
player belong to one recording (the image bytes against a generation of the same settings made here, the ground
truth and sound against their files), no traceback, no raw widget text, no message with an internal path, no
layout jump. The browser is Debian's ``chromium`` (never a downloaded one), with a fresh profile.

Exit status 0 when every check passed; otherwise the failed check is printed and the screenshots are kept.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# A demo config small enough to train from scratch in about two minutes on 2 cores (its pictures mean little).
TINY = {"data.per_class": 3, "data.image_size": 32, "data.duration_s": 3.0, "imagebind.mini_vision_epochs": 1,
        "imagebind.mini_audio_epochs": 1, "soundiff.mini_vae_steps": 5, "soundiff.mini_unet_steps": 5,
        "soundiff.steps": 3, "soundiff.steps_s": 3, "soundiff.sample_steps": 2}
SLOW_S = 4.0  # extra seconds per image in the check's kernel: time to change the recording mid-generation
RAW_WIDGET_TEXT = ("HBox(children", "VBox(children", "Error displaying widget", "model not found")
PAGE_JS_BYTES = """async (sel) => {
  const el = document.querySelector(sel);
  if (!el || !el.src) return null;
  const buf = new Uint8Array(await (await fetch(el.src)).arrayBuffer());
  let s = ""; for (const b of buf) s += String.fromCharCode(b);
  return btoa(s);
}"""


def notebook_cells(cache: Path) -> list:
    """The check's notebook: a setup cell (tiny config, a loader, a slowed draw), then the panel's cell."""
    setup = f"""import time

import torch

import a2i_utils.evaluation.panel as panel_module
from a2i_utils.config import get_config
from a2i_utils.evaluation.panel import GenerationPanel
from a2i_utils.evaluation.systems import Loader

torch.set_num_threads(1)  # as in the check's own process, so the same settings give the same bytes
cfg = get_config("demo", {{**{TINY!r}, "cache_dir": {str(cache)!r}}})
loader = Loader(cfg, progress=False)
loader.system("baseline")  # SounDiff-L is left for the panel's first press ("loading SounDiff-L...")
_draw = panel_module.draw


def slowed_draw(*args, **kwargs):
    \"\"\"The real draw, {SLOW_S:g} s later: time for the check to change the recording mid-generation.\"\"\"
    time.sleep({SLOW_S!r})
    return _draw(*args, **kwargs)


panel_module.draw = slowed_draw
print("ready")"""
    return [nbformat.v4.new_markdown_cell("# The panel, checked in a browser\nMade by `scripts/browser_check.py`."),
            nbformat.v4.new_code_cell(setup),
            nbformat.v4.new_code_cell("ui = GenerationPanel(loader).show()")]


def store_notebook(out: Path, cache: Path) -> Path:
    """Write the check's notebook and execute it headless as `run_notebooks.py store` does (also trains the cache)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import run_notebooks

    nb = nbformat.v4.new_notebook(cells=notebook_cells(cache))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    t0 = time.perf_counter()
    run_notebooks.execute(nb, out)
    path = out / "panel_check.ipynb"
    nbformat.write(nb, path)
    print(f"stored {path.name} in {time.perf_counter() - t0:.0f} s (widget state in it: {'widgets' in nb.metadata})")
    return path


class Expected:
    """What the page must show, computed here from the same cache: ground truths, sounds, generated images."""

    def __init__(self, cache: Path) -> None:
        import torch

        from a2i_utils.config import get_config
        from a2i_utils.evaluation.systems import Loader
        from a2i_utils.imagebind.retrieval import one_pair_per_recording

        torch.set_num_threads(1)
        self.loader = Loader(get_config("demo", {**TINY, "cache_dir": str(cache)}), progress=False)
        self.pairs = one_pair_per_recording(self.loader.dataset.test)  # as the panel

    def name(self, k: int) -> str:
        return f"{self.pairs[k].label} · {self.pairs[k].id}"

    def truth_png(self, k: int) -> bytes:
        from a2i_utils.data import load_image
        from a2i_utils.evaluation.panel import png_bytes

        return png_bytes(load_image(self.pairs[k].image_path, self.loader.cfg.soundiff.image_size))

    def sound(self, k: int) -> bytes:
        return Path(self.pairs[k].audio_path).read_bytes()

    def image(self, audio: Path, model: str, seed: int, guidance: float, noise: int) -> np.ndarray:
        from a2i_utils.evaluation.systems import draw

        emb = self.loader.audio_embeddings([audio])
        return draw(self.loader, self.loader.system(model), emb, "", n=1, seed=seed, guidance=guidance,
                    noise_level=noise)[0, 0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(out: Path, cache: Path) -> tuple[subprocess.Popen, str]:
    """JupyterLab on 127.0.0.1, fresh config, settings and workspace under ``out``; returns (process, notebook URL)."""
    port, token = free_port(), secrets.token_hex(16)
    jdir = out / "jupyter"
    (jdir / "config" / "labconfig").mkdir(parents=True, exist_ok=True)
    (jdir / "config" / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    tracker = jdir / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True, exist_ok=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))  # every cell rendered, not only those in view
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(jdir / "config"), "JUPYTER_RUNTIME_DIR": str(jdir / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(jdir / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(jdir / "workspaces"),
           "A2I_CACHE": str(cache), "A2I_MODE": "demo", "MPLBACKEND": "Agg"}
    log = (out / "jupyterlab.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={out}", "--LabApp.expose_app_in_browser=True",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI and these machines run as root
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            return proc, f"{base}/lab/tree/panel_check.ipynb?token={token}"
        except OSError:
            if proc.poll() is not None:
                log = out / "jupyterlab.log"
                raise SystemExit(f"JupyterLab exited (status {proc.returncode}): see {log}") from None
            time.sleep(1)
    proc.terminate()
    raise SystemExit(f"JupyterLab did not answer on {base} within 120 s: see {out / 'jupyterlab.log'}")


class Check:
    """One browser session over the panel: steps, screenshots, assertions."""

    def __init__(self, page, out: Path, expected: Expected) -> None:
        self.page, self.out, self.exp, self.n = page, out, expected, 0
        self.passed: list[str] = []

    # -- reading the page -------------------------------------------------------------------------------------
    def text(self, cls: str) -> str:
        return self.page.locator(f".a2i-{cls}").first.inner_text().strip()

    def blob(self, cls: str) -> bytes | None:
        data = self.page.evaluate(PAGE_JS_BYTES, f".a2i-{cls}")
        return None if data is None else base64.b64decode(data)

    def box(self, cls: str) -> tuple[int, int, int, int]:
        """x, y (relative to the panel: scrolling does not count), width, height of the element, in pixels."""
        b, p = (self.page.locator(sel).first.bounding_box() for sel in (f".a2i-{cls}", ".a2i-panel"))
        return (round(b["x"] - p["x"]), round(b["y"] - p["y"]), round(b["width"]), round(b["height"]))

    def selected(self, cls: str) -> str:
        text = self.page.locator(f".a2i-{cls} select").first.evaluate("s => s.options[s.selectedIndex].text")
        return text.replace("\u00a0", " ")  # ipywidgets shows the options' spaces as no-break spaces

    def wait_text(self, cls: str, part: str, timeout_s: float = 60) -> None:
        deadline = time.time() + timeout_s
        while part not in self.text(cls):
            if time.time() > deadline:
                raise AssertionError(f".a2i-{cls} never showed {part!r}: it shows {self.text(cls)!r}")
            time.sleep(0.1)

    def wait_status(self, *starts: str, timeout_s: float = 180) -> str:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            s = self.text("status")
            if s.startswith(starts):
                return s
            time.sleep(0.1)
        raise AssertionError(f"status never started with {starts}: it says {self.text('status')!r}")

    # -- checks -----------------------------------------------------------------------------------------------
    def ok(self, cond: bool, what: str) -> None:
        if not cond:
            raise AssertionError(what)
        self.passed.append(what)

    def shot(self, name: str) -> Path:
        """Screenshot of the page (the panel scrolled into view) as NN-name.png; the page's sanity checks."""
        self.n += 1
        path = self.out / f"{self.n:02d}-{name}.png"
        self.page.screenshot(path=str(path))
        body = self.page.locator("body").inner_text()
        for raw in RAW_WIDGET_TEXT:
            self.ok(raw not in body, f"{path.name}: no raw widget text ({raw!r})")
        self.ok("Traceback" not in body, f"{path.name}: no traceback on the page")
        return path

    def same_recording(self, k: int, step: str) -> None:
        """Ground truth, its caption, the player and (if any) the image's caption all name recording ``k``."""
        name = self.exp.name(k)
        self.ok(self.selected("recording") == name, f"{step}: the dropdown shows {name}")
        self.ok(self.blob("truth") == self.exp.truth_png(k), f"{step}: the ground truth is {name}'s image")
        self.ok(name in self.text("truth-caption"), f"{step}: the ground truth's caption names {name}")
        self.ok(self.blob("audio") == self.exp.sound(k), f"{step}: the player holds {name}'s recording")
        caption = self.text("caption")
        self.ok(caption == "" or caption.startswith(name), f"{step}: the image's caption is empty or names {name}")

    def image_is(self, audio: Path, model: str, seed: int, guidance: float, noise: int, step: str) -> None:
        """The shown image is what these settings generate (decoded pixels, within 2 levels: threads may differ)."""
        from PIL import Image

        from a2i_utils.evaluation.panel import png_bytes

        want = np.asarray(Image.open(io.BytesIO(png_bytes(self.exp.image(audio, model, seed, guidance, noise)))))
        got = np.asarray(Image.open(io.BytesIO(self.blob("image"))))
        diff = int(np.abs(want.astype(int) - got.astype(int)).max()) if want.shape == got.shape else 999
        self.ok(diff <= 2, f"{step}: the image is {model}'s for that recording, seed {seed}, guidance {guidance:g} "
                           f"(max pixel difference {diff})")


def run_steps(c: Check, url: str, bad: Path, good: Path) -> None:
    """The person's session."""
    from a2i_utils.evaluation.panel import NO_IMAGE, NO_TRUTH_UPLOAD, STATIC_TEXT

    page = c.page
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.serviceManager", timeout=60_000)
    time.sleep(2)
    page.wait_for_function("t => document.querySelector('.jp-Notebook').innerText.includes(t)", arg=STATIC_TEXT,
                           timeout=60_000)
    c.ok(True, "stored, un-run: the panel's output reads as a sentence")
    c.shot("stored-notebook-unrun")

    page.evaluate("""async () => {  // wait for the kernel, then run every cell as Run > Run All Cells does
        const app = window.jupyterapp;
        await app.shell.currentWidget.sessionContext.ready;
        if (app.shell.leftCollapsed === false) await app.commands.execute('application:toggle-left-area');
        await app.commands.execute('notebook:run-all-cells');
    }""")
    page.wait_for_selector(".a2i-panel", timeout=180_000)
    page.locator(".a2i-panel").scroll_into_view_if_needed()
    time.sleep(1)
    c.ok(c.blob("image") == NO_IMAGE, "panel shown: the generated slot holds the placeholder, not a broken image")
    c.same_recording(0, "panel shown")
    c.shot("panel-shown")

    page.locator(".a2i-recording select").select_option(index=2)
    c.wait_text("truth-caption", c.exp.name(2))
    c.same_recording(2, "recording changed")
    c.shot("recording-changed")

    page.locator(".a2i-model select").select_option(label="SounDiff-L")
    seed = page.locator(".a2i-seed input")
    for typed in ("3.7", "-1", "99999999999"):
        seed.fill(typed)
        seed.press("Enter")
        time.sleep(1)
        c.ok(seed.input_value() == "42", f"seed {typed!r} typed: the box shows the seed used, 42")
        c.ok("whole number from 0 to" in c.text("status"), f"seed {typed!r}: the status says what a seed may be")
    c.shot("seed-rejected")
    seed.fill("7")
    seed.press("Enter")
    handle = page.locator(".a2i-guidance .noUi-handle")
    handle.focus()
    for _ in range(4):
        handle.press("ArrowRight")  # 4 steps of 0.5
    time.sleep(1)
    guidance = float(page.locator(".a2i-guidance .widget-readout").inner_text())
    c.ok(guidance == c.exp.loader.cfg.soundiff.guidance_scale + 2.0, f"guidance moved to {guidance:g}")
    before = (c.box("image"), c.box("truth"))
    page.evaluate("""() => { window.a2iStatuses = []; const el = document.querySelector('.a2i-status');
        new MutationObserver(() => window.a2iStatuses.push(el.innerText)).observe(el,
            {childList: true, subtree: true, characterData: true}); }""")
    page.locator(".a2i-button").click()
    c.wait_status("loading", "working", timeout_s=30)
    c.ok((c.box("image"), c.box("truth")) == before, "while working: the images do not move")
    c.ok(page.locator(".a2i-button").is_disabled(), "while working: the button is disabled")
    c.shot("working")
    c.wait_status("done", "error")
    seen = page.evaluate("() => window.a2iStatuses")
    c.ok(any(s.startswith("loading SounDiff-L") for s in seen), "a first press on SounDiff-L said 'loading'")
    c.ok(c.text("status").startswith("done"), f"generated: {c.text('status')}")
    c.same_recording(2, "generated")
    caption = c.text("caption")
    for part in (c.exp.name(2), "SounDiff-L", "seed 7", f"guidance {guidance:g}", "noise level"):
        c.ok(part in caption, f"the caption names {part!r}")
    c.image_is(Path(c.exp.pairs[2].audio_path), "soundiff-l", 7, guidance, c.exp.loader.cfg.soundiff.noise_level,
               "generated")
    c.ok((c.box("image"), c.box("truth")) == before, "after generating: the images did not move")
    c.shot("generated")
    page.locator(".a2i-panel").screenshot(path=str(c.out / "panel.png"))  # the picture notebook 06 shows

    def upload(path: Path) -> None:
        """Click the upload button and choose ``path`` in the file dialog."""
        with page.expect_file_chooser() as chooser:
            page.locator(".a2i-upload").click()
        chooser.value.set_files(str(path))

    upload(bad)
    c.wait_status(bad.name, timeout_s=30)
    msg = c.text("status")
    c.ok("/" not in msg and "a2i-upload" not in msg, f"a bad upload's message has no path: {msg!r}")
    c.ok("(1)" not in page.locator(".a2i-upload").inner_text(), "the rejected file is not counted on the button")
    c.ok(not any((Path(c.exp.loader.cfg.cache_dir) / "uploads").glob(f"*{bad.suffix}")),
         "the rejected file is not kept in the cache")
    c.ok((c.box("image"), c.box("truth")) == before, "a bad upload's message does not move the images")
    c.same_recording(2, "bad upload")
    c.shot("upload-rejected")

    upload(good)
    c.wait_status("using the uploaded file", timeout_s=30)
    c.ok(c.text("status") == f"using the uploaded file {good.name}", "a later good upload replaces the message")
    c.ok(c.blob("audio") == good.read_bytes(), "the player holds the uploaded file")
    c.ok(c.blob("truth") == NO_TRUTH_UPLOAD and c.blob("image") == NO_IMAGE,
         "an upload: no ground truth, no image from the previous recording")
    page.locator(".a2i-button").click()
    c.wait_status("done", "error")
    c.ok(c.text("caption").startswith(f"uploaded file {good.name}"), "the image's caption names the uploaded file")
    c.image_is(good, "soundiff-l", 7, guidance, c.exp.loader.cfg.soundiff.noise_level, "uploaded")
    c.shot("upload-generated")

    page.locator(".a2i-recording select").select_option(index=0)
    c.wait_text("truth-caption", c.exp.name(0))
    c.same_recording(0, "back to a held-out recording")
    page.locator(".a2i-button").click()
    c.wait_status("working", timeout_s=30)
    page.locator(".a2i-recording select").select_option(index=1)  # mid-generation
    time.sleep(0.5)
    c.shot("changed-mid-generation")
    c.wait_status("the recording changed", "done", "error")
    c.ok("dropped" in c.text("status"), f"the image of the old recording was dropped: {c.text('status')!r}")
    c.ok(c.blob("image") == NO_IMAGE and c.text("caption") == "", "no image beside the new recording")
    c.same_recording(1, "after the mid-generation change")
    c.shot("dropped")

    page.locator(".a2i-recording select").select_option(index=len(c.exp.pairs))  # "uploaded file", the last
    c.wait_status("ready", timeout_s=30)
    c.ok(c.blob("audio") == good.read_bytes() and c.blob("truth") == NO_TRUTH_UPLOAD,
         "'uploaded file' chosen again: the player holds the uploaded file")
    page.locator(".a2i-button").click()
    c.wait_status("done", "error")
    c.ok(c.text("caption").startswith(f"uploaded file {good.name}"), "'uploaded file' again: its image, its caption")
    c.shot("upload-again")


def write_audio_files(folder: Path) -> tuple[Path, Path]:
    """A broken WAV and a good 2 s OGG (a person's files)."""
    import soundfile as sf

    bad = folder / "broken.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk that is no audio")
    t = np.arange(2 * 22_050) / 22_050
    good = folder / "my recording.ogg"
    sf.write(good, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 22_050, format="OGG")
    return bad, good


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "browser")
    parser.add_argument("--results", type=Path, default=None,
                        help="also copy the screenshots here, shrunk to 256 colours (bench/results/browser)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    for old in out.glob("*.png"):
        old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium (or run `make browser`)")
    from playwright.sync_api import sync_playwright

    store_notebook(out, cache)
    expected = Expected(cache)
    bad, good = write_audio_files(out)
    proc, url = start_lab(out, cache)
    t0 = time.perf_counter()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            ctx = browser.new_context(viewport={"width": 1280, "height": 900})  # a fresh profile
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            check = Check(page, out, expected)
            try:
                run_steps(check, url, bad, good)
            except Exception as err:  # noqa: BLE001  (an assertion, or a page that never showed what we waited for)
                page.screenshot(path=str(out / "failed.png"))
                print(f"FAILED: {err}\n({len(check.passed)} checks passed before; screenshots in {out})")
                return 1
            finally:
                browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for what in check.passed:
        print(f"ok  {what}")
    if errors:
        print(f"page errors (not failing the check): {errors}")
    print(f"{len(check.passed)} checks passed in {time.perf_counter() - t0:.0f} s; screenshots in {out}")
    if args.results:
        shrink_into(out, args.results.resolve())
    return 0


def shrink_into(out: Path, results: Path) -> None:
    """Copy the screenshots into ``results`` as 256-colour PNGs (a few tens of kB each)."""
    from PIL import Image

    results.mkdir(parents=True, exist_ok=True)
    for old in results.glob("*.png"):
        old.unlink()
    for png in sorted(out.glob("*.png")):
        Image.open(png).convert("RGB").quantize(256).save(results / png.name, optimize=True)
    total = sum(p.stat().st_size for p in results.glob("*.png"))
    print(f"copied {len(list(results.glob('*.png')))} screenshots to {results} ({total / 1e3:.0f} kB)")


if __name__ == "__main__":
    sys.exit(main())
