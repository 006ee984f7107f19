# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01. Data exploration: places you can see and hear
# The paper learns to draw a satellite image of a place from a 10 s recording made there. Before any model,
# we look at (and listen to) the pairs it learns from, and fix the train/validation split every later
# notebook uses.
#
# **The paper's two systems.** *Synthesizing Visuals from Sound* tries two ways from a recording to an image:
# 1. a **pixel transformer** (§3.2): the recording becomes 500 vectors of FFT magnitudes; an encoder reads
#    them, and a decoder with local self-attention writes a small grayscale image one pixel at a time;
# 2. **SounDiff** (§3.3): a frozen **ImageBind** turns the recording into a 1024-d embedding that lives in
#    the same space as image embeddings; the U-Net of Stable Diffusion 2.1 UnCLIP, which draws an image from
#    an image embedding, is fine-tuned to draw from audio embeddings instead.
#
# **The course, one notebook per step:**
#
# | notebook | what it builds |
# | --- | --- |
# | **01 data exploration** (this one) | the pairs, how they sound and look, the split by place |
# | [02 FFT preprocessing](02_fft_preprocessing.ipynb) | the transformer's audio features: 500 x 220 FFT magnitudes |
# | [03 pixel transformer](03_pixel_transformer.ipynb) | system 1: the encoder-decoder with local attention |
# | [04 ImageBind embeddings](04_imagebind_embeddings.ipynb) | the shared audio-image space system 2 relies on |
# | [05 U-Net fine-tuning](05_unet_finetuning.ipynb) | system 2: SounDiff, UnCLIP's U-Net fine-tuned on audio |
# | [06 qualitative comparison](06_qualitative_comparison.ipynb) | the two systems side by side, measured |
#
# **What you will learn**
# - how an ADVANCE-shaped dataset is laid out (`vision/<class>/<id>.jpg` + `sound/<class>/<id>.wav`) and why
#   pairs are matched by file name, never by position in a sorted list;
# - what the 13 scene classes look like and sound like (in demo mode: our synthetic soundscape world);
# - how recordings are read robustly (any rate, channel count, sample format; clear errors for bad files);
# - why the train / validation / test split (70/10/20 of each class's places) is made **by base id** (the 5-digit
#   place id), stratified by class, and stored; which split is for what;
# - why sound does not give the scene away: sources shared across scenes, mixes, noisy recordings.

# %% tags=["install"]
# Install a2i when it is missing (Colab, a fresh kernel). After `make demo` or `make test` it is installed
# already and this cell does nothing. On Colab, set A2I_REPO to the address of your clone of the repository.
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("a2i_utils") is None:
    repo = os.environ.get("A2I_REPO")
    if not repo:
        raise RuntimeError("a2i_utils is not installed: run `make install`, or set A2I_REPO to the repo's URL")
    subprocess.run(["git", "clone", "--depth", "1", repo, "a2i"], check=True)
    # requirements-colab.txt keeps Colab's own torch: no multi-GB reinstall. requirements-colab-nodeps.txt
    # (imagebind-unofficial) goes in without its declared dependencies: they include torchaudio, which has no
    # release for torch >= 2.12 and would replace Colab's torch; its real ones are in requirements-colab.txt.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", "a2i/requirements-colab.txt"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "-r", "a2i/requirements-colab-nodeps.txt", "-e", "a2i"], check=True)
    sys.path.insert(0, os.path.abspath("a2i"))

# %%
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Audio, display

from a2i_utils.config import get_config, seed_everything
from a2i_utils.data import ADVANCE_COUNTS, CLASSES, load_image, prepare_dataset, scan_tree, split_by_base_id
from a2i_utils.data.audio import AudioError, load_audio, resample
from a2i_utils.data.synth import K_FRACTION, RECIPES, SOURCES
from a2i_utils.plotting import image_grid

MODE = os.environ.get("A2I_MODE", "demo")  # "demo" (CPU, synthetic data) or "full" (GPU, ADVANCE)
cfg = get_config(MODE)
seed_everything(cfg.seed)
SR = cfg.features.sample_rate  # every recording is read at this rate (22,050 Hz)
plt.rcParams["figure.dpi"] = 72  # this notebook stores many images and sounds: smaller figures keep it small

