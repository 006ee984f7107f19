"""Kaldi's log-mel filterbank (``compute-fbank-feats``) with ImageBind's settings, in torch alone.

The same numbers as ``torchaudio.compliance.kaldi.fbank`` called as ImageBind calls it (``htk_compat=True``,
``use_energy=False``, ``window_type="hanning"``, ``dither=0.0``, 128 mel bins, 25 ms frames every 10 ms), built
with the same float operations (``tests/test_resample_fbank.py`` compares the two; a2i no longer needs torchaudio
at run time). Kaldi's other defaults, which ImageBind keeps, are fixed here:

1. frames: only whole ones (``snip_edges``), 400 samples every 160 at 16 kHz;
2. per frame: remove its mean (``remove_dc_offset``), pre-emphasis x[i] - 0.97 x[i-1] (x[-1] := x[0]),
   symmetric Hann window, zero-pad to the next power of two (512) for the FFT;
3. power spectrum (|FFT|^2), through triangular mel filters (HTK mel scale, 1127 ln(1 + f / 700)) spread
   evenly in mel between 20 Hz and the Nyquist frequency (no VTLN warping);
4. natural log, floored at float32's epsilon.

Any other Kaldi option raises ``ValueError``: this is not a general Kaldi port.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

PREEMPHASIS = 0.97
LOW_FREQ = 20.0  # Hz: lower edge of the first mel filter (the upper edge of the last is the Nyquist frequency)
EPSILON = torch.finfo(torch.float32).eps  # floor of the filter energies before the log
SUPPORTED = {"htk_compat": True, "use_energy": False, "window_type": "hanning", "dither": 0.0}  # ImageBind's


def mel(freq):
    """Hz -> mel on the HTK scale (float or tensor)."""
    return 1127.0 * (math.log(1.0 + freq / 700.0) if isinstance(freq, float) else (1.0 + freq / 700.0).log())


@lru_cache(maxsize=4)  # every clip of a dataset uses the same bank: built once (callers only read it)
def mel_filters(num_bins: int, fft_size: int, sample_rate: float) -> torch.Tensor:
    """(num_bins, fft_size // 2 + 1) triangles over the FFT bins, evenly spaced in mel from 20 Hz to Nyquist."""
    low, high = mel(LOW_FREQ), mel(0.5 * sample_rate)
    delta = (high - low) / (num_bins + 1)  # each triangle spans 2 deltas; neighbours overlap by one
    b = torch.arange(num_bins).unsqueeze(1)  # (num_bins, 1)
    left, centre, right = low + b * delta, low + (b + 1.0) * delta, low + (b + 2.0) * delta  # each (num_bins, 1)
    bin_mel = mel(sample_rate / fft_size * torch.arange(fft_size / 2)).unsqueeze(0)  # (1, fft_size / 2): no Nyquist
    up = (bin_mel - left) / (centre - left)  # (num_bins, fft_size / 2): rising edge
    down = (right - bin_mel) / (right - centre)  # falling edge
    filters = torch.max(torch.zeros(1), torch.min(up, down))  # (num_bins, fft_size / 2)
    return torch.nn.functional.pad(filters, (0, 1))  # (num_bins, fft_size / 2 + 1): the Nyquist bin gets weight 0


def frames_of(wave: torch.Tensor, sample_rate: float, frame_length_ms: float, frame_shift_ms: float) -> torch.Tensor:
    """(T,) -> (m, frame) whole frames, m = 1 + (T - frame) // shift; DC removed, pre-emphasised, Hann-windowed."""
    size = int(sample_rate * frame_length_ms * 0.001)  # 400 samples at 16 kHz
    shift = int(sample_rate * frame_shift_ms * 0.001)  # 160
    if not 2 <= size <= wave.shape[0]:
        raise ValueError(f"fbank: a frame of {size} samples does not fit in a waveform of {wave.shape[0]} samples")
    frames = wave.unfold(0, size, shift)  # (m, size)
    frames = frames - frames.mean(dim=1, keepdim=True)  # remove each frame's DC offset
    previous = torch.cat((frames[:, :1], frames[:, :-1]), dim=1)  # (m, size): x[i-1], x[0] repeated at i = 0
    frames = frames - PREEMPHASIS * previous
    return frames * torch.hann_window(size, periodic=False, dtype=wave.dtype).unsqueeze(0)  # (m, size)


def fbank(
    waveform: torch.Tensor,
    sample_frequency: float = 16_000.0,
    num_mel_bins: int = 128,
    frame_length: float = 25.0,
    frame_shift: float = 10.0,
    **kaldi_options,
) -> torch.Tensor:
    """(channels, T) float waveform -> (m, num_mel_bins) log-mel energies of channel 0, as Kaldi's fbank.

    ``kaldi_options``: only ImageBind's (``htk_compat=True, use_energy=False, window_type="hanning", dither=0.0``),
    so that a call written for torchaudio reads the same here; any other value raises ``ValueError``.
    """
    for key, value in kaldi_options.items():
        if key not in SUPPORTED or value != SUPPORTED[key]:
            raise ValueError(f"fbank: {key}={value!r} is not supported (only ImageBind's settings: {SUPPORTED})")
    if waveform.ndim != 2 or not waveform.is_floating_point():
        raise ValueError(f"fbank: expected a float (channels, T) waveform, got {waveform.dtype} "
                         f"{tuple(waveform.shape)}")
    frames = frames_of(waveform[0], sample_frequency, frame_length, frame_shift)  # (m, size)
    fft_size = 2 ** (frames.shape[1] - 1).bit_length()  # next power of two: 512 for 400
    frames = torch.nn.functional.pad(frames, (0, fft_size - frames.shape[1]))  # (m, fft_size)
    power = torch.fft.rfft(frames).abs().pow(2.0)  # (m, fft_size // 2 + 1)
    filters = mel_filters(num_mel_bins, fft_size, sample_frequency).to(waveform.dtype)  # (bins, fft_size // 2 + 1)
    energies = torch.mm(power, filters.T)  # (m, bins)
    return torch.clamp(energies, min=EPSILON).log()  # (m, bins)
