"""Training the pixel transformer: exact resume, atomic safetensors checkpoints, train-or-load, bits per dim."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from a2i_utils import io as a2i_io
from a2i_utils.config import get_config
from a2i_utils.transformer import training as tt
from a2i_utils.transformer.model import PixelTransformer
from a2i_utils.transformer.training import (
    CheckpointError,
    PixelDataset,
    Trainer,
    bits_per_dim,
    lr_factor,
    mean_abs_pixel_error,
    run_dir_for,
    train_or_load,
)

S, FB = 20, 12


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def tiny_cfg(tmp_path, **kw):
    """A demo config shrunk to a tiny model (8x8 images) with its cache in tmp_path."""
    t = dict(image_size=8, d_model=32, n_heads=2, n_enc_layers=1, n_dec_layers=1, d_ff=64, block_len=16,
             mem_len=8, dropout=0.1, batch_size=3, lr=3e-3, warmup_steps=4)
    t.update(kw)
    return get_config("demo", {"cache_dir": tmp_path, **{f"transformer.{k}": v for k, v in t.items()}})


def tiny_data(n: int = 7, seed: int = 0) -> PixelDataset:
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n, S, FB)).astype(np.float32)
    images = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
    return PixelDataset(feats, images, [f"{i:05d}" for i in range(n)])


def new_trainer(cfg, data, run_dir, every=3) -> Trainer:
    torch.manual_seed(cfg.seed)
    model = PixelTransformer(cfg.transformer, n_sections=S, n_bins=FB)
    return Trainer(model, data, cfg.transformer, run_dir, seed=cfg.seed, checkpoint_every=every)


def test_resumed_run_continues_with_the_same_losses_as_an_uninterrupted_run(tmp_path):
    cfg, data = tiny_cfg(tmp_path), tiny_data()
    straight = new_trainer(cfg, data, tmp_path / "straight")
    straight.run(8, progress=False)

    first = new_trainer(cfg, data, tmp_path / "resumed")
    first.run(5, progress=False)  # checkpoints at 3 and 5; the data order is mid-epoch (7 pairs, batch 3)
    torch.manual_seed(1234)  # the caller's random state must not matter
    torch.rand(10)
    second = new_trainer(cfg, data, tmp_path / "resumed")
    assert second.load() == 5
    second.run(8, progress=False)

    assert len(second.losses) == 8
    assert second.losses == straight.losses  # bit for bit, dropout included
    for name, w in straight.model.state_dict().items():
        assert torch.equal(w, second.model.state_dict()[name]), name


def test_resume_would_differ_without_the_saved_random_state(tmp_path):
    """Guard for the test above: with dropout, a different random state gives different losses."""
    cfg, data = tiny_cfg(tmp_path), tiny_data()
    a = new_trainer(cfg, data, tmp_path / "a")
    a.run(5, progress=False)
    b = new_trainer(cfg, data, tmp_path / "a")
    b.load()
    b.rng_state = torch.Generator().manual_seed(99).get_state()
    a.run(6, progress=False)
    b.run(6, progress=False)
    assert a.losses[:5] == b.losses[:5] and a.losses[5] != b.losses[5]


def test_checkpoint_files_are_safetensors_and_leave_no_temporaries(tmp_path):
    cfg, data = tiny_cfg(tmp_path), tiny_data()
    tr = new_trainer(cfg, data, tmp_path / "run")
    tr.run(7, progress=False)
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["latest.json", "losses.csv", "step_0000007.safetensors", "step_0000007.state.pt"]
    meta = json.loads((tmp_path / "run" / "latest.json").read_text())
    assert meta["step"] == 7 and meta["config"]["d_model"] == 32
    weights = load_file(tmp_path / "run" / meta["weights"])
    assert set(weights) == set(tr.model.state_dict())
    state = torch.load(tmp_path / "run" / meta["state"], weights_only=True)
    assert state["step"] == 7
    rows = (tmp_path / "run" / "losses.csv").read_text().splitlines()
    assert rows[0] == "step,loss" and len(rows) == 8


def test_unreadable_checkpoint_names_the_folder(tmp_path):
    cfg, data = tiny_cfg(tmp_path), tiny_data()
    tr = new_trainer(cfg, data, tmp_path / "run")
    tr.run(3, progress=False)
    (tmp_path / "run" / "step_0000003.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"cannot read the checkpoint in .*run"):
        new_trainer(cfg, data, tmp_path / "run").load()


def test_checkpoint_error_is_the_shared_one():
    assert CheckpointError is a2i_io.CheckpointError


@pytest.mark.parametrize("content", [b"", b"garbage, not a torch file"], ids=["empty", "garbage"])
def test_unreadable_state_file_names_the_file(tmp_path, content):
    cfg, data = tiny_cfg(tmp_path), tiny_data()
    new_trainer(cfg, data, tmp_path / "run").run(3, progress=False)
    (tmp_path / "run" / "step_0000003.state.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match=r"run.*step_0000003\.state\.pt"):
        new_trainer(cfg, data, tmp_path / "run").load()


@pytest.mark.parametrize("content", ["", "{not json", '{"weights": "x"}', '{"step": "many"}'],
                         ids=["empty", "garbage", "no-step", "bad-step"])
def test_corrupt_latest_json_names_the_file(tmp_path, content):
    cfg, data = tiny_cfg(tmp_path), tiny_data()
    new_trainer(cfg, data, tmp_path / "run").run(3, progress=False)
    (tmp_path / "run" / "latest.json").write_text(content)
    tr = new_trainer(cfg, data, tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"run.latest\.json"):
        tr.latest_step()
    with pytest.raises(CheckpointError, match=r"latest\.json"):
        tr.load()


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    cfg, data = tiny_cfg(tmp_path), tiny_data()
    new_trainer(cfg, data, tmp_path / "run").run(3, progress=False)
    other = cfg.replace({"transformer.n_dec_layers": 2})
    with pytest.raises(CheckpointError, match="does not fit this model"):
        new_trainer(other, data, tmp_path / "run").load()
    wider = cfg.replace({"transformer.d_ff": 48})  # same tensor names, other shapes
    with pytest.raises(CheckpointError, match=r"step_0000003\.safetensors does not fit this model"):
        new_trainer(wider, data, tmp_path / "run").load()


def test_train_or_load_trains_once_then_loads(tmp_path, capsys):
    cfg, data = tiny_cfg(tmp_path), tiny_data()
    model, hist = train_or_load(cfg, data, "tiny", steps=4, progress=False)
    assert "No checkpoint" in capsys.readouterr().out
    assert hist["step"] == 4 and hist["run_dir"] == run_dir_for(cfg, "tiny", data)
    again, hist2 = train_or_load(cfg, data, "tiny", steps=4, progress=False)
    out = capsys.readouterr().out
    assert "Found checkpoint" in out and ", loading" in out and "resuming" not in out and "Trained" not in out
    assert hist2["losses"] == hist["losses"]
    for name, w in model.state_dict().items():
        assert torch.equal(w, again.state_dict()[name])
    _, hist3 = train_or_load(cfg, data, "tiny", steps=6, progress=False)  # more steps: resumes from 4
    assert "resuming to step 6" in capsys.readouterr().out and hist3["losses"][:4] == hist["losses"]
    assert run_dir_for(cfg, "tiny", tiny_data(seed=1)) != hist["run_dir"]  # other data, other folder


def test_train_or_load_never_loads_a_longer_run_for_a_shorter_request(tmp_path, capsys):
    cfg, data = tiny_cfg(tmp_path / "a"), tiny_data()
    _, short = train_or_load(cfg, data, "tiny", steps=4, progress=False)  # the reference: 4 steps, fresh cache
    other = tiny_cfg(tmp_path / "b")
    train_or_load(other, data, "tiny", steps=7, progress=False)
    capsys.readouterr()
    model, hist = train_or_load(other, data, "tiny", steps=4, progress=False)  # the cache holds step 7
    out = capsys.readouterr().out
    assert "past the 4 asked" in out and ", loading" not in out and "resuming" not in out
    assert hist["step"] == 4 and hist["losses"] == short["losses"]
    ref = train_or_load(cfg, data, "tiny", steps=4, progress=False)[0]
    for name, w in ref.state_dict().items():
        assert torch.equal(w, model.state_dict()[name]), name
    assert json.loads((hist["run_dir"] / "latest.json").read_text())["step"] == 4


def test_run_key_includes_the_model_version(tmp_path, monkeypatch):
    cfg, data = tiny_cfg(tmp_path), tiny_data()
    before = run_dir_for(cfg, "tiny", data)
    assert run_dir_for(cfg, "tiny", data) == before  # stable
    monkeypatch.setattr(tt, "MODEL_VERSION", tt.MODEL_VERSION + 1)
    assert run_dir_for(cfg, "tiny", data) != before


def test_training_fits_a_tiny_set(tmp_path):
    cfg = tiny_cfg(tmp_path, dropout=0.0, batch_size=4, lr=1e-2)
    data = tiny_data(n=4)
    before = bits_per_dim(new_trainer(cfg, data, tmp_path / "x").model, data)
    tr = new_trainer(cfg, data, tmp_path / "fit", every=1000)
    tr.run(60, progress=False)
    after = bits_per_dim(tr.model, data)
    assert before > 7.5 and after < 0.5 * before  # random pixels are only learnable by memorising them


def test_bits_per_dim_of_a_uniform_predictor_is_8(tmp_path):
    cfg, data = tiny_cfg(tmp_path), tiny_data()
    model = PixelTransformer(cfg.transformer, n_sections=S, n_bins=FB)
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    assert math.isclose(bits_per_dim(model, data, batch_size=2), 8.0, rel_tol=1e-6)


def test_schedule_warms_up_then_decays():
    f = [lr_factor(s, 10) for s in range(40)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(f[:9], f[1:10])) and all(a > b for a, b in zip(f[10:], f[11:]))


def test_dataset_checks_and_pixel_error():
    with pytest.raises(ValueError, match="one row per image"):
        PixelDataset(np.zeros((3, S, FB), np.float32), np.zeros((2, 8, 8), np.uint8))
    a = np.zeros((2, 4, 4), np.uint8)
    assert mean_abs_pixel_error(a, a + 3) == 3.0
    with pytest.raises(ValueError, match="differ in shape"):
        mean_abs_pixel_error(a, a[:1])


# ----------------------------------------------------------------------------------------------------------
# Defects found in review (issue 8 §4): each test failed on the code before its fix
# ----------------------------------------------------------------------------------------------------------
def test_building_and_running_a_trainer_never_seeds_the_global_cuda_generators(tmp_path, monkeypatch):
    """``torch.manual_seed`` inside ``fork_rng(devices=[])`` reseeded every CUDA generator and never restored them."""
    calls = []
    for name in ("manual_seed", "manual_seed_all", "seed", "seed_all"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, _n=name, **k: calls.append(_n))
    cfg, data = tiny_cfg(tmp_path), tiny_data()
    torch.manual_seed(cfg.seed)  # the caller's own seeding (new_trainer does it too) is not what we look for
    calls.clear()
    model = PixelTransformer(cfg.transformer, n_sections=S, n_bins=FB)
    tr = Trainer(model, data, cfg.transformer, tmp_path / "run", seed=cfg.seed, checkpoint_every=2)
    tr.run(3, progress=False)
    assert calls == []


def test_trainer_leaves_the_callers_cpu_random_state_alone(tmp_path):
    cfg, data = tiny_cfg(tmp_path), tiny_data()
    torch.manual_seed(7)
    before = torch.get_rng_state()
    model = PixelTransformer(cfg.transformer, n_sections=S, n_bins=FB)
    after_model = torch.get_rng_state()  # building the model draws its initial weights: the caller's business
    tr = Trainer(model, data, cfg.transformer, tmp_path / "run", seed=cfg.seed)
    tr.run(3, progress=False)
    assert not torch.equal(before, after_model)
    assert torch.equal(torch.get_rng_state(), after_model)


def test_dropout_random_state_is_fixed_by_the_seed_not_by_the_caller(tmp_path):
    """Two trainers with the same seed train identically whatever the caller's random state was."""
    cfg, data = tiny_cfg(tmp_path), tiny_data()
    runs = []
    for caller_seed in (1, 2):
        torch.manual_seed(cfg.seed)
        model = PixelTransformer(cfg.transformer, n_sections=S, n_bins=FB)
        torch.manual_seed(caller_seed)
        tr = Trainer(model, data, cfg.transformer, tmp_path / f"run{caller_seed}", seed=cfg.seed)
        runs.append(tr.run(4, progress=False))
    assert runs[0] == runs[1]


