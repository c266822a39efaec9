"""The run's CSV logs: ``log.csv`` (training, every ``log_every`` steps) and ``val.csv``
(validation), appended as the run goes and cut back to the checkpoint's step on resume, so a
resumed run's logs read like an uninterrupted one's."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

LOG_COLUMNS = ["step", "resolution", "loss", "l1", "perceptual", "ms_ssim", "gan_g", "feat_match",
               "rate_bits", "d_loss", "d_real", "d_fake", "grad_norm", "lr", "sec_per_step",
               "images_per_s", "hours"]
VAL_COLUMNS = ["step", "resolution", "psnr", "ssim", "ms_ssim", "psnr_q", "ssim_q", "ms_ssim_q",
               "base_psnr", "base_ssim", "base_ms_ssim", "frames"]


def append_csv(path: Path, columns: list[str], row: dict[str, Any]) -> None:
    """Append ``row`` (floats to 6 significant digits), writing the header if the file is new."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def truncate_logs(out: Path, step: int) -> None:
    """On resume drop log rows past the checkpoint's step (written after the last save)."""
    for name in ("log.csv", "val.csv"):
        path = out / name
        if not path.exists():
            continue
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            continue
        keep = [rows[0]] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
        if len(keep) != len(rows):
            with open(path, "w", newline="") as f:
                csv.writer(f).writerows(keep)
