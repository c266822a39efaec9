"""The recurrent enhancer (issue 23, ``imfcodec.models.recurrent``) and what the hybrid mode does with its memory:
warm start equal to the single-frame enhancer, batches in order, the memory reset at key frames, ``b`` records,
the encoder's mirror equal to the decoder, recovery after a loss, and the same stream decoded with either
enhancer (``--enhancer`` at decode)."""

from __future__ import annotations

import dataclasses
import io
from fractions import Fraction

import numpy as np
import pytest
import torch

from helpers import damaged, decode_all, split
from imfcodec.api import encode_frames_to_file, iter_decoded
from imfcodec.bitstream import BasePacket, StreamWriter, read_stream
from imfcodec.errors import InputError
from imfcodec.models import RecurrentEnhancer, RecurrentState, create_model
from imfcodec.modes.hybrid import HybridDecoder, HybridEncoder
from imfcodec.settings import EncoderSettings
from imfcodec.train.hybrid import init_state
from imfcodec.zoo import LoadedModel, load_model, weights_hash

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _live(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` with every zero-initialised output layer (head, mem_in) drawn small and random, so the
    enhancer changes frames and its memory matters (an untrained one returns the base exactly)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("head.", "mem_in.")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def _loaded(model: torch.nn.Module) -> LoadedModel:
    return LoadedModel(model, model.config.name, weights_hash(model), "test")


@pytest.fixture(scope="module")
def pair():
    """(single-frame enh-tiny with a live head, enh-tiny-rec warm-started from it, memory still at zero)."""
    single = _live(create_model("enh-tiny"))
    rec = create_model("enh-tiny-rec")
    init_state(rec, single.state_dict())
    rec.start_memory_from_key()
    return single, rec.eval()


def _clip(n: int = 12, size: int = 64) -> np.ndarray:
    """A moving textured picture (a talking head it is not, but it moves and has detail)."""
    y, x = np.mgrid[:size, :size]
    frames = []
    for t in range(n):
        r = 128 + 100 * np.sin((x + 2 * t) / 5.0) * np.cos(y / 7.0)
        g = 128 + 90 * np.cos((x - y + t) / 9.0)
        b = 128 + 80 * np.sin((y + 3 * t) / 6.0)
        frames.append(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8))
    return np.stack(frames)


# ------------------------------------------------------------------------------------------ the model

def test_warm_start_is_the_single_frame_enhancer_exactly():
    """enh-rec with enh-wide's shipped weights (and a zero memory branch) gives enh-wide's frames bit for bit,
    frame by frame along a sequence; the registry builds the recurrent class from the config."""
    wide = load_model("enh-wide").model.eval()
    rec = create_model("enh-rec")
    assert isinstance(rec, RecurrentEnhancer)
    fresh = init_state(rec, wide.state_dict())
    assert fresh and all(n.startswith(("align_mem.", "mem_in.")) for n in fresh)
    rec.start_memory_from_key()
    rec.eval()
    g = torch.Generator().manual_seed(1)
    key, key_base, base = (torch.rand(n, 3, 256, 256, generator=g) for n in (1, 1, 3))
    with torch.inference_mode():
        ws, rs = wide.prepare_key(key, key_base), rec.prepare_key(key, key_base)
        for i in range(3):
            assert torch.equal(rec.enhance(rs, base[i:i + 1]), wide.enhance(ws, base[i:i + 1]))


def test_memory_moves_on_and_resets_at_the_key(pair):
    _, rec = pair
    rec = _live(create_model("enh-tiny-rec"), seed=3)
    g = torch.Generator().manual_seed(2)
    key, key_base, a, b = (torch.rand(1, 3, 64, 64, generator=g) for _ in range(4))
    with torch.inference_mode():
        s = rec.prepare_key(key, key_base)
        first = rec.enhance(s, b)
        s2 = rec.prepare_key(key, key_base)
        rec.enhance(s2, a)  # another frame shown before b: the memory differs, so b's output does
        after_a = rec.enhance(s2, b)
        assert (after_a - first).abs().max() > 1e-3
        assert torch.equal(rec.enhance(rec.prepare_key(key, key_base), b), first)  # a new key: memory reset


def test_a_batch_is_consecutive_frames_and_many_keys_are_many_sequences():
    rec = _live(create_model("enh-tiny-rec"), seed=4)
    g = torch.Generator().manual_seed(5)
    keys, key_bases = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    seq = torch.rand(2, 4, 3, 64, 64, generator=g)  # 2 sequences of 4 frames
    with torch.inference_mode():
        one_by_one = []
        for j in range(2):
            s = rec.prepare_key(keys[j:j + 1], key_bases[j:j + 1])
            one_by_one.append(torch.cat([rec.enhance(s, seq[j, t:t + 1]) for t in range(4)]))
            batched = rec.enhance(rec.prepare_key(keys[j:j + 1], key_bases[j:j + 1]), seq[j])
            assert torch.allclose(batched, one_by_one[j], atol=1e-5)  # in order, as one at a time
        s = rec.prepare_key(keys, key_bases)
        steps = torch.stack([rec.enhance(s, seq[:, t]) for t in range(4)], 1)
        assert torch.allclose(steps, torch.stack(one_by_one), atol=1e-5)
        with pytest.raises(InputError, match="2 keys take 2 frames"):
            rec.enhance(s, seq[0])
        with pytest.raises(InputError, match="its own prepare_key"):
            rec.enhance(create_model("enh-tiny").prepare_key(keys[:1], key_bases[:1]), seq[0])


def test_remember_puts_what_was_shown_in_the_memory():
    rec = _live(create_model("enh-tiny-rec"), seed=6)
    g = torch.Generator().manual_seed(7)
    key, key_base, base = (torch.rand(1, 3, 64, 64, generator=g) for _ in range(3))
    with torch.inference_mode():
        s = rec.prepare_key(key, key_base)
        rec.remember(s, base, base)
        assert isinstance(s, RecurrentState)
        assert s.memory[1][:, 48:].abs().max() == 0  # an upscaled base shown: no detail over itself
        c = s.copy()
        rec.enhance(c, base)
        assert s.memory[1][:, 48:].abs().max() == 0  # a copy moves on alone


def test_the_memory_branch_trains_through_an_unroll(pair):
    """Truncated back-propagation over 3 frames: the zero memory branch gets a gradient (so training moves it),
    and the loss of the last frame reaches the first frame's computation through the memory."""
    _, rec = pair
    rec = create_model("enh-tiny-rec")
    _live(rec)
    rec.train()
    g = torch.Generator().manual_seed(8)
    key, key_base = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    frames = torch.rand(3, 2, 3, 64, 64, generator=g, requires_grad=True)
    s = rec.prepare_key(key, key_base)
    outs = [rec.enhance(s, frames[t]) for t in range(3)]
    outs[-1].square().mean().backward()
    assert rec.mem_in.weight.grad.abs().sum() > 0
    assert frames.grad[0].abs().sum() > 0  # frame 0 reaches frame 2's loss only through the memory


# ------------------------------------------------------------------------------------------ in the hybrid mode

SETTINGS = dict(base_codec="hevc", base_factor=2, key_codec="png", keyint=6, chunk=3, scenecut=0, half_rate=False)


def _encode(loaded, frames, tmp_path, name="s.imf", hurt_at=(), **kw):
    """Encode with the guard, its decisions forced: the packets starting at ``hurt_at`` are sent as ``b`` records,
    the others enhanced (the mirror decodes them all as usual). Returns (path, the mirror's outputs: (first frame of
    the packet, probe, frames))."""
    probes = []
    orig_decode, orig_helps = HybridDecoder.decode, HybridEncoder._enhancer_helps

    def decode(self, packet, probe=None):
        out = orig_decode(self, packet, probe)
        if probe is not None:
            probes.append((packet.frame, list(probe), out))
        return out

    def helps(self, packet, sources):
        orig_helps(self, packet, sources)
        return packet.frame not in hurt_at

    path = tmp_path / name
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(HybridDecoder, "decode", decode)
        mp.setattr(HybridEncoder, "_enhancer_helps", helps)
        encode_frames_to_file(frames, path, fps=Fraction(25), model=loaded,
                              settings=EncoderSettings(**(SETTINGS | kw)))
    finally:
        mp.undo()
    return path, probes


def _with_enhance(path, enhance) -> bytes:
    """The stream at ``path`` with each base packet's enhancer switch set to ``enhance(packet)``."""
    header, packets = read_stream(path.read_bytes())
    buf = io.BytesIO()
    writer = StreamWriter(buf, header)
    for p in packets[:-1]:
        writer.write(dataclasses.replace(p, enhance=enhance(p)) if isinstance(p, BasePacket) else p)
    writer.close(packets[-1])
    return buf.getvalue()


def _frames(path, loaded, **kw):
    return [f for _, out in iter_decoded(path, model=loaded, **kw) for f in out]


@pytest.fixture(scope="module")
def live_rec():
    return _loaded(_live(create_model("enh-tiny-rec"), seed=11))


def test_the_encoders_mirror_is_the_decoder(live_rec, tmp_path):
    """With a recurrent enhancer the guard's mirror enhances every frame, so each probed frame it measured is
    the frame the decoder outputs, also after a ``b`` record (its memory: the upscaled base the decoder shows)."""
    src = _clip(12)
    path, probes = _encode(live_rec, src, tmp_path, hurt_at={0})
    _, packets = read_stream(path.read_bytes())
    assert [p.frame for p in packets if isinstance(p, BasePacket) and not p.enhance] == [0]
    out = _frames(path, live_rec)
    assert [(f, p) for f, p, _ in probes] == [(0, [1, 2]), (3, [1, 2]), (6, [1, 2]), (9, [1, 2])]
    for first, probe, frames in probes[1:]:  # (the b record's are the enhanced frames the decoder does not show)
        for i, f in zip(probe, frames):
            assert np.array_equal(f, out[first + i]), (first, i)
    # the b record changed what follows it: the memory held the upscaled base, not the enhanced frame (the same
    # bytes with the record enhanced for the reference: x265 does not code a clip to the same bytes every run)
    ref = _frames(_with_enhance(path, lambda p: True), live_rec)
    assert not np.array_equal(ref[3], out[3])
    assert all(np.array_equal(x, y) for x, y in zip(ref[6:], out[6:]))  # frame 6: a key frame resets the memory


def test_a_loss_is_recovered_exactly_at_the_next_key_frame(live_rec, tmp_path):
    """Concealment with a recurrent enhancer: the lost packet's frames and the rest of its GOP repeat the last
    good frame (they never enter the memory); the next key frame resets the memory, and from there every frame
    is the clean decode's, bit for bit (recovery within the key interval)."""
    path, _ = _encode(live_rec, _clip(12), tmp_path)
    data = path.read_bytes()
    clean = _frames(path, live_rec)
    assert [chr(t) for t, _ in split(data)] == list("HKBBKBBE")
    bad = damaged(data, 2)  # the first base packet (frames 0-2): its CRC fails
    outcome, n, report = decode_all(bad, live_rec, conceal=True)
    assert (outcome, n, report.concealed) == ("ok", 12, [0, 1, 2, 3, 4, 5])
    got = [f for _, out in iter_decoded(bad, model=live_rec, conceal=True) for f in out]
    assert all(np.array_equal(got[i], clean[i]) for i in range(6, 12))
    bad = damaged(data, 3)  # the second base packet (frames 3-5)
    got = [f for _, out in iter_decoded(bad, model=live_rec, conceal=True) for f in out]
    assert all(np.array_equal(got[i], clean[2]) for i in (3, 4, 5))
    assert all(np.array_equal(got[i], clean[i]) for i in list(range(3)) + list(range(6, 12)))


def test_the_same_stream_decodes_with_either_enhancer(pair, tmp_path):
    """A stream made with the single-frame enhancer decodes with the recurrent one (``enhancer=``, ``--enhancer``):
    warm-started and untrained in its memory it gives the same frames; a token stream refuses it."""
    from helpers import cli

    single, rec = pair
    path, _ = _encode(_loaded(single), _clip(8), tmp_path)
    a = _frames(path, _loaded(single))
    b = [f for _, out in iter_decoded(path, enhancer=_loaded(rec)) for f in out]
    assert len(a) == len(b) == 8 and all(np.array_equal(x, y) for x, y in zip(a, b))
    live = _loaded(_live(create_model("enh-tiny-rec"), seed=12))
    c = [f for _, out in iter_decoded(path, enhancer=live) for f in out]
    assert np.array_equal(c[0], a[0]) and not all(np.array_equal(x, y) for x, y in zip(a[1:], c[1:]))
    r = cli("decode", path, "-o", tmp_path / "o.y4m", "--enhancer", "random:enh-tiny-rec", "--model", "x")
    assert r.exit_code == 1 and "pass one" in r.stderr
    r = cli("decode", path, "-o", tmp_path / "o.y4m", "--enhancer", "random:enh-tiny-rec")
    assert r.exit_code == 0, r.output
    with pytest.raises(InputError, match="for hybrid streams"):
        from imfcodec.api import decoder_enhancer
        from imfcodec.bitstream import StreamHeader

        decoder_enhancer(StreamHeader(model="imf-tiny", weights_hash=bytes(16), width=64, height=64, fps_num=25,
                                      fps_den=1, frames=0, key_codec="png", key_quality=0, quality=0, chunk=1,
                                      token_dim=4, scale_indexes=(0,) * 4), "random:enh-tiny-rec")


def test_a_scene_cut_resets_the_memory(live_rec, tmp_path):
    """A scene cut is a key frame, so the memory restarts there: whatever the frames before it left in the memory
    (here: all shown without the enhancer, so the memory held upscaled bases), the frames from the cut on are the
    same; before the cut they differ."""
    from helpers import two_scene_frames

    path, _ = _encode(live_rec, np.stack(two_scene_frames(6, 6)), tmp_path, keyint=0, scenecut=10)
    header, packets = read_stream(path.read_bytes())
    assert [p.frame for p in packets if type(p).__name__ == "KeyPacket"] == [0, 6]
    a = _frames(path, live_rec)
    b = _frames(_with_enhance(path, lambda p: p.frame >= 6), live_rec)
    assert not np.array_equal(a[4], b[4])
    assert all(np.array_equal(x, y) for x, y in zip(a[6:], b[6:]))