# %%
print(cfg.summary())  # everything (not compared by nbval: other sections change as the course grows)

# %%
# NBVAL_CHECK_OUTPUT
# The sections this notebook uses, compared by the tests.
print(f"mode={cfg.mode} seed={cfg.seed}\n{cfg.data}\n{cfg.features}")

# %% [markdown]
# ## 1. The dataset
# ADVANCE (Hu et al. 2020) has 5,075 pairs: a 512x512 satellite image and a 10 s recording made at the same
# geotag, in 13 scene classes. No dataset host is reachable from the demo machine, so demo mode builds an
# ADVANCE-shaped **synthetic soundscape world** with the same layout and names (our construction, not the
# paper's): each scene has a look you would recognise, and its recordings mix sound sources that, as in the
# real data, are often shared with related scenes (section 4). Full mode downloads the real archives
# (md5-checked) into the cache. Both go through the same function: `prepare_dataset(cfg)` makes or fetches
# the tree if it is missing, validates every pair, and returns the pairs with their split.
#
# **Your own copy.** If you already have an ADVANCE-shaped folder (`vision/<class>/<id>.jpg` and
# `sound/<class>/<id>.wav`, e.g. ADVANCE unpacked elsewhere, or your own recordings), set `data.root` to it:
# `cfg = get_config(MODE, {"data.root": "/path/to/folder"})`. It is used where it is, never modified; its
# manifest and split go to the cache. Check it first from a terminal with `a2i data check /path/to/folder`,
# which lists every file it would leave out and why.

# %%
t0 = time.time()
# The first run makes (demo, ~30 s) or downloads (full) the data. No live bar here: a stored notebook would
# keep it at "0%"; `a2i data prepare` shows one.
ds = prepare_dataset(cfg, progress=False)
print(f"dataset ready in {time.time() - t0:.0f} s")

# %%
# NBVAL_CHECK_OUTPUT
print(ds.summary())
meta_path = ds.root / "synthetic.json"  # demo: what the generator put into every pair (absent for ADVANCE)
meta = json.loads(meta_path.read_text())["pairs"] if meta_path.is_file() else {}

# %% [markdown]
# A pair is found by its **class folder and file stem**: `vision/beach/04211.jpg` goes with
# `sound/beach/04211.wav`. Pairing the i-th image with the i-th recording of two sorted lists (what the
# paper's code did) silently shifts every pair after one missing file. Names are `<id>` or `<id>_<k>`.

# %%
# NBVAL_CHECK_OUTPUT
p = ds.pairs[0]
print("pair fields:", ", ".join(f"{k}={getattr(p, k)!r}" for k in ("id", "base_id", "label", "split")))
print("image:", p.image_path.relative_to(ds.root).as_posix(), "| audio:", p.audio_path.relative_to(ds.root).as_posix())
assert all(q.image_path.stem == q.audio_path.stem == q.id for q in ds.pairs)
assert all(q.image_path.parent.name == q.audio_path.parent.name == q.label for q in ds.pairs)
assert all(q.id.split("_")[0] == q.base_id for q in ds.pairs)
print("every pair matched by class and stem:", True)

# %% [markdown]
# ## 2. Class counts
# Our synthetic world is balanced (`data.per_class` pairs per class). The real ADVANCE is not: there are
# about seven times more residential pairs than grassland ones, so a model that always guesses
# "residential" is right about one time in five (the exact figures are printed below). Keep that in mind
# when you read accuracies or look at generated images.

# %%
counts = ds.counts()
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharey=False)
axes[0].bar(range(13), [counts[c] for c in CLASSES], color="tab:blue")
axes[0].set(title=f"This dataset ({cfg.data.source}): pairs per class", ylabel="pairs")
axes[1].bar(range(13), [ADVANCE_COUNTS[c] for c in CLASSES], color="tab:orange")
axes[1].set(title="Real ADVANCE: pairs per class (5,075 in all)", ylabel="pairs")
for ax in axes:
    ax.set_xticks(range(13), CLASSES, rotation=60, ha="right")
    ax.set_xlabel("scene class")
