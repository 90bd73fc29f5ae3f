"""Shamir's scheme over GF(2^8): field arithmetic against FIPS-197, hand-computed shares, recombination."""

from __future__ import annotations

import itertools
import random

import pytest

from ceremony.backup.shamir import RawShare, combine, gf_inv, gf_mul, split


def test_multiplication_matches_fips_197_examples() -> None:
    # FIPS-197 section 4.2: {57} . {83} = {c1}; section 4.2.1: xtime chain of {57}, and {57} . {13} = {fe}.
    assert gf_mul(0x57, 0x83) == 0xC1
    assert [gf_mul(0x57, m) for m in (0x02, 0x04, 0x08, 0x10)] == [0xAE, 0x47, 0x8E, 0x07]
    assert gf_mul(0x57, 0x13) == 0xFE


def test_inverses_match_the_aes_table() -> None:
    # Entries of the multiplicative-inverse table used to build the AES S-box: {53}^-1 = {ca}, {03}^-1 = {f6}.
    assert gf_inv(0x53) == 0xCA and gf_inv(0xCA) == 0x53
    assert gf_inv(0x03) == 0xF6 and gf_inv(0x01) == 0x01
    assert all(gf_mul(a, gf_inv(a)) == 1 for a in range(1, 256))
    with pytest.raises(ZeroDivisionError):
        gf_inv(0)


def test_multiplication_is_a_field() -> None:
    rng = random.Random(7)
    for _ in range(500):
        a, b, c = rng.randrange(256), rng.randrange(256), rng.randrange(256)
        assert gf_mul(a, b) == gf_mul(b, a)
        assert gf_mul(a, b ^ c) == gf_mul(a, b) ^ gf_mul(a, c)
        assert gf_mul(gf_mul(a, b), c) == gf_mul(a, gf_mul(b, c))


def test_hand_computed_two_of_three() -> None:
    """f(x) = 0x53 + 0xCA x. By hand: 0xCA . 2 = 0x194 xor 0x11B = 0x8F, 0xCA . 3 = 0x8F xor 0xCA = 0x45,
    so f(1) = 0x53 xor 0xCA = 0x99, f(2) = 0x53 xor 0x8F = 0xDC, f(3) = 0x53 xor 0x45 = 0x16."""
    shares = split(b"\x53", 2, 3, randbytes=lambda n: b"\xca" * n)
    assert shares == [RawShare(1, b"\x99"), RawShare(2, b"\xdc"), RawShare(3, b"\x16")]
    for pair in itertools.combinations(shares, 2):
        assert combine(list(pair), 2) == b"\x53"


def test_every_quorum_recovers_a_32_byte_secret() -> None:
    rng = random.Random(42)
    secret = bytes(rng.randrange(256) for _ in range(32))
    shares = split(secret, 3, 5)
    for k in (3, 4, 5):
        for subset in itertools.combinations(shares, k):
            assert combine(list(subset), 3) == secret


def test_fewer_than_threshold_reveal_nothing() -> None:
    """With M-1 shares every secret byte stays possible: for each candidate there is a third share that
    makes the quorum recover exactly that candidate."""
    shares = split(b"\x42", 3, 5)
    two = shares[:2]
    recovered = set()
    for guess in range(256):
        # the polynomial through (0, guess) and the two shares, evaluated at x = 3
        third = split_point([(0, guess), (two[0].index, two[0].value[0]), (two[1].index, two[1].value[0])], 3)
        recovered.add(combine([*two, RawShare(3, bytes([third]))], 3)[0])
    assert recovered == set(range(256))
    with pytest.raises(ValueError, match="2 share\\(s\\) given, 3 needed"):
        combine(two, 3)


def split_point(points: list[tuple[int, int]], x: int) -> int:
    """Lagrange evaluation at ``x``, written out independently of the module under test."""
    total = 0
    for j, (xj, yj) in enumerate(points):
        term = yj
        for m, (xm, _) in enumerate(points):
            if m != j:
                term = gf_mul(term, gf_mul(x ^ xm, gf_inv(xj ^ xm)))
        total ^= term
    return total


def test_two_shares_of_a_three_threshold_give_a_wrong_secret_when_forced() -> None:
    secret = b"secret-of-32-bytes-for-the-test!"
    shares = split(secret, 3, 5)
    assert combine(shares[:2], 2) != secret


def test_wrong_extra_share_is_detected() -> None:
    shares = split(b"0123456789abcdef", 2, 4)
    bad = RawShare(shares[3].index, bytes([shares[3].value[0] ^ 1]) + shares[3].value[1:])
    with pytest.raises(ValueError, match="share 4 does not agree"):
        combine([shares[0], shares[1], bad], 2)


@pytest.mark.parametrize(("threshold", "count"), [(1, 3), (4, 3), (2, 256)])
def test_bad_parameters(threshold: int, count: int) -> None:
    with pytest.raises(ValueError, match="threshold"):
        split(b"x", threshold, count)


def test_duplicate_index_refused() -> None:
    shares = split(b"xy", 2, 3)
    with pytest.raises(ValueError, match="twice"):
        combine([shares[0], shares[0]], 2)
