"""The embedding cache (hits, changed files, interrupted writes), the audio scale, the retrieval metrics."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from a2i_utils.config import get_config
from a2i_utils.imagebind import cache as E
from a2i_utils.imagebind import retrieval as R
from a2i_utils.imagebind.embedder import Embedder
from a2i_utils.imagebind.mini import build_mini

SMALL = {"imagebind.embed_dim": 32, "imagebind.mini_dim": 32, "imagebind.mini_blocks": 1, "imagebind.mini_heads": 2}


class CountingEmbedder(Embedder):
    """A real (small, untrained) ImageBindModel that counts how many items it embedded."""

    calls: int = 0

    def embed(self, modality, inputs):
        self.calls += len(inputs)
        return super().embed(modality, inputs)


@pytest.fixture
def cfg(tmp_path):
    return get_config("demo", {"cache_dir": tmp_path / "cache", "device": "cpu", "imagebind.batch_size": 2, **SMALL})


@pytest.fixture
def embedder(cfg):
    torch.manual_seed(0)
    return CountingEmbedder(build_mini(cfg).eval(), identity="test-model")


def _wavs(folder, n, seconds=2.5, rate=16_000):
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        p = folder / f"{i:05d}.wav"
        sf.write(p, (0.3 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate, subtype="PCM_16")
        paths.append(p)
    return paths


def test_second_run_is_served_from_the_cache(cfg, embedder, tmp_path):
    paths = _wavs(tmp_path / "wav", 3)
    s1, s2 = E.EmbedStats(), E.EmbedStats()
    first = E.embed_files(embedder, paths, "audio", cfg, progress=False, stats=s1)
    assert first.shape == (3, 32) and (s1.hits, s1.computed) == (0, 3) and embedder.calls == 3
    again = E.embed_files(embedder, paths, "audio", cfg, progress=False, stats=s2)
    assert (s2.hits, s2.computed) == (3, 0) and embedder.calls == 3  # the model was not run again
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    entries = sorted((cfg.embeddings_dir / "test-model" / E.run_key(embedder) / "audio").rglob("*.safetensors"))
    assert {e.stem for e in entries} == {E.file_hash(p) for p in paths}  # keyed by content hash


def test_changed_file_is_embedded_again(cfg, embedder, tmp_path):
    paths = _wavs(tmp_path / "wav", 3)
    before = E.embed_files(embedder, paths, "audio", cfg, progress=False)
    sf.write(paths[1], np.zeros(16_000, np.float32) + 0.1, 16_000, subtype="PCM_16")  # new content, same name
    stats = E.EmbedStats()
    after = E.embed_files(embedder, paths, "audio", cfg, progress=False, stats=stats)
    assert (stats.hits, stats.computed) == (2, 1)
    torch.testing.assert_close(after[[0, 2]], before[[0, 2]], rtol=0, atol=0)
    assert not torch.allclose(after[1], before[1])


def test_identical_files_are_embedded_once(cfg, embedder, tmp_path):
    (p,) = _wavs(tmp_path / "wav", 1)
    copy = tmp_path / "wav" / "00000_1.wav"
    copy.write_bytes(p.read_bytes())  # an ADVANCE `_k` file reuses its base id's recording
    stats = E.EmbedStats()
    out = E.embed_files(embedder, [p, copy], "audio", cfg, progress=False, stats=stats)
    assert embedder.calls == 1
    assert (stats.computed, stats.duplicates, stats.hits) == (1, 1, 0)  # one computed, one copy of it
    assert str(stats) == "2 embeddings: 0 from the cache, 1 computed, 1 copy of an identical file"
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)


def test_another_model_does_not_see_these_entries(cfg, embedder, tmp_path):
    paths = _wavs(tmp_path / "wav", 2)
    E.embed_files(embedder, paths, "audio", cfg, progress=False)
    other = CountingEmbedder(embedder.model, identity="another-model")
    E.embed_files(other, paths, "audio", cfg, progress=False)
    assert other.calls == 2


def test_dtype_and_preprocessing_version_are_part_of_the_cache_key(cfg, embedder, tmp_path, monkeypatch):
    """The same checkpoint run in another dtype, or fed by changed preprocessing, must not reuse old embeddings."""
    from a2i_utils.imagebind import preprocess

    paths = _wavs(tmp_path / "wav", 2)
    E.embed_files(embedder, paths, "audio", cfg, progress=False)
    half = CountingEmbedder(copy.deepcopy(embedder.model).to(torch.bfloat16), identity="test-model",
                            dtype=torch.bfloat16)  # the same checkpoint, run in bfloat16
    stats = E.EmbedStats()
    E.embed_files(half, paths, "audio", cfg, progress=False, stats=stats)
    assert (stats.hits, stats.computed) == (0, 2) and half.calls == 2
    monkeypatch.setattr(preprocess, "PREPROCESS_VERSION", preprocess.PREPROCESS_VERSION + 1)
    stats = E.EmbedStats()
    E.embed_files(embedder, paths, "audio", cfg, progress=False, stats=stats)
    assert (stats.hits, stats.computed) == (0, 2)
    t = E.EmbedStats()
    E.embed_texts(embedder, ["an aerial photo of lake"], cfg, stats=t)
    E.embed_texts(half, ["an aerial photo of lake"], cfg, stats=t)
    assert (t.hits, t.computed) == (0, 2)


def test_interrupted_write_leaves_no_entry(cfg, embedder, tmp_path, monkeypatch):
    import safetensors.torch

    paths = _wavs(tmp_path / "wav", 2)
    real_save = safetensors.torch.save_file

    def dying_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 7)  # half a file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        E.embed_files(embedder, paths, "audio", cfg, progress=False)
    assert not list((cfg.embeddings_dir / "test-model").rglob("*.safetensors"))  # only a temp file, never an entry
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    stats = E.EmbedStats()
    E.embed_files(embedder, paths, "audio", cfg, progress=False, stats=stats)
    assert stats.computed == 2


def test_damaged_entry_is_recomputed(cfg, embedder, tmp_path):
    paths = _wavs(tmp_path / "wav", 1)
    good = E.embed_files(embedder, paths, "audio", cfg, progress=False)
    cache = E.EmbeddingCache.of(embedder, cfg)
    cache.path("audio", E.file_hash(paths[0])).write_bytes(b"garbage")
    stats = E.EmbedStats()
    again = E.embed_files(embedder, paths, "audio", cfg, progress=False, stats=stats)
    assert stats.computed == 1
    torch.testing.assert_close(again, good)


def test_images_and_texts_are_cached_too(cfg, embedder, tmp_path):
    img = tmp_path / "a.jpg"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(img)
    v = E.embed_files(embedder, [img], "vision", cfg, progress=False)
    assert v.shape == (1, 32)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(1))  # vision embeddings are unit vectors
    s = E.EmbedStats()
    t1 = E.embed_texts(embedder, ["an aerial photo of forest", "an aerial photo of lake"], cfg, stats=s)
    t2 = E.embed_texts(embedder, ["an aerial photo of forest"], cfg, stats=s)
    assert (s.computed, s.hits) == (2, 1)
    torch.testing.assert_close(t2[0], t1[0], rtol=0, atol=0)


def test_missing_file_and_bad_modality(cfg, embedder, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.wav"):
        E.embed_files(embedder, [tmp_path / "nothere.wav"], "audio", cfg, progress=False)
    with pytest.raises(ValueError, match="modality"):
        E.embed_files(embedder, [], "smell", cfg, progress=False)


def test_audio_scale_option():
    emb = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1) * 20
    torch.testing.assert_close(E.scale_audio(emb, "imagebind").norm(dim=1), torch.full((4,), 20.0))
    torch.testing.assert_close(E.scale_audio(emb, "unit").norm(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match="audio_scale"):
        E.scale_audio(emb, "loud")


def test_recall_and_prototypes():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.0, 0.2, 0.1]])
    # row 0: match first; row 1: match second (one better); row 2: match third (one better)
    assert R.recall_at_k(sim, ks=(1, 2, 3)) == {1: pytest.approx(1 / 3), 2: pytest.approx(1.0), 3: pytest.approx(1.0)}
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    means = R.class_means(emb, labels, 3)
    assert means.shape == (3, 2) and torch.equal(means[2], torch.zeros(2))
    assert R.nearest_prototype(emb, means[:2]).tolist() == [0, 0, 1]


def test_embed_cli_fills_the_cache_and_reports(cfg, embedder, tmp_path, monkeypatch, capsys):
    """``a2i embed`` end to end, with the preset's model swapped for the small one (training it takes minutes)."""
    import a2i_utils.imagebind.embedder as M
    from a2i_utils.cli import main

    wavs = _wavs(tmp_path / "data", 2)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "data" / "x.png")
    (tmp_path / "data" / "notes.txt").write_text("ignored inside a folder")
    monkeypatch.setattr(M, "load_imagebind", lambda c, progress=True: embedder)
    argv = ["embed", str(tmp_path / "data"), "--cache", str(cfg.cache_dir)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "audio: 2 files -> 2 embeddings: 0 from the cache, 2 computed" in out
    assert "vision: 1 files -> 1 embeddings: 0 from the cache, 1 computed" in out
    assert main(argv) == 0
    assert "audio: 2 files -> 2 embeddings: 2 from the cache, 0 computed" in capsys.readouterr().out
    assert main(["embed", str(wavs[0]), str(tmp_path / "missing.wav"), "--cache", str(cfg.cache_dir)]) == 1
    assert "missing.wav: no such file or folder" in capsys.readouterr().out


def test_recall_ties_count_against_the_match():
    """A collapsed embedder (every similarity equal) must not score perfect retrieval."""
    r = R.recall_at_k(torch.ones(5, 5), ks=(1, 4, 5))
    assert r == {1: 0.0, 4: 0.0, 5: 1.0}
    sim = torch.tensor([[0.5, 0.5, 0.1], [0.2, 0.9, 0.3], [0.0, 0.0, 0.0]])  # row 0 ties once, row 2 twice
    assert R.recall_at_k(sim, ks=(1, 2, 3)) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: 1.0}


