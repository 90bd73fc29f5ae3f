"""Profiles, serials, DER and fingerprint helpers: pure unit tests."""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest
from conftest import REPO
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from ceremony.common.fingerprints import colon_form, read_aloud, sha256_hex
from ceremony.definition.model import NameConstraints, load_definition
from ceremony.x509.certificates import root_builder, serial_from_random, subordinate_builder
from ceremony.x509.lint import lint_certificate
from ceremony.x509.profiles import REHEARSAL_MARKER, subject_name


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return load_definition(REPO / "inventory/testing/pki.yml").model


def test_subject_keeps_the_order_and_marks_rehearsals(model) -> None:  # type: ignore[no-untyped-def]
    ca = model.cas["qualified"]
    name = subject_name(ca.subject, rehearsal=False)
    assert [a.oid for a in name] == [NameOID.COUNTRY_NAME, NameOID.ORGANIZATION_NAME,
                                     NameOID.ORGANIZATION_IDENTIFIER, NameOID.COMMON_NAME]
    marked = subject_name(ca.subject, rehearsal=True)
    assert marked.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value.endswith(REHEARSAL_MARKER)
    with pytest.raises(ValueError, match="64 characters"):
        subject_name([{"CN": "x" * 60}], rehearsal=True)


def test_serial_is_positive_and_at_most_20_octets() -> None:
    assert serial_from_random(b"\xff" * 20) == int.from_bytes(b"\x7f" + b"\xff" * 19, "big")
    assert serial_from_random(b"\x00" * 20) == 1
    with pytest.raises(ValueError):
        serial_from_random(b"\x01" * 8)


def _sign(builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return builder.sign(key, hashes.SHA384())


def test_root_and_subordinate_profiles(model) -> None:  # type: ignore[no-untyped-def]
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = _sign(root_builder(model.cas["root"], root_key.public_key(), 5, rehearsal=False), root_key)
    bc = root.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS)
    ku = root.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE)
    assert bc.critical and bc.value.ca and ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    oids = {e.oid for e in root.extensions}
    assert ExtensionOID.EXTENDED_KEY_USAGE not in oids and ExtensionOID.CERTIFICATE_POLICIES not in oids
    assert root.not_valid_before_utc == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    sub_key = ec.generate_private_key(ec.SECP384R1())
    sub = _sign(subordinate_builder(model.cas["qualified"], model.cas["root"], root, sub_key.public_key(), 7,
                                    rehearsal=False), root_key)
    assert sub.issuer == root.subject
    assert sub.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    aki = sub.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki == root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    cdp = sub.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == model.cas["root"].publication.crl_url
    aia = sub.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    # The root serves OCSP (publication.ocsp_url): id-ad-ocsp first, then caIssuers.
    assert [a.access_location.value for a in aia] == [model.cas["root"].publication.ocsp_url,
                                                      model.cas["root"].publication.certificate_url]
    assert aia[0].access_method == x509.oid.AuthorityInformationAccessOID.OCSP
    policies = [p.policy_identifier.dotted_string for p in sub.extensions.get_extension_for_class(
        x509.CertificatePolicies).value]
    assert policies == model.cas["qualified"].policy_oids
    for cert in (root, sub):
        blocking = [f for f in lint_certificate(cert.public_bytes(serialization.Encoding.DER)) if f.blocking]
        assert blocking == []


def test_name_constraints_are_critical(model) -> None:  # type: ignore[no-untyped-def]
    constraints = NameConstraints(permitted_dns=["scse.ml"], excluded_ip=["10.0.0.0/8"])
    ca = model.cas["qualified"].model_copy(update={"name_constraints": constraints})
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = _sign(root_builder(model.cas["root"], root_key.public_key(), 5, rehearsal=False), root_key)
    sub = _sign(subordinate_builder(ca, model.cas["root"], root, root_key.public_key(), 9, False), root_key)
    nc = sub.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical and nc.value.permitted_subtrees[0].value == "scse.ml"


def test_fingerprint_helpers_match_openssl(tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fp")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(dt.datetime(2026, 1, 1)).not_valid_after(dt.datetime(2027, 1, 1))
            .sign(key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    (tmp_path / "c.der").write_bytes(der)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(tmp_path / "c.der"), "-noout",
                          "-fingerprint", "-sha256"], capture_output=True, text=True, check=True).stdout
    assert out.strip().split("=", 1)[1] == colon_form(sha256_hex(der))
    lines = read_aloud(sha256_hex(der))
    assert len(lines) == 4 and lines[0].startswith("1: ") and len(lines[0].split()) == 5
    assert "".join("".join(line.split()[1:]) for line in lines) == sha256_hex(der).upper()
    with pytest.raises(ValueError):
        read_aloud("xyz")
