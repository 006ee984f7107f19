"""The synthetic world's sounds: a library of sound sources shared across scenes, and each scene's recipe.

A recording is a mix of sources (:data:`SOURCES`), as a field recording is: the same ``water`` source laps at
beaches, harbours, lakes and bridges, ``engine`` drones at airports, harbours and train stations, ``birds``
and ``wind`` are heard in forests, orchards, grassland and shrub land, ``traffic`` at residential areas,
bridges and stations. Each scene has a *signature* source, played louder when the place's visible
``amount`` is larger (so a recording carries a detail of its own image), and shared sources, each present
with a scene-dependent probability at a random level. A quiet signature leaves a recording that a listener
(and a model) can only place among the related scenes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np


# ==========================================================================================================
# Audio primitives: float32 (n,) at rate sr
# ==========================================================================================================
def _band(x: np.ndarray, sr: int, lo: float, hi: float) -> np.ndarray:
    """Band-pass by an FFT mask with smooth (one-octave) edges."""
    spec = np.fft.rfft(np.asarray(x, np.float32)) * _band_gain(len(x), sr, lo, hi)  # complex64
    return np.fft.irfft(spec, len(x)).astype(np.float32, copy=False)


@functools.lru_cache(maxsize=64)
def _band_gain(n: int, sr: int, lo: float, hi: float) -> np.ndarray:
    """Gain of the smooth (about one octave wide edges) band-pass at the rFFT frequencies of n samples."""
    logf = np.log2(np.maximum(np.fft.rfftfreq(n, 1 / sr), 1.0))
    gain = 1 / ((1 + np.exp(-6 * (logf - np.log2(max(lo, 1.0))))) * (1 + np.exp(6 * (logf - np.log2(hi)))))
    return gain.astype(np.float32)  # float32 keeps the FFTs in single precision (twice as fast)


def _noise_band(rng: np.random.Generator, n: int, sr: int, lo: float, hi: float) -> np.ndarray:
    """Band-limited Gaussian noise, made in the frequency domain (white noise has i.i.d. complex bins)."""
    k = n // 2 + 1
    spec = np.empty(k, np.complex64)  # (k,)
    spec.real = rng.standard_normal(k, dtype=np.float32)
    spec.imag = rng.standard_normal(k, dtype=np.float32)
    spec *= _band_gain(n, sr, lo, hi)
    return np.fft.irfft(spec, n).astype(np.float32, copy=False)


def _saw(freq, n: int, sr: int) -> np.ndarray:
    """A sawtooth (all harmonics, 1/h) following ``freq``; band-limit it with :func:`_band` afterwards."""
    ph = np.cumsum(np.broadcast_to(np.asarray(freq, np.float64), (n,))) / sr  # (n,) cycles
    return (2 * (ph % 1.0) - 1).astype(np.float32)


def _norm(x: np.ndarray, peak: float = 1.0) -> np.ndarray:
    """Scale to the given peak."""
    return (x * (peak / max(float(np.abs(x).max()), 1e-9))).astype(np.float32)


def _smooth_env(rng, n: int, sr: int, rate_hz: float, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """A slowly varying random envelope in [lo, hi] (about ``rate_hz`` changes per second)."""
    k = max(2, int(n / sr * rate_hz) + 2)
    pts = rng.random(k)
    env = np.interp(np.linspace(0, k - 1, n), np.arange(k), pts)
    return (lo + (hi - lo) * env).astype(np.float32)


def _tone(freq, n: int, sr: int, harmonics=(1.0,), phase: float = 0.0) -> np.ndarray:
    """A harmonic tone with frequency ``freq`` (scalar or (n,) track in Hz) and harmonic amplitudes."""
    f = np.broadcast_to(np.asarray(freq, np.float64), (n,))
    ph = phase + 2 * np.pi * np.cumsum(f) / sr
    out = np.zeros(n, np.float64)
    s_prev, s, c2 = np.zeros(n), np.sin(ph), 2 * np.cos(ph)
    for h, a in enumerate(harmonics, start=1):  # sin((h+1)x) = 2 cos(x) sin(hx) - sin((h-1)x): no sin per harmonic
        if a:
            out += a * s * (h * f < sr / 2)
        s_prev, s = s, c2 * s - s_prev
    return out.astype(np.float32)


def _ad(n: int, sr: int, attack: float, decay: float) -> np.ndarray:
    """An attack-decay envelope of ``n`` samples (linear rise, exponential fall)."""
    t = np.arange(n) / sr
    return np.where(t < attack, t / max(attack, 1e-6), np.exp(-(t - attack) / max(decay, 1e-6))).astype(np.float32)


def _add(out: np.ndarray, event: np.ndarray, start_s: float, sr: int, gain: float = 1.0) -> None:
    """Mix ``event`` into ``out`` starting at ``start_s`` seconds (clipped at the end)."""
    i = int(start_s * sr)
    if i >= len(out) or i + len(event) <= 0:
        return
    j = max(i, 0)
    seg = event[j - i : len(out) - i]
    out[j : j + len(seg)] += gain * seg


def _chirp_bird(rng, sr: int, base: float) -> np.ndarray:
    """One bird phrase: 2-6 fast frequency sweeps around ``base`` Hz."""
    parts = []
    for _ in range(rng.integers(2, 7)):
        d = rng.uniform(0.05, 0.14)
        m = int(d * sr)
        f0, f1 = base * rng.uniform(0.7, 1.3), base * rng.uniform(0.7, 1.4)
        f = np.linspace(f0, f1, m)
        parts += [_tone(f, m, sr, (1.0, 0.15)) * np.sin(np.linspace(0, np.pi, m)) ** 2, np.zeros(int(rng.uniform(0.02,
                                                                                                       0.08) * sr))]
    return np.concatenate(parts).astype(np.float32)


def _gull(rng, sr: int) -> np.ndarray:
    """A gull's 'kyow': a falling harmonic call."""
    m = int(rng.uniform(0.25, 0.45) * sr)
    f = np.linspace(rng.uniform(1300, 1700), rng.uniform(800, 1000), m)
    return _tone(f, m, sr, (1.0, 0.6, 0.35, 0.2)) * _ad(m, sr, 0.03, 0.15)


