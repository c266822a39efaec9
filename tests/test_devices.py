"""--device (imfcodec.devices, issue 12 item 5): cpu by default, cuda refused in one line without a GPU,
auto falling back to the CPU with a one-line note, the same stream and frames whatever the CPU route; and,
where a GPU exists, a stream coded on it decoding to the same tokens on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import TINY, cli, one_line_error
from imfcodec.api import decode_stream, encode_video, iter_decoded
from imfcodec.codec import EncoderSettings
from imfcodec.devices import check_device, model_device, resolve_device
from imfcodec.errors import InputError

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture
def no_gpu(monkeypatch):
    """A machine without a usable GPU, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("name, expected", [(None, "cpu"), ("cpu", "cpu"), ("CUDA", "cuda"), (" auto ", "auto"),
                                            ("cuda:1", "cuda:1")])
def test_device_names(name, expected):
    assert check_device(name) == expected


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "mps", "", "cpu:0", "cuda:1234"])
def test_bad_device_names_refused(bad):
    with pytest.raises(InputError, match="--device must be"):
        check_device(bad)


def test_no_gpu_cuda_refused_and_auto_falls_back_with_a_note(no_gpu):
    with pytest.raises(InputError, match="--device cuda:0: .*use --device cpu") as e:
        resolve_device("cuda:0")
    assert "\n" not in str(e.value)
    notes: list[str] = []
    assert resolve_device("auto", note=notes.append) == "cpu"
    assert len(notes) == 1 and notes[0].startswith("note: --device auto:") and "running on the CPU" in notes[0]
    assert resolve_device("cpu", note=notes.append) == "cpu" and len(notes) == 1


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine with two GPUs as far as device resolution can tell; TF32 flags restored afterwards."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def test_one_resolution_for_codec_and_trainers(two_gpus):
    """The trainers' devices come from the codec's function: cuda/auto take the rank's own GPU, an index is
    kept, one too large is refused, and TF32 is what the caller says (off unless asked), for both kinds of op."""
    assert resolve_device("cuda") == resolve_device("auto") == "cuda:0"
    assert resolve_device("cuda", local_rank=1) == resolve_device("auto", local_rank=1) == "cuda:1"
    assert resolve_device("cuda:0", local_rank=1) == "cuda:0"
    with pytest.raises(InputError, match="2 CUDA device"):
        resolve_device("cuda:2")
    for tf32 in (True, False):
        resolve_device("cuda", tf32=tf32)
        assert torch.backends.cudnn.allow_tf32 is tf32 and torch.backends.cuda.matmul.allow_tf32 is tf32
    resolve_device("cuda")
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    from imfcodec.train import distributed

    assert distributed.resolve_device is resolve_device  # the old import path, the one function


def test_cli_cuda_without_gpu_is_one_line_and_writes_nothing(no_gpu, sample_clip, tiny_stream, tmp_path):
    out = tmp_path / "s.imf"
    err = one_line_error(cli("encode", sample_clip, "-o", out, "--model", TINY, "--device", "cuda"), "--device cuda")
    assert "use --device cpu" in err and not out.exists()
    err = one_line_error(cli("decode", tiny_stream, "-o", tmp_path / "d.y4m", "--device", "cuda"), "--device cuda")
    assert not (tmp_path / "d.y4m").exists()
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_device_is_a_usage_error(tiny_stream, tmp_path):
    r = cli("decode", tiny_stream, "-o", tmp_path / "d.y4m", "--device", "gpu")
    assert r.exit_code == 2 and "--device" in r.stderr and "\n" not in r.stderr.strip(), r.output


