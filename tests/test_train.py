"""Training pipeline: data cache and split, losses, a few imf-tiny steps, checkpoint/exact resume,
safetensors export, a 2-process DDP run on CPU (gloo), and the command line."""

from __future__ import annotations

import csv
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from imfcodec.errors import IMFError, InputError
from imfcodec.train import data as D
from imfcodec.train.config import TrainConfig, load_config

torch.set_num_threads(1)

N_CLIPS = 3
FRAMES = 10


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Three tiny clips (sample portrait with simulated motion), 64x64, 10 frames each."""
    from imfcodec.io import make_sample

    root = tmp_path_factory.mktemp("videos")
    for i in range(N_CLIPS):
        make_sample(root / f"clip{i}.mp4", frames=FRAMES + i, size=64)
    (root / "test").mkdir()
    make_sample(root / "test" / "held_out.mp4", frames=4, size=64)  # must never be used
    return root


def tiny(videos: Path, out: Path, **kw) -> TrainConfig:
    return load_config("tiny").replace(data=[str(videos)], out=str(out), cache_dir=str(out.parent / "cache"),
                                       threads=1, **kw)


def read_log(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------- data


def test_find_videos_refuses_and_skips_test(videos):
    with pytest.raises(InputError, match="test"):
        D.find_videos(videos / "test")
    found = D.find_videos(videos)
    assert [p.name for p in found] == [f"clip{i}.mp4" for i in range(N_CLIPS)]
    with pytest.raises(InputError):
        D.find_videos(videos / "missing")


def test_split_is_deterministic_and_disjoint(videos):
    paths = D.find_videos(videos)
    tr1, va1 = D.split_clips(paths, val_clips=1)
    tr2, va2 = D.split_clips(list(reversed(paths)), val_clips=1)
    assert (tr1, va1) == (tr2, va2)
    assert len(va1) == 1 and len(tr1) == N_CLIPS - 1 and not set(tr1) & set(va1)
    tr, va = D.split_clips(paths[:1], val_clips=5)  # a single clip validates on itself
    assert tr == va == paths[:1]


def test_frame_cache_roundtrip(videos, tmp_path):
    paths = D.find_videos(videos)[:1]
    a = D.load_clips(paths, 64, max_frames=6, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1
    b = D.load_clips(paths, 64, max_frames=6, cache_dir=tmp_path)
    assert a.frames[0].shape == (6, 64, 64, 3) and a.frames[0].dtype == np.uint8
    assert np.array_equal(a.frames[0], b.frames[0])
    D.load_clips(paths, 64, max_frames=5, cache_dir=tmp_path)  # other key -> another file
    assert len(list(tmp_path.glob("*.npy"))) == 2


def test_pair_dataset_is_deterministic_and_same_clip(videos):
    clips = D.load_clips(D.find_videos(videos), 64, max_frames=FRAMES)
    ds = D.PairDataset(clips, max_distance=3, flip=True, color_jitter=0.1, seed=1)
    for i in range(20):
        c, r, cur, _ = ds.pair_indices(i)
        assert r != cur and abs(r - cur) <= 3 and 0 <= cur < len(clips.frames[c])
        a, b = ds[i]
        a2, b2 = ds[i]
        assert a.shape == (3, 64, 64) and a.dtype == torch.float32
        assert torch.equal(a, a2) and torch.equal(b, b2)
        assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    other_rank = D.PairDataset(clips, max_distance=3, seed=1, rank=1)
    assert any(ds.pair_indices(i)[:3] != other_rank.pair_indices(i)[:3] for i in range(10))
    # DataLoader workers give the same batches as in-process sampling, from any start step
    a0, b0 = next(D.make_loader(ds, 3, start_step=5, workers=0))
    a1, b1 = next(D.make_loader(ds, 3, start_step=5, workers=1))
    assert torch.equal(a0, a1) and torch.equal(b0, b1)
    x = D.to_float(clips.frames[0][:2])
    # the same flip / jitter applies to both frames of a pair
    rng = np.random.default_rng(0)
    j = D.jitter(x.clone(), rng, 0.2)
    j1 = D.jitter(x[:1].clone(), np.random.default_rng(0), 0.2)
    assert torch.allclose(j[:1], j1)


def test_zoom_crop_is_shared_by_both_frames():
    """The zoom augmentation crops the same window from both frames of a pair (a pair of equal
    frames stays equal, a shifted pair stays shifted) and keeps the size; zoom 0 is a no-op."""
    y, xx = np.mgrid[0:64, 0:64]
    img = torch.from_numpy(np.stack([np.sin(xx / 5.0), np.cos(y / 7.0), np.sin((xx + y) / 9.0)]) * 0.4 + 0.5).float()
    pair = torch.stack([img, img])
    for seed in range(5):
        z = D.zoom_crop(pair.clone(), np.random.default_rng(seed), 0.5)
        assert z.shape == pair.shape and torch.equal(z[0], z[1])
        assert 0.0 <= float(z.min()) and float(z.max()) <= 1.0
    assert not torch.allclose(D.zoom_crop(pair.clone(), np.random.default_rng(1), 0.5), pair)
    shifted = torch.stack([img, torch.roll(img, 3, dims=2)])
    a = D.zoom_crop(shifted.clone(), np.random.default_rng(2), 0.0)
    assert torch.equal(a, shifted)
    with pytest.raises(InputError):
        D.PairDataset(D.Clips(["c"], [np.zeros((2, 8, 8, 3), np.uint8)]), zoom=-1)


# ---------------------------------------------------------------------------- losses


def test_losses_finite_and_zero_weight_skips():
    from imfcodec.models import Discriminator
    from imfcodec.train.losses import GeneratorLoss, LossWeights, d_hinge_loss

    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    x_hat = (x + 0.1 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    disc = Discriminator((8, 8, 8, 8))
    real, fake = disc(x), disc(x_hat)
    loss_fn = GeneratorLoss(LossWeights(l1=10, perceptual=0, ms_ssim=1, gan=1, feat_match=1, rate=0.1))
    total, parts = loss_fn(x_hat, x, fake_out=fake, real_out=real, bits=torch.tensor([10.0, 12.0]))
    assert set(parts) == {"l1", "ms_ssim", "gan_g", "feat_match", "rate_bits"}
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(x_hat.grad).all()
    assert torch.isfinite(d_hinge_loss(real, [(f.detach(), []) for f, _ in fake]))
    only_l1 = GeneratorLoss(LossWeights(l1=1, perceptual=0, gan=0))
    _, parts = only_l1(x_hat, x, fake_out=fake, real_out=real, bits=torch.ones(2))
    assert set(parts) == {"l1"}


def test_vgg_perceptual_from_local_file(tmp_path):
    from safetensors.torch import save_file
    from torchvision.models.vgg import cfgs, make_layers

    from imfcodec.errors import WeightsError
    from imfcodec.train.losses import PerceptualLoss

    torch.manual_seed(0)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in make_layers(cfgs["E"])[:30].state_dict().items()}
    state = {f"features.{k}": (torch.randn(s) * (2.0 / max(1, s[1:].numel())) ** 0.5).half()
             for k, s in shapes.items()}
    path = tmp_path / "vgg19.safetensors"
    save_file(state, str(path))
    loss = PerceptualLoss(path, levels=4)
    x = torch.rand(1, 3, 32, 32)  # levels below 16 px are skipped: 32 and 16 here
    y = (x + 0.05).clamp(0, 1).requires_grad_(True)
    v = loss(y, x)
    v.backward()
    assert float(v.detach()) > 0 and torch.isfinite(y.grad).all()
    assert float(loss(x, x)) == 0.0
    assert not any(p.requires_grad for p in loss.vgg.parameters())
    bad = tmp_path / "bad.safetensors"
    save_file({"x": torch.zeros(1)}, str(bad))
    with pytest.raises(WeightsError):
        PerceptualLoss(bad)


# ---------------------------------------------------------------------------- training


def test_train_steps_checkpoint_and_curriculum(videos, tmp_path):
    from imfcodec.train.trainer import load_checkpoint, train

    torch.manual_seed(0)
    from imfcodec.models import create_model

    init = create_model("imf-tiny").state_dict()
    cfg = tiny(videos, tmp_path / "run", steps=3, stages=[[0, 32], [2, 64]], val_every=3,
               w_gan=1.0, w_feat_match=1.0)
    summary = train(cfg)
    assert summary["step"] == 3 and summary["steps_this_run"] == 3
    rows = read_log(tmp_path / "run" / "log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert [int(r["resolution"]) for r in rows] == [32, 32, 64]
    for r in rows:
        for k in ("loss", "l1", "ms_ssim", "rate_bits", "d_loss", "gan_g", "feat_match", "sec_per_step"):
            assert np.isfinite(float(r[k])), (k, r)
    val = read_log(tmp_path / "run" / "val.csv")
    assert len(val) == 1 and float(val[0]["psnr"]) > 10 and float(val[0]["base_psnr"]) > 10
    assert list((tmp_path / "run" / "val").glob("*.png"))
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["step"] == 3 and ck["config"]["model"] == "imf-tiny"
    assert ck["disc"] is not None and ck["opt_d"] is not None
    changed = [k for k, v in ck["model"].items() if v.is_floating_point() and not torch.equal(v, init[k])]
    assert len(changed) > 10  # weights moved
    assert not torch.equal(ck["model"]["token_scale"], torch.ones_like(ck["model"]["token_scale"]))


def test_exact_resume(videos, tmp_path):
    """Resuming continues the step count and repeats an uninterrupted run bit for bit."""
    from imfcodec.train.trainer import Trainer, load_checkpoint, train

    full = tiny(videos, tmp_path / "full", steps=4, ema=0.9)
    train(full)
    half = tiny(videos, tmp_path / "half", steps=2, ema=0.9)
    train(half)
    resumed = train(half.replace(steps=4), resume=tmp_path / "half" / "last.pt")
    assert resumed["step"] == 4 and resumed["steps_this_run"] == 2
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "half" / "last.pt")
    for part in ("model", "ema", "rate_model"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    la, lb = read_log(tmp_path / "full" / "log.csv"), read_log(tmp_path / "half" / "log.csv")
    assert [r["step"] for r in lb] == ["1", "2", "3", "4"]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    # the next step's loss, from the step-2 checkpoint vs a fresh uninterrupted trainer, exactly
    t1 = Trainer(tiny(videos, tmp_path / "x", steps=4, ema=0.9))
    t1.prepare_data()
    it = D.make_loader(t1.dataset, t1.local_batch)
    losses = [t1.train_step(*next(it))["loss"] for _ in range(3)]
    t2 = Trainer(tiny(videos, tmp_path / "y", steps=4, ema=0.9))
    t2.prepare_data()
    it2 = D.make_loader(t2.dataset, t2.local_batch)
    for _ in range(2):
        t2.train_step(*next(it2))
    t2.save_checkpoint(tmp_path / "y" / "s2.pt")
    t3 = Trainer(tiny(videos, tmp_path / "y", steps=4, ema=0.9), resume=tmp_path / "y" / "s2.pt")
    assert t3.step == 2
    t3.prepare_data()
    it3 = D.make_loader(t3.dataset, t3.local_batch, start_step=t3.step)
    assert t3.train_step(*next(it3))["loss"] == losses[2]


def test_lr_schedule_warmup_then_cosine_decay(videos, tmp_path):
    """lr: warm-up, constant, then cosine down to the final fraction and held there; the trainer
    logs that schedule, and a bad lr_decay is refused."""
    from imfcodec.train.trainer import lr_at, train

    cfg = TrainConfig(lr=1e-3, warmup_steps=2, lr_decay=[4, 8, 0.1])
    lrs = [lr_at(cfg, s) for s in range(10)]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)
    assert lrs[2] == lrs[3] == lrs[4] == pytest.approx(1e-3)
    assert lrs[6] == pytest.approx(0.55e-3)  # half-way: mean of start and end
    assert all(a > b for a, b in zip(lrs[4:8], lrs[5:9]))
    assert lrs[8] == lrs[9] == pytest.approx(1e-4)
    assert lr_at(TrainConfig(lr=1e-3), 10**6) == 1e-3  # no decay unless asked
    for bad in ([5, 5, 0.1], [4, 8], [4, 8, 1.5], [-1, 8, 0.1]):
        with pytest.raises(InputError):
            TrainConfig(lr_decay=bad).validate()
    train(tiny(videos, tmp_path / "d", steps=3, lr=1e-3, lr_decay=[1, 3, 0.0], log_every=1, val_every=0))
    logged = [float(r["lr"]) for r in read_log(tmp_path / "d" / "log.csv")]
    assert logged == pytest.approx([1e-3, 1e-3, 0.5e-3])


def test_align_scalar_lr_and_resume_across_group_change(videos, tmp_path):
    """lr_align_scalars puts the alignment's locality / window bias in their own Adam group with a
    larger lr (they move further per step), and a checkpoint resumes across that change with
    every parameter's Adam moments carried over."""
    from imfcodec.train.trainer import Trainer

    def run(mult: float, out: str, resume=None) -> Trainer:
        tr = Trainer(tiny(videos, tmp_path / out, steps=2, lr_align_scalars=mult), resume=resume)
        tr.prepare_data()
        it = D.make_loader(tr.dataset, tr.local_batch, start_step=tr.step)
        tr.train_step(*next(it))
        return tr

    def moved(tr: Trainer, start: dict) -> float:
        return max(float((p.detach() - start[n]).abs().max()) for n, p in tr.model.named_parameters()
                   if n.endswith("rel_bias") or n.endswith("locality"))

    torch.manual_seed(0)
    init = {n: p.detach().clone() for n, p in Trainer(tiny(videos, tmp_path / "i")).model.named_parameters()}
    slow, fast = run(1.0, "a"), run(50.0, "b")
    assert len(slow.opt_g.param_groups) == 1 and len(fast.opt_g.param_groups) == 2
    assert fast.opt_g.param_groups[1]["lr"] == pytest.approx(50 * fast.opt_g.param_groups[0]["lr"])
    assert moved(fast, init) > 10 * moved(slow, init)
    for src, mult in ((slow, 50.0), (fast, 1.0)):
        path = src.save_checkpoint(tmp_path / f"g{len(src.opt_g.param_groups)}.pt")
        tr = Trainer(tiny(videos, tmp_path / "r", steps=2, lr_align_scalars=mult), resume=path)
        assert tr.step == 1
        state = {id(p): s for g in tr.opt_g.param_groups for p in g["params"]
                 if (s := tr.opt_g.state.get(p))}
        assert len(state) == len(tr.g_params)  # every parameter kept its moments
        for (n, p), q in zip(tr.model.named_parameters(), src.model.parameters()):
            assert torch.equal(tr.opt_g.state[p]["exp_avg"], src.opt_g.state[q]["exp_avg"]), n


