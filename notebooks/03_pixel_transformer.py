# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03. The pixel transformer: drawing a scene from its sound, one pixel at a time
# The paper's first system (§3.2, §4.1): an encoder-decoder transformer reads the 500 x 220 FFT features of a
# recording and writes a small grayscale image as a sequence of pixel "words". We build it the way the paper
# describes it (the paper's own code did not: no local attention, no start token, no key/value cache), train
# it twice as the paper did, and say plainly what works and what does not.
#
# **What you will learn**
# - how an image becomes a sequence of tokens with 256 intensity classes and a start token;
# - what **local 1D self-attention** (Image Transformer) is, how it is computed block by block, and why it is
#   causal and bounded;
# - how cross-attention lets every pixel query the sound;
# - why sampling with a **key/value cache** costs a bounded amount per pixel instead of re-reading the prefix;
# - the paper's two experiments: (a) fitting up to 20 recordings of one scene, (b) training on the whole training split,
#   measured in bits per dimension on held-out recordings.

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
    # requirements-colab.txt keeps Colab's own torch: no multi-GB reinstall.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", "a2i/requirements-colab.txt"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", "a2i"], check=True)
    sys.path.insert(0, os.path.abspath("a2i"))

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from a2i_utils.config import get_config, seed_everything
from a2i_utils.data import prepare_dataset
from a2i_utils.plotting import image_grid, loss_curve, save_figure
from a2i_utils.transformer.features import FeatureNormalizer, features_for_pairs
from a2i_utils.transformer.figures import plot_attention_masks
from a2i_utils.transformer.model import (
    START,
    VOCAB_SIZE,
    PixelTransformer,
    local_attention,
    local_attention_mask,
)
from a2i_utils.transformer.training import (
    bits_per_dim,
    build_pixel_dataset,
    mean_abs_pixel_error,
    train_or_load,
)

MODE = os.environ.get("A2I_MODE", "demo")  # "demo" (CPU, synthetic data) or "full" (GPU, ADVANCE)
cfg = get_config(MODE)
seed_everything(cfg.seed)
DEVICE = cfg.resolved_device()
if DEVICE == "cpu":
    # The demo model's matrices are small: a second CPU thread gains little and, on a busy machine, loses a lot.
    torch.set_num_threads(1)
T = cfg.transformer
SIDE = T.image_size
print("device:", DEVICE)

# %%
print(cfg.summary())  # the whole config: not compared, so a change elsewhere does not stale this notebook

# %%
# NBVAL_CHECK_OUTPUT
print(cfg.data, cfg.features, cfg.transformer, sep="\n")  # compare only the sections this notebook uses

# %% [markdown]
# ## 1. The data: features in, small grayscale images out
# Notebook 02 made the paper's audio features: 500 sections of each 10 s recording, 220 FFT magnitudes per
# section. We standardise each bin with statistics of the **training** recordings only. The images are
# resized to `image_size` x `image_size` grayscale (the paper: 32 x 32; the demo preset uses a smaller side so
# that training fits a 2-core CPU in minutes; the code is the same).

# %%
ds = prepare_dataset(cfg, progress=False)
train_feats = features_for_pairs(ds.train, cfg, progress=False)  # (N_train, 500, 220)
val_feats = features_for_pairs(ds.val, cfg, progress=False)  # (N_val, 500, 220)
norm = FeatureNormalizer().fit(train_feats)
train_set = build_pixel_dataset(ds.train, cfg, norm, progress=False)  # features + SIDE x SIDE grayscale images
val_set = build_pixel_dataset(ds.val, cfg, norm, progress=False)
# build_pixel_dataset does what we just did by hand: the same normalised features, one row per pair.
assert np.allclose(train_set.features.numpy(), np.asarray(norm(train_feats)), atol=1e-6)
assert np.allclose(val_set.features.numpy(), np.asarray(norm(val_feats)), atol=1e-6)
train_labels = [p.label for p in ds.train]
val_labels = [p.label for p in ds.val]

