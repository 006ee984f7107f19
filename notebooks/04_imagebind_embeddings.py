# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04. ImageBind: one embedding space for sounds and images
# SounDiff (paper §3.3) never trains an audio encoder of its own: it turns each recording into a 1024-d
# ImageBind embedding and hands it to Stable Diffusion UnCLIP *as if it were an image embedding*. Two facts
# make that possible:
# 1. ImageBind's image encoder is **OpenCLIP ViT-H/14**, taken ready-made and kept frozen; its audio encoder
#    was trained (InfoNCE on video frames and their sound) to land where that frozen encoder puts the
#    matching image;
# 2. Stable Diffusion 2.1 UnCLIP (the "h" variant) was trained to draw an image from the image embedding of
#    **the same OpenCLIP ViT-H** encoder (1024-d).
#
# So an ImageBind audio embedding lives in the very space UnCLIP's U-Net was conditioned on, and can stand in
# for an image embedding; notebook 05 fine-tunes the U-Net to close the remaining gap. Here we build the
# bridge, measure how good it is, and use it to examine the data.
#
# **What you will learn**
# - how ImageBind turns a recording into its input: 16 kHz, 3 clips of 2 s, Kaldi log-mel fbanks of
#   128 x 204, normalised, shape `(3, 1, 128, 204)`; and that our reader gives exactly ImageBind's input;
# - how ImageBind binds audio to images: a frozen image encoder, then an audio encoder trained with InfoNCE
#   (demo mode trains a miniature `ImageBindModel` that way, on the CPU, in a few minutes at most);
# - the **scale question**: audio embeddings come out at norm 20, image embeddings at norm 1;
# - how to measure the bridge: the audio-by-image similarity matrix, retrieval recall R@1/R@5, scene
#   classification from audio with its confusion matrix and confidence interval, and retrieval *within* a
#   scene (does a recording find its own place, not only its scene?);
# - how to use it to examine the data: which training pairs do not look like they sound, and why?

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
import math
import os
import time
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
import soundfile as sf
import torch
from IPython.display import Audio, display

from a2i_utils.compat import import_imagebind_data
from a2i_utils.config import get_config, seed_everything
from a2i_utils.data import CLASSES, load_image, prepare_dataset
from a2i_utils.data.audio import load_audio
from a2i_utils.data.synth import RECIPES
from a2i_utils.imagebind import preprocess as iba
from a2i_utils.imagebind.cache import EmbedStats, embed_files, embed_texts, scale_audio
from a2i_utils.imagebind.embedder import load_imagebind
from a2i_utils.imagebind.fbank import fbank as kaldi_fbank
from a2i_utils.imagebind.preprocess import class_prompts
from a2i_utils.imagebind.retrieval import (
    accuracy_interval,
    class_means,
    confusion_matrix,
    cosine_matrix,
    evaluate_alignment,
    nearest_prototype,
    one_pair_per_recording,
    recall_at_k,
)
from a2i_utils.plotting import loss_curve, save_figure

# %% tags=["parameters"]
# The one cell to edit. Every later cell reads these names and none rebinds them: after a change, run this cell
# and all cells below it (Run > Run All Below). A miniature trained for a config seen before loads from the cache.
MODE = os.environ.get("A2I_MODE", "demo")  # "demo" (CPU, synthetic data, miniature) or "full" (GPU, ADVANCE, huge)
OVERRIDES = {}  # dotted config overrides, e.g. {"imagebind.mini_audio_epochs": 10} (exercise 1)
N_BOOT = 2000  # bootstrap resamples for the intervals of sections 6 and 7

# %%
cfg = get_config(MODE, OVERRIDES)
seed_everything(cfg.seed)

# %%
print(cfg.summary())  # the whole config: not compared, so a change elsewhere does not stale this notebook

# %%
# NBVAL_CHECK_OUTPUT
print(cfg.data)  # compare only the sections this notebook uses
print(cfg.imagebind)

# %% [markdown]
# ## 1. The pairs
# The same dataset and split as notebook 01 (made or downloaded into the cache if missing). The measurements
# of the bridge (sections 5-7) use the **test** pairs, which the miniature never saw and no choice of the course was
# tuned on (settings are chosen on the validation split, notebook 01); section 8 examines
# the *training* pairs, to find bad ones in the data a generator would learn from.

# %%
t0 = time.time()
ds = prepare_dataset(cfg, progress=False)  # made (or downloaded) on the first run: ~30 s in demo mode
test = sorted(ds.test, key=lambda p: (CLASSES.index(p.label), p.id))  # grouped by scene for the plots
train = ds.train
print(f"dataset ready in {time.time() - t0:.0f} s")
meta_path = ds.root / "synthetic.json"  # demo: what went into every recording (absent for real data)
meta = json.loads(meta_path.read_text())["pairs"] if meta_path.is_file() else {}

# %%
# NBVAL_CHECK_OUTPUT
print(f"{len(train)} training pairs, {len(test)} test pairs, {len({p.label for p in test})} classes in test")