def _pair(root, pid, label="forest", split="val"):
    from a2i_utils.data import Pair

    base = pid.split("_")[0]
    return Pair(pid, base, label, root / f"{pid}.png", root / f"{base}.wav", split)


def test_one_pair_per_recording_keeps_the_base_pair(tmp_path):
    pairs = [_pair(tmp_path, i) for i in ("00002_1", "00001", "00002", "00001_1", "00003_2", "00003_1")]
    kept = R.one_pair_per_recording(pairs)
    assert [p.id for p in kept] == ["00001", "00002", "00003_2"]  # base pairs where present, input order


def test_evaluate_alignment_scores_each_recording_once(cfg, embedder, tmp_path):
    """``_k`` pairs share their base id's recording: retrieval runs over one pair per recording."""
    from types import SimpleNamespace

    from a2i_utils.data import CLASSES

    root = tmp_path / "data"
    wavs = _wavs(root, 3)  # 00000.wav, 00001.wav, 00002.wav
    rng = np.random.default_rng(0)
    ids = ["00000", "00000_1", "00001", "00001_1", "00002"]
    val = [_pair(root, i, label=CLASSES[int(i[4])]) for i in ids]
    train = [_pair(root, "00000", split="train")]
    for p in val:
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p.image_path)
    assert {p.audio_path for p in val} == set(wavs)
    m = R.evaluate_alignment(embedder, SimpleNamespace(test=val, train=train), cfg)
    assert (m["n_val"], m["n_recordings"]) == (5, 3)
    assert m["chance_R@1"] == pytest.approx(1 / 3) and m["chance_R@5"] == 1.0
    # the metrics are computed on exactly the three distinct recordings and their base images
    kept = R.one_pair_per_recording(val)
    assert [p.id for p in kept] == ["00000", "00001", "00002"]
    audio = E.embed_files(embedder, [p.audio_path for p in kept], "audio", cfg, progress=False)
    image = E.embed_files(embedder, [p.image_path for p in kept], "vision", cfg, progress=False)
    want = R.recall_at_k(R.cosine_matrix(audio, image), ks=(1, 2))
    assert m["R@1"] == pytest.approx(want[1])


