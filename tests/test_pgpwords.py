"""The PGP word list: known examples, table shape, round trip and the errors a listener catches."""

from __future__ import annotations

import pytest

from ceremony.common.pgpwords import EVEN_WORDS, ODD_WORDS, from_words, hex_to_words, lines, to_words

# The example published with the PGP word list (a 20-byte fingerprint read as 20 words).
KNOWN = ("E58294F2E9A227486E8B061B31CC528FD7FA3F19",
         "topmost Istanbul Pluto vagabond treadmill Pacific brackish dictator goldfish Medusa afflict bravado "
         "chatter revolver Dupont midsummer stopwatch whimsical cowbell bottomless")


def test_known_example() -> None:
    assert " ".join(hex_to_words(KNOWN[0])) == KNOWN[1]
    assert from_words(KNOWN[1].split()) == bytes.fromhex(KNOWN[0])


def test_table_ends_and_shape() -> None:
    assert len(EVEN_WORDS) == len(ODD_WORDS) == 256
    assert (EVEN_WORDS[0], ODD_WORDS[0]) == ("aardvark", "adroitness")
    assert (EVEN_WORDS[255], ODD_WORDS[255]) == ("Zulu", "Yucatan")
    assert (EVEN_WORDS[0x80], ODD_WORDS[0x80]) == ("merit", "intention")
    folded = [w.casefold() for w in EVEN_WORDS + ODD_WORDS]
    assert len(set(folded)) == 512, "every word is distinct, across both lists"


def test_position_decides_the_list() -> None:
    assert to_words(b"\x00\x00") == ["aardvark", "adroitness"]
    assert to_words(b"\xff\xff\xff") == ["Zulu", "Yucatan", "Zulu"]


def test_round_trip_all_bytes() -> None:
    data = bytes(range(256)) + bytes(reversed(range(256)))
    assert from_words(to_words(data)) == data
    assert from_words([w.upper() for w in to_words(data)]) == data


def test_a_dropped_word_is_caught() -> None:
    words = hex_to_words(KNOWN[0])
    with pytest.raises(ValueError, match="word is missing or repeated"):
        from_words(words[:3] + words[4:])


def test_lines_for_paper() -> None:
    head = "ab" * 32
    out = lines(head)
    assert len(out) == 4 and out[0].startswith("1: ") and len(out[0].split()) == 9