fig.tight_layout()
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
assert sum(counts.values()) == len(ds.pairs)
print({c: n for c, n in counts.items()})
n_advance = sum(ADVANCE_COUNTS.values())
print(f"real ADVANCE: {n_advance:,} pairs; residential / grassland = "
      f"{ADVANCE_COUNTS['residential'] / ADVANCE_COUNTS['grassland']:.1f}x; always guessing residential is "
      f"right {ADVANCE_COUNTS['residential'] / n_advance:.1%} of the time")

# %% [markdown]
# ## 3. What the scenes look like
# Six images of every class, at the resolution the files have (`data.image_size`; ADVANCE: 512). Inside a
# class the layout, colours and details change from place to place, so a model has to generalise; across
# classes the scenes should be told apart at a glance.

# %%
n_show, tile = 6, 64
by_class = ds.by_class()
mosaic = np.concatenate([
    np.concatenate([load_image(q.image_path, tile) for q in by_class[c][:n_show]], axis=1)  # (tile, 6 tile, 3)
    for c in CLASSES
])  # (13 tile, 6 tile, 3): one row per class
fig, ax = plt.subplots(figsize=(mosaic.shape[1] / tile + 1.6, mosaic.shape[0] / tile + 0.5), dpi=tile)
ax.imshow(mosaic)
ax.set_yticks(np.arange(13) * tile + tile / 2, CLASSES)
ax.set_xticks(np.arange(n_show) * tile + tile / 2, [f"place {i + 1}" for i in range(n_show)])
ax.set_title(f"Six places per scene class ({cfg.data.image_size} px images shown at {tile} px)")
plt.show()

# %% [markdown]
# **One detail per place.** Besides its scene, every synthetic place has one visible detail, its `amount`
# between 0 and 1 (recorded in `synthetic.json`): the number of planes, the share of water at a beach, the
# size of a lake, the length of the train in a station, ... The recording hears the same detail (section 4),
# so there is something to learn beyond the scene. Below, for four scenes, the places with the smallest,
# middle and largest amount.

