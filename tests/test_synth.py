"""The synthetic soundscape world: layout, determinism, variation, `_k` views, hard recordings, distinct scenes."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from a2i_utils.data import CLASSES, load_tree, synth


def digest(root) -> dict[str, str]:
    """sha1 of every file of a tree."""
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in ("manifest.json", "split.json")}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return synth.write_tree(tmp_path_factory.mktemp("syn") / "t", per_class=4, seed=3, image_size=48,
                            duration_s=10.0, progress=False)


def test_layout_is_advance_shaped(tree):
    for label in CLASSES:
        jpgs = sorted((tree / "vision" / label).glob("*.jpg"))
        wavs = sorted((tree / "sound" / label).glob("*.wav"))
        assert len(jpgs) == len(wavs) == 4
        assert [p.stem for p in jpgs] == [p.stem for p in wavs]
    img = Image.open(next((tree / "vision" / "beach").glob("*.jpg")))
    assert img.size == (48, 48) and img.mode == "RGB" and img.format == "JPEG"
    info = sf.info(next((tree / "sound" / "beach").glob("*.wav")))
    assert info.samplerate == 22_050 and info.frames == 220_500 and info.channels == 1
    ds = load_tree(tree, progress=False)
    assert len(ds.pairs) == 52 and ds.problems == []


def test_deterministic_for_a_seed_and_different_for_another(tree, tmp_path):
    again = synth.write_tree(tmp_path / "again", per_class=4, seed=3, image_size=48, progress=False)
    assert digest(again) == digest(tree)
    other = synth.write_tree(tmp_path / "other", per_class=4, seed=4, image_size=48, progress=False)
    assert set(digest(other).values()).isdisjoint(
        v for k, v in digest(tree).items() if k.startswith(("vision", "sound")))


def test_k_views_share_the_recording_of_their_base_id():
    plan = synth.plan_tree(per_class=24, seed=42)
    ks = [p for p in plan if p["k"] > 0]
    assert ks, "some places have extra `_k` views"
    assert all(p["id"] == f"{p['base_id']}_{p['k']}" for p in ks)
    assert all(sum(p["label"] == c for p in plan) == 24 for c in CLASSES)
    hard = [p["hard"] for p in plan if p["k"] == 0 and p["hard"]]
    assert set(hard) == set(synth.HARD_KINDS)


def test_k_files_reuse_audio(tree):
    meta = json.loads((tree / "synthetic.json").read_text())["pairs"]
    for pid, m in meta.items():
        if m["k"] > 0:
            label = m["label"]
            assert (tree / "sound" / label / f"{pid}.wav").read_bytes() == (
                tree / "sound" / label / f"{m['base_id']}.wav").read_bytes()


def test_variation_within_a_class():
    imgs = [synth.make_image("farmland", np.random.default_rng(i), 64).astype(float) for i in range(3)]
    assert min(np.abs(imgs[i] - imgs[j]).mean() for i in range(3) for j in range(i)) > 5
    waves = [synth.make_sound("forest", np.random.default_rng(i), 22_050, 10.0)[0] for i in range(2)]
    assert np.corrcoef(waves[0], waves[1])[0, 1] < 0.5


def test_supports_512_pixels():
    img = synth.make_image("residential", np.random.default_rng(0), 512)
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8 and img.std() > 10


def test_hard_recordings():
    rng = np.random.default_rng
    clean, info = synth.make_sound("harbour", rng(5), 22_050, 10.0)
    assert info["kind"] == "clean" and info["hard"] is None
    quiet, info = synth.make_sound("harbour", rng(5), 22_050, 10.0, hard="quiet")
    assert info["hard"] == "quiet" and np.abs(quiet).max() < 0.05 and np.abs(quiet).max() > 1e-4
    mixed, info = synth.make_sound("harbour", rng(5), 22_050, 10.0, hard="mixed")
    other = info["mixed_with"]
    assert other != "harbour" and other in CLASSES
    assert synth.RECIPES[other]["signature"] in info["sources"]  # the intruder's signature is in the mix
    harbour = {synth.RECIPES["harbour"]["signature"], *synth.RECIPES["harbour"]["shared"]}
    assert synth.RECIPES[other]["signature"] not in harbour  # ... and it is not a sound a harbour has anyway
    noisy, info = synth.make_sound("harbour", rng(5), 22_050, 10.0, hard="noisy")
    assert -6 <= info["snr_db"] <= 3
    assert all(np.isfinite(w).all() and np.abs(w).max() <= 1 for w in (clean, quiet, mixed, noisy))
    with pytest.raises(ValueError, match="unknown recording kind 'loud'"):
        synth.make_sound("harbour", rng(5), 22_050, 1.0, hard="loud")


def test_noisy_recordings_are_dominated_by_noise():
    """Same seed, same scene mix: the noisy copy at <= 3 dB SNR correlates with the clean one at most ~0.82."""
    for seed in range(4):
        clean, _ = synth.make_sound("lake", np.random.default_rng(seed), 22_050, 4.0)
        noisy, info = synth.make_sound("lake", np.random.default_rng(seed), 22_050, 4.0, hard="noisy")
        want = 1 / np.sqrt(1 + 10 ** (-info["snr_db"] / 10))  # corr of signal with signal + noise at that SNR
        assert np.corrcoef(clean, noisy)[0, 1] == pytest.approx(want, abs=0.06)
        assert want < 0.83


def test_sources_are_shared_across_related_scenes():
    def scenes_with(source):
        return {c for c, r in synth.RECIPES.items() if source == r["signature"] or source in r["shared"]}

    assert {"beach", "harbour", "lake", "bridge"} <= scenes_with("water")
    assert {"airport", "harbour", "train station"} <= scenes_with("engine")
    assert {"forest", "orchard", "grassland", "sparse shrub land"} <= scenes_with("birds")
    assert {"grassland", "sparse shrub land", "forest", "orchard"} <= scenes_with("wind")
    assert {"residential", "bridge", "train station"} <= scenes_with("traffic")
    assert set(synth.RECIPES) == set(CLASSES)
    assert all(r["signature"] in synth.SOURCES and set(r["shared"]) <= set(synth.SOURCES)
               for r in synth.RECIPES.values())


def test_recordings_record_what_went_into_them(tree):
    meta = json.loads((tree / "synthetic.json").read_text())["pairs"]
    for m in meta.values():
        assert m["kind"] in ("clean", *synth.HARD_KINDS) and 0 <= m["amount"] <= 1
        assert synth.RECIPES[m["label"]]["signature"] in m["sources"]
        assert all(isinstance(v, float) for v in m["sources"].values())
        assert m["caption"] == synth.caption(m["label"], m["amount"])
    assert synth.read_captions(tree) == {pid: m["caption"] for pid, m in meta.items()}


def test_kinds_and_views_follow_their_shares():
    plan = synth.plan_tree(per_class=400, seed=1)
    places = [p for p in plan if p["k"] == 0]
    for kind, share in synth.KIND_SHARES.items():
        assert sum(p["hard"] == kind for p in places) / len(places) == pytest.approx(share, abs=0.02)
    assert len(plan) / len(places) == pytest.approx(1 + 1.5 * synth.K_FRACTION, abs=0.04)


def test_amount_is_seen_and_heard():
    """One place's `amount` sets a visible detail and the level and busyness of its scene's signature."""
    def water_share(amount):
        img = synth.make_image("beach", np.random.default_rng(3), 64, amount).astype(float)
        return float(np.mean(img[..., 2] > img[..., 0] + 20))  # bluish pixels

    assert water_share(0.9) > water_share(0.1) + 0.3
    low = synth.make_sound("airport", np.random.default_rng(3), 22_050, 2.0, amount=0.0)[1]["sources"]["jet"]
    high = synth.make_sound("airport", np.random.default_rng(3), 22_050, 2.0, amount=1.0)[1]["sources"]["jet"]
    assert high > low + 20  # dB
    quiet_lake = synth.SOURCES["frogs"](np.random.default_rng(0), 22_050 * 4, 22_050, 0.0)
    busy_lake = synth.SOURCES["frogs"](np.random.default_rng(0), 22_050 * 4, 22_050, 1.0)
    assert np.count_nonzero(busy_lake) > np.count_nonzero(quiet_lake)  # four frogs croak more often than one


def band_profile(wave: np.ndarray) -> np.ndarray:
    """Share of energy in 8 octave-ish bands, a crude timbre fingerprint."""
    spec = np.abs(np.fft.rfft(wave)) ** 2
    f = np.fft.rfftfreq(len(wave), 1 / 22_050)
    edges = [0, 100, 250, 500, 1000, 2000, 4000, 6000, 11_025]
    e = np.array([spec[(f >= lo) & (f < hi)].sum() for lo, hi in zip(edges[:-1], edges[1:])])
    return e / e.sum()


def _nearest_centroid_accuracy(feats: dict[str, list[np.ndarray]]) -> int:
    """Scenes whose 4th sample is nearest its own scene's centroid of the first 3."""
    centroids = {c: np.mean(v[:3], 0) for c, v in feats.items()}
    return sum(min(centroids, key=lambda k: np.linalg.norm(centroids[k] - feats[c][3])) == c for c in feats)


