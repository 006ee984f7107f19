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

Limits (a header can ask for anything; these keep memory bounded whatever the file says):

- the sample rate must lie in [``MIN_SAMPLE_RATE``, ``MAX_SAMPLE_RATE``] (1 kHz to 768 kHz) and the channel count
  in [1, ``MAX_CHANNELS``] (64); a rate whose exact resampling kernel to the asked rate would exceed
  ``MAX_RESAMPLE_KERNEL`` values (an odd rate such as 44,101 Hz, whose ratio to 16 kHz does not reduce) is refused:
  all three raise ``AudioError``;
- only what is used is decoded: with ``duration_s`` and ``crop="start"``, a recording up to ``WHOLE_READ_S``
  (60 s) is decoded whole, as always; of a longer one, its first max(``duration_s``, 60 s) plus the resampler's
  margin. The result equals decoding everything and cropping (bit for bit in our tests at 8-96 kHz: every output
  sample sees the same input samples; only the convolution's rounding could differ with the input's length, and
  it does for inputs under a few seconds, hence the 60 s floor);
- otherwise (the whole recording, ``crop="centre"``, ImageBind's channel path) at most ``MAX_DECODED_SAMPLES``
  samples over all channels are decoded: the first 300 s of 48 kHz stereo, 30 min of 16 kHz mono. A longer
  recording is read up to that point with a :class:`LongAudioWarning`; samples past it are neither decoded
  nor checked (a one-hour 48 kHz stereo WAV: 456 MB over the imports on ImageBind's path, 40 MB for a 10 s
  start crop, against 3.3 GB when it was decoded whole; ``bench/results/limits.txt``);
- :func:`audio_problem` (dataset validation) checks the whole file, in blocks of ``BLOCK_FRAMES`` frames, so a
  one-hour recording is validated in bounded memory, and that it can be resampled to ``CHECKED_RATES``.

A WAV header declaring fewer data bytes than the file holds is believed (the declared part is the recording,
as libsndfile reads it); one declaring more is a truncated file (``AudioError``).

Channels: :func:`load_audio` averages them (the transformer's features); :func:`load_audio_channels` keeps
them, for ImageBind's preprocessing, which reads channel 0 after removing the mean over all channels.

Decoding uses ``soundfile`` (libsndfile: no ffmpeg needed); resampling uses :mod:`a2i_utils.data.resample`
(a windowed sinc, the numbers of ``torchaudio.functional.resample``, without torchaudio).
"""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from a2i_utils.data.resample import kernel_size, reduced_rates, sinc_width
from a2i_utils.data.resample import resample as sinc_resample

MIN_SAMPLE_RATE = 1_000  # Hz; below this a "recording" is not audio (and 1 Hz files resample to hours)
MAX_SAMPLE_RATE = 768_000  # Hz; the highest rate of real converters
MAX_CHANNELS = 64
MAX_DECODED_SAMPLES = 300 * 48_000 * 2  # frames x channels decoded at most: 300 s of 48 kHz stereo, 110 MiB float32
MAX_RESAMPLE_KERNEL = 2**22  # values of the resampler's exact kernel (new/g) x (orig/g + 2 width), g = gcd: 16 MiB
WHOLE_READ_S = 60.0  # s: a recording this short is decoded whole even when only its start is used
BLOCK_FRAMES = 2**16  # frames per block when a whole file is checked
CHECKED_RATES = (16_000, 22_050)  # Hz: ImageBind's and the features' rates, which audio_problem checks it resamples to


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the problem."""


class SilentAudioWarning(UserWarning):
    """A readable recording whose samples are all zero."""


class LongAudioWarning(UserWarning):
    """A recording longer than what is decoded of it (``MAX_DECODED_SAMPLES``): only its start is used."""


def load_audio(
    path: str | Path,
    sample_rate: int,
    duration_s: float | None = None,
    crop: str = "start",
) -> np.ndarray:
    """Read ``path`` as float32 mono (n,) at ``sample_rate``; pad/crop to ``duration_s`` when given."""
    path = Path(path)
    keep_s = duration_s if crop == "start" else None  # the start crop needs only the start of the file
    wave, file_rate = read_audio(path, keep_s=keep_s, out_rate=sample_rate)
    wave = to_mono(wave)
    if file_rate != sample_rate:
        wave = resample(wave, file_rate, sample_rate)
    if duration_s is not None:
        wave = fix_length(wave, round(duration_s * sample_rate), crop=crop)
    return wave


def load_audio_channels(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read ``path`` as float32 (channels, n) at ``sample_rate``, every channel kept (ImageBind's input path)."""
    wave, file_rate = read_audio(Path(path), out_rate=sample_rate)  # (frames, channels)
    return np.stack([resample(np.ascontiguousarray(ch), file_rate, sample_rate) for ch in wave.T])  # (C, n)


def read_audio(path: Path, keep_s: float | None = None, out_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Decode the start of ``path`` as float32 (frames, channels) at its own rate, validating it on the way.

    ``keep_s``: the seconds needed (None: the whole recording); that much is decoded, plus the resampler's margin
    when the result will be resampled to ``out_rate``, and never more than ``MAX_DECODED_SAMPLES``.
    """
    path = Path(path)
    _check_file(path)
    with _decoding(path) as f:
        _check_header(path, f.samplerate, f.channels, out_rate)
        n = _frames_to_read(path, f.frames, f.samplerate, f.channels, keep_s, out_rate)
        data = f.read(n, dtype="float32", always_2d=True)  # (frames, channels), ints scaled to [-1, 1)
        rate = f.samplerate
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the file contains no samples")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(f"{path}: {bad} sample(s) are NaN or infinite")
    if not np.any(data):
        warnings.warn(f"{path}: the recording is all silent (every sample is 0)", SilentAudioWarning, stacklevel=3)
    return data, int(rate)


@contextmanager
def _decoding(path: Path) -> Iterator[sf.SoundFile]:
    """``path`` open for decoding; every libsndfile or decoding failure inside the block becomes an AudioError."""
    try:
        with sf.SoundFile(path) as f:
            yield f
    except AudioError:
        raise
    except sf.LibsndfileError as err:
        raise AudioError(f"{path}: not a readable audio file or corrupt data ({err.error_string})") from err
    except (RuntimeError, TypeError, ValueError, OverflowError, MemoryError) as err:
        raise AudioError(f"{path}: not a readable audio file ({type(err).__name__}: {err})") from err


def _check_file(path: Path) -> None:
    """Raise unless ``path`` is a non-empty file whose WAV header (if it is a WAV) fits in it."""
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(f"{path}: the file is empty (0 bytes)")
    try:
        _check_wav_not_truncated(path, size)
    except OSError as err:  # unreadable (permissions), or gone meanwhile
        raise AudioError(f"{path}: cannot be read ({err.strerror or err})") from err


def _check_header(path: Path, rate: int, channels: int, out_rate: int | None) -> None:
    """Refuse sample rates and channel counts that are not audio or that we cannot resample in bounded memory."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{path}: sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(f"{path}: {channels} channels (we read 1 to {MAX_CHANNELS})")
    if out_rate is not None and out_rate != rate:
        if kernel_size(rate, out_rate) > MAX_RESAMPLE_KERNEL:
            raise AudioError(f"{path}: sample rate {rate} Hz cannot be resampled to {out_rate} Hz in bounded memory "
                             "(their ratio does not reduce); convert the file to a standard rate such as 48000 Hz")


def _frames_to_read(path: Path, frames: int, rate: int, channels: int, keep_s: float | None,
                    out_rate: int | None) -> int:
    """How many frames to decode: what ``keep_s`` needs (all if None), capped by ``MAX_DECODED_SAMPLES``."""
    cap = MAX_DECODED_SAMPLES // channels
    if keep_s is None:
        wanted = frames
    else:
        margin = 0  # output j of the resampler reads input up to (j // new + 1) * orig + width
        if out_rate is not None and out_rate != rate:
            margin = reduced_rates(rate, out_rate)[0] + sinc_width(rate, out_rate) + 1
        wanted = min(frames, math.ceil(max(keep_s, WHOLE_READ_S) * rate) + margin)
    if wanted > cap:
        warnings.warn(f"{path}: {frames / rate:.0f} s recording; only its first {cap / rate:.0f} s are read "
                      f"({MAX_DECODED_SAMPLES} samples over {channels} channel(s))", LongAudioWarning, stacklevel=4)
        return cap
    return -1 if wanted == frames else wanted  # -1: to the end, as soundfile.read does


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
    """Resample a (n,) float32 waveform with the windowed-sinc resampler (:mod:`a2i_utils.data.resample`)."""
    if orig_rate == new_rate:
        return wave
    out = sinc_resample(torch.from_numpy(np.ascontiguousarray(wave)), orig_rate, new_rate)
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
    """(why ``path`` cannot be used or None, whether it is all silent): the whole file checked, block by block."""
    path = Path(path)
    try:
        return None, _scan_whole(path)
    except AudioError as err:
        return str(err), False


def _scan_whole(path: Path) -> bool:
    """Decode all of ``path`` in blocks of ``BLOCK_FRAMES`` (bounded memory); AudioError if bad, else all-silent."""
    _check_file(path)
    total, silent, bad = 0, True, 0
    with _decoding(path) as f:
        for out_rate in CHECKED_RATES:
            _check_header(path, f.samplerate, f.channels, out_rate)
        for block in f.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True):  # (frames, channels)
            total += block.shape[0]
            bad += int((~np.isfinite(block)).sum())
            silent = silent and not np.any(block)
    if total == 0:
        raise AudioError(f"{path}: the file contains no samples")
    if bad:
        raise AudioError(f"{path}: {bad} sample(s) are NaN or infinite")
    return silent
