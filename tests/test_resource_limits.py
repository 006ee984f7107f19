"""Resource limits (issue 11): a one-hour recording, a huge image, a decompression bomb, a folder of 20,000 files.

Each is streamed, cropped or refused as the module docstrings say, in bounded memory; ``bench/bench_limits.py``
measures the peak memory of the full-size cases (a one-hour 48 kHz stereo WAV, 100,000 files) in subprocesses.
Memory here is numpy's, traced with ``tracemalloc`` (numpy reports its buffers to it).
"""

from __future__ import annotations

import importlib.util
import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from a2i_utils.data import audio as A
from a2i_utils.data import images as I
from a2i_utils.data.audio import AudioError, LongAudioWarning, audio_problem, load_audio, load_audio_channels
from a2i_utils.data.images import ImageError, load_image

# The bench's own case builders (bench/bench_limits.py measures the same cases at full size): one definition of each.
_spec = importlib.util.spec_from_file_location("bench_limits", Path(__file__).parents[1] / "bench" / "bench_limits.py")
BENCH = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(BENCH)

MB = 2**20


def traced_peak(fn, *args, **kw):
    """(result, peak MiB traced by tracemalloc while ``fn`` ran)."""
    tracemalloc.start()
    try:
        out = fn(*args, **kw)
        return out, tracemalloc.get_traced_memory()[1] / MB
    finally:
        tracemalloc.stop()


def write_u8_wav(path, seconds: int, rate: int = 8_000, chunk_s: int = 600):
    """A mono 8-bit WAV of ``seconds`` (a one-hour one is 29 MB), written chunk by chunk: a slow chirp."""
    n = seconds * rate
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 36 + n) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate, 1, 8))
        f.write(b"data" + struct.pack("<I", n))
        for s in range(0, n, chunk_s * rate):
            t = np.arange(s, min(n, s + chunk_s * rate)) / rate
            f.write(np.round(128 + 60 * np.sin(2 * np.pi * (200 + t / 10) * t)).astype(np.uint8).tobytes())
    return path


@pytest.fixture(scope="module")
def hour_wav(tmp_path_factory):
    return write_u8_wav(tmp_path_factory.mktemp("hour") / "hour.wav", 3600)


def old_load_audio(path, rate, duration_s):
    """What ``load_audio`` did before the limits: decode everything, then resample and crop."""
    data, file_rate = sf.read(path, dtype="float32", always_2d=True)
    wave = A.to_mono(data)
    return A.fix_length(A.resample(wave, file_rate, rate), round(duration_s * rate))


@pytest.mark.timeout(300)
def test_one_hour_recording_decodes_only_the_cropped_start(hour_wav):
    torch.set_num_threads(1)
    wave, peak = traced_peak(load_audio, hour_wav, 22_050, duration_s=10.0)
    assert wave.shape == (220_500,) and wave.dtype == np.float32
    assert peak < 5, f"{peak:.1f} MiB traced: more than the first seconds were decoded"  # all of it: 110 MiB
    ref = old_load_audio(hour_wav, 22_050, 10.0)  # decodes the hour (116 MB float32)
    np.testing.assert_array_equal(wave, ref)


@pytest.mark.timeout(120)
def test_one_hour_recording_is_validated_in_blocks(hour_wav):
    (reason, silent), peak = traced_peak(audio_problem, hour_wav)
    assert reason is None and not silent
    assert peak < 5, f"{peak:.1f} MiB traced for a block-by-block check"


