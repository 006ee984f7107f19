"""Hostile and broken input, fuzzed (issue 11): the audio reader, the image reader, the dataset scanner, the CLIs.

Every case must end in our own error (``AudioError``, ``ImageError``), whose message starts with the file's path,
or in the documented result (a finite float32 waveform, a uint8 image of the asked shape): never a library
exception, never a hang. WAV bytes are built with ``struct`` so that their headers can lie.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_evaluation_cli import tiny_loader, write_audio  # noqa: F401  (the 16 px pipeline, its stand-in embedder)

from a2i_utils.data.audio import (
    AudioError,
    LongAudioWarning,
    SilentAudioWarning,
    audio_problem,
    load_audio,
    load_audio_channels,
)
from a2i_utils.data.images import ImageError, load_image

FORMATS = {  # (WAVE format tag, bits) -> numpy dtype of the samples as stored
    (1, 8): np.uint8, (1, 16): np.int16, (1, 24): None, (1, 32): np.int32, (3, 32): np.float32, (3, 64): np.float64,
}
QUIET = (SilentAudioWarning, LongAudioWarning, UserWarning)


def wav_bytes(samples: np.ndarray, rate: int, channels: int, tag: int = 1, bits: int = 16,
              declared_data: int | None = None, declared_riff: int | None = None) -> bytes:
    """A RIFF/WAVE file around ``samples`` (already encoded bytes or an array), whose header may lie."""
    data = samples if isinstance(samples, bytes) else _encode(samples, tag, bits)
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    data_len = len(data) if declared_data is None else declared_data
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_len) + data
    riff_len = len(body) if declared_riff is None else declared_riff
    return b"RIFF" + struct.pack("<I", riff_len & 0xFFFFFFFF) + body


def _encode(x: np.ndarray, tag: int, bits: int) -> bytes:
    """Float samples in [-1, 1] (frames, channels) -> the little-endian bytes of a (tag, bits) WAV."""
    if tag == 3:
        return x.astype(np.float32 if bits == 32 else np.float64).tobytes()
    if bits == 8:
        return np.clip(np.round(x * 128 + 128), 0, 255).astype(np.uint8).tobytes()
    if bits == 24:
        v = np.clip(x * 2**23, -(2**23), 2**23 - 1).astype("<i4").reshape(-1, 1).view(np.uint8)  # (n, 4) bytes
        return v[:, :3].tobytes()  # the low three bytes of each little-endian int32
    dtype = {16: "<i2", 32: "<i4"}[bits]
    return np.clip(x * 2 ** (bits - 1), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1).astype(dtype).tobytes()


def check_audio(path: Path, rate: int = 16_000, duration_s: float | None = 2.0) -> np.ndarray | None:
    """The contract of the reader on any file: AudioError naming it, or a finite float32 waveform."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QUIET)
        try:
            wave = load_audio(path, rate, duration_s=duration_s)
        except AudioError as err:
            assert str(err).startswith(str(path)), err
            reason, _ = audio_problem(path)
            assert reason is not None and reason.startswith(str(path))
            return None
        chans = load_audio_channels(path, rate)
        reason, _ = audio_problem(path)
    assert wave.dtype == np.float32 and wave.ndim == 1 and np.isfinite(wave).all()
    if duration_s is not None:
        assert wave.shape == (round(duration_s * rate),)
    assert chans.dtype == np.float32 and chans.ndim == 2 and chans.shape[1] > 0 and np.isfinite(chans).all()
    assert reason is None or reason.startswith(str(path))  # the whole file is checked: a bad tail is reported
    return wave


# ----------------------------------------------------------------------------------------------------------
# Audio
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
@given(data=st.binary(min_size=1, max_size=4096), prefix=st.sampled_from([b"", b"RIFF", b"fLaC", b"OggS"]))
def test_random_bytes_are_refused(tmp_path_factory, data, prefix):
    path = tmp_path_factory.mktemp("rnd") / "random.wav"
    path.write_bytes(prefix + data)
    check_audio(path)


