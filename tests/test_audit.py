"""The offline verifier on a real transcript: a root ceremony on a SoftHSM token, sealed in the HSM.

Each tampering a person with write access to the files could try must be caught, and the first
bad record named: modified, removed, reordered, duplicated, inserted and truncated records, a
wrong seal signature (even with the rest of the chain recomputed), edited seal or closing fields,
bytes after the seal, an artifact changed after the ceremony. And the forger without the CA key
who rewrites a transcript and seals it with his own key makes a consistent file that is never
anchored in the root the auditor brings; a rehearsal never passes for production.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, TESTING_DEFINITION
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_transcript import records, rewrite, soft_transcript

from ceremony.ceremonies.root_key import root_ceremony
from ceremony.definition.model import load_definition
from ceremony.hsm.session import open_session, pin_source_for
from ceremony.hsm.signers import signing_key
from ceremony.transcript.anchor import AnchorError, load_anchor
from ceremony.transcript.audit import verify
from ceremony.transcript.chain import canonical, open_rehearsal_transcript, seal_message

pytestmark = pytest.mark.hsm


@pytest.fixture
def sealed(tmp_path: Path, definition_on_tokens: Any) -> Path:
    """A root ceremony's rehearsal transcript, sealed by the root key on a fresh token."""
    defn_path, _ = definition_on_tokens()
    defn = load_definition(defn_path)
    out = tmp_path / "out"
    path = out / "transcripts" / "root-key-generation-1.jsonl"
    with open_rehearsal_transcript(path, "root-key-generation", defn) as rec:
        root_ceremony(defn, out, rec, rehearsal=True, interactive=False)
    return path


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def put(path: Path, new_lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in new_lines))


def index_of(path: Path, type_: str) -> int:
    return next(r["seq"] for r in records(path) if r["type"] == type_)


def test_intact_transcript_passes_with_evidence(sealed: Path) -> None:
    result = verify(sealed)
    assert result.status == "intact", [str(p) for p in result.problems]
    recs = records(sealed)
    token = next(r["data"] for r in recs if r["type"] == "evidence" and r["name"] == "token")
    assert token["module_sha256"] and token["serial"] and token["firmware_version"] and token["mechanisms"]
    key = next(r["data"] for r in recs if r["type"] == "evidence" and r["name"] == "key"
               and r["data"].get("purpose") == "transcript-sealing")
    seal = next(r for r in recs if r["type"] == "seal")
    assert seal["verifier"]["spki_sha256"] == key["spki_sha256"] and seal["verifier"]["path"] == "root.seal.crt.pem"
    assert seal["algorithm"] == "ecdsa-sha384"
    assert any(r["type"] == "evidence" and r["name"] == "offline-check" for r in recs)


def invoke_verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPO / ".venv/bin/invoke"), "audit.verify", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_exit_codes(sealed: Path, tmp_path: Path) -> None:
    root = str(sealed.parent.parent / "root.crt.pem")
    run = invoke_verify(str(sealed), "--trust", root, "--rehearsal")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "INTACT" in run.stdout and "Moussa Konaté (rehearsal)" in run.stdout
    run = invoke_verify(str(sealed), "--trust", root)  # a rehearsal, and the auditor did not say so
    assert run.returncode == 5 and run.stdout.splitlines()[0].startswith("REHEARSAL"), run.stdout
    run = invoke_verify(str(sealed))  # no anchor: nothing passes, and the auditor is told what is missing
    assert run.returncode == 64 and "no trust anchor: give --trust ROOT" in run.stderr
    assert run.stdout.splitlines()[0].startswith("NOT VERIFIED")
    run = invoke_verify(str(sealed), "--trust", str(tmp_path / "no-such-root.pem"))
    assert run.returncode == 64 and "neither a certificate file nor a SHA-256 fingerprint" in run.stderr
    put(sealed, lines(sealed)[:-3])
    run = invoke_verify(str(sealed), "--trust", root, "--rehearsal")
    assert run.returncode == 2 and "INCOMPLETE" in run.stdout