@pytest.mark.timeout(120)
def test_one_hour_recording_on_the_channel_path_reads_the_first_part_with_a_warning(hour_wav, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setattr(A, "MAX_DECODED_SAMPLES", 60 * 8_000)  # one minute at 8 kHz mono: keeps the test small
    with pytest.warns(LongAudioWarning, match=r"3600 s recording; only its first 60 s are read"):
        chans = load_audio_channels(hour_wav, 16_000)
    assert chans.shape == (1, 60 * 16_000)
    with pytest.warns(LongAudioWarning):
        assert load_audio(hour_wav, 8_000).shape == (60 * 8_000,)


@pytest.mark.parametrize("rate", [8_000, 11_025, 22_050, 48_000])
def test_start_crop_is_bit_identical_to_decoding_everything(tmp_path, rate, monkeypatch):
    """Reading only the start (plus the resampler's margin) gives exactly the old result, at every rate."""
    torch.set_num_threads(1)
    x = np.random.default_rng(rate).uniform(-0.9, 0.9, (int(75.3 * rate), 2)).astype(np.float32)  # 75.3 s stereo
    path = tmp_path / "long.wav"
    sf.write(path, x, rate, subtype="PCM_16")
    read = []
    monkeypatch.setattr(A, "_frames_to_read", lambda *a, f=A._frames_to_read: read.append(f(*a)) or read[-1])
    for out in (16_000, 22_050):
        for duration_s in (0.5, 10.0):
            np.testing.assert_array_equal(load_audio(path, out, duration_s), old_load_audio(path, out, duration_s))
    assert all(0 < n < 61 * rate for n in read)  # only the first 60 s (and the margin) were decoded


def test_long_but_within_the_limit_reads_everything_without_a_warning(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(path, np.full(60 * 16_000, 0.1, np.float32), 16_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_audio(path, 16_000).shape == (60 * 16_000,)


def test_odd_rate_is_refused_before_allocating_a_huge_kernel(tmp_path):
    """44,101 Hz -> 16 kHz has no common factor: torchaudio's exact kernel would be 16000 x 44135 values (2.8 GB)."""
    path = tmp_path / "odd.wav"
    sf.write(path, np.full(4410, 0.1, np.float32), 44_101)
    with pytest.raises(AudioError, match=r"odd.wav: sample rate 44101 Hz cannot be resampled to 16000 Hz"):
        load_audio(path, 16_000)
    assert "cannot be resampled" in audio_problem(path)[0]
    assert load_audio(path, 44_101).shape == (4410,)  # read at its own rate it is fine


# ----------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("w", "h"), [(20_000, 20_000), (9_000, 9_000), (100_000, 100_000), (2**31 - 1, 1)])
def test_huge_declared_images_are_refused_before_decoding(tmp_path, w, h):
    """A decompression bomb: 1 KB of zlib declaring up to 10 Gpx; refused from the header, nothing allocated."""
    path = BENCH.write_png_declaring(tmp_path / "bomb.png", w, h, zlib.compress(bytes(1_000_000), 9))
    assert path.stat().st_size < 2_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even Pillow's DecompressionBombWarning gets out
        with pytest.raises(ImageError, match=r"over the limit of 67 Mpx") as err:
            traced_peak(load_image, path, 64)
    assert str(err.value).startswith(str(path))
    size = f"{w} x {h} pixels" if w * h < 179_000_000 else f"({w * h} pixels)"  # over 179 Mpx: Pillow's words
    assert size in str(err.value)


def test_a_real_20000_pixel_image_is_refused_with_its_size(tmp_path):
    path = tmp_path / "big.png"
    Image.new("1", (20_000, 20_000)).save(path)  # 1-bit: 50 MB in memory, a tiny file

    def refusal():
        with pytest.raises(ImageError) as err:
            load_image(path, 64)
        return str(err.value)

    message, peak = traced_peak(refusal)
    assert message.startswith(f"{path}: over the limit of 67 Mpx (Image size (400000000 pixels)")
    assert peak < 5  # MiB: nothing decoded


def test_an_image_at_the_limit_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(I, "MAX_IMAGE_PIXELS", 300 * 200)
    path = tmp_path / "ok.png"
    Image.new("RGB", (300, 200), (10, 20, 30)).save(path)
    assert load_image(path, 16).shape == (16, 16, 3)
    Image.new("RGB", (301, 200)).save(path)
    with pytest.raises(ImageError, match="301 x 200 pixels"):
        load_image(path, 16)


# ----------------------------------------------------------------------------------------------------------
# A folder of 20,000 files (bench/bench_limits.py: 100,000)
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_data_check_on_20000_files_in_bounded_memory(tmp_path, capsys):
    """Resident memory measured (tracemalloc would slow the scan six-fold): its growth while checking the tree."""
    from a2i_utils.cli import main
    from a2i_utils.data.classes import CLASSES
    from a2i_utils.memory import peak_rss_bytes, reset_peak_rss, rss_bytes

    root = BENCH.write_tree(tmp_path / "tree", 20_000)
    (root / "sound" / CLASSES[3] / "000003.wav").write_bytes(b"")  # one bad recording among them
    exact = reset_peak_rss()
    before = rss_bytes() if exact else peak_rss_bytes()
    assert main(["data", "check", str(root)]) == 0
    grown = (peak_rss_bytes() - before) / MB
    out = capsys.readouterr().out
    assert f"{root}: 9999 usable pairs, 9999 base ids, 1 problem(s)" in out and "000003.wav: the file is empty" in out
    assert grown < 100, f"resident memory grew {grown:.0f} MiB for 20,000 files"  # measured: 13 MiB
