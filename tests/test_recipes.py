"""Every recipe runs its quick config; every config's keys are the recipe's fields; the shared parser's rules.

Convention: a recipe ``recipes/NAME.py`` ships ``recipes/configs/PREFIX_quick.yaml``, where PREFIX is NAME or a
``_``-prefix of it (``skd_report`` for ``skd_report_generation.py``): seconds on one CPU core, no downloads. This file
runs it as ``python recipes/NAME.py --config … --output_dir …`` would (in-process, ``__main__``). Until a recipe has
one, its ``PREFIX_synthetic.yaml`` or ``PREFIX_cpu.yaml`` is run instead, marked slow.
"""

import ast
import importlib
import json
import os
import runpy
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
CONFIGS = RECIPES / "configs"
sys.path.insert(0, str(RECIPES))

from reportkd.recipes import RecipeParser, apply_env, env_block  # noqa: E402


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.py") if not p.stem.startswith("_"))


def prefixes(name: str) -> list[str]:
    parts = name.split("_")
    return ["_".join(parts[:i]) for i in range(len(parts), 0, -1)]


def config_for(name: str) -> tuple[Path | None, bool]:
    """The recipe's quick config (and True), else a synthetic / CPU fallback (and False)."""
    for suffix in ("quick", "synthetic", "cpu"):
        for prefix in prefixes(name):
            path = CONFIGS / f"{prefix}_{suffix}.yaml"
            if path.is_file():
                return path, suffix == "quick"
    return None, False


def recipe_of(config: Path) -> str | None:
    """The recipe a config belongs to: the one with the longest name prefix that starts the config's name."""
    scored = [(len(p), n) for n in recipe_names() for p in prefixes(n) if config.stem.startswith(p + "_")]
    return max(scored)[1] if scored else None


def run_params():
    params = []
    for name in recipe_names():
        config, quick = config_for(name)
        marks = [] if quick else [pytest.mark.slow]
        params.append(pytest.param(name, config, id=name, marks=marks))
    return params


@pytest.fixture
def clean_process(monkeypatch):
    """A recipe run changes the environment (env: block), threads and sys.argv; restore them."""
    environ, threads = dict(os.environ), torch.get_num_threads()
    torch.set_num_threads(1)  # as OMP_NUM_THREADS: 1 in the quick configs (torch is already initialised here)
    yield
    os.environ.clear()
    os.environ.update(environ)
    torch.set_num_threads(threads)


def test_every_recipe_has_a_config_and_copy_paste_commands():
    names = recipe_names()
    assert {"mtcnn_distill", "skd_report_generation", "clip_distill"} <= set(names)
    for name in names:
        config, _ = config_for(name)
        assert config is not None, f"recipes/{name}.py has no recipes/configs/<prefix>_quick.yaml"
        doc = ast.get_docstring(ast.parse((RECIPES / f"{name}.py").read_text()))
        assert f"python recipes/{name}.py --config recipes/configs/" in doc, name
        assert "accelerate launch" in doc, f"recipes/{name}.py: give the multi-GPU command in the docstring"
    for name in ("mtcnn_distill", "skd_report_generation", "clip_distill"):  # the ones written in this style
        source = (RECIPES / f"{name}.py").read_text()
        assert "apply_env(sys.argv[1:])" in source and "def make_parser()" in source and "--push_to_hub" in source
        if "lora_r" in source:
            assert "--lora_r" in ast.get_docstring(ast.parse(source)), f"{name}: show the LoRA command"


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_only_uses_its_recipes_fields(config):
    name = recipe_of(config)
    assert name is not None, f"{config.name} matches no recipe: name configs <recipe or its prefix>_<variant>.yaml"
    module = importlib.import_module(name)  # recipes/ is on sys.path
    if not hasattr(module, "make_parser"):
        pytest.skip(f"recipes/{name}.py has no make_parser()")
    module.make_parser().load_config(config)  # raises on an unknown key or a bad env: block


