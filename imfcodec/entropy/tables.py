"""Probability tables for the token coder, built so that every machine gets the same integers.

Why not ``GaussianConditional.update()``: it evaluates ``torch.erfc`` in float32, whose result may
depend on the SIMD kernel (SLEEF AVX2 / AVX-512 / scalar) and the libm of the machine. It happens
to agree between thread counts and ISA levels here, but nothing guarantees it, and one differing
CDF entry silently breaks a decode. So the tables are computed here with plain Python floats and
only the four IEEE-754 basic operations (+ - * /, correctly rounded on every IEEE platform; CPython
never fuses them into FMAs) plus ``math.ldexp`` (exact). No libm function is called.

Every table is then checked against a SHA-256 prefix recorded in this file (``_DIGESTS``); a
platform that computed anything differently raises instead of writing or reading broken streams.

Table layout (what ``compressai.ans`` expects): a table for scale ``s`` covers the integers
``-K..K`` with ``K = max(1, ceil(TAIL_SIGMAS * s))``. The two end symbols ``+-K`` carry the whole
tail mass beyond them and act as *escapes*: the coder sends the remainder ``|d| - K`` with the
auxiliary tables below. The cdf list is ``[0, c_1, ..., c_M = 65536, 65536]`` (``M = 2K + 1``
coded symbols, each with frequency >= 1) followed by a final *zero-frequency* symbol. That last
symbol is compressai's "bypass" sentinel: because it has frequency 0 the rANS decoder can never
decode it (its search stops at the first cdf entry > cum_freq), so compressai's bypass path, whose
reads are unbounded on garbage input, is unreachable. The encoder never hands it a value outside
``-K..K`` either.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

from ..errors import IMFError

PRECISION = 16  # compressai.ans codes with 16-bit frequencies
TOTAL = 1 << PRECISION

SCALE_MIN = 0.11
SCALE_MAX = 256.0  # approximately: SCALE_MIN * exp(_LOG_RATIO)
NUM_SCALES = 64
TAIL_SIGMAS = 6.0

_LOG_RATIO = 7.752452357669283  # ln(256 / 0.11), written as a literal so no libm call is needed
_LN2_HI = 0.693145751953125  # Cody-Waite split of ln 2: _LN2_HI has few bits, so k * _LN2_HI is exact
_LN2_LO = 1.4286068203094173e-06
_INV_SQRT_2PI = 0.3989422804014327


def _exp(y: float) -> float:
    """exp(y) from basic operations only (deterministic; ~1e-16 relative error is plenty here)."""
    k = int(round(y / 0.6931471805599453))
    r = (y - k * _LN2_HI) - k * _LN2_LO  # |r| <= ~0.35
    term = 1.0
    total = 1.0
    for n in range(1, 25):
        term = term * r / n
        total = total + term
    return math.ldexp(total, k)


def _upper_tail(x: float) -> float:
    """Q(x) = P(N(0,1) > x) for x >= 0, via Phi(x) - 1/2 = phi(x) * sum x^(2n+1) / (2n+1)!!.

    All series terms are positive, so the sum is accurate; the final subtraction costs only
    absolute precision (~1e-17), which is all a 16-bit table needs.
    """
    if x >= 9.0:  # Q(9) ~ 1e-19: far below one count in 65536
        return 0.0
    x2 = x * x
    term = x
    total = x
    n = 1
    while term > total * 1e-18:
        term = term * x2 / (2 * n + 1)
        total = total + term
        n += 1
    q = 0.5 - _exp(-0.5 * x2) * _INV_SQRT_2PI * total
    return q if q > 0.0 else 0.0


@lru_cache(maxsize=1)
def scale_table() -> tuple[float, ...]:
    """The NUM_SCALES Gaussian scales (in quantization steps), log-spaced from SCALE_MIN to ~256.

    Only the encoder compares floats against this table (``params.scale_indexes``); the decoder
    receives integer indexes.
    """
    return tuple(SCALE_MIN * _exp(i * _LOG_RATIO / (NUM_SCALES - 1)) for i in range(NUM_SCALES))


def half_width(index: int) -> int:
    """K for table ``index``: symbols -K..K, with +-K the escapes."""
    s = scale_table()[index]
    return max(1, int(math.ceil(TAIL_SIGMAS * s)))


def _quantize_pmf(pmf: list[float]) -> list[int]:
    """Float pmf -> integer frequencies summing to TOTAL, each >= 1 (largest-remainder rounding,
    ties broken by position, so the result is a pure function of the floats)."""
    m = len(pmf)
    avail = TOTAL - m
    scaled = [p * avail for p in pmf]
    freqs = [1 + int(v) for v in scaled]
    left = TOTAL - sum(freqs)
    order = sorted(range(m), key=lambda i: (-(scaled[i] - int(scaled[i])), i))
    while left > 0:
        for i in order[:left]:
            freqs[i] += 1
        left = TOTAL - sum(freqs)
    while left < 0:  # cannot happen for a pmf summing to <= 1; kept so the sum is guaranteed
        i = max(range(m), key=lambda j: (freqs[j], -j))
        freqs[i] -= 1
        left += 1
    return freqs


@dataclass(frozen=True)
class Table:
    """One compressai-ready table: ``cdf`` has ``size = 2K + 3`` entries, ``offset = -K``."""

    cdf: tuple[int, ...]
    offset: int
    half_width: int

    @property
    def size(self) -> int:
        return len(self.cdf)

    def freqs(self) -> list[int]:
        """Frequency of each coded symbol -K..K (the zero-frequency sentinel excluded)."""
        return [self.cdf[i + 1] - self.cdf[i] for i in range(self.size - 2)]


def _cdf_from_freqs(freqs: list[int]) -> tuple[int, ...]:
    cdf = [0]
    for f in freqs:
        cdf.append(cdf[-1] + f)
    assert cdf[-1] == TOTAL and all(f >= 1 for f in freqs) and max(freqs) < TOTAL
    cdf.append(TOTAL)  # zero-frequency sentinel: compressai's bypass symbol, never decodable
    return tuple(cdf)


def _table_digest(t: Table) -> str:
    text = f"{t.offset}:" + ",".join(map(str, t.cdf))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_gaussian_table(index: int) -> Table:
    """Discretised zero-mean Gaussian with scale ``scale_table()[index]``, tails folded into +-K.

    p(k) = Q((|k| - 1/2) / s) - Q((|k| + 1/2) / s) for 0 < |k| < K, p(0) = 1 - 2 Q(1/(2s)),
    p(+-K) = Q((K - 1/2) / s).
    """
    s = scale_table()[index]
    k_max = half_width(index)
    q = [_upper_tail((j + 0.5) / s) for j in range(k_max)]  # q[j] = Q((j + 1/2) / s)
    side = [q[j - 1] - q[j] for j in range(1, k_max)] + [q[k_max - 1]]  # |k| = 1..K
    pmf = side[::-1] + [1.0 - 2.0 * q[0]] + side
    freqs = _quantize_pmf([p if p > 0.0 else 0.0 for p in pmf])
    return Table(_cdf_from_freqs(freqs), -k_max, k_max)


@lru_cache(maxsize=None)
def gaussian_table(index: int) -> Table:
    """Cached, digest-checked table for scale index ``index`` (0..NUM_SCALES-1)."""
    if not 0 <= index < NUM_SCALES:
        raise ValueError(f"scale index {index} outside 0..{NUM_SCALES - 1}")
    t = build_gaussian_table(index)
    if _DIGESTS and _table_digest(t) != _DIGESTS[index]:
        raise IMFError(f"entropy table {index} differs from the reference on this platform; "
                       "streams would not be portable")
    return t


# Auxiliary tables for escapes and padding (fixed integers, nothing computed).
NB_MAX = 16  # an escape remainder is < 2**16 because tokens are int16 (|delta| <= 65534)


@lru_cache(maxsize=1)
def nbits_table() -> Table:
    """Bit length nb = 0..16 of an escape remainder; P(nb) = 2^-(nb+1) (an Elias-gamma-like prior)."""
    freqs = [1 << (PRECISION - 1 - nb) for nb in range(NB_MAX)] + [1]
    return Table(_cdf_from_freqs(freqs), 0, 0)


@lru_cache(maxsize=1)
def nibble_table() -> Table:
    """Uniform 4-bit symbols: the low bits of an escape remainder."""
    return Table(_cdf_from_freqs([TOTAL // 16] * 16), 0, 0)


@lru_cache(maxsize=1)
def filler_table() -> Table:
    """Two symbols, frequencies 65535 and 1: symbol 0 costs ~2e-5 bits. Used to pad tiny chunks to
    a minimum symbol count (compressai's encoder output buffer holds one word per symbol)."""
    return Table(_cdf_from_freqs([TOTAL - 1, 1]), 0, 0)


def all_table_digests() -> list[str]:
    """Digests of all Gaussian tables as computed now (used to create/verify ``_DIGESTS``)."""
    return [_table_digest(build_gaussian_table(i)) for i in range(NUM_SCALES)]


# SHA-256 prefixes of the 64 Gaussian tables (regenerate with all_table_digests() only together
# with a stream format version bump: old streams would not decode with new tables).
_DIGESTS: tuple[str, ...] = (
    "7c6d1848e5816519", "2e912543a2743c34", "4672f80efc7d08c8", "52c669f354a9e419",
    "ef74165e1278434b", "ec9bccaaf38b87e9", "d619cd9d60deb3e4", "64bbb0cc6bd475ef",
    "61c021f69646eee6", "3c32ffb7b846744e", "8bbeb6e00bf9f3c9", "237a3d059bdb5114",
    "b78ecf73c2b22977", "6d9ac049ab85bc8e", "0c1280601409cbdc", "d532bc86a3ade399",
    "2894806739ef79d1", "185bd1c69c1c1169", "1a34ab7481d436b2", "72a7c990a38e4e7e",
    "d920d9a33e5cf6c7", "db6116cc5daa9c32", "a7b520ba3cfa877f", "4e2ee01622fbaaa5",
    "87cc792b1ed07e35", "704879a98a312148", "d15b652ce250b137", "358d7f8093e804aa",
    "b129bdda4c197d47", "9092ee133506f4db", "70229244e9748a12", "3de9fd6c2f76b384",
    "cdbdc97506e9b12c", "80902fa53c628b07", "813cd99ddc16c23e", "6aaa57894350f1ef",
    "a8b85c791d7ae785", "b39e3aa901a0a184", "2d1e1072757635aa", "a8ba9ee70a56b0f2",
    "07e22dcbec20a1df", "949fb4de21fda427", "6f630757456f8d52", "bfa2638d3e03e159",
    "9981105d350bb70c", "a14bb0eb8d98aa68", "e99c2587459287e0", "2e7febd199330353",
    "487268547d71011c", "100c558814beab00", "089e8500c737b99a", "3a5e6c6083e5d768",
    "b3a89e20b73e4e2f", "28ed273e9afca73c", "8c54d1e0812f19bd", "26d02b7af555845f",
    "365a70774601ebde", "8794ac356cd8c462", "500c822e3e3a88c4", "ee2fbb8ac33d8afa",
    "8eb6e743751e4730", "c4a4972d27c3eeec", "cbe1b2f7f0d59727", "f0110b44745053c2",
)