def test_export_safetensors_reproduces_outputs(videos, tmp_path):
    from safetensors import safe_open

    from imfcodec.train.trainer import Trainer
    from imfcodec.zoo import load_weights, read_metadata

    tr = Trainer(tiny(videos, tmp_path / "run", steps=1))
    tr.prepare_data()
    tr.train_step(*next(D.make_loader(tr.dataset, tr.local_batch)))
    for fp16 in (False, True):
        path = tmp_path / f"m{int(fp16)}.safetensors"
        res = tr.export(path, fp16=fp16)
        with safe_open(str(path), framework="pt") as f:  # plain safetensors, no pickle involved
            assert f.get_tensor("token_scale").dtype == (torch.float16 if fp16 else torch.float32)
        meta = read_metadata(path)
        assert json.loads(meta["config"])["name"] == "imf-tiny"
        training = json.loads(meta["training"])
        assert training["steps"] == 1 and "hardware" in training and training["data"]
        delta_std = json.loads(meta["delta_std"])
        assert len(delta_std) == 32 and all(v > 0 for v in delta_std)
        model = load_weights(path)
        assert torch.allclose(model.token_scale, res["token_scale"], rtol=1e-3)
        ref = tr.eval_model()
        calibrated = type(ref)(ref.config)
        calibrated.load_state_dict(ref.state_dict())
        calibrated.token_scale.copy_(res["token_scale"])
        calibrated.eval()
        x = D.to_float(tr.val_clips.frames[0][:2])
        with torch.no_grad():
            want = calibrated(x[:1], x[1:])
            got = model(x[:1], x[1:])
        if fp16:
            assert (want - got).abs().max() < 0.05
        else:
            assert torch.equal(want, got)
    # the training model itself is untouched by calibration
    assert not torch.equal(tr.model.token_scale, res["token_scale"])