def test_checkpoints_append_to_the_loss_log_instead_of_rewriting_it(tmp_path):
    cfg, data = tiny_cfg(tmp_path), tiny_data()
    tr = new_trainer(cfg, data, tmp_path / "run", every=3)
    tr.run(3, progress=False)
    log = tmp_path / "run" / "losses.csv"
    inode, first = log.stat().st_ino, log.read_text()
    tr.run(9, progress=False)  # two more checkpoints
    assert log.stat().st_ino == inode  # the same file, appended to (an atomic rewrite makes a new one)
    text = log.read_text()
    assert text.startswith(first) and len(text.splitlines()) == 1 + 9
    state = torch.load(tmp_path / "run" / "step_0000009.state.pt", weights_only=True)
    assert "losses" not in state  # the state no longer carries every past loss
    assert [float(r.split(",")[1]) for r in text.splitlines()[1:]] == tr.losses  # exact (repr) values


def test_resume_reads_the_losses_from_the_log_and_drops_rows_past_the_checkpoint(tmp_path):
    cfg, data = tiny_cfg(tmp_path), tiny_data()
    straight = new_trainer(cfg, data, tmp_path / "straight")
    straight.run(8, progress=False)
    first = new_trainer(cfg, data, tmp_path / "run", every=3)
    first.run(6, progress=False)
    log = tmp_path / "run" / "losses.csv"
    with open(log, "a") as f:  # a run killed after appending but before its checkpoint was complete
        f.write("7,123.0\n")
    second = new_trainer(cfg, data, tmp_path / "run", every=3)
    assert second.load() == 6 and second.losses == straight.losses[:6]
    second.run(8, progress=False)
    assert second.losses == straight.losses
    rows = log.read_text().splitlines()
    assert len(rows) == 1 + 8 and [float(r.split(",")[1]) for r in rows[1:]] == straight.losses