# %%
# NBVAL_CHECK_OUTPUT
print("train:", len(train_set), "pairs, features", tuple(train_set.features.shape[1:]),
      "pixels", tuple(train_set.pixels.shape[1:]))
print("val:  ", len(val_set), "pairs")
assert train_set.images.dtype == torch.uint8 and train_set.images.shape[1:] == (SIDE, SIDE)
assert abs(float(train_set.features.mean())) < 1e-2  # standardised with training statistics

# %%
show = [next(i for i, lab in enumerate(train_labels) if lab == c) for c in sorted(set(train_labels))]
fig = image_grid([train_set.images[i].numpy() for i in show], [train_labels[i] for i in show], ncols=7,
                 suptitle=f"What the transformer must draw: {SIDE}x{SIDE} grayscale, one per scene")
plt.show()

# %% [markdown]
# ## 2. Images as token sequences
# The image is read row by row into `SIDE**2` tokens, each an intensity class 0..255. The decoder predicts
# token *i* from the tokens before it, so its input is the sequence shifted right by one, with a **start
# token** (id 256) in front: the first pixel is predicted from the sound alone. The embedding table has 258
# rows: 256 intensities, the start token and a mask token (id 257, used only by the optional *token dropout*,
# `transformer.token_dropout`, off in both presets); the output head has 256 classes. (The paper's code had no
# start token: it fed pixel 0 and never predicted it.) The 256 intensity rows start as sinusoidal codes of the
# intensity, so that 127 and 128 begin close together; training moves them from there.

# %%
# NBVAL_CHECK_OUTPUT
px = train_set.pixels[:2]  # (2, T)
dec_in = torch.cat([torch.full((2, 1), START), px[:, :-1]], dim=1)  # (2, T)
print("pixels per image:", px.shape[1], "| embedding rows:", VOCAB_SIZE, "| start token id:", START)
assert torch.equal(dec_in[:, 1:], px[:, :-1]) and (dec_in[:, 0] == START).all()
assert torch.equal(px[0].reshape(SIDE, SIDE), train_set.images[0].long())  # row-major order

# %% [markdown]
# ## 3. Local 1D self-attention
# Full causal self-attention lets pixel *p* look at all *p* pixels before it: cost grows as T^2. The Image
# Transformer cuts the sequence into **query blocks** of `block_len` positions. Every query in the block that
# starts at $b_0$ attends to a **memory** of the `mem_len` positions before the block, and to the positions of its
# own block up to itself:
#
# $$\text{keys}(p) = \{\,k : \max(0,\, b_0 - M) \le k \le p\,\}, \qquad b_0 = L \lfloor p / L \rfloor,$$
#
# with $L$ = `block_len` and $M$ = `mem_len`.
#
# Each query sees at most `block_len + mem_len` keys, whatever the image size. The demo preset (rows of 16
# pixels) uses blocks of 32 and a memory of 32: two rows each; the full preset (rows of 32) uses 128 and 128,
# four rows each. Either way a pixel sees the rows just above it, which is where most of its information is.

# %%
fig = plot_attention_masks(T=min(256, SIDE * SIDE), block_len=T.block_len, mem_len=T.mem_len)
plt.show()

# %% [markdown]
# The picture is a dense T x T mask, but training never builds one. `local_attention` pads the keys with
# `mem_len` empty positions, **unfolds** them into one window of `mem_len + block_len` keys per block, and runs
# attention per block with a small `(block_len, mem_len + block_len)` mask: memory and time O(T (L + M)), not
# O(T^2). We check that it equals attention with the dense mask:

# %%
# NBVAL_CHECK_OUTPUT
q, k, v = torch.randn(3, 2, T.n_heads, 300, 16).unbind(0)  # (B, nh, T, hs) each, T not a multiple of a block
blocked = local_attention(q, k, v, T.block_len, T.mem_len)
dense = F.scaled_dot_product_attention(q, k, v, attn_mask=local_attention_mask(300, T.block_len, T.mem_len))
keys_per_query = local_attention_mask(300, T.block_len, T.mem_len).sum(1)
print("blocked == dense:", torch.allclose(blocked, dense, atol=1e-5),
      "| most keys any query sees:", int(keys_per_query.max()), "=", T.block_len, "+", T.mem_len)
