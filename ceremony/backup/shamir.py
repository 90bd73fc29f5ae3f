"""Shamir's secret sharing over GF(2^8), byte by byte: split a secret into N shares, any M recover it.

Why a small implementation of our own rather than a library: the scheme is forty lines of field
arithmetic, the maintained Python packages for it are either unmaintained, pull in large
dependencies, or use a different field, and an auditor can read this module in full. It is
tested against the GF(2^8) multiplication examples of FIPS-197 (section 4.2), the AES
inverse table, hand-computed shares, and exhaustive recombination (``tests/test_shamir.py``).

Field: GF(2^8) with the AES reduction polynomial x^8 + x^4 + x^3 + x + 1 (0x11B). Each byte of
the secret is the constant term of its own random polynomial of degree M-1; share *i* holds the
value of every polynomial at x = i (1 <= i <= 255). Any M shares give the constant terms back by
Lagrange interpolation at x = 0; M-1 shares say nothing about the secret.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

AES_POLYNOMIAL = 0x11B


def _build_tables() -> tuple[list[int], list[int]]:
    """Exponent and logarithm tables for the generator 0x03 of GF(2^8)*."""
    exp = [0] * 510
    log = [0] * 256
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        # multiply x by the generator 0x03: x*2 xor x, reduced by the AES polynomial
        x2 = x << 1
        if x2 & 0x100:
            x2 ^= AES_POLYNOMIAL
        x = x2 ^ x
    for i in range(255, 510):
        exp[i] = exp[i - 255]
    return exp, log


_EXP, _LOG = _build_tables()


def gf_mul(a: int, b: int) -> int:
    """Product in GF(2^8) modulo the AES polynomial."""
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def gf_inv(a: int) -> int:
    """Multiplicative inverse in GF(2^8); 0 has none."""
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    return _EXP[255 - _LOG[a]]


def gf_div(a: int, b: int) -> int:
    return gf_mul(a, gf_inv(b))


def _eval(coefficients: Sequence[int], x: int) -> int:
    """Horner's rule; ``coefficients[0]`` is the constant term."""
    y = 0
    for c in reversed(coefficients):
        y = gf_mul(y, x) ^ c
    return y


@dataclass(frozen=True)
class RawShare:
    """One point per secret byte, all at the same x (the share's index)."""

    index: int
    value: bytes


def split(secret: bytes, threshold: int, count: int,
          randbytes: Callable[[int], bytes] = secrets.token_bytes) -> list[RawShare]:
    """Split ``secret`` into ``count`` shares, any ``threshold`` of which recover it.

    ``randbytes`` supplies the random coefficients (the ceremony passes the HSM's generator).
    """
    if not secret:
        raise ValueError("nothing to split: the secret is empty")
    if not 2 <= threshold <= count <= 255:
        raise ValueError(f"need 2 <= threshold <= count <= 255 (threshold {threshold}, count {count})")
    random = randbytes(len(secret) * (threshold - 1))
    if len(random) != len(secret) * (threshold - 1):
        raise ValueError("the random generator returned too few bytes")
    polys = [[byte, *random[i * (threshold - 1):(i + 1) * (threshold - 1)]] for i, byte in enumerate(secret)]
    return [RawShare(x, bytes(_eval(p, x) for p in polys)) for x in range(1, count + 1)]


def _lagrange_at_zero(points: Sequence[tuple[int, int]]) -> int:
    total = 0
    for j, (xj, yj) in enumerate(points):
        num, den = 1, 1
        for m, (xm, _) in enumerate(points):
            if m != j:
                num = gf_mul(num, xm)          # (0 - xm) = xm in characteristic 2
                den = gf_mul(den, xj ^ xm)     # (xj - xm) = xj xor xm
        total ^= gf_mul(yj, gf_div(num, den))
    return total


def _eval_at(shares: Sequence[RawShare], x: int, byte: int) -> int:
    """Value at ``x`` of the polynomial through the shares' points for secret byte ``byte``."""
    total = 0
    for j, sj in enumerate(shares):
        num, den = 1, 1
        for m, sm in enumerate(shares):
            if m != j:
                num = gf_mul(num, x ^ sm.index)
                den = gf_mul(den, sj.index ^ sm.index)
        total ^= gf_mul(sj.value[byte], gf_div(num, den))
    return total


def combine(shares: Sequence[RawShare], threshold: int) -> bytes:
    """Recover the secret from at least ``threshold`` shares.

    Uses the first ``threshold`` shares and checks that every further share lies on the same
    polynomials, so that a wrong extra share is detected rather than silently ignored.
    """
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} share(s) given, {threshold} needed")
    indexes = [s.index for s in shares]
    if any(not 1 <= i <= 255 for i in indexes):
        raise ValueError("share indexes run from 1 to 255")
    if len(set(indexes)) != len(indexes):
        raise ValueError("the same share index is given twice")
    if len({len(s.value) for s in shares}) != 1:
        raise ValueError("the shares have different lengths")
    base = list(shares[:threshold])
    secret = bytes(_lagrange_at_zero([(s.index, s.value[b]) for s in base]) for b in range(len(base[0].value)))
    for extra in shares[threshold:]:
        if any(_eval_at(base, extra.index, b) != extra.value[b] for b in range(len(secret))):
            raise ValueError(f"share {extra.index} does not agree with the others")
    return secret