def _modify(path: Path) -> int:
    """Change the recorded hash of the first artifact, re-encoding the line canonically."""
    i = index_of(path, "artifact")
    ls = lines(path)
    rec = json.loads(ls[i])
    rec["sha256"] = "0" * 64
    ls[i] = canonical(rec)
    put(path, ls)
    return i + 1


def _modify_bytes(path: Path) -> int:
    i = index_of(path, "sign-in")
    ls = lines(path)
    ls[i] = ls[i].replace(b'"roles":["administrator"]', b'"roles": ["administrator"]')
    put(path, ls)
    return i


def _remove(path: Path) -> int:
    ls = lines(path)
    i = index_of(path, "exception") if any(b'"exception"' in x for x in ls) else index_of(path, "evidence")
    put(path, ls[:i] + ls[i + 1:])
    return i


def _reorder(path: Path) -> int:
    ls = lines(path)
    i = index_of(path, "artifact")
    ls[i], ls[i + 1] = ls[i + 1], ls[i]
    put(path, ls)
    return i


def _duplicate(path: Path) -> int:
    ls = lines(path)
    i = index_of(path, "step-end")
    put(path, [*ls[:i + 1], ls[i], *ls[i + 1:]])
    return i + 1


def _insert(path: Path) -> int:
    ls = lines(path)
    i = index_of(path, "artifact")
    prev = json.loads(ls[i])
    forged = dict(prev, path="extra.pem", sha256="1" * 64)  # same seq and prev as the record it precedes
    put(path, [*ls[:i], canonical(forged), *ls[i:]])
    return i + 1


@pytest.mark.parametrize("tamper, what", [
    (_modify, "does not chain"), (_modify_bytes, "canonical form"), (_remove, "sequence number"),
    (_reorder, "sequence number"), (_duplicate, "sequence number"), (_insert, "sequence number"),
], ids=["modified", "modified-bytes", "removed", "reordered", "duplicated", "inserted"])
def test_tampered_records_are_rejected_naming_the_first_bad_record(sealed: Path, tamper: Any, what: str) -> None:
    bad = tamper(sealed)
    result = verify(sealed)
    assert result.status == "invalid" and result.exit_code == 1
    assert result.problems[0].seq == bad and what in result.problems[0].message


def test_truncated_mid_record_is_incomplete(sealed: Path) -> None:
    data = sealed.read_bytes()
    sealed.write_bytes(data[:-40])  # the seal cut short
    result = verify(sealed)
    assert result.status == "incomplete" and result.exit_code == 2 and not result.ok
    assert any("cut short" in n for n in result.notes)


def test_truncated_records_are_incomplete(sealed: Path) -> None:
    put(sealed, lines(sealed)[:20])
    result = verify(sealed)
    assert result.status == "incomplete" and not result.ok
    assert any("verifies up to record 19" in n for n in result.notes)


def test_appended_record_after_the_seal_is_invalid(sealed: Path) -> None:
    recs = records(sealed)
    recs.append(dict(recs[-3], type="say", text="added later"))
    rewrite(sealed, recs)
    result = verify(sealed)
    assert result.status == "invalid" and "after the seal" in str(result.problems[0])


@pytest.mark.parametrize("tail", [b"\n", b'{"seq":', b" "], ids=["empty-line", "partial-record", "one-space"])
def test_bytes_after_the_seal_are_invalid(sealed: Path, tail: bytes) -> None:
    sealed.write_bytes(sealed.read_bytes() + tail)
    result = verify(sealed)
    assert result.status == "invalid" and result.exit_code == 1, [str(p) for p in result.problems]


