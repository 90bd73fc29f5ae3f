"""``invoke ca.issue / ca.revoke / ca.list`` as an operator runs them (subprocesses), good and bad input."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, tree
from test_issuance import hierarchy, legal_person, natural_person, write_csr  # noqa: F401 - fixture reused

from ceremony.ca.registry import Registry
from ceremony.definition.model import LoadedDefinition

pytestmark = pytest.mark.hsm
INVOKE = str(REPO / ".venv" / "bin" / "invoke")


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    # The hierarchy fixture put SOFTHSM2_CONF and the PIN variables in this process's environment.
    return subprocess.run([INVOKE, *args], cwd=REPO, capture_output=True, text=True, env=dict(os.environ),
                          timeout=300)


@pytest.fixture(scope="module")
def issued(hierarchy: tuple[LoadedDefinition, Path],  # noqa: F811 - the imported fixture
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Two certificates issued through the task into a fresh rehearsal directory and registry."""
    defn, cas = hierarchy
    base = tmp_path_factory.mktemp("ca-tasks")
    out, reg = base / "out", base / "out" / "qualified-registry.sqlite3"
    common = ("--definition", str(defn.path), "--out", str(out), "--issuer-cert", str(cas / "qualified.crt.pem"),
              "--rehearsal")
    first = invoke("ca.issue", "--profile", "qes-natural-person", "--csr",
                   str(write_csr(base / "awa.csr", natural_person())), "--new-registry", *common)
    second = invoke("ca.issue", "--profile", "eseal-legal-person", "--csr",
                    str(write_csr(base / "dgi.csr", legal_person())), *common)
    return {"defn": defn, "cas": cas, "base": base, "out": out, "registry": reg, "common": common,
            "results": (first, second)}


def serials(reg: Path) -> list[int]:
    with Registry.open(reg) as r:
        return [x.serial for x in r.list()]


def snapshot(reg: Path) -> list[tuple]:
    with Registry.open(reg) as r:
        return [(x.serial, x.status, x.reason, x.revoked_at) for x in r.list()]


def test_issue_prints_one_line_per_certificate(issued: dict) -> None:
    for result in issued["results"]:
        assert result.returncode == 0, result.stderr
        lines = [line for line in result.stdout.splitlines() if line.startswith("issued ")]
        assert len(lines) == 1, result.stdout
    assert len(serials(issued["registry"])) == 2
    names = tree(issued["out"])
    assert sum(n.endswith(".crt.pem") for n in names) == 2 and sum(n.endswith(".crt.der") for n in names) == 2


def test_list_shows_a_table(issued: dict) -> None:
    result = invoke("ca.list", "--registry", str(issued["registry"]))
    assert result.returncode == 0, result.stderr
    for serial in serials(issued["registry"]):
        assert format(serial, "x") in result.stdout
    assert "qes-natural-person" in result.stdout and "eseal-legal-person" in result.stdout
    assert "Awa Keita (REHEARSAL)" in result.stdout and "good" in result.stdout


@pytest.mark.parametrize(("args", "needles"), [
    (("--reason", "compromised"), ("'compromised' is not allowed", "allowed: unspecified, keyCompromise")),
    (("--reason", "removeFromCRL"), ("'removeFromCRL' is not allowed",)),
    (("--reason", "keyCompromise", "--invalidity-date", "2999-01-01"), ("in the future",)),
    (("--reason", "keyCompromise", "--invalidity-date", "last tuesday"), ("not an ISO 8601 date",)),
])
def test_revoke_bad_input_changes_nothing(issued: dict, args: tuple[str, ...], needles: tuple[str, ...]) -> None:
    reg = issued["registry"]
    before, manifest = snapshot(reg), (issued["out"] / "manifest.json").read_bytes()
    serial = format(serials(reg)[0], "x")
    result = invoke("ca.revoke", serial, *args, "--registry", str(reg), "--out", str(issued["out"]),
                    "--rehearsal")
    assert result.returncode == 9, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr
    assert snapshot(reg) == before and (issued["out"] / "manifest.json").read_bytes() == manifest


