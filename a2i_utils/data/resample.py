"""Band-limited resampling with a Hann-windowed sinc, in torch alone.

The same numbers as ``torchaudio.functional.resample(wave, orig, new)`` with its defaults
(``lowpass_filter_width=6``, ``rolloff=0.99``, ``resampling_method="sinc_interp_hann"``): the same kernel, built
with the same float operations in the waveform's dtype, applied with the same strided convolution
(``tests/test_resample_fbank.py`` compares the two; a2i no longer needs torchaudio at run time).

How it works. With g = gcd(orig, new), the ratio reduces to orig/g input samples for every new/g output samples,
and the pattern repeats: output phase p (0 <= p < new/g) of every block always sits at the same fractional position
between input samples. So one filter per phase, ``new/g`` filters of ``2 width + orig/g`` taps each, applied by a
1-D convolution with stride ``orig/g``, gives every output sample. Each filter is a sinc low-pass at ``rolloff``
times the lower of the two Nyquist frequencies, cut to ``lowpass_filter_width`` zero crossings on each side and
tapered by a Hann window.

The one difference: the output length is ``ceil(n new / orig)`` computed with integers; torchaudio computes it in
float32, which can lose the last sample once the output passes 2**24 samples (17 min at 16 kHz).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

LOWPASS_FILTER_WIDTH = 6  # zero crossings of the sinc kept on each side
ROLLOFF = 0.99  # cut-off, as a fraction of the lower of the two Nyquist frequencies


def reduced_rates(orig_rate: int, new_rate: int) -> tuple[int, int]:
    """(orig / g, new / g) with g = gcd: input samples per block, output samples per block."""
    g = math.gcd(orig_rate, new_rate)
    return orig_rate // g, new_rate // g


def sinc_width(orig_rate: int, new_rate: int) -> int:
    """Half-width of every filter, in input samples."""
    orig, new = reduced_rates(orig_rate, new_rate)
    return math.ceil(LOWPASS_FILTER_WIDTH * orig / (min(orig, new) * ROLLOFF))


def kernel_size(orig_rate: int, new_rate: int) -> int:
    """Values in the kernel of :func:`sinc_kernel`: (new / g) x (orig / g + 2 width)."""
    orig, new = reduced_rates(orig_rate, new_rate)
    return new * (orig + 2 * sinc_width(orig_rate, new_rate))


def sinc_kernel(orig_rate: int, new_rate: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (new/g, 1, 2 width + orig/g) filters, one per output phase, in ``dtype`` (a fresh copy each call)."""
    return _cached_kernel(orig_rate, new_rate, dtype).clone()


@lru_cache(maxsize=8)
def _cached_kernel(orig_rate: int, new_rate: int, dtype: torch.dtype) -> torch.Tensor:
    """:func:`sinc_kernel`, built once per rate pair and dtype: a dataset resamples every file with the same one
    (22.05 -> 16 kHz: 160 x 453 taps, ~0.1 s to build on this CPU, as long as the resampling itself)."""
    orig, new = reduced_rates(orig_rate, new_rate)
    cutoff = min(orig, new) * ROLLOFF  # in cycles per block-rate unit
    width = sinc_width(orig_rate, new_rate)
    taps = torch.arange(-width, width + orig, dtype=dtype)[None, None] / orig  # (1, 1, K): input sample times
    phases = torch.arange(0, -new, -1, dtype=dtype)[:, None, None] / new  # (new, 1, 1): minus output times
    t = ((phases + taps) * cutoff).clamp(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)  # (new, 1, K), in zero crossings
    window = torch.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2  # (new, 1, K): Hann, 0 at +-width
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones((), dtype=dtype), t.sin() / t)  # (new, 1, K)
    return sinc * (window * (cutoff / orig))  # the gain makes a constant signal stay constant


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """(..., n) float waveform at ``orig_rate`` -> (..., ceil(n new_rate / orig_rate)) at ``new_rate``."""
    for name, rate in (("orig_rate", orig_rate), ("new_rate", new_rate)):
        if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"resample: {name} must be a positive integer number of Hz, got {rate!r}")
    if not wave.is_floating_point():
        raise TypeError(f"resample: expected a floating-point waveform, got {wave.dtype}")
    if orig_rate == new_rate:
        return wave
    orig, new = reduced_rates(orig_rate, new_rate)
    width = sinc_width(orig_rate, new_rate)
    kernel = _cached_kernel(orig_rate, new_rate, wave.dtype).to(wave.device)  # (new, 1, K), never written to
    shape = wave.shape
    x = wave.reshape(-1, shape[-1])  # (B, n)
    n = x.shape[1]
    x = torch.nn.functional.pad(x, (width, width + orig))  # (B, n + 2 width + orig)
    y = torch.nn.functional.conv1d(x[:, None], kernel, stride=orig)  # (B, new, blocks): phase p of block b
    y = y.transpose(1, 2).reshape(x.shape[0], -1)  # (B, blocks * new): output samples in time order
    y = y[:, : -(-n * new // orig)]  # (B, ceil(n new / orig))
    return y.reshape(*shape[:-1], y.shape[1])  # (..., ceil(n new / orig))
