"""Every recipe runs its quick config; every config's keys are the recipe's fields; the shared parser's rules;
``reportkd train``; resuming a recipe ends with the weights of an uninterrupted run.

Convention: a recipe ``recipes/NAME.py`` ships ``recipes/configs/PREFIX_quick.yaml``, where PREFIX is NAME or a
``_``-prefix of it (``skd_report`` for ``skd_report_generation.py``): seconds on one CPU core, no downloads. This file
runs it as ``python recipes/NAME.py --config … --output_dir …`` would (in-process, ``__main__``). Until a recipe has
one, its ``PREFIX_synthetic.yaml`` or ``PREFIX_cpu.yaml`` is run instead, marked slow.
"""

import ast
import importlib
import json
import logging
import os
import runpy
import shutil
import sys
from dataclasses import dataclass, field, fields
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reportkd.recipes import (
    RecipeParser,
    apply_env,
    env_block,
    last_checkpoint,
    load_recipe,
    recipe_entry_points,
    resolve_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
CONFIGS = RECIPES / "configs"


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


def parser_of(name: str) -> RecipeParser:
    """The registered recipe's parser: ``make_<x>_parser`` next to ``<x>_main``, else ``make_parser``."""
    func = load_recipe(name)
    module = sys.modules[func.__module__]
    stem = func.__name__.removesuffix("_main")
    return getattr(module, f"make_{stem}_parser", None) or module.make_parser


def run_params():
    params = []
    for name in recipe_names():
        config, quick = config_for(name)
        marks = [] if quick else [pytest.mark.slow]
        params.append(pytest.param(name, config, id=name, marks=marks))
    return params


@pytest.fixture
def clean_process():
    """A recipe run changes the environment (env: block) and threads; restore them."""
    environ = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(environ)
    torch.set_num_threads(1)


def test_every_recipe_is_a_thin_registered_script_with_copy_paste_commands():
    names = recipe_names()
    assert {"mtcnn_distill", "skd_report_generation", "clip_distill", "slide_align", "slide_distill"} <= set(names)
    assert set(names) <= set(recipe_entry_points()), "register every recipe in pyproject's reportkd.recipes table"
    for name in names:
        config, _ = config_for(name)
        assert config is not None, f"recipes/{name}.py has no recipes/configs/<prefix>_quick.yaml"
        tree = ast.parse((RECIPES / f"{name}.py").read_text())
        doc = ast.get_docstring(tree)
        assert f"python recipes/{name}.py --config recipes/configs/" in doc, name
        assert "accelerate launch" in doc, f"recipes/{name}.py: give the multi-GPU command in the docstring"
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}  # fmt: skip
        assert all(m.split(".")[0] in ("reportkd", "sys") for m in imported), f"{name}: imports {imported}"
        assert not any(isinstance(n, ast.Attribute) and n.attr == "path" for n in ast.walk(tree)), name
    for name in names:  # every recipe pushes, resumes and protects an earlier run's output_dir
        parser = parser_of(name)()
        assert {"push_to_hub", "resume_from_checkpoint", "overwrite_output_dir"} <= parser.field_names(), name
        if "lora_r" in parser.field_names():
            assert "--lora_r" in ast.get_docstring(ast.parse((RECIPES / f"{name}.py").read_text())), name


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_only_uses_its_recipes_fields(config):
    name = recipe_of(config)
    assert name is not None, f"{config.name} matches no recipe: name configs <recipe or its prefix>_<variant>.yaml"
    parser_of(name)().load_config(config)  # raises on an unknown key or a bad env: block


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
        if folder.name.startswith("checkpoint-"):
            continue
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
@dataclass
class _Args:
    output_dir: str = field(default="out", metadata={"help": "Output folder."})
    alpha: float = field(default=0.5, metadata={"help": "A float."})
    weights: dict[str, float] | str | None = field(default=None, metadata={"help": "A mapping (JSON on flags)."})

    def __post_init__(self) -> None:
        if isinstance(self.weights, str):
            self.weights = json.loads(self.weights)