def test_recall_refuses_non_finite_similarities():
    """An all-NaN similarity matrix (a broken embedder) must not score R@1 = 1."""
    for bad in (torch.full((4, 4), float("nan")), torch.eye(4).masked_fill(torch.eye(4) > 0, float("inf"))):
        with pytest.raises(ValueError, match="non-finite"):
            R.recall_at_k(bad, ks=(1,))
    sim = torch.eye(3)
    sim[1, 2] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite"):
        R.recall_at_k(sim)


def test_scene_metrics_refuse_non_finite_embeddings():
    emb = torch.randn(4, 8)
    emb[2, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        R.nearest_prototype(emb, torch.randn(3, 8))
    with pytest.raises(ValueError, match="non-finite"):
        R.class_means(emb, torch.tensor([0, 1, 1, 2]), 3)


def test_recordings_are_keyed_by_class_and_base_id(tmp_path):
    """The same 5-digit id in two classes is two places, two recordings: neither may be dropped."""
    pairs = [_pair(tmp_path, "00007", "forest"), _pair(tmp_path, "00007", "lake"), _pair(tmp_path, "00007_1", "lake")]
    kept = R.one_pair_per_recording(pairs)
    assert [(p.label, p.id) for p in kept] == [("forest", "00007"), ("lake", "00007")]


def test_within_scene_retrieval_and_its_chance():
    labels = torch.tensor([0, 0, 0, 1, 1])
    sim = torch.tensor([[0.9, 0.1, 0.2, 0.95, 0.0],  # own image best within its scene (0.95 is another scene)
                        [0.5, 0.4, 0.1, 0.0, 0.0],  # beaten by row 0's image
                        [0.1, 0.1, 0.3, 0.0, 0.0],
                        [0.0, 0.0, 0.0, 0.2, 0.3],  # beaten
                        [0.0, 0.0, 0.0, 0.1, 0.6]])
    w = R.within_scene_retrieval(sim, labels)
    assert w["R@1"] == pytest.approx(3 / 5) and w["chance_R@1"] == pytest.approx((3 * (1 / 3) + 2 * 0.5) / 5)
    # pairwise: own image above each other image of the scene: row0 2/2, row1 1/2, row2 2/2, row3 0/1, row4 1/1
    assert w["pairwise"] == pytest.approx(6 / 8) and w["chance_pairwise"] == 0.5


def test_scene_accuracy_interval():
    acc, lo, hi = R.accuracy_interval(torch.tensor([1, 1, 0, 1]), torch.tensor([1, 1, 1, 1]))
    assert acc == 0.75 and 0.2 < lo < 0.75 < hi < 1.0  # Wilson 95%: about (0.30, 0.95)
    assert R.accuracy_interval(torch.ones(100), torch.ones(100))[1] > 0.95
