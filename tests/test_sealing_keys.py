"""Transcript-sealing keys: what may vouch for a seal, and what the ceremonies make.

The anchor accepts a seal only from a key the root itself certified for sealing: not the root key, not
a subordinate CA key, not a subscriber's key that chains to the root through a subordinate, not a
certificate that leaves its purpose open. Each of those is built here in software, as a forger or a
careless profile would, and refused; the one real shape is accepted. The rehearsal's own outputs
(one shared rehearsal) show the ceremonies sealing with sealing keys only.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REHEARSAL_GROUP
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ceremony.transcript.anchor import TrustAnchor, anchor_seal, certificates_in
from ceremony.x509.lint import lint_certificate

SEALING_EKU = x509.ObjectIdentifier("2.16.466.1.1.1.3.1")
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.COUNTRY_NAME, "ML")])


def _cert(subject: str, key: Any, issuer: x509.Certificate | None, issuer_key: Any, *, ca: bool,
          digital_signature: bool = True, cert_sign: bool = False,
          eku: list[x509.ObjectIdentifier] | None = None) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(_name(subject))
         .issuer_name(issuer.subject if issuer else _name(subject)).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
         .not_valid_after(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                                      key_encipherment=False, data_encipherment=False, key_agreement=False,
                                      key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                                      decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    signer_public = (issuer.public_key() if issuer else key.public_key())
    b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_public), critical=False)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return b.sign(issuer_key, hashes.SHA384())


@pytest.fixture(scope="module")
def pki() -> dict[str, Any]:
    keys = {n: ec.generate_private_key(ec.SECP384R1()) for n in ("root", "sub", "seal", "ee", "ca_seal", "any",
                                                                  "no_eku", "wide_ku", "sub_seal")}
    root = _cert("Root", keys["root"], None, keys["root"], ca=True, digital_signature=False, cert_sign=True)
    sub = _cert("Sub CA", keys["sub"], root, keys["root"], ca=True, digital_signature=False, cert_sign=True)
    certs = {
        "root": root, "sub": sub,
        "seal": _cert("Root Seal", keys["seal"], root, keys["root"], ca=False, eku=[SEALING_EKU]),
        # a subscriber's certificate: chains to the root through the subordinate, carries even the sealing EKU
        "ee": _cert("Citizen", keys["ee"], sub, keys["sub"], ca=False, eku=[SEALING_EKU]),
        "ca_seal": _cert("CA with EKU", keys["ca_seal"], root, keys["root"], ca=True, cert_sign=True,
                         eku=[SEALING_EKU]),
        "any": _cert("Any purpose", keys["any"], root, keys["root"], ca=False,
                     eku=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]),
        "no_eku": _cert("No EKU", keys["no_eku"], root, keys["root"], ca=False),
        "wide_ku": _cert("Wide KU", keys["wide_ku"], root, keys["root"], ca=False, cert_sign=True,
                         eku=[SEALING_EKU]),
    }
    return {"keys": keys, "certs": certs, "anchor": TrustAnchor(root, "root.crt.pem")}


def _candidates(pki: dict[str, Any]) -> list[tuple[Path, x509.Certificate]]:
    return [(Path(f"{n}.crt.pem"), c) for n, c in pki["certs"].items()]


def test_a_sealing_certificate_issued_by_the_root_anchors(pki: dict[str, Any]) -> None:
    result = anchor_seal(pki["keys"]["seal"].public_key(), pki["anchor"], _candidates(pki), NOW, Path("."))
    assert result.anchored and "seal.crt.pem" in result.how


@pytest.mark.parametrize(("key", "why"), [
    ("root", "sealed by the root CA key itself"),
    ("sub", "a CA certificate"),
    ("ee", "not issued by the root itself"),
    ("ca_seal", "a CA certificate"),
    ("any", "does not name the transcript-sealing purpose"),
    ("no_eku", "no extendedKeyUsage"),
    ("wide_ku", "keyUsage is not digitalSignature alone"),
])
def test_no_other_key_anchors_a_seal(pki: dict[str, Any], key: str, why: str) -> None:
    """CA keys sign certificates and CRLs only; only the root certifies sealing keys, for that purpose alone."""
    result = anchor_seal(pki["keys"][key].public_key(), pki["anchor"], _candidates(pki), NOW, Path("."))
    assert not result.anchored and why in result.how


def test_a_sealing_certificate_outside_its_validity_does_not_anchor(pki: dict[str, Any]) -> None:
    late = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    result = anchor_seal(pki["keys"]["seal"].public_key(), pki["anchor"], _candidates(pki), late, Path("."))
    assert not result.anchored
    assert "do not chain to the trust anchor" in result.how


def _seals(out: Path) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    found = []
    for path in sorted((out / "transcripts").glob("*.jsonl")):
        lines = path.read_bytes().splitlines()
        found.append((path.name, json.loads(lines[0]), json.loads(lines[-1])))
    return found


@pytest.mark.xdist_group(REHEARSAL_GROUP)  # the one shared rehearsal, on one worker
def test_the_rehearsal_seals_every_transcript_with_a_sealing_key(full_rehearsal: tuple[Path, Any]) -> None:
    """Root, subordinate, CRL batch, backup and restore transcripts: the verifier named is never a CA's file."""
    out, _ = full_rehearsal
    seals = _seals(out)
    assert seals
    for name, _header, seal in seals:
        assert seal["type"] == "seal", name
        verifier = seal["verifier"]["path"]
        assert ".seal." in verifier, f"{name} is sealed by {verifier}, not by a transcript-sealing key"
    sealing = {p.name: c for p, c in certificates_in(out) if ".seal." in p.name and p.name.endswith(".crt.pem")}
    assert {"root.seal.crt.pem", "qualified.seal.crt.pem"} <= set(sealing)
    root = x509.load_pem_x509_certificate((out / "root.crt.pem").read_bytes())
    # the rehearsal's successor root (life-cycle stage) certifies its own sealing key; the root reaches it through
    # the forward cross-certificate (docs/lifecycle.md, "Verifying after a rollover")
    successor = x509.load_pem_x509_certificate((out / "root.g2.crt.pem").read_bytes())
    forward = x509.load_pem_x509_certificate((out / "root.g2.by-g1.crt.pem").read_bytes())
    assert forward.issuer == root.subject and forward.public_key() == successor.public_key()
    for name, cert in sealing.items():
        assert cert.issuer == (successor if name.startswith("root.g2.") else root).subject, name
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.digital_signature and not usage.key_cert_sign and not usage.crl_sign
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [SEALING_EKU]
        assert not [f for f in lint_certificate(cert.public_bytes(Encoding.DER))
                    if f.blocking], name


@pytest.mark.xdist_group(REHEARSAL_GROUP)  # the one shared rehearsal, on one worker
def test_openssl_agrees_that_the_root_issued_the_sealing_certificates(full_rehearsal: tuple[Path, Any]) -> None:
    """An independent checker: the root verifies them; the subordinate CA does not (it never certifies one)."""
    out, _ = full_rehearsal
    for name in ("root.seal.crt.pem", "qualified.seal.crt.pem"):
        ok = subprocess.run(["openssl", "verify", "-CAfile", str(out / "root.crt.pem"), "-purpose", "any",
                             str(out / name)], capture_output=True, text=True)
        assert ok.returncode == 0 and ": OK" in ok.stdout, ok.stdout + ok.stderr
        text = subprocess.run(["openssl", "x509", "-in", str(out / name), "-noout", "-ext",
                               "keyUsage,extendedKeyUsage,basicConstraints"], capture_output=True, text=True,
                              check=True).stdout
        assert "Digital Signature" in text and "2.16.466.1.1.1.3.1" in text and "CA:FALSE" in text