def _voice(rng, sr: int, seconds: float) -> np.ndarray:
    """Speech-like babble: voiced syllables with vowel formants and pauses."""
    out = np.zeros(int(seconds * sr), np.float32)
    f0 = rng.uniform(95, 230)
    vowels = [(730, 1090), (270, 2290), (300, 870), (530, 1840), (660, 1720), (440, 1020)]
    t = rng.uniform(0, 0.3)
    while t < seconds - 0.3:
        d = rng.uniform(0.12, 0.28)
        m = int(d * sr)
        f1, f2 = vowels[rng.integers(len(vowels))]
        amps = [np.exp(-(((h * f0 - f1) / 160) ** 2)) + 0.6 * np.exp(-(((h * f0 - f2) / 220) ** 2)) + 0.05
                for h in range(1, 30)]
        pitch = f0 * np.linspace(1, rng.uniform(0.85, 1.15), m)
        _add(out, _tone(pitch, m, sr, amps) * np.sin(np.linspace(0, np.pi, m)) ** 0.7, t, sr)
        t += d + (rng.uniform(0.3, 0.8) if rng.random() < 0.2 else rng.uniform(0.02, 0.08))
    return out


def _rms_norm(x: np.ndarray) -> np.ndarray:
    """Scale to unit RMS (a silent input stays silent)."""
    return (x / max(float(np.sqrt(np.mean(x.astype(np.float64) ** 2))), 1e-9)).astype(np.float32)


# ==========================================================================================================
# The sources: each returns a clean (n,) signal; the mixer scales it to unit RMS and then to its level
# ==========================================================================================================
def src_jet(rng, n, sr, amount=0.5):
    """Jet roar swelling as planes fly over (1-4 of them, more with amount), with a Doppler-falling whine."""
    t = np.arange(n) / sr
    env, whine = np.full(n, 0.12, np.float32), np.zeros(n, np.float32)
    for t0 in rng.uniform(0.1, 0.9, 1 + round(3 * amount)) * n / sr:
        width = rng.uniform(0.8, 1.8)
        fly = np.exp(-(((t - t0) / width) ** 2))
        env += fly
        f_whine = rng.uniform(2500, 4500) * (1 - 0.06 * np.tanh((t - t0) / 0.8))
        whine += _tone(f_whine, n, sr, (1.0, 0.3)) * fly**2 * rng.uniform(0.05, 0.15)
    return _norm(_noise_band(rng, n, sr, 50, rng.uniform(1500, 3000)) * env) + whine