def test_wrong_seal_signature_is_rejected(sealed: Path) -> None:
    """Replace the signature with another key's over the same seal record (the key named stays the root's)."""
    recs = records(sealed)
    seal = recs[-1]
    other = ec.generate_private_key(ec.SECP384R1())
    seal["signature"] = base64.b64encode(other.sign(seal_message(seal), ec.ECDSA(hashes.SHA384()))).decode()
    rewrite(sealed, recs)
    result = verify(sealed)
    assert result.status == "invalid"
    assert result.problems[0].seq == seal["seq"] and "signature does not verify" in str(result.problems[0])


@pytest.mark.parametrize("field, value", [("time", "2030-01-01T00:00:00.000Z"), ("words", ["aardvark"] * 32),
                                          ("verifier.path", "root.pub.pem"), ("verifier.sha256", "0" * 64)])
def test_edited_seal_metadata_is_rejected(sealed: Path, field: str, value: Any) -> None:
    """The seal's own fields are signed: its time, words and verifier cannot be edited."""
    recs = records(sealed)
    seal = recs[-1]
    if "." in field:
        outer, inner = field.split(".")
        seal[outer][inner] = value
    else:
        seal[field] = value
    put(sealed, [canonical(r) for r in recs])
    result = verify(sealed)
    assert result.status == "invalid", field


def test_edited_close_record_is_rejected(sealed: Path) -> None:
    """The closing record is under the seal: its time cannot be moved, even with the seal's prev recomputed."""
    recs = records(sealed)
    recs[-2]["time"] = "2030-01-01T00:00:00.000Z"
    rewrite(sealed, recs)  # re-chained: the seal's prev and head follow, its signature cannot
    assert verify(sealed).status == "invalid"


