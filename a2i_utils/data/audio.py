"""Robust audio input: one reader for WAV/FLAC/OGG of any rate, channel count and sample format.

:func:`load_audio` returns a float32 mono waveform at the requested rate, or raises :class:`AudioError`
with the file's name and what is wrong with it:

- empty file (0 bytes), no samples, not an audio file, corrupt or truncated data -> ``AudioError``
  (a truncated WAV is caught from its header's data length, a truncated FLAC by the decoder; an Ogg stream
  cut between pages carries no total length and decodes as a shorter, valid recording, padded like one);
- NaN or infinite samples (float files) -> ``AudioError``;
- all-silent recordings (every sample exactly 0) are readable but carry nothing: they raise a
  :class:`SilentAudioWarning` (a warning, not an error) and come back as zeros.

Length policy (``duration_s`` given): a short recording is zero-padded at the END; a long one is cropped
keeping its START (``crop="start"``, the default: ADVANCE files are 10 s and an over-long file usually
has a tail of extra samples) or its centre (``crop="centre"``).

Channels: :func:`load_audio` averages them (the transformer's features); :func:`load_audio_channels` keeps
them, for ImageBind's preprocessing, which reads channel 0 after removing the mean over all channels.

Decoding uses ``soundfile`` (libsndfile: no ffmpeg needed); resampling uses
``torchaudio.functional.resample`` (windowed sinc).
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the problem."""


class SilentAudioWarning(UserWarning):
    """A readable recording whose samples are all zero."""


def load_audio(
    path: str | Path,
    sample_rate: int,
    duration_s: float | None = None,
    crop: str = "start",
) -> np.ndarray:
    """Read ``path`` as float32 mono (n,) at ``sample_rate``; pad/crop to ``duration_s`` when given."""
    path = Path(path)
    wave, file_rate = read_audio(path)
    wave = to_mono(wave)
    if file_rate != sample_rate:
        wave = resample(wave, file_rate, sample_rate)
    if duration_s is not None:
        wave = fix_length(wave, round(duration_s * sample_rate), crop=crop)
    return wave


def load_audio_channels(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read ``path`` as float32 (channels, n) at ``sample_rate``, every channel kept (ImageBind's input path)."""
    wave, file_rate = read_audio(Path(path))  # (frames, channels)
    return np.stack([resample(np.ascontiguousarray(ch), file_rate, sample_rate) for ch in wave.T])  # (C, n)


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode ``path`` as float32 (frames, channels) at its own rate, validating it on the way."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(f"{path}: the file is empty (0 bytes)")
    _check_wav_not_truncated(path, size)
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)  # (frames, channels), ints scaled to [-1, 1)
    except sf.LibsndfileError as err:
        raise AudioError(f"{path}: not a readable audio file or corrupt data ({err.error_string})") from err
    except (RuntimeError, TypeError, ValueError) as err:
        raise AudioError(f"{path}: not a readable audio file ({err})") from err
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the file contains no samples")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(f"{path}: {bad} sample(s) are NaN or infinite")
    if not np.any(data):
        warnings.warn(f"{path}: the recording is all silent (every sample is 0)", SilentAudioWarning, stacklevel=3)
    return data, int(rate)


def _check_wav_not_truncated(path: Path, size: int) -> None:
    """Raise if a RIFF/WAVE header declares more audio bytes than the file holds (libsndfile reads it short)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # not a plain WAV: libsndfile judges it
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_len = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                held = size - pos - 8
                if chunk_len != 0xFFFFFFFF and chunk_len > held:  # 0xFFFFFFFF: streamed, length unknown
                    raise AudioError(
                        f"{path}: truncated WAV (header declares {chunk_len} bytes of audio, the file holds {held})"
                    )
                return
            pos += 8 + chunk_len + (chunk_len & 1)  # chunks are word-aligned


def to_mono(wave: np.ndarray) -> np.ndarray:
    """(frames, channels) or (frames,) -> (frames,) by averaging the channels."""
    return wave.mean(axis=1, dtype=np.float32) if wave.ndim == 2 else wave.astype(np.float32, copy=False)


def resample(wave: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample a (n,) float32 waveform with torchaudio's windowed-sinc resampler."""
    if orig_rate == new_rate:
        return wave
    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), orig_rate, new_rate)
    return out.numpy().astype(np.float32, copy=False)


def fix_length(wave: np.ndarray, n: int, crop: str = "start") -> np.ndarray:
    """Zero-pad at the end or crop (keeping the ``"start"`` or the ``"centre"``) to exactly ``n`` samples."""
    if crop not in ("start", "centre"):
        raise ValueError(f"crop must be 'start' or 'centre', got {crop!r}")
    if len(wave) >= n:
        start = (len(wave) - n) // 2 if crop == "centre" else 0
        return np.ascontiguousarray(wave[start : start + n])
    return np.pad(wave, (0, n - len(wave)))


def audio_problem(path: str | Path) -> tuple[str | None, bool]:
    """(why ``path`` cannot be used or None, whether it is all silent): for dataset validation."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SilentAudioWarning)
        try:
            read_audio(Path(path))
        except AudioError as err:
            return str(err), False
    return None, any(issubclass(w.category, SilentAudioWarning) for w in caught)