def test_init_from_copies_matching_tensors(tmp_path):
    """Warm start of a new config from another model's weights: names and shapes that match
    are copied, the new parts keep their (zero) initialisation, junk files are refused."""
    from imfcodec.models import create_model
    from imfcodec.train.trainer import init_from_weights
    from imfcodec.zoo import save_weights

    torch.manual_seed(1)
    src = create_model("imf-tiny")
    path = tmp_path / "src.safetensors"
    save_weights(src, path, fp16=False)
    dst = create_model("imf-tiny", align_offsets=True, coarse_pixels=True)
    copied, skipped = init_from_weights(dst, path)
    own = dst.state_dict()
    assert torch.equal(own["feature_encoder.stem.weight"], src.state_dict()["feature_encoder.stem.weight"])
    assert "align.0.offset.weight" in skipped and "frame_decoder.head.weight" in skipped  # new / reshaped
    assert len(copied) > 50 and not own["align.0.offset.weight"].any()
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a weights file")
    with pytest.raises(IMFError):
        init_from_weights(dst, junk)


def test_max_minutes_stops_with_checkpoint(videos, tmp_path):
    from imfcodec.train.trainer import train

    s = train(tiny(videos, tmp_path / "run", steps=50, max_minutes=1e-6))
    assert s["step"] == 1 and "max_minutes" in s["stopped"]
    assert (tmp_path / "run" / "last.pt").is_file() and (tmp_path / "run" / "model.safetensors").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg_dict: dict, out: str, network: str = "token") -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    if network == "enhancer":
        from imfcodec.train.hybrid import EnhancerConfig, fit

        summary = fit(EnhancerConfig.from_dict(cfg_dict))
    else:
        from imfcodec.train.trainer import train

        summary = train(TrainConfig.from_dict(cfg_dict))
    Path(out, f"rank{rank}.json").write_text(json.dumps(summary, default=str))