def src_engine(rng, n, sr, amount=0.5):
    """An idling engine far off (a generator, a ship's diesel, a locomotive): a steady low harmonic drone."""
    f0 = rng.uniform(40, 70)
    drone = _band(_saw(f0 * (1 + 0.01 * np.sin(2 * np.pi * 0.3 * np.arange(n) / sr)), n, sr), sr, 30, 800)
    return _norm(drone) + 0.2 * _norm(_noise_band(rng, n, sr, 40, 300))


def src_tractor(rng, n, sr, amount=0.5):
    """A tractor's diesel: low harmonic series with combustion pulses, working harder (higher rpm) with amount."""
    t = np.arange(n) / sr
    drift = 1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t + rng.uniform(0, 6))
    f0 = (20 + 20 * amount) * rng.uniform(0.95, 1.05) * drift
    engine = _saw(f0, n, sr)
    engine *= 0.7 + 0.3 * np.sin(np.cumsum(2 * np.pi * f0 / 2) / sr) ** 2  # combustion pulses
    return _band(engine, sr, 20, 2000)


def src_surf(rng, n, sr, amount=0.5):
    """Breaking waves every few seconds (more often with amount): a rising then slowly fading broadband roar."""
    surf = np.zeros(n, np.float32)
    period, t = (6.0 - 3.5 * amount) * rng.uniform(0.9, 1.1), rng.uniform(-1.0, 1.5)
    while t < n / sr:
        m = int(rng.uniform(3, 5) * sr)
        _add(surf, _ad(m, sr, rng.uniform(0.3, 0.8), rng.uniform(1.0, 2.0)) * rng.uniform(0.6, 1.0), t, sr)
        t += period * rng.uniform(0.85, 1.15)
    return _norm(_noise_band(rng, n, sr, 150, 5000)) * (0.1 + surf)


def src_water(rng, n, sr, amount=0.5):
    """Water lapping against a shore, a quay or bridge piers: low noise in slow irregular splashes."""
    splash = _smooth_env(rng, n, sr, rng.uniform(1.5, 3.0), 0.0, 1.0) ** 3
    return _noise_band(rng, n, sr, 120, 1500) * (0.25 + splash)


def src_gulls(rng, n, sr, amount=0.5):
    """Gulls calling: falling harmonic 'kyow' calls, one to four of them."""
    out = np.zeros(n, np.float32)
    for _ in range(rng.integers(1, 5)):
        _add(out, _gull(rng, sr), rng.uniform(0, max(0.1, n / sr - 0.5)), sr, rng.uniform(0.5, 1.0))
    return out


def src_birds(rng, n, sr, amount=0.5):
    """Birdsong: one to four birds (more with amount) repeating short high chirp phrases."""
    out = np.zeros(n, np.float32)
    for _ in range(1 + round(3 * amount)):
        phrase, gap = _chirp_bird(rng, sr, rng.uniform(2200, 5500)), rng.uniform(1.2, 3.0)
        t, gain = rng.uniform(0, 1.5), rng.uniform(0.3, 1.0)
        while t < n / sr:
            _add(out, phrase, t, sr, gain * rng.uniform(0.7, 1.0))
            t += len(phrase) / sr + gap * rng.uniform(0.7, 1.3)
    return out


def src_wind(rng, n, sr, amount=0.5):
    """Gusting wind with a whistling resonance (stronger gusts and whistle with amount)."""
    gusts = _smooth_env(rng, n, sr, 0.5, 0.6 - 0.55 * amount, 1.0) ** 2
    whistle = _noise_band(rng, n, sr, rng.uniform(600, 900), rng.uniform(950, 1300))
    return (_norm(_noise_band(rng, n, sr, 80, 1500)) + (0.1 + 0.8 * amount) * _norm(whistle)) * gusts


def src_rustle(rng, n, sr, amount=0.5):
    """Leaves rustling: soft high noise with a slowly changing level."""
    return _noise_band(rng, n, sr, 1500, 9000) * _smooth_env(rng, n, sr, 0.5, 0.2, 1.0)


