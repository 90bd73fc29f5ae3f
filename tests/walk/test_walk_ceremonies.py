"""The production path, walked in order on one operator checkout, as the README and the docs write it.

root key ceremony → subordinate key → signing at the root → root CRL batch → key backup → key restore
→ issuance → revocation → CRL → renewal (tried first without the new validity) → re-key (Ctrl-C once) → its
certification at the root → issuance and CRLs under both keys → CP/CPS; each step checked with independent tools
(openssl, pkcs11-tool) and the auditor's own command (``invoke audit.verify``).

The tests of this module run in file order and build on each other (one workspace per module); a
step whose predecessor did not leave what it needs is skipped, naming what is missing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .conftest import (
    ADMIN,
    AUDITOR,
    CEREMONY_CAST,
    OFFICER_1,
    OFFICER_2,
    REPO,
    SECURITY_OFFICER,
    SYSTEM_PATH,
    WITNESS,
    Operator,
    Terminal,
    Workspace,
    add_token,
    bug,
    custodians,
    on_screen,
    openssl,
    openssl_fingerprint,
    terminal_texts,
    text_pattern,
    unchanged,
)

# The command lines are taken from README.md (the operator's table) and, where it abbreviates them, from
# the docs it points to; the placeholders (FILE, SERIAL, LABEL, …) are filled in as an operator would.
DOCS_BUILD = "invoke docs.build --env production"   # docs/policy.md
DOCS_CHECK = "invoke docs.check --env production"   # docs/policy.md
RESTORE_TOKEN = "scse-root-2"  # docs/key-backup.md's --target-token

# One workspace per module, steps in order: keep the module on one worker under xdist (--dist loadgroup).
pytestmark = [pytest.mark.walk, pytest.mark.xdist_group("walk-ceremonies")]



@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    """What earlier steps of the walk left for later ones (transcripts, serials, share files)."""
    return {}


def documented(prefix: str, text: str | None = None) -> str:
    """The one command of README.md (or ``text``) written in backquotes that starts with ``prefix``."""
    source = text if text is not None else (REPO / "README.md").read_text(encoding="utf-8")
    prose = re.sub(r"^```.*?^```", "", source, flags=re.M | re.S)  # fenced blocks are not inline code
    inline = [" ".join(c.split()) for c in re.findall(r"`([^`]+)`", prose)]  # an inline span may break a line
    found = sorted({c for c in inline if c.startswith(prefix)})
    assert len(found) == 1, f"README.md should give one `{prefix}…` command, it gives {found}"
    return found[0]


def fill(command: str, *pairs: tuple[str, str]) -> str:
    """``command`` with each placeholder replaced, checking that it was there."""
    for placeholder, value in pairs:
        assert placeholder in command, f"{placeholder!r} is no longer in the documented command {command!r}"
        command = command.replace(placeholder, value, 1)
    return command


def next_command(term: Terminal) -> str:
    """The command the end-of-ceremony summary gives for what comes next (its last indented command)."""
    found = re.findall(r"^ {2,}(invoke \S.*)$", term.screen, re.M)
    assert found, "the summary gives no next command\n" + term.describe()
    return found[-1].strip()


def keep_screen(state: dict[str, Any], name: str, term: Terminal) -> None:
    state.setdefault("screens", {})[name] = term.screen


def need(state: dict[str, Any], *keys: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        pytest.skip(f"an earlier step of the walk did not complete: {', '.join(missing)}")


def transcript_of(term: Terminal) -> str:
    """The transcript the ceremony announced on screen (relative to the checkout)."""
    paths = [f["path"] for f in on_screen(term.screen, "transcript", "path")]
    assert len(paths) == 1 and paths[0].endswith(".jsonl"), "no transcript announced on screen\n" + term.describe()
    return paths[0]


def records(ws: Workspace, transcript: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (ws.root / transcript).read_text(encoding="utf-8").splitlines()]


def witnessed(ws: Workspace, transcript: str) -> list[str]:
    """Steps the Internal Witness confirmed, from the transcript."""
    return [r["step"] for r in records(ws, transcript)
            if r["type"] == "step-end" and (r.get("witness") or {}).get("confirmed") is True]


def openssl_forms(term: Terminal) -> set[str]:
    """Every fingerprint shown in the OpenSSL form, exactly as on screen (the rest of its line)."""
    return set(re.findall(r"OpenSSL form: (.*)$", term.screen, re.M)) | set(
        re.findall(r"^ +((?:[0-9A-F]{2}:){31}[0-9A-F]{2})$", term.screen, re.M))


def colon(data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, 64, 2))


def check_summary(ws: Workspace, term: Terminal) -> None:
    """Each "SHA-256  path" line the summary shows is the file's real SHA-256 (as sha256sum prints it)."""
    for digest, path in re.findall(r"^ +([0-9a-f]{64})  (\S.*)$", term.screen, re.M):
        assert hashlib.sha256((ws.root / path).read_bytes()).hexdigest() == digest, f"{path}: shown {digest}"


def audit_verify(ws: Workspace, transcript: str, expect: int = 0) -> Terminal:
    """The auditor's check, as README.md writes it, anchored in the root the root ceremony published (its
    fingerprint was read aloud and compared: test_root_ceremony)."""
    command = fill(documented("invoke audit.verify "), ("TRANSCRIPT", transcript),
                   ("ROOT", "out/production/root.crt.pem"), ("DIR", "out/production"))
    term = ws.run(command, check=False)
    assert term.exit_status == expect, f"audit.verify: exit {term.exit_status}, expected {expect}\n" + term.describe()
    return term


def listed(ws: Workspace, path: str) -> list[dict[str, Any]]:
    rel = Path(path).relative_to("out/production").as_posix() if path.startswith("out/production/") else path
    return [a for a in ws.manifest().get("artifacts", []) if a["path"] == rel]


def definition(ws: Workspace) -> dict[str, Any]:
    return yaml.safe_load((ws.root / "inventory" / "production" / "pki.yml").read_text(encoding="utf-8"))


# --- the commands are the documented ones ------------------------------------------------------------