def _ddp_run(cfg_dict: dict, out: Path, network: str = "token") -> tuple[dict, dict]:
    """Two ranks on the CPU (gloo); their summaries."""
    import torch.multiprocessing as mp

    # fork: the children inherit the imported modules (spawn would re-import torch in each)
    mp.start_processes(_ddp_worker, args=(2, _free_port(), cfg_dict, str(out), network), nprocs=2,
                       join=True, start_method="fork")
    return tuple(json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))


def test_ddp_two_processes_gloo(videos, tmp_path):
    cfg = tiny(videos, tmp_path / "run", steps=2, batch_size=4, w_gan=1.0)
    # prefill the frame cache so the spawned ranks only read .npy files
    D.load_clips(D.find_videos(videos), 64, cfg.max_frames, cfg.cache_dir)
    r0, r1 = _ddp_run(cfg.to_dict(), tmp_path)
    assert r0["step"] == r1["step"] == 2
    assert r0["params_digest"] == r1["params_digest"]
    assert (tmp_path / "run" / "last.pt").is_file()  # written by rank 0 only
    assert len(read_log(tmp_path / "run" / "log.csv")) == 2


def test_refuses_test_folder(tmp_path, videos):
    from imfcodec.train.trainer import train

    with pytest.raises(InputError, match="test"):
        train(tiny(videos, tmp_path / "run").replace(data=[str(videos / "test")]))