def test_cli_auto_without_gpu_says_so_and_equals_cpu(no_gpu, sample_clip, tmp_path):
    """Encode and decode with auto on a machine without a GPU: one note line each, and the same bytes as
    --device cpu (and as no --device at all)."""
    outs = {}
    for device in ("cpu", "auto"):
        stream, video = tmp_path / f"{device}.imf", tmp_path / f"{device}.y4m"
        r = cli("encode", sample_clip, "-o", stream, "--model", TINY, "--refine", "2", "--device", device)
        assert r.exit_code == 0, r.output
        notes = [line for line in r.stderr.splitlines() if line.startswith("note: --device")]
        assert len(notes) == (device == "auto"), r.stderr
        r = cli("decode", stream, "-o", video, "--device", device)
        assert r.exit_code == 0, r.output
        assert sum(line.startswith("note: --device auto") for line in r.stderr.splitlines()) == (device == "auto")
        outs[device] = (stream.read_bytes(), video.read_bytes())
    assert outs["cpu"] == outs["auto"]


def test_api_device_argument(no_gpu, sample_clip, tmp_path, tiny):
    """The API takes the same names; None leaves a given model where it is; cuda without a GPU is refused
    before anything is written."""
    a, b = tmp_path / "a.imf", tmp_path / "b.imf"
    encode_video(sample_clip, a, model=tiny, settings=EncoderSettings(search_iters=0), device="cpu")
    encode_video(sample_clip, b, model=tiny, settings=EncoderSettings(search_iters=0))
    assert a.read_bytes() == b.read_bytes() and model_device(tiny.model).type == "cpu"
    with pytest.raises(InputError, match="--device cuda"):
        encode_video(sample_clip, tmp_path / "c.imf", model=tiny, device="cuda")
    with pytest.raises(InputError, match="--device cuda"):
        decode_stream(a, tmp_path / "c.y4m", model=tiny, device="cuda")
    with pytest.raises(InputError, match="--device must be"):
        decode_stream(a, tmp_path / "c.y4m", model=tiny, device="tpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.imf", "b.imf"]
    frames = [f for _, fs in iter_decoded(a, model=tiny, device="auto") for f in fs]
    assert len(frames) == decode_stream(a, tmp_path / "d.y4m", model=tiny, device="cpu").frames


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_stream_decodes_to_the_same_tokens_on_the_cpu(sample_clip, tmp_path):
    """Coded on the GPU (E_T and the token search there), the stream decodes on the CPU to exactly the
    tokens it carries, and the GPU decoder's frames are within the conformance tolerance of the CPU's."""
    from imfcodec.zoo import load_model

    stream = tmp_path / "g.imf"
    encode_video(sample_clip, stream, model=load_model(TINY), settings=EncoderSettings(search_iters=2),
                 device="cuda")
    tokens, frames = {}, {}
    for device in ("cpu", "cuda"):
        out = list(iter_decoded(stream, model=load_model(TINY), device=device))
        tokens[device] = [dec.last_tokens.copy() for dec, fs in out if fs]
        frames[device] = np.stack([f for _, fs in out for f in fs]).astype(int)
    assert all(np.array_equal(a, b) for a, b in zip(tokens["cpu"], tokens["cuda"]))
    assert np.abs(frames["cpu"] - frames["cuda"]).max() <= 1


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_enhancer_trains_on_the_gpu_and_resumes_on_the_cpu(tmp_path, sample_clip):
    """The hybrid enhancer's trainer on cuda writes a checkpoint that loads (on the CPU) and resumes on the CPU."""
    import shutil

    from imfcodec.train import hybrid
    from imfcodec.train.checkpoint import load_checkpoint

    data = tmp_path / "clips"
    data.mkdir()
    for i in range(3):
        shutil.copy(sample_clip, data / f"c{i}.mp4")
    kw = dict(model_name="enh-tiny", batch=2, val_every=2, threads=1, max_frames=8, val_clips=1,
              cache_dir=str(tmp_path / "cache"))
    hybrid.train([str(data)], tmp_path / "o", steps=2, device="cuda", **kw)
    state = load_checkpoint(tmp_path / "o" / "last.pt")
    assert state["step"] == 2 and all(t.device.type == "cpu" for t in state["ema"].values())
    v = hybrid.train([str(data)], tmp_path / "o", steps=3, device="cpu", **kw)
    assert load_checkpoint(tmp_path / "o" / "last.pt")["step"] == 3 and v["psnr_enh"] > 0