@pytest.mark.parametrize(("serial", "needle"), [("abcdef0123", "no certificate with serial abcdef0123"),
                                                ("not-hex", "not a hexadecimal serial")])
def test_revoke_unknown_or_malformed_serial(issued: dict, serial: str, needle: str) -> None:
    before = snapshot(issued["registry"])
    result = invoke("ca.revoke", serial, "--reason", "keyCompromise", "--registry", str(issued["registry"]))
    assert result.returncode == 9 and needle in result.stderr, result.stderr
    assert snapshot(issued["registry"]) == before


def test_revoke_then_again(issued: dict) -> None:
    reg, out = issued["registry"], issued["out"]
    target = serials(reg)[-1]
    args = ("ca.revoke", f"0x{target:X}", "--reason", "keyCompromise", "--invalidity-date", "2026-06-01T10:00:00Z",
            "--registry", str(reg), "--out", str(out), "--rehearsal")
    first = invoke(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"revoked {target:x} ") and "keyCompromise" in first.stdout
    with Registry.open(reg) as r:
        row = r.get(target)
        assert (row.status, row.reason, row.invalidity_date.isoformat()) == (
            "revoked", "keyCompromise", "2026-06-01T10:00:00+00:00")
        assert [x[0] for x in r.revoked_rows()] == [target]
    statuses = {a["status"] for a in json.loads((out / "manifest.json").read_text())["artifacts"]
                if a["kind"] == "end-entity-certificate" and a["serial"] == format(target, "x")}
    assert statuses == {"revoked"}
    before = snapshot(reg)
    again = invoke(*args[:3], "superseded", "--registry", str(reg))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"already revoked: {target:x}") and "nothing changed" in again.stdout
    assert snapshot(reg) == before
    listing = invoke("ca.list", "--registry", str(reg), "--status", "revoked")
    assert format(target, "x") in listing.stdout and "keyCompromise" in listing.stdout
    assert format(serials(reg)[0], "x") not in listing.stdout


def test_issue_without_registry_is_refused(issued: dict, tmp_path: Path) -> None:
    csr = write_csr(tmp_path / "a.csr", natural_person())
    out = tmp_path / "out"
    result = invoke("ca.issue", "--profile", "qes-natural-person", "--csr", str(csr), "--definition",
                    str(issued["defn"].path), "--out", str(out), "--issuer-cert",
                    str(issued["cas"] / "qualified.crt.pem"), "--rehearsal")
    assert result.returncode == 9 and "certificate registry not found" in result.stderr, result.stderr
    assert not (out / "qualified-registry.sqlite3").exists()
    assert not any(p.name.endswith(".crt.pem") for p in out.rglob("*")) if out.exists() else True


def test_production_issue_into_rehearsal_directory_is_refused(issued: dict, tmp_path: Path) -> None:
    csr = write_csr(tmp_path / "a.csr", natural_person())
    before = tree(issued["out"])
    reg_before = snapshot(issued["registry"])
    common = [a for a in issued["common"] if a != "--rehearsal"]
    result = invoke("ca.issue", "--profile", "qes-natural-person", "--csr", str(csr), *common)
    assert result.returncode == 4 and "never mix rehearsal and production" in result.stderr, result.stderr
    assert tree(issued["out"]) == before and snapshot(issued["registry"]) == reg_before


def test_corrupt_registry_and_bad_status(tmp_path: Path) -> None:
    bad = tmp_path / "registry.sqlite3"
    bad.write_bytes(b"garbage" * 1000)
    result = invoke("ca.list", "--registry", str(bad))
    assert result.returncode == 9 and "corrupt" in result.stderr, result.stderr
    assert bad.read_bytes() == b"garbage" * 1000
    Registry.open(tmp_path / "ok.sqlite3", create=True).close()
    result = invoke("ca.list", "--registry", str(tmp_path / "ok.sqlite3"), "--status", "expired")
    assert result.returncode == 9 and "allowed: good, revoked" in result.stderr, result.stderr
