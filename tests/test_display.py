"""What the people in the room see is byte for byte what is in the files.

Every fingerprint form of many random certificates goes through the real consoles the ceremonies
use (the console recorder's ``say``, the transcript recorder's chain-head panel, prompts) and the
screen is compared character by character with the value. Rich would otherwise print ``8B:CD:80``
as ``8B💿80`` and drop ``[x]`` from a subject.
"""

from __future__ import annotations

import datetime as dt
import io
import random
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from rich.panel import Panel
from rich.prompt import Prompt
from rich.text import Text

from ceremony.common.display import make_console
from ceremony.common.fingerprints import announce, colon_form, read_aloud, sha256_hex
from ceremony.common.manifest import Manifest
from ceremony.transcript.recorder import ConsoleRecorder

# Values that Rich reads as markup or emoji when they are not shown as data.
TRAPS = [":CD:", ":AB:", ":cd:", "[bold]", "[/]", "[red]x[/red]", ":smile:", "[link=x]y[/link]", "\\[", ":1234:"]


def _screen(print_to: object) -> str:
    return print_to.file.getvalue()  # type: ignore[attr-defined]


def _certificate(key: ec.EllipticCurvePrivateKey, cn: str, serial: int) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.COUNTRY_NAME, "ML")])
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))


def test_every_fingerprint_form_of_many_certificates_is_shown_exactly() -> None:
    rnd = random.Random(20261206)
    key = ec.generate_private_key(ec.SECP256R1())
    console = make_console(file=io.StringIO(), width=200)
    recorder = ConsoleRecorder(rehearsal=False, console=console)
    expected: list[str] = []
    with_colon_emoji_code = 0
    for i in range(400):
        cn = f"CA {i} {rnd.choice(TRAPS)} {rnd.choice(TRAPS)}"
        cert = _certificate(key, cn, rnd.getrandbits(150) | 1)
        der = cert.public_bytes(serialization.Encoding.DER)
        digest = sha256_hex(der)
        colon = colon_form(digest)
        with_colon_emoji_code += any(f":{c}:" in colon for c in ("CD", "AB", "DVD", "CL"))
        block = announce(f"Root certificate {cert.subject.rfc4514_string()}", der)
        recorder.say(block)
        expected.append(block)
        for line in (colon, digest, *read_aloud(digest)):
            recorder.say(line)
            expected.append(line)
    screen = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    want = "\n".join(expected).splitlines()
    assert with_colon_emoji_code > 20, "the sample must contain colon forms Rich reads as emoji codes"
    assert len(screen) == len(want)
    for shown, value in zip(screen, want, strict=True):
        assert shown.rstrip() == value, f"shown {shown!r}, value {value!r}"


def test_openssl_form_that_rich_turns_into_an_emoji_by_default() -> None:
    """The regression itself: a default Rich console changes this value, ours does not."""
    from rich.console import Console

    value = "8B:CD:80:AD:AB:1C"
    default = Console(file=io.StringIO(), highlight=False, width=80)
    default.print(value)
    assert default.file.getvalue().strip() != value  # type: ignore[attr-defined]  # proves the trap is real
    ours = make_console(file=io.StringIO(), width=80)
    ours.print(value)
    assert ours.file.getvalue().strip() == value  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", [*TRAPS, "CN=Sous-AC [qualifiée] :CD:, O=SCSE", "/tmp/out/[x]/:AB:/root.crt.pem"])
def test_panels_rules_tables_and_prompts_show_data_exactly(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    console = make_console(file=io.StringIO(), width=200)
    console.print(Panel(Text(value), title=Text(value), expand=False))
    console.rule(Text(value))
    monkeypatch.setattr("builtins.input", lambda *a: "ok")
    Prompt.ask(Text(f"Roles of {value}"), console=console)
    screen = console.file.getvalue()  # type: ignore[attr-defined]
    assert screen.count(value) >= 3, screen
    assert f"Roles of {value}" in screen


def test_transcript_recorder_shows_names_and_paths_exactly(tmp_path: Path) -> None:
    """The transcript's chain-head panel and a step whose description holds markup-like data."""
    from ceremony.transcript.chain import TranscriptRecorder

    console = make_console(file=io.StringIO(), width=200)
    head = "8bcd80adab1c" + "0" * 52
    TranscriptRecorder.show_head(type("R", (), {"console": console})(), "End of act ':CD:[x]'", head)  # type: ignore[arg-type]
    screen = console.file.getvalue()  # type: ignore[attr-defined]
    assert "End of act ':CD:[x]'" in screen and head[:32] in screen


def test_manifest_takes_paths_relative_to_the_working_directory(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """``--out out/trial`` (relative, as the README writes it): the file is out/trial/x, not out/trial/out/trial/x."""
    monkeypatch.chdir(tmp_path)
    out = Path("out/trial")
    out.mkdir(parents=True)
    (out / "pki.yml").write_text("x")
    entry = Manifest(out, rehearsal=False).add("pki-definition", out / "pki.yml", "yaml")
    assert entry["path"] == "pki.yml"
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("y")
    from ceremony.common.errors import OutputError

    with pytest.raises(OutputError, match="not inside the output directory"):
        Manifest(out, rehearsal=False).add("x", outside, "txt")
