"""The life-cycle stage of ``invoke rehearse`` (issue 18, item 6 and its "Done means"), read from the session's one
rehearsal (conftest.full_rehearsal; no second rehearsal is run here).

After the rehearsal: ``openssl verify -crl_check`` and GnuTLS ``certtool`` accept the certificates issued before and
after the re-key, each with its own key's CRL, and say revoked of the revoked ones; both cross-signed chains verify;
the destroyed key is absent from every token according to ``pkcs11-tool``; every transcript verifies (with the first
root as anchor, and the successor's own with the successor); the successor token's split user PIN is changed at its
ceremony, whose transcript names who entered a part and never a part, in under 5 s of CPU time; the manifest lists
the new kinds; the definition copy that records the destruction decision is kept. (A token that one Crypto Officer
alone cannot activate: tests/test_token_init.py.)
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from conftest import REHEARSAL_GROUP, REPO
from cryptography import x509

from ceremony.definition.model import load_definition
from ceremony.hsm.keys import spki_sha256
from ceremony.hsm.pins import combine_parts, part_variable

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group(REHEARSAL_GROUP)]
INVOKE = str(REPO / ".venv" / "bin" / "invoke")
CA = "qualified"


@pytest.fixture(scope="module")
def out(full_rehearsal: tuple[Path, subprocess.CompletedProcess[str]]) -> Path:
    path, run = full_rehearsal
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return path


def artifacts(out: Path) -> list[dict[str, Any]]:
    return list(json.loads((out / "manifest.json").read_text())["artifacts"])


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def crl_of(out: Path, leaf: x509.Certificate) -> Path:
    points = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    url = next(str(n.value) for dp in points for n in dp.full_name or [])
    return out / "crl" / (Path(urlparse(url).path).name + ".pem")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


def end_entities(out: Path) -> dict[int, list[tuple[Path, str]]]:
    """The rehearsal's end-entity certificates by the key generation whose key signed them: (PEM, manifest status)."""
    keys = {1: cert(out / f"{CA}.crt.pem"), 3: cert(out / f"{CA}.g3.crt.pem")}
    found: dict[int, list[tuple[Path, str]]] = {1: [], 3: []}
    for entry in artifacts(out):
        if entry["kind"] == "end-entity-certificate" and entry["format"] == "pem":
            leaf = cert(out / entry["path"])
            signer = [n for n, ca in keys.items() if _issued(leaf, ca)]
            assert len(signer) == 1, entry["path"]
            found[signer[0]].append((out / entry["path"], entry["status"]))
    return found