def test_command_line(videos, tmp_path, capsys):
    from imfcodec.train import main

    out = tmp_path / "cli"
    args = ["--config", "tiny", "--data", str(videos), "--out", str(out), "--steps", "1",
            "--cache-dir", "none", "--threads", "1", "--set", "val_every=1"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 1 and (out / "model.safetensors").is_file()
    assert main(["--resume", "--out", str(out), "--steps", "2", "--data", str(videos), "--threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 2
    assert main(["--export-only", "--out", str(out), "--export-to", str(tmp_path / "e.safetensors"),
                 "--data", str(videos)]) == 0
    assert (tmp_path / "e.safetensors").is_file()
    capsys.readouterr()
    assert main(["--config", "tiny", "--data", str(videos / "test"), "--out", str(out)]) == 1
    assert main(["--config", "small-cpu", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["model"] == "imf-small-v2" and cfg["stages"][0] == [0, 128]


def test_command_line_options(capsys):
    """--data takes one or more values (a later --data replaces an earlier one), --amp / --progress alone
    mean true, --resume alone means OUT/last.pt, --set repeats; usage errors are one line, status 2."""
    from imfcodec.train import main

    def config(*args):
        capsys.readouterr()
        assert main(["--config", "tiny", "--print-config", *args]) == 0
        return json.loads(capsys.readouterr().out)

    cfg = config("--data", "a", "b", "--amp", "--set", "max_distance=null", "--set", "lr_decay=[1,2,0.5]",
                 "--progress", "--steps", "7")
    assert cfg["data"] == ["a", "b"] and cfg["amp"] is True and cfg["progress"] is True and cfg["steps"] == 7
    assert cfg["max_distance"] is None and cfg["lr_decay"] == [1, 2, 0.5]
    cfg = config("--data", "a", "--data=c", "--amp", "off", "--progress", "0", "--resume", "--lr", "-1e-3")
    assert cfg["data"] == ["c"] and cfg["amp"] is False and cfg["progress"] is False and cfg["lr"] == -1e-3
    for bad in (["--data"], ["--data", "--steps", "1"], ["--amp", "maybe"], ["--no-such-option"], ["stray"]):
        assert main(bad) == 2, bad
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err


# ---------------------------------------------------------------------------- hybrid-mode enhancer


def test_enhancer_training_caches_resumes_and_exports(videos, tmp_path):
    from imfcodec.train import hybrid
    from imfcodec.zoo import load_model

    out, cache = tmp_path / "enh", tmp_path / "cache"
    args = ["--data", str(videos), "--out", str(out), "--model", "enh-tiny", "--cache-dir", str(cache),
            "--batch-size", "2", "--val-every", "2", "--ckpt-every", "1", "--threads", "1", "--max-frames", "8"]
    assert hybrid.main([*args, "--steps", "2"]) == 0
    coded = sorted(cache.rglob("*.npz"))
    assert len(coded) == N_CLIPS  # every clip coded once, at every operating point
    with np.load(coded[0]) as z:
        assert {hybrid.point_key(p) for p in hybrid.BASE_POINTS} <= set(z.files)
        assert z["base_hevc_2_13"].shape[1:] == (32, 32, 3) and z["base_vp9_4_8"].shape[1:] == (16, 16, 3)
        assert z["key_16"].shape == (64, 64, 3)
    first = load_model(str(out / "model.safetensors"))
    assert first.name == "enh-tiny"
    # a second run resumes from last.pt (the cache is reused, the step counter goes on)
    mtimes = [p.stat().st_mtime_ns for p in coded]
    assert hybrid.main([*args, "--steps", "3"]) == 0
    assert [p.stat().st_mtime_ns for p in coded] == mtimes
    from imfcodec.train.checkpoint import load_checkpoint

    state = load_checkpoint(out / "last.pt")
    assert state["step"] == 3
    history = json.loads(state["history"])
    assert history[0]["step"] == 0 and history[0]["gain"] == 0.0  # zero-initialised: exactly the base
    per_clip = [k for k in history[0] if k.startswith("clip/")]
    assert per_clip and all(history[0][k] == 0.0 for k in per_clip)  # the validation clips, one gain each
    assert load_model(str(out / "model.safetensors")).weights_hash != first.weights_hash


def test_enhancer_training_draws_the_intra_base_route(videos, tmp_path):
    """--intra-share: the clips are also coded by the AV1 base carrying the key picture (a cache of their own,
    beside the base points'), batches mix the two routes, and validation reports the intra-base route apart."""
    from imfcodec.train import hybrid
    from imfcodec.train.checkpoint import load_checkpoint

    out, cache = tmp_path / "enh", tmp_path / "cache"
    assert hybrid.main(["--data", str(videos), "--out", str(out), "--model", "enh-tiny", "--cache-dir", str(cache),
                        "--batch-size", "4", "--threads", "1", "--max-frames", "6", "--steps", "2",
                        "--intra-share", "0.5"]) == 0
    intra = sorted(cache.rglob("*-intra-*.npz"))
    assert len(intra) == N_CLIPS
    with np.load(intra[0]) as z:
        assert z["key_base_av1_2_8"].shape == (64, 64, 3) and z["base_av1_2_8"].shape[1:] == (32, 32, 3)
    first = json.loads(load_checkpoint(out / "last.pt")["history"])[0]
    assert first["intra/enh"] == first["intra/base"]  # zero-initialised: exactly the bicubic base at step 0
    assert {f"intra_base_av1_2_{q}/enh" for q in (2, 8, 14)} <= set(first)


def test_enhancer_training_refuses_test_folder(videos, tmp_path, capsys):
    from imfcodec.train import hybrid

    assert hybrid.main(["--data", str(videos / "test"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "test" in err and "\n" not in err


def test_enhancer_training_device_is_checked_before_any_work(videos, tmp_path, capsys, monkeypatch):
    """--device cuda without a GPU (and a bad name) is one line and exit 1 before any clip is coded or any
    folder made; --device auto falls back to the CPU."""
    import torch

    from imfcodec.train import hybrid

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "o"
    for device, needle in (("cuda", "--device cuda: "), ("tpu", "--device must be")):
        assert hybrid.main(["--data", str(videos), "--out", str(out), "--model", "enh-tiny", "--device", device]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and needle in err and "\n" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    v = hybrid.train([str(videos)], out, model_name="enh-tiny", steps=1, batch=2, val_every=1, threads=1,
                     max_frames=8, cache_dir=str(tmp_path / "cache"), device="auto")
    assert v["gain"] == v["gain"] and (out / "last.pt").is_file()


def test_enhancer_with_side_pictures_trains_and_starts_as_the_plain_one(videos, tmp_path):
    """The sweep's tokens-on variant (benchmarks.enhancer_sweep): a plain enhancer's weights load into it
    with the side input at zero (same output), the trainer feeds each clip's side pictures to training and
    validation, and a file that fits nothing is refused."""
    import torch

    from benchmarks.enhancer_sweep import side_model
    from imfcodec.errors import WeightsError
    from imfcodec.models import create_model
    from imfcodec.train import hybrid

    plain = create_model("enh-tiny")
    with torch.no_grad():
        for p in plain.parameters():
            p.normal_(0, 0.05)  # a trained-looking plain enhancer (its head is no longer zero)
    side = side_model("enh-tiny")
    fresh = hybrid.init_state(side, plain.state_dict())
    assert fresh == ["fuse_in.weight[:, 208:] (zero)"]
    x = torch.rand(4, 3, 64, 64)
    plain.eval(), side.eval()
    with torch.no_grad():
        same = side(x[:2], x[:2], x[2:], torch.rand(2, 3, 64, 64))
        # the same function; not bit-equal, since the wider convolution may sum in another order (thread count)
        assert torch.allclose(same, plain(x[:2], x[:2], x[2:]), rtol=0, atol=1e-6)
        side.fuse_in.weight[:, 208:].fill_(0.1)
        assert not torch.equal(side(x[:2], x[:2], x[2:], torch.rand(2, 3, 64, 64)), same)
    with pytest.raises(WeightsError):
        hybrid.init_state(create_model("enh-small"), plain.state_dict())

    seen = []

    def side_pictures(clip):
        seen.append(clip.name)
        return clip.frames[::-1].copy()  # anything of the clip's shape

    v = hybrid.train([str(videos)], tmp_path / "o", model=side_model("enh-tiny"), side=side_pictures, steps=2,
                     batch=2, val_every=1, ckpt_every=1, threads=1, max_frames=8, cache_dir=str(tmp_path / "c"))
    assert len(seen) == N_CLIPS and v["gain"] != 0.0  # trained on and validated with the side pictures
    assert (tmp_path / "o" / "last.pt").is_file() and not (tmp_path / "o" / "model.safetensors").exists()


def test_enhancer_ddp_two_processes_gloo(videos, tmp_path):
    """The enhancer runs in the token trainer's loop, so its data parallelism too: two ranks (rank 0 codes
    the clips, the other reads the cache) end with the same weights, one checkpoint and one weights file."""
    from imfcodec.train.checkpoint import load_checkpoint
    from imfcodec.train.hybrid import EnhancerConfig

    cfg = EnhancerConfig(model="enh-tiny", data=[str(videos)], out=str(tmp_path / "o"), steps=2, batch_size=4,
                         val_every=2, threads=1, max_frames=8, cache_dir=str(tmp_path / "cache")).validate()
    r0, r1 = _ddp_run(cfg.to_dict(), tmp_path, network="enhancer")
    assert r0["step"] == r1["step"] == 2 and r0["params_digest"] == r1["params_digest"]
    assert r0["exported"] and r1["exported"] is None and r0["val"]["psnr_enh"] > 0
    state = load_checkpoint(tmp_path / "o" / "last.pt")
    assert state["step"] == 2 and [h["step"] for h in json.loads(state["history"])] == [0, 2, 2]


def test_one_lr_schedule_for_both_networks():
    """The enhancer's schedule (warm-up, then a cosine to lr_final at ``steps``) is ``optim.lr_at`` of its
    config, to the last bit of the formula it had before it shared the token model's."""
    import math

    from imfcodec.train.hybrid import EnhancerConfig
    from imfcodec.train.optim import lr_at

    def before(step: int, steps: int, lr: float, warmup: int = 200) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, steps - warmup))
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    for steps in (0, 150, 201, 8000):
        cfg = EnhancerConfig(steps=steps, lr=2.5e-4)
        assert [lr_at(cfg, s) for s in range(0, 8200, 7)] == [before(s, steps, 2.5e-4) for s in range(0, 8200, 7)]


def test_enhancer_config_and_command_line_agree(capsys):
    """train()'s keywords (and their old names) and the command line set EnhancerConfig fields; an unknown
    one is refused."""
    from imfcodec.train.hybrid import EnhancerConfig

    cfg = EnhancerConfig(model="enh-tiny").replace(steps=3, batch_size=2)
    assert cfg.out == str(Path("runs") / "enh-tiny") and cfg.lr_decay == [200, 3, 0.1]
    assert EnhancerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(InputError, match="unknown training config keys: nope"):
        cfg.replace(nope=1)


def test_carried_memory_runs_each_sequence_on_across_steps(videos, tmp_path):
    """--carry-memory: a sequence's next window starts where its last one ended (same clip, point, key and flip,
    N frames on) from the memory that window left, so two windows of 2 frames give what one of 4 gives; a
    sequence at its clip's end starts anew; training steps run on it; a single-frame enhancer refuses it."""
    from imfcodec.train import hybrid

    cfg = hybrid.EnhancerConfig(data=[str(videos)], out=str(tmp_path / "r"), model="enh-tiny-rec", max_frames=8,
                                cache_dir=str(tmp_path / "cache"), threads=1, unroll=2, carry_memory=True,
                                batch_size=4, first_val=False)
    t = hybrid.EnhancerTrainer(cfg)
    t.prepare_data()
    model = t.model.eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("head.", "mem_in.")):
                p.normal_(0, 0.05)  # the memory matters (an untrained branch adds exactly zero)
    tracks = hybrid.Tracks(t.coded["train"], 4, np.random.default_rng(3), t.size, 2)
    with torch.no_grad():
        (key, key_base, start, from_key, bases, _), carried = tracks.next()
        assert not carried.any()
        first, flip = list(tracks.picks), tracks.flip.clone()
        _, memory = hybrid.unrolled(model, key, key_base, start, from_key, bases)
        tracks.keep(memory)
        (key, key_base, start, from_key, bases, targets), carried = tracks.next()
        outs, _ = hybrid.unrolled(model, key, key_base, start, from_key, bases, carried, tracks.memory)
        fresh, _ = hybrid.unrolled(model, key, key_base, start, from_key, bases)
        straight, _ = hybrid.unrolled(model, *hybrid._windows(first, flip, t.size, 4, "cpu")[:5])
    assert carried.any()
    for i, (a, b) in enumerate(zip(first, tracks.picks)):
        if carried[i]:
            assert b[0] is a[0] and b[1:3] == a[1:3] and b[3] == a[3] + 2 and tracks.flip[i] == flip[i]
            for k in range(2):
                assert torch.allclose(outs[k][i], straight[2 + k][i], atol=1e-5)
                assert torch.allclose(targets[k][i], hybrid._windows(first, flip, t.size, 4, "cpu")[5][2 + k][i])
            assert (outs[1][i] - fresh[1][i]).abs().max() > 1e-4  # without the carried memory: other frames
        else:
            assert a[3] + 4 > len(a[0].frames)
    restarts = 0
    for _ in range(4):  # the clips have 8-10 frames: every sequence reaches its end within 4 windows
        before = list(tracks.picks)
        tracks.keep(memory)
        _, carried = tracks.next()
        for i, a in enumerate(before):
            assert bool(carried[i]) == (a[3] + 4 <= len(a[0].frames))
        restarts += int((~carried).sum())
    assert restarts >= 4
    model.train()
    batches = t.batches()
    for _ in range(3):
        assert np.isfinite(t.train_step(*next(batches))["loss"])
    assert t.step == 3 and t.tracks.memory is not None and not t.tracks.memory[0].requires_grad
    with pytest.raises(InputError, match="--carry-memory is for recurrent enhancers"):
        hybrid.EnhancerTrainer(cfg.replace(model="enh-tiny", unroll=1, out=str(tmp_path / "s")))


def test_half_rate_training_codes_every_other_frame_at_half_the_rate(videos, tmp_path):
    """--half-rate: the trainer's clips are what a half-rate stream codes (the even frames, the base layer told they
    run at half the frame rate), in cache files of their own beside the full-rate ones, which keep their names;
    training and validation run on them; the intra-base route, which has no half-rate streams, is refused."""
    from imfcodec.baselayer import code_clip as code_base
    from imfcodec.train import hybrid

    cache = tmp_path / "cache"
    cfg = hybrid.EnhancerConfig(data=[str(videos)], out=str(tmp_path / "r"), model="enh-tiny-rec", max_frames=9,
                                cache_dir=str(cache), threads=1, unroll=2, carry_memory=True, batch_size=2,
                                first_val=False, steps=2, val_every=0, ckpt_every=0)
    full = hybrid.EnhancerTrainer(cfg)
    full.prepare_data()
    files = set(cache.glob("*.npz"))
    half = hybrid.EnhancerTrainer(cfg.replace(half_rate=True, out=str(tmp_path / "h")))
    half.prepare_data()
    assert len(set(cache.glob("*.npz")) - files) == len(files)  # new files; the full-rate ones untouched
    for group in ("train", "val"):
        for f, h in zip(full.coded[group], half.coded[group]):
            assert f.name == h.name and np.array_equal(h.frames, f.frames[::2])
            point = hybrid.BASE_POINTS[-1]
            _, small = code_base(f.frames[::2], *point, fps=hybrid.FPS / 2)
            assert np.array_equal(h.bases[point], np.stack(small))
            assert np.array_equal(h.keys[16], f.keys[16])  # the key frame is the same picture
    again = hybrid.code_clip(half.coded["val"][0].name, half.coded["val"][0].frames, cache, hybrid.FPS / 2)
    assert np.array_equal(again.bases[hybrid.BASE_POINTS[0]], half.coded["val"][0].bases[hybrid.BASE_POINTS[0]])
    summary = hybrid.fit(cfg.replace(half_rate=True, out=str(tmp_path / "h")))
    assert summary["step"] == 2 and np.isfinite(summary["val"]["psnr_enh"])
    assert json.loads((tmp_path / "h" / "config.json").read_text())["config"]["half_rate"] is True
    with pytest.raises(InputError, match="--half-rate with --intra-share"):
        hybrid.EnhancerTrainer(cfg.replace(model="enh-tiny", unroll=1, carry_memory=False, half_rate=True,
                                           intra_share=0.5, out=str(tmp_path / "i")))


def test_recurrent_enhancer_trains_on_unrolled_sequences_from_a_single_frame_one(videos, tmp_path):
    """--unroll N: a recurrent enhancer warm-started from a single-frame enhancer's weights validates exactly as
    that enhancer at step 0 (same frames; it runs through every frame before them), trains on sequences of N
    frames, resumes from last.pt and exports a file that names its registry config; --unroll is refused where it
    means nothing."""
    import torch

    from imfcodec.models import create_model
    from imfcodec.train import hybrid
    from imfcodec.zoo import load_model, save_weights

    plain = create_model("enh-tiny")
    with torch.no_grad():
        plain.head.weight.normal_(0, 0.05)  # a trained-looking single-frame enhancer
    save_weights(plain, tmp_path / "plain.safetensors", fp16=False)
    out, cache = tmp_path / "rec", str(tmp_path / "cache")
    args = ["--data", str(videos), "--out", str(out), "--model", "enh-tiny-rec", "--cache-dir", cache,
            "--batch-size", "2", "--val-every", "2", "--ckpt-every", "1", "--threads", "1", "--max-frames", "8",
            "--init-from", str(tmp_path / "plain.safetensors"), "--unroll", "3"]
    assert hybrid.main([*args, "--steps", "2"]) == 0
    from imfcodec.train.checkpoint import load_checkpoint

    history = json.loads(load_checkpoint(out / "last.pt")["history"])
    single = load_model(str(tmp_path / "plain.safetensors")).model
    v = hybrid.EnhancerTrainer(hybrid.EnhancerConfig(data=[str(videos)], out=str(tmp_path / "x"), model="enh-tiny",
                                                     max_frames=8, cache_dir=cache, threads=1), model=single)
    v.prepare_data()
    ref = hybrid.validate(single, v.coded["val"])
    # (batched otherwise: 12 points of a frame against 6 frames of a point, so equal up to float rounding)
    assert history[0]["step"] == 0 and abs(history[0]["psnr_enh"] - ref["psnr_enh"]) < 1e-4 and abs(ref["gain"]) > 0.01
    assert hybrid.main([*args, "--steps", "3"]) == 0
    state = load_checkpoint(out / "last.pt")
    assert state["step"] == 3 and float(state["model"]["mem_in.weight"].abs().sum()) > 0  # the memory trains
    assert load_model(str(out / "model.safetensors")).name == "enh-tiny-rec"
    cut = hybrid.first_frames(v.coded["val"][0], 3)  # --train-frames: copies, so the full clip can be freed
    assert len(cut.frames) == 3 and not np.shares_memory(cut.frames, v.coded["val"][0].frames)
    assert all(len(b) == 3 and not np.shares_memory(b, v.coded["val"][0].bases[p]) for p, b in cut.bases.items())
    for bad in (["--model", "enh-tiny-rec", "--unroll", "1"], ["--model", "enh-tiny", "--unroll", "3"]):
        assert hybrid.main(["--data", str(videos), "--out", str(tmp_path / "bad"), *bad]) == 1
