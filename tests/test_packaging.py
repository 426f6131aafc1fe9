import subprocess
import sys
from pathlib import Path


def test_only_reportkd_is_installed_no_top_level_text_or_vlm(tmp_path):
    code = (
        "import importlib.util as u, reportkd, reportkd.text, reportkd.vlm;"
        "print(u.find_spec('text') is None, u.find_spec('vlm') is None, reportkd.text.__name__, reportkd.vlm.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "reportkd.text", "reportkd.vlm"]


def test_cli_lists_commands(capsys):
    from reportkd.cli import main

    assert main([]) == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "calibrate", "predict", "evaluate-abstention", "evaluate"):
        assert cmd in out


def test_license_file_matches_the_declared_license():
    root = Path(__file__).resolve().parents[1]
    assert '\nlicense = "Apache-2.0"\n' in (root / "pyproject.toml").read_text()
    text = (root / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
