"""Resource limits (issue 11): peak resident memory and seconds of handling each oversized input, in a fresh process.

    .venv/bin/python bench/bench_limits.py [--dir /tmp] [--files 100000] [--no-old]

Builds each case in a temporary folder under ``--dir`` (about 1 GB of disk, deleted afterwards):

- a one-hour 48 kHz stereo 16-bit WAV (691 MB): read as the features read it (``load_audio(path, 22050, 10.0)``),
  as ImageBind's input (``load_audio_inputs``: the first 300 s, with a warning), validated as ``a2i data check``
  does (``audio_problem``: the whole hour, block by block), and, for comparison, the way ``read_audio`` did before
  the limits (decode everything as float32, then resample and crop);
- a 20,000 x 20,000 RGB JPEG, a 9,000 x 9,000 one (81 Mpx: over our 64 Mpx limit, under Pillow's 89 Mpx), a 1 KB
  PNG declaring 100,000 x 100,000 pixels and a 1.2 MB zlib bomb declaring 20,000 x 20,000 real (zero) pixels,
  each through ``load_image`` (and the 9,000 px one the old way: Pillow decoding it);
- a dataset folder of ``--files`` files (half tiny images, half 0.1 s recordings, paired): ``a2i data check`` and
  ``load_tree`` (fingerprint, validation, manifest and split written to a temporary cache).

The inputs are built by one child process and each case runs in its own child; the parent, which imports nothing
large (a forked child would inherit its resident memory in its peak), reads each child's peak resident memory with
``os.wait4`` and prints it next to the same figure for a child that only imports a2i (the baseline: torch alone is
most of it). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path

MB = 1e6
IMPORTS = "import warnings; warnings.simplefilter('ignore'); import a2i_utils.data, a2i_utils.imagebind.preprocess\n"


# ----------------------------------------------------------------------------------------------------------
# Building the cases
# ----------------------------------------------------------------------------------------------------------
def write_hour_wav(path: Path, seconds: int = 3600, rate: int = 48_000) -> Path:
    """A stereo 16-bit WAV, written a minute at a time: a chirp on the left, a quieter tone on the right."""
    import numpy as np

    n = seconds * rate
    with open(path, "wb") as f:
        fmt = struct.pack("<IHHIIHH", 16, 1, 2, rate, rate * 4, 4, 16)  # PCM, 2 channels, 16-bit
        f.write(b"RIFF" + struct.pack("<I", 36 + 4 * n) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", 4 * n))
        for s in range(0, n, 60 * rate):
            t = np.arange(s, min(n, s + 60 * rate)) / rate
            left = 0.3 * np.sin(2 * np.pi * (200 + 20 * (t % 60)) * t)
            x = np.stack([left, 0.1 * np.sin(2 * np.pi * 440 * t)], axis=1)  # (frames, 2)
            f.write(np.round(x * 32767).astype("<i2").tobytes())
    return path


def write_jpeg(path: Path, side: int) -> Path:
    """A side x side RGB JPEG of smooth gradients (built from 256 px gradients resized: 3 x side^2 bytes in RAM)."""
    from PIL import Image

    g = Image.linear_gradient("L").resize((side, side))
    Image.merge("RGB", (g, g.transpose(Image.Transpose.ROTATE_90), g.transpose(Image.Transpose.ROTATE_180))).save(
        path, quality=85)
    return path


def write_png_declaring(path: Path, w: int, h: int, idat: bytes) -> Path:
    """A PNG whose header declares w x h RGB pixels, with ``idat`` as its (zlib) data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def zlib_of_zero_rows(w: int, h: int) -> bytes:
    """The zlib stream of h zero rows of an RGB PNG (filter byte + 3w zeros each), compressed a row at a time."""
    z = zlib.compressobj(9)
    row = bytes(1 + 3 * w)
    return b"".join(z.compress(row) for _ in range(h)) + z.flush()