def test_a_fresh_run_in_a_used_folder_starts_a_new_loss_log(tmp_path):
    cfg, data = tiny_cfg(tmp_path), tiny_data()
    new_trainer(cfg, data, tmp_path / "run").run(7, progress=False)
    fresh = new_trainer(cfg, data, tmp_path / "run")  # not loaded: trains from scratch over the old run
    fresh.run(4, progress=False)
    assert len((tmp_path / "run" / "losses.csv").read_text().splitlines()) == 1 + 4


def test_the_feature_normalizer_is_saved_with_the_run_and_loaded_with_the_model(tmp_path):
    from a2i_utils.transformer.features import FeatureNormalizer

    cfg = tiny_cfg(tmp_path)
    rng = np.random.default_rng(3)
    raw = torch.from_numpy(rng.normal(5.0, 2.0, (7, S, FB)).astype(np.float32))  # un-normalised features
    norm = FeatureNormalizer().fit(raw)
    images = rng.integers(0, 256, (7, 8, 8), dtype=np.uint8)
    data = PixelDataset(norm(raw), images, [f"{i:05d}" for i in range(7)], normalizer=norm)
    model, hist = train_or_load(cfg, data, "tiny", steps=3, progress=False)
    assert (hist["run_dir"] / "normalizer.safetensors").is_file()
    device = next(model.parameters()).device
    loaded, loaded_norm = tt.load_run(hist["run_dir"], device=str(device))
    assert torch.equal(loaded_norm.mean, norm.mean) and torch.equal(loaded_norm.std, norm.std)
    model.eval()
    x, px = raw[:2].to(device), data.pixels[:2].to(device)
    with torch.no_grad():  # raw features of a "new recording" -> the loaded normaliser -> the loaded model
        assert torch.equal(loaded(loaded_norm(x), px), model(norm(x), px))
    assert hist["normalizer"] is not None and torch.equal(hist["normalizer"].mean, norm.mean)