assert torch.allclose(blocked, dense, atol=1e-5) and keys_per_query.max() == T.block_len + T.mem_len

# %% [markdown]
# ## 4. The model
# **Encoder:** a linear embedding of each 220-d section, sinusoidal positions, `n_enc_layers` layers of full
# self-attention + feed-forward. **Decoder:** pixel-token embeddings + sinusoidal positions, then per layer:
# local causal self-attention; **cross-attention queried by the self-attention output** (each pixel asks the
# sound what it needs, after seeing its neighbours); feed-forward. A linear head gives 256 logits per pixel.
# Layers are pre-norm (LayerNorm before each sub-layer), which trains stably without a long warm-up.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(cfg.seed)
model = PixelTransformer(T).to(DEVICE)
f0, p0 = train_set.features[:2].to(DEVICE), train_set.pixels[:2].to(DEVICE)
logits = model(f0, p0)  # (B, T, 256)
print("parameters:", f"{model.num_parameters():,}")
print("features", tuple(f0.shape), "-> encoder", tuple(model.encode(f0).shape), "-> logits", tuple(logits.shape))
assert logits.shape == (2, SIDE * SIDE, 256)

# %% [markdown]
# **Causality check.** Changing pixel *j* must change none of the predictions for pixels 0..*j* (they may only
# use earlier pixels), and it should change the prediction for pixel *j + 1*.

# %%
# NBVAL_CHECK_OUTPUT
model.eval()
j = SIDE * SIDE // 2
p1 = p0.clone()
p1[:, j] = (p1[:, j] + 128) % 256
with torch.no_grad():
    a, b = model(f0, p0), model(f0, p1)
print("predictions 0..j unchanged:", torch.equal(a[:, : j + 1], b[:, : j + 1]),
      "| prediction j+1 changed:", not torch.allclose(a[:, j + 1], b[:, j + 1]))
assert torch.equal(a[:, : j + 1], b[:, : j + 1]) and not torch.allclose(a[:, j + 1], b[:, j + 1])

# %% [markdown]
# ## 5. Sampling with a key/value cache
# Generation runs the decoder once per pixel. Without a cache, step *t* re-runs the decoder over all *t*
# previous pixels (the paper's code): T steps of growing cost, O(T^2) token passes. With a cache, each layer
# stores the keys and values it has computed; step *t* computes them for one new token and attends over the
# cached window `max(0, b0 - mem_len) .. t` only, at most `block_len + mem_len` keys. The cross-attention
# keys/values of the encoder output are computed once per image. Both give the same logits (checked below)
# and so the same pixels for the same seed (`tests/test_pixel_transformer.py`). `bench/bench_sampling.py`
# measures the speed-up on full 32x32 images: on the 2-core demo CPU, with this model size and a batch of 4,
# 25.8x more images per second with the cache than re-running the prefix, with identical pixels
# (`bench/results/bench_sampling.txt`).

# %%
# NBVAL_CHECK_OUTPUT
with torch.no_grad():
    forced = model(f0[:1], p0[:1])[0]  # (T, 256) teacher-forced logits
    mem_kvs = model.memory_kv(model.encode(f0[:1]))
    caches = model.new_cache(1, f0)
    tokens = torch.cat([torch.tensor([START], device=DEVICE), p0[0, :-1]])  # (T,)
    stepped = torch.stack([model.step_logits(tokens[t:t + 1], t, mem_kvs, caches)[0] for t in range(len(tokens))])
print("cached step-by-step logits == teacher-forced logits:", torch.allclose(stepped, forced, atol=1e-4))
assert torch.allclose(stepped, forced, atol=1e-4)