def write_tree(root: Path, n_files: int) -> Path:
    """``n_files`` tiny files: n/2 pairs over every class (a 4x4 PNG named .jpg, a 0.1 s 8 kHz WAV)."""
    import io

    import numpy as np
    from PIL import Image

    from a2i_utils.data.classes import CLASSES

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(buf, format="PNG")
    x = (np.sin(np.arange(800) / 5) * 8000).astype("<i2").tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    wav = b"RIFF" + struct.pack("<I", 36 + len(x)) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", len(x)) + x
    for sub, ext, data in (("vision", ".jpg", buf.getvalue()), ("sound", ".wav", wav)):
        for c in CLASSES:
            (root / sub / c).mkdir(parents=True)
        for i in range(n_files // 2):
            (root / sub / CLASSES[i % len(CLASSES)] / f"{i:06d}{ext}").write_bytes(data)
    return root


# ----------------------------------------------------------------------------------------------------------
# Running one case in a child
# ----------------------------------------------------------------------------------------------------------
def run_child_exact(code: str) -> dict:
    """Run ``code`` (after the imports) in a fresh python, reaped with ``os.wait4``: its outcome, peak RSS, seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    script = IMPORTS + "import torch; torch.set_num_threads(1)\n" + textwrap.dedent(code)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines = out.read().strip().splitlines() or [""]
        if proc.returncode != 0:
            lines = [f"FAILED: {err.read().strip()[-300:]}"]
    return {"outcome": lines[-1], "peak_rss_mb": usage.ru_maxrss * 1024 / MB, "seconds": seconds}


CASES = {
    "audio_features": ("load_audio(path, 22050, duration_s=10.0): the features' read", """
        from a2i_utils.data.audio import load_audio
        w = load_audio(PATH, 22_050, duration_s=10.0)
        print(f"read, cropped: {w.shape[0]} samples")"""),
    "audio_imagebind": ("load_audio_inputs([path]): ImageBind's input", """
        import warnings
        from a2i_utils.imagebind.preprocess import load_audio_inputs
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x = load_audio_inputs([PATH])
        why = [str(w.message).split(': ', 1)[1] for w in caught if 'LongAudio' in w.category.__name__]
        print(f"input {tuple(x.shape)}; warning: {why[0] if why else 'none'}")"""),
    "audio_check": ("audio_problem(path): a2i data check's validation", """
        from a2i_utils.data.audio import audio_problem
        reason, silent = audio_problem(PATH)
        print(f"whole file checked: {reason or 'usable'}")"""),
    "audio_old": ("before the limits: decode all as float32, resample, crop", """
        import soundfile as sf
        from a2i_utils.data.audio import fix_length, resample, to_mono
        data, rate = sf.read(PATH, dtype="float32", always_2d=True)
        w = fix_length(resample(to_mono(data), rate, 22_050), 220_500)
        print(f"read, cropped: {w.shape[0]} samples (decoded {data.shape[0]} frames)")"""),
    "image": ("load_image(path, 256)", """
        from a2i_utils.data.images import ImageError, load_image
        try:
            x = load_image(PATH, 256)
            print(f"read: {x.shape}")
        except ImageError as err:
            print("refused: " + str(err).split(': ', 1)[1][:110])"""),
    "image_old": ("before the limits: Pillow decodes it (Image.open + convert)", """
        from PIL import Image
        img = Image.open(PATH).convert("RGB")
        print(f"decoded {img.size[0]} x {img.size[1]}")"""),
    "tree_check": ("a2i data check DIR", """
        import contextlib, io
        from a2i_utils.cli import main
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
            status = main(["data", "check", str(PATH)])
        print(buf.getvalue().splitlines()[0].split(': ', 1)[1] + f" (exit {status})")"""),
    "tree_load": ("load_tree(DIR): fingerprint, validation, manifest + split in the cache", """
        from a2i_utils.data.dataset import load_tree
        ds = load_tree(PATH, progress=False, cache_dir=PATH.parent / "cache")
        print(f"{len(ds.pairs)} pairs, {len(ds.problems)} problem(s); manifest written")"""),
}


def case(name: str, path: Path) -> dict:
    """Run case ``name`` on ``path`` in a child."""
    what, code = CASES[name]
    r = run_child_exact(f"from pathlib import Path\nPATH = Path({str(path)!r})\n" + textwrap.dedent(code))
    return {"case": name, "what": what, **r}


# ----------------------------------------------------------------------------------------------------------
def build(work: Path, seconds: int, n_files: int) -> None:
    """Every input, into ``work`` (run in a child: making the 20,000 px JPEG takes 1.2 GB)."""
    t0 = time.perf_counter()
    hour = write_hour_wav(work / "hour-48k-stereo.wav", seconds)
    print(f"# built {hour.name}: {hour.stat().st_size / MB:.0f} MB in {time.perf_counter() - t0:.0f} s")
    write_jpeg(work / "20000px.jpg", 20_000)
    write_jpeg(work / "9000px.jpg", 9_000)
    write_png_declaring(work / "bomb-100000px.png", 100_000, 100_000, zlib.compress(bytes(10**6), 9))
    write_png_declaring(work / "bomb-20000px.png", 20_000, 20_000, zlib_of_zero_rows(20_000, 20_000))
    t0 = time.perf_counter()
    write_tree(work / "tree", n_files)
    print(f"# built a tree of {n_files} files in {time.perf_counter() - t0:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--seconds", type=int, default=3600, help="length of the long recording (a quick try: 600)")
    ap.add_argument("--no-old", action="store_true", help="skip the old ways (they need about 3 GB)")
    ap.add_argument("--build", type=Path, default=None, help=argparse.SUPPRESS)  # the builder child
    args = ap.parse_args()
    if args.build:
        return build(args.build, args.seconds, args.files)
    work = Path(tempfile.mkdtemp(prefix="a2i-limits-", dir=args.dir))
    rows = []
    try:
        print(f"# bench_limits: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()} "
              f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores), Python "
              f"{platform.python_version()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
              "(the machine is shared: seconds are indicative, memory is not affected)", flush=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
        print(f"# code: commit {commit or '?'}", flush=True)
        base = run_child_exact("print('imports only')")
        print(f"# baseline: a child that only imports a2i (torch included) peaks at {base['peak_rss_mb']:.0f} MB",
              flush=True)
        subprocess.run([sys.executable, __file__, "--build", str(work), "--seconds", str(args.seconds),
                        "--files", str(args.files)], check=True)
        hour = work / "hour-48k-stereo.wav"
        for name in ("audio_features", "audio_imagebind", "audio_check") + (() if args.no_old else ("audio_old",)):
            rows.append({"input": f"{hour.name} ({args.seconds} s, {hour.stat().st_size / MB:.0f} MB)",
                         **case(name, hour)})
        hour.unlink()
        for img in ("20000px.jpg", "9000px.jpg", "bomb-100000px.png", "bomb-20000px.png"):
            rows.append({"input": f"{img} ({(work / img).stat().st_size / MB:.2f} MB)", **case("image", work / img)})
        if not args.no_old:
            size = (work / "9000px.jpg").stat().st_size / MB
            rows.append({"input": f"9000px.jpg ({size:.2f} MB)", **case("image_old", work / "9000px.jpg")})
        for name in ("tree_check", "tree_load"):
            rows.append({"input": f"folder of {args.files} files", **case(name, work / "tree")})
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("\n| input | handling | outcome | peak RSS (MB) | over baseline (MB) | seconds |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['input']} | {r['what']} | {r['outcome']} | {r['peak_rss_mb']:.0f} | "
              f"{r['peak_rss_mb'] - base['peak_rss_mb']:.0f} | {r['seconds']:.1f} |")
    print(json.dumps({"baseline_peak_rss_mb": round(base["peak_rss_mb"]), "rows": [
        {k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]}))


if __name__ == "__main__":
    main()