@pytest.mark.parametrize("name,config", run_params())
def test_recipe_runs_its_quick_config(name, config, tmp_path, monkeypatch, clean_process, capsys):
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", [str(RECIPES / f"{name}.py"), "--config", str(config), "--output_dir", str(out)])
    runpy.run_path(str(RECIPES / f"{name}.py"), run_name="__main__")
    assert out.is_dir() and any(out.iterdir()), f"{name} wrote nothing to --output_dir"
    env = env_block(__import__("yaml").safe_load(config.read_text()) or {})
    assert all(os.environ.get(k) == v for k, v in env.items())  # the env: block was applied
    # every model folder the recipe saved is a known kind with a complete card (what `reportkd push` uploads)
    from reportkd.hub import plan_upload

    plans = []
    for folder in sorted({p.parent for p in out.rglob("*.safetensors")}):
        try:
            plans.append(plan_upload(folder, "org/model"))
        except ValueError:  # soft labels, features and other non-model safetensors
            continue
    if name in ("mtcnn_distill", "skd_report_generation", "clip_distill"):
        kinds = {p.kind for p in plans}
        assert kinds == {"mtcnn_distill": {"mtcnn"}, "skd_report_generation": {"causal_lm"},
                         "clip_distill": {"open_clip"}}[name]  # fmt: skip
        for plan in plans:
            if (plan.folder / "distillation.json").exists():
                assert plan.card.data.tags[0] == "reportkd" and "## Training data" in plan.card.text


# -- the shared parser -----------------------------------------------------------------------------------------
def test_env_block_is_validated_and_applied_first(tmp_path, monkeypatch):
    from reportkd.trainer import DistillationConfig

    monkeypatch.setenv("REPORTKD_TEST_B", "shell")
    config = tmp_path / "c.yaml"
    config.write_text("env:\n  REPORTKD_TEST_A: 1\n  REPORTKD_TEST_B: yaml\n  REPORTKD_TEST_C: false\n"
                      "output_dir: x\nalpha: 0.3\n")  # fmt: skip
    (args,) = RecipeParser((DistillationConfig,)).parse_args_and_config(["--config", str(config), "--alpha", "0.7"])
    assert args.alpha == 0.7 and args.output_dir == "x"  # flags override YAML
    assert (os.environ["REPORTKD_TEST_A"], os.environ["REPORTKD_TEST_B"], os.environ["REPORTKD_TEST_C"]) == (
        "1", "yaml", "false")  # as in TRL, the config's env wins over the shell's  # fmt: skip
    for var in ("REPORTKD_TEST_A", "REPORTKD_TEST_C"):
        monkeypatch.delenv(var)
    for bad, match in (("env: [A]", "must be a mapping"), ("env:\n  1A: x", "name"), ("env:\n  A: [1]", "string")):
        config.write_text(bad + "\noutput_dir: x\n")
        with pytest.raises(ValueError, match=match):
            apply_env(["--config", str(config)])
        with pytest.raises(ValueError, match=match):
            RecipeParser((DistillationConfig,)).parse_args_and_config(["--config", str(config)])
    assert apply_env(["--alpha", "1"]) == {}


def test_task_weights_parse_from_flags_and_yaml(tmp_path):
    from reportkd.trainer import DistillationConfig

    parser = RecipeParser((DistillationConfig,))
    (args,) = parser.parse_args_and_config(["--output_dir", "x", "--task_weights", json.dumps({"organ": 2})])
    assert args.task_weights == {"organ": 2.0}
    config = tmp_path / "c.yaml"
    config.write_text("output_dir: x\ntask_weights: {organ: 1, grade: 0.5}\n")
    (args,) = RecipeParser((DistillationConfig,)).parse_args_and_config(["--config", str(config)])
    assert args.task_weights == {"organ": 1.0, "grade": 0.5} and args.hub_private_repo is True
    for bad, match in (("{organ: 2", "JSON object"), ('{"organ": -1}', ">= 0"), ('{"organ": 0}', "above 0")):
        with pytest.raises(ValueError, match=match):
            DistillationConfig(output_dir="x", task_weights=bad)