# %%
start = time.perf_counter()
_ = model.sample(f0[:1], generator=torch.Generator(device=DEVICE).manual_seed(0))
print(f"one {SIDE}x{SIDE} image with the cache: {time.perf_counter() - start:.2f} s (untrained model)")

# %% [markdown]
# ## 6. Experiment (a): fit up to 20 recordings of one scene
# The paper first trained on 20 airport pairs until the model could redraw them from their sounds (5,000 steps
# on a GPU). We do the same with the demo model: next-pixel cross-entropy with teacher forcing, Adam with a
# linear warm-up then $1/\sqrt{\text{step}}$ decay, gradient clipping. `train_or_load` loads the checkpoint when
# this exact run (config, seed, data, target steps) has been trained before, resumes it when it stopped early,
# and trains it otherwise; the checkpoints resume exactly (`tests/test_transformer_training.py`).
#
# **One pair per recording.** In ADVANCE several images share one recording: `12345.jpg`, `12345_1.jpg`,
# `12345_2.jpg` ... are different photos of the place recorded in `12345.wav`, so their features are identical.
# For such a sound a model can at best draw *one* of its images (or a blur of them): no sound can tell them
# apart. So the pairs are **distinct recordings**, one image each (the first by id): up to `overfit_pairs` of
# the paper's scene, the airport. The small demo training split holds fewer than 20 distinct airport
# recordings (the cell prints how many), so there we fit all of them; ADVANCE has far more.

# %%
base_ids = {}  # scene -> {base id: first position in train_set}
for i, p in enumerate(ds.train):
    base_ids.setdefault(p.label, {}).setdefault(p.base_id, i)
scene = "airport"
idx = sorted(base_ids[scene].values())[: T.overfit_pairs]
fit_set = train_set.subset(idx)
print(f"scene {scene!r}: {len(base_ids[scene])} distinct recordings in the training split "
      f"({sum(lab == scene for lab in train_labels)} pairs); fitting {len(idx)} pairs, one per recording")

# %%
# NBVAL_CHECK_OUTPUT
fit_bases = [ds.train[i].base_id for i in idx]
print("pairs:", len(idx), "| distinct recordings:", len(set(fit_bases)))
assert len(set(fit_bases)) == len(idx) and all(ds.train[i].label == scene for i in idx)

# %%
fit_model, fit_hist = train_or_load(cfg, fit_set, f"overfit-{scene}", steps=T.overfit_steps)

# %%
fig = loss_curve(fit_hist["losses"], title=f"Fitting {len(fit_set)} {scene} pairs", ylabel="cross-entropy (nats/pixel)",
                 smooth=10)
save_figure(fig, cfg.figures_dir / "03_overfit_loss.png")
plt.show()

# %% [markdown]
# Now the real test: give the model each of the fitted recordings and let it draw, pixel by pixel, with greedy
# decoding (the most likely intensity at each step). We compare with the original images by the mean
# absolute pixel error (0..255), and with two references: the error of the *mean image* of the set (what a
# model that ignores the sound could at best do with one picture), and the error between *different* images
# of the set (a wrong match).

# %%
start = time.perf_counter()
fit_gen = fit_model.sample(fit_set.features.to(DEVICE), greedy=True).cpu()  # (N, H, W) uint8
fit_mae = mean_abs_pixel_error(fit_gen, fit_set.images)
mean_img = fit_set.images.float().mean(0).round().to(torch.uint8).expand_as(fit_set.images)
mae_mean = mean_abs_pixel_error(mean_img, fit_set.images)
mae_shuffled = mean_abs_pixel_error(fit_gen, fit_set.images.roll(1, dims=0))
print(f"sampled {len(fit_set)} images in {time.perf_counter() - start:.1f} s")
per_image = (fit_gen.float() - fit_set.images.float()).abs().mean((1, 2))  # (N,)
nearest = (fit_gen.float()[:, None] - fit_set.images.float()[None]).abs().mean((2, 3)).argmin(1)  # (N,)
own = int((nearest == torch.arange(len(fit_set))).sum())
print(f"mean absolute pixel error, generated vs own original: {fit_mae:.1f} / 255")
print(f"  redrawn exactly (error < 1): {int((per_image < 1).sum())} of {len(fit_set)}; closest to its own original: "
      f"{own} of {len(fit_set)}")
