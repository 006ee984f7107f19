"""a2i's torch-only resampler and Kaldi fbank against torchaudio's, and a2i without torchaudio.

torchaudio is a TEST dependency now (requirements.txt pins it as the reference for these comparisons): a2i itself no
longer imports it, so that it runs with a torch for which torchaudio has no release (torch >= 2.12). Measured on
torch 2.9.1 / torchaudio 2.9.1: max |ours - torchaudio| = 0.0 for every case below (the same float operations
in the same order), so the tolerance is only float32 rounding, should a torch reorder a reduction.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torchaudio  # the reference (a test dependency only)
from hypothesis import given
from hypothesis import strategies as st

from a2i_utils.data import resample as rs
from a2i_utils.data.audio import MAX_RESAMPLE_KERNEL, resample
from a2i_utils.imagebind import fbank as fb
from a2i_utils.imagebind.preprocess import MIN_CLIP_SAMPLES, clip_to_fbank

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ATOL = 1e-6  # float32 rounding of values of order 1
RATES = [(44_100, 16_000), (48_000, 16_000), (22_050, 16_000), (8_000, 16_000), (16_000, 22_050),
         (44_100, 22_050), (96_000, 16_000), (11_025, 16_000), (32_000, 22_050), (16_000, 8_000)]
IMAGEBIND = dict(htk_compat=True, sample_frequency=16_000, use_energy=False, window_type="hanning",
                 num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10)  # imagebind.data's call


def _noise(shape, seed, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("orig,new", RATES)
@pytest.mark.parametrize("n", [1, 7, 399, 44_101, 160_000])
def test_resample_equals_torchaudio(orig, new, n):
    x = _noise(n, seed=n + orig)
    ref = torchaudio.functional.resample(x, orig, new)
    out = rs.resample(x, orig, new)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


@given(rates=st.sampled_from(RATES), n=st.integers(1, 5_000), batch=st.sampled_from([(), (2,), (2, 3)]),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_resample_equals_torchaudio_any_length_batch_and_dtype(rates, n, batch, dtype):
    x = _noise((*batch, n), seed=n, dtype=dtype)
    ref = torchaudio.functional.resample(x, *rates)
    out = rs.resample(x, *rates)
    assert out.shape == ref.shape and out.dtype == dtype
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def test_the_numpy_entry_point_and_a_tone():
    """audio.resample (numpy in, float32 numpy out) keeps a 1 kHz tone a 1 kHz tone, away from the edges."""
    t = np.arange(44_100) / 44_100
    out = resample(np.sin(2 * np.pi * 1000 * t).astype(np.float32), 44_100, 16_000)
    assert out.dtype == np.float32 and out.shape == (16_000,)
    want = np.sin(2 * np.pi * 1000 * np.arange(16_000) / 16_000)
    assert np.abs(out[100:-100] - want[100:-100]).max() < 1e-3
    assert resample(out, 16_000, 16_000) is out


@pytest.mark.parametrize("orig,new", RATES)
def test_kernel_size_is_the_kernel_torchaudio_builds(orig, new):
    """The reader's MAX_RESAMPLE_KERNEL guard counts the values the resampler really allocates."""
    kernel = rs.sinc_kernel(orig, new)
    assert kernel.numel() == rs.kernel_size(orig, new) <= MAX_RESAMPLE_KERNEL
    ref, width = torchaudio.functional.functional._get_sinc_resample_kernel(
        orig, new, int(np.gcd(orig, new)), dtype=torch.float32)
    assert width == rs.sinc_width(orig, new)
    torch.testing.assert_close(kernel, ref, atol=ATOL, rtol=0)


def test_an_odd_rate_is_over_the_kernel_limit():
    """44,101 -> 16,000 does not reduce: 16,000 x 44,135 values (2.8 GB), refused by the reader before building."""
    assert rs.kernel_size(44_101, 16_000) == 16_000 * (44_101 + 2 * 17) > MAX_RESAMPLE_KERNEL


def test_resample_refuses_bad_rates_and_integer_waveforms():
    with pytest.raises(ValueError, match="orig_rate must be a positive integer"):
        rs.resample(torch.zeros(10), 0, 16_000)
    with pytest.raises(ValueError, match="new_rate must be a positive integer"):
        rs.resample(torch.zeros(10), 16_000, 22_050.5)
    with pytest.raises(TypeError, match="floating-point"):
        rs.resample(torch.zeros(10, dtype=torch.int16), 8_000, 16_000)


