"""The evidence auditors ask for (issue 16, item 6): script approval, equipment, facility access, software and
machine logs, share custody; recorded from the answers file or generated in a rehearsal, collected from the
machine, and checked for shape by the verifier.

Small production-mode transcripts are built here with the recorder and sealed by a software "root" key whose
self-signed certificate is the trust anchor (the HSM-backed seal is covered by test_audit.py and the
rehearsal): what is under test is what the records say and how the verifier reads them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TESTING_DEFINITION
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_transcript import GOOD, people_data, records, rewrite

from ceremony.definition.model import load_definition
from ceremony.transcript.anchor import load_anchor
from ceremony.transcript.audit import verify
from ceremony.transcript.chain import open_rehearsal_transcript, open_transcript
from ceremony.transcript.evidence import EvidenceError, software_evidence
from ceremony.transcript.scriptbook import load_script

SCRIPT = "root-key-generation"


@pytest.fixture(scope="module")
def definition() -> Any:
    return load_definition(TESTING_DEFINITION)


#: The extended key usage of a transcript-sealing certificate (the testing definition's default).
SEALING_EKU = x509.ObjectIdentifier("2.16.466.1.1.1.3.1")


def make_root(out: Path, name: str = "SCSE Test Root") -> ec.EllipticCurvePrivateKey:
    """A production-looking self-signed root (no REHEARSAL marker, the auditor's anchor) and a transcript-sealing
    certificate it issues (``seal.crt.pem``: digitalSignature, the sealing EKU); returns the sealing key."""
    root = ec.generate_private_key(ec.SECP384R1())
    seal = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)

    def build(subject_name: x509.Name, key: Any, ca: bool) -> x509.Certificate:
        usage = (x509.KeyUsage(False, False, False, False, False, True, True, False, False) if ca else
                 x509.KeyUsage(True, False, False, False, False, False, False, False, False))
        builder = (x509.CertificateBuilder().subject_name(subject_name).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(usage, critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root.public_key()),
                                  critical=False))
        if not ca:
            builder = builder.add_extension(x509.ExtendedKeyUsage([SEALING_EKU]), critical=False)
        return builder.sign(root, hashes.SHA384())

    out.mkdir(parents=True, exist_ok=True)
    (out / "root.crt.pem").write_bytes(build(subject, root, True).public_bytes(serialization.Encoding.PEM))
    seal_subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name + " Seal")])
    (out / "seal.crt.pem").write_bytes(build(seal_subject, seal, False).public_bytes(serialization.Encoding.PEM))
    return seal


def approval(**changes: Any) -> dict[str, Any]:
    script = load_script(SCRIPT)
    return {"approved_by": "Awa", "role": "administrator", "version": script.version, "sha256": script.sha256,
            "approved_at": "2026-11-20T10:00:00Z", **changes}


def write_answers(path: Path, **extra: Any) -> Path:
    data = {"participants": people_data(GOOD), "confirm": True, "exceptions": "continue",
            "bags": {"open": {"hsm": "ML-TE-000101", "workstation": "ML-TE-000102"},
                     "reseal": {"hsm": "ML-TE-000103", "workstation": "ML-TE-000104"}}, **extra}
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def production_ceremony(out: Path, definition: Any, answers: Path, key: Any) -> Path:
    """Every step of the script, at a production ceremony whose sign-in and facts come from ``answers``;
    sealed by ``key`` with ``out/seal.crt.pem`` as the verifier."""
    with open_transcript(out / "transcripts", SCRIPT, definition, rehearsal=False, answers=answers) as rec:
        for step in load_script(SCRIPT).steps:
            with rec.step(step.id, step.title["en"]):
                pass
        rec.seal(key, {"kind": "certificate", "path": "seal.crt.pem", "sha256": ""})
        return rec.path


def evidence_of(path: Path, name: str) -> list[dict[str, Any]]:
    return [r["data"] for r in records(path) if r["type"] == "evidence" and r["name"] == name]


def test_answers_file_evidence_is_recorded_and_verifies(tmp_path: Path, definition: Any) -> None:
    out = tmp_path / "out"
    key = make_root(out)
    log = tmp_path / "ceremony-host.log"
    log.write_text("Dec  1 09:00:01 root-ws kernel: usb 1-1: new high-speed USB device\n", encoding="utf-8")
    answers = write_answers(
        tmp_path / "answers.yml", script_approval=approval(),
        equipment={"workstation_serial": "ML-WS-0001", "boot_medium_sha256": "AB" * 32,
                   "removable_media": ["ML-USB-0007", 42]},
        facility_access=[{"name": "Oumar Sangaré", "role": "HSM technician", "time": "2026-12-01T10:42:00+00:00",
                          "direction": "enter", "reason": "replace the HSM's power supply"},
                         {"name": "Oumar Sangaré", "role": "HSM technician", "time": "2026-12-01T10:58:00Z",
                          "direction": "leave", "reason": "done"}],
        machine_logs=[str(log), str(tmp_path / "no-such.log")],
        share_custody=[{"file": "backup/root.share-3-fatoumata-traore.txt", "action": "shredded", "by": "Binta",
                        "witness": "Eve", "time": "2026-12-01T11:00:00Z"}])
    path = production_ceremony(out, definition, answers, key)
    anchor = load_anchor(str(out / "root.crt.pem"), out)
    result = verify(path, trust=anchor)
    assert result.status == "intact" and result.exit_code == 0, [str(p) for p in result.problems]
    assert evidence_of(path, "script-approval") == [{**approval(), "source": "answers file"}]
    assert evidence_of(path, "equipment")[0]["boot_medium_sha256"] == "ab" * 32
    assert evidence_of(path, "equipment")[0]["removable_media"] == ["ML-USB-0007", "42"]
    access = evidence_of(path, "facility-access")
    assert [(a["direction"], a["time"]) for a in access] == [("enter", "2026-12-01T10:42:00Z"),
                                                              ("leave", "2026-12-01T10:58:00Z")]
    logs = evidence_of(path, "machine-logs")[0]["logs"]
    named = {entry["path"]: entry for entry in logs if entry["source"] == "file"}
    assert named[str(log)]["sha256"] == hashlib.sha256(log.read_bytes()).hexdigest()
    assert named[str(log)]["size"] == log.stat().st_size
    assert "missing" in named[str(tmp_path / "no-such.log")]  # recorded, not an error
    assert logs[0]["source"] == "journal"
    assert evidence_of(path, "share-custody")[0]["action"] == "shredded"
    # the machine's facts, at the start: the software that matters, hashed as used
    software = records(path)[0]["environment"]["software"]["items"]
    whats = {item["what"]: item for item in software}
    assert {"python", "openssl", "hsm-module"} <= set(whats)
    module = whats["hsm-module"]
    assert module["path"] == definition.model.cas["root"].hsm.module
    if "missing" not in module:
        assert module["sha256"] == hashlib.sha256(Path(module.get("resolved", module["path"])).read_bytes()).hexdigest()
    # the order of the acts: approval with the sign-in, equipment with the bags, the rest at the close
    kinds = [r["name"] if r["type"] == "evidence" else r["type"] for r in records(path)
             if r["type"] in ("evidence", "bag", "sign-out")]
    assert kinds.index("script-approval") < kinds.index("bag") < kinds.index("equipment")
    assert kinds.index("machine-logs") < len(kinds) - 1 - kinds[::-1].index("bag") < kinds.index("sign-out")


def test_a_rehearsal_generates_the_evidence_marked_as_rehearsal(tmp_path: Path, definition: Any) -> None:
    path = tmp_path / "out" / "transcripts" / f"{SCRIPT}-1.jsonl"
    with open_rehearsal_transcript(path, SCRIPT, definition):
        pass
    assert evidence_of(path, "script-approval")[0]["approved_by"].endswith("(rehearsal)")
    assert evidence_of(path, "equipment")[0]["workstation_serial"].startswith("REHEARSAL-")
    assert all(a["name"].endswith("(rehearsal)") and "rehearsal" in a["source"]
               for a in evidence_of(path, "facility-access"))
    assert evidence_of(path, "machine-logs")


@pytest.mark.parametrize("extra, field, allowed", [
    ({"script_approval": approval(version="two")}, "script_approval.version", "the script's version number"),
    ({"script_approval": approval(sha256="12:34")}, "script_approval.sha256", "64 hex digits"),
    ({"script_approval": approval(approved_at="yesterday")}, "script_approval.approved_at", "ISO 8601"),
    ({"script_approval": {"approved_by": "Awa"}}, "script_approval.approved_at", "ISO 8601"),
    ({"script_approval": approval(by="x")}, "script_approval.by", "approved_at, approved_by"),
    ({"equipment": {"workstation_serial": "WS-1"}}, "equipment.boot_medium_sha256", "64 hex digits"),
    ({"equipment": {"workstation_serial": "WS-1", "boot_medium_sha256": "0" * 64, "removable_media": "USB-1"}},
     "equipment.removable_media", "a list of serials"),
    ({"facility_access": [{"name": "X", "role": "visitor", "time": "2026-12-01T10:00:00Z", "direction": "in",
                           "reason": "visit"}]}, "facility_access[0].direction", "enter, leave"),
    ({"facility_access": [{"name": "X", "role": "visitor", "time": "2026-12-01T10:00:00", "direction": "enter",
                           "reason": "visit"}]}, "facility_access[0].time", "with its zone"),
    ({"facility_access": [{"name": "X", "role": "visitor", "direction": "enter", "time": "2026-12-01T10:00:00Z"}]},
     "facility_access[0].reason", "a reason on one line"),
    ({"machine_logs": ["var/log/syslog"]}, "machine_logs[0]", "an absolute path"),
    ({"share_custody": [{"file": "backup/s.txt", "action": "burnt", "by": "A", "witness": "B",
                         "time": "2026-12-01T10:00:00Z"}]}, "share_custody[0].action", "shredded"),
    ({"share_custody": [{"file": "backup/s.txt", "action": "shredded", "by": "A", "witness": "A",
                         "time": "2026-12-01T10:00:00Z"}]}, "share_custody[0].witness", "another person"),
], ids=["version", "sha256", "time", "incomplete", "unknown-key", "boot-medium", "media", "direction", "naive-time",
        "no-reason", "relative-log", "custody-action", "own-witness"])
def test_bad_evidence_in_the_answers_file_is_refused_naming_file_field_and_allowed(
        tmp_path: Path, definition: Any, extra: dict[str, Any], field: str, allowed: str) -> None:
    answers = write_answers(tmp_path / "answers.yml", **extra)
    with pytest.raises(EvidenceError) as raised, open_transcript(tmp_path / "out" / "transcripts", SCRIPT,
                                                                 definition, rehearsal=False, answers=answers):
        pass
    message = str(raised.value)
    assert message.startswith(f"{answers}: {field}: ") and "(allowed: " in message and allowed in message, message
    assert "\n" not in message and raised.value.exit_code == 11
    assert not (tmp_path / "out").exists()  # nothing written


def test_an_approval_of_another_script_version_stops_before_anything(tmp_path: Path, definition: Any) -> None:
    script = load_script(SCRIPT)
    for changes, said in (({"version": script.version + 1}, "script_approval.version"),
                          ({"sha256": "0" * 64}, "the script changed since it was approved")):
        answers = write_answers(tmp_path / "answers.yml", script_approval=approval(**changes))
        with pytest.raises(EvidenceError, match=said), open_transcript(tmp_path / "out" / "transcripts", SCRIPT,
                                                                       definition, rehearsal=False, answers=answers):
            pass
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind, change, message", [
    ("facility-access", {"direction": "sideways"}, "direction: 'sideways'"),
    ("equipment", {"boot_medium_sha256": "not a hash"}, "boot_medium_sha256"),
    ("script-approval", {"version": 99}, "version 99 approved"),
    ("machine-logs", {"logs": [{"source": "file", "path": "/var/log/syslog", "sha256": "x", "size": 1}]},
     "sha256 is not 64 hex digits"),
    ("share-custody", {"action": "lost"}, "action: 'lost'"),
], ids=["access", "equipment", "approval", "logs", "custody"])
def test_the_verifier_checks_each_kind_for_shape(tmp_path: Path, definition: Any, kind: str, change: dict[str, Any],
                                                 message: str) -> None:
    """A record of a known kind with a malformed field, rewritten and resealed by the anchored key itself (the
    shape rule holds even for whoever holds the key): invalid, naming the kind and the field."""
    out = tmp_path / "out"
    key = make_root(out)
    answers = write_answers(tmp_path / "answers.yml", script_approval=approval(),
                            equipment={"workstation_serial": "WS-1", "boot_medium_sha256": "0" * 64},
                            facility_access=[{"name": "X", "role": "visitor", "time": "2026-12-01T10:00:00Z",
                                              "direction": "enter", "reason": "visit"}],
                            share_custody=[{"file": "backup/s.txt", "action": "shredded", "by": "A", "witness": "B",
                                            "time": "2026-12-01T10:00:00Z"}])
    path = production_ceremony(out, definition, answers, key)
    recs = records(path)
    target = next(r for r in recs if r["type"] == "evidence" and r["name"] == kind)
    target["data"] = {**target["data"], **change}
    rewrite(path, recs, key)
    result = verify(path, trust=load_anchor(str(out / "root.crt.pem"), out))
    assert result.status == "invalid" and result.exit_code == 1
    assert any(f"{kind} evidence: " in p.message and message in p.message for p in result.problems), \
        [str(p) for p in result.problems]


def test_software_hashes_are_of_the_files_used_and_collected_quickly(definition: Any) -> None:
    modules = [ca.hsm.module for ca in definition.model.cas.values()]
    first = software_evidence(modules)
    again = software_evidence(modules)  # cached: every ceremony start records this
    assert first == again
    python = next(item for item in first["items"] if item["what"] == "python")
    assert python["sha256"] == hashlib.sha256(Path(python.get("resolved", python["path"])).read_bytes()).hexdigest()
    openssl = next(item for item in first["items"] if item["what"] == "openssl")
    if first["dpkg"] and "missing" not in openssl:
        assert openssl["package"] == "openssl" and openssl["version"]
    assert json.dumps(first)  # JSON as it is