print(f"  reference: mean image vs originals                 {mae_mean:.1f} / 255")
print(f"  reference: generated vs another pair's original    {mae_shuffled:.1f} / 255")
wrong = [(i, int(nearest[i])) for i in range(len(fit_set)) if per_image[i] >= 1]
print("  not redrawn (sound -> closest original):", ", ".join(f"{i} -> {j}" for i, j in wrong) or "none")
print(f"bits per dimension on these {len(fit_set)} pairs: {bits_per_dim(fit_model, fit_set):.3f} (uniform guess: 8)")

# %%
# NBVAL_CHECK_OUTPUT
print("generated images closer to their own originals than the mean image is:", fit_mae < mae_mean)
assert fit_mae < mae_mean

# %%
n_show = 10
pics = [fit_set.images[i].numpy() for i in range(n_show)] + [fit_gen[i].numpy() for i in range(n_show)]
titles = [f"original {i}" for i in range(n_show)] + [f"from sound {i}" for i in range(n_show)]
fig = image_grid(pics, titles, ncols=n_show, suptitle=f"(a) fitted to {len(fit_set)} {scene} pairs: "
                 f"originals (top) and greedy samples from their recordings (bottom), MAE {fit_mae:.1f}")
save_figure(fig, cfg.figures_dir / "03_overfit_samples.png")
plt.show()

# %% [markdown]
# ## 7. Experiment (b): the whole training split
# Next, every training pair of every scene. We measure the held-out next-pixel loss in **bits per dimension**
# (cross-entropy in bits per pixel; 8 = a uniform guess over 256 values) on the validation recordings, which
# the model never saw, and compare it with a model that ignores the sound and the neighbours: the entropy of
# the training split's intensity histogram.

# %%
full_model, full_hist = train_or_load(cfg, train_set, "train-split", steps=T.steps)

# %%
fig = loss_curve(full_hist["losses"], title=f"Training on all {len(train_set)} training pairs",
                 ylabel="cross-entropy (nats/pixel)", smooth=10)
save_figure(fig, cfg.figures_dir / "03_train_loss.png")
plt.show()

# %%
hist = torch.bincount(train_set.pixels.flatten(), minlength=256).double()
p_hist = hist / hist.sum()
unigram_bits = float(-(p_hist[val_set.pixels.flatten()].clamp_min(1e-12)).log2().mean())
val_bpd = bits_per_dim(full_model, val_set)
train_bpd = bits_per_dim(full_model, train_set)
print(f"training loss, mean of the last 10 steps: {np.mean(full_hist['losses'][-10:]):.2f} nats/pixel")
print(f"held-out bits/dim: {val_bpd:.2f} | training bits/dim: {train_bpd:.2f}")
print(f"references: uniform 8.00 | training intensity histogram on held-out pixels {unigram_bits:.2f}")

# %%
# NBVAL_CHECK_OUTPUT
print("held-out bits/dim below the intensity-histogram baseline:", val_bpd < unigram_bits)
assert val_bpd < unigram_bits

# %% [markdown]
# Generated images for held-out recordings of several scenes, sampled at temperature 1 (greedy decoding of a
# model this unsure tends to settle on flat grey), next to the true images.

# %%
pick = []
for c in sorted(set(val_labels)):
    pick.append(val_labels.index(c))
pick = pick[:8]
gen = torch.Generator(device=DEVICE).manual_seed(cfg.seed)
val_gen = full_model.sample(val_set.features[pick].to(DEVICE), temperature=1.0, generator=gen).cpu()
pics = [val_set.images[i].numpy() for i in pick] + [g.numpy() for g in val_gen]
titles = [val_labels[i] for i in pick] + ["from sound"] * len(pick)
fig = image_grid(pics, titles, ncols=len(pick),
                 suptitle="(b) held-out recordings: true images (top) and samples from the sound (bottom)")
