"""The ``reportkd`` command line itself: argv handling, help text, ``-v``, and errors as one line with exit 2 / 1.

Everything runs in-process through ``main([...])``; commands that need a model build a tiny one here.
"""

import json
import sys
import types

import pytest

from reportkd import cli
from reportkd.cli import main, make_parser
from reportkd.errors import RuntimeFailure, UsageError, describe_error


def error_lines(err: str, command: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"reportkd {command}: error:")]


def assert_one_line_error(err: str, command: str) -> str:
    """stderr ends with exactly one ``reportkd <command>: error: …`` line; returns it."""
    lines = error_lines(err, command)
    assert len(lines) == 1, err
    assert err.rstrip("\n").splitlines()[-1] == lines[0], err
    return lines[0]


@pytest.fixture
def fake_command(monkeypatch):
    """Registers ``reportkd boom`` whose ``run`` calls the function the test sets (``fake_command.action``)."""
    module = types.ModuleType("reportkd_test_boom")
    module.add_arguments = lambda p: p.add_argument("--flag", type=int, default=3, help="A flag.")
    module.action = lambda args: 0
    module.run = lambda args: module.action(args)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.COMMANDS, "boom", (module.__name__, "A test command at 100% of its budget."))
    return module


# -- argv, help, -v -------------------------------------------------------------------------------------------


def test_main_leaves_sys_argv_alone_and_parses_its_own_argv(monkeypatch, capsys, fake_command):
    monkeypatch.setattr(sys, "argv", ["reportkd", "demo", "--members", "2"])
    seen = {}
    fake_command.action = lambda args: seen.update(vars(args)) or 0
    assert main(["boom", "--flag", "7"]) == 0
    assert sys.argv == ["reportkd", "demo", "--members", "2"]
    assert seen["flag"] == 7 and seen["command"] == "boom"
    assert main(["extract", "--list-encoders"]) == 0  # the chosen command's arguments come from argv, not sys.argv
    assert "random-tiny-cnn" in capsys.readouterr().out


def test_top_level_help_prints_help_texts_verbatim(capsys, fake_command):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "abstention at 97% accuracy." in out and "at 100% of its budget." in out
    assert "option_strings" not in out and "{" not in out  # no argparse dict inside the demo's line
    assert main([]) == 0 and "COMMAND" in capsys.readouterr().out


