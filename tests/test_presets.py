"""imfcodec.presets: one table of named efforts and one set of encoder option builders, shared by the token
search, the base layer and the benchmark anchors; and the package has no import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from imfcodec import presets, settings
from imfcodec.errors import InputError
from imfcodec.presets import (DEFAULT_PRESET, EFFORTS, PRESETS, effort_preset, svtav1_options, vp9_options,
                              x264_options, x265_options)

PACKAGE = Path(__file__).resolve().parents[1] / "imfcodec"


def test_one_table_reexported_under_the_old_names():
    assert settings.PRESETS is PRESETS and settings.Preset is presets.Preset
    assert settings.DEFAULT_PRESET == DEFAULT_PRESET == "medium" and DEFAULT_PRESET in PRESETS
    assert EFFORTS == tuple(PRESETS) == ("ultrafast", "fast", "medium", "slow", "veryslow")
    assert settings.DEFAULT_SEARCH_ITERS == PRESETS["medium"].search_iters == 4
    assert presets.VP9_EFFORT["ultrafast"] == ("realtime", 8) and presets.SVTAV1_EFFORT["veryslow"] == 4


def test_efforts_are_ordered_fastest_first():
    """Every encoder works harder (or as hard) from each name to the next."""
    table = list(PRESETS.values())
    for a, b in zip(table, table[1:]):
        assert a.search_iters < b.search_iters
        assert a.svtav1 > b.svtav1
        assert (a.vp9[0], b.vp9[0]) != ("good", "realtime")
        assert a.vp9[0] != b.vp9[0] or a.vp9[1] > b.vp9[1]


def test_help_texts_come_from_the_table_and_carry_no_measurements():
    """cli.py reads describe() and base; measured figures live in benchmarks/results, not in code."""
    for p in PRESETS.values():
        assert p.describe() == p.what and p.fps is None
        assert p.base == f"VP9 {p.vp9[0]} cpu-used {p.vp9[1]}"
        assert not any(unit in p.describe() + p.base for unit in ("frames/s", "%", " dB", "x,"))
    assert PRESETS["ultrafast"].base == "VP9 realtime cpu-used 8"


def test_unknown_effort_is_refused_by_every_builder():
    with pytest.raises(InputError, match="effort must be one of ultrafast, fast, medium, slow, veryslow"):
        effort_preset("placebo")
    with pytest.raises(InputError):
        effort_preset(None)
    for build in (x265_options, vp9_options, svtav1_options):
        with pytest.raises(InputError, match="placebo"):
            build(30, 1, "placebo")
        with pytest.raises(InputError, match="placebo"):
            build(30, 1, "placebo", 250)
    with pytest.raises(InputError):
        x264_options(30, 1, "placebo", 250)
    with pytest.raises(ValueError, match="anchor"):
        x264_options(30, 1, "medium")  # the base layer has no H.264 codec


#: what the published anchors were coded with (medium, CRF 40, a key frame every 250 frames, 2 threads)
ANCHOR_MEDIUM = {
    "x264": [("preset", "medium"), ("crf", "40"), ("threads", "2"),
             ("x264-params", "bframes=0:keyint=250:min-keyint=250:scenecut=0")],
    "x265": [("preset", "medium"), ("crf", "40"),
             ("x265-params", "bframes=0:keyint=250:min-keyint=250:scenecut=0:open-gop=0:info=0:log-level=error:"
                             "pools=2:frame-threads=2")],
    "svtav1": [("preset", "8"), ("crf", "40"), ("svtav1-params", "pred-struct=1:keyint=250:scd=0:lp=2")],
    "vp9": [("crf", "40"), ("b", "0"), ("deadline", "good"), ("cpu-used", "2"), ("lag-in-frames", "0"),
            ("auto-alt-ref", "0"), ("row-mt", "1"), ("threads", "2"), ("keyint_min", "250")],
}


def test_anchors_use_the_same_builders_as_the_base_layer():
    """benchmarks.anchors' options are the builders' anchor form (gop=N) at every effort, and the base layer's
    their stream form (gop=None): one set of builders, two uses."""
    from benchmarks.anchors import ANCHORS
    from imfcodec.baselayer import get_base_codec

    builders = {"x264": x264_options, "x265": x265_options, "svtav1": svtav1_options, "vp9": vp9_options}
    for name, spec in ANCHORS.items():
        assert list(spec.options(40, 250, 2).items()) == ANCHOR_MEDIUM[name]
        for effort in EFFORTS:
            assert spec.options(40, 250, 2, effort) == builders[name](40, 2, effort, 250)
    for base, anchor, top in (("hevc", "x265", 51), ("av1", "svtav1", 63), ("vp9", "vp9", 63)):
        for effort in EFFORTS:
            assert get_base_codec(base).options(10, 2, effort) == builders[anchor](top - 10, 2, effort)
            # the stream form differs from the anchor form only in how key frames are placed
            assert get_base_codec(base).options(10, 2, effort)["crf"] == ANCHORS[anchor].options(
                top - 10, 250, 2, effort)["crf"]


def test_settings_presets_and_limits_import_without_torch_numpy_or_pyav():
    """The CLI shows the presets in --help without loading a codec."""
    code = ("import sys, imfcodec.settings, imfcodec.presets, imfcodec.limits; "
            "print(sorted({'torch', 'numpy', 'av'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent).stdout
    assert out.strip() == "[]"


def _import_graph() -> dict[str, set[str]]:
    """imfcodec's modules -> the imfcodec modules they import anywhere in the file (lazy imports too);
    a submodule's import of its own parent package is left out (that is how a package is loaded)."""
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {}
    for mod, f in mods.items():
        package = mod.split(".") if f.name == "__init__.py" else mod.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else node.module
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                if name and name != mod and not mod.startswith(name + "."):
                    targets.add(name)
        graph[mod] = targets
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (depth-first search), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path)):
                return found
        path.pop()
        state[node] = 2
        return None

    for mod in sorted(graph):
        if mod not in state and (found := visit(mod, [])):
            return found
    return None


def test_no_import_cycle_in_the_package():
    """Issue 21: settings <-> baselayer was the one cycle (PRESETS one way, get_base_codec the other)."""
    graph = _import_graph()
    assert "imfcodec.presets" in graph["imfcodec.baselayer"]
    assert "imfcodec.settings" not in graph["imfcodec.baselayer"]
    found = _find_cycle(graph)
    assert found is None, "import cycle: " + " -> ".join(found)
    assert _find_cycle({**graph, "imfcodec.presets": {"imfcodec.baselayer"}})  # the search does find one