def forge(sealed: Path, mutate: Any = None) -> ec.EllipticCurvePrivateKey:
    """A forger without the CA key: content rewritten, chain recomputed, sealed with his own P-384 key, and
    his own self-signed "root" certificate dropped among the artifacts and named in the seal."""
    forger = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "SCSE Root (REHEARSAL)")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(forger.public_key())
            .serial_number(1).not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
            .not_valid_after(dt.datetime(2040, 1, 1, tzinfo=dt.UTC))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(forger, hashes.SHA384()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (sealed.parent.parent / "forger.crt.pem").write_bytes(pem)
    recs = records(sealed)
    if mutate is not None:
        mutate(recs)
    recs[-1]["verifier"] = dict(recs[-1]["verifier"], path="forger.crt.pem", sha256=hashlib.sha256(pem).hexdigest())
    rewrite(sealed, recs, forger)
    return forger


def test_a_forgers_own_seal_is_intact_as_a_file_and_never_anchored(sealed: Path) -> None:
    """The attack of the review: a Crypto Officer replaced, resealed with the forger's key, his certificate
    beside the transcript. The file is consistent; against the root the auditor brings it is not anchored."""
    officer = next(r["participant"]["name"] for r in records(sealed)
                   if r["type"] == "sign-in" and "crypto-officer" in r["participant"]["roles"])

    def replace_officer(recs: list[dict[str, Any]]) -> None:
        for i, r in enumerate(recs):
            recs[i] = json.loads(json.dumps(r, ensure_ascii=False).replace(officer, "Forged Officer"))

    forge(sealed, replace_officer)
    assert "Forged Officer" in sealed.read_text() and officer not in sealed.read_text()
    assert verify(sealed).status == "intact"  # as a file, without an anchor: consistent (and never exit 0)
    assert verify(sealed).exit_code == 64
    anchor = load_anchor(str(sealed.parent.parent / "root.crt.pem"), sealed.parent.parent)
    result = verify(sealed, trust=anchor, rehearsal=True)
    assert result.status == "not-anchored" and result.exit_code == 4, [str(p) for p in result.problems]
    assert result.anchoring is not None and "do not chain to the trust anchor" in result.anchoring.how
    run = invoke_verify(str(sealed), "--trust", str(sealed.parent.parent / "root.crt.pem"), "--rehearsal")
    assert run.returncode == 4 and run.stdout.splitlines()[0].startswith("NOT ANCHORED"), run.stdout
    # Only the anchor decides, and even the forger's own certificate brought as the anchor does not make his seal
    # pass: a key that is itself a root (a CA key) never seals a transcript.
    run = invoke_verify(str(sealed), "--trust", str(sealed.parent.parent / "forger.crt.pem"), "--rehearsal")
    assert run.returncode == 4 and "sealed by the root CA key itself" in run.stdout, run.stdout


def test_a_second_rehearsal_is_not_anchored_in_the_first_ones_root(sealed: Path, tmp_path: Path,
                                                                   definition_on_tokens: Any) -> None:
    """Two rehearsals' transcripts are both intact files; each verifies only against its own root."""
    defn_path, _ = definition_on_tokens()
    defn = load_definition(defn_path)
    other_out = tmp_path / "second"
    other = other_out / "transcripts" / "root-key-generation-1.jsonl"
    with open_rehearsal_transcript(other, "root-key-generation", defn) as rec:
        root_ceremony(defn, other_out, rec, rehearsal=True, interactive=False)
    first_root = load_anchor(str(sealed.parent.parent / "root.crt.pem"), sealed.parent.parent)
    result = verify(other, trust=first_root, rehearsal=True)
    assert result.status == "not-anchored" and result.exit_code == 4
    # presented with the first rehearsal's artifacts as well, the second's seal still has no path to the root
    shutil.copytree(other_out, tmp_path / "mixed", ignore=shutil.ignore_patterns("hsm"))
    for f in (sealed.parent.parent).glob("root.*"):
        shutil.copy(f, tmp_path / "mixed" / f"first-{f.name}")
    result = verify(tmp_path / "mixed" / "transcripts" / other.name, trust=first_root, rehearsal=True)
    assert result.status in ("not-anchored", "invalid") and result.exit_code != 0


def test_a_rehearsal_relabelled_production_and_resealed_never_passes(sealed: Path) -> None:
    """The rehearsal root key travels with the rehearsal's outputs: a forger can reseal with it. Relabelled
    production, the header contradicts the rehearsal marker of the root the transcript is anchored in."""
    rehearsal_root = load_anchor(str(sealed.parent.parent / "root.crt.pem"), sealed.parent.parent)
    recs = records(sealed)
    recs[0]["rehearsal"] = False
    rewrite(sealed, recs)  # even with a valid seal by the same root key, the header is under the seal
    result = verify(sealed, trust=rehearsal_root)
    assert result.status == "invalid" and result.exit_code == 1


def test_bad_trust_anchors_get_one_clear_message(sealed: Path, tmp_path: Path) -> None:
    base = sealed.parent.parent
    not_a_cert = tmp_path / "notes.txt"
    not_a_cert.write_text("the root is the one in the safe\n")
    leaf_like = base / "root.pub.pem"
    cases = {
        "": "no trust anchor",
        str(not_a_cert): "not a certificate (PEM or DER)",
        str(leaf_like): "not a certificate (PEM or DER)",
        "12:34": "neither a certificate file nor a SHA-256 fingerprint",
        "ab" * 32: "no certificate with this SHA-256 fingerprint among the artifacts",
    }
    for value, message in cases.items():
        with pytest.raises(AnchorError, match=re.escape(message)) as raised:
            load_anchor(value or None, base)
        assert raised.value.exit_code == 64 and "\n" not in str(raised.value)
    fingerprint = hashlib.sha256((base / "root.crt.der").read_bytes()).hexdigest()
    colons = ":".join(fingerprint[i:i + 2] for i in range(0, 64, 2)).upper()
    assert load_anchor(colons, base).fingerprint == fingerprint
    run = invoke_verify(str(sealed), "--trust", colons, "--rehearsal")
    assert run.returncode == 0, run.stdout + run.stderr


def test_artifact_changed_after_the_ceremony_is_rejected(sealed: Path) -> None:
    der = sealed.parent.parent / "root.pub.der"
    der.write_bytes(der.read_bytes() + b"\0")
    result = verify(sealed)
    assert result.status == "invalid"
    assert "root.pub.der changed after the ceremony" in str(result.problems[0])


def test_missing_artifact_and_artifacts_directory(sealed: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "evidence-copy"
    shutil.copytree(sealed.parent.parent, elsewhere, ignore=shutil.ignore_patterns("hsm", "transcripts"))
    (sealed.parent.parent / "root.crt.der").unlink()
    result = verify(sealed)
    assert result.status == "invalid" and "root.crt.der is missing" in str(result.problems[0])
    assert verify(sealed, elsewhere).status == "intact"


def test_certificate_swapped_for_another_is_rejected(sealed: Path, tmp_path: Path) -> None:
    """Swapping the certificate and fixing its recorded hash still fails: the key evidence and seal disagree."""
    recs = records(sealed)
    out = sealed.parent.parent
    other = ec.generate_private_key(ec.SECP384R1())
    (out / "root.pub.pem").write_bytes(other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    for r in recs:
        if r["type"] == "artifact" and r["path"] == "root.pub.pem":
            r["sha256"] = hashlib.sha256((out / "root.pub.pem").read_bytes()).hexdigest()
    rewrite(sealed, recs)
    result = verify(sealed)
    assert result.status == "invalid"


def test_the_final_head_copied_on_paper_is_checked(sealed: Path) -> None:
    seal = records(sealed)[-1]
    anchor = load_anchor(str(sealed.parent.parent / "root.crt.pem"), sealed.parent.parent)
    as_copied = ":".join(seal["head"][i:i + 2] for i in range(0, 64, 2)).upper()
    assert verify(sealed, trust=anchor, rehearsal=True, expect_head=as_copied).status == "intact"
    assert verify(sealed, trust=anchor, rehearsal=True, expect_head=" ".join(seal["words"]).upper()).status == "intact"
    wrong = verify(sealed, trust=anchor, rehearsal=True, expect_head="0" * 64)
    assert wrong.status == "invalid" and "not the one the witnesses copied" in str(wrong.problems[0])
    run = invoke_verify(str(sealed), "--trust", str(sealed.parent.parent / "root.crt.pem"), "--rehearsal",
                        "--expect-head", " ".join([*seal["words"][:31], "aardvark"]))
    assert run.returncode == 1 and "not the one the witnesses copied" in run.stdout


def certify_with_the_root(defn_path: Path, out: Path, key: ec.EllipticCurvePrivateKey, name: str,
                          not_before: dt.datetime, not_after: dt.datetime) -> Path:
    """A certificate for ``key`` signed by the root key on its token (as a later ceremony would issue it)."""
    defn = load_definition(defn_path)
    ca = defn.model.cas["root"]
    root = x509.load_pem_x509_certificate((out / "root.crt.pem").read_bytes())
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, f"{name} (REHEARSAL)")]))
               .issuer_name(root.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                              critical=True)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root.public_key()),
                              critical=False)
               .add_extension(x509.ExtendedKeyUsage([x509.ObjectIdentifier("2.16.466.1.1.1.3.1")]), critical=False))
    with open_session(ca.hsm, pin_source_for(ca.hsm, interactive=False)) as session:
        cert = builder.sign(signing_key(session, ca.hsm.key_label), hashes.SHA384())
    path = out / f"{name}.crt.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_a_key_certified_after_it_sealed_is_anchored_once_its_certificate_exists(tmp_path: Path,
                                                                                 definition_on_tokens: Any) -> None:
    """As a subordinate key ceremony's transcript: sealed by a key the root certifies later. Not anchored
    before the certificate exists; anchored once it does (validated from its start); a certificate that
    had expired before the seal anchors nothing."""
    defn_path, _ = definition_on_tokens()
    out = tmp_path / "out"
    path = out / "transcripts" / "root-key-generation-1.jsonl"
    with open_rehearsal_transcript(path, "root-key-generation", load_definition(defn_path)) as rec:
        root_ceremony(load_definition(defn_path), out, rec, rehearsal=True, interactive=False)
    key = ec.generate_private_key(ec.SECP384R1())
    recs = records(path)
    recs[-1]["verifier"] = dict(recs[-1]["verifier"], path="later-sealing.crt.pem", sha256="")  # not there yet
    rewrite(path, recs, key)  # sealed by ``key``, which nothing certifies yet
    anchor = load_anchor(str(out / "root.crt.pem"), out)
    assert verify(path, trust=anchor, rehearsal=True).status == "not-anchored"
    sealed_at = dt.datetime.fromisoformat(records(path)[-1]["time"].replace("Z", "+00:00"))
    expired = certify_with_the_root(defn_path, out, key, "expired-sealing", sealed_at - dt.timedelta(days=30),
                                    sealed_at - dt.timedelta(days=1))
    result = verify(path, trust=anchor, rehearsal=True)
    assert result.status == "not-anchored" and "expired" in result.anchoring.how.lower(), result.anchoring
    expired.unlink()
    certify_with_the_root(defn_path, out, key, "later-sealing", sealed_at + dt.timedelta(days=2),
                          sealed_at + dt.timedelta(days=400))
    result = verify(path, trust=anchor, rehearsal=True)
    assert result.status == "intact", ([str(p) for p in result.problems], result.anchoring)
    assert "later-sealing.crt.pem chains to the trust anchor" in result.anchoring.how