def test_command_help_shows_defaults_once(capsys):
    assert main(["demo", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Epochs for every model (same budget). (default: 8)" in out and "(default 8; or --teacher-archs)" in out
    assert "(default: None)" not in out and "(default: False)" not in out
    assert "Default: a generated synthetic corpus." in out and "corpus. (default" not in out  # said once


@pytest.mark.parametrize(
    "argv", [["-v", "boom"], ["boom", "-v"], ["boom", "--flag", "1", "--verbose"]], ids=["before", "after", "long"]
)
def test_verbose_before_or_after_the_command(argv, fake_command):
    args = make_parser(argv).parse_args(argv)
    assert args.verbose is True and args.command == "boom"
    assert make_parser(["boom"]).parse_args(["boom"]).verbose is False


def test_verbose_prints_the_traceback_then_the_line(capsys, fake_command):
    def fail(args):
        raise OSError("disk on fire")

    fake_command.action = fail
    assert main(["boom"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert assert_one_line_error(err, "boom") == "reportkd boom: error: disk on fire (run with -v for the traceback)"
    assert main(["boom", "-v"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and 'raise OSError("disk on fire")' in err
    assert_one_line_error(err, "boom")


# -- exit codes -----------------------------------------------------------------------------------------------


def test_bad_flag_values_are_one_line_usage_errors(capsys, fake_command):
    assert main(["boom", "--flag", "x"]) == 2
    line = assert_one_line_error(capsys.readouterr().err, "boom")
    assert "argument --flag: invalid int value: 'x'" in line and "See `reportkd boom --help`." in line
    assert main(["demo", "--alpha", "half"]) == 2
    assert "invalid float value: 'half'" in assert_one_line_error(capsys.readouterr().err, "demo")
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("reportkd: error: argument COMMAND: invalid choice")


@pytest.mark.parametrize(
    "exc, code",
    [
        (ValueError("--alpha must be in [0, 1], got 2. Pass a value in [0, 1]"), 2),
        (UsageError("--out equals --data. Choose another --out"), 2),
        (FileNotFoundError("Reports file x.jsonl does not exist."), 2),
        (KeyError("no task 'organ' in the thresholds"), 2),
        (RuntimeFailure("training diverged"), 1),
        (RuntimeError("CUDA out of memory"), 1),
        (PermissionError(13, "Permission denied", "/ro/out"), 1),
        (json.JSONDecodeError("Expecting value", "{", 1), 1),
        (ConnectionError("no route to host"), 1),
        (TypeError("unsupported operand"), 1),
        (KeyboardInterrupt(), 130),
    ],
    ids=lambda x: type(x).__name__ if isinstance(x, BaseException) else str(x),
)
def test_exceptions_map_to_one_line_and_their_exit_code(exc, code, capsys, fake_command):
    def fail(args):
        raise exc

    fake_command.action = fail
    assert main(["boom"]) == code
    err = capsys.readouterr().err
    if code == 130:
        assert err == "reportkd boom: interrupted\n"
        return
    line = assert_one_line_error(err, "boom")
    assert err.count("\n") == 1  # nothing else on stderr
    assert "'" not in line.split("error: ", 1)[1][:1]  # KeyError messages are not quoted
    if isinstance(exc, TypeError):
        assert "unexpected TypeError: unsupported operand (run with -v for the traceback)" in line
    if isinstance(exc, PermissionError):
        assert "Permission denied: /ro/out. Check the permissions" in line


def test_system_exit_inside_a_command_is_its_exit_code(fake_command, capsys):
    fake_command.action = lambda args: sys.exit(3)  # e.g. a recipe's own parser
    assert main(["boom"]) == 3
    fake_command.action = lambda args: sys.exit("recipe: bad config")
    assert main(["boom"]) == 1 and capsys.readouterr().err == "recipe: bad config\n"


def test_describe_error_recognises_library_errors():
    from huggingface_hub.errors import HFValidationError
    from safetensors import SafetensorError

    code, message = describe_error(SafetensorError("Error while deserializing header: incomplete metadata"))
    assert code == 1 and "truncated or not safetensors" in message
    assert describe_error(HFValidationError("Repo id must be in the form 'namespace/repo_name'"))[0] == 2
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as e:
            raise RuntimeError("upload failed") from e
    except RuntimeError as wrapped:
        code, message = describe_error(wrapped)
    assert code == 1 and message.startswith("network error") and "--local-hub" in message
    assert describe_error(ValueError("line one\n  line two"))[1] == "line one line two"


# -- commands -------------------------------------------------------------------------------------------------


def test_evaluate_features_on_a_truncated_file_names_it(tmp_path, capsys):
    from reportkd.vlm.slide.synthetic import write_synthetic_slides

    root = write_synthetic_slides(tmp_path, 10, seed=0)
    broken = sorted((root / "fine").glob("*.safetensors"))[3]
    broken.write_bytes(broken.read_bytes()[:100])
    argv = ["evaluate", "features", "--features", str(root / "fine"), "--labels", str(root / "labels.csv")]
    assert main([*argv, "--probes", "linear", "--bootstrap", "10"]) == 1
    line = assert_one_line_error(capsys.readouterr().err, "evaluate")
    assert f"cannot read features file {broken}" in line and "truncated or corrupt" in line
    assert "rerun `reportkd extract`" in line
    assert (
        main(["evaluate", "features", "--features", str(tmp_path / "nope"), "--labels", str(tmp_path / "x.csv")]) == 2
    )
    assert_one_line_error(capsys.readouterr().err, "evaluate")


def test_push_without_network_is_one_line(tmp_path, capsys):
    """A hub that cannot be reached (nothing listens on port 9) gives one line and exit code 1."""
    from reportkd.text.mtcnn import MtCNNConfig, MtCNNForReportClassification, train_word_tokenizer
    from reportkd.text.mtcnn.pipeline import save_classifier

    tok = train_word_tokenizer(["left kidney clear cell carcinoma", "lung adenocarcinoma"], min_count=1, max_length=16)
    labels = {"organ": ["kidney", "lung", "other"]}
    config = MtCNNConfig(vocab_size=len(tok), embedding_dim=8, num_filters=4, kernel_sizes=[2], max_length=16,
                         pad_token_id=tok.pad_token_id, task_labels=labels)  # fmt: skip
    save_classifier(MtCNNForReportClassification(config).eval(), tok, tmp_path / "model", None)
    capsys.readouterr()
    argv = ["push", str(tmp_path / "model"), "--repo-id", "org/x", "--endpoint", "http://127.0.0.1:9"]
    assert main([*argv, "--token", "hf_not_a_token"]) == 1
    line = assert_one_line_error(capsys.readouterr().err, "push")
    assert line.startswith("reportkd push: error: network error") and "--local-hub" in line


def test_demo_teacher_flags():
    """``reportkd demo``: 8 MtCNNs by default (issue 13's benchmark: the mixed teacher's student is no better) and a
    student trained 2 x --epochs; ``--teacher-archs`` for groups; ``--members`` with it is a usage error."""
    from reportkd.commands.demo import DEFAULT_MEMBERS, job_arguments

    def job(*flags):
        return job_arguments(make_parser(["demo", *flags]).parse_args(["demo", *flags]))

    default = job()
    assert default.teacher_archs is None and default.members == DEFAULT_MEMBERS == 8
    assert default.student_epochs == 16  # a patient student: 2 x the baseline's --epochs 8
    assert job("--epochs", "3").student_epochs == 6
    assert job("--student-epochs", "8").student_epochs == 8 and job("--members", "2").members == 2
    mixed = job("--teacher-archs", "mtcnn:2,hisan:2")
    assert mixed.teacher_archs == "mtcnn:2,hisan:2" and mixed.members == 4
    with pytest.raises(ValueError, match="members"):  # 0 is refused, not read as "the default"
        job("--members", "0")
    with pytest.raises(ValueError, match="not both"):
        job("--members", "2", "--teacher-archs", "mtcnn:2")
    assert main(["demo", "--members", "2", "--teacher-archs", "mtcnn:2"]) == 2