@pytest.mark.parametrize("n", [400, 401, 559, 560, 32_000, 32_123])
@pytest.mark.parametrize("scale", [1.0, 1e-4, 0.0])
def test_fbank_equals_torchaudio(n, scale):
    x = _noise((1, n), seed=n) * scale  # scale 0: every filter energy is floored at epsilon
    ref = torchaudio.compliance.kaldi.fbank(x, **IMAGEBIND)
    out = fb.fbank(x, **IMAGEBIND)
    assert out.shape == ref.shape == (1 + (n - 400) // 160, 128)
    torch.testing.assert_close(out, ref, atol=ATOL * 20, rtol=1e-6)  # log energies of order 10


@given(n=st.integers(1, 40_000), channels=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_clip_to_fbank_equals_imagebinds_recipe_on_any_clip(n, channels, seed):
    """ImageBind's per-clip recipe with torchaudio's fbank, incl. the < 400 samples padding path (n < 400)."""
    clip = _noise((channels, n), seed=seed)[0]
    clip = clip - clip.mean()
    padded = torch.nn.functional.pad(clip, (0, max(MIN_CLIP_SAMPLES - n, 0)))
    ref = torchaudio.compliance.kaldi.fbank(padded.unsqueeze(0), **IMAGEBIND).T  # (128, frames)
    ref = torch.nn.functional.pad(ref, (0, max(204 - ref.shape[1], 0)))[:, :204]
    ref = ((ref - -4.268) / 9.138).unsqueeze(0)  # (1, 128, 204)
    torch.testing.assert_close(clip_to_fbank(clip), ref, atol=ATOL * 20, rtol=1e-6)


def test_fbank_reads_channel_0_and_refuses_what_it_does_not_implement():
    x = _noise((2, 1_000), seed=1)
    torch.testing.assert_close(fb.fbank(x), fb.fbank(x[:1]))
    with pytest.raises(ValueError, match="window_type='povey' is not supported"):
        fb.fbank(x, window_type="povey")
    with pytest.raises(ValueError, match="snip_edges=False is not supported"):
        fb.fbank(x, snip_edges=False)
    with pytest.raises(ValueError, match="frame of 400 samples does not fit in a waveform of 399"):
        fb.fbank(x[:, :399])
    with pytest.raises(ValueError, match=r"float \(channels, T\) waveform"):
        fb.fbank(x[0])


NO_TORCHAUDIO = textwrap.dedent("""
    import importlib.abc, sys

    class NoTorchaudio(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torchaudio" or name.startswith("torchaudio."):
                raise ImportError(f"no module named {name!r} (blocked by the test)")

    sys.meta_path.insert(0, NoTorchaudio())
    try:
        import torchaudio  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the hook did not block torchaudio")

    import numpy as np
    from a2i_utils.data.audio import resample
    from a2i_utils.imagebind.preprocess import waveform_to_input

    wave = resample(np.random.default_rng(0).standard_normal(44_100).astype(np.float32), 44_100, 16_000)
    x = waveform_to_input(wave)
    assert wave.shape == (16_000,) and tuple(x.shape) == (3, 1, 128, 204), (wave.shape, x.shape)
    from a2i_utils.imagebind.preprocess import load_text_inputs  # ImageBind's tokenizer, not imagebind.data

    assert tuple(load_text_inputs(["an aerial photo of a beach"]).shape) == (1, 77)
    assert not any(m == "torchaudio" or m.startswith("torchaudio.") for m in sys.modules), "torchaudio was loaded"
    print("ok without torchaudio")
""")


def test_a2i_runs_without_torchaudio():
    out = subprocess.run([sys.executable, "-c", NO_TORCHAUDIO], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ok without torchaudio" in out.stdout


def test_text_tokens_equal_imagebind_data():
    """load_text_inputs builds ImageBind's tokenizer itself (imagebind.data imports torchaudio): same token ids."""
    from a2i_utils.compat import import_imagebind_data
    from a2i_utils.imagebind.preprocess import load_text_inputs

    texts = ["an aerial photo of airport", "x", "a much longer prompt " * 20]
    assert torch.equal(load_text_inputs(texts), import_imagebind_data().load_and_transform_text(texts, "cpu"))