def test_documented_commands() -> None:
    """Every command the walks type is one README.md (or the doc it points to) gives the operator."""
    for prefix in ("invoke ceremony.check", "invoke ceremony.offline-check", "invoke ceremony.preflight ",
                   "invoke ceremony.script ", "invoke ceremony.root ", "invoke ceremony.subordinate-key ",
                   RENEW, REKEY, CERTIFY_REKEY, TERMINATE, OCSP_SIGNER, OCSP_SIGN,
                   "invoke ceremony.sign-subordinate ", "invoke crl.root-batch --env", "invoke backup.create ",
                   "invoke backup.restore ", "invoke ca.issue ", "invoke ca.revoke ", "invoke ca.list",
                   "invoke crl.sign ", "invoke audit.verify "):
        documented(prefix)
    policy = (REPO / "docs" / "policy.md").read_text(encoding="utf-8")
    assert DOCS_BUILD.removeprefix("invoke ") in policy and DOCS_CHECK.removeprefix("invoke ") in policy


# --- 0. before the day: offline check, pre-flight, the paper script ----------------------------------

def test_before_the_ceremony(workspace: Workspace, state: dict[str, Any]) -> None:
    """What the README has the operator do first: confirm the namespace is offline, run the pre-flight
    alone (it changes nothing), print the paper script the Internal Witness follows."""
    ws = workspace
    with unchanged(ws):
        term = ws.run(documented("invoke ceremony.offline-check"))
        assert "loopback" in term.screen, term.describe()
        term = ws.run(documented("invoke ceremony.preflight "))
        assert not term.prompts and "[FAIL]" not in term.screen, term.describe()
    ws.run(documented("invoke ceremony.script "))
    printed = sorted(p.name for p in (ws.out / "scripts").glob("root-key-generation.*"))
    assert {"root-key-generation.fr.pdf", "root-key-generation.en.pdf"} <= set(printed), printed
    for name in printed:
        entry = listed(ws, f"scripts/{name}")
        assert entry and entry[0]["sha256"] == hashlib.sha256((ws.out / "scripts" / name).read_bytes()).hexdigest()
    state["paper-script"] = printed


# --- 1. the root key ceremony ------------------------------------------------------------------------

