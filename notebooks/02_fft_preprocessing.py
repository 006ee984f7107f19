# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02. FFT preprocessing: a recording as 500 x 220 numbers
# The paper's pixel transformer (§3.2, §4) does not hear a waveform: it reads 500 vectors of 220 numbers,
# one per 20 ms of sound, each the magnitude spectrum of that slice. This notebook builds those features
# step by step, checks them against the package's vectorised version, normalises them with training
# statistics only, and caches them.
#
# **What you will learn**
# - why 10 s at 22,050 Hz splits exactly into 500 sections of 441 samples, and what the 221 rFFT bins mean;
# - which bin is dropped to get 220, and why (the DC bin);
# - why we take the logarithm of magnitudes, and how the matrix relates to an ordinary spectrogram;
# - how to compute all sections with one batched FFT instead of a Python loop;
# - per-bin normalisation with statistics of the training split only, and a per-file feature cache.
#
# **What is the paper's and what is ours.** The paper states only that the transformer reads *500 vectors of
# 220 numbers* made with an FFT. Everything else here is our reconstruction, chosen so that those numbers come
# out exactly: the 22,050 Hz rate (10 s x 22,050 = 500 x 441), sections of 441 samples with no overlap and no
# window, the magnitude, the logarithm, dropping the DC bin to go from 221 to 220, per-bin normalisation with
# training statistics, and the cache. The exercises change several of these choices.

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
import os
import shutil
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import soundfile as sf
import torch

from a2i_utils.config import get_config, seed_everything
from a2i_utils.data import CLASSES, prepare_dataset
from a2i_utils.data.audio import load_audio
from a2i_utils.transformer.features import (
    FeatureNormalizer,
    bin_frequencies,
    cache_path,
    features_for_pairs,
    fft_features,
    params_key,
    section_length,
)

MODE = os.environ.get("A2I_MODE", "demo")  # "demo" (CPU, synthetic data) or "full" (GPU, ADVANCE)
cfg = get_config(MODE)
seed_everything(cfg.seed)
fc = cfg.features  # the feature parameters: rate, duration, sections, bins, log epsilon

# %%
print(cfg.summary())  # everything (not compared by nbval: other sections change as the course grows)

# %%
# NBVAL_CHECK_OUTPUT
# The sections this notebook uses, compared by the tests.
print(f"mode={cfg.mode} seed={cfg.seed}\n{cfg.data}\n{cfg.features}")

# %%
ds = prepare_dataset(cfg, progress=False)  # made or loaded in notebook 01; the same stored split
example = ds.by_class()["train station"][0]
wave = load_audio(example.audio_path, fc.sample_rate, duration_s=fc.duration_s)  # resample, pad/crop to 10 s

# %%
# NBVAL_CHECK_OUTPUT
L = section_length(fc)
print(f"{fc.duration_s:g} s x {fc.sample_rate} Hz = {len(wave)} samples = {fc.n_sections} sections x {L} samples")
print(f"one section lasts {1000 * L / fc.sample_rate:g} ms; its rFFT has {L // 2 + 1} bins, "
      f"{fc.sample_rate / L:g} Hz apart")
assert len(wave) == fc.n_sections * L

# %% [markdown]
# ## 1. Sections
# Resample to 22,050 Hz and pad/crop to 10 s: 220,500 samples. That is exactly $500 \times 441$, so the
# recording folds into a (500, 441) matrix without any overlap or window: row $s$ is samples
# $441s \dots 441s + 440$, 20 ms of sound. In torch this is a `reshape`, a view with no copy.

# %%
sections = torch.from_numpy(wave).reshape(fc.n_sections, L)  # (500, 441)
assert torch.equal(sections[123], torch.from_numpy(wave[123 * L : 124 * L]))

t_ms = np.arange(6 * L) / fc.sample_rate * 1000
fig, axes = plt.subplots(1, 2, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1.4, 1]})
axes[0].plot(t_ms, wave[: 6 * L], lw=0.6)
for s in range(7):
    axes[0].axvline(s * L / fc.sample_rate * 1000, color="tab:red", lw=0.8, ls="--")
