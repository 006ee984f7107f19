"""The foundation: presets, overrides, cache root, device choice, the ImageBind import and the CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from a2i_utils import cli, config
from a2i_utils.config import Config, get_config

ROOT = Path(__file__).resolve().parent.parent


def test_presets_demo_is_default_and_full_is_paper_size(monkeypatch):
    monkeypatch.delenv(config.MODE_ENV, raising=False)
    demo = get_config()
    assert demo.mode == "demo" and demo.seed == 42
    assert demo.data.source == "synthetic" and demo.imagebind.model == "mini"
    full = get_config("full")
    assert full.data.source == "advance" and full.imagebind.model == "huge"
    t = full.transformer
    assert (t.d_model, t.n_heads, t.n_enc_layers, t.n_dec_layers) == (512, 8, 6, 6)
    assert (full.features.n_sections, full.features.n_bins) == (500, 220)
    assert t.image_size == 32


def test_mode_from_environment(monkeypatch):
    monkeypatch.setenv(config.MODE_ENV, "full")
    assert get_config().mode == "full"


def test_unknown_preset_lists_valid_ones(monkeypatch):
    monkeypatch.setenv(config.MODE_ENV, "huge")
    with pytest.raises(ValueError, match=r"unknown preset 'huge'.*valid presets: demo, full, full-smoke"):
        get_config()


def test_dotted_overrides_and_unknown_keys():
    cfg = get_config("demo", {"transformer.steps": 7, "seed": 1})
    assert cfg.transformer.steps == 7 and cfg.seed == 1
    assert get_config("demo").transformer.steps != 7  # presets are not mutated
    assert cfg.replace({"data.per_class": 3}).data.per_class == 3
    with pytest.raises(KeyError, match="transformer.nope"):
        get_config("demo", {"transformer.nope": 1})
    with pytest.raises(KeyError, match="nosection.x"):
        get_config("demo", {"nosection.x": 1})


def test_cache_root_from_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "c"))
    cfg = get_config("demo")
    assert cfg.cache_dir == (tmp_path / "c").resolve()
    assert cfg.checkpoints_dir == cfg.cache_dir / "checkpoints"
    monkeypatch.delenv(config.CACHE_ENV)
    default = config.default_cache_dir()
    assert default.name == "a2i" and "notebooks" not in default.parts


def test_summary_is_path_free():
    cfg = get_config("demo")
    text = cfg.summary()
    assert "mode=demo seed=42" in text and str(cfg.cache_dir) not in text
    assert not re.search(r"(^|[\s=])/", text), "no absolute path in the summary (model ids like org/name are fine)"


def test_device_choice(monkeypatch):
    monkeypatch.delenv(config.DEVICE_ENV, raising=False)
    assert config.resolve_device("cpu") == "cpu"
    monkeypatch.setenv(config.DEVICE_ENV, "cpu")
    assert config.resolve_device("auto") == "cpu"
    monkeypatch.delenv(config.DEVICE_ENV)
    import torch

    for cuda, mps, want in [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda v=cuda: v)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda v=mps: v)
        assert config.resolve_device("auto") == want, (cuda, mps)
        assert Config().resolved_device() == want


def test_importing_package_does_not_import_imagebind():
    code = "import sys, a2i_utils, a2i_utils.cli; print('imagebind' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_imagebind_imports_with_current_torch():
    from a2i_utils.compat import import_imagebind, import_imagebind_data

    model_mod = import_imagebind()
    assert hasattr(model_mod, "imagebind_huge") and hasattr(model_mod, "ModalityType")
    assert hasattr(import_imagebind_data(), "load_and_transform_audio_data")


def test_cli_help_and_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert re.fullmatch(r"a2i \d+\.\d+\.\d+\n", capsys.readouterr().out)
    assert cli.main([]) == 0
    assert "usage: a2i" in capsys.readouterr().out


def test_console_script_installed():
    exe = Path(sys.executable).with_name("a2i")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert "usage: a2i" in out.stdout and "config" in out.stdout


def test_cli_config_shows_preset(capsys):
    assert cli.main(["config", "--mode", "demo"]) == 0
    assert "mode=demo" in capsys.readouterr().out


def _pins(name):
    lines = (ROOT / name).read_text().splitlines()
    return {ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()}


def test_colab_requirements_are_requirements_without_torch():
    """Colab's two files are requirements.txt less torch, torchvision and torchaudio, split in two: what pip may
    resolve, and imagebind-unofficial, installed with --no-deps (it declares torchaudio, which would replace torch)."""
    full, colab = _pins("requirements.txt"), _pins("requirements-colab.txt")
    nodeps = _pins("requirements-colab-nodeps.txt")
    torch_pins = {p for p in full if re.match(r"(torch|torchvision|torchaudio)==", p)}
    assert len(torch_pins) == 3
    assert nodeps == {"imagebind-unofficial==0.1.1"}
    assert colab | nodeps == full - torch_pins and not colab & nodeps


def test_every_install_cell_installs_imagebind_without_its_declared_torchaudio():
    """The notebooks' first cell (Colab): requirements-colab.txt, then the --no-deps file and the package."""
    for path in sorted((ROOT / "notebooks").glob("*.py")):
        text = path.read_text()
        if "requirements-colab.txt" not in text:
            continue
        assert '"-r", "a2i/requirements-colab.txt"' in text, path.name
        nodeps = re.search(r'"--no-deps",\s*"-r", "a2i/requirements-colab-nodeps.txt", "-e", "a2i"\]', text)
        assert nodeps, f"{path.name}: the install cell does not install requirements-colab-nodeps.txt with --no-deps"