def src_crickets(rng, n, sr, amount=0.5):
    """Crickets: one to four (more with amount) trains of 4-5 kHz pulses in a steady rhythm."""
    out = np.zeros(n, np.float32)
    for _ in range(1 + round(3 * amount)):
        carrier, pulse_rate, n_pulses = rng.uniform(3800, 5200), rng.uniform(25, 45), int(rng.integers(3, 7))
        m = int(n_pulses / pulse_rate * sr)
        chirp = _tone(carrier, m, sr) * (np.sin(np.pi * pulse_rate * np.arange(m) / sr) ** 4)
        period, t, gain = rng.uniform(0.35, 0.8), rng.uniform(0, 0.5), rng.uniform(0.2, 0.6)
        while t < n / sr:
            _add(out, chirp, t, sr, gain)
            t += period * rng.uniform(0.95, 1.05)
    return out


def src_bees(rng, n, sr, amount=0.5):
    """Bees buzzing past (one to six, more with amount): sawtooth ~220 Hz with vibrato, swelling as they pass."""
    t = np.arange(n) / sr
    bees = np.zeros(n, np.float32)
    for _ in range(1 + round(5 * amount)):
        f = rng.uniform(190, 260) * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(5, 10) * t))
        fly = np.exp(-(((t - rng.uniform(0, n / sr)) / rng.uniform(0.8, 2.5)) ** 2))
        bees += _saw(f, n, sr) * fly * rng.uniform(0.3, 0.8)
    return _band(bees, sr, 150, 3000)


def src_frogs(rng, n, sr, amount=0.5):
    """Frogs croaking in buzzing 'ribbits' (one to four frogs, more with amount)."""
    out = np.zeros(n, np.float32)
    for _ in range(1 + round(3 * amount)):
        f0, buzz = rng.uniform(150, 350), rng.uniform(70, 120)
        m = int(0.07 * sr)
        am = np.sin(np.pi * buzz * np.arange(m) / sr) ** 4  # (m,): smooth buzz pulses, no clicks
        pulse = _tone(f0, m, sr, (1.0, 0.7, 0.4, 0.2)) * am * np.sin(np.linspace(0, np.pi, m))
        period, tt, gain = rng.uniform(0.6, 1.5), rng.uniform(0, 1), rng.uniform(0.4, 1.0)
        while tt < n / sr:
            for k in range(rng.integers(2, 4)):
                _add(out, pulse, tt + k * 0.09, sr, gain)
            tt += period * rng.uniform(0.8, 1.2)
    return out


def src_traffic(rng, n, sr, amount=0.5):
    """Road traffic: a low hum with cars swelling past (1-10 cars, more with amount)."""
    out = 0.5 * _norm(_noise_band(rng, n, sr, 40, 800)) * _smooth_env(rng, n, sr, 0.3, 0.5, 1.0)
    for tc in rng.uniform(0, n / sr, 1 + round(9 * amount)):
        m = int(2.5 * sr)
        whoosh = _noise_band(rng, m, sr, 100, 2500) * np.exp(-(((np.arange(m) / sr - 1.25) / 0.5) ** 2))
        _add(out, _norm(whoosh), tc - 1.25, sr, rng.uniform(0.4, 0.9))
    return out


def src_joints(rng, n, sr, amount=0.5):
    """Cars crossing a bridge's expansion joint (2-12, more with amount): a double thump per car, and its whoosh."""
    out = src_traffic(rng, n, sr, amount) * 0.3
    f_thump = rng.uniform(45, 75)
    mt = int(0.25 * sr)
    thump = _tone(f_thump, mt, sr, (1.0, 0.5)) * _ad(mt, sr, 0.003, 0.05)
    for tc in np.sort(rng.uniform(0, max(0.1, n / sr - 0.5), 2 + round(10 * amount))):
        gap = rng.uniform(0.1, 0.18)
        _add(out, thump, tc, sr, 0.9)
        _add(out, thump, tc + gap, sr, 0.8)
    return out


def src_voices(rng, n, sr, amount=0.5):
    """People talking: one or two speech-like babbles."""
    out = np.zeros(n, np.float32)
    for _ in range(rng.integers(1, 3)):
        out += _norm(_voice(rng, sr, n / sr)) * rng.uniform(0.4, 1.0)
    return out


def src_dog(rng, n, sr, amount=0.5):
    """A dog barking two to four times."""
    out, t = np.zeros(n, np.float32), rng.uniform(0, max(0.1, n / sr - 2))
    for _ in range(rng.integers(2, 5)):
        m = int(rng.uniform(0.1, 0.18) * sr)
        bark = _tone(rng.uniform(400, 700), m, sr, (1, 0.8, 0.6, 0.4, 0.3)) * _ad(m, sr, 0.01, 0.05)
        bark += 0.3 * _noise_band(rng, m, sr, 500, 3000) * _ad(m, sr, 0.005, 0.03)
        _add(out, bark, t, sr)
        t += rng.uniform(0.25, 0.5)
    return out