axes[0].set(title="The first 6 sections (red: section borders every 441 samples)", xlabel="time (ms)",
            ylabel="amplitude")
lim = float(np.abs(wave).max())
im = axes[1].imshow(sections.numpy(), aspect="auto", cmap="coolwarm", vmin=-lim, vmax=lim,
                    extent=(0, L, fc.duration_s, 0))
axes[1].set(title="The whole recording folded: 500 rows x 441 samples", xlabel="sample within section",
            ylabel="section start (s)")
fig.colorbar(im, ax=axes[1], label="amplitude")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. The spectrum of one section, and the dropped bin
# The real FFT of 441 samples gives $441 // 2 + 1 = 221$ complex numbers,
# $X[k] = \sum_{n=0}^{440} x[n]\, e^{-2\pi i k n / 441}$, for frequencies $k \cdot 22050 / 441 = 50k$ Hz,
# $k = 0 \dots 220$ (0 to 11,000 Hz). We keep the magnitude $|X[k]|$ (phase is hard to learn from and
# says little about the scene).
#
# The paper keeps 220 numbers, so one bin must go; which one is our choice. We drop **bin 0, the DC bin**.
# It is $X[0] = \sum_n x[n]$, the **sum** of the section's 441 samples, i.e. 441 times its mean. That is not
# only the microphone's constant offset: a 20 ms section holds less than one period of anything below 50 Hz,
# so such slow sound (wind rumble, an engine's lowest hum) shows up as a section mean that changes from
# section to section, and lands mostly in bin 0. Dropping it therefore loses the sound below 50 Hz, along with
# any offset; we accept that because bin 0 mixes the two, and the bins we keep ($k = 1 \dots 220$, 50 Hz to
# 11,000 Hz, every 50 Hz) cover what distinguishes the scenes. (441 is odd, so there is no bin at exactly the
# Nyquist frequency, 11,025 Hz; the highest bin, 11,000 Hz, would be the other candidate: exercise 1.)