# %%
if meta:
    shown, titles = [], []
    for c in ("beach", "lake", "harbour", "train station"):
        ranked = sorted((q for q in by_class[c] if q.id == q.base_id), key=lambda q: meta[q.id]["amount"])
        for q in (ranked[0], ranked[len(ranked) // 2], ranked[-1]):
            shown.append(load_image(q.image_path, 96))
            titles.append(f"{c}\namount {meta[q.id]['amount']:.2f}")
    fig = image_grid(shown, titles, ncols=6, size=1.9, suptitle="The detail each place's recording also carries")
    plt.show()
else:
    print("real data: no recorded detail per place")

# %% [markdown]
# The pixel transformer of notebook 03 sees these images as small grayscale squares of 256 grey levels:
# `transformer.image_size` pixels on a side, which is the paper's 32 in full mode and smaller in demo mode
# (so that it trains on a CPU); the images themselves are `data.image_size` pixels (ADVANCE: 512). Printed
# from the presets:

# %%
# NBVAL_CHECK_OUTPUT
for name in ("demo", "full"):
    c = get_config(name)
    print(f"{name:4s}: data.image_size={c.data.image_size} px images; the transformer sees "
          f"{c.transformer.image_size}x{c.transformer.image_size} grayscale ({c.transformer.image_size ** 2} pixels)")
SIDE = cfg.transformer.image_size
print(f"this run ({cfg.mode}): {SIDE}x{SIDE}")

# %% [markdown]
# Much is lost at that size: a beach is still a bright/dark boundary, an orchard a fine dot texture that
# mostly averages away. `load_image(path, size, gray=True)` makes that version. (Notebook 05's generator
# works in colour at 32x32 in demo mode: the second row.)

# %%
small = [load_image(by_class[c][0].image_path, SIDE, gray=True) for c in CLASSES]
colour32 = [load_image(by_class[c][0].image_path, 32) for c in CLASSES]
fig = image_grid(small + colour32, list(CLASSES) + [""] * 13, ncols=13, size=1.1,
                 suptitle=f"What the models see: {SIDE}x{SIDE} grayscale (transformer), 32x32 colour")
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
print("RGB:", load_image(ds.pairs[0].image_path, 64).shape, "gray:", small[0].shape, small[0].dtype)

# %% [markdown]
# ## 4. What the scenes sound like
# `load_audio(path, sample_rate, duration_s)` reads WAV, FLAC or OGG of any rate, channel count and sample
# format with `soundfile`, averages the channels, resamples with a windowed sinc (`a2i_utils.data.resample`) and
# zero-pads or crops (keeping the start) to exactly `duration_s`. Below: the waveform and spectrogram of
# one recording. A spectrogram is the squared magnitude of short-time Fourier transforms,
# $S[f, t] = |\sum_n x[n + tH]\, w[n]\, e^{-2\pi i f n / N}|^2$, shown in dB. We pool its frequencies into
# 96 **mel** bands, spaced like pitch is heard (about linear below 1 kHz, logarithmic above): on a linear
# 0-11 kHz axis everything below 500 Hz (engines, horns, the bees' buzz) would be squeezed into the
# bottom few rows. All spectrograms in this notebook share one colour scale, `DB_RANGE`, so their levels can
# be compared.

# %%
N_MELS, DB_RANGE = 96, (-100.0, -20.0)  # dB relative to full scale, the same for every spectrogram below
N_FFT, HOP = 1024, 256  # samples: 46 ms Hann windows every 12 ms
MEL_TICKS = [100, 200, 500, 1000, 2000, 5000, 10000]  # Hz, marked on the mel axis


def hz_to_mel(f):
    return 2595 * np.log10(1 + np.asarray(f) / 700)  # HTK mel scale


def mel_to_hz(m):
    return 700 * (10 ** (np.asarray(m) / 2595) - 1)


def mel_filters(n_mels: int = N_MELS, f_min: float = 20.0, f_max: float = SR / 2) -> torch.Tensor:
    """(n_fft / 2 + 1, n_mels) triangles over the FFT bins, their corners evenly spaced in mel."""
    corners = torch.tensor(mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)))  # (n_mels + 2,)
    freqs = torch.linspace(0, SR // 2, N_FFT // 2 + 1, dtype=torch.float64)[:, None]  # (513, 1): bin centres, Hz
    left, centre, right = corners[:-2], corners[1:-1], corners[2:]  # (n_mels,) each
    rise, fall = (freqs - left) / (centre - left), (right - freqs) / (right - centre)  # (513, n_mels)
    return torch.clamp(torch.minimum(rise, fall), min=0).float()  # (513, n_mels)


MEL_FILTERS = mel_filters()  # (513, 96)


def mel_db(wave: np.ndarray) -> np.ndarray:
    """(n_mels, frames) mel power spectrogram in dB of a (n,) waveform (full-scale sine = about 0 dB)."""
    x = torch.from_numpy(np.ascontiguousarray(wave))  # (n,)
    spec = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)  # (513, frames)
    power = MEL_FILTERS.T @ spec.abs() ** 2 / (N_FFT / 2) ** 2  # (96, frames), normalised
    return 10 * torch.log10(power + 1e-12).numpy()


def hz_to_mel_row(f: float) -> float:
    """Row of the mel spectrogram that holds frequency ``f``."""
    return (hz_to_mel(f) - hz_to_mel(20.0)) / (hz_to_mel(SR / 2) - hz_to_mel(20.0)) * N_MELS


def show_mel(ax, wave: np.ndarray, title: str, seconds: float = 10.0):
    """Draw the mel spectrogram of ``wave`` on ``ax`` with the shared colour scale; return the image."""
    im = ax.imshow(mel_db(wave), origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, N_MELS),
                   vmin=DB_RANGE[0], vmax=DB_RANGE[1])
    ax.set_yticks([hz_to_mel_row(f) for f in MEL_TICKS], [f"{f:g}" if f < 1000 else f"{f // 1000:g}k"
                                                          for f in MEL_TICKS])
    ax.set(title=title, xlabel="time (s)", ylabel="frequency (Hz, mel scale)")
    return im


example = by_class["beach"][0]
wave = load_audio(example.audio_path, SR, duration_s=cfg.features.duration_s)
t = np.arange(len(wave)) / SR
fig, axes = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
axes[0].plot(t, wave, lw=0.3)
axes[0].set(title=f"beach {example.id}: waveform", ylabel="amplitude (full scale = 1)")
im = show_mel(axes[1], wave, "mel spectrogram (n_fft 1024, hop 256, 96 mel bands)")
fig.colorbar(im, ax=axes, label="power (dB re full scale)", shrink=0.8)
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
print("waveform:", wave.shape, wave.dtype, "| seconds:", len(wave) / SR)
assert np.isfinite(wave).all() and np.abs(wave).max() <= 1.0