# %% [markdown]
# ## 2. From waveform to ImageBind's input
# ImageBind does not look at a whole 10 s recording. It resamples to 16 kHz and takes **3 clips of 2 s**
# starting at $k\,(T-2)/3$ for $k = 0, 1, 2$ (pytorchvideo's `ConstantClipsPerVideoSampler` cuts $[0, T-2]$
# into 3 equal steps and never uses the last one): for $T = 10$ s the clips start at 0, 2.67 and 5.33 s, so
# only 6 of the 10 seconds are heard, and nothing after 7.33 s. Each clip becomes a Kaldi log-mel filterbank
# (128 mel bins, 25 ms hanning windows every 10 ms) padded to 204 frames, normalised as $(x + 4.268) / 9.138$.

# %%
# NBVAL_CHECK_OUTPUT
pair = test[0]
wave = load_audio(pair.audio_path, iba.SAMPLE_RATE)  # float32 mono at 16 kHz, read without ffmpeg
bounds = iba.clip_bounds(len(wave))
print(f"{pair.label}/{pair.id}: {len(wave)} samples = {len(wave) / iba.SAMPLE_RATE:.2f} s at 16 kHz")
print("clips (start, end) in samples:", bounds)

# %%
t = np.arange(len(wave)) / iba.SAMPLE_RATE
fig, ax = plt.subplots(figsize=(10, 2.6))
ax.plot(t, wave, lw=0.3, color="0.3")
for i, (s, e) in enumerate(bounds):
    ax.axvspan(s / iba.SAMPLE_RATE, e / iba.SAMPLE_RATE, color=f"C{i}", alpha=0.25, label=f"clip {i + 1}")
ax.set(title=f"The 3 clips ImageBind hears of one recording ({pair.label})", xlabel="time (s)", ylabel="amplitude")
ax.legend(loc="upper right")
plt.show()

# %% [markdown]
# Now the fbank of each clip: Kaldi's log-mel filterbank, as ImageBind computes it with
# `torchaudio.compliance.kaldi.fbank` (a2i has its own copy, `a2i_utils.imagebind.fbank`, equal to it to the
# last bit in `tests/test_resample_fbank.py`, so that it needs no torchaudio). We re-derive clip 1 by hand, one
# torch operation per step, and check it equals the package's `fbank` and `waveform_to_input`: 25 ms frames
# (400 samples) every 10 ms (160), only whole ones; each frame's mean removed; pre-emphasis
# $x[i] - 0.97\,x[i-1]$, which tilts the spectrum up; a symmetric Hann window; the power of a 512-point FFT;
# 128 triangular filters evenly spaced on the mel scale $1127 \ln(1 + f/700)$ from 20 Hz to 8 kHz; the log.
# A 2 s clip gives 198 frames; the last 6 of the 204 are zero padding, which the normalisation turns into the
# bright strip at the right edge, $(0 + 4.268)/9.138 = 0.47$.

# %%
# NBVAL_CHECK_OUTPUT
x = iba.waveform_to_input(wave)  # (3, 1, 128, 204)
clip = torch.from_numpy(wave[bounds[0][0] : bounds[0][1]].copy())
clip = clip - clip.mean()  # ImageBind removes the clip's mean first

frames = clip.unfold(0, 400, 160)  # (198, 400): 25 ms frames every 10 ms, whole frames only
frames = frames - frames.mean(dim=1, keepdim=True)  # each frame's DC offset removed
frames = frames - 0.97 * torch.cat((frames[:, :1], frames[:, :-1]), dim=1)  # pre-emphasis (x[-1] := x[0])
frames = frames * torch.hann_window(400, periodic=False)  # symmetric Hann window
power = torch.fft.rfft(frames, n=512).abs() ** 2  # (198, 257): zero-padded to 512 points, bins 31.25 Hz apart
low, high = 1127 * math.log(1 + 20 / 700), 1127 * math.log(1 + 8000 / 700)  # 20 Hz and 8 kHz on HTK's mel scale
corners = low + torch.arange(128 + 2) * ((high - low) / 129)  # (130,) mel: triangle k spans corners k to k + 2
left, centre, right = corners[:-2, None], corners[1:-1, None], corners[2:, None]  # (128, 1) each
bin_mel = 1127 * torch.log(1 + torch.arange(257) * 16_000 / 512 / 700)[None]  # (1, 257): each FFT bin in mel
filters = torch.clamp(torch.minimum((bin_mel - left) / (centre - left), (right - bin_mel) / (right - centre)), min=0)
filters[:, -1] = 0  # (128, 257): Kaldi leaves the Nyquist bin out
fb = torch.log(torch.clamp(power @ filters.T, min=torch.finfo(torch.float32).eps)).T  # (128, 198)
n_frames = fb.shape[1]  # 2 s at a 10 ms shift with 25 ms windows: 198 frames
print("input shape:", tuple(x.shape), "| fbank frames of a 2 s clip before padding:", n_frames)
assert torch.allclose(fb, kaldi_fbank(clip[None]).T, atol=1e-5)  # the package's fbank, (frames, 128) transposed
print("hand-made fbank equals the package's fbank (atol 1e-5):", True)
fb = torch.nn.functional.pad(fb, (0, 204 - n_frames))  # (128, 204): zero-padded at the end
mine = (fb - iba.FBANK_MEAN) / iba.FBANK_STD
print("padding value after normalisation:", round(float(mine[0, -1]), 2))
assert torch.allclose(mine, x[0, 0], atol=1e-5)
print("hand-made clip 1 equals the package's input:", True)

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.2), sharey=True, dpi=72)
for i, ax in enumerate(axes):
    im = ax.imshow(x[i, 0].numpy(), origin="lower", aspect="auto", cmap="magma", extent=(0, 2.04, 0, 128))
    ax.set(title=f"clip {i + 1}: normalised log-mel fbank", xlabel="time in clip (s)")