@pytest.mark.timeout(120)
@given(fmt=st.sampled_from(sorted(FORMATS)), channels=st.integers(1, 6), rate=st.sampled_from([8000, 16000, 44100]),
       frames=st.integers(1, 3000), cut=st.integers(0, 200))
def test_truncated_headers_and_data(tmp_path_factory, fmt, channels, rate, frames, cut):
    """Any prefix of a valid WAV: the header part is refused, a cut in the data too (the header says how much)."""
    x = np.random.default_rng(frames).uniform(-0.5, 0.5, (frames, channels))
    full = wav_bytes(x, rate, channels, *fmt)
    path = tmp_path_factory.mktemp("cut") / "cut.wav"
    path.write_bytes(full[: max(1, len(full) - 1 - cut * len(full) // 200)])
    assert check_audio(path) is None  # every proper prefix is refused


@pytest.mark.timeout(120)
@given(fmt=st.sampled_from(sorted(FORMATS)), channels=st.integers(1, 4), frames=st.integers(0, 4000),
       lie=st.integers(-4000, 4000))
def test_header_lying_about_its_length(tmp_path_factory, fmt, channels, frames, lie):
    """A data chunk declared longer than the file is refused; declared shorter, the declared part is read."""
    x = np.random.default_rng(frames).uniform(-0.5, 0.5, (frames, channels))
    data = _encode(x, *fmt)
    declared = max(0, len(data) + lie * channels * fmt[1] // 8)
    path = tmp_path_factory.mktemp("lie") / "lie.wav"
    path.write_bytes(wav_bytes(data, 16_000, channels, *fmt, declared_data=declared))
    wave = check_audio(path, duration_s=None)
    frame_bytes = channels * fmt[1] // 8
    if declared > len(data) or declared // frame_bytes == 0:
        assert wave is None
    else:
        assert wave is not None and len(wave) == declared // frame_bytes


@pytest.mark.timeout(120)
@pytest.mark.parametrize("rate", [0, 1, 7, 999, 2**31 - 1, 44_101, 4_000_000])
def test_absurd_sample_rates(tmp_path, rate):
    """Rates we cannot resample sensibly are refused by name; the others give the documented waveform."""
    path = tmp_path / "rate.wav"
    path.write_bytes(wav_bytes(np.full((2000, 1), 0.25), rate & 0xFFFFFFFF, 1))
    wave = check_audio(path)
    if rate < 1000 or rate > 768_000:
        assert wave is None


@pytest.mark.timeout(120)
@pytest.mark.parametrize("channels", [0, 1, 65, 1000, 4096, 65535])
def test_absurd_channel_counts(tmp_path, channels):
    path = tmp_path / "chans.wav"
    frames = 3 if channels else 0
    path.write_bytes(wav_bytes(bytes(2 * max(channels, 1) * max(frames, 1)), 16_000, channels))
    wave = check_audio(path)
    if channels == 0 or channels > 64:
        assert wave is None


@pytest.mark.timeout(120)
@given(fmt=st.sampled_from([(3, 32), (3, 64)]), where=st.integers(0, 999), value=st.sampled_from(
    [np.nan, np.inf, -np.inf]))
def test_nan_and_inf_samples_are_refused(tmp_path_factory, fmt, where, value):
    x = np.full((1000, 1), 0.1)
    x[where] = value
    path = tmp_path_factory.mktemp("nan") / "nan.wav"
    path.write_bytes(wav_bytes(x, 16_000, 1, *fmt))
    with pytest.raises(AudioError, match="NaN or infinite") as err:
        load_audio(path, 16_000)
    assert str(err.value).startswith(str(path))
    assert audio_problem(path)[0].startswith(str(path))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("seconds", [1 / 16_000, 0.01, 0.5, 2.0, 10.0, 25.0])
def test_sample_formats_and_lengths(tmp_path, fmt, seconds):
    """8/16/24/32-bit int, 32/64-bit float; one sample to 25 s: padded or cropped to the asked length."""
    rate = 16_000
    n = max(1, round(seconds * rate))
    x = 0.5 * np.cos(2 * np.pi * 440 * np.arange(n) / rate)[:, None]  # (n, 1), not silent even as one sample
    path = tmp_path / "f.wav"
    path.write_bytes(wav_bytes(x, rate, 1, *fmt))
    ref, _ = sf.read(path, dtype="float32")
    wave = check_audio(path, rate, duration_s=10.0)
    assert wave is not None
    m = min(n, 10 * rate)
    np.testing.assert_array_equal(wave[:m], ref[:m])
    assert not wave[m:].any()
    tol = 2.0 ** -(7 if fmt[1] == 8 else 14)
    np.testing.assert_allclose(wave[:m], x[:m, 0], atol=tol)
    if fmt == (1, 16):  # ImageBind's input, even from one sample (shorter than one 25 ms fbank frame)
        from a2i_utils.imagebind.preprocess import INPUT_SHAPE, load_audio_inputs

        inputs = load_audio_inputs([path])
        assert inputs.shape == (1, *INPUT_SHAPE) and inputs.isfinite().all()


def test_flac_named_wav_is_read(tmp_path):
    path = tmp_path / "really_flac.wav"
    sf.write(path, np.full(8000, 0.25, np.float32), 16_000, format="FLAC")
    wave = check_audio(path, duration_s=None)
    assert wave is not None and wave.shape == (8000,)


def test_zero_length_data_chunk_is_refused(tmp_path):
    path = tmp_path / "zero.wav"
    path.write_bytes(wav_bytes(b"", 16_000, 1))
    with pytest.raises(AudioError, match="no samples"):
        load_audio(path, 16_000)


# ----------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------
MODES = ["1", "L", "LA", "P", "P+transparency", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
SAVE_AS = {"1": ["PNG"], "L": ["PNG", "JPEG"], "LA": ["PNG"], "P": ["PNG", "GIF"], "P+transparency": ["PNG"],
           "RGB": ["PNG", "JPEG"], "RGBA": ["PNG"], "CMYK": ["JPEG", "TIFF"], "I;16": ["PNG", "TIFF"],
           "I": ["TIFF"], "F": ["TIFF"]}


def make_image(mode: str, w: int, h: int, seed: int = 0) -> Image.Image:
    """A random image of ``mode`` (``P+transparency``: a palette image with a transparent index)."""
    rng = np.random.default_rng(seed)
    if mode in ("I;16", "I", "F"):
        x = rng.integers(0, 65536, (h, w)).astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode])
        img = Image.fromarray(x / np.float32(65535) if mode == "F" else x)  # F: values in [0, 1]
        assert img.mode == mode
        return img
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    if mode.startswith("P"):
        img = img.quantize(16)
        if mode != "P":
            img.info["transparency"] = 0
        return img
    return img.convert(mode)


def image_bytes(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def check_image(path: Path, size: int = 8) -> tuple[np.ndarray, np.ndarray] | None:
    """The contract of the image reader on any file: ImageError naming it, or uint8 arrays of the asked shape."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            rgb = load_image(path, size)
            gray = load_image(path, size, gray=True)
        except ImageError as err:
            assert str(err).startswith(str(path)), err
            return None
    assert rgb.dtype == np.uint8 and rgb.shape == (size, size, 3)
    assert gray.dtype == np.uint8 and gray.shape == (size, size)
    return rgb, gray


@pytest.mark.timeout(120)
@settings(max_examples=60)
@given(mode=st.sampled_from(MODES), data=st.data(), w=st.integers(1, 9), h=st.integers(1, 9),
       ext=st.sampled_from([".png", ".jpg", ".jpeg"]))
def test_every_mode_and_odd_size_reads_as_uint8(tmp_path_factory, mode, data, w, h, ext):
    """Palette, 16-bit, 32-bit, float, CMYK, alpha, 1-bit, gray; 1x1 to 9x9; any format under any image name."""
    fmt = data.draw(st.sampled_from(SAVE_AS[mode]))
    path = tmp_path_factory.mktemp("img") / f"x{ext}"
    path.write_bytes(image_bytes(make_image(mode, w, h, seed=w * 10 + h), fmt))
    assert check_image(path) is not None


def test_16_bit_images_keep_their_brightness(tmp_path):
    """A 16-bit gray image is scaled to 8 bits (value / 257), not clipped at 255 (which whitens it)."""
    x = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    for mode, arr, ext in (("I;16", x, "png"), ("I", x.astype(np.int32), "tiff")):
        path = tmp_path / f"{mode}.{ext}"
        Image.fromarray(arr).save(path)
        gray = load_image(path, 8, gray=True)
        np.testing.assert_array_equal(gray, np.round(x / 257).astype(np.uint8))


@pytest.mark.timeout(120)
@settings(max_examples=60)
@given(fmt=st.sampled_from(["PNG", "JPEG"]), mode=st.sampled_from(["RGB", "L", "P"]), frac=st.floats(0.0, 0.999))
def test_truncated_images_are_refused(tmp_path_factory, fmt, mode, frac):
    """Every prefix class of a PNG or JPEG (header, inside the data, just before the end)."""
    assume(not (fmt == "JPEG" and mode == "P"))
    full = image_bytes(make_image(mode, 40, 30, seed=1), fmt)
    path = tmp_path_factory.mktemp("trunc") / f"t.{fmt.lower()}"
    path.write_bytes(full[: int(frac * len(full))])
    assert check_image(path) is None


@pytest.mark.timeout(120)
@given(data=st.binary(min_size=0, max_size=2048),
       prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"II*\x00", b"BM"]))
def test_random_bytes_are_not_images(tmp_path_factory, data, prefix):
    path = tmp_path_factory.mktemp("rnd") / "random.jpg"
    path.write_bytes(prefix + data)
    assert check_image(path) is None


def test_png_named_jpg_is_read(tmp_path):
    path = tmp_path / "png_really.jpg"
    Image.fromarray(np.full((8, 8, 3), 77, np.uint8)).save(path, format="PNG")
    rgb, _ = check_image(path)
    assert (rgb == 77).all()


# ----------------------------------------------------------------------------------------------------------
# The command line: the three cases reported in issue 11
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture
def small_embedder(tmp_path, monkeypatch):
    """``a2i embed`` with the preset's model swapped for a small untrained one (training it takes minutes)."""
    import torch

    import a2i_utils.imagebind.embedder as M
    from a2i_utils.config import get_config
    from a2i_utils.imagebind.mini import build_mini

    torch.set_num_threads(1)
    cfg = get_config("demo", {"cache_dir": tmp_path / "cache", "device": "cpu", "imagebind.embed_dim": 32,
                              "imagebind.mini_dim": 32, "imagebind.mini_blocks": 1, "imagebind.mini_heads": 2})
    torch.manual_seed(0)
    emb = M.Embedder(build_mini(cfg).eval(), identity="fuzz-test-model")
    monkeypatch.setattr(M, "load_imagebind", lambda c, progress=True: emb)
    return cfg


def test_embed_folder_with_an_empty_wav_skips_it_and_embeds_the_rest(small_embedder, tmp_path, capsys):
    from a2i_utils.cli import main

    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        sf.write(data / f"good{i}.wav", np.full(8000, 0.1 * (i + 1), np.float32), 16_000)
    (data / "empty.wav").write_bytes(b"")
    (data / "cut.jpg").write_bytes(image_bytes(make_image("RGB", 32, 32), "JPEG")[:300])
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(data / "ok.png")
    status = main(["embed", str(data), "--cache", str(small_embedder.cache_dir)])
    out, err = capsys.readouterr()
    assert status == 1
    assert f"skipped {data / 'empty.wav'}: the file is empty" in err
    assert f"skipped {data / 'cut.jpg'}: not a readable image" in err
    assert "audio: 2 files -> 2 embeddings" in out and "vision: 1 files -> 1 embeddings" in out
    assert "Traceback" not in out + err


def test_embed_a_truncated_jpg_is_one_line(small_embedder, tmp_path, capsys):
    from a2i_utils.cli import main

    path = tmp_path / "truncated.jpg"
    path.write_bytes(image_bytes(make_image("RGB", 64, 64), "JPEG")[:-200])
    assert main(["embed", str(path), "--cache", str(small_embedder.cache_dir)]) == 1
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1 and err.startswith(f"skipped {path}: not a readable image or corrupt data")
    assert "nothing to embed" in out and "Traceback" not in out + err


def test_config_with_a_bogus_mode_is_one_line(capsys):
    from a2i_utils.cli import main

    assert main(["config", "--mode", "bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("a2i: error: unknown preset 'bogus'") and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------------------------------------
# The dataset scanner
# ----------------------------------------------------------------------------------------------------------
HOSTILE_NAMES = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/\0", exclude_categories=["Cs"]),
                        min_size=1, max_size=12)
CONTENTS = st.sampled_from(["empty", "random", "wav", "png", "text"])


def _content(kind: str, seed: int) -> bytes:
    """The bytes of a file of the given kind (a valid WAV or PNG, or junk)."""
    if kind == "wav":
        return wav_bytes(np.full((800, 1), 0.2), 8_000, 1)
    if kind == "png":
        return image_bytes(make_image("RGB", 4, 4, seed), "PNG")
    return {"empty": b"", "text": b"hello", "random": np.random.default_rng(seed).bytes(300)}[kind]


RESERVED = ("00001", "00002_1", "00003", "00010", "00011", "00012")  # the stems of hostile_tree's own files


def _valid_pair(root: Path, label: str, stem: str) -> None:
    (root / "vision" / label / f"{stem}.jpg").write_bytes(_content("png", 0))
    (root / "sound" / label / f"{stem}.wav").write_bytes(_content("wav", 0))


def hostile_tree(root: Path, extras: list[tuple[str, str, str, str]]) -> set[str]:
    """Three valid pairs, then the hostile extras; returns the ids of the valid pairs."""
    for sub in ("vision", "sound"):
        for label in ("forest", "beach"):
            (root / sub / label).mkdir(parents=True, exist_ok=True)
    _valid_pair(root, "forest", "00001")
    _valid_pair(root, "forest", "00002_1")
    _valid_pair(root, "beach", "00003")
    for i, (sub, name, ext, kind) in enumerate(extras):
        folder = root / sub / ("forest" if i % 2 else "beach")
        path = folder / f"{name}{ext}"
        if path.exists() or path.name in (".", ".."):
            continue
        try:
            path.write_bytes(_content(kind, i))
        except OSError:  # a name the file system refuses (too long, ...): not a tree anyone can have
            continue
    # the fixed hostile cases: a folder named like a file, a dangling symlink, an empty recording, a stray file
    (root / "vision" / "forest" / "00010.jpg").mkdir()
    (root / "sound" / "forest" / "00010.wav").write_bytes(_content("wav", 0))
    (root / "vision" / "beach" / "00011.jpg").write_bytes(_content("png", 0))
    (root / "sound" / "beach" / "00011.wav").symlink_to(root / "nowhere.wav")
    (root / "vision" / "beach" / "00012.jpg").write_bytes(_content("png", 0))
    (root / "sound" / "beach" / "00012.wav").write_bytes(b"")
    (root / "vision" / "stray.jpg").write_bytes(b"")
    (root / "sound" / "forest" / os.fsdecode(b"\xff\xfe00020.wav")).write_bytes(_content("wav", 0))  # not UTF-8
    (root / "vision" / "not a class").mkdir()
    return {"00001", "00002_1", "00003"}


@pytest.mark.timeout(180)
@settings(max_examples=25)
@given(extras=st.lists(st.tuples(st.sampled_from(["vision", "sound"]), HOSTILE_NAMES,
                                 st.sampled_from(["", ".jpg", ".JPG", ".png", ".wav", ".WAV", ".flac", ".txt", "."]),
                                 CONTENTS), max_size=8))
def test_scanner_keeps_valid_pairs_and_names_bad_files(tmp_path_factory, extras):
    from a2i_utils.data import scan_tree
    from a2i_utils.data.dataset import build_manifest

    assume(not any(name.upper().startswith(RESERVED) for _, name, _, _ in extras))
    root = tmp_path_factory.mktemp("tree")
    valid = hostile_tree(root, extras)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pairs, problems = scan_tree(root, progress=False)
        cached = build_manifest(root, progress=False, index_dir=root.parent / f"{root.name}-index")
    ids = {p.id for p in pairs}
    assert valid <= ids
    for pair in pairs:  # every kept pair reads
        assert load_image(pair.image_path, 4).shape == (4, 4, 3)
        assert audio_problem(pair.audio_path)[0] is None
    text = "\n".join(problems)
    for bad in ("forest/00010", "beach/00011", "beach/00012", "not a class", "\\xff\\xfe00020.wav"):
        assert bad in text
    assert "00010.jpg: no such image file" in text and "00012.wav: the file is empty" in text
    assert cached == (pairs, problems)


def test_data_check_on_a_hostile_tree_is_a_report_not_a_traceback(tmp_path, capsys):
    from a2i_utils.cli import main

    hostile_tree(tmp_path, [("vision", "ünïcødé 00004", ".jpg", "png"), ("sound", "00005", "", "wav"),
                            ("sound", "00004", ".WAV", "random")])
    assert main(["data", "check", str(tmp_path), "--show", "100"]) == 0
    out = capsys.readouterr().out
    assert "3 usable pairs" in out and "00012.wav: the file is empty" in out and "Traceback" not in out


# ----------------------------------------------------------------------------------------------------------
# a2i generate: its input stage fuzzed, and one run end to end on the tiny pipeline
# ----------------------------------------------------------------------------------------------------------
def hostile_recording(kind: str, seed: int) -> bytes | None:
    """The bytes of a recording ``a2i generate`` must skip (None: a good one)."""
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (1600, 1))
    return {
        "good": None,
        "empty": b"",
        "random": np.random.default_rng(seed).bytes(200),
        "cut": wav_bytes(x, 16_000, 1)[:-100],
        "long_header": wav_bytes(x, 16_000, 1, declared_data=10**6),
        "zero_data": wav_bytes(b"", 16_000, 1),
        "odd_rate": wav_bytes(x, 44_101, 1),
        "rate_1": wav_bytes(x, 1, 1),
        "many_channels": wav_bytes(bytes(2000 * 2), 16_000, 1000),
        "nan": wav_bytes(np.where(np.arange(1600)[:, None] == seed % 1600, np.nan, x), 16_000, 1, 3, 32),
    }[kind]


class CountingLoader:
    """``embed_each``'s view of ``Loader``: embeds with a2i's real ImageBind input path, returns a constant."""

    calls = 0

    def audio_embeddings(self, paths, skipped):
        import torch

        from a2i_utils.imagebind.preprocess import load_audio_inputs

        embs = []
        for p in paths:  # as embed_files with `skipped`: the reader refuses a file, naming it, or it is embedded
            try:
                x = load_audio_inputs([p])
            except (ValueError, OSError) as err:
                skipped.append((p, str(err)))
                continue
            self.calls += 1
            embs.append(torch.ones(4) * x.mean())
        return torch.stack(embs) if embs else torch.empty(0, 4)  # (B, 4)


@pytest.mark.timeout(180)
@settings(max_examples=25)
@given(kinds=st.lists(st.sampled_from(["good", "empty", "random", "cut", "long_header", "zero_data", "odd_rate",
                                       "rate_1", "many_channels", "nan"]), min_size=1, max_size=5))
def test_generate_input_stage_skips_and_names_every_bad_recording(tmp_path_factory, kinds):
    from a2i_utils.evaluation.cli import embed_each

    folder = tmp_path_factory.mktemp("gen")
    paths = []
    for i, kind in enumerate(kinds):
        path = folder / f"{i}-{kind}.wav"
        data = hostile_recording(kind, i)
        if data is None:
            sf.write(path, np.full(8000, 0.1, np.float32), 22_050, format="FLAC")  # a FLAC named .wav
        else:
            path.write_bytes(data)
        paths.append(path)
    loader = CountingLoader()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QUIET)
        embs, good, bad = embed_each(loader, paths)
    assert good == [p for p, k in zip(paths, kinds) if k == "good"]
    assert [p for p, _ in bad] == [p for p, k in zip(paths, kinds) if k != "good"]
    for p, why in bad:
        assert why.startswith(str(p))
    assert (embs is None) == (not good) and (embs is None or embs.shape == (len(good), 4))
    assert loader.calls == len(good)  # a bad file never reaches the model


def test_generate_end_to_end_on_a_folder_of_good_and_hostile_recordings(tiny_loader, tmp_path, capsys):  # noqa: F811
    from a2i_utils.cli import main

    good = [write_audio(tmp_path / "a.wav", 48_000, 1.0, channels=2), write_audio(tmp_path / "b.wav", 8_000, 0.3)]
    bad = []
    for kind in ("cut", "odd_rate", "many_channels", "nan", "empty"):
        bad.append(tmp_path / f"{kind}.wav")
        bad[-1].write_bytes(hostile_recording(kind, 3))
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QUIET)
        status = main(["generate", *map(str, bad[:3] + good + bad[3:]), "--model", "baseline", "--steps", "2",
                       "--out", str(out), "--set", "soundiff.image_size=16"])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert [line.split(": ")[0] for line in err.splitlines()] == [f"skipped {p}" for p in bad]
    assert sorted(p.name.split("-")[0] for p in out.glob("*.png")) == ["a", "b"]


def test_unreadable_files_and_folders_are_reported_not_raised(tmp_path, monkeypatch):
    """Permissions cannot be tested as root (these tests run as root here): the OS errors are injected instead."""
    import builtins

    from a2i_utils.data import audio as A
    from a2i_utils.data import dataset as D

    path = tmp_path / "locked.wav"
    path.write_bytes(wav_bytes(np.full((100, 1), 0.1), 16_000, 1))

    def denied(p, *a, **kw):
        if Path(p) == path:
            raise PermissionError(13, "Permission denied", str(p))
        return builtins.open(p, *a, **kw)

    monkeypatch.setattr(A, "open", denied, raising=False)  # the module's own name shadows the builtin
    assert audio_problem(path)[0] == f"{path}: cannot be read (Permission denied)"
    monkeypatch.undo()

    root = tmp_path / "tree"
    for sub in ("vision", "sound"):
        (root / sub / "forest").mkdir(parents=True)
    _valid_pair(root, "forest", "00001")
    real = Path.iterdir

    def iterdir(self):
        if self.name == "forest" and self.parent.name == "vision":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    pairs, problems = D.scan_tree(root, progress=False)
    assert pairs == [] and f"skipped {root / 'vision' / 'forest'}: cannot be listed (Permission denied)" in problems