# %%
spectrum = torch.fft.rfft(sections[250])  # (221,) complex
freqs_all = np.arange(L // 2 + 1) * fc.sample_rate / L
kept = bin_frequencies(fc)
fig, ax = plt.subplots(figsize=(10, 3.6))
ax.semilogy(freqs_all, spectrum.abs().numpy() + 1e-6, lw=0.8, label="|X[k]|, 221 bins")
ax.semilogy(freqs_all[:1], spectrum.abs().numpy()[:1] + 1e-6, "o", color="tab:red", label="bin 0 (DC): dropped")
ax.set(title=f"Magnitude spectrum of section 250 (t = {250 * L / fc.sample_rate:.2f} s)", xlabel="frequency (Hz)",
       ylabel="|X[k]| (log scale)")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
print("rFFT of one section:", tuple(spectrum.shape), "| kept bins:", len(kept),
      f"from {kept[0]:g} Hz to {kept[-1]:g} Hz")
assert np.allclose(freqs_all[1:221], kept)
x250 = sections[250].double()
dc = torch.fft.rfft(x250)[0]
print(f"X[0] is the sum of the section = {L} x its mean:",
      bool(torch.isclose(dc.real, x250.sum()) and torch.isclose(dc.real, L * x250.mean()) and abs(dc.imag) < 1e-9))

# %% [markdown]
# What lands in bin 0? Two test signals, each 10 s long: a constant offset of 0.01 (what a microphone's DC
# offset looks like) and a 20 Hz hum, zero-mean over the whole recording. Then our recording: if bin 0 held only
# an offset, every section's mean would equal the recording's mean.

# %%
t_s = np.arange(len(wave)) / fc.sample_rate
test_signals = {"constant offset 0.01": np.full(len(wave), 0.01), "20 Hz hum": 0.1 * np.sin(2 * np.pi * 20 * t_s)}
for name, x in test_signals.items():
    power = np.abs(np.fft.rfft(x.reshape(fc.n_sections, L), axis=1)) ** 2  # (500, 221)
    print(f"{name:22s}: share of its energy in bin 0 = {power[:, 0].sum() / power.sum():.2f}")
section_means = sections.double().mean(1).numpy()  # (500,) = X_s[0] / 441
print(f"this recording: mean {wave.mean():.2g}; section means range {section_means.min():.2g} .. "
      f"{section_means.max():.2g} (std {section_means.std():.2g})")

fig, ax = plt.subplots(figsize=(10, 3))
ax.plot(np.arange(fc.n_sections) * L / fc.sample_rate, section_means, lw=0.8, label="section mean = X[0] / 441")
ax.axhline(float(wave.mean()), color="tab:red", ls="--", lw=1, label="mean of the whole recording (offset)")
ax.set(title=f"What bin 0 holds in {example.label} {example.id}: slow sound, not only an offset",
       xlabel="section start (s)", ylabel="amplitude")
ax.legend(loc="upper right")
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# The constant offset puts all its energy in bin 0 and the 20 Hz hum most of its energy there: bin 0 holds an
# offset *and* sound below 50 Hz. In the recording, the section means (blue) wander around the recording's
# mean (red) by the amount printed above: that wandering is sound below 50 Hz, which the dropped bin takes
# with it.

# %% [markdown]
# ## 3. Log scaling
# Magnitudes span orders of magnitude: the loudest bins of a recording are many times stronger than the
# typical one (the cell prints by how much). A network sees mostly the few loudest bins unless we compress the
# range, so we take $F[s, k] = \log(|X_s[k]| + \varepsilon)$ with $\varepsilon$ = `features.log_eps`, which
# also keeps silent sections finite ($\log \varepsilon$) instead of $-\infty$. The histograms below show the
# effect on all 500 x 220 numbers of this recording.

# %%
mags = torch.fft.rfft(sections, dim=-1).abs()[:, 1:221]  # (500, 220)
print(f"largest |X| / median |X| in this recording: {float(mags.max() / mags.median()):,.0f}; "
      f"log eps = {np.log(fc.log_eps):.1f}")
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
axes[0].hist(mags.flatten().numpy(), bins=100, color="tab:blue")
axes[0].set(title="|X| (linear): almost everything near 0", xlabel="magnitude", ylabel="count", yscale="log")
axes[1].hist(torch.log(mags + fc.log_eps).flatten().numpy(), bins=100, color="tab:green")
axes[1].set(title="log(|X| + eps): a usable spread", xlabel="log magnitude", ylabel="count")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. One batched transform, checked against the loop
# The straightforward version loops over the 500 sections. `a2i_utils.transformer.features.fft_features` does all
# sections, and all recordings of a batch, with **one** `torch.fft.rfft` over a (B, 500, 441) view. Let us
# write the loop ourselves and check that both agree.

# %%
def timeit_once(fn) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


TOL = 2e-3  # float32 FFTs round differently; log(|X| + eps) magnifies that only in near-silent bins (~1e-3)


def features_by_loop(x: np.ndarray) -> np.ndarray:
    """The loop version, one NumPy rFFT per section: (220500,) -> (500, 220)."""
    out = np.empty((fc.n_sections, fc.n_bins), np.float32)
    for s in range(fc.n_sections):
        mag = np.abs(np.fft.rfft(x[s * L : (s + 1) * L]))  # (221,)
        out[s] = np.log(mag[1:] + fc.log_eps)  # drop bin 0 (DC) -> (220,)
    return out


ours = features_by_loop(wave)
feats = fft_features(wave, fc)  # (500, 220)

some = np.stack([load_audio(p.audio_path, fc.sample_rate, fc.duration_s) for p in ds.pairs[:16]])  # (16, 220500)
t_loop = min(timeit_once(lambda: [features_by_loop(x) for x in some]) for _ in range(2))
t_vec = min(timeit_once(lambda: fft_features(some, fc)) for _ in range(2))
print(f"16 recordings: loop {t_loop:.2f} s, one batched rFFT {t_vec:.2f} s (x{t_loop / t_vec:.1f}); "
      "bench/bench_fft.py measures this properly")

# %%
# NBVAL_CHECK_OUTPUT
print("features:", tuple(feats.shape), feats.dtype)
print(f"loop == batched (atol {TOL:g}):", np.allclose(ours, feats.numpy(), atol=TOL))
batch = fft_features(np.stack([wave, wave[::-1].copy()]), fc)  # (2, 500, 220)
print("batch of 2:", tuple(batch.shape), "| first equals the single one:", torch.allclose(batch[0], feats))
assert np.allclose(ours, feats.numpy(), atol=TOL)

# %% [markdown]
# ## 5. The 500 x 220 matrix next to a spectrogram
# Drawn with time on the horizontal axis, the feature matrix is a spectrogram with a rectangular window,
# no overlap and 20 ms frames. PyTorch's short-time Fourier transform gives the same numbers with
# `torch.stft(wave, n_fft=441, hop_length=441, window=torch.ones(441), center=False)`; an ordinary
# spectrogram (Hann window of 1,024 samples, hop 256) trades time resolution for frequency resolution and
# looks smoother. All three panels are drawn on **one dB scale** ($20 \log_{10} |X|$, i.e. our
# $F \cdot 20 / \ln 10$, and $10 \log_{10}$ of the power; one colour bar, the top 80 dB), so equal colours
# mean equal levels. Look for the same events in all three: steady tones are horizontal lines, short clicks
# vertical ones. A rectangular window **leaks**: a strong low frequency spills a little into every bin, which
# lifts the floor of the first two panels; ordinary spectrograms use a tapered (Hann) window for that reason.
# The paper does not say whether it used a window; we use none.

# %%
wave_t = torch.from_numpy(wave)  # (220500,)
rect = torch.stft(wave_t, n_fft=L, hop_length=L, window=torch.ones(L), center=False, return_complex=True)  # (221, 500)
same = torch.log(rect.abs()[1:221] + fc.log_eps)  # (220, 500): freq x time, bins 1-220 as our features
usual = torch.stft(wave_t, n_fft=1024, hop_length=256, window=torch.hann_window(1024), return_complex=True)  # (513, t)
usual_db = 10 * torch.log10(usual.abs() ** 2 + 1e-10)  # (513, frames): power in dB

TO_DB = 20 / np.log(10)  # natural log of a magnitude -> dB
panels = {
    "Our features F (500 x 220), transposed": (feats.T.numpy() * TO_DB, (kept[0], kept[-1])),  # (220, 500)
    "torch.stft, rectangular 441 / hop 441": (same.numpy() * TO_DB, (kept[0], kept[-1])),
    "Usual spectrogram: Hann 1024 / hop 256": (usual_db.numpy(), (0, fc.sample_rate / 2)),
}
vmax = max(float(v.max()) for v, _ in panels.values())
fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
for ax, (title, (values, (f_lo, f_hi))) in zip(axes, panels.items()):
    im = ax.imshow(values, origin="lower", aspect="auto", cmap="magma", vmin=vmax - 80, vmax=vmax,
                   extent=(0, fc.duration_s, f_lo, f_hi))
    ax.set(title=title, xlabel="time (s)", ylabel="frequency (Hz)")
fig.colorbar(im, ax=axes, label="level (dB, one scale for all three)")
fig.suptitle(f"{example.label} {example.id}: the same recording three ways")
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
print("torch.stft (rectangular, no overlap) equals our features:", torch.allclose(same.T, feats, atol=TOL))
assert torch.allclose(same.T, feats, atol=TOL)

# %% [markdown]
# ## 6. Features of the whole dataset, and the cache
# `features_for_pairs(pairs, cfg)` returns (N, 500, 220). Each recording's matrix is stored in
# `cfg.features_dir / <parameter hash> / <sha1 of the file's bytes>.safetensors`: a file that changes gets a
# new key, and so do new parameters (rate, sections, bins, epsilon, code version), so a stale entry is never
# read. The `_k` pairs that reuse a recording share one entry. The second call only reads the cache.

# %%
start = time.perf_counter()
train_feats = features_for_pairs(ds.train, cfg, progress=False)  # (N_train, 500, 220)
val_feats = features_for_pairs(ds.val, cfg, progress=False)  # (N_val, 500, 220)
t_first = time.perf_counter() - start
start = time.perf_counter()
again = features_for_pairs(ds.train, cfg)
t_cached = time.perf_counter() - start
print(f"first call: {t_first:.1f} s, from the cache: {t_cached:.2f} s")
assert torch.equal(again, train_feats)

# %%
# NBVAL_CHECK_OUTPUT
unique_recordings = {cache_path(p.audio_path, cfg).name for p in ds.pairs}
entries = list((cfg.features_dir / params_key(fc)).glob("*.safetensors"))
print("train features:", tuple(train_feats.shape), "| val features:", tuple(val_feats.shape))
print(f"{len(ds.pairs)} pairs, {len(unique_recordings)} distinct recordings, all cached:",
      unique_recordings <= {e.name for e in entries})

# %% [markdown]
# Cache invalidation in action: copy one recording, compute its features, then change the file. The key
# (and so the cache entry) changes with the content; the old entry is simply no longer used.

# %%
# NBVAL_CHECK_OUTPUT
with tempfile.TemporaryDirectory() as tmp:
    copy = Path(tmp) / "copy.wav"
    shutil.copyfile(example.audio_path, copy)
    key_before = cache_path(copy, cfg)
    f_before = features_for_pairs([copy], cfg, progress=False)
    sf.write(copy, 0.5 * wave, fc.sample_rate, subtype="PCM_16")  # the file changes: half as loud
    key_after = cache_path(copy, cfg)
    f_after = features_for_pairs([copy], cfg, progress=False)
print("same content as the dataset file, same key:", key_before == cache_path(example.audio_path, cfg))
print("after editing the file the key changes:", key_before != key_after)
shift = (f_before - f_after).mean().item()
print(f"half as loud -> features shift by about log 2 = {np.log(2):.2f}:", abs(shift - np.log(2)) < 0.1)

# %% [markdown]
# ## 7. Normalisation with training statistics only
# Each bin gets its own mean $\mu_k$ and standard deviation $\sigma_k$, computed over every section of every
# **training** recording; all features, validation included, become $(F[s,k] - \mu_k) / \sigma_k$. Using
# validation statistics would leak information from the data we evaluate on. The statistics are small
# tensors (`state_dict()`): notebook 03 saves them with each trained transformer (`normalizer.safetensors` in
# the run's folder) and `load_run` reads them back with the model, so a new recording is normalised exactly
# as the training ones were.

# %%
norm = FeatureNormalizer().fit(train_feats)
freqs = bin_frequencies(fc)
fig, ax = plt.subplots(figsize=(10, 3.6))
ax.plot(freqs, norm.mean.numpy(), label="mean $\\mu_k$")
ax.fill_between(freqs, (norm.mean - norm.std).numpy(), (norm.mean + norm.std).numpy(), alpha=0.3,
                label="$\\mu_k \\pm \\sigma_k$")
ax.set(title=f"Per-bin statistics of the training features ({len(ds.train)} pairs x 500 sections)",
       xlabel="frequency (Hz)", ylabel="log |X|")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
z_train, z_val = norm(train_feats), norm(val_feats)
print("statistics:", {k: tuple(v.shape) for k, v in norm.state_dict().items()})
print("train after normalising: mean ~ 0:", abs(z_train.mean().item()) < 1e-3,
      "| std per bin ~ 1:", torch.allclose(z_train.std((0, 1)), torch.ones(fc.n_bins), atol=1e-2))
print("val is normalised with the same statistics (so not exactly 0 / 1):",
      f"{abs(z_val.mean().item()) < 0.5}")
restored = FeatureNormalizer.from_state_dict(norm.state_dict())
assert torch.equal(restored(val_feats), z_val)

# %% [markdown]
# ## 8. Do the classes differ in these features?
# The mean normalised spectrum of each class, averaged over its training recordings and over time: one row
# per class, one column per bin (on a log frequency axis), red above the all-class average of that bin and blue
# below, in standard deviations. If the scenes sound different, their rows differ, and a model has something to
# learn from; rows that look alike are scenes the sound alone will confuse.

# %%
labels = np.array([p.label for p in ds.train])
present = [c for c in CLASSES if (labels == c).any()]
class_means = np.stack([z_train[labels == c].mean((0, 1)).numpy() for c in present])  # (classes, 220)
edges = np.concatenate([[kept[0] - 25], kept + 25])  # bin edges (221,): each bin is 50 Hz wide
lim = float(np.abs(class_means).max())
fig, ax = plt.subplots(figsize=(11, 5), layout="constrained")
mesh = ax.pcolormesh(edges, np.arange(len(present) + 1), class_means, cmap="RdBu_r", vmin=-lim, vmax=lim)
ax.set_xscale("log")
ax.set_yticks(np.arange(len(present)) + 0.5, present)
ax.invert_yaxis()
ax.set(title="Mean normalised feature per class and frequency (training split)", xlabel="frequency (Hz)")
fig.colorbar(mesh, ax=ax, label="mean normalised log |X| (std of the bin)")
plt.show()

# %%
loudest = {c: kept[int(row.argmax())] for c, row in zip(present, class_means)}
dist = np.sqrt(((class_means[:, None] - class_means[None]) ** 2).mean(-1))  # (classes, classes) RMS difference
np.fill_diagonal(dist, np.inf)
a, b = np.unravel_index(dist.argmin(), dist.shape)
print("bin where each class is furthest above average:",
      ", ".join(f"{c} {f:g} Hz" for c, f in loudest.items()))
print(f"most alike rows: {present[a]} and {present[b]} (RMS difference {dist[a, b]:.2f} std); "
      f"most different pair differs by {dist[np.isfinite(dist)].max():.2f} std")

# %% [markdown]
# ## Summary
# - 10 s at 22,050 Hz = 500 sections x 441 samples; the rFFT of a section has 221 bins 50 Hz apart; we drop
#   bin 0 (the DC bin: the section's sum, 441 x its mean, holding any offset and the sound below 50 Hz) and
#   keep 50-11,000 Hz: 220 numbers per 20 ms. The paper fixes only "500 x 220"; these choices are ours.
# - $F = \log(|X| + \varepsilon)$ compresses the dynamic range; the matrix is a rectangular-window,
#   no-overlap spectrogram (checked equal to `torch.stft`'s), shown on one dB scale next to a Hann one.
# - One batched rFFT over (B, 500, 441) replaces the loop (same numbers; see `bench/bench_fft.py`).
# - Features are cached per recording under a key of its bytes and the parameters; normalisation uses
#   per-bin statistics of the training split only.
#
# **Exercises**
# 1. Keep the DC bin and drop the highest one instead (bin 220, 11,000 Hz; 441 is odd, so that is the top
#    bin, not a Nyquist bin): in `features_by_loop` keep `mag[:220]`, i.e. bins 0-219. Recompute the class
#    heatmap of section 8 with those features: which classes differ most in the new first column (0 Hz)?
# 2. Set `{"features.log_eps": 1e-2}`: what happens to quiet recordings' features, and to the cache folder?
# 3. Use 250 sections of 882 samples: `get_config(MODE, {"features.n_sections": 250, "features.n_bins": 440})`.
#    A section of 882 samples has 442 rFFT bins, 25 Hz apart; `n_bins` must then be 440 to keep the same range
#    (25 Hz to 11,000 Hz without the DC bin); with 220 you would keep only 25-5,500 Hz. What do you gain in
#    frequency resolution and lose in time resolution? Look at the short clicks in the section 5 picture.
# 4. Fit the normaliser on all pairs instead of the training split and compare `z_val.mean()`: how big is the
#    leak here, and why could it matter more for a small dataset?
#
# **Next:** [03_pixel_transformer](03_pixel_transformer.ipynb) feeds these normalised 500 x 220 features to the
# paper's first system, a transformer that paints a small grayscale image pixel by pixel.