def test_load_run_without_a_normalizer_says_so(tmp_path):
    cfg, data = tiny_cfg(tmp_path), tiny_data()  # features given already normalised, no normaliser attached
    _, hist = train_or_load(cfg, data, "tiny", steps=3, progress=False)
    with pytest.raises(CheckpointError, match=r"normalizer\.safetensors"):
        tt.load_run(hist["run_dir"])
    model, norm = tt.load_run(hist["run_dir"], need_normalizer=False)
    assert norm is None and isinstance(model, PixelTransformer)


def test_schedule_offers_the_papers_proportional_decay_and_refuses_unknown_ones(tmp_path):
    inverse = [lr_factor(s, 10, "inverse") for s in range(40)]
    assert inverse[9] == pytest.approx(1.0) and inverse[19] == pytest.approx(0.5) and inverse[39] == pytest.approx(0.25)
    assert lr_factor(39, 10) == pytest.approx(0.5)  # the default stays the inverse square root
    with pytest.raises(ValueError, match="lr_decay"):
        lr_factor(5, 10, "cosine")
    cfg, data = tiny_cfg(tmp_path, lr_decay="inverse", warmup_steps=2), tiny_data()
    tr = new_trainer(cfg, data, tmp_path / "run")
    tr.run(4, progress=False)
    assert tr.sched.get_last_lr()[0] == pytest.approx(cfg.transformer.lr * 2 / 5)