def src_crowd(rng, n, sr, amount=0.5):
    """A crowd murmuring and cheering (1-4 cheers, more with amount)."""
    t = np.arange(n) / sr
    cheer = sum(np.exp(-(((t - rng.uniform(0, n / sr)) / rng.uniform(0.6, 1.5)) ** 2))
                for _ in range(1 + round(3 * amount)))
    return _norm(_noise_band(rng, n, sr, 300, 3500)) * (0.25 + 0.75 * cheer)


def src_whistle(rng, n, sr, amount=0.5):
    """A referee's trilled whistle, one to three blasts."""
    out = np.zeros(n, np.float32)
    for _ in range(rng.integers(1, 4)):
        m = int(rng.uniform(0.3, 1.0) * sr)
        f = rng.uniform(2800, 3500) + 150 * np.sin(2 * np.pi * rng.uniform(25, 35) * np.arange(m) / sr)
        env = np.minimum(1, np.minimum(np.arange(m), m - np.arange(m)) / 200)
        _add(out, _tone(f, m, sr, (1.0, 0.2)) * env, rng.uniform(0, max(0.1, (n - m) / sr)), sr, rng.uniform(0.5, 1.0))
    return out


def src_train(rng, n, sr, amount=0.5):
    """A train's rumble arriving, with the clack-clack of its wheels on rail joints (longer train: more clacks)."""
    t = np.arange(n) / sr
    arrive = np.clip((t - rng.uniform(-3, 4)) / rng.uniform(2, 4), 0.1, 1)
    out = _norm(_noise_band(rng, n, sr, 25, 400)) * arrive
    period, m = (1.1 - 0.6 * amount) * rng.uniform(0.95, 1.05), int(0.03 * sr)
    click = _noise_band(rng, m, sr, 500, 4000) * _ad(m, sr, 0.001, 0.008)
    click *= 1 / max(float(np.abs(click).max()), 1e-9)
    tc = rng.uniform(0, period)
    while tc < n / sr:
        g = 0.8 * arrive[min(n - 1, int(tc * sr))]
        _add(out, click, tc, sr, g)
        _add(out, click, tc + rng.uniform(0.1, 0.14), sr, g)
        tc += period
    return out


def src_horn(rng, n, sr, amount=0.5):
    """A train's two-tone horn (260-340 Hz and a minor third up), once."""
    d = rng.uniform(0.8, 2.0)
    m = int(d * sr)
    f1 = rng.uniform(260, 340)
    horn = sum(_tone(f, m, sr, [1 / h for h in range(1, 10)]) for f in (f1, f1 * 1.19))
    horn *= np.minimum(1, np.minimum(np.arange(m) / (0.05 * sr), (m - np.arange(m)) / (0.2 * sr)))
    out = np.zeros(n, np.float32)
    _add(out, _norm(horn), rng.uniform(0.2, max(0.3, n / sr - d)), sr)
    return out


def src_ship(rng, n, sr, amount=0.5):
    """Ships: a deep horn (80-160 Hz, rich in harmonics) over the slow chug of diesels (louder with amount)."""
    d = rng.uniform(1.5, 3.0)
    m = int(d * sr)
    horn = _tone(rng.uniform(80, 160), m, sr, [1 / h**0.6 for h in range(1, 16)])
    horn *= np.minimum(1, np.minimum(np.arange(m) / (0.1 * sr), (m - np.arange(m)) / (0.3 * sr)))
    t = np.arange(n) / sr
    chug = _band(_saw(rng.uniform(12, 20), n, sr), sr, 30, 400) * (0.6 + 0.4 * np.sin(2 * np.pi * 2.5 * t) ** 2)
    out = (0.2 + 0.8 * amount) * _norm(chug)
    _add(out, _norm(horn), rng.uniform(0.5, max(0.6, n / sr - d)), sr)
    return out