def test_root_ceremony(workspace: Workspace, state: dict[str, Any]) -> None:
    ws = workspace
    term = ws.run(documented("invoke ceremony.root "), Operator(people=list(CEREMONY_CAST)))
    keep_screen(state, "root", term)
    cert = ws.out / "root.crt.pem"
    assert cert.is_file(), term.describe()
    # Independent checks: a self-signed root that OpenSSL accepts strictly.
    proc = openssl("verify", "-x509_strict", "-CAfile", "root.crt.pem", "root.crt.pem", cwd=ws.out)
    assert proc.returncode == 0 and proc.stdout.strip() == "root.crt.pem: OK", proc.stdout + proc.stderr
    # The fingerprint read aloud is, character for character, the one OpenSSL computes from the file; the
    # only other one on screen is the key's (SPKI), also exactly the file's.
    # Beside them, the transcript-sealing key (SPKI) and its certificate, also exactly the files'.
    sealing = x509.load_pem_x509_certificate((ws.out / "root.seal.crt.pem").read_bytes())
    sealing_spki = sealing.public_key().public_bytes(serialization.Encoding.DER,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    assert openssl_forms(term) == {openssl_fingerprint(cert), colon((ws.out / "root.pub.der").read_bytes()),
                                   colon(sealing_spki), openssl_fingerprint(ws.out / "root.seal.crt.pem")}, \
        f"on screen {openssl_forms(term)}, openssl {openssl_fingerprint(cert)}"
    check_summary(ws, term)
    assert next_command(term) == documented("invoke ceremony.subordinate-key ")
    # The witness was asked at the terminal, confirmed the steps that matter, and copied every chain head.
    transcript = transcript_of(term)
    assert {"offline-check", "token-open", "key-generate", "certificate-sign",
            "fingerprint-read-aloud"} <= set(witnessed(ws, transcript)), term.confirmations
    assert len(term.asked("witness")) == len(witnessed(ws, transcript))
    heads = [r for r in records(ws, transcript) if r["type"] == "act-end"]
    assert heads and all(r["confirmed"] for r in heads) and len(term.asked("head")) == len(heads)
    # The transcript is listed in the manifest, and the auditor's check accepts it.
    assert (ws.root / transcript).is_file()
    assert [a["kind"] for a in listed(ws, transcript)] == ["transcript"], ws.manifest()
    for rel in ("root.crt.pem", "root.crt.der", "root.pub.pem", "root.pub.der"):
        assert listed(ws, rel), f"{rel} not in the manifest"
    audit_verify(ws, transcript)
    # The transcript's header records the paper script the witness followed (the copy printed before).
    if "paper-script" in state:
        header = records(ws, transcript)[0]
        recorded = {Path(p["path"]).name: p["sha256"] for p in header.get("paper_script", [])}
        assert set(state["paper-script"]) <= set(recorded), header.get("paper_script")
    # The key is on the token, once, and nowhere else; beside it, once, the transcript-sealing key.
    objects = ws.token_objects("root")
    label = ws.key_label("root")
    assert sorted(o for o in objects if "Private Key Object" in o) == [
        f"Private Key Object label:      {label}", f"Private Key Object label:      {label}-seal"], objects
    state["root"] = transcript


# --- 2. the subordinate key, then the signing ceremony at the root -------------------------------------

def test_subordinate_key_ceremony(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "root")
    ws = workspace
    term = ws.run(documented("invoke ceremony.subordinate-key "))
    keep_screen(state, "subordinate-key", term)
    csr = ws.out / "qualified.csr.pem"
    assert csr.is_file(), term.describe()
    proc = openssl("req", "-in", "qualified.csr.pem", "-noout", "-verify", cwd=ws.out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The key fingerprints shown on screen are the SHA-256 of the public key files' DER, and nothing else: the CA
    # key's and the transcript-sealing key's (whose certificate the root issues at the signing ceremony).
    sealing = serialization.load_pem_public_key((ws.out / "qualified.seal.pub.pem").read_bytes())
    assert openssl_forms(term) == {colon((ws.out / "qualified.pub.der").read_bytes()), colon(sealing.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))}, term.describe()
    check_summary(ws, term)
    assert next_command(term) == documented("invoke ceremony.sign-subordinate ")
    transcript = transcript_of(term)
    assert listed(ws, transcript)
    # Sealed by the subordinate key, which has no certificate yet: the seal verifies, but nothing ties its key
    # to the root until the signing ceremony: not anchored (exit 4), never "intact".
    term = audit_verify(ws, transcript, expect=4)
    assert term.screen.lstrip().startswith("NOT ANCHORED"), term.describe()
    state["subordinate-key"] = transcript


def test_pin_the_subordinate_key_as_the_example_says(workspace: Workspace, state: dict[str, Any]) -> None:
    """production.example says: "spki_sha256: <fill in from the subordinate key ceremony; the signing
    ceremony then refuses any other key>". The operator does so between the two ceremonies, with the key
    fingerprint read aloud at the key ceremony, and checks the definition."""
    need(state, "subordinate-key")
    ws = workspace
    screen = state["screens"]["subordinate-key"]
    lines = re.findall(r"^ +\d: ((?:[0-9A-F]{4} ){3}[0-9A-F]{4})$", screen, re.M)
    read_aloud = "".join(lines[-4:]).replace(" ", "").lower()  # the last block read aloud: the key's
    assert read_aloud == hashlib.sha256((ws.out / "qualified.pub.der").read_bytes()).hexdigest()
    pki = ws.root / "inventory" / "production" / "pki.yml"
    text = pki.read_text(encoding="utf-8")
    placeholder = re.search(r"^( *)# spki_sha256: <fill in[^>]*>$", text, re.M)
    assert placeholder, "production.example no longer has the spki_sha256 placeholder"
    pki.write_text(text.replace(placeholder.group(0), f"{placeholder.group(1)}spki_sha256: {read_aloud}"),
                   encoding="utf-8")
    term = ws.run(fill(documented("invoke ceremony.check"), ("ENV", "production")))
    assert "valid" in term.screen, term.describe()
    state["pinned"] = read_aloud


def test_signing_ceremony(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "subordinate-key")
    ws = workspace
    command = documented("invoke ceremony.sign-subordinate ")
    csr = re.search(r"--csr (\S+)", command).group(1)  # type: ignore[union-attr]
    assert (ws.root / csr).is_file(), f"the README's --csr {csr} is not where the subordinate key ceremony wrote it"
    term = ws.run(command)
    keep_screen(state, "sign-subordinate", term)
    state["sign"] = transcript_of(term)
    assert "csr-verify" in witnessed(ws, state["sign"])
    # The CSRs' keys (as the subordinate key ceremony showed them) and the new certificates, exactly.
    sealing = serialization.load_pem_public_key((ws.out / "qualified.seal.pub.pem").read_bytes())
    assert openssl_forms(term) == {openssl_fingerprint(ws.out / "qualified.crt.pem"),
                                   colon((ws.out / "qualified.pub.der").read_bytes()),
                                   openssl_fingerprint(ws.out / "qualified.seal.crt.pem"),
                                   colon(sealing.public_bytes(serialization.Encoding.DER,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo))}, \
        openssl_forms(term)
    proc = openssl("verify", "-x509_strict", "-CAfile", "root.crt.pem", "qualified.seal.crt.pem", cwd=ws.out)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the root, not the subordinate, certifies its sealing key
    check_summary(ws, term)
    assert next_command(term) == documented("invoke crl.root-batch --env")
    proc = openssl("verify", "-x509_strict", "-CAfile", "root.crt.pem", "qualified.crt.pem", cwd=ws.out)
    assert proc.returncode == 0 and proc.stdout.strip() == "qualified.crt.pem: OK", proc.stdout + proc.stderr
    audit_verify(ws, state["sign"])
    # now that its certificate exists, the subordinate key ceremony's transcript is anchored in the root
    if "subordinate-key" in state:
        audit_verify(ws, state["subordinate-key"])


# --- 3. root CRLs, backup and restore, issuance, revocation, CRL, CP/CPS -------------------------------

def test_root_crl_batch(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "root")
    ws = workspace
    term = ws.run(documented("invoke crl.root-batch --env"))
    keep_screen(state, "root-batch", term)
    count = definition(ws)["cas"]["root"]["crl"]["batch_count"]
    # One line per CRL: "root CRL N: thisUpdate → nextUpdate (E entries) PATH" (DER; PEM beside it).
    listed_crls = re.findall(r"^root CRL (\d+)(?: of \S+)?: .* \((\d+) entries\) (\S+)$", term.screen, re.M)
    assert [int(n) for n, _, _ in listed_crls] == list(range(1, count + 1)), term.describe()
    crls = []
    for _, _, der in listed_crls:
        assert (ws.root / der).is_file(), der
        proc = openssl("crl", "-inform", "DER", "-in", der, "-noout", "-CAfile", "out/production/root.crt.pem",
                       cwd=ws.root)
        assert proc.returncode == 0 and "verify OK" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        assert listed(ws, der), f"{der} not in the manifest"
        crls.append(der)
    audit_verify(ws, transcript_of(term))
    state["root-crls"] = crls
    state["publish-root"] = next_command(term)


def test_publish_the_root_crl_in_force(workspace: Workspace, state: dict[str, Any]) -> None:
    """What the batch's summary says to run next (docs/crl.md: crl.publish-root), with its defaults."""
    need(state, "publish-root")
    ws = workspace
    command = state["publish-root"]
    assert command.startswith("invoke crl.publish-root ") and "--env production" in command, command
    term = ws.run(command)
    m = re.search(r"^root CRL (\d+)(?: of \S+)? published: (\S+) ", term.screen, re.M)
    assert m and m.group(1) == "1", term.describe()  # the only one whose thisUpdate has passed
    published = ws.root / m.group(2)
    assert published.read_bytes() == (ws.root / state["root-crls"][0]).read_bytes()
    pem = m.group(2) + ".pem"
    state["root-crl-published"] = pem if (ws.root / pem).is_file() else m.group(2)


def _custodian_names(ws: Workspace, ca: str) -> list[str]:
    return list(definition(ws)["cas"][ca]["backup"]["custodians"])


def test_key_backup(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "root")
    ws = workspace
    names = _custodian_names(ws, "root")
    bags = {name: f"SN-0047{i:02d}" for i, name in enumerate(names, 1)}
    command = fill(documented("invoke backup.create "), ("--bag 'NAME=SERIAL' …", " ".join(
        f"--bag {shlex.quote(f'{n}={s}')}" for n, s in bags.items())))
    people = [ADMIN, WITNESS, OFFICER_1, OFFICER_2, SECURITY_OFFICER, *custodians(names), AUDITOR]
    term = ws.run(command, Operator(people=people))
    keep_screen(state, "backup", term)
    shares = dict(re.findall(r"^\s*share for (.+?) \(bag [^)]*\): (\S+)", term.screen, re.M))
    assert set(shares) == set(names), term.describe()
    backup = ws.out / "backup" / "root.key-backup.json"
    assert backup.is_file()
    body = json.loads(backup.read_text(encoding="utf-8"))
    assert body["quorum"]["threshold"] == definition(ws)["cas"]["root"]["backup"]["threshold"]
    assert [c["bag"] for c in body["quorum"]["custodians"]] == [bags[n] for n in names]
    # The wrapping key is gone from the token: only the CA key pair is left.
    objects = ws.token_objects("root")
    assert not [o for o in objects if "Secret Key" in o], objects
    audit_verify(ws, transcript_of(term))
    state["backup"] = ("out/production/backup/root.key-backup.json",
                       [shares[n] for n in names], names)


def _restore_command(ws: Workspace, state: dict[str, Any], token: str) -> tuple[str, list[Any]]:
    backup, shares, names = state["backup"]
    threshold = ws.definition()["cas"]["root"]["backup"]["threshold"]
    command = fill(documented("invoke backup.restore "), ("--backup FILE", f"--backup {backup}"),
                   ("--share FILE …", " ".join(f"--share {s}" for s in shares[:threshold])),
                   ("LABEL", token))
    return command, [ADMIN, WITNESS, OFFICER_1, OFFICER_2, *custodians(names[:threshold]), AUDITOR]


def test_key_restore_onto_a_mistyped_token(workspace: Workspace, state: dict[str, Any]) -> None:
    """The operator mistypes the target token's label: refused before anyone signs in, nothing written."""
    need(state, "backup")
    ws = workspace
    command, people = _restore_command(ws, state, RESTORE_TOKEN.upper() + "-typo")
    with unchanged(ws):
        term = ws.run(command, Operator(people=people), check=False)
    assert term.exit_status != 0, term.describe()
    assert "Traceback" not in term.screen
    assert RESTORE_TOKEN.upper() + "-typo" in term.screen, term.describe()
    assert not term.prompts, "the missing token was found after the sign-in\n" + term.describe()
    state["restore-typo"] = term


def test_key_restore_onto_a_mistyped_token_names_the_option(state: dict[str, Any]) -> None:
    need(state, "restore-typo")
    term = state["restore-typo"]
    fixes = [line.strip() for line in term.screen.splitlines() if line.strip().startswith("fix:")]
    assert fixes, term.describe()
    assert all("--target-token" in f for f in fixes), "\n".join(fixes)


def test_key_restore(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "backup")
    ws = workspace
    add_token(ws, RESTORE_TOKEN, like_ca="root")
    assert ws.token_objects("root", label=RESTORE_TOKEN) == []
    command, people = _restore_command(ws, state, RESTORE_TOKEN)
    term = ws.run(command, Operator(people=people))
    keep_screen(state, "restore", term)
    objects = ws.token_objects("root", label=RESTORE_TOKEN)
    key_label = definition(ws)["cas"]["root"]["hsm"]["key_label"]
    assert any("Private Key" in o and key_label in o for o in objects), objects
    reports = list((ws.out / "backup").glob(f"root.restore-{RESTORE_TOKEN}*.json"))
    assert reports, term.describe()
    audit_verify(ws, transcript_of(term))
    state["restore-screen"] = term.screen


def test_root_key_restore_checks_offline(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "restore-screen")
    preflight = [line for line in state["restore-screen"].splitlines() if line.startswith("[")]
    assert preflight, "no pre-flight shown"
    assert any("offline" in line for line in preflight), "\n".join(preflight)


def _subscriber_csr(ws: Workspace) -> Path:
    requests = ws.root / "requests"
    requests.mkdir(exist_ok=True)
    proc = openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                   "-keyout", "awa-keita.key.pem", "-out", "awa-keita.csr.pem", "-utf8",
                   "-subj", "/C=ML/GN=Awa/SN=Keita/serialNumber=IDCML-0123456789/CN=Awa Keita", cwd=requests)
    assert proc.returncode == 0, proc.stderr
    return requests / "awa-keita.csr.pem"


