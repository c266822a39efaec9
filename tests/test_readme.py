"""The README's examples, run as a reader would run them, so CI catches a README that lies.

Fenced blocks tagged ``sh`` hold one ``imfcodec`` command per line (``#`` comments allowed): each block
runs in order in a fresh folder, in this process (click's runner). Blocks tagged ``python`` run with
``exec`` in a folder holding a demo clip named ``talk.mp4``. ``console`` blocks (installs, ffmpeg pipes,
training) are not run; the set-up commands among them are checked against what CI runs (``.ci/run``).
To keep the suite fast, ``imfcodec sample`` makes 8 frames at 96x96 whatever the README asks for.
Every ``-o`` output of an example must be a fresh path, so the examples never depend on an existing
file being replaced.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from helpers import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
SAMPLE = ["--frames", "8", "--size", "96"]  # what `imfcodec sample` makes here: a short, small clip
MAX_LINES, MAX_WIDTH = 250, 100  # issue 25: a README a newcomer reads to the end


def blocks(text: str, tag: str) -> list[str]:
    """The bodies of the fenced code blocks whose info string is exactly ``tag``."""
    return [m.group(2) for m in re.finditer(r"^```(\S*)[^\n]*\n(.*?)^```", text, re.M | re.S)
            if m.group(1) == tag]


def commands(block: str) -> list[list[str]]:
    """The argument lists of a ``sh`` block, one per non-empty line, comments dropped."""
    out = []
    for line in block.splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            assert argv[0] == "imfcodec", f"a README sh line that is not one imfcodec command: {line!r}"
            out.append(argv[1:])
    return out


def small(argv: list[str]) -> list[str]:
    """``sample`` with the test's short clip in place of the README's length and size."""
    if argv[0] != "sample":
        return argv
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--frames", "--size"):
            skip = True
        else:
            kept.append(a)
    return kept + SAMPLE


def output_of(argv: list[str]) -> str | None:
    for i, a in enumerate(argv[:-1]):
        if a in ("-o", "--output"):
            return argv[i + 1]
    return None


README_TEXT = README.read_text()
SH_BLOCKS = blocks(README_TEXT, "sh")
PY_BLOCKS = blocks(README_TEXT, "python")


def test_readme_has_examples_to_run():
    assert len(SH_BLOCKS) >= 2 and len(PY_BLOCKS) >= 1
    assert any("encode_video" in b for b in PY_BLOCKS)


def test_readme_shape():
    lines = README_TEXT.splitlines()
    assert len(lines) < MAX_LINES
    wide = [(i, len(line)) for i, line in enumerate(lines, 1) if len(line) > MAX_WIDTH]
    assert not wide, f"README lines over {MAX_WIDTH} characters (line, length): {wide}"


def test_setup_commands_are_what_ci_runs():
    """The README's test command is the one CI runs, and it installs the torch CI installs."""
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    test_command = ci[ci.index("# README test command:") + 1].strip()
    console = "\n".join(blocks(README_TEXT, "console")).splitlines()
    assert test_command in [line.strip() for line in console]
    pins = re.compile(r"torch==\S+ torchvision==\S+")
    ci_pins = {m.group(0) for line in ci for m in pins.finditer(line)}
    readme_pins = {m.group(0) for m in pins.finditer("\n".join(console))}
    assert len(ci_pins) == 1 and readme_pins == ci_pins


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_and_paths_exist(doc):
    """Every relative link, and every repository path in backticks, names something that exists."""
    text = doc.read_text()
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t and not t.startswith("#")]
    missing = [t for t in targets if not (doc.parent / t.split("#")[0]).exists()]
    roots = ("imfcodec/", "benchmarks/", "bitstreams/", "tests/", "docs/", "CONTRIBUTING.md")
    paths = [p for p in re.findall(r"`([^`\s]+)`", text) if p.startswith(roots) and "*" not in p]
    missing += [p for p in paths if not (ROOT / p.split("#")[0]).exists()]
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("n", range(len(SH_BLOCKS)))
def test_readme_shell_examples(n, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv in map(small, commands(SH_BLOCKS[n])):
        out = output_of(argv)
        if out is not None and out != "-":
            assert not Path(out).exists(), f"imfcodec {shlex.join(argv)}: the output is not a fresh path"
        r = cli(*argv)
        assert r.exit_code == 0, (argv, r.output)
        if out is not None and out != "-":
            assert Path(out).exists(), argv


@pytest.mark.slow
@pytest.mark.parametrize("n", range(len(PY_BLOCKS)))
def test_readme_python_example(n, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("sample", "talk.mp4", *SAMPLE).exit_code == 0
    before = set(tmp_path.iterdir())
    exec(compile(PY_BLOCKS[n], f"README.md python block {n}", "exec"), {"__name__": "readme_example"})
    assert set(tmp_path.iterdir()) > before  # it wrote something