def test_heldout_evaluations_are_logged_and_survive_a_resume(tmp_path):
    cfg, data, val = tiny_cfg(tmp_path), tiny_data(), tiny_data(n=4, seed=5)
    _, straight = train_or_load(cfg, data, "tiny", steps=8, progress=False, checkpoint_every=3, val_set=val,
                                eval_every=2)
    assert [s for s, _ in straight["evals"]] == [2, 4, 6, 8]
    assert all(0 < v < 9 for _, v in straight["evals"])
    other = tiny_cfg(tmp_path / "b")
    train_or_load(other, data, "tiny", steps=5, progress=False, checkpoint_every=3, val_set=val, eval_every=2)
    _, resumed = train_or_load(other, data, "tiny", steps=8, progress=False, checkpoint_every=3, val_set=val,
                               eval_every=2)
    assert resumed["evals"] == straight["evals"] and resumed["losses"] == straight["losses"]
    _, loaded = train_or_load(other, data, "tiny", steps=8, progress=False)  # loading needs no val_set
    assert loaded["evals"] == straight["evals"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
def test_on_a_gpu_the_callers_cuda_state_is_untouched_and_resume_is_exact(tmp_path):
    """The CUDA side of the reseeding defect: a Trainer neither reseeds nor advances the caller's CUDA generator."""
    cfg = tiny_cfg(tmp_path, dropout=0.2).replace(device="cuda")
    data = tiny_data()

    def trainer(run_dir):
        torch.default_generator.manual_seed(cfg.seed)  # the CPU generator only (torch.manual_seed seeds CUDA too)
        model = PixelTransformer(cfg.transformer, n_sections=S, n_bins=FB).cuda()
        return Trainer(model, data, cfg.transformer, run_dir, seed=cfg.seed, checkpoint_every=3)

    torch.cuda.manual_seed_all(1234)
    torch.rand(3, device="cuda")  # the caller's CUDA generator somewhere in its stream
    before = torch.cuda.get_rng_state()
    straight = trainer(tmp_path / "straight")
    assert torch.equal(torch.cuda.get_rng_state(), before)  # building reseeds nothing
    straight.run(8, progress=False)
    assert torch.equal(torch.cuda.get_rng_state(), before)  # dropout on the GPU used the trainer's own state
    first = trainer(tmp_path / "resumed")
    first.run(5, progress=False)
    torch.cuda.manual_seed_all(99)  # another caller state must not matter
    second = trainer(tmp_path / "resumed")
    assert second.load() == 5
    second.run(8, progress=False)
    assert second.losses == straight.losses