def test_issue_certificate(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "sign")
    ws = workspace
    _subscriber_csr(ws)
    # README: `invoke ca.issue --ca qualified --profile qes-natural-person --csr FILE …`; the "…" as
    # docs/issuance.md gives it for the first issuance.
    term = ws.run(fill(documented("invoke ca.issue "), ("FILE", "requests/awa-keita.csr.pem"),
                       ("…", "--env production --new-registry")))
    m = re.search(r"^issued ([0-9a-f]+) (.*?) \(qes-natural-person, until [0-9-]+\): (\S+) (\S+)$", term.screen, re.M)
    assert m, term.describe()
    serial, pem = m.group(1), ws.root / m.group(3)
    assert pem.is_file()
    proc = openssl("verify", "-x509_strict", "-CAfile", "out/production/root.crt.pem", "-untrusted",
                   "out/production/qualified.crt.pem", str(pem.relative_to(ws.root)), cwd=ws.root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shown = openssl("x509", "-in", str(pem), "-noout", "-serial").stdout.strip().split("=", 1)[1]
    assert int(shown, 16) == int(serial, 16)
    assert openssl_fingerprint(pem) in openssl_forms(term) or not openssl_forms(term), term.describe()
    state["issued"] = (serial, pem.relative_to(ws.root).as_posix())


def test_revoke_certificate(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "issued")
    ws = workspace
    serial, _ = state["issued"]
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    term = ws.run(fill(documented("invoke ca.revoke "), ("SERIAL", serial),
                       ("[--invalidity-date DATE]", f"--invalidity-date {yesterday}")))
    assert re.search(rf"^revoked {serial} ", term.screen, re.M), term.describe()
    # The message names the command that publishes the revocation, and that command is complete.
    m = re.search(r"publish a CRL within 24 hours: (.*)$", term.screen, re.M)
    assert m and "--ca qualified" in m.group(1), "the revoke message does not give a complete crl.sign line\n" \
        + term.describe()
    state["revoked"] = serial
    # The registry as the README lists it.
    listing = ws.run(documented("invoke ca.list"))
    row = [line for line in listing.screen.splitlines() if serial in line]
    assert row and "revoked" in row[0] and "keyCompromise" in row[0], listing.describe()


def test_sign_crl(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "revoked")
    ws = workspace
    term = ws.run(fill(documented("invoke crl.sign "), ("…", "--env production")))  # docs/crl.md
    m = re.search(r"^CRL (\d+) of 'qualified' signed and published \((\d+) entries.*\): (\S+)", term.screen, re.M)
    assert m and m.group(2) == "1", term.describe()
    crl = ws.root / (m.group(3) + ".pem")
    assert crl.is_file(), crl
    _, pem = state["issued"]
    proc = openssl("verify", "-crl_check", "-CAfile", "out/production/root.crt.pem", "-untrusted",
                   "out/production/qualified.crt.pem", "-CRLfile", str(crl.relative_to(ws.root)), pem, cwd=ws.root)
    assert proc.returncode != 0 and "certificate revoked" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    # And the whole chain, with the root CRL in force for the subordinate CA certificate.
    root_crl = state.get("root-crl-published")
    if root_crl:
        proc = openssl("verify", "-crl_check_all", "-CAfile", "out/production/root.crt.pem", "-untrusted",
                       "out/production/qualified.crt.pem", "-CRLfile", str(crl.relative_to(ws.root)),
                       "-CRLfile", root_crl, pem, cwd=ws.root)
        assert "certificate revoked" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    state["crl"] = crl


def test_crl_is_not_dated_before_its_revocations(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "crl")
    from cryptography import x509

    crl = x509.load_pem_x509_crl(state["crl"].read_bytes())
    late = [format(r.serial_number, "x") for r in crl if r.revocation_date_utc > crl.last_update_utc]
    assert not late, f"thisUpdate {crl.last_update_utc:%H:%M:%SZ} precedes the revocation of {late}"


# --- 4. the life cycle: re-key (interrupted once), certification at the root, both keys in service -----------

REKEY = "invoke ceremony.rekey-subordinate "
CERTIFY_REKEY = "invoke ceremony.certify-rekey "


def _current_step(term: Terminal) -> str:
    steps = re.findall(r"^▶ .*\((?P<id>[a-z0-9-]+) ?;", term.screen, re.M)
    return steps[-1] if steps else ""


RENEW = "invoke ceremony.renew-subordinate "


def test_renewal_at_the_root(workspace: Workspace, state: dict[str, Any]) -> None:
    """README: extend `cas.qualified.validity` in the definition first, then renew at the root. Tried first without
    the extension (the mistake): refused, nothing written. Then generation 2: the same key, a new serial and the
    new end, accepted by openssl under the root."""
    need(state, "crl")
    ws = workspace
    with unchanged(ws):
        term = ws.run(documented(RENEW), check=False)
    assert term.exit_status != 0 and not term.prompts and "Traceback" not in term.screen, term.describe()
    assert "validity" in term.screen, term.describe()
    pki = ws.root / "inventory" / "production" / "pki.yml"
    text = pki.read_text(encoding="utf-8")
    # The new validity starts today and lasts as long as production.example's limits allow (12 years for a
    # subordinate): a few days past the current certificate, which began on 2026-12-01.
    validity = definition(ws)["cas"]["qualified"]["validity"]  # YAML reads the timestamps as datetimes
    lines = [f"not_before: {validity['not_before']:%Y-%m-%dT%H:%M:%SZ}",
             f"not_after: {validity['not_after']:%Y-%m-%dT%H:%M:%SZ}"]
    head, block = text.split("\n  qualified:\n", 1)  # the CA's own block: the root's validity stays
    assert all(block.count(line) == 1 for line in lines), f"{lines} are not once each in cas.qualified"
    start = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    later = start.replace(year=start.year + 12) - dt.timedelta(days=1)
    assert later > validity["not_after"], "the walk runs too close to 2026-12-01 to renew for longer"
    block = block.replace(lines[0], f"not_before: {start:%Y-%m-%dT%H:%M:%SZ}").replace(
        lines[1], f"not_after: {later:%Y-%m-%dT%H:%M:%SZ}")
    pki.write_text(head + "\n  qualified:\n" + block, encoding="utf-8")
    term = ws.run(documented(RENEW))
    keep_screen(state, "renew", term)
    cert = ws.out / "qualified.g2.crt.pem"
    assert cert.is_file(), term.describe()
    proc = openssl("verify", "-x509_strict", "-CAfile", "root.crt.pem", "qualified.g2.crt.pem", cwd=ws.out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    renewed = x509.load_pem_x509_certificate(cert.read_bytes())
    first = x509.load_pem_x509_certificate((ws.out / "qualified.crt.pem").read_bytes())
    assert renewed.public_key() == first.public_key() and renewed.serial_number != first.serial_number
    assert renewed.not_valid_after_utc == later, renewed.not_valid_after_utc
    entry = listed(ws, "qualified.g2.crt.pem")
    assert entry and entry[0].get("generation") == 2 and entry[0].get("key") == "same", entry
    audit_verify(ws, transcript_of(term))
    state["renewed"] = transcript_of(term)


def test_rekey_interrupted_with_ctrl_c(workspace: Workspace, state: dict[str, Any]) -> None:
    """The operator presses Ctrl-C at the step after the new key exists: the run stops, the new key is removed
    from the token (an object of the run), no output is written, and the transcript says the run did not end."""
    need(state, "renewed")
    ws = workspace
    pressed: list[str] = []

    def ctrl_c(prompt: Any, term: Terminal) -> bool:
        if prompt.kind == "witness" and _current_step(term) == "csr-sign" and not pressed:
            pressed.append(_current_step(term))
            return True
        return False

    record = ("production/transcripts/", "production/manifest.json")  # the run's record, and only it
    with unchanged(ws, allow=lambda p: p.startswith(record)) as before:
        term = ws.run(documented(REKEY), Operator(interrupt=ctrl_c), check=False)
    assert pressed, "the walk never reached csr-sign: " + term.describe()
    assert term.exit_status != 0 and "Traceback" not in term.screen, term.describe()
    assert not list(ws.out.glob("qualified.g3.*")), sorted(p.name for p in ws.out.glob("qualified.g3.*"))
    assert ws.token_objects("qualified") == before.objects["qualified"], "the interrupted re-key left its key"
    written = sorted(set(ws.snapshot().files) - set(before.files))
    interrupted = [p for p in written if p.endswith(".jsonl")]
    assert len(interrupted) == 1 and all(p.startswith(interrupted[0].removesuffix(".jsonl")) for p in written), \
        written
    transcript = "out/" + interrupted[0]
    close = json.loads((ws.root / transcript).read_text(encoding="utf-8").splitlines()[-1])
    assert close["type"] == "close" and close["status"] == "interrupted", close
    # The manifest gained the interrupted run's transcript and its reports, nothing else.
    added = [a for a in ws.manifest()["artifacts"] if a not in before.manifest["artifacts"]]
    assert sorted("production/" + a["path"] for a in added) == written, added
    assert {a["kind"] for a in added} == {"transcript", "transcript-report"}, added
    state["rekey-interrupted"] = transcript


def test_rekey_at_the_subordinate(workspace: Workspace, state: dict[str, Any]) -> None:
    """The README's re-key, run again after the Ctrl-C: the new key under `<key_label>.g3` beside the old one,
    its CSR verifies, the key fingerprint on screen is the public key file's, the transcript is anchored."""
    need(state, "rekey-interrupted")
    ws = workspace
    term = ws.run(documented(REKEY), Operator(acknowledge_interrupted=True))
    keep_screen(state, "rekey", term)
    csr = ws.out / "qualified.g3.csr.pem"
    assert csr.is_file() and (ws.out / "qualified.g3.pub.pem").is_file(), term.describe()
    proc = openssl("req", "-in", "out/production/qualified.g3.csr.pem", "-noout", "-verify", cwd=ws.root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert colon((ws.out / "qualified.g3.pub.der").read_bytes()) in openssl_forms(term), term.describe()
    label = ws.key_label("qualified")
    private = sorted(o for o in ws.token_objects("qualified") if "Private Key Object" in o)
    assert f"Private Key Object label:      {label}" in private
    assert f"Private Key Object label:      {label}.g3" in private, private
    check_summary(ws, term)
    transcript = transcript_of(term)
    assert listed(ws, transcript)
    audit_verify(ws, transcript)
    # The interrupted run's transcript is what it is: not sealed, never "intact".
    audit = ws.run(f"invoke audit.verify {state['rekey-interrupted']} --artifacts out/production "
                   "--trust out/production/root.crt.pem", check=False)
    assert audit.exit_status not in (0, 1) and "Traceback" not in audit.screen, audit.describe()
    state["rekey"] = transcript


def test_rekey_refused_twice(workspace: Workspace, state: dict[str, Any]) -> None:
    """A second re-key before the first is certified would make generation 3 again: refused before anyone signs in,
    nothing changed, and the operator is told to certify the waiting CSR (the key must stay)."""
    need(state, "rekey")
    ws = workspace
    with unchanged(ws):
        term = ws.run(documented(REKEY), check=False)
    assert term.exit_status != 0 and not term.prompts and "Traceback" not in term.screen, term.describe()
    # It says what the key is waiting for, and never advises removing it (that advice is for an interrupted run's
    # leftovers; this key's CSR is on its way to the root).
    assert "qualified.g3.csr.pem" in term.screen and "invoke ceremony.certify-rekey --ca qualified" in term.screen, \
        term.describe()
    assert "--delete-object" not in term.screen, term.describe()


def test_certify_rekey_at_the_root(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "rekey")
    ws = workspace
    term = ws.run(documented(CERTIFY_REKEY))
    keep_screen(state, "certify-rekey", term)
    cert = ws.out / "qualified.g3.crt.pem"
    assert cert.is_file(), term.describe()
    proc = openssl("verify", "-x509_strict", "-CAfile", "root.crt.pem", "qualified.g3.crt.pem", cwd=ws.out)
    assert proc.returncode == 0 and proc.stdout.strip() == "qualified.g3.crt.pem: OK", proc.stdout + proc.stderr
    new = x509.load_pem_x509_certificate(cert.read_bytes())
    old = x509.load_pem_x509_certificate((ws.out / "qualified.crt.pem").read_bytes())
    assert new.subject == old.subject and new.public_key() != old.public_key()
    assert new.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
        == (ws.out / "qualified.g3.pub.der").read_bytes()
    assert openssl_fingerprint(cert) in openssl_forms(term), term.describe()
    entry = listed(ws, "qualified.g3.crt.pem")
    assert entry and entry[0].get("generation") == 3 and entry[0].get("key") == "new", entry
    check_summary(ws, term)
    audit_verify(ws, transcript_of(term))
    state["certify-rekey"] = transcript_of(term)


def test_issue_and_crl_after_the_rekey(workspace: Workspace, state: dict[str, Any]) -> None:
    """Issuance now signs with the new key; the CRL job signs one CRL per key, each at its own file, and each
    certificate is checked by openssl against the CRL of the key that issued it."""
    need(state, "certify-rekey", "issued")
    ws = workspace
    csr = ws.root / "requests" / "moussa-traore.csr.pem"
    proc = openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                   "-keyout", "moussa-traore.key.pem", "-out", csr.name, "-utf8",
                   "-subj", "/C=ML/GN=Moussa/SN=Traore/serialNumber=IDCML-0123456790/CN=Moussa Traore",
                   cwd=csr.parent)
    assert proc.returncode == 0, proc.stderr
    term = ws.run(fill(documented("invoke ca.issue "), ("FILE", "requests/moussa-traore.csr.pem"),
                       ("…", "--env production")))
    m = re.search(r"^issued ([0-9a-f]+) .*: (\S+) (\S+)$", term.screen, re.M)
    assert m, term.describe()
    pem = m.group(2)
    chain = ("-CAfile", "out/production/root.crt.pem", "-untrusted")
    assert openssl("verify", *chain, "out/production/qualified.g3.crt.pem", pem, cwd=ws.root).returncode == 0
    refused = openssl("verify", *chain, "out/production/qualified.crt.pem", pem, cwd=ws.root)
    assert refused.returncode != 0, "a certificate of the new key verified under the old key's certificate"
    term = ws.run(fill(documented("invoke crl.sign "), ("…", "--env production")))
    m = re.search(r"^CRL (\d+) of 'qualified' signed and published \((\d+) entries.*\): (\S+).*"
                  r"; key generation 1: (\S+) #(\d+) \((\d+) entries\)", term.screen, re.M)
    assert m, term.describe()
    new_crl, old_crl = ws.root / m.group(3), ws.root / m.group(3).replace(Path(m.group(3)).name, m.group(4))
    assert new_crl.is_file() and old_crl.is_file(), (new_crl, old_crl)
    assert new_crl != old_crl and m.group(2) == "0" and m.group(6) == "1", term.describe()
    good = openssl("verify", "-crl_check", *chain, "out/production/qualified.g3.crt.pem", "-CRLfile",
                   f"{new_crl.relative_to(ws.root)}.pem", pem, cwd=ws.root)
    assert good.returncode == 0, good.stdout + good.stderr
    _, first = state["issued"]
    revoked = openssl("verify", "-crl_check", *chain, "out/production/qualified.crt.pem", "-CRLfile",
                      f"{old_crl.relative_to(ws.root)}.pem", first, cwd=ws.root)
    assert "certificate revoked" in revoked.stdout + revoked.stderr, revoked.stdout + revoked.stderr
    state["rekeyed-crls"] = (new_crl, old_crl)


# --- 5. the end of the CA: OCSP in service, then termination of the re-keyed CA --------------------------------

TERMINATE = "invoke ceremony.terminate "
OCSP_SIGNER = "invoke ocsp.signer "
OCSP_SIGN = "invoke ocsp.sign "


def test_ocsp_in_service_under_both_keys(workspace: Workspace, state: dict[str, Any]) -> None:
    """production.example gives the CA an `ocsp` section: the README's signer ceremony and first signing, for the
    current key (its default) and for the first key (`--ca-cert`, docs/ocsp.md), each into its own store."""
    need(state, "rekeyed-crls")
    ws = workspace
    ws.run(documented(OCSP_SIGNER))
    ws.run(documented(OCSP_SIGNER) + " --ca-cert out/production/qualified.crt.pem")
    assert (ws.out / "qualified.ocsp.crt.pem").is_file() and (ws.out / "qualified.g3.ocsp.crt.pem").is_file(), \
        sorted(p.name for p in ws.out.glob("*ocsp*"))
    sign = documented(OCSP_SIGN)
    for cert, store in (("qualified.crt.pem", "qualified.sqlite3"), ("qualified.g3.crt.pem", "qualified.g3.sqlite3")):
        term = ws.run(f"{sign} --ca-cert out/production/{cert} --store out/production/ocsp/{store} --create-store")
        assert "Traceback" not in term.screen, term.describe()
    state["ocsp"] = True


def test_termination_refused_without_the_decision(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "ocsp")
    ws = workspace
    with unchanged(ws):
        term = ws.run(documented(TERMINATE), check=False)
    assert term.exit_status != 0 and not term.prompts and "Traceback" not in term.screen, term.describe()
    assert "cas.qualified.termination" in term.screen and "decided" in term.screen, term.describe()


def test_termination_of_the_rekeyed_ca(workspace: Workspace, state: dict[str, Any]) -> None:
    """The Comité's decision written into the definition as docs/lifecycle.md shows it, then the ceremony: every
    unexpired certificate revoked, one final CRL per key (nextUpdate 99991231235959Z), each verified by openssl
    under its own key's certificate, the archive verified by the auditor's own command, the CRL job refusing
    afterwards."""
    need(state, "ocsp")
    ws = workspace
    pki = ws.root / "inventory" / "production" / "pki.yml"
    head, block = pki.read_text(encoding="utf-8").split("\n  qualified:\n", 1)
    today = dt.datetime.now(dt.UTC).date()
    decision = (f"    termination:\n      decided: {today.isoformat()}\n"
                "      reference: \"Décision n°12 du Comité de Certification et de Signature Électronique\"\n"
                "      successor_body: \"Archives nationales du Mali\"\n")
    pki.write_text(head + "\n  qualified:\n" + decision + block, encoding="utf-8")
    # First try: the root key backup's share files are still on disk (the walk's backup step printed the pages but
    # never shredded the files). Refused with what to do, nothing changed; the files are shredded as
    # docs/key-backup.md says, one command per page, and the ceremony held again.
    with unchanged(ws):
        term = ws.run(documented(TERMINATE), check=False)
    shares = sorted((ws.out / "backup").glob("*.share-*.txt"))
    assert term.exit_status != 0 and "shred" in term.screen and shares, term.describe()
    for share in shares:
        ws.run(f"shred -u {share.relative_to(ws.root)}")
    state["shredded"] = sorted(share.relative_to(ws.out).as_posix() for share in shares)
    term = ws.run(documented(TERMINATE))
    keep_screen(state, "terminate", term)
    final = sorted((ws.out / "termination" / "qualified").glob("*.crl"))
    assert final, term.describe()
    issuers = {}
    for crl_path in final:
        crl = x509.load_der_x509_crl(crl_path.read_bytes())
        assert crl.next_update_utc is not None and crl.next_update_utc.year == 9999, crl_path
        proc = openssl("asn1parse", "-inform", "DER", "-in", str(crl_path))
        assert "GENERALIZEDTIME   :99991231235959Z" in proc.stdout, proc.stdout[:800]
        for cert_name in ("qualified.crt.pem", "qualified.g3.crt.pem"):
            check = openssl("crl", "-inform", "DER", "-in", str(crl_path), "-noout", "-CAfile", "root.crt.pem",
                            "-CAfile", cert_name, cwd=ws.out)
            cert = x509.load_pem_x509_certificate((ws.out / cert_name).read_bytes())
            if crl.is_signature_valid(cert.public_key()):  # type: ignore[arg-type]
                issuers[crl_path.name] = cert_name
                assert check.returncode == 0, check.stdout + check.stderr
    assert set(issuers.values()) == {"qualified.crt.pem", "qualified.g3.crt.pem"}, issuers
    # The first key's certificate is refused by openssl as revoked under that key's final CRL (PEM for -CRLfile).
    _, first = state["issued"]
    first_key_crl = next(ws.out / "termination" / "qualified" / name for name, c in issuers.items()
                         if c == "qualified.crt.pem")
    pem_crl = ws.root / "first-key-final.crl.pem"
    assert openssl("crl", "-inform", "DER", "-in", str(first_key_crl), "-out", str(pem_crl)).returncode == 0
    revoked = openssl("verify", "-crl_check", "-CAfile", "out/production/root.crt.pem", "-untrusted",
                      "out/production/qualified.crt.pem", "-CRLfile", pem_crl.name, first, cwd=ws.root)
    assert "certificate revoked" in revoked.stdout + revoked.stderr, revoked.stdout + revoked.stderr
    pem_crl.unlink()
    archive = ws.out / "termination" / "qualified.termination-archive.tar"
    assert archive.is_file(), term.describe()
    audit = ws.run("invoke audit.verify-archive out/production/termination/qualified.termination-archive.tar "
                   "--trust out/production/root.crt.pem")
    assert "Traceback" not in audit.screen, audit.describe()
    audit_verify(ws, transcript_of(term))
    # After the final CRL the CRL job refuses, in one line, and signs nothing.
    with unchanged(ws):
        job = ws.run(fill(documented("invoke crl.sign "), ("…", "--env production")), check=False)
    assert job.exit_status != 0 and "final CRL" in job.screen and "Traceback" not in job.screen, job.describe()


def test_policy_documents(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "sign")
    ws = workspace
    ws.run(DOCS_BUILD)
    docs = ws.out / "docs"
    assert any(docs.glob("*.pdf")) and any(docs.glob("*.md")), sorted(p.name for p in docs.glob("*"))
    term = ws.run(DOCS_CHECK)
    assert "check passed" in term.screen, term.describe()


def test_the_next_step_announced_is_the_next_step(state: dict[str, Any]) -> None:
    """What the terminal announces as next ("next: step K of N, TITLE") is the step that starts next."""
    need(state, "screens")
    langs, _, _ = terminal_texts()
    wrong = []
    for ceremony, screen in state["screens"].items():
        for lang in langs:
            nxt = re.compile("^" + text_pattern(lang, "next", "k", "n", "title") + "$")
            step = re.compile("^" + text_pattern(lang, "step", "k", "n", "title"))
            announced = None
            for line in screen.splitlines():
                if m := nxt.match(line):
                    announced = m.group("k"), m.group("title")
                elif (m := step.match(line)) and announced is not None:
                    if m.group("k") != announced[0]:
                        wrong.append(f"{ceremony}: announced step {announced[0]} ({announced[1]}), then: {line}")
                    announced = None
    assert state["screens"], "no ceremony screen kept"
    bug(not wrong, "\n".join(wrong[:5]) + (f"\n… {len(wrong)} in all" if len(wrong) > 5 else ""))


def test_audit_verify_needs_a_trust_anchor(workspace: Workspace, state: dict[str, Any]) -> None:
    """An auditor's verdict means something only against a root the auditor brings: without one, or with a
    file that is not a root certificate, the command says what is missing and never exits 0."""
    need(state, "root")
    ws = workspace
    term = ws.run(f"invoke audit.verify {state['root']}", check=False)
    assert "Traceback" not in term.screen, term.describe()
    assert term.exit_status == 64 and "no trust anchor: give --trust ROOT" in term.screen, term.describe()
    term = ws.run(f"invoke audit.verify {state['root']} --trust out/production/root.pub.pem", check=False)
    assert term.exit_status == 64 and "not a certificate" in term.screen, term.describe()


def test_french_terminal_speaks_french(workspace: Workspace, state: dict[str, Any]) -> None:
    need(state, "screens")
    ws = workspace
    assert ws.definition()["ceremony"].get("language") == "fr"
    screen = state["screens"]["root"]
    assert "Acte 1 sur" in screen or "Émargement" in screen, "the terminal did not speak French at all"
    english = [p for p in ("Files written by this run", "key type:", "signed inside the HSM", "Next:",
                           "no finding at WARNING or above", "offline check:") if p in screen]
    assert not english, f"English on the French terminal: {english}"


def test_outputs_verify_against_the_manifest(workspace: Workspace, state: dict[str, Any]) -> None:
    """The auditor's `sha256sum -c` over the manifest (README): every listed file is there, unchanged."""
    need(state, "root")
    ws = workspace
    manifest = ws.manifest()
    assert manifest.get("rehearsal") is False
    # No PIN in any file a ceremony wrote (transcripts, reports, backups, registry, documents).
    for path in sorted((ws.root / "out").rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            leaked = [var for var, pin in ws.pins.items() if pin.encode() in data]
            assert not leaked, f"{path}: holds the value of {leaked}"
    # The README's command itself, in the output directory (share files excepted: shredded after the handover).
    recipe = re.search(r"^(sha256sum -c .*manifest\.json\))$", (REPO / "README.md").read_text(encoding="utf-8"), re.M)
    assert recipe, "README.md no longer gives the auditor's sha256sum -c line"
    proc = subprocess.run(["bash", "-c", recipe.group(1)], cwd=ws.out, capture_output=True, text=True, check=False,
                          env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"})
    assert proc.returncode == 0 and ": OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr
    shredded = []
    for a in manifest["artifacts"]:
        path = ws.out / a["path"]
        if a["kind"] == "key-backup-share" and not path.exists():
            shredded.append(a["path"])
            continue
        assert path.is_file(), f"{a['path']} listed but missing"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == a["sha256"], a["path"]
    assert sorted(shredded) == state.get("shredded", []), "a share file is missing that nobody shredded"
