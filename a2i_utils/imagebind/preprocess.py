"""ImageBind's input preprocessing: audio (fed from our own audio reader, no ffmpeg needed), images and text.

ImageBind (``imagebind.data.load_and_transform_audio_data``) turns a recording into its model input like this
(FACTS §2):

1. resample every channel to 16 kHz;
2. take 3 clips of 2 s starting at ``k (duration - 2) / 3`` for k = 0, 1, 2 (pytorchvideo's
   ConstantClipsPerVideoSampler: ``[0, duration - 2]`` cut into 3 equal steps, the last start never used), so a
   10 s file gives clips at 0, 2.67 and 5.33 s: 6 s heard, nothing after 7.33 s;
3. per clip: subtract the mean over all its channels and samples, Kaldi fbank of channel 0 only (128 mel bins,
   25 ms hanning window, 10 ms shift, dither 0, HTK-compatible), transpose to (128, frames), pad/cut to 204;
4. normalise with mean -4.268 and std 9.138; stack to (3, 1, 128, 204) per recording.

Multi-channel files: we do the same (``load_audio_channels`` keeps the channels; the clip mean is taken over all
of them, the fbank reads channel 0), so a stereo file gives ImageBind's input exactly, not that of the channel
average (``tests/test_imagebind_audio.py`` checks it on a stereo file whose channels differ).

Long recordings: ImageBind would decode the whole file and spread its 3 clips over it; we read at most the
reader's ``MAX_DECODED_SAMPLES`` (300 s of 48 kHz stereo, 30 min of 16 kHz mono; ``a2i_utils.data.audio``), so the
clips of a longer recording spread over that first part, with a ``LongAudioWarning``. Up to that length the input
is ImageBind's.

We reproduce those steps exactly (a test compares with ImageBind's own function) with two differences
that only matter where ImageBind fails: a recording shorter than one 25 ms frame (400 samples) is
zero-padded to one frame instead of crashing the fbank, and an empty recording is refused with a clear
error. ImageBind subtracts each clip's mean *in place* on a view of the full waveform, so when clips overlap
(recordings under 4 s) a later clip sees a signal already shifted over part of its length. Kaldi removes
each frame's DC offset, but a frame that straddles the end of the earlier clip is shifted over only part of
its samples and changes (by up to ~0.005 after normalisation). We reproduce that quirk, on a copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from a2i_utils.imagebind.fbank import fbank as kaldi_fbank

SAMPLE_RATE = 16_000  # Hz, ImageBind's audio rate
NUM_MEL_BINS = 128
TARGET_LENGTH = 204  # fbank frames per clip (2 s at a 10 ms shift, + a little)
CLIP_DURATION_S = 2
CLIPS_PER_RECORDING = 3
FBANK_MEAN = -4.268  # ImageBind's (AudioSet) normalisation
FBANK_STD = 9.138
FRAME_SHIFT_MS = 10
FRAME_LENGTH_MS = 25
MIN_CLIP_SAMPLES = SAMPLE_RATE * FRAME_LENGTH_MS // 1000  # 400: one Kaldi frame
INPUT_SHAPE = (CLIPS_PER_RECORDING, 1, NUM_MEL_BINS, TARGET_LENGTH)  # one recording's model input
PREPROCESS_VERSION = 2  # part of every embedding cache key: bump when the model input of a file changes
# 2: multi-channel files as ImageBind reads them (mean over all channels removed, channel 0), was: channel average


def clip_bounds(n_samples: int, sample_rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """Sample ranges [start, end) of the 3 clips, exactly as ImageBind's ConstantClipsPerVideoSampler."""
    duration = n_samples / sample_rate  # a float, as in ImageBind
    max_start = Fraction(max(duration - CLIP_DURATION_S, 0))
    step = Fraction(max_start, CLIPS_PER_RECORDING)
    bounds = []
    for k in range(CLIPS_PER_RECORDING):
        start = step * k
        end = start + CLIP_DURATION_S
        bounds.append((int(start * sample_rate), min(int(end * sample_rate), n_samples)))
    return bounds