def _issued(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(ca)
    except Exception:
        return False
    return True


def test_certificates_before_and_after_the_rekey_verify_each_with_its_own_crl(out: Path, tmp_path: Path) -> None:
    root = out / "root.crt.pem"
    g1, g3 = cert(out / f"{CA}.crt.pem"), cert(out / f"{CA}.g3.crt.pem")
    assert g1.public_key() != g3.public_key() and g1.subject == g3.subject
    by_key = end_entities(out)
    for generation, sub in ((1, out / f"{CA}.crt.pem"), (3, out / f"{CA}.g3.crt.pem")):
        statuses = sorted(status for _, status in by_key[generation])
        assert "good" in statuses and "revoked" in statuses, (generation, statuses)
        own_key = cert(sub).public_key()
        for leaf_path, status in by_key[generation]:
            crl_path = crl_of(out, cert(leaf_path))
            crl = x509.load_pem_x509_crl(crl_path.read_bytes())
            # each key's CRL is signed by that key, and only by it
            assert crl.is_signature_valid(own_key), crl_path  # type: ignore[arg-type]
            other = (g3 if generation == 1 else g1).public_key()
            assert not crl.is_signature_valid(other), crl_path  # type: ignore[arg-type]
            assert (".g3" in crl_path.name) == (generation == 3), crl_path
            verified = run("openssl", "verify", "-crl_check", "-CAfile", str(root), "-untrusted", str(sub),
                           "-CRLfile", str(crl_path), str(leaf_path))
            if status == "good":
                assert verified.returncode == 0, verified.stdout + verified.stderr
            else:
                assert verified.returncode != 0 and "certificate revoked" in verified.stdout + verified.stderr
            chain = tmp_path / f"{leaf_path.stem}.chain.pem"
            chain.write_bytes(leaf_path.read_bytes() + sub.read_bytes() + root.read_bytes())
            assert run("certtool", "--verify-chain", "--infile", str(chain)).returncode == 0, leaf_path
            pair = tmp_path / f"{leaf_path.stem}.pair.pem"
            pair.write_bytes(leaf_path.read_bytes() + sub.read_bytes())
            gnutls = run("certtool", "--verify", "--load-ca-certificate", str(root), "--load-crl", str(crl_path),
                         "--infile", str(pair))
            assert (gnutls.returncode == 0) == (status == "good"), gnutls.stdout + gnutls.stderr
    # the other key's CRL does not vouch for a certificate: its signer is another key
    good_new = next(p for p, s in by_key[3] if s == "good")
    first_crl = out / "crl" / f"{CA}.crl.pem"
    wrong = run("openssl", "verify", "-crl_check", "-CAfile", str(root), "-untrusted", str(out / f"{CA}.g3.crt.pem"),
                "-CRLfile", str(first_crl), str(good_new))
    assert wrong.returncode != 0


def test_both_cross_signed_chains_verify(out: Path, tmp_path: Path) -> None:
    old, new = out / "root.crt.pem", out / "root.g2.crt.pem"
    forward, reverse = out / "root.g2.by-g1.crt.pem", out / "root.g1.by-g2.crt.pem"
    sub = out / f"{CA}.g3.crt.pem"
    leaf = next(p for p, s in end_entities(out)[3] if s == "good")
    seal = out / "root.g2.seal.crt.pem"
    cases = (
        (new, [sub, reverse], leaf, True),  # the old hierarchy from the successor's anchor, through the reverse one
        (old, [forward], seal, True),  # the successor's from the old root, through the forward one
        (new, [sub], leaf, False),  # without the cross-certificate: no path
        (old, [], seal, False),
    )
    for n, (anchor, between, cert_path, expected) in enumerate(cases):
        untrusted = tmp_path / f"untrusted-{n}.pem"
        untrusted.write_bytes(b"".join(p.read_bytes() for p in between))
        args = ["openssl", "verify", "-x509_strict", "-purpose", "any", "-CAfile", str(anchor)]
        if between:
            args += ["-untrusted", str(untrusted)]
        verified = run(*args, str(cert_path))
        assert (verified.returncode == 0) is expected, (n, verified.stdout + verified.stderr)
        chain = tmp_path / f"chain-{n}.pem"
        chain.write_bytes(cert_path.read_bytes() + untrusted.read_bytes() + anchor.read_bytes())
        assert (run("certtool", "--verify-chain", "--infile", str(chain)).returncode == 0) is expected, n


def pins_of(out: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (out / "hsm" / "rehearsal-pins.env").read_text().splitlines())


def test_the_destroyed_key_is_absent_from_every_token(out: Path) -> None:
    report_path = next(out / a["path"] for a in artifacts(out) if a["kind"] == "key-destruction-report")
    report = json.loads(report_path.read_text())
    assert report["ca"] == CA and report["key_generation"] == 1 and report["key_label"] == "qualified-2026"
    assert report["key_spki_sha256"] == spki_sha256(cert(out / f"{CA}.crt.pem").public_key())
    ids = {o["id_hex"] for d in report["destroyed"] for o in d["objects"]}
    assert ids
    pins = pins_of(out)
    succ = "scse-test-root-g2"
    succ_env = "CEREMONY_SCSE_TEST_ROOT_G2_PIN"
    parts = [pins[part_variable(succ_env, n)] for n in (1, 2)]
    tokens = {"scse-test-root": pins["CEREMONY_ROOT_PIN"], "scse-test-qualified": pins["CEREMONY_QUALIFIED_PIN"],
              "scse-test-root-restore": pins["CEREMONY_SCSE_TEST_ROOT_RESTORE_PIN"],
              succ: combine_parts(parts, succ, "user")}
    module = load_definition(out / "pki.yml").model.cas["root"].hsm.module
    env = {"SOFTHSM2_CONF": str(out / "hsm" / "softhsm2.conf"), "PATH": "/usr/bin:/bin"}
    listed = subprocess.run(["pkcs11-tool", "--module", module, "--list-token-slots"],
                            capture_output=True, text=True, env=env, timeout=60)
    # the slot of each label: pkcs11-tool's --token-label takes the first token whose label starts with it
    slots: dict[str, str] = {}
    slot = ""
    for line in listed.stdout.splitlines():
        if line.startswith("Slot "):
            slot = line.split("(", 1)[1].split(")", 1)[0]
        elif "token label" in line:
            slots[line.split(":", 1)[1].strip()] = slot
    assert set(tokens) <= set(slots), listed.stdout
    for label, pin in tokens.items():
        objects = subprocess.run(["pkcs11-tool", "--module", module, "--slot", slots[label], "--login", "--pin", pin,
                                  "--list-objects"], capture_output=True, text=True, env=env, timeout=60)
        assert objects.returncode == 0, objects.stderr
        lines = [line.strip() for line in objects.stdout.splitlines()]
        assert "label:      qualified-2026" not in lines, (label, objects.stdout)
        assert not [i for i in ids if f"ID:         {i}" in lines], (label, objects.stdout)
        if label == "scse-test-qualified":
            # the re-key's key and the token's sealing key stay: the key of generation 3 signs on
            assert "label:      qualified-2026.g3" in lines and "label:      qualified-2026-seal" in lines, lines
        if label == succ:
            assert "label:      root-2026-g2" in lines, lines


def test_every_transcript_verifies_and_each_new_ceremony_has_one(out: Path) -> None:
    transcripts = [a for a in artifacts(out) if a["kind"] == "transcript"]
    ceremonies = [t["ceremony"] for t in transcripts]
    # two token initialisations: the subordinate's (before its key ceremony) and the successor root's
    for name, count in (("token-initialisation", 2), ("subordinate-renewal", 1), ("subordinate-rekey", 1),
                        ("subordinate-rekey-certification", 1), ("new-root-key-generation", 1),
                        ("cross-certification", 2), ("pin-change", 1), ("key-destruction", 1)):
        assert ceremonies.count(name) == count, (name, ceremonies)
    every = subprocess.run([INVOKE, "audit.verify-all", str(out), "--trust", str(out / "root.crt.pem"), "--rehearsal"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert every.returncode == 0 and "ALL INTACT" in every.stdout, every.stdout[-3000:] + every.stderr[-3000:]
    # the successor's own ceremonies verify from its anchor too (its token's initialisation included)
    for t in transcripts:
        if t["ceremony"] in ("new-root-key-generation", "pin-change") or t["path"].endswith(
                ("cross-certification-2.jsonl", "token-initialisation-2.jsonl")):
            one = subprocess.run([INVOKE, "audit.verify", str(out / t["path"]), "--trust",
                                  str(out / "root.g2.crt.pem"), "--rehearsal"], cwd=REPO, capture_output=True,
                                 text=True, timeout=120)
            assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-2000:]


def test_manifest_kinds_and_the_recorded_destruction_decision(out: Path) -> None:
    entries = {(a["path"], a["kind"], a.get("generation"), a.get("key"), a.get("subject"), a.get("issuer"))
               for a in artifacts(out)}
    assert {(f"{CA}.g2.crt.pem", "subordinate-certificate", 2, "same", None, None),
            (f"{CA}.g3.crt.pem", "subordinate-certificate", 3, "new", None, None),
            (f"{CA}.g3.csr.pem", "subordinate-csr", 3, "new", None, None),
            (f"{CA}.g3.pub.pem", "subordinate-public-key", 3, "new", None, None),
            ("root.g2.crt.pem", "new-root-certificate", 2, "new", None, None),
            ("root.g2.by-g1.crt.pem", "cross-certificate", 2, None, "new-root", "root"),
            ("root.g1.by-g2.crt.pem", "cross-certificate", 1, None, "root", "new-root")} <= entries
    kinds = {a["kind"] for a in artifacts(out)}
    assert {"key-destruction-report", "new-root-public-key", "token-initialisation-report",
            "sealing-public-key", "pin-change-report"} <= kinds
    crls = {(a["path"], a.get("generation")) for a in artifacts(out) if a["kind"] in ("subordinate-crl",
                                                                                     "crl-partition")}
    assert {g for _, g in crls if g is not None} == {1, 3}, crls
    # the destruction's definition copy records the decision for that very key, and its transcript names it
    digest = spki_sha256(cert(out / f"{CA}.crt.pem").public_key())
    decided = [p for p in out.glob("pki.*.yml")
               if (yaml.safe_load(p.read_text())["cas"][CA].get("destruction") or {}).get("spki_sha256") == digest]
    assert len(decided) == 1
    destruction = next(out / a["path"] for a in artifacts(out) if a["kind"] == "transcript"
                       and a["ceremony"] == "key-destruction")
    header = json.loads(destruction.read_text().splitlines()[0])
    assert decided[0].name == f"pki.{header['definition']['sha256'][:16]}.yml"
    assert header["definition"]["path"] == str(decided[0])


def test_the_stage_says_how_long_it_took(full_rehearsal: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    _, done = full_rehearsal
    lines = [line for line in done.stdout.splitlines() if line.startswith("life-cycle stage: ")]
    assert len(lines) == 1 and lines[0].endswith(" s"), lines


def test_the_successors_split_pin_is_changed_before_its_key_signs_again(
        out: Path, full_rehearsal: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """The split-PIN change of the successor's token (issue 18): after the successor's key ceremony, before the
    reverse cross-certification signs with that key on that token (so it logged in with the new parts, which the PIN
    file now lists); the report and the token's record name the two Crypto Officers; no part is in the transcript."""
    every = artifacts(out)
    reports = [a for a in every if a["kind"] == "pin-change-report"]
    assert len(reports) == 1 and reports[0]["token"] == "scse-test-root-g2", reports
    report = json.loads((out / reports[0]["path"]).read_text())
    officers = [f"{name} (rehearsal)" for name in ("Ibrahim Touré", "Kadiatou Cissé")]
    assert report["pin"] == "user" and report["officers"] == officers and report["handover"] is None
    assert report["record"]["user"]["officers"] == officers
    assert [(c["pin"], c["by"]) for c in report["record"]["pin_changes"]] == [("user", officers)]
    transcripts = [a["path"] for a in every if a["kind"] == "transcript"]
    order = [next(i for i, p in enumerate(transcripts) if Path(p).name == name) for name in
             ("new-root-key-generation-1.jsonl", "pin-change-1.jsonl", "cross-certification-2.jsonl")]
    assert order == sorted(order), transcripts
    record = (out / "transcripts" / "pin-change-1.jsonl").read_text(encoding="utf-8")
    lines = [json.loads(line) for line in record.splitlines()]
    entered = {e["data"]["stage"]: e["data"]["entered_by"] for e in lines
               if e.get("type") == "evidence" and e.get("name") == "pin-parts"}
    assert entered == {"current": officers, "new": officers}
    parts = [v for k, v in pins_of(out).items() if k.startswith("CEREMONY_SCSE_TEST_ROOT_G2_PIN_PART_")]
    assert len(parts) == 2 and not [p for p in parts if p in record]
    _, done = full_rehearsal
    # what the PIN change adds to the stage: under 5 s of the rehearsal process's CPU time (its wall time, also
    # printed, is that on an idle machine and grows with whatever else the machine runs)
    took = [(float(m[1]), float(m[2])) for m in re.finditer(r"\(PIN change: ([0-9.]+) s, ([0-9.]+) s CPU\)",
                                                             done.stdout)]
    assert len(took) == 1 and took[0][1] < 5, took
