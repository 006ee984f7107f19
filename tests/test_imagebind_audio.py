"""ImageBind's audio preprocessing from our reader equals ImageBind's own function on the same files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from a2i_utils.compat import import_imagebind_data
from a2i_utils.imagebind.preprocess import (
    INPUT_SHAPE,
    SAMPLE_RATE,
    clip_bounds,
    load_audio_inputs,
    waveform_to_input,
    waveforms_to_batch,
)


def _soundfile_load(path, *args, **kwargs):
    """Stand-in for ``torchaudio.load`` (which needs ffmpeg): (channels, frames) float32 and the rate."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (frames, channels)
    return torch.from_numpy(data.T.copy()), rate


@pytest.fixture
def ib_data(monkeypatch):
    """``imagebind.data`` with only its ``torchaudio.load`` step swapped for a soundfile reader."""
    data = import_imagebind_data()
    monkeypatch.setattr(data.torchaudio, "load", _soundfile_load)
    return data


def _write_wav(path, seconds: float, rate: int, seed: int = 0):
    """A mono 16-bit WAV: a chirp plus noise, so every clip differs."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    wave = 0.4 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.standard_normal(t.size)
    sf.write(path, wave.astype(np.float32), rate, subtype="PCM_16")
    return path


@pytest.mark.parametrize(
    ("seconds", "rate"),
    [(10.0, 16_000), (10.0, 22_050), (3.3, 16_000), (1.3, 22_050), (2.0, 44_100)],
)
def test_equals_imagebind_preprocessing(tmp_path, ib_data, seconds, rate):
    path = _write_wav(tmp_path / "rec.wav", seconds, rate)
    theirs = ib_data.load_and_transform_audio_data([str(path)], "cpu")  # (1, 3, 1, 128, 204)
    ours = load_audio_inputs([path])
    assert ours.shape == theirs.shape == (1, *INPUT_SHAPE)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_stereo_equals_imagebind_preprocessing(tmp_path, ib_data):
    """ImageBind removes the mean over all channels of a clip, then its fbank reads channel 0: so must we."""
    rate, n = 22_050, 22_050 * 10
    t = np.arange(n) / rate
    left = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.2  # a tone with a DC offset
    right = 0.3 * np.random.default_rng(0).standard_normal(n) - 0.1  # noise with another offset
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], 1).astype(np.float32), rate, subtype="FLOAT")
    theirs = ib_data.load_and_transform_audio_data([str(path)], "cpu")  # (1, 3, 1, 128, 204)
    ours = load_audio_inputs([path])
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    mono = tmp_path / "mono.wav"
    sf.write(mono, ((left + right) / 2).astype(np.float32), rate, subtype="FLOAT")
    assert (load_audio_inputs([mono]) - theirs).abs().max() > 0.1  # the channel average is not what ImageBind hears


def test_clip_bounds_follow_imagebind_sampler():
    from pytorchvideo.data.clip_sampling import ConstantClipsPerVideoSampler

    data = import_imagebind_data()
    sampler = ConstantClipsPerVideoSampler(clip_duration=2, clips_per_video=3)
    for n in (160_000, 160_001, 52_800, 32_000, 20_000, 399, 1):
        times = data.get_clip_timepoints(sampler, n / SAMPLE_RATE)
        want = [(int(s * SAMPLE_RATE), min(int(e * SAMPLE_RATE), n)) for s, e in times]
        assert clip_bounds(n) == want, n


def test_ten_seconds_uses_three_spread_clips():
    assert clip_bounds(10 * SAMPLE_RATE) == [(0, 32_000), (42_666, 74_666), (85_333, 117_333)]


def test_batch_of_mixed_lengths_and_very_short_recordings():
    rng = np.random.default_rng(1)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (160_000, 20_000, 300, 1)]
    batch = waveforms_to_batch(waves)
    assert batch.shape == (4, *INPUT_SHAPE)
    assert torch.isfinite(batch).all()
    # a 300-sample recording (ImageBind's fbank crashes on it) gives one real frame, then padding
    assert not torch.equal(batch[2, 0, 0, :, 0], batch[2, 0, 0, :, 1])


def test_bad_waveforms_are_refused_with_their_name():
    with pytest.raises(ValueError, match="rec.wav.*empty"):
        waveform_to_input(np.zeros(0, np.float32), "rec.wav")
    with pytest.raises(ValueError, match=r"cube.wav.*\(channels, T\)"):
        waveform_to_input(np.zeros((2, 2, 100), np.float32), "cube.wav")
    stereo = np.random.default_rng(0).standard_normal((2, 16_000)).astype(np.float32)
    assert waveform_to_input(stereo).shape == INPUT_SHAPE
    with pytest.raises(ValueError, match="nan.wav.*NaN"):
        waveform_to_input(np.array([0.0, np.nan] * 500, np.float32), "nan.wav")


def test_unreadable_file_names_the_file(tmp_path):
    from a2i_utils.data.audio import AudioError

    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(AudioError, match="broken.wav"):
        load_audio_inputs([bad])
