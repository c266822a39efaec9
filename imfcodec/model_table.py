"""What ``imfcodec models`` prints, without importing torch when nothing changed.

Counting parameters and GFLOPs means building every registered model (``imf-paper`` has 120 M
parameters) and tracing a decode: about 10 s with torch's import. The numbers depend only on the code, so
they are measured once and shipped in ``model_table.json`` together with a key: the SHA-256 of the
sources they come from (``models/``, ``keyframe/`` and ``zoo.py``, which names the default model). When
the key still matches, the table is printed as it is (a fraction of a second); when any of those files
changed, the numbers are measured again, so the command is never wrong, only slow until the table is
refreshed:

```
python -m imfcodec.model_table        # rewrite imfcodec/model_table.json
```

(``tests/test_unix.py`` fails while the shipped table is stale.) Which weights ship is looked up on
disk each time.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TABLE = HERE / "model_table.json"
_SOURCES = ("models/*.py", "keyframe/*.py", "zoo.py")


def source_key() -> str:
    """SHA-256 of the files the table's numbers come from (names and bytes, in a fixed order)."""
    h = hashlib.sha256()
    for pattern in _SOURCES:
        for path in sorted(HERE.glob(pattern)):
            h.update(path.relative_to(HERE).as_posix().encode() + b"\0")
            h.update(path.read_bytes())
    return h.hexdigest()


def measure() -> dict:
    """Build every registered config and count (imports torch; seconds)."""
    from .keyframe import list_keyframe_codecs
    from .models import count_parameters, create_model, decode_gflops, list_models
    from .zoo import DEFAULT_MODEL

    rows = []
    for name in list_models():
        m = create_model(name)
        rows.append({"name": name, "resolution": m.config.resolution, "token_dim": getattr(m.config, "token_dim", 0),
                     "params": count_parameters(m), "decode_gflops": decode_gflops(m)})
    return {"key": source_key(), "models": rows, "default": DEFAULT_MODEL, "key_codecs": list_keyframe_codecs()}


def shipped(name: str) -> bool:
    """Whether this build ships weights for ``name`` (``zoo.shipped_weights_path``, without torch)."""
    return (HERE / "weights" / f"{name}.safetensors").is_file()


def load() -> dict:
    """The table: the shipped one when its key matches the sources, else measured now."""
    try:
        table = json.loads(TABLE.read_text())
        if table.get("key") == source_key():
            return table
    except (OSError, ValueError):
        pass
    return measure()


def rows() -> tuple[list[dict], list[str]]:
    """(one dict per config: name, resolution, token_dim, params, decode_gflops, weights, default;
    the key-frame codecs): what ``imfcodec models --json`` prints."""
    table = load()
    out = []
    for r in table["models"]:
        out.append({**r, "weights": "shipped" if shipped(r["name"]) else "none",
                    "default": r["name"] == table["default"]})
    return out, list(table["key_codecs"])


def write() -> Path:
    """Measure and rewrite ``model_table.json``."""
    from .fsutil import AtomicOutput

    with AtomicOutput(TABLE) as tmp:
        tmp.write_text(json.dumps(measure(), indent=1) + "\n")
    return TABLE


if __name__ == "__main__":
    print(write())
    sys.exit(0)