def clip_to_fbank(clip: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """One mono clip (T,), mean already removed -> normalised log-mel fbank (1, 128, 204)."""
    if clip.numel() < MIN_CLIP_SAMPLES:  # ImageBind crashes here; one zero-padded frame instead
        clip = torch.nn.functional.pad(clip, (0, MIN_CLIP_SAMPLES - clip.numel()))
    fbank = kaldi_fbank(  # torchaudio.compliance.kaldi.fbank's numbers, without torchaudio (imagebind/fbank.py)
        clip.unsqueeze(0),  # (1, T): Kaldi wants (channels, time)
        htk_compat=True,
        sample_frequency=sample_rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=NUM_MEL_BINS,
        dither=0.0,
        frame_length=FRAME_LENGTH_MS,
        frame_shift=FRAME_SHIFT_MS,
    )  # (frames, 128)
    fbank = fbank.transpose(0, 1)  # (128, frames)
    pad = TARGET_LENGTH - fbank.shape[1]
    fbank = torch.nn.functional.pad(fbank, (0, pad)) if pad > 0 else fbank[:, :TARGET_LENGTH]  # (128, 204)
    return ((fbank - FBANK_MEAN) / FBANK_STD).unsqueeze(0)  # (1, 128, 204)


def waveform_to_input(waveform: np.ndarray | torch.Tensor, name: str = "waveform") -> torch.Tensor:
    """A 16 kHz waveform, mono (T,) or channels-first (C, T) -> ImageBind's input for one recording (3, 1, 128, 204)."""
    wav = torch.as_tensor(np.asarray(waveform, dtype=np.float32))
    if wav.ndim not in (1, 2):
        raise ValueError(f"{name}: expected a waveform of shape (T,) or (channels, T), got shape {tuple(wav.shape)}")
    wav = wav if wav.ndim == 2 else wav.unsqueeze(0)  # (C, T)
    if wav.numel() == 0:
        raise ValueError(f"{name}: the recording is empty (0 samples); ImageBind needs audio")
    if not torch.isfinite(wav).all():
        raise ValueError(f"{name}: the waveform contains NaN or infinite samples")
    wav = wav.clone()  # the in-place mean removal below must not touch the caller's array
    clips = []
    for s, e in clip_bounds(wav.shape[1]):
        view = wav[:, s:e]  # (C, clip)
        view -= view.mean()  # over all channels, in place on the shared waveform, exactly as ImageBind does
        clips.append(clip_to_fbank(view[0]))  # Kaldi's fbank reads channel 0
    return torch.stack(clips)  # (3, 1, 128, 204)


def waveforms_to_batch(
    waveforms: Sequence[np.ndarray | torch.Tensor], names: Sequence[str] | None = None
) -> torch.Tensor:
    """Several 16 kHz waveforms, (T,) or (C, T), of any lengths -> one batch (B, 3, 1, 128, 204)."""
    names = list(names) if names is not None else [f"waveform {i}" for i in range(len(waveforms))]
    if not waveforms:
        return torch.empty(0, *INPUT_SHAPE)
    return torch.stack([waveform_to_input(w, n) for w, n in zip(waveforms, names)])  # (B, 3, 1, 128, 204)


def load_audio_inputs(paths: Sequence[str | Path]) -> torch.Tensor:
    """Audio files -> ImageBind's input (B, 3, 1, 128, 204), read with a2i's reader at 16 kHz, channels kept."""
    from a2i_utils.data.audio import load_audio_channels

    waveforms = [load_audio_channels(p, SAMPLE_RATE) for p in paths]  # each float32 (C, T), at most the first 300 s
    # of 48 kHz stereo (the reader's MAX_DECODED_SAMPLES, with a LongAudioWarning): ImageBind's clips span that part
    return waveforms_to_batch(waveforms, [str(p) for p in paths])


# ----------------------------------------------------------------------------------------------------------
# Images and text
# ----------------------------------------------------------------------------------------------------------
VISION_MEAN = (0.48145466, 0.4578275, 0.40821073)  # ImageBind's (OpenAI CLIP's) image normalisation
VISION_STD = (0.26862954, 0.26130258, 0.27577711)
VISION_SIZE = 224
PROMPT = "an aerial photo of {}"  # text prompt of a scene class (the miniature's stage 1, scene classification)


def vision_transform():
    """ImageBind's image transform: bicubic resize to 224, centre crop, CLIP normalisation."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(VISION_SIZE, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(VISION_SIZE),
        transforms.ToTensor(),
        transforms.Normalize(mean=VISION_MEAN, std=VISION_STD),
    ])


def load_vision_inputs(paths: Sequence[str | Path]) -> torch.Tensor:
    """Image files -> ImageBind's vision input (B, 3, 224, 224); read with a2i's reader (its limits, its errors)."""
    from a2i_utils.data.images import as_8bit, open_image

    tf = vision_transform()
    out = [tf(as_8bit(open_image(Path(p))).convert("RGB")) for p in paths]  # each (3, 224, 224)
    return torch.stack(out) if out else torch.empty(0, 3, VISION_SIZE, VISION_SIZE)


def load_text_inputs(texts: Sequence[str]) -> torch.Tensor:
    """Strings -> ImageBind's BPE token ids (N, 77), as ``imagebind.data.load_and_transform_text``."""
    from a2i_utils.compat import imagebind_tokenizer

    tokenizer = imagebind_tokenizer()
    return torch.stack([tokenizer(t) for t in texts]) if texts else torch.empty(0, 77, dtype=torch.long)  # (N, 77)


def class_prompts(classes: Sequence[str]) -> list[str]:
    """The text prompt of each scene class."""
    return [PROMPT.format(c) for c in classes]