# %% [markdown]
# ### What a recording is made of
# In ADVANCE, sound rarely gives the scene away: water is heard at beaches, harbours, lakes and bridges;
# engines at airports, harbours and train stations; birds and wind in forests, orchards, grassland and shrub
# land; many recordings are mostly background noise. The synthetic world copies that structure. It has a
# library of sound **sources**, and each scene a recipe: one **signature** source and **shared** sources,
# each present with some probability. The signature's loudness follows the place's one visible detail, its
# `amount` (more planes, more water, a longer train: section 3's images at amount 0 ... 1), so a recording
# also says something about its own image, not only about its scene. When the signature is quiet, only
# shared sources remain and the recording could come from several scenes. The recipes, printed from
# `a2i_utils.data.synth_sounds.RECIPES`:

# %%
# NBVAL_CHECK_OUTPUT
print(f"{len(SOURCES)} sources: {', '.join(SOURCES)}\n")
for c in CLASSES:
    shared = ", ".join(f"{s} {p:.0%}" for s, p in RECIPES[c]["shared"].items())
    print(f"{c:18s} signature: {RECIPES[c]['signature']:9s} shared (chance present): {shared}")

# %%
# NBVAL_CHECK_OUTPUT
if meta:
    places = [m for m in meta.values() if m["k"] == 0]  # one entry per recording
    share = {src: sum(src in m["sources"] for m in places) / len(places)
             for src in ("water", "engine", "birds", "wind")}
    print("share of recordings that contain ...", {k: f"{v:.0%}" for k, v in share.items()})
    example_meta = meta[by_class["harbour"][0].id]
    print("one harbour recording:", {k: example_meta[k] for k in ("kind", "amount", "sources", "caption")})
else:
    print("real data: no record of what went into each recording")

# %% [markdown]
# **Hear and see one shared source.** The `water` source on its own, then three recordings that contain it,
# from a beach, a harbour and a lake (the ones where it is loudest relative to the rest). The lapping band
# (about 150-1500 Hz, slow irregular swells) is in all four; what else is there tells the scenes apart, or
# does not.

# %%
if meta:
    def loudest_with(label: str, source: str):
        """The pair of ``label`` whose recording has ``source`` loudest relative to its other sources."""
        def margin(q):
            levels = meta[q.id]["sources"]
            others = [v for k, v in levels.items() if k != source]
            return levels[source] - max(others, default=-99.0)

        return max((q for q in by_class[label] if source in meta[q.id]["sources"] and meta[q.id]["kind"] == "clean"),
                   key=margin)

    water_alone = SOURCES["water"](np.random.default_rng(0), 10 * SR, SR)
    water_alone = 0.1 * water_alone / np.sqrt(np.mean(water_alone**2))  # -20 dB RMS
    shown = [("the water source alone", water_alone)]
    for label in ("beach", "harbour", "lake"):
        q = loudest_with(label, "water")
        levels = ", ".join(f"{k} {v:+.0f} dB" for k, v in meta[q.id]["sources"].items())
        shown.append((f"{label} {q.id}: {levels}", load_audio(q.audio_path, SR, duration_s=10.0)))
    fig, axes = plt.subplots(2, 2, figsize=(12, 6.5), sharex=True, sharey=True, layout="constrained")
    for ax, (title, w) in zip(axes.ravel(), shown):
        im = show_mel(ax, w, title)
        ax.label_outer()
    fig.colorbar(im, ax=axes, label="power (dB re full scale)", shrink=0.8)
    fig.suptitle("One shared source, three scenes (levels relative to a shared source at 0 dB)")
    plt.show()
    for title, w in shown:
        print(title)
        display(Audio(resample(w[: 4 * SR], SR, 11_025), rate=11_025, normalize=True))  # up to 5.5 kHz kept
else:
    print("real data: listen to a beach and a harbour recording with listen(...) below")

