"""Robust audio input: formats, rates, channels, sample types, every kind of bad file, pad/crop."""

from __future__ import annotations

import struct
import warnings

import numpy as np
import pytest
import soundfile as sf

from a2i_utils.data.audio import AudioError, SilentAudioWarning, fix_length, load_audio, load_audio_channels

SR = 22_050


def tone(seconds: float, sr: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """A sine at ``freq`` Hz, amplitude 0.5, (n,) or (n, channels)."""
    t = np.arange(int(seconds * sr)) / sr
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x] * channels, axis=1)


@pytest.mark.parametrize(
    ("fmt", "subtype", "ext"),
    [("WAV", "PCM_16", "wav"), ("WAV", "PCM_24", "wav"), ("WAV", "PCM_32", "wav"), ("WAV", "FLOAT", "wav"),
     ("WAV", "PCM_U8", "wav"), ("FLAC", "PCM_16", "flac"), ("OGG", "VORBIS", "ogg")],
)
def test_reads_formats_and_sample_types(tmp_path, fmt, subtype, ext):
    path = tmp_path / f"a.{ext}"
    sf.write(path, tone(1.0, SR), SR, format=fmt, subtype=subtype)
    x = load_audio(path, SR)
    assert x.dtype == np.float32 and x.shape == (SR,)
    tol = 0.05 if subtype in ("VORBIS", "PCM_U8") else 1e-3
    assert np.abs(x - tone(1.0, SR)).max() < tol


def test_int32_22050_like_torchgeo_fixture(tmp_path):
    path = tmp_path / "00001.wav"
    ints = (tone(10.0, SR) * 2**31).astype(np.int32)
    sf.write(path, ints, SR, subtype="PCM_32")
    x = load_audio(path, SR, duration_s=10.0)
    assert x.shape == (220_500,) and abs(float(np.abs(x).max()) - 0.5) < 1e-3


def test_stereo_is_averaged_to_mono(tmp_path):
    path = tmp_path / "st.wav"
    left, right = tone(0.5, SR, 440), tone(0.5, SR, 660)
    sf.write(path, np.stack([left, right], 1), SR, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, SR), (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("rate", [8_000, 16_000, 44_100, 48_000])
def test_resamples_any_rate_keeping_pitch(tmp_path, rate):
    path = tmp_path / "r.wav"
    sf.write(path, tone(1.0, rate, 1000.0), rate, subtype="PCM_16")
    x = load_audio(path, SR)
    assert abs(len(x) - SR) <= 1
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * SR / len(x) - 1000.0) < 2.0


def test_pad_short_and_crop_long(tmp_path):
    short, long_ = tmp_path / "s.wav", tmp_path / "l.wav"
    sf.write(short, tone(0.1, SR), SR, subtype="FLOAT")
    sf.write(long_, np.arange(12 * SR, dtype=np.float32) / (12 * SR), SR, subtype="FLOAT")
    x = load_audio(short, SR, duration_s=10.0)
    assert x.shape == (220_500,) and np.all(x[int(0.1 * SR) :] == 0) and np.any(x[:100])
    start = load_audio(long_, SR, duration_s=10.0)
    centre = load_audio(long_, SR, duration_s=10.0, crop="centre")
    assert start.shape == centre.shape == (220_500,)
    assert start[0] == 0.0 and centre[0] == pytest.approx(SR / (12 * SR), abs=1e-6)  # centre skips 1 s


def test_fix_length_rejects_unknown_crop():
    with pytest.raises(ValueError, match="crop"):
        fix_length(np.zeros(10, np.float32), 5, crop="end")


def _write_bad(tmp_path, kind):
    """A file of the given kind of badness."""
    path = tmp_path / f"{kind}.wav"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not audio at all, just a text file with a .wav name\n" * 5)
    elif kind == "truncated":
        sf.write(path, tone(1.0, SR), SR, subtype="PCM_16")
        path.write_bytes(path.read_bytes()[:20_000])
    elif kind == "header_only":
        sf.write(path, tone(1.0, SR), SR, subtype="PCM_16")
        path.write_bytes(path.read_bytes()[:30])
    elif kind == "corrupt":
        data = bytearray(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
        path.write_bytes(b"RIFF" + struct.pack("<I", 4000) + b"WAVEfmt " + bytes(data))
    elif kind == "no_samples":
        sf.write(path, np.zeros((0,), np.float32), SR, subtype="PCM_16")
    elif kind == "nan":
        x = tone(0.5, SR)
        x[100] = np.nan
        sf.write(path, x, SR, subtype="FLOAT")
    elif kind == "inf":
        x = tone(0.5, SR)
        x[7] = np.inf
        sf.write(path, x, SR, subtype="FLOAT")
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [("empty", "empty"), ("text", "not a readable audio"), ("truncated", "truncated"),
     ("header_only", "not a readable audio"), ("corrupt", "not a readable audio"), ("no_samples", "no samples"),
     ("nan", "NaN or infinite"), ("inf", "NaN or infinite")],
)
def test_bad_audio_raises_clear_error_naming_the_file(tmp_path, kind, message):
    path = _write_bad(tmp_path, kind)
    with pytest.raises(AudioError, match=message) as err:
        load_audio(path, SR, duration_s=10.0)
    assert str(path) in str(err.value)


def test_missing_file_is_an_audio_error(tmp_path):
    with pytest.raises(AudioError, match="no such audio file"):
        load_audio(tmp_path / "nope.wav", SR)


def test_silence_is_a_warning_not_an_error(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(SR, np.float32), SR, subtype="PCM_16")
    with pytest.warns(SilentAudioWarning, match="all silent"):
        x = load_audio(path, SR, duration_s=1.0)
    assert x.shape == (SR,) and not x.any()


def test_quiet_but_not_silent_gives_no_warning(tmp_path):
    path = tmp_path / "quiet.wav"
    sf.write(path, tone(0.5, SR) * 1e-3, SR, subtype="PCM_16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_audio(path, SR)


@pytest.mark.parametrize(("fmt", "ext"), [("FLAC", "flac"), ("OGG", "ogg")])
def test_truncated_compressed_files_raise(tmp_path, fmt, ext):
    path = tmp_path / f"cut.{ext}"
    rng = np.random.default_rng(0)
    sf.write(path, (0.3 * rng.standard_normal(2 * SR)).astype(np.float32), SR, format=fmt)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    try:
        x = load_audio(path, SR)
    except AudioError as err:  # libsndfile notices the damage: a clear error naming the file
        assert str(path) in str(err)
    else:  # an Ogg stream cut between pages decodes as a shorter, valid recording
        assert fmt == "OGG" and 0 < len(x) < 2 * SR and np.isfinite(x).all()


def test_load_audio_channels_keeps_each_channel(tmp_path):
    """ImageBind's path keeps the channels (resampled one by one); load_audio averages them."""
    rate, n = 44_100, 44_100 * 2
    t = np.arange(n) / rate
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 500 * t), 0.5 * np.sin(2 * np.pi * 2000 * t)], 1).astype(np.float32)
    path = tmp_path / "two.flac"
    sf.write(path, stereo, rate)
    chans = load_audio_channels(path, 16_000)
    assert chans.shape == (2, 32_000) and chans.dtype == np.float32
    peaks = [np.argmax(np.abs(np.fft.rfft(c))) * 16_000 / 32_000 for c in chans]  # Hz
    assert peaks == [500, 2000]
    np.testing.assert_allclose(chans.mean(0), load_audio(path, 16_000), atol=1e-5)
    with pytest.raises(AudioError, match="nothing.wav"):
        load_audio_channels(tmp_path / "nothing.wav", 16_000)