def test_scenes_look_distinct():
    """Nearest centroid on mean colour tells most scenes apart (sanity: images stay recognisable)."""
    feats = {c: [synth.make_image(c, np.random.default_rng([11, i]), 32, 0.5).reshape(-1, 3).mean(0) / 255
                 for i in range(4)] for c in CLASSES}
    assert _nearest_centroid_accuracy(feats) >= 9


def test_a_loud_signature_gives_the_scene_away_and_a_quiet_one_does_not():
    """Band energies place clean recordings by scene when the signature is loud, far less often when it is quiet."""
    def accuracy(amount):
        feats = {c: [np.log(band_profile(synth.make_sound(c, np.random.default_rng([11, i]), 22_050, 4.0,
                                                           amount=amount)[0]) + 1e-6) for i in range(4)]
                 for c in CLASSES}
        return _nearest_centroid_accuracy(feats)

    loud, quiet = accuracy(1.0), accuracy(0.0)
    assert loud >= 7 and quiet <= loud - 4, (loud, quiet)  # measured: 8 and 1 of 13


def test_write_tree_refuses_to_delete_a_folder_it_did_not_write(tmp_path):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=r"photos.*not a synthetic tree.*refusing"):
        synth.write_tree(mine, per_class=1, image_size=16, duration_s=0.5, progress=False)
    assert (mine / "holiday.jpg").read_bytes() == b"precious" and sorted(mine.iterdir()) == [mine / "holiday.jpg"]
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep")
    with pytest.raises(FileExistsError, match="not a folder"):
        synth.write_tree(a_file, per_class=1, image_size=16, duration_s=0.5, progress=False)
    assert a_file.read_text() == "keep"
    assert not list(tmp_path.glob(".*.partial"))  # refused before any work