# %% [markdown]
# One spectrogram per class (a clean recording each, same colour scale). Listen for the signatures: the
# jet's broadband swell and falling whine (airport), surf bursts (beach), the thump pairs of cars on a bridge
# joint, the tractor's low harmonics (below 200 Hz, where the mel axis gives them room), birds' fast chirps at
# 2-6 kHz (forest), crickets' regular 4-5 kHz pulse trains (grassland), a ship's deep horn and chugging
# diesel (harbour), croaking frogs (lake), bees' buzz around 220 Hz (orchard), traffic (residential), wind
# gusts with a whistle (sparse shrub land), a crowd (sports land), a train's rumble and wheel clacks (train
# station); and the shared sources under them.

# %%
def typical(label: str):
    """A clean recording of ``label`` with its signature at mid loudness (or the first pair on real data)."""
    pairs = by_class[label]
    if not meta:
        return pairs[0]
    clean = [q for q in pairs if meta[q.id]["kind"] == "clean"] or pairs
    return min(clean, key=lambda q: abs(meta[q.id]["amount"] - 0.7))


fig, axes = plt.subplots(5, 3, figsize=(12, 13), dpi=72, sharex=True, sharey=True, layout="constrained")
for ax, c in zip(axes.ravel(), CLASSES):
    im = show_mel(ax, load_audio(typical(c).audio_path, SR, duration_s=10.0), c)
    ax.label_outer()  # axis labels on the outer panels only
for ax in axes.ravel()[len(CLASSES):]:
    ax.axis("off")
axes[3, 1].tick_params(labelbottom=True)  # the last row is incomplete: label the panels above the gaps
axes[3, 2].tick_params(labelbottom=True)
axes[3, 1].set_xlabel("time (s)")
axes[3, 2].set_xlabel("time (s)")
fig.colorbar(im, ax=axes.ravel().tolist(), label="power (dB re full scale)", shrink=0.5)
fig.suptitle("One recording per class: mel spectrogram, one colour scale for all")
plt.show()

# %% [markdown]
# **Listen.** The player below plays 2 s from those recordings, in the order of `CLASSES`
# (airport, beach, bridge, farmland, forest, grassland, harbour, lake, orchard, residential, sparse shrub land,
# sports land, train station), each followed by a short silence; it is resampled to 11,025 Hz to keep the
# notebook small (everything up to 5.5 kHz is kept). Call `listen("forest", 3)` to hear a whole recording.