axes[0].set_ylabel("mel bin")
fig.colorbar(im, ax=axes, label="(log-mel + 4.268) / 9.138")
plt.show()

# %% [markdown]
# **Is it really ImageBind's input?** ImageBind's own `load_and_transform_audio_data` needs torchaudio (a2i does
# not, and torch >= 2.12 has no torchaudio release), so this cross-check runs only where torchaudio imports. It
# reads files with `torchaudio.load`, which in torchaudio 2.9 needs ffmpeg; we swap in a soundfile reader for that
# one step and compare on the same file. (The unit test `tests/test_imagebind_audio.py` does this for several
# rates and lengths, including recordings shorter than 2 s.)

# %%
# NBVAL_CHECK_OUTPUT
try:
    ib_data = import_imagebind_data()  # imagebind.data imports torchaudio
except ImportError as err:
    ib_data = None
    print(f"skipped: ImageBind's own loader needs torchaudio, which this environment lacks ({err.__cause__})")


def soundfile_load(path, *args, **kwargs):
    """Stand-in for torchaudio.load: (channels, frames) float32 and the file's rate."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), rate


if ib_data is not None:
    saved_load, ib_data.torchaudio.load = ib_data.torchaudio.load, soundfile_load
    try:
        theirs = ib_data.load_and_transform_audio_data([str(pair.audio_path)], "cpu")  # (1, 3, 1, 128, 204)
    finally:
        ib_data.torchaudio.load = saved_load
    ours = iba.load_audio_inputs([pair.audio_path])
    diff = (ours - theirs).abs().max().item()
    assert diff < 1e-4
    print("shape:", tuple(ours.shape), "| ImageBind's own preprocessing gives the same input (max diff < 1e-4):",
          True)

# %% [markdown]
# ## 3. The model
# **Full mode** builds `imagebind_huge(pretrained=False)` (1.2 B parameters) and loads Meta's checkpoint from
# the cache, verified against the architecture, never into `./.checkpoints` as `pretrained=True` would.
#
# **Demo mode** cannot download it, so it builds the *same class*, `ImageBindModel`, at small widths and
# trains it the way ImageBind came to be:
# 1. *vision and text*, CLIP-style: each image against the prompts "an aerial photo of {class}" of the 13
#    scenes, and against the captions that also name the place's visible detail ("an aerial photo of harbour
#    with many boats", written by the synthetic world), cross-entropy over each with the text head's
#    learnable logit scale. ImageBind takes this stage ready-made from OpenCLIP, trained on captioned web
#    images; the captions are what make an image embedding say more than the scene;
# 2. *audio*, with vision frozen: InfoNCE between each recording $a_i$ and the embedding of **its own** image
#    $v_i$ against the other images of the batch,
#    $\mathcal{L} = -\frac{1}{2B}\sum_i \Big[\log \frac{e^{a_i\cdot v_i}}{\sum_j e^{a_i\cdot v_j}} +
#    \log \frac{e^{a_i\cdot v_i}}{\sum_j e^{a_j\cdot v_i}}\Big]$.
#    The audio head multiplies its unit vector by 20, so $a_i \cdot v_j = 20\cos$: ImageBind's temperature
#    0.05 is built into the model. A `_k` pair reuses its base id's recording with another image: when both
#    land in one batch, each would be the other's "negative" although the sound is the same, so the
#    other pairs of the same recording are masked out of the logits (`imagebind.mini_mask_same_recording`).
#
# Trained weights are saved in the cache as safetensors and reused on the next run. Training takes about two
# minutes on a laptop CPU in demo mode (no live progress bar: a stored notebook would keep it at 0%;
# `a2i embed` shows one).

# %%
t0 = time.time()
emb = load_imagebind(cfg, progress=False)
print(f"{emb.identity}: ready in {time.time() - t0:.1f} s")

# %%
# NBVAL_CHECK_OUTPUT
model = emb.model
print(type(model).__name__, f"on {emb.device}, {str(emb.dtype).replace('torch.', '')}, output dim {emb.embed_dim}")
for tower in ("vision", "audio", "text"):
    n = sum(p.numel() for p in model.modality_trunks[tower].parameters())
    print(f"  {tower:6s} trunk: {n / 1e6:8.3f} M parameters")
assert type(model).__name__ == "ImageBindModel" and not model.training

# %%
if emb.info:  # the miniature's training history (empty for the official weights)
    loss_curve(
        {"stage 1: image vs 13 prompts (cross-entropy)": emb.info["vision_loss"],
         "stage 2: audio vs images (InfoNCE)": emb.info["audio_loss"]},
        title="Training the miniature ImageBind", ylabel="loss (nats)", xlabel="step", smooth=5,
    )
    plt.show()
else:
    print("official imagebind_huge weights: no training history to show")

# %% [markdown]
# ## 4. Embeddings, their norms, and the scale question
# Every file is embedded once and kept in the cache, keyed by the SHA-256 of its bytes and the model's
# identity (`a2i embed DIR` does the same from the command line). ImageBind's heads end differently:
# vision is L2-normalised (norm 1), audio is normalised **and multiplied by 20**, and the 3 clip embeddings
# are then averaged, so an audio embedding has norm $\le 20$ (exactly 20 only if the 3 clips agree).

# %%
stats = EmbedStats()
audio_test = embed_files(emb, [p.audio_path for p in test], "audio", cfg, progress=False, stats=stats)  # (N, D)
image_test = embed_files(emb, [p.image_path for p in test], "vision", cfg, progress=False, stats=stats)  # (N, D)
audio_tr = embed_files(emb, [p.audio_path for p in train], "audio", cfg, progress=False, stats=stats)  # (M, D)
image_tr = embed_files(emb, [p.image_path for p in train], "vision", cfg, progress=False, stats=stats)  # (M, D)
text = embed_texts(emb, class_prompts(CLASSES), cfg)  # (13, D)
print(f"{stats} in {stats.seconds:.1f} s")

# %% [markdown]
# `_k` pairs reuse their base id's recording byte for byte, so its embedding is computed once and the `_k`
# copies are served from it: they are counted as copies, not as computed embeddings.

# %%
# NBVAL_CHECK_OUTPUT
n_files = 2 * (len(test) + len(train))
n_distinct = len({p.audio_path.read_bytes() for p in ds.pairs}) + len({p.image_path.read_bytes() for p in ds.pairs})
print(f"{n_files} files; {n_distinct} distinct contents; {n_files - n_distinct} copies "
      f"(the recordings of the {sum(p.id != p.base_id for p in ds.pairs)} `_k` pairs)")

# %%
# NBVAL_CHECK_OUTPUT
a_norm, v_norm = audio_test.norm(dim=1), image_test.norm(dim=1)
assert audio_test.shape == image_test.shape == (len(test), emb.embed_dim)
assert torch.allclose(v_norm, torch.ones_like(v_norm), atol=1e-4)
assert (a_norm <= 20 + 1e-3).all() and (a_norm > 1).all()
print("vision norms are 1:", True, "| audio norms are in (1, 20]:", True)
print("audio_scale handed to the U-Net:", cfg.imagebind.audio_scale)

# %%
scaled = scale_audio(audio_test, cfg.imagebind.audio_scale)
fig, ax = plt.subplots(figsize=(8, 3))
bins = np.linspace(0, 21, 85)
ax.hist(v_norm.numpy(), bins=bins, label="vision (ImageBind)", color="C0")
ax.hist(a_norm.numpy(), bins=bins, label="audio (ImageBind)", color="C1", alpha=0.8)
ax.hist(scale_audio(audio_test, "unit").norm(dim=1).numpy(), bins=bins, label='audio, audio_scale="unit"',
        color="C2", histtype="step", lw=2)
ax.set(title=f"Embedding norms (test); the U-Net gets audio_scale={cfg.imagebind.audio_scale!r}",
       xlabel="L2 norm", ylabel="recordings / images")
ax.legend()
plt.show()

# %% [markdown]
# Stable UnCLIP was trained on raw OpenCLIP ViT-H image embeddings, neither of these scales. Anything2Image
# feeds ImageBind's audio embedding as it comes (norm ~20), and that is our default
# (`imagebind.audio_scale = "imagebind"`); `"unit"` divides by the norm, to the scale of ImageBind's image
# embeddings. Directions, and so every cosine below, are the same either way; only the U-Net (notebook 05)
# can tell which scale works better, and it is a one-line config change to try.

# %% [markdown]
# ## 5. Do sounds land near their images?
# In ADVANCE (and in our synthetic copy of it) a place can have extra `_k` pairs: another image with the
# **same recording** as its base id. Over all pairs, one recording would have several "right" images, so
# R@1 could never reach 1, and a recording would count several times. From here on we measure over the
# distinct held-out recordings: **one pair per recording**, i.e. per (class, base id), the base pair itself.
# (Ids are unique within a class folder; keying by the id alone would merge two places of different scenes
# that happen to share a number.)

# %%
# NBVAL_CHECK_OUTPUT
rec = one_pair_per_recording(test)  # one pair per (class, base id), still grouped by scene
keep = {id(p) for p in rec}
rows = torch.tensor([i for i, p in enumerate(test) if id(p) in keep])  # positions of those pairs in test
audio_rec, image_rec = audio_test[rows], image_test[rows]  # (R, D) each
print(f"{len(test)} test pairs, {len(rec)} distinct recordings (one pair per recording)")

# %% [markdown]
# The cosine similarity of every held-out recording (rows) with the image of every held-out place (columns),
# both sorted by scene. If audio and images share one space, the diagonal blocks (same scene) should be
# bright.

# %%
sim = cosine_matrix(audio_rec, image_rec)  # (R, R)
labels_val = torch.tensor([CLASSES.index(p.label) for p in rec])
edges = np.flatnonzero(np.diff(labels_val.numpy())) + 0.5
fig, ax = plt.subplots(figsize=(7.5, 6.5))
im = ax.imshow(sim.numpy(), cmap="viridis")
for e in edges:
    ax.axhline(e, color="w", lw=0.5)
    ax.axvline(e, color="w", lw=0.5)
centres = [np.mean(np.flatnonzero(labels_val.numpy() == c)) for c in sorted(set(labels_val.tolist()))]
names = [CLASSES[c] for c in sorted(set(labels_val.tolist()))]
ax.set_xticks(centres, names, rotation=70, ha="right", fontsize=7)
ax.set_yticks(centres, names, fontsize=7)
ax.set(title="Held-out audio x image cosine similarity", xlabel="image (by scene)", ylabel="recording (by scene)")
fig.colorbar(im, ax=ax, label="cosine")
save_figure(fig, cfg.figures_dir / "04_similarity_matrix.png")  # kept per mode in the cache (full-mode results)
plt.show()

# %% [markdown]
# ## 6. Retrieval: find the image of a recording
# For each distinct held-out recording, rank the images of the held-out places (one per base id) by cosine.
# R@k is the fraction whose own image is among the top k; ties count against it. With N candidates, chance
# is $k/N$. Pairs of one scene look and sound alike, so R@1 is
# hard (the right scene is easy, the right *place* is not); R@5 shows whether the scene is found.

# %%
metrics = evaluate_alignment(emb, ds, cfg)
recall = recall_at_k(sim, ks=(1, 5))
assert abs(recall[1] - metrics["R@1"]) < 1e-6 and abs(recall[5] - metrics["R@5"]) < 1e-6
print(f"held-out audio -> image retrieval over {metrics['n_recordings']} recordings and their images:")
print(f"  R@1 = {recall[1]:.3f}   (chance {metrics['chance_R@1']:.3f})")
print(f"  R@5 = {recall[5]:.3f}   (chance {metrics['chance_R@5']:.3f})")

# %% tags=["trained-claim"]
# NBVAL_CHECK_OUTPUT
assert recall[1] > 2 * metrics["chance_R@1"] and recall[5] > metrics["chance_R@5"]
print("retrieval well above chance:", True)

# %% [markdown]
# Three recordings (shown as their mel fbank, what the model hears: the first of its 3 clips) and the five
# images they retrieve; a green frame marks the recording's own image.

# %%
queries = [0, len(rec) // 2, len(rec) - 1]
fig, axes = plt.subplots(len(queries), 6, figsize=(12, 2.5 * len(queries)), dpi=72, layout="constrained")
for row, q in zip(axes, queries):
    fbank = iba.load_audio_inputs([rec[q].audio_path])[0, 0, 0]  # (128, 204): clip 1, normalised log-mel
    row[0].imshow(fbank.numpy(), origin="lower", aspect="auto", cmap="magma", extent=(0, 2.04, 0, 128))
    row[0].set(title=f"query: {rec[q].label} {rec[q].id}", xlabel="time in clip (s)", ylabel="mel bin")
    row[0].title.set_fontsize(8)
    for j, idx in enumerate(sim[q].topk(5).indices.tolist()):
        ax = row[j + 1]
        ax.imshow(load_image(rec[idx].image_path, 96))
        ax.set_title(f"#{j + 1} {rec[idx].label}\ncos {sim[q, idx]:.2f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if idx == q:
            for spine in ax.spines.values():
                spine.set(color="lime", lw=4)
fig.suptitle("Audio -> image retrieval on held-out recordings (query: fbank of clip 1; top 5 images)")
save_figure(fig, cfg.figures_dir / "04_retrieval.png")
plt.show()

# %% [markdown]
# ### Within a scene: does a recording find its own place?
# Finding the right scene is only half of what a generator needs: the synthetic world gives every place one
# visible detail (its `amount`: more water, more boats, a longer train) that its recording also carries
# (notebook 01). Restrict each query to the images of **its own scene**: does its own image rank first (R@1,
# chance 1 / scene size), and how often does it beat each other image of the scene ("pairwise", chance 0.5)?

# %%
within = {k.removeprefix("within_"): v for k, v in metrics.items() if k.startswith("within_")}
if within:
    print(f"within-scene retrieval over {within['n_queries']} held-out recordings:")
    print(f"  R@1      = {within['R@1']:.3f}   (chance {within['chance_R@1']:.3f})")
    print(f"  pairwise = {within['pairwise']:.3f}   (chance {within['chance_pairwise']:.3f})")
else:  # a small dataset (the full-size smoke test, a few files of your own): one test place per scene
    print("no scene has two held-out recordings: within-scene retrieval needs more places per scene")

# %% [markdown]
# Is the pairwise score above its chance of 0.5 by more than the noise of a few dozen recordings? Each query
# contributes its own wins out of its own comparisons; resampling **recordings** (queries) with replacement and
# recomputing the pooled score gives a 95% percentile interval. (Queries of one scene share their images, so this
# interval is, if anything, a little too narrow.)

# %%
q_wins, q_comp = [], []  # per query: wins (ties count half) and comparisons against the other images of its scene
for i in range(len(rec)):
    others = sim[i, (labels_val == labels_val[i]) & (torch.arange(len(rec)) != i)]  # (n_scene - 1,)
    if len(others):
        q_wins.append(float((others < sim[i, i]).sum()) + 0.5 * float((others == sim[i, i]).sum()))
        q_comp.append(len(others))
q_wins, q_comp = np.array(q_wins), np.array(q_comp)
assert bool(within) == bool(len(q_wins))  # the package skips exactly the scenes of one recording
if within:
    assert abs(q_wins.sum() / q_comp.sum() - within["pairwise"]) < 1e-9  # the package's pooled score
    rng_boot = np.random.default_rng(cfg.seed)
    idx_boot = rng_boot.integers(0, len(q_wins), (N_BOOT, len(q_wins)))  # (N_BOOT, queries)
    boot_pw = q_wins[idx_boot].sum(axis=1) / q_comp[idx_boot].sum(axis=1)
    pw_lo, pw_hi = np.percentile(boot_pw, [2.5, 97.5])
    heard = "above chance: the miniature hears some of the place beyond its scene" if pw_lo > 0.5 else (
        "not distinguishable from chance at this sample size")
    print(f"pairwise {within['pairwise']:.3f}, 95% bootstrap interval [{pw_lo:.3f}, {pw_hi:.3f}] over "
          f"{len(q_wins)} recordings -> {heard}")

# %% [markdown]
# Within-scene retrieval is the part of the bridge that a generator could use to draw *this* place rather than a
# typical one of its scene; the line above says whether this run measures any of it.

# %% [markdown]
# ## 7. Which scene is this? Classification from audio alone
# Two ways to turn the audio embedding into one of the 13 scenes, by nearest cosine (over the distinct
# held-out recordings again, so a recording with `_k` pairs counts once):
# - **class means**: the mean image embedding of each scene over the training pairs. The audio tower never
#   saw a scene label; it only learned to land near its own image;
# - **text prompts**: the embeddings of "an aerial photo of {class}". For ImageBind-huge this is its
#   *emergent* zero-shot classification: neither its audio nor its image encoder was trained on these
#   prompts. For the miniature it is not: its vision tower was trained on exactly these 13 prompts (stage 1),
#   so this is a supervised classifier reached through the image space.

# %%
labels_tr = torch.tensor([CLASSES.index(p.label) for p in train])
means = class_means(image_tr, labels_tr, len(CLASSES))  # (13, D)
pred_text = nearest_prototype(audio_rec, text)
pred_means = nearest_prototype(audio_rec, means)
acc_text = (pred_text == labels_val).float().mean().item()
acc_means, acc_lo, acc_hi = accuracy_interval(pred_means, labels_val)
assert abs(acc_text - metrics["scene_acc_text"]) < 1e-6 and abs(acc_means - metrics["scene_acc_means"]) < 1e-6
print(f"held-out scene accuracy from audio alone, {len(rec)} recordings (chance {1 / len(CLASSES):.3f}):")
print(f"  via class means  {acc_means:.3f}  (95% Wilson interval {acc_lo:.2f}-{acc_hi:.2f})")
print(f"  via text prompts {acc_text:.3f}")

# %% [markdown]
# The **Wilson interval** is the range of true accuracies $p$ under which the observed count of correct recordings
# would not be surprising at the 5% level (it inverts the binomial test):
# $\big(\hat p + \tfrac{z^2}{2n} \pm z\sqrt{\hat p(1-\hat p)/n + z^2/4n^2}\big) / (1 + z^2/n)$ with $z = 1.96$.
# Unlike $\hat p \pm 1.96\,\mathrm{SE}$ it stays inside $[0, 1]$ and keeps close to 95% coverage for a few dozen
# recordings and accuracies near 0 or 1.
#
# Comparing two classifiers on the **same** recordings calls for a paired interval: resample recordings, and take
# the difference of the two accuracies on each resample. Recordings that are hard for both cancel out, so the
# paired interval is narrower than what two separate intervals suggest. And each interval is a 95% one: a notebook
# that draws many verdicts (06 draws one per system and metric) will call some difference "real" by luck alone.

# %%
right_t = (pred_text == labels_val).numpy().astype(float)  # (R,) 1 where the text prompts were right
right_m = (pred_means == labels_val).numpy().astype(float)  # (R,) class means
idx_acc = np.random.default_rng(cfg.seed).integers(0, len(right_t), (N_BOOT, len(right_t)))
diff_boot = right_m[idx_acc].mean(axis=1) - right_t[idx_acc].mean(axis=1)  # paired: same resampled recordings
d_lo, d_hi = np.percentile(diff_boot, [2.5, 97.5])
unpaired = np.sqrt(right_m.var() / len(right_m) + right_t.var() / len(right_t)) * 1.96  # as if independent
print(f"class means - text prompts = {right_m.mean() - right_t.mean():+.3f}; paired 95% interval "
      f"[{d_lo:+.3f}, {d_hi:+.3f}] (half-width {(d_hi - d_lo) / 2:.3f}; treated as independent: {unpaired:.3f})")
n_verdicts = 5 * 3  # notebook 06: five columns against the baseline, three metrics each
print(f"{n_verdicts} verdicts at 95% with no true difference: P(at least one false 'better') = "
      f"{1 - 0.95**n_verdicts:.0%}; a Bonferroni correction would test each at {1 - 0.05 / n_verdicts:.2%}")

# %% tags=["trained-claim"]
# NBVAL_CHECK_OUTPUT
assert acc_lo > 1 / len(CLASSES) and acc_text > 1 / len(CLASSES)
print("scene accuracy above chance, both ways (class means: even the interval's low end):", True)

# %% [markdown]
# The confusion matrix: rows are the true scenes, columns what the audio suggested. In the synthetic world
# (notebook 01) recordings share sources across related scenes, so the expected confusions are among scenes
# that share sources: the water scenes (beach, harbour, lake, bridge), the engine scenes (airport, harbour,
# train station, farmland's tractor), the birds-and-wind scenes (forest, orchard, grassland, sparse shrub
# land), the traffic scenes (residential, bridge); most pairs of scenes share some source, so the tally below the
# matrix prints that base rate next to the count. Noise-dominated, quiet and mixed recordings can land
# anywhere; broadband ones tend to land on a scene whose signature is itself broadband noise (the crowd of
# sports land, surf, wind). The tally below the matrix counts which kind each error is.

# %%
conf = confusion_matrix(labels_val, pred_means, len(CLASSES))  # (13, 13) counts
fig, ax = plt.subplots(figsize=(7, 6), layout="constrained")
im = ax.imshow(conf.numpy(), cmap="Blues", vmin=0)
for r in range(len(CLASSES)):
    for c in range(len(CLASSES)):
        if conf[r, c]:
            ax.text(c, r, int(conf[r, c]), ha="center", va="center", fontsize=7,
                    color="white" if conf[r, c] > conf.max() / 2 else "black")
ax.set_xticks(range(13), CLASSES, rotation=70, ha="right", fontsize=7)
ax.set_yticks(range(13), CLASSES, fontsize=7)
ax.set(title=f"Scene from audio (class means), {len(rec)} held-out recordings", xlabel="predicted scene",
       ylabel="true scene")
fig.colorbar(im, ax=ax, label="recordings")
save_figure(fig, cfg.figures_dir / "04_confusion.png")
plt.show()

# %% [markdown]
# Which recordings were misplaced, and what went into them (demo: from `synthetic.json`)? Each line names the
# recording's kind, its place's `amount` (a small one means a quiet signature, leaving mostly shared
# sources) and its sources with their levels in dB. Then a tally: is each error between two scenes whose
# recipes share a source, or a hard recording?

# %%
def share_a_source(a: str, b: str) -> bool:
    """Whether the recipes of scenes ``a`` and ``b`` have a source in common."""
    def sources(c):
        return {RECIPES[c]["signature"], *RECIPES[c]["shared"]}

    return bool(sources(a) & sources(b))


wrong = [i for i in range(len(rec)) if pred_means[i] != labels_val[i]]
for i in wrong:
    m = meta.get(rec[i].id)
    what = f"{m['kind']:5s} amount {m['amount']:.2f} {m['sources']}" if m else "(real data)"
    print(f"{rec[i].label:>17s} -> {CLASSES[pred_means[i]]:17s} {what}")
if meta:
    related = sum(share_a_source(rec[i].label, CLASSES[pred_means[i]]) for i in wrong)
    hard = sum(meta[rec[i].id]["kind"] != "clean" for i in wrong)
    hard_held_out = sum(meta[p.id]["kind"] != "clean" for p in rec)
    print(f"\n{len(wrong)} of {len(rec)} misplaced: {related} between scenes that share a source; {hard} hard "
          f"recordings (noisy, quiet or mixed; {hard_held_out} of the {len(rec)} held-out recordings are hard)")
    # Base rate: most scene pairs share a source, so "related" errors are expected even from random mistakes.
    pairs_share = np.mean([share_a_source(a, b) for a in CLASSES for b in CLASSES if a != b])
    expected = sum(np.mean([share_a_source(rec[i].label, c) for c in CLASSES if c != rec[i].label]) for i in wrong)
    print(f"base rate: {pairs_share:.0%} of ordered scene pairs share a source; a wrong scene drawn at random for each "
          f"of these {len(wrong)} errors would give {expected:.1f} related ones (observed {related})")

# %% [markdown]
# ## 8. Examining the data: pairs that do not sound like they look
# The paper's limitations section blames part of its failures on the data: recordings that are noisy,
# nearly silent, or of something other than the scene. The bridge gives a way to find them: rank every
# **training** pair by the cosine of its audio and its image embedding; the bottom of the list is where to
# look. In demo mode the synthetic world wrote down what went into each recording, so the figure can say why
# a pair is bad: `noisy`, `quiet` or `mixed` (made hard on purpose), or a `faint signature` (a clean
# recording whose scene's own source is more than 10 dB below its loudest shared source).

# %%
def why_bad(pair) -> str:
    """What the generator recorded about a pair's recording, in a few words ("" when nothing is known)."""
    m = meta.get(pair.id)
    if not m:
        return ""
    if m["kind"] == "mixed":
        return f"mixed + {m['mixed_with']}"
    if m["kind"] != "clean":
        return m["kind"]
    signature = RECIPES[pair.label]["signature"]
    others = [v for k, v in m["sources"].items() if k != signature]
    return "faint signature" if others and m["sources"][signature] < max(others) - 10 else "clean"


