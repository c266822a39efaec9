"""The training loop both networks run (the token model's ``trainer.Trainer`` and the enhancer's
``hybrid.EnhancerTrainer``): steps, log / validation / checkpoint / export cadence, the time limit,
a clean stop on SIGINT/SIGTERM, and data parallelism over ``torchrun`` ranks.

A network subclasses :class:`Run` and supplies what differs: its model and optimizer, its data
(``prepare_data`` and ``batches``), one step (``train_step``: its loss, its lr from
``optim.lr_at``), its validation metric (``validate``), its checkpoint contents (``state_dict``)
and its export. Everything else (when to validate, when to save, how ranks agree to stop, how the
training time of a resumed run adds up) is written once, here.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imfcodec.devices import resolve_device
from imfcodec.errors import InputError
from imfcodec.train.checkpoint import atomic_torch_save
from imfcodec.train.distributed import Dist, params_digest

log = logging.getLogger("imfcodec.train")


def step_seed(*parts: int) -> int:
    """A 63-bit seed from integers (e.g. seed, rank, step, purpose)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def _on_ci() -> bool:
    return any(os.environ.get(k) for k in ("CI", "GITHUB_ACTIONS", "BUILDKITE", "GITLAB_CI"))


class Run:
    """One training run of a network. The config (``train.config.RunConfig``) gives the loop's fields:
    ``steps, batch_size, out, device, tf32, threads, max_minutes, log_every, val_every, ckpt_every,
    export_every, progress``. ``run()`` trains to ``steps``."""

    #: the progress bar's label
    name = "train"

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg = cfg.validate()
        self.d = Dist()
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        note = log.info if self.d.main else None
        self.device = torch.device(resolve_device(cfg.device, note, local_rank=self.d.local_rank, tf32=cfg.tf32))
        self.d.init(self.device)
        if cfg.batch_size % self.d.world:
            raise InputError(f"batch_size {cfg.batch_size} is not divisible by {self.d.world} ranks")
        self.local_batch = cfg.batch_size // self.d.world
        self.out = Path(cfg.out)
        self.step = 0
        self.elapsed_s = 0.0  # training time over all sessions
        self.t0 = time.perf_counter()  # max_minutes counts from here
        self._stop_reason: str | None = None

    # ------------------------------------------------------------------ what a network supplies
    def prepare_data(self) -> None:
        """Load (or code) the training and validation data; on every rank."""

    def start(self) -> None:
        """Before the first step of this session, on rank 0 (config file, logs, a first validation)."""

    def batches(self) -> Iterator[tuple[torch.Tensor, ...]]:
        """This rank's batches from the current step on (the network's sampler)."""
        raise NotImplementedError

    def train_step(self, *batch: torch.Tensor) -> dict[str, float]:
        """One optimisation step on a local batch; advances ``step``; returns scalar logs."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """The network's validation metrics (on rank 0)."""
        return {}

    def log_train(self, row: dict[str, float], last: dict[str, float]) -> None:
        """Report the means of the last ``log_every`` steps (``last``: the latest step's logs)."""

    def log_val(self, v: dict[str, float]) -> None:
        """Report a validation."""

    def finish(self) -> dict[str, float] | None:
        """After the last step, before the final checkpoint (rank 0); a final validation, if any."""
        return None

    def export(self) -> dict[str, Any] | None:
        """Write the weights file (rank 0): {"path", "weights_hash", "step"}, or None."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's contents (``checkpoint.CHECKPOINT_FORMAT``, step, elapsed_s, ...)."""
        raise NotImplementedError

    def replicas(self) -> list[torch.nn.Module | None]:
        """The modules every rank holds a copy of (their digest shows that the copies agree)."""
        return []

    # ------------------------------------------------------------------ the loop
    def save_checkpoint(self, path: Path | None = None) -> Path | None:
        """Write the checkpoint (rank 0 only), atomically; ``OUT/last.pt`` unless ``path``."""
        if not self.d.main:
            return None
        path = path or self.out / "last.pt"
        atomic_torch_save(self.state_dict(), path)
        return path

    def request_stop(self, reason: str) -> None:
        self._stop_reason = reason

    def run(self) -> dict[str, Any]:
        """Train to ``cfg.steps`` (or the time limit, or a signal); then checkpoint and export."""
        cfg = self.cfg
        self.prepare_data()
        main = self.d.main
        if main:
            self.start()
        start_step = self.step
        deadline = self.t0 + cfg.max_minutes * 60 if cfg.max_minutes else None
        batches = self.batches()
        show = cfg.progress if cfg.progress is not None else (sys.stderr.isatty() and not _on_ci())
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (show and main), dynamic_ncols=True,
                   desc=self.name)
        handlers = self._install_signals()
        window: dict[str, list[float]] = defaultdict(list)
        last_val: dict[str, float] = {}
        last_export: dict[str, Any] | None = None
        t_last = time.perf_counter()
        try:
            while self.step < cfg.steps:
                t_iter = time.perf_counter()
                logs = self.train_step(*next(batches))
                dt = time.perf_counter() - t_iter  # data + step; validation/checkpoints excluded
                self.elapsed_s += time.perf_counter() - t_last  # wall time, everything included
                t_last = time.perf_counter()
                for k, v in logs.items():
                    window[k].append(float(v))
                window["sec_per_step"].append(dt)
                step = self.step
                if main and (step % cfg.log_every == 0 or step == cfg.steps):
                    row = {k: float(np.mean(v)) for k, v in window.items()}
                    row["step"] = step
                    row["images_per_s"] = cfg.batch_size / max(row["sec_per_step"], 1e-9)
                    row["hours"] = self.elapsed_s / 3600.0
                    self.log_train(row, logs)
                    bar.set_postfix({k: f"{row[k]:.4g}" for k in ("loss", "l1", "rate_bits") if k in row}
                                    | {"s/it": f"{row['sec_per_step']:.2f}"}, refresh=False)
                    window.clear()
                bar.update(1)
                if cfg.val_every and step % cfg.val_every == 0:
                    if main:
                        last_val = self.validate()
                        if last_val:
                            last_val["step"] = step
                            self.log_val(last_val)
                    self.d.barrier()
                if cfg.ckpt_every and step % cfg.ckpt_every == 0:
                    self.save_checkpoint()
                    self.d.barrier()
                if main and cfg.export_every and step % cfg.export_every == 0:
                    last_export = self.export()
                if deadline is not None and time.perf_counter() > deadline:
                    self._stop_reason = self._stop_reason or f"max_minutes={cfg.max_minutes} reached"
                if self.d.any(self._stop_reason is not None, self.device):
                    self._stop_reason = self._stop_reason or "stop requested on another rank"
                    break
        finally:
            bar.close()
            self._restore_signals(handlers)
        # clean end (steps reached or stopped): checkpoint + export
        if main:
            last_val = self.finish() or last_val
        self.save_checkpoint()
        exported = None
        if main:
            fresh = last_export is not None and last_export.get("step") == self.step
            exported = last_export if fresh else self.export()
        self.d.barrier()
        if main:
            log.info("done: step %d (%s)", self.step, self._stop_reason or "all steps")
        return {
            "step": self.step,
            "steps_this_run": self.step - start_step,
            "stopped": self._stop_reason,
            "seconds": time.perf_counter() - self.t0,
            "hours_total": self.elapsed_s / 3600.0,
            "checkpoint": str(self.out / "last.pt"),
            "exported": exported["path"] if exported else None,
            "weights_hash": exported["weights_hash"] if exported else None,
            "val": last_val,
            "rank": self.d.rank,
            "params_digest": params_digest(*self.replicas()),
        }

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return None
        handlers = {}

        def handler(signum, frame):  # noqa: ARG001
            self.request_stop(f"signal {signal.Signals(signum).name}")

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                handlers[sig] = signal.signal(sig, handler)
            except (ValueError, OSError):
                pass
        return handlers

    @staticmethod
    def _restore_signals(handlers) -> None:
        for sig, h in (handlers or {}).items():
            signal.signal(sig, h)

    def close(self) -> None:
        self.d.close()


def run_to_end(trainer: Run) -> dict[str, Any]:
    """``trainer.run()``, then release its process group whatever happened."""
    try:
        return trainer.run()
    finally:
        trainer.close()