save_figure(fig, cfg.figures_dir / "03_heldout_samples.png")
plt.show()

# %% [markdown]
# ## 8. What works and what does not
# Numbers from the stored demo run (16x16 synthetic images, a 281k-parameter model, one CPU thread); the cells
# above print them again when you re-run.
#
# **Works: fitting the recordings of one scene (the paper's first experiment).** The demo training split holds
# 16 distinct airport recordings, so we fit 16 pairs, one image per recording. After 400 steps the model's loss
# on them is ~0 (0.001 bits/dim) and greedy decoding from each recording redraws **all 16 images exactly**: mean
# absolute pixel error **0.0 / 255**, against 14.6 for the best single "mean image" and 21.5 for a wrong pair.
# Under teacher forcing, once a few pixels are drawn the prefix alone identifies the memorised image, so the sound
# only has to decide the first few pixels, and 16 different recordings are easy to tell apart there. This is
# memorising, not understanding the sound: 16 sounds are mapped to 16 pictures, and nothing here says the model
# would draw a sensible airport for a recording it has not seen (experiment (b) asks that).
#
# **Why one pair per recording.** An earlier version of this notebook took the first 20 airport *pairs*, which
# included `_k` images sharing a recording with another pair: identical features, different pictures. Its only
# "misses" were exactly those: for such a sound the model drew the other image of the same recording. No model
# can do better there, since the sound cannot tell the images apart; in ADVANCE, a recording with several images
# can at best be drawn as one of them.
#
# **Does not work: the whole training split (the paper's second experiment).** On all 274 pairs of 13 scenes,
# 80 steps bring the training loss to ~3.8 nats/pixel (the paper reports 4.2-5.5 at full scale) and the
# held-out loss to **5.5 bits/dim**, below the 7.3 bits of the intensity histogram and the 8 of a uniform
# guess, and almost equal to the training value (5.46): the model has learned what pixels look like next to
# their neighbours, and little about the sound. Its samples for held-out recordings are streaky textures with
# roughly the right overall brightness at best (the dark forest), with no scene structure, like the paper's
# Figure 6. Longer training and the full-size model (`A2I_MODE=full`, on a GPU) are the experiment left to run;
# the paper's own conclusion was that this approach needs far more data than ADVANCE has, which is why it moved
# on to SounDiff (notebooks 04-06).
#
# **Fixed relative to the paper's code:** local 1D attention really is local (checked), there is a start token,
# the embedding table has room for its special tokens, cross-attention is queried by the self-attention output,
# and sampling uses a key/value cache (same pixels, `bench/bench_sampling.py` for the speed).

# %% [markdown]
# ## Summary
# - An image is a sequence of intensity tokens after a start token; the decoder predicts each from the ones
#   before it and from the sound (cross-attention queried by the self-attention output).
# - Local 1D attention bounds what each pixel reads to its block and a memory: computed block by block for
#   training, and with a key/value cache for sampling, where each new pixel costs the same small amount.
# - Checks: blocked = dense-masked attention, causality, cached = teacher-forced logits.
#
# ## Exercises
# 1. Set `block_len` and `mem_len` to 16 (`get_config(MODE, {"transformer.block_len": 16, ...})`) and redraw
#    the mask. How many rows above can a pixel see now? Does experiment (a) still fit?
# 2. Sample experiment (a) at temperature 0.7 and 1.2 instead of greedy. How does the error change, and why?
# 3. Replace `"local"` by `"causal"` in `transformer.attention` and time one training step of each
#    (`bench/bench_sampling.py` does it for you).
# 4. Feed experiment (a)'s model the recordings of *another* scene. What does it draw?
# 5. Set `transformer.token_dropout` to 0.1: a tenth of the input pixels is hidden during training, so the
#    model must lean on the sound more. Does experiment (a) then pick the right image more often, and how many
#    more steps does it need?