def _sign_in_line(path: Path) -> tuple[int, dict[str, Any]]:
    """The first sign-in record (its name holds a non-ASCII letter: é) and its position."""
    i = index_of(path, "sign-in")
    return i, json.loads(lines(path)[i])


@pytest.mark.parametrize("encode, what", [
    (lambda r: json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(), "canonical form"),
    (lambda r: json.dumps(dict(reversed(list(r.items()))), separators=(",", ":"), ensure_ascii=False).encode(),
     "canonical form"),
    (lambda r: json.dumps(r, sort_keys=True, ensure_ascii=False).encode(), "canonical form"),
    (lambda r: canonical(r).replace(b'{"participant"', b'{"participant":null,"participant"', 1), "canonical form"),
    (lambda r: canonical(r).replace(b'"seq":', b'"extra":NaN,"seq":', 1), "not valid JSON"),
    (lambda r: canonical(r).replace(b'"seq":' + str(r["seq"]).encode(), b'"seq":' + str(r["seq"]).encode() + b".0"),
     "not an integer"),
    (lambda r: canonical(r).replace("é".encode(), b"\\ud800", 1), "canonical form"),
    (lambda r: b"\xef\xbb\xbf" + canonical(r), "canonical form"),
], ids=["ascii-escapes", "unsorted-keys", "spaces", "duplicate-key", "nan", "float-position", "lone-surrogate",
        "byte-order-mark"])
def test_a_record_not_in_canonical_form_is_invalid(tmp_path: Path, encode: Any, what: str) -> None:
    """The same record written another way (é as \\u00e9, keys unsorted, spaces, a key twice, NaN, a position
    as 5.0, a lone surrogate, a byte-order mark): its line is not canonical(json.loads(line)) and the verifier
    refuses it at that record, whatever the record says."""
    path, _ = soft_transcript(tmp_path / "out", load_definition(TESTING_DEFINITION), ["offline-check"])
    i, rec = _sign_in_line(path)
    assert "é".encode() in canonical(rec)
    ls = lines(path)
    ls[i] = encode(rec)
    assert ls[i] != canonical(rec)
    put(path, ls)
    result = verify(path)
    assert result.status == "invalid" and result.exit_code == 1
    assert result.problems[0].seq == i and what in result.problems[0].message, [str(p) for p in result.problems]