pair_cos = torch.nn.functional.cosine_similarity(audio_tr, image_tr, dim=1)  # (M,)
order = pair_cos.argsort()  # worst first
worst = order[:8].tolist()
fig, axes = plt.subplots(1, 8, figsize=(14, 2.7), dpi=72, layout="constrained")
for ax, i in zip(axes, worst):
    ax.imshow(load_image(train[i].image_path, 96))
    reason = why_bad(train[i])
    ax.set_title(f"{train[i].label}\n{train[i].id} cos {pair_cos[i]:.2f}", fontsize=8)
    ax.set_xlabel(reason, fontsize=8, color="C3" if reason not in ("", "clean") else "0.3")
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("The 8 training pairs whose audio is least like their image (red: why, from synthetic.json)")
save_figure(fig, cfg.figures_dir / "04_worst_pairs.png")
plt.show()

fig, ax = plt.subplots(figsize=(8, 2.8), layout="constrained")
ax.hist(pair_cos.numpy(), bins=40, color="C0")
ax.axvline(pair_cos[order[7]].item(), color="C3", ls="--", label="8th worst")
ax.set(title="Audio-image cosine of every training pair", xlabel="cosine(audio, own image)", ylabel="pairs")
ax.legend()
plt.show()

# %% [markdown]
# Listen to the three worst (the first 3 s, at 16 kHz):

