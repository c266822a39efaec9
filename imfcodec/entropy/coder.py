"""Temporal token coder: integer deltas between consecutive tokens, rANS-coded with compressai.ans.

Stream of one chunk (n frames, C channels), all in ONE rANS string (one flush per chunk):
  1. n*C main symbols, frame-major: d = q_i - q_{i-1} clipped to -K_c..K_c, table = the Gaussian
     table picked by the channel's integer scale index (from the stream header);
  2. for every main symbol equal to +-K_c (an escape, same order): nb = bit length of the
     remainder r = |d| - K_c (0..16, table ``nbits_table``);
  3. for every escape with nb >= 2: the nb - 1 bits below r's leading one, as ceil((nb-1)/4)
     4-bit symbols, least significant first (table ``nibble_table``);
  4. filler symbols (free) up to MIN_SYMBOLS, for compressai's encoder buffer; never decoded.

Safety contract of ``decode_chunk`` (compressai.ans does no bounds checks at all):
  * n, token_dim, prev_q and len(data) are validated first (length a multiple of 4, >= 8, and no
    longer than any encoder output for n frames could be);
  * the decoder reads 8 bytes at init and at most one 4-byte word per decoded symbol; with the
    zero-frequency bypass sentinel (see tables.py) no other read is reachable. The bytes are
    zero-padded to 8 + 4 * (maximum symbol count) before compressai sees them, so no read can
    leave the buffer, whatever the bytes are;
  * garbage bytes therefore give garbage integers (or CorruptStreamError when they are detectably
    inconsistent: non-canonical escapes, tokens outside int16). The container CRC is what detects
    corruption; this layer only guarantees no crash, no hang, bounded work.

The uint32 words are written in the machine's byte order by compressai; every platform torch
supports is little-endian.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..bitstream.format import MAX_CHUNK, MAX_TOKEN_DIM  # wire limits: the container format owns them
from ..errors import CorruptStreamError, IMFError, InputError
from . import params
from .quant import Q_MAX
from .tables import (
    NB_MAX,
    NUM_SCALES,
    Table,
    filler_table,
    gaussian_table,
    nbits_table,
    nibble_table,
)

MIN_SYMBOLS = 8  # compressai's encoder allocates one output word per symbol; 8 symbols always fit
SYMBOLS_PER_VALUE = 2 + (NB_MAX - 1 + 3) // 4  # main + nb + nibbles, worst case (= 6)


def _load_ans() -> Any:
    """compressai.ans, loaded straight from its extension file when compressai is not imported yet.

    ``import compressai`` pulls in torchvision and every model (~7 s); the rANS extension only
    needs libstdc++. It is registered as ``compressai.ans`` so a later ``import compressai`` reuses
    it instead of initialising the pybind module twice.
    """
    if "compressai.ans" in sys.modules:
        return sys.modules["compressai.ans"]
    try:
        spec = importlib.util.find_spec("compressai")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("compressai not found")
        for folder in spec.submodule_search_locations:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = f"{folder}/ans{suffix}"
                try:
                    open(path, "rb").close()
                except OSError:
                    continue
                loader = importlib.machinery.ExtensionFileLoader("compressai.ans", path)
                mspec = importlib.util.spec_from_file_location("compressai.ans", path, loader=loader)
                module = importlib.util.module_from_spec(mspec)
                loader.exec_module(module)
                sys.modules["compressai.ans"] = module
                return module
    except ImportError:
        pass
    from compressai import ans  # fallback: the ordinary (slow) import

    return ans


_ANS: Any = None


def ans() -> Any:
    global _ANS
    if _ANS is None:
        _ANS = _load_ans()
    return _ANS


class TokenCoder:
    """Codes chunks of integer tokens as deltas under per-channel Gaussian tables.

    Stateless apart from its tables; inputs and outputs are numpy int arrays and bytes. The only
    things the decoder needs are in the stream header: token_dim and the scale indexes.
    """

    def __init__(self, token_dim: int, scale_indexes: Sequence[int]) -> None:
        if isinstance(token_dim, bool) or not isinstance(token_dim, (int, np.integer)) \
                or not 1 <= token_dim <= MAX_TOKEN_DIM:
            raise InputError(f"token_dim must be in 1..{MAX_TOKEN_DIM}, got {token_dim!r}")
        idx = list(scale_indexes)
        if len(idx) != token_dim:
            raise InputError(f"need {token_dim} scale indexes, got {len(idx)}")
        for i in idx:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < NUM_SCALES:
                raise InputError(f"scale index must be an integer in 0..{NUM_SCALES - 1}, got {i!r}")
        self.token_dim = int(token_dim)
        self.scale_indexes: tuple[int, ...] = tuple(int(i) for i in idx)

        # compressai gets only the tables this coder uses: local ids 0..u-1 for the Gaussians in
        # use, then nbits, nibble and filler tables.
        used = sorted(set(self.scale_indexes))
        local = {g: j for j, g in enumerate(used)}
        tables: list[Table] = [gaussian_table(g) for g in used]
        self._nb_id, self._nib_id, self._fill_id = len(tables), len(tables) + 1, len(tables) + 2
        tables += [nbits_table(), nibble_table(), filler_table()]
        self._cdfs = [list(t.cdf) for t in tables]
        self._sizes = [t.size for t in tables]
        self._offsets = [t.offset for t in tables]
        self._chan_ids = [local[g] for g in self.scale_indexes]
        self._k = np.array([gaussian_table(g).half_width for g in self.scale_indexes], dtype=np.int64)

    @classmethod
    def from_header(cls, token_dim: int, scale_indexes: Sequence[int]) -> "TokenCoder":
        """Same as the constructor, but bad values are reported as CorruptStreamError."""
        try:
            return cls(token_dim, scale_indexes)
        except InputError as e:
            raise CorruptStreamError(f"stream header: {e}") from None

    # ------------------------------------------------------------------ encoder-side choices
    @staticmethod
    def fit_scale_indexes(deltas: np.ndarray) -> list[int]:
        """Per channel, the table that codes these integer deltas [N, C] in the fewest bits
        (exact table costs, escapes included). Encoder only; for two-pass encoding."""
        d = np.asarray(deltas, dtype=np.int64)
        if d.ndim != 2 or d.shape[0] == 0:
            raise InputError(f"deltas must be [N, C] with N >= 1, got shape {d.shape}")
        costs = np.stack([table_bits(d, np.full(d.shape[1], g)) for g in range(NUM_SCALES)])
        return [int(i) for i in np.argmin(costs, axis=0)]

    # ------------------------------------------------------------------ coding
    def encode_chunk(self, prev_q: np.ndarray, qs: np.ndarray) -> bytes:
        """n frames of integer tokens [n, C] (after prev_q, [C]) -> one rANS string."""
        prev = self._check_prev(prev_q)
        q = np.asarray(qs)
        if q.ndim != 2 or q.shape[1] != self.token_dim or not 1 <= q.shape[0] <= MAX_CHUNK \
                or not np.issubdtype(q.dtype, np.integer):
            raise InputError(f"tokens must be integer [1..{MAX_CHUNK}, {self.token_dim}], got {q.dtype} {q.shape}")
        q = q.astype(np.int64)
        if np.abs(q).max() > Q_MAX:
            raise InputError(f"token values must be within +-{Q_MAX}")
        n = q.shape[0]
        d = np.diff(np.concatenate([prev[None, :], q]), axis=0)
        k = self._k[None, :]
        main = np.clip(d, -k, k)
        symbols = main.reshape(-1).tolist()
        indexes = self._chan_ids * n
        nbs: list[int] = []
        nibbles: list[int] = []
        esc = np.abs(d) >= k
        for r in (np.abs(d) - k)[esc].tolist():
            nb = int(r).bit_length()
            nbs.append(nb)
            low = r - (1 << (nb - 1)) if nb else 0
            for _ in range(_nibble_count(nb)):
                nibbles.append(low & 15)
                low >>= 4
        symbols += nbs + nibbles
        indexes += [self._nb_id] * len(nbs) + [self._nib_id] * len(nibbles)
        pad = MIN_SYMBOLS - len(symbols)
        if pad > 0:
            symbols += [0] * pad
            indexes += [self._fill_id] * pad
        out = ans().RansEncoder().encode_with_indexes(symbols, indexes, self._cdfs, self._sizes, self._offsets)
        if not 8 <= len(out) <= 4 * len(symbols):  # cannot happen: every symbol costs <= 16 bits
            raise IMFError("rANS encoder produced an impossible length")
        return bytes(out)

    def decode_chunk(self, prev_q: np.ndarray, data: bytes, n: int) -> np.ndarray:
        """Inverse of encode_chunk: -> int32 [n, C]. Never reads outside ``data`` (see module doc)."""
        prev = self._check_prev(prev_q)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_CHUNK:
            raise CorruptStreamError(f"token packet frame count {n!r} outside 1..{MAX_CHUNK}")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InputError("token data must be bytes")
        data = bytes(data)
        n = int(n)
        count = n * self.token_dim
        max_symbols = max(MIN_SYMBOLS, SYMBOLS_PER_VALUE * count)
        if len(data) < 8 or len(data) % 4 or len(data) > 4 * max_symbols:
            raise CorruptStreamError(f"token packet of {len(data)} bytes is impossible for {n} frames")
        padded = data + bytes(8 + 4 * max_symbols - len(data))
        try:
            dec = ans().RansDecoder()
            dec.set_stream(padded)
            main = np.array(self._decode(dec, self._chan_ids * n), dtype=np.int64).reshape(n, self.token_dim)
            k = np.broadcast_to(self._k[None, :], main.shape)
            esc = np.abs(main) == k
            d = main.copy()
            if esc.any():
                nbs = self._decode(dec, [self._nb_id] * int(esc.sum()))
                counts = [_nibble_count(nb) for nb in nbs]
                nib = self._decode(dec, [self._nib_id] * sum(counts))
                rems, pos = [], 0
                for nb, c in zip(nbs, counts):
                    low = 0
                    for j in range(c):
                        low |= nib[pos + j] << (4 * j)
                    pos += c
                    if nb > NB_MAX or (nb and low >= 1 << (nb - 1)):
                        raise CorruptStreamError("token packet holds a malformed escape")
                    rems.append((1 << (nb - 1)) + low if nb else 0)
                d[esc] = np.sign(main[esc]) * (k[esc] + np.array(rems, dtype=np.int64))
        except CorruptStreamError:
            raise
        except Exception as e:  # anything compressai raises on odd input
            raise CorruptStreamError(f"token packet could not be decoded ({type(e).__name__})") from None
        q = prev[None, :] + np.cumsum(d, axis=0)
        if np.abs(q).max() > Q_MAX:
            raise CorruptStreamError("token packet decodes to out-of-range tokens")
        return q.astype(np.int32)

    def _decode(self, dec: Any, indexes: list[int]) -> list[int]:
        if not indexes:
            return []
        return dec.decode_stream(indexes, self._cdfs, self._sizes, self._offsets)

    def _check_prev(self, prev_q: np.ndarray) -> np.ndarray:
        p = np.asarray(prev_q)
        if p.shape != (self.token_dim,) or not np.issubdtype(p.dtype, np.integer):
            raise InputError(f"prev_q must be integer [{self.token_dim}], got {p.dtype} {p.shape}")
        p = p.astype(np.int64)
        if p.size and np.abs(p).max() > Q_MAX:
            raise InputError(f"prev_q values must be within +-{Q_MAX}")
        return p


def _nibble_count(nb: int) -> int:
    """4-bit symbols carrying the nb - 1 bits under the leading one of an escape remainder."""
    return (nb - 1 + 3) // 4 if nb > 1 else 0


def table_bits(deltas: np.ndarray, scale_indexes: Sequence[int]) -> np.ndarray:
    """Exact ideal code length in bits, per channel, of integer deltas [N, C] under the given
    tables (escapes included; the rANS flush of ~4-8 bytes per chunk is not)."""
    d = np.asarray(deltas, dtype=np.int64)
    out = np.zeros(d.shape[1])
    for c, g in enumerate(scale_indexes):
        t = gaussian_table(int(g))
        k = t.half_width
        cost = -np.log2(np.asarray(t.freqs(), dtype=np.float64) / 65536.0)
        col = d[:, c]
        main = np.clip(col, -k, k)
        bits = cost[main + k].sum()
        nb_cost = -np.log2(np.asarray(nbits_table().freqs(), dtype=np.float64) / 65536.0)
        for r in (np.abs(col) - k)[np.abs(col) >= k].tolist():
            nb = int(r).bit_length()
            bits += nb_cost[min(nb, NB_MAX)] + 4 * _nibble_count(nb)
        out[c] = bits
    return out


def measure_chunk_overhead(chunk_sizes: Sequence[int] = (1, 2, 5, 10, 25), frames: int = 250,
                           token_dim: int = 32, fps: float = 25.0, seed: int = 0) -> list[dict]:
    """Real coded sizes of a synthetic token sequence for several chunk lengths.

    Tokens follow a random walk whose per-channel delta std is drawn from 1..3 steps; tables are
    chosen from the true std. Returns one row per chunk size: bytes, bytes/frame, kbit/s at
    ``fps``, and the ideal (flush-free) bytes/frame for comparison.
    """
    rng = np.random.default_rng(seed)
    std = rng.uniform(1.0, 3.0, token_dim)
    deltas = np.rint(rng.standard_normal((frames, token_dim)) * std).astype(np.int64)
    key = np.zeros(token_dim, dtype=np.int64)
    qs = (key[None, :] + np.cumsum(deltas, axis=0)).astype(np.int32)
    idx = params.scale_indexes(std)
    coder = TokenCoder(token_dim, idx)
    ideal = float(table_bits(deltas, idx).sum()) / 8.0 / frames
    rows = []
    for c in chunk_sizes:
        total, prev = 0, key.astype(np.int32)
        for s in range(0, frames, c):
            data = coder.encode_chunk(prev, qs[s:s + c])
            total += len(data)
            prev = qs[min(s + c, frames) - 1]
        bpf = total / frames
        rows.append({"chunk": c, "bytes": total, "bytes_per_frame": bpf,
                     "kbps": bpf * 8 * fps / 1000.0, "ideal_bytes_per_frame": ideal})
    return rows