def src_chime(rng, n, sr, amount=0.5):
    """A station's two-note announcement chime."""
    out, tb = np.zeros(n, np.float32), rng.uniform(0, max(0.1, n / sr - 2))
    for k, f in enumerate((659.3, 523.3)):
        mb = int(1.2 * sr)
        _add(out, _tone(f, mb, sr, (1, 0.3)) * _ad(mb, sr, 0.005, 0.4), tb + 0.5 * k, sr)
    return out


SOURCES: dict[str, Callable] = {
    name.removeprefix("src_"): fn for name, fn in sorted(globals().items()) if name.startswith("src_")
}


# ==========================================================================================================
# The scenes' recipes: a signature (level set by the place's amount) and shared sources (probability, dB range)
# ==========================================================================================================
SIGNATURE_DB = (-24.0, 6.0)  # signature level at amount 0 and 1, relative to a shared source at 0 dB
SHARED_DB = (-12.0, -4.0)  # a present shared source's level is drawn uniformly in this range

RECIPES: dict[str, dict] = {
    "airport": {"signature": "jet", "shared": {"engine": 0.6, "traffic": 0.4, "wind": 0.4, "voices": 0.2}},
    "beach": {"signature": "surf", "shared": {"water": 0.6, "gulls": 0.5, "voices": 0.4, "wind": 0.4}},
    "bridge": {"signature": "joints", "shared": {"traffic": 0.9, "water": 0.7, "wind": 0.3, "birds": 0.2}},
    "farmland": {"signature": "tractor", "shared": {"wind": 0.6, "birds": 0.5, "dog": 0.2, "crickets": 0.2}},
    "forest": {"signature": "birds", "shared": {"rustle": 0.7, "wind": 0.4, "crickets": 0.1}},
    "grassland": {"signature": "crickets", "shared": {"wind": 0.8, "birds": 0.5, "rustle": 0.2}},
    "harbour": {"signature": "ship", "shared": {"engine": 0.8, "water": 0.8, "gulls": 0.5, "voices": 0.3}},
    "lake": {"signature": "frogs", "shared": {"water": 0.8, "birds": 0.5, "wind": 0.3, "gulls": 0.1}},
    "orchard": {"signature": "bees", "shared": {"birds": 0.7, "wind": 0.4, "rustle": 0.4, "crickets": 0.2}},
    "residential": {"signature": "traffic", "shared": {"voices": 0.6, "dog": 0.5, "birds": 0.3}},
    "sparse shrub land": {"signature": "wind", "shared": {"crickets": 0.3, "birds": 0.3}},
    "sports land": {"signature": "crowd", "shared": {"whistle": 0.6, "voices": 0.5, "traffic": 0.3}},
    "train station": {"signature": "train", "shared": {"voices": 0.5, "horn": 0.4, "chime": 0.4, "engine": 0.4,
                                                       "traffic": 0.3}},
}  # fmt: skip


def draw_sources(label: str, amount: float, rng: np.random.Generator) -> dict[str, float]:
    """Which sources a recording of ``label`` holds and their levels in dB: ``{source: level_db}``."""
    recipe = RECIPES[label]
    lo, hi = SIGNATURE_DB
    levels = {recipe["signature"]: round(lo + (hi - lo) * amount + rng.normal(0, 1.5), 1)}
    for name, p in recipe["shared"].items():
        if rng.random() < p:
            levels[name] = round(float(rng.uniform(*SHARED_DB)), 1)
    return levels


def mix_sources(levels: dict[str, float], rng: np.random.Generator, n: int, sr: int,
                signature: str = "", amount: float = 0.5) -> np.ndarray:
    """Sum of the sources, each at unit RMS times its level; (n,) float32 before any normalisation.

    The ``signature`` source makes its events at the place's ``amount`` (more planes, more cars, ...); every
    other source draws its own busyness.
    """
    out = np.zeros(n, np.float32)
    for name, level_db in levels.items():
        busy = amount if name == signature else float(rng.random())
        out += _rms_norm(SOURCES[name](rng, n, sr, busy)) * np.float32(10 ** (level_db / 20))
    return out


def background_noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Broadband noise with a slowly moving level (wind on the microphone, distant hum): (n,) at unit RMS."""
    rumble = _rms_norm(_noise_band(rng, n, sr, 30, 600)) * 1.5
    hiss = _rms_norm(_noise_band(rng, n, sr, 200, 8000))
    return _rms_norm((rumble + hiss) * _smooth_env(rng, n, sr, 0.8, 0.5, 1.0))