# %%
TOUR_RATE, CLIP_S = 11_025, 2.0
clips = []
for c in CLASSES:
    w = load_audio(typical(c).audio_path, TOUR_RATE, duration_s=10.0)
    n_clip = int(CLIP_S * TOUR_RATE)
    energy = np.concatenate([[0.0], np.cumsum(w.astype(np.float64) ** 2)])  # (n + 1,): running energy
    start = int(np.argmax(energy[n_clip:] - energy[:-n_clip]))
    clip = w[start : start + n_clip]  # the loudest 2 s, so the scene is easy to hear
    clips += [clip / max(np.abs(clip).max(), 1e-6) * 0.8, np.zeros(TOUR_RATE // 3, np.float32)]
tour = np.concatenate(clips)
assert len(tour) == len(CLASSES) * (int(CLIP_S * TOUR_RATE) + TOUR_RATE // 3)
display(Audio(tour, rate=TOUR_RATE))


def listen(label: str, index: int = 0, rate: int = TOUR_RATE) -> Audio:
    """A player for the whole recording of pair ``index`` of class ``label``."""
    return Audio(load_audio(by_class[label][index].audio_path, rate, duration_s=10.0), rate=rate)


# %% [markdown]
# ### Hard recordings
# Real field recordings are not all clean. The synthetic world makes some hard on purpose, drawn per place
# with the shares of `KIND_SHARES`: `noisy` (dominated by broadband background noise, -6 to +3 dB
# signal-to-noise ratio), `quiet` (peak 30-36 dB below full scale) and `mixed` (the signature of an
# unrelated scene on top); every recording has a faint noise floor. What each got is in `synthetic.json`
# next to the data; the cell below counts what the draw came to.

# %%
# NBVAL_CHECK_OUTPUT
kinds = Counter(m["kind"] for m in meta.values() if m["k"] == 0)
print("recordings by kind:", dict(sorted(kinds.items())) if meta else "(real data: no labels of difficulty)")
if meta:
    n_hard = sum(n for k, n in kinds.items() if k != "clean")
    print(f"hard: {n_hard} of {sum(kinds.values())} recordings ({n_hard / sum(kinds.values()):.0%})")

# %%
if meta:
    hard_kinds = ["noisy", "quiet", "mixed"]
    picks = [next(q for q in ds.pairs if meta[q.id]["kind"] == k) for k in hard_kinds]
    fig, axes = plt.subplots(2, 3, figsize=(13, 5.8), sharex=True, layout="constrained")
    for col, (k, q) in enumerate(zip(hard_kinds, picks)):
        w = load_audio(q.audio_path, SR, duration_s=10.0)
        extra = {"noisy": f", SNR {meta[q.id].get('snr_db', 0):+.0f} dB",
                 "mixed": f" + {meta[q.id].get('mixed_with', '')}", "quiet": ""}[k]
        axes[0, col].plot(np.arange(len(w)) / SR, w, lw=0.3)
        axes[0, col].set(title=f"{k}: {q.label}{extra}", ylabel="amplitude", ylim=(-1, 1))
        im = show_mel(axes[1, col], w, f"peak {np.abs(w).max():.3f}")
        if col:  # y labels on the first column only
            axes[0, col].set_ylabel("")
            axes[1, col].set_ylabel("")
    fig.colorbar(im, ax=axes[1].tolist(), label="power (dB re full scale)", shrink=0.8)
    fig.suptitle("Hard recordings (same amplitude axis, same colour scale)")
    plt.show()

# %% [markdown]
# ### Bad files
# A dataset of thousands of files has some broken ones. Every reader error names the file and the problem;
# the dataset build lists such pairs in `ds.problems` and leaves them out instead of crashing. Let us
# break a copy of a few pairs on purpose and validate the copy (the command line does the same:
# `a2i data check DIR`).

# %%
# NBVAL_CHECK_OUTPUT
with tempfile.TemporaryDirectory() as tmp:
    bad_root = Path(tmp)
    for q in by_class["lake"][:5]:
        for src in (q.image_path, q.audio_path):
            dst = bad_root / src.relative_to(ds.root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    lake_sounds = sorted((bad_root / "sound" / "lake").iterdir())
    lake_sounds[0].write_bytes(b"")  # empty file
    lake_sounds[1].write_bytes(lake_sounds[1].read_bytes()[:5000])  # truncated download
    lake_sounds[2].write_text("<html>404 Not Found</html>")  # not audio
    lake_sounds[3].unlink()  # image without a recording
    pairs, problems = scan_tree(bad_root, progress=False)
    print(f"usable pairs: {len(pairs)} of 5")
    for line in problems:
        print("-", line.replace(str(bad_root), "<copy>").split(" (")[0])
    try:
        load_audio(lake_sounds[1], SR)
    except AudioError as err:
        print("load_audio says:", str(err).replace(str(bad_root), "<copy>"))
assert len(pairs) == 1 and len(problems) == 4

# %% [markdown]
# ## 5. The split, and why it is by base id
# ADVANCE names some files `<id>_<k>`: extra images of the same geotag that **reuse the recording** of
# `<id>`. The synthetic world copies this (each place gets one or two `_k` views with probability
# `K_FRACTION`; the count is printed below). Look at one such group: different images, byte-identical
# recordings.

# %%
groups = Counter(q.base_id for q in ds.pairs)
base = max(sorted(groups), key=groups.get)  # the first base id with the most views
group = [q for q in ds.pairs if q.base_id == base]
same_audio = len({q.audio_path.read_bytes() for q in group}) == 1
fig = image_grid([load_image(q.image_path, cfg.data.image_size) for q in group], [q.id for q in group], ncols=4,
                 size=2.2, suptitle=f"Base id {base} ({group[0].label}): {len(group)} images, one recording")
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
print(f"{len(group)} pairs share base id {base}; recordings byte-identical: {same_audio}")
print(f"places with _k views: {sum(n > 1 for n in groups.values())} of {len(groups)} (K_FRACTION = {K_FRACTION})")

# %% [markdown]
# If we split file by file, a validation recording would often have its exact copy in the training set, and
# validation would measure memory, not generalisation. So the split assigns **whole base ids** (places) to one
# side: per class, a seeded shuffle of the class's base ids puts `data.val_fraction` of them in **validation** and
# `data.test_fraction` in **test** (rounded, at least one each; `split_by_base_id`, seeded with `cfg.seed`), the rest
# in training. The three have three jobs (ours; the paper had one 90/10 split):
# - **train**: what every model learns from (the pixel transformer, the miniatures, SounDiff);
# - **validation**: where the course chooses its settings (guidance, steps, noise level, audio scale) and watches
#   training;
# - **test**: where every number that notebooks 04-06 report is measured; nothing is tuned on it.
#
# It is stored in `split.json` next to the data, and every notebook reads the same one. How much would a per-file
# split leak?

# %%
# NBVAL_CHECK_OUTPUT
rng = np.random.default_rng(cfg.seed)
per_file_val = set(rng.choice(len(ds.pairs), size=len(ds.val), replace=False).tolist())
train_bases = {q.base_id for i, q in enumerate(ds.pairs) if i not in per_file_val}
leaks = sum(ds.pairs[i].base_id in train_bases for i in per_file_val)
print(f"per-file split: {leaks} of {len(per_file_val)} validation recordings also appear in training")
overlap = {q.base_id for q in ds.train} & {q.base_id for q in ds.val}
print(f"split by base id: {len(overlap)} base ids on both sides")
assert not overlap
assert split_by_base_id(ds.pairs, cfg.data.val_fraction, cfg.seed, cfg.data.test_fraction) == {
    q.base_id: q.split for q in ds.pairs}

# %%
tr, va, te = ds.counts(ds.train), ds.counts(ds.val), ds.counts(ds.test)
fig, ax = plt.subplots(figsize=(10, 3.8))
ax.bar(range(13), [tr[c] for c in CLASSES], label="train")
ax.bar(range(13), [va[c] for c in CLASSES], bottom=[tr[c] for c in CLASSES], label="validation")
ax.bar(range(13), [te[c] for c in CLASSES], bottom=[tr[c] + va[c] for c in CLASSES], label="test")
ax.set_xticks(range(13), CLASSES, rotation=60, ha="right")
ax.set(title="The stored split: pairs per class (stratified by class, by base id)", xlabel="scene class",
       ylabel="pairs")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
n_places = len({q.base_id for q in ds.pairs})
print(f"train {len(ds.train)} pairs / val {len(ds.val)} pairs / test {len(ds.test)} pairs; share of base ids: "
      f"val {len({q.base_id for q in ds.val}) / n_places:.2f}, test {len({q.base_id for q in ds.test}) / n_places:.2f}")
assert all(va[c] >= 1 and te[c] >= 1 for c in CLASSES), "every class has validation and test pairs"

# %% [markdown]
# ## Summary
# - A dataset is an ADVANCE-shaped tree; pairs are matched by class and file stem; broken files are listed
#   and left out, never fatal. Demo mode's synthetic world, the real ADVANCE and your own folder
#   (`data.root`) go through the same code.
# - The 13 scenes differ by eye (layout, texture, colour), with variation within each class and one detail
#   per place that its recording also carries.
# - By ear they overlap, as in ADVANCE: sources shared across related scenes, a different mix per recording,
#   quiet signatures and noise-dominated recordings. Notebook 04 measures how far a model gets from sound
#   alone, and which scenes it confuses.
# - The train / validation / test split is by base id (the `_k` files reuse recordings), stratified by class, seeded
#   and stored: models learn on train, settings are chosen on validation, numbers are reported on test.
#
# **Exercises**
# 1. Set `cfg = get_config(MODE, {"data.per_class": 96})` and re-run: how long does the synthetic world take
#    to build, and how do the split counts change?
# 2. Listen to three `noisy` recordings with `listen(...)`. Which scenes stay recognisable at 0 dB SNR?
# 3. Find a forest and an orchard recording whose signatures are quiet (small `amount` in `meta`). Can you
#    tell them apart by ear? By their mel spectrograms?
# 4. Change the seed (`{"seed": 7}`): which pairs move between train and validation? Does any base id split?
# 5. Write a 44.1 kHz stereo FLAC with `soundfile` and read it with `load_audio(path, 22050, 10.0)`: check
#    its shape and that a 1 kHz tone still peaks at 1 kHz.
#
# **Next:** [02 FFT preprocessing](02_fft_preprocessing.ipynb) turns each recording into the 500 x 220 features
# of the paper's pixel transformer.