def test_env_block_is_validated_and_applied_first(tmp_path, monkeypatch):
    monkeypatch.setenv("REPORTKD_TEST_B", "shell")
    config = tmp_path / "c.yaml"
    config.write_text("env:\n  REPORTKD_TEST_A: 1\n  REPORTKD_TEST_B: yaml\n  REPORTKD_TEST_C: false\n"
                      "output_dir: x\nalpha: 0.3\n")  # fmt: skip
    (args,) = RecipeParser((_Args,)).parse_args_and_config(["--config", str(config), "--alpha", "0.7"])
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
            RecipeParser((_Args,)).parse_args_and_config(["--config", str(config)])
    assert apply_env(["--alpha", "1"]) == {}


def test_unknown_keys_are_refused_with_the_accepted_list_and_mappings_parse(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("output_dir: x\nalpah: 1\n")
    with pytest.raises(ValueError, match=r"unknown keys \['alpah'\].*alpha, output_dir, weights"):
        RecipeParser((_Args,)).parse_args_and_config(["--config", str(config)])
    (args,) = RecipeParser((_Args,)).parse_args_and_config(["--weights", json.dumps({"organ": 2})])
    assert args.weights == {"organ": 2}
    config.write_text("output_dir: x\nweights: {organ: 1, grade: 0.5}\n")
    (args,) = RecipeParser((_Args,)).parse_args_and_config(["--config", str(config)])
    assert args.weights == {"organ": 1, "grade": 0.5}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RecipeParser((_Args,)).parse_args_and_config(["--config", str(tmp_path / "missing.yaml")])


def test_task_weights_parse_from_flags_and_yaml(tmp_path):
    from reportkd.trainer import DistillationConfig

    config_cls = DistillationConfig
    try:  # the multitask (MtCNN) config carries task_weights once they leave the shared base
        from reportkd.text.mtcnn.trainer import MultitaskTrainingConfig as config_cls  # noqa: N813
    except ImportError:
        pass
    if "task_weights" not in {f.name for f in fields(config_cls)}:
        config_cls = DistillationConfig
    parser = RecipeParser((config_cls,))
    (args,) = parser.parse_args_and_config(["--output_dir", "x", "--task_weights", json.dumps({"organ": 2})])
    assert args.task_weights == {"organ": 2.0}
    config = tmp_path / "c.yaml"
    config.write_text("output_dir: x\ntask_weights: {organ: 1, grade: 0.5}\n")
    (args,) = RecipeParser((config_cls,)).parse_args_and_config(["--config", str(config)])
    assert args.task_weights == {"organ": 1.0, "grade": 0.5} and args.hub_private_repo is True
    for bad, match in (("{organ: 2", "JSON object"), ('{"organ": -1}', ">= 0"), ('{"organ": 0}', "above 0")):
        with pytest.raises(ValueError, match=match):
            config_cls(output_dir="x", task_weights=bad)


# -- reportkd train --------------------------------------------------------------------------------------------
def test_train_lists_recipes_and_warns_about_one_that_fails_to_import(monkeypatch, capsys, caplog):
    from reportkd.cli import main as cli
    from reportkd.recipes import registry

    real = list(registry.entry_points(group=registry.GROUP))
    broken = EntryPoint("broken_recipe", "reportkd.no_such_module:main", registry.GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [*real, broken] if group == registry.GROUP else [])
    with caplog.at_level(logging.WARNING, logger="reportkd.recipes.registry"):
        assert cli(["train", "--list"]) == 0
    listed = capsys.readouterr().out
    for name in ("clip_distill", "skd_report_generation", "slide_align", "slide_distill"):
        assert f"  {name} " in listed, listed
    assert "broken_recipe" not in listed
    assert any("broken_recipe" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert cli(["train", "no_such_recipe", "--config", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert "Unknown recipe 'no_such_recipe'" in err and "clip_distill" in err and len(err.strip().splitlines()) == 1


# -- output folders and resuming -------------------------------------------------------------------------------
def test_resume_values_resolve_and_bad_ones_fail_in_one_line(tmp_path):
    assert resolve_checkpoint(None, tmp_path) is None and resolve_checkpoint("false", tmp_path) is None
    with pytest.raises(FileNotFoundError, match="no checkpoint-N folder"):
        resolve_checkpoint("last", tmp_path)
    for step in (5, 40, 100):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-999.tmp").mkdir()
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-100"  # by step number, not by name
    assert (
        resolve_checkpoint("last", tmp_path) == resolve_checkpoint(True, tmp_path) == str(tmp_path / "checkpoint-100")
    )
    assert resolve_checkpoint(str(tmp_path / "checkpoint-5"), "elsewhere") == str(tmp_path / "checkpoint-5")
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        resolve_checkpoint(str(tmp_path / "checkpoint-6"), tmp_path)


class _StepCounter:
    """Counts ``Trainer.training_step`` calls (every trainer of a recipe run, teachers included)."""

    def __init__(self, monkeypatch):
        from transformers import Trainer

        self.calls, real = 0, Trainer.training_step

        def counted(trainer, *args, **kwargs):
            self.calls += 1
            return real(trainer, *args, **kwargs)

        monkeypatch.setattr(Trainer, "training_step", counted)


def _run(name: str, argv: list[str]) -> None:
    env = dict(os.environ)
    try:
        load_recipe(name)(argv)
    finally:
        os.environ.clear()
        os.environ.update(env)
        torch.set_num_threads(1)


# recipe, flags making it tiny, the student's weights file, where its checkpoints go, what a resumed run reuses
RESUME_CASES = [
    pytest.param(
        "clip_distill",
        ["--eval_data", "", "--teacher_train_steps", "2"],
        "student/open_clip_model.safetensors",
        ".",
        ["teacher"],
        id="clip_distill",
    ),  # fmt: skip
    pytest.param(
        "slide_align",
        ["--eval_features", "", "--features", "synthetic:n=32,seed=0"],
        "model/model.safetensors",
        ".",
        [],
        id="slide_align",
    ),  # fmt: skip
    pytest.param(
        "slide_distill",
        ["--eval_features", "", "--features", "synthetic:n=32,seed=0", "--teacher_train_steps", "2"],
        "student/model.safetensors",
        ".",
        ["teacher"],
        id="slide_distill",
    ),  # fmt: skip
    pytest.param(
        "skd_report_generation",
        ["--max_eval_samples", "1", "--mode", "sft", "--data_path", "synthetic:n=40,seed=0"],
        "sft/model.safetensors",
        "sft",
        ["tokenizer", "teacher", "student_init"],
        id="skd_report_generation",
    ),  # fmt: skip
]


@pytest.mark.parametrize("name,tiny,weights,checkpoints,reused", RESUME_CASES)
def test_resumed_run_ends_with_the_uninterrupted_weights(name, tiny, weights, checkpoints, reused, tmp_path,
                                                         monkeypatch, capsys):  # fmt: skip
    config, _ = config_for(name)
    common = ["--config", str(config), *tiny, "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    _run(name, [*common, "--output_dir", str(full)])
    assert (full / checkpoints / "checkpoint-2").is_dir() and (full / weights).is_file()

    # an interrupted run: what the first one had on disk after step 2
    for folder in reused:
        shutil.copytree(full / folder, resumed / folder)
    shutil.copytree(full / checkpoints / "checkpoint-2", resumed / checkpoints / "checkpoint-2")
    steps = _StepCounter(monkeypatch)
    _run(name, [*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "last"])
    assert steps.calls == 2, "the resumed run trains only the 2 steps left (teacher and warm start reused)"
    a, b = load_file(str(full / weights)), load_file(str(resumed / weights))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)

    # a finished run's folder is refused without --overwrite_output_dir; a missing checkpoint fails before training
    steps.calls = 0
    with pytest.raises(ValueError, match="not empty.*--overwrite_output_dir"):
        _run(name, [*common, "--output_dir", str(full)])
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        _run(name, [*common, "--output_dir", str(tmp_path / "new"), "--resume_from_checkpoint", str(full / "nope")])
    assert steps.calls == 0 and not (tmp_path / "new").exists()


def test_scripts_and_train_command_give_one_line_errors(tmp_path, monkeypatch, capsys, clean_process):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("an earlier run")
    config = str(CONFIGS / "slide_align_quick.yaml")
    monkeypatch.setattr(
        sys, "argv", ["recipes/slide_align.py", "--config", config, "--output_dir", str(tmp_path / "out")]
    )
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(RECIPES / "slide_align.py"), run_name="__main__")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not empty" in err
    from reportkd.cli import main as cli

    argv = ["train", "slide_align", "--config", config, "--output_dir", str(tmp_path / "o2"),
            "--resume_from_checkpoint", str(tmp_path / "missing")]  # fmt: skip
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such checkpoint folder" in err
    assert (tmp_path / "out" / "old.txt").read_text() == "an earlier run" and not (tmp_path / "o2").exists()


def test_python_m_reportkd_recipes_lists_them():
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "reportkd.recipes", "--list"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "slide_distill" in proc.stdout and "skd_report_generation" in proc.stdout


def test_recipe_modules_import_no_recipe_script():
    for name in ("skd_report_generation", "clip_distill", "slide_align", "slide_distill"):
        module = importlib.import_module(load_recipe(name).__module__)
        assert "recipes" not in Path(module.__file__).parts[-2:-1], module.__file__
    assert not any(n in sys.modules for n in ("_parser", "_env", "slide_align", "clip_distill"))


def test_mtcnn_recipe_resumes_stage_by_stage_with_the_uninterrupted_weights(tmp_path, monkeypatch, capsys):
    """Killed inside the student's training (after its checkpoint-2): `last` and a checkpoint path both resume."""
    from transformers import Trainer

    config, _ = config_for("mtcnn_distill")
    common = ["--config", str(config), "--data", "synthetic:n=200,seed=0", "--train_dac", "false", "--max_steps", "4",
              "--save_strategy", "steps", "--save_steps", "2"]  # fmt: skip
    full = tmp_path / "full"
    _run("mtcnn_distill", [*common, "--output_dir", str(full)])
    real_save = Trainer._save_checkpoint

    def killed_after_step_2(trainer, *args, **kwargs):
        real_save(trainer, *args, **kwargs)
        if trainer.args.output_dir.endswith("student") and trainer.state.global_step == 2:
            raise KeyboardInterrupt("killed")

    for how in ("last", "path"):
        out = tmp_path / how
        monkeypatch.setattr(Trainer, "_save_checkpoint", killed_after_step_2)
        with pytest.raises(KeyboardInterrupt):
            _run("mtcnn_distill", [*common, "--output_dir", str(out)])
        monkeypatch.setattr(Trainer, "_save_checkpoint", real_save)
        with pytest.raises(ValueError, match="not empty.*--overwrite_output_dir"):
            _run("mtcnn_distill", [*common, "--output_dir", str(out)])
        steps = _StepCounter(monkeypatch)
        resume = "last" if how == "last" else str(out / "work" / "student" / "checkpoint-2")
        _run("mtcnn_distill", [*common, "--output_dir", str(out), "--resume_from_checkpoint", resume])
        assert steps.calls == 2, "only the student's last 2 steps are trained (ensemble and baseline reused)"
        for folder in ("student", "baseline", "ensemble"):
            a, b = (load_file(str(d / folder / "model.safetensors")) for d in (full, out))
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder
        assert json.loads((out / "results.json").read_text())["models"] == json.loads(
            (full / "results.json").read_text())["models"]  # fmt: skip
    with pytest.raises(FileNotFoundError, match="not found"):
        _run("mtcnn_distill", [*common, "--output_dir", str(full), "--resume_from_checkpoint", str(full / "nope")])