# %%
for i in worst[:3]:
    print(f"{train[i].label}/{train[i].id}  cosine {pair_cos[i]:.2f}  {why_bad(train[i])}")
    display(Audio(load_audio(train[i].audio_path, 16_000)[: 3 * 16_000], rate=16_000))

# %%
if meta:  # demo: is the bottom of the ranking where the hard recordings are?
    reasons = [why_bad(p) for p in train]
    is_hard = np.array([r != "clean" for r in reasons])
    tenth = max(1, len(train) // 10)
    share_worst = is_hard[order[:tenth].numpy()].mean()
    print(f"hard or faint recordings: {is_hard.mean():.0%} of all training pairs, {share_worst:.0%} of the worst 10% "
          "by cosine")
    kinds = [reasons[i] for i in order[:tenth].tolist()]
    print("among the worst 10%:", dict(Counter(k.split(" +")[0] for k in kinds).most_common()))
else:
    share_worst = None
    print("real data: no record of hard recordings; listen to the worst pairs above")

# %% tags=["trained-claim"]
# NBVAL_CHECK_OUTPUT
if share_worst is not None:
    assert share_worst > is_hard.mean()
print("the worst-ranked pairs are enriched in hard recordings (demo) or shown for listening (full):", True)

# %% [markdown]
# ## 9. The cache
# A second pass over the same files reads every embedding back from the cache (keyed by content hash and
# model identity): no model runs. A changed file has a new hash and is embedded again; an interrupted run
# leaves only a temporary file, never a half-written entry (`tests/test_embeddings.py` checks all three).

# %%
again = EmbedStats()
t0 = time.time()
audio_again = embed_files(emb, [p.audio_path for p in train], "audio", cfg, stats=again)
print(f"{again} in {time.time() - t0:.2f} s")

# %%
# NBVAL_CHECK_OUTPUT
assert again.computed == 0 and torch.equal(audio_again, audio_tr)
print("second pass: everything from the cache, identical embeddings:", True)

# %% [markdown]
# ## Summary
# - ImageBind's audio input is 3 clips x 2 s of a 16 kHz recording, each a normalised 128 x 204 log-mel
#   fbank; our reader reproduces ImageBind's own preprocessing exactly (multi-channel files included),
#   without ffmpeg.
# - ImageBind's frozen image encoder is OpenCLIP ViT-H, the encoder Stable UnCLIP was conditioned on; its
#   audio encoder is bound to that space by InfoNCE. The demo miniature, trained the same way on the CPU,
#   places held-out recordings in their scene well above chance but far from always: the synthetic world's
#   sounds overlap across related scenes, and the confusion matrix shows where (against a printed base rate: most
#   scene pairs share a source). Whether it hears the place beyond its scene is printed in section 6 with its
#   interval. In full mode the same cells measure `imagebind_huge` on ADVANCE.
# - Audio embeddings have norm up to 20, image embeddings norm 1: which scale the U-Net gets is an explicit
#   option (`imagebind.audio_scale`), ImageBind's own by default.
# - Ranking training pairs by audio-image agreement points at the pairs to listen to first; in demo mode the
#   bottom of the ranking is rich in noisy, quiet, mixed and faint-signature recordings.
#
# **Exercises**
# Exercises 1 and 2 edit the parameters cell only; then run that cell and every cell below it (Run > Run All
# Below): the miniature trains anew for a config it has not seen (a few minutes).
#
# 1. Set `OVERRIDES = {"imagebind.mini_audio_epochs": 10}`: how do R@5, scene accuracy and its interval move?
# 2. Turn off the false-negative mask, `OVERRIDES = {"imagebind.mini_mask_same_recording": False}`, and compare
#    retrieval.
#    How often do two pairs of one recording share a batch of `imagebind.mini_train_batch` in the demo?
# 3. Train the audio stage on all 3 clips per step instead of one random clip (`train_audio` in
#    `a2i_utils/imagebind/mini.py`). Is it better, and how much slower?
# 4. Which confusions in the matrix would you have made by ear? Listen to two misplaced recordings from the
#    list in section 7: in a new cell at the end, `for i in wrong[:2]: print(rec[i].label, "->",
#    CLASSES[pred_means[i]]); display(Audio(load_audio(rec[i].audio_path, 16_000), rate=16_000))`.
# 5. In full mode, sort the scenes by their mean audio-image cosine. Which scenes does ImageBind hear worst?
#
# **Next:** [05 U-Net fine-tuning](05_unet_finetuning.ipynb) hands these audio embeddings to UnCLIP's U-Net in
# place of image embeddings, and fine-tunes it to draw the place from its sound.
