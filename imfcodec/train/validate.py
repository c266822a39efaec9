"""Validation during training: quality of the reconstruction on the held-out clips, next to the
repeat-the-reference baseline, and a PNG grid to look at.

Metrics come from uint8-rounded frames, as a decoder's output would be, so they compare with the
benchmarks' numbers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch

from imfcodec.train.data import ValSet, resize_batch

#: (references, currents, reconstructions) of one validation clip, [k,3,H,W] each
GridRow = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@torch.no_grad()
def validate_model(model: torch.nn.Module, valset: ValSet, resolution: int, qstep: float,
                   device: torch.device,
                   autocast: Callable[[], AbstractContextManager]) -> tuple[dict[str, float], list[GridRow]]:
    """PSNR/SSIM/MS-SSIM of the reconstruction (float tokens, and tokens quantized at ``qstep``
    token_scale units) and of the repeat-reference baseline, on ``valset``, from uint8-rounded
    frames. Returns (metrics, rows of the PNG grid)."""
    from imfcodec import metrics

    was = model.training
    model.eval()
    res = resolution
    step_q = (model.token_scale.float() * qstep).unsqueeze(0)
    u8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # noqa: E731
    acc: dict[str, list[np.ndarray]] = defaultdict(list)
    grid_rows = []
    for ci, (ref, cur) in enumerate(zip(valset.refs, valset.curs)):
        x_ref = resize_batch(ref.to(device), res)
        x_cur = resize_batch(cur.to(device), res)
        with autocast():
            t_ref = model.encode_token(x_ref).float()
            t_cur = model.encode_token(x_cur).float()
            x_hat = model.decode_frame(model.prepare_reference(x_ref, t_ref), t_cur).float()
            tq_ref = torch.round(t_ref / step_q) * step_q
            tq_cur = torch.round(t_cur / step_q) * step_q
            x_hat_q = model.decode_frame(model.prepare_reference(x_ref, tq_ref), tq_cur).float()
        gt = u8(x_cur)
        base = np.repeat(u8(x_ref), len(gt), 0)
        for key, pred in (("", u8(x_hat)), ("_q", u8(x_hat_q)), ("base_", base)):
            pre, suf = (key, "") if key == "base_" else ("", key)
            acc[f"{pre}psnr{suf}"].append(metrics.psnr(gt, pred, reduction="none"))
            acc[f"{pre}ssim{suf}"].append(metrics.ssim(gt, pred, reduction="none"))
            acc[f"{pre}ms_ssim{suf}"].append(metrics.ms_ssim(gt, pred, reduction="none"))
        if ci < 4:
            k = min(4, len(x_cur))
            grid_rows.append((x_ref.expand(k, -1, -1, -1), x_cur[:k], x_hat_q[:k]))
    model.train(was)
    out = {k: float(np.concatenate(v).mean()) for k, v in acc.items()}
    out["frames"] = int(sum(len(c) for c in valset.curs))
    out["resolution"] = res
    return out, grid_rows


def write_grid(rows: list[GridRow], path: Path) -> None:
    """One PNG: per clip a block of reference / current / reconstruction rows."""
    from torchvision.utils import save_image

    if not rows:
        return
    imgs = []
    for ref, cur, rec in rows:  # each row block: reference / current / reconstruction
        imgs += [ref.cpu(), cur.cpu(), rec.cpu()]
    k = max(len(r) for r in imgs)
    imgs = [torch.cat([r, r.new_ones(k - len(r), *r.shape[1:])]) if len(r) < k else r for r in imgs]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat(imgs), str(path), nrow=k, padding=2)