def test_requirements_are_exact_pins_within_constraints():
    constraints = {}
    for ln in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in ln:
            name, version = ln.split("==")
            constraints[name.lower().replace("_", "-")] = version.strip()
    for ln in (ROOT / "requirements.txt").read_text().splitlines():
        spec = ln.split("#")[0].strip()
        if not spec or spec.startswith("setuptools"):
            continue
        name, _, version = spec.partition("==")
        assert version, f"requirements.txt: {spec!r} is not an exact pin"
        assert constraints.get(name.lower().replace("_", "-")) == version, f"{name} differs in constraints.txt"


def test_stored_notebooks_match_sources():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run_notebooks.py"), "check"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout


def test_cli_bad_input_is_one_line_not_a_traceback(monkeypatch, capsys):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert cli.main(["config", "--mode", "bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("a2i: error: unknown preset 'bogus'") and "Traceback" not in err
    assert err.count("\n") == 1


def test_cli_debug_env_shows_the_traceback(monkeypatch):
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(ValueError, match="unknown preset"):
        cli.main(["config", "--mode", "bogus"])


def test_cli_bugs_are_not_hidden(monkeypatch):
    def broken(args):
        raise ZeroDivisionError("a bug")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser.set_defaults(func=broken)
    with pytest.raises(ZeroDivisionError):
        cli.main([])


def test_data_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(config.DATA_ROOT_ENV, str(tmp_path))
    assert get_config("demo").data.root == str(tmp_path)
    assert get_config("demo", {"data.root": "/elsewhere"}).data.root == "/elsewhere"  # an explicit override wins
    monkeypatch.delenv(config.DATA_ROOT_ENV)
    assert get_config("demo").data.root == ""



def test_cli_output_into_a_closed_pipe_is_no_error_message():
    """`a2i doctor --json | head -c 50`: when the reader has gone, a2i stops without an `a2i: error:` line."""
    child = subprocess.Popen([sys.executable, "-m", "a2i_utils.cli", "config"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child.stdout.close()  # the reader leaves before a2i writes anything (its imports take seconds)
    err = child.stderr.read()
    assert child.wait(timeout=120) == 1
    assert "error" not in err and "Traceback" not in err and "Exception ignored" not in err, err
