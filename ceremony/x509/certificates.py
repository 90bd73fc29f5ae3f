"""Assembling CA certificates from the definition: serial, names, validity, profile extensions.

Serial numbers are 20 bytes from the HSM's random generator with the top bit cleared: positive,
at most 20 octets (RFC 5280 4.1.2.2) and well over the 64 random bits the Baseline Requirements
ask for. The builders returned here are signed by :mod:`ceremony.x509.lint` (lint, HSM, verify).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from cryptography import x509

from ceremony.definition.model import CA, NameConstraints
from ceremony.x509.profiles import (
    Extension,
    cross_extensions,
    ocsp_signer_extensions,
    ocsp_signer_subject,
    root_extensions,
    sealing_extensions,
    sealing_subject,
    subject_name,
    subordinate_extensions,
)


def serial_from_random(random20: bytes) -> int:
    """A positive, non-zero serial from 20 random bytes (top bit cleared so DER needs no 0x00 pad)."""
    if len(random20) != 20:
        raise ValueError("a serial is made from exactly 20 random bytes")
    value = int.from_bytes(bytes([random20[0] & 0x7F]) + random20[1:], "big")
    return value or 1


def _builder(subject: x509.Name, issuer: x509.Name, public_key: Any, serial: int, ca: CA,
             extensions: list[Extension]) -> x509.CertificateBuilder:
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(issuer)
         .public_key(public_key)
         .serial_number(serial)
         .not_valid_before(ca.validity.not_before)
         .not_valid_after(ca.validity.not_after))
    for ext in extensions:
        b = b.add_extension(ext.value, critical=ext.critical)
    return b


def root_builder(ca: CA, public_key: Any, serial: int, rehearsal: bool) -> x509.CertificateBuilder:
    name = subject_name(ca.subject, rehearsal)
    return _builder(name, name, public_key, serial, ca, root_extensions(ca, public_key))


def subordinate_builder(ca: CA, issuer: CA, issuer_cert: x509.Certificate, public_key: Any, serial: int,
                        rehearsal: bool) -> x509.CertificateBuilder:
    return _builder(subject_name(ca.subject, rehearsal), issuer_cert.subject, public_key, serial, ca,
                    subordinate_extensions(ca, issuer, public_key, issuer_cert))


def sealing_builder(holder: CA, root: CA, root_cert: x509.Certificate, public_key: Any, serial: int, eku: str,
                    rehearsal: bool) -> x509.CertificateBuilder:
    """The certificate the root gives the transcript-sealing key on ``holder``'s HSM, valid as long as that CA."""
    return _builder(subject_name(sealing_subject(holder.subject), rehearsal), root_cert.subject, public_key, serial,
                    holder, sealing_extensions(root, public_key, root_cert, eku))


def cross_builder(issuer: CA, issuer_cert: x509.Certificate, subject_cert: x509.Certificate, serial: int,
                  not_before: dt.datetime, not_after: dt.datetime, path_length: int | None,
                  policy_oids: Sequence[str], name_constraints: NameConstraints | None) -> x509.CertificateBuilder:
    """A cross-certificate: the subject root's name and key exactly as its self-signed certificate has them
    (BR 7.1.2.2.2: the subject byte for byte), issued under ``issuer_cert``'s name."""
    b = (x509.CertificateBuilder()
         .subject_name(subject_cert.subject)
         .issuer_name(issuer_cert.subject)
         .public_key(subject_cert.public_key())
         .serial_number(serial)
         .not_valid_before(not_before)
         .not_valid_after(not_after))
    for ext in cross_extensions(issuer, issuer_cert, subject_cert, path_length, policy_oids, name_constraints):
        b = b.add_extension(ext.value, critical=ext.critical)
    return b


def ocsp_signer_builder(ca: CA, ca_cert: x509.Certificate, public_key: Any, serial: int, not_before: dt.datetime,
                        not_after: dt.datetime, rehearsal: bool) -> x509.CertificateBuilder:
    """The certificate a CA gives its delegated OCSP signer key: short-lived, from ``not_before`` to ``not_after``."""
    b = (x509.CertificateBuilder()
         .subject_name(subject_name(ocsp_signer_subject(ca.subject), rehearsal))
         .issuer_name(ca_cert.subject)
         .public_key(public_key)
         .serial_number(serial)
         .not_valid_before(not_before)
         .not_valid_after(not_after))
    for ext in ocsp_signer_extensions(public_key, ca_cert):
        b = b.add_extension(ext.value, critical=ext.critical)
    return b