def test_write_tree_replaces_an_empty_folder_or_an_earlier_synthetic_tree(tmp_path):
    out = tmp_path / "tree"
    out.mkdir()
    synth.write_tree(out, per_class=1, seed=1, image_size=16, duration_s=0.5, progress=False)
    first = digest(out)
    synth.write_tree(out, per_class=1, seed=2, image_size=16, duration_s=0.5, progress=False)
    assert digest(out) != first and json.loads((out / "synthetic.json").read_text())["params"]["seed"] == 2


def test_cli_synth_refuses_a_foreign_folder(tmp_path, capsys):
    from a2i_utils import cli

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("do not delete")
    assert cli.main(["data", "synth", "--out", str(mine), "--per-class", "1", "--image-size", "16"]) == 1
    err = capsys.readouterr().err
    assert "mine" in err and "synthetic.json" in err and "refusing" in err
    assert (mine / "thesis.tex").read_text() == "do not delete" and len(list(mine.iterdir())) == 1


def test_read_captions_names_a_damaged_file(tmp_path):
    assert synth.read_captions(tmp_path) == {}  # no synthetic.json (real data): no captions
    (tmp_path / "synthetic.json").write_text('{"pairs": ')
    with pytest.raises(ValueError, match=r"synthetic.json: not a readable"):
        synth.read_captions(tmp_path)


def test_read_captions_refuses_a_tampered_caption(tmp_path):
    """A caption that is not text (a tampered synthetic.json) is refused by name, never passed to the text tower."""
    (tmp_path / "synthetic.json").write_text('{"pairs": {"airport_1": {"caption": 5}}}')
    with pytest.raises(ValueError, match=r"synthetic.json: the caption of 'airport_1' is not text"):
        synth.read_captions(tmp_path)
