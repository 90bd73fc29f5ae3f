"""Every value the CP/CPS states, derived from the definition and the real artifacts.

Nothing here is typed by hand: the CA inventory, fingerprints, validity and key algorithms come from
the certificates the ceremonies wrote (``<out>/<ca>.crt.pem``); CRL cadence, URLs, quorum and backup
policy from the definition; the CRL profile from a real CRL when the manifest lists one, and the
end-entity profiles from a real issued certificate when there is one (else from the definition).
The drift check derives these facts again and re-renders the documents, so a re-issued certificate
or a changed interval shows up as a difference in a named section.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp as x509_ocsp
from cryptography.x509.oid import ExtensionOID, NameOID

from ceremony.common.clock import DEFAULT_MAX_ERROR_SECONDS
from ceremony.common.fingerprints import colon_form
from ceremony.common.manifest import MANIFEST_NAME
from ceremony.crl import encoding as crlenc
from ceremony.definition.model import (
    ALLOWED_CURVES,
    ALLOWED_RSA_BITS,
    CA,
    LoadedDefinition,
    documents_value,
    parse_duration,
    partition_crl_url,
)
from ceremony.hsm.signers import hash_for
from ceremony.ocsp.encoding import ResponderContext, Status
from ceremony.ocsp.signer import signer_generations
from ceremony.policy.errors import PolicyError
from ceremony.policy.ocsp_behaviour import OcspBehaviourFacts, ocsp_behaviour
from ceremony.x509.certificates import ocsp_signer_builder, serial_from_random
from ceremony.x509.ee_profiles import PSEUDONYM_ALLOWED, ee_builder, legislation_for, subject_attributes
from ceremony.x509.files import read_certificate
from ceremony.x509.profiles import describe_extensions, subject_name

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "scripts"
REPO_DIR = Path(__file__).resolve().parent.parent.parent
CRL_SIGNER_DEFAULTS = REPO_DIR / "roles" / "crl_signer" / "defaults" / "main.yml"
SUBORDINATE_CA_DEFAULTS = REPO_DIR / "roles" / "subordinate_ca" / "defaults" / "main.yml"

#: The registry lists every revoked certificate in every CRL, expired or not
#: (:meth:`ceremony.ca.registry.Registry.revoked_rows` has no expiry filter, and the previous-CRL check
#: never requires an entry to leave). The CPS states this; a text saying otherwise fails the check.
EXPIRED_ENTRIES_KEPT = True

#: The sealing certificates' extended key usage when the definition does not name one (``ceremony.sealing_eku``).
DEFAULT_SEALING_EKU = "2.16.466.1.1.1.3.1"

#: PIN file mode the ``crl_signer`` role gives the unattended job's PIN file, and that the job
#: itself refuses anything else than (``ceremony.crl.job``: "PIN file has mode …; it must be 0600").
PIN_FILE_MODE = "0600"

#: systemd ``OnCalendar`` shorthands the CPS can state as a period, in hours.
_CALENDAR_HOURS = {"hourly": 1, "daily": 24}


_ATTR_SHORT = {"2.5.4.6": "C", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.3": "CN", "2.5.4.7": "L",
               "2.5.4.8": "ST", "2.5.4.97": "organizationIdentifier", "2.5.4.5": "serialNumber",
               "0.9.2342.19200300.100.1.25": "DC"}


@dataclass(frozen=True)
class CaFacts:
    """One CA as its certificate shows it, with the operating parameters of the definition."""

    name: str
    role: str
    issuer: str
    issuer_common_name: str
    common_name: str
    subject: str
    subject_attributes: list[str]
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    key_algorithm: str
    key_size: str
    public_key_oid: str
    signature_algorithm: str
    signature_oid: str
    fingerprint: str
    version: int
    extensions: list[dict[str, str]]
    key_usage: list[str]
    path_length: str
    policy_oids: list[str]
    name_constraints: bool
    policy_constraints: bool
    certificate_policies_critical: bool
    certificate_url: str
    crl_url: str
    crl: Any
    backup: Any
    hsm_module: str
    hsm_token: str
    certificate_file: str
    seal_label: str = ""
    seal_certificate: SealCertificateFacts | None = None
    #: The definition's ``ocsp`` section (``ceremony.definition.model.Ocsp``), None when the CA runs no OCSP
    #: service: 4.9.9, 4.9.10, 4.10, 6.3.2, 7.1.2 and 7.3 state what it makes true.
    ocsp: Any = None
    #: ``crl.partitions``' URLs, partition ``i`` at index ``i`` (``<stem>-p<i>.crl``); empty without partitions.
    partition_urls: list[str] = field(default_factory=list)
    ocsp_profile: OcspProfileFacts | None = None
    #: The definition's recorded termination decision (``cas.<ca>.termination``), None while the CA operates: 5.8
    #: states it (when it was decided, its reference, the body that keeps the archive and the last CRL).
    termination: Any = None

    @property
    def validity_years(self) -> str:
        days = (self.not_after - self.not_before).days
        years = days / 365.2425
        return f"{years:.0f}" if abs(years - round(years)) < 0.01 else f"{years:.1f}"


@dataclass(frozen=True)
class SealCertificateFacts:
    """A transcript-sealing certificate ``<ca>.seal.crt.pem`` found in the output directory."""

    file: str
    serial: str
    fingerprint: str
    not_after: dt.datetime


@dataclass(frozen=True)
class OcspProfileFacts:
    """The OCSP response and signer certificate profile of one CA, read from what the engine writes: a response the
    job's own encoder (:class:`ceremony.ocsp.encoding.ResponderContext`) makes, parsed back with cryptography, and
    the signer certificate the signer ceremony issued (``<ca>.ocsp[.g<n>].crt.pem``, the latest generation), else one
    the ceremony's builder makes on a throwaway key. A change of the encoder or of the profile is then drift."""

    source: str  # "certificate" (the signer ceremony has run) or "definition"
    signer_file: str
    signer_extensions: list[dict[str, str]]
    responder_id: str  # "byKey" or "byName"
    response_extensions: list[dict[str, str]]
    single_extensions: list[dict[str, str]]
    certs: int
    #: What the responder answers and when the job signs again, observed on the engine
    #: (:mod:`ceremony.policy.ocsp_behaviour`): 4.9.9 and 4.9.10 are written from it.
    behaviour: OcspBehaviourFacts | None = None


@dataclass(frozen=True)
class CrossCertificateFacts:
    """A cross-certificate the cross-certification ceremony wrote (``<root>.g<subject>.by-g<issuer>.crt.pem``)."""

    file: str
    forward: bool  # the old root certifies the successor's key (else the reverse one)
    serial: str
    fingerprint: str
    not_before: dt.datetime
    not_after: dt.datetime
    extensions: list[dict[str, str]]


@dataclass(frozen=True)
class SuccessorFacts:
    """The root that succeeds the root in service (``cas.<root>.successor``): what 1.3.1, 5.6 and 7.1 state of
    the rollover before and after its ceremonies (the definition's values; its certificate once it exists)."""

    generation: int
    common_name: str
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    same_token: bool
    reverse: bool
    policy_oids: list[str]
    path_length: str
    name_constraints: bool
    certificate_file: str
    fingerprint: str  # empty until the successor's key ceremony has written its certificate
    cross_certificates: list[CrossCertificateFacts] = field(default_factory=list)


@dataclass(frozen=True)
class TranscriptFacts:
    """One ceremony held: its transcript's script, time and final head (the value an auditor pins)."""

    file: str
    script: str
    version: str
    time: str
    head: str
    sealed: bool


@dataclass(frozen=True)
class OnlineFacts:
    """How the online CA's CRL job runs, as the ``crl_signer`` role provisions it."""

    schedule: str
    period_hours: int
    pin_file: str
    pin_file_mode: str
    expired_entries_kept: bool

    def period(self, lang: str) -> str:
        """``chaque heure`` / ``every hour``, or ``toutes les 24 heures`` / ``every 24 hours``."""
        if self.period_hours == 1:
            return "chaque heure" if lang == "fr" else "every hour"
        return f"toutes les {self.period_hours} heures" if lang == "fr" else f"every {self.period_hours} hours"


@dataclass(frozen=True)
class RegistryBackupFacts:
    """How often the ``subordinate_ca`` role backs up an online CA's registry, and how many backups it keeps
    on the host (5.1.8 states both; a change of the role's defaults is drift)."""

    schedule: str
    keep: int


@dataclass(frozen=True)
class ProfileFacts:
    """An end-entity certificate profile: from a real issued certificate when the rehearsal made one."""

    name: str
    issuer: str
    issuer_common_name: str
    kind: str
    validity_days: int
    policy_oids: list[str]
    qc_pds_url: str
    qc_pds_lang: str
    source: str  # "certificate" or "definition"
    extensions: list[dict[str, str]]
    key_usage: list[str]
    pds: list[tuple[str, str]] = field(default_factory=list)  # (url, language) of every PDS, the first first
    signature_algorithm: str = ""
    signature_oid: str = ""
    required_attributes: list[str] = field(default_factory=list)
    allowed_attributes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CrlProfileFacts:
    source: str  # "crl" (a real CRL file) or "definition"
    version: int
    extensions: list[dict[str, str]]
    entry_extensions: list[str]
    files: list[str]


@dataclass(frozen=True)
class ScriptFacts:
    name: str
    version: str
    title_fr: str
    title_en: str
    independent_witness: str
    roles: list[str]
    steps: int
    sha256: str


@dataclass
class Facts:
    """All values the templates may use; templates fail (StrictUndefined) on anything else."""

    environment: str
    rehearsal: bool
    organisation: Any
    documents: Any
    ceremony: Any
    cas: list[CaFacts]
    profiles: list[ProfileFacts]
    crl_profile: CrlProfileFacts
    scripts: list[ScriptFacts]
    transcripts: list[TranscriptFacts] = field(default_factory=list)
    transcripts_dir: str = ""
    online: OnlineFacts | None = None
    successor: SuccessorFacts | None = None
    sealing_eku: str = DEFAULT_SEALING_EKU
    registry_backup: RegistryBackupFacts = field(default_factory=lambda: registry_backup_facts())
    #: Whether the issuance admits a pseudonym in a natural person's subject (:data:`ceremony.x509.ee_profiles.
    #: PSEUDONYM_ALLOWED`): the CP forbids it (PC-3.1.3-a), the CPS says how the software enforces it.
    pseudonym_allowed: bool = PSEUDONYM_ALLOWED
    #: The largest clock error (seconds) at which the CRL job and the publisher still sign or publish
    #: (:data:`ceremony.common.clock.DEFAULT_MAX_ERROR_SECONDS`): 5.5.5 states it.
    clock_max_error: str = f"{DEFAULT_MAX_ERROR_SECONDS:g}"
    allowed_curves: tuple[str, ...] = ALLOWED_CURVES
    allowed_rsa_bits: tuple[int, ...] = ALLOWED_RSA_BITS
    #: Random bits in a serial number, as :func:`ceremony.x509.certificates.serial_from_random` makes every
    #: serial (CA, sealing and subscriber certificates) from 20 bytes of the issuing token's generator.
    serial_bits: int = serial_from_random(b"\xff" * 20).bit_length()

    @property
    def root(self) -> CaFacts:
        return next(c for c in self.cas if c.role == "root")

    @property
    def subordinates(self) -> list[CaFacts]:
        return [c for c in self.cas if c.role != "root"]

    @property
    def terminations(self) -> list[CaFacts]:
        """The CAs whose termination the definition records (5.8 names each decision)."""
        return [c for c in self.cas if c.termination is not None]

    @property
    def ocsp_cas(self) -> list[CaFacts]:
        """The CAs with an OCSP service (``cas.*.ocsp``): none means the status is published by CRLs only."""
        return [c for c in self.cas if c.ocsp is not None]

    @property
    def partitioned(self) -> list[CaFacts]:
        """The CAs whose CRL is split into partitions (``cas.*.crl.partitions``)."""
        return [c for c in self.cas if c.partition_urls]

    @property
    def split_pins(self) -> bool:
        """Whether token initialisation splits a PIN into parts (a quorum above 1 of either officer role)."""
        return self.ceremony.crypto_officer_quorum > 1 or self.ceremony.security_officer_quorum > 1

    @property
    def backups(self) -> list[CaFacts]:
        return [c for c in self.cas if c.backup.mode == "wrapped"]

    def witness(self, script: str) -> str:
        """Whether a production ceremony of ``script`` needs an independent witness: "required" only when
        the definition (``ceremony.require_independent_witness``) and the script both require one, as the
        ceremony runner decides (ceremony/transcript/participants.py); a rehearsal never needs one."""
        found = [s for s in self.scripts if s.name == script]
        required = bool(getattr(self.ceremony, "require_independent_witness", False))
        return "required" if required and found and found[0].independent_witness == "required" else "optional"


def _key_facts(key: Any) -> tuple[str, str, str]:
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(key.curve.name,
                                                                                     key.curve.name)
        return f"ECDSA {curve}", f"{key.curve.key_size} bits", "1.2.840.10045.2.1"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}", f"{key.key_size} bits", "1.2.840.113549.1.1.1"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", "256 bits", "1.3.101.112"
    return type(key).__name__, "?", "?"


def _dn(name: x509.Name) -> tuple[str, list[str]]:
    """The DN in the certificate's own order (most significant first), as people read it."""
    parts = []
    for rdn in name.rdns:
        for attr in rdn:
            value = attr.value.decode("utf-8", "replace") if isinstance(attr.value, bytes) else attr.value
            parts.append(f"{_ATTR_SHORT.get(attr.oid.dotted_string, attr.oid.dotted_string)}={value}")
    return ", ".join(parts), [p.split("=", 1)[0] for p in parts]


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else name.rfc4514_string()


_QC_NAMES = {"0.4.0.1862.1.1": "QcCompliance", "0.4.0.1862.1.2": "QcLimitValue", "0.4.0.1862.1.3":
             "QcRetentionPeriod", "0.4.0.1862.1.4": "QcSSCD", "0.4.0.1862.1.5": "QcPDS", "0.4.0.1862.1.6": "QcType",
             "0.4.0.1862.1.7": "QcCClegislation", "0.4.0.1862.1.6.1": "esign", "0.4.0.1862.1.6.2": "eseal",
             "0.4.0.1862.1.6.3": "web", "1.3.6.1.5.5.7.11.2": "pkixQCSyntax-v2"}


def _der_items(data: bytes) -> list[tuple[int, bytes]]:
    """(tag, content) of each DER element in ``data``: just enough to read qcStatements."""
    items, i = [], 0
    while i < len(data):
        tag, length = data[i], data[i + 1]
        i += 2
        if length & 0x80:
            n = length & 0x7F
            length = int.from_bytes(data[i:i + n], "big")
            i += n
        items.append((tag, data[i:i + length]))
        i += length
    return items


def _der_oid(content: bytes) -> str:
    arcs, value = [], 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def describe_qc_statements(der: bytes) -> str:
    """``QcCompliance; QcType esign; QcPDS https://… (en)`` from the extension's DER (EN 319 412-5)."""
    parts = []
    try:
        for _, statement in _der_items(_der_items(der)[0][1]):
            fields = _der_items(statement)
            oid = _der_oid(fields[0][1])
            name = _QC_NAMES.get(oid, oid)
            info = fields[1] if len(fields) > 1 else None
            if name == "QcType" and info:
                name += " " + ", ".join(_QC_NAMES.get(_der_oid(c), _der_oid(c)) for _, c in _der_items(info[1]))
            elif name == "QcPDS" and info:
                for _, location in _der_items(info[1]):
                    url, lang = (c.decode("ascii", "replace") for _, c in _der_items(location)[:2])
                    name += f" {url} ({lang})"
            elif name == "QcCClegislation" and info:
                name += " " + ", ".join(c.decode("ascii", "replace") for _, c in _der_items(info[1]))
            parts.append(name)
    except (IndexError, ValueError):
        return "undecodable qcStatements: " + der.hex()
    return "; ".join(parts)


EE_SKI_TEXT = "SHA-1 of the subject public key (RFC 5280 4.2.1.2 method 1), per certificate"
EE_AKI_TEXT = "= subjectKeyIdentifier of the issuing CA"


def describe_certificate_extensions(cert: x509.Certificate, end_entity: bool = False) -> list[dict[str, str]]:
    """:func:`ceremony.x509.profiles.describe_extensions`, with qcStatements decoded; for an end-entity
    profile the subject key identifier is described, not quoted (it differs in every certificate)."""
    rows = describe_extensions(cert)
    for row, ext in zip(rows, cert.extensions, strict=True):
        if row["oid"] == "1.3.6.1.5.5.7.1.3" and isinstance(ext.value, x509.UnrecognizedExtension):
            row.update(name="qcStatements", value=describe_qc_statements(ext.value.value))
        elif end_entity and row["oid"] == "2.5.29.14":
            row["value"] = EE_SKI_TEXT
        elif end_entity and row["oid"] == "2.5.29.35":
            row["value"] = EE_AKI_TEXT
    return rows


def _key_usage(cert: x509.Certificate) -> list[str]:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return []
    names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign"]
    return [n for n in names if getattr(ku, n)]


def _has(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> x509.Extension[Any] | None:
    try:
        return cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None


def load_certificate(path: Path) -> x509.Certificate:
    return read_certificate(path)


def ca_facts(name: str, ca: CA, out: Path, rehearsal: bool) -> CaFacts:
    path = out / f"{name}.crt.pem"
    if not path.is_file():
        raise PolicyError(f"{path}: the certificate of CA {name!r} is missing; the CP/CPS state its fingerprint, "
                          "subject and validity (sections 1.3.1, 6.3.2, 7.1) from the real certificate: run the "
                          "ceremony first or pass --out with the directory holding it")
    cert = load_certificate(path)
    expected = subject_name(ca.subject, rehearsal)
    if cert.subject != expected:
        raise PolicyError(f"{path}: subject {cert.subject.rfc4514_string()!r} is not the subject of CA {name!r} "
                          f"in the definition ({expected.rfc4514_string()!r})")
    subject, attrs = _dn(cert.subject)
    key_alg, key_size, key_oid = _key_facts(cert.public_key())
    sig = cert.signature_algorithm_oid
    bc = _has(cert, ExtensionOID.BASIC_CONSTRAINTS)
    path_length = "none"
    if bc is not None and bc.value.path_length is not None:
        path_length = str(bc.value.path_length)
    cp = _has(cert, ExtensionOID.CERTIFICATE_POLICIES)
    return CaFacts(
        name=name, role=ca.role, issuer=ca.issuer or name,
        issuer_common_name=_cn(cert.issuer), common_name=_cn(cert.subject), subject=subject, subject_attributes=attrs,
        serial=f"{cert.serial_number:x}", not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        key_algorithm=key_alg, key_size=key_size, public_key_oid=key_oid,
        signature_algorithm=getattr(sig, "_name", sig.dotted_string), signature_oid=sig.dotted_string,
        fingerprint=colon_form(hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()),
        version=cert.version.value + 1, extensions=describe_certificate_extensions(cert), key_usage=_key_usage(cert),
        path_length=path_length,
        policy_oids=[p.policy_identifier.dotted_string for p in cp.value] if cp else [],
        name_constraints=_has(cert, ExtensionOID.NAME_CONSTRAINTS) is not None,
        policy_constraints=_has(cert, ExtensionOID.POLICY_CONSTRAINTS) is not None,
        certificate_policies_critical=bool(cp and cp.critical),
        certificate_url=ca.publication.certificate_url, crl_url=ca.publication.crl_url, crl=ca.crl,
        backup=ca.backup, hsm_module=Path(ca.hsm.module).name, hsm_token=ca.hsm.token.describe(),
        certificate_file=path.name, seal_label=_seal_label(ca), seal_certificate=_seal_certificate(name, out),
        ocsp=ca.ocsp, ocsp_profile=ocsp_profile(name, ca, cert, out, rehearsal) if ca.ocsp is not None else None,
        partition_urls=[partition_crl_url(ca.publication.crl_url, i) for i in range(ca.crl.partitions or 0)],
        termination=ca.termination)


_OCSP_EXT_NAMES = {"1.3.6.1.5.5.7.48.1.6": "archiveCutoff", "1.3.6.1.5.5.7.48.1.2": "nonce",
                   "1.3.6.1.5.5.7.48.1.3": "crlID", "1.3.6.1.5.5.7.48.1.4": "acceptableResponses"}


_EKU_NAMES = {"1.3.6.1.5.5.7.3.9": "id-kp-OCSPSigning"}
_KU_NAMES = {"digital_signature": "digitalSignature", "content_commitment": "contentCommitment",
             "key_encipherment": "keyEncipherment", "data_encipherment": "dataEncipherment",
             "key_agreement": "keyAgreement", "key_cert_sign": "keyCertSign", "crl_sign": "cRLSign"}


def _ocsp_extension_rows(extensions: x509.Extensions) -> list[dict[str, str]]:
    return [{"oid": e.oid.dotted_string, "name": _OCSP_EXT_NAMES.get(e.oid.dotted_string, e.oid.dotted_string),
             "critical": "yes" if e.critical else "no"} for e in extensions]


def ocsp_profile(name: str, ca: CA, ca_cert: x509.Certificate, out: Path, rehearsal: bool) -> OcspProfileFacts:
    """:class:`OcspProfileFacts` of CA ``name`` (which has an ``ocsp`` section)."""
    assert ca.ocsp is not None
    generations = signer_generations(out, name)
    if generations:
        path = generations[max(generations)]
        signer, source, signer_file = load_certificate(path), "certificate", path.name
    else:
        throwaway = ec.generate_private_key(ec.SECP256R1())
        start = ca_cert.not_valid_before_utc
        signer = ocsp_signer_builder(ca, ca_cert, throwaway.public_key(), 1, start, start + ca.ocsp.signer_validity_td,
                                     rehearsal).sign(throwaway, hash_for(throwaway.public_key()))
        source, signer_file = "definition", ""
    context = ResponderContext(ca_cert, signer, ca.ocsp.cert_id_hashes)
    now = int(ca_cert.not_valid_before_utc.timestamp())
    tbs = context.response_data(1, ca.ocsp.cert_id_hashes[0], Status(), now, now,
                                now + int(ca.ocsp.validity_td.total_seconds()))
    # Signed with a throwaway key: the profile is read, the signature is not what is described.
    response = x509_ocsp.load_der_ocsp_response(context.sign(tbs, ec.generate_private_key(ec.SECP256R1())))
    rows = describe_certificate_extensions(signer, end_entity=True)
    for row, ext in zip(rows, signer.extensions, strict=True):
        if isinstance(ext.value, x509.ExtendedKeyUsage):
            row["value"] = ", ".join(_EKU_NAMES.get(u.dotted_string, u.dotted_string) for u in ext.value)
        elif isinstance(ext.value, x509.OCSPNoCheck):
            row.update(name="id-pkix-ocsp-nocheck", value="NULL")
        elif isinstance(ext.value, x509.KeyUsage):
            row["value"] = ", ".join(_KU_NAMES[k] for k in _key_usage(signer))
    return OcspProfileFacts(
        source=source, signer_file=signer_file, signer_extensions=rows,
        responder_id="byKey" if response.responder_key_hash is not None else "byName",
        response_extensions=_ocsp_extension_rows(response.extensions),
        single_extensions=_ocsp_extension_rows(response.single_extensions), certs=len(response.certificates),
        behaviour=ocsp_behaviour(ca_cert, signer, list(ca.ocsp.cert_id_hashes),
                                 int(ca.ocsp.validity_td.total_seconds())))


def successor_facts(name: str, root: CA, out: Path, rehearsal: bool) -> SuccessorFacts | None:
    """The successor of ``root`` as the definition describes it, with its certificate's fingerprint once its key
    ceremony wrote ``<root>.g<n>.crt.pem``."""
    succ = root.successor
    if succ is None:
        return None
    cross = succ.cross_certificate
    subject, _ = _dn(subject_name(succ.subject, rehearsal))
    path = out / f"{name}.g{succ.generation}.crt.pem"
    fingerprint = ""
    if path.is_file():
        fingerprint = colon_form(hashlib.sha256(load_certificate(path).public_bytes(Encoding.DER)).hexdigest())
    path_length = cross.path_length if cross.path_length is not None else succ.path_length
    crosses = []
    before = succ.generation - 1
    for subject_gen, issuer_gen, forward in ((succ.generation, before, True), (before, succ.generation, False)):
        cross_path = out / f"{name}.g{subject_gen}.by-g{issuer_gen}.crt.pem"
        if cross_path.is_file():
            cert = load_certificate(cross_path)
            crosses.append(CrossCertificateFacts(
                file=cross_path.name, forward=forward, serial=f"{cert.serial_number:x}",
                fingerprint=colon_form(hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()),
                not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                extensions=describe_certificate_extensions(cert)))
    return SuccessorFacts(
        generation=succ.generation, common_name=_cn(subject_name(succ.subject, rehearsal)), subject=subject,
        not_before=succ.validity.not_before, not_after=succ.validity.not_after,
        same_token=succ.hsm.module == root.hsm.module and succ.hsm.token == root.hsm.token,
        reverse=cross.reverse, policy_oids=list(cross.policy_oids),
        path_length="none" if path_length is None else str(path_length),
        name_constraints=cross.name_constraints is not None, certificate_file=path.name, fingerprint=fingerprint,
        cross_certificates=crosses)


def _seal_label(ca: CA) -> str:
    """The sealing key's label: the definition's ``hsm.seal_label``, else ``<key label>-seal``."""
    return str(ca.hsm.sealing_label)


def _seal_certificate(name: str, out: Path) -> SealCertificateFacts | None:
    """The CA's transcript-sealing certificate when its ceremony has issued it (else None: not yet)."""
    path = out / f"{name}.seal.crt.pem"
    if not path.is_file():
        return None
    cert = load_certificate(path)
    return SealCertificateFacts(file=path.name, serial=f"{cert.serial_number:x}",
                                fingerprint=colon_form(hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()),
                                not_after=cert.not_valid_after_utc)


TRANSCRIPTS_DIR = "transcripts"


def transcript_facts(out: Path) -> list[TranscriptFacts]:
    """The ceremonies held so far, from ``OUT/transcripts/*.jsonl``: first line the header (script, time),
    last line the seal (final head). A transcript that cannot be read is an error naming it: the CPS must
    not silently leave out a ceremony."""
    result: list[TranscriptFacts] = []
    directory = out / TRANSCRIPTS_DIR
    if not directory.is_dir():
        return result
    for path in sorted(directory.glob("*.jsonl")):
        try:
            lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            header, last = json.loads(lines[0]), json.loads(lines[-1])
        except (OSError, ValueError, IndexError) as exc:
            raise PolicyError(f"{path}: unreadable transcript ({exc}); the CPS lists every ceremony held") from None
        script = header.get("script") if isinstance(header.get("script"), dict) else {}
        sealed = last.get("type") == "seal" and isinstance(last.get("head"), str)
        result.append(TranscriptFacts(
            file=f"{TRANSCRIPTS_DIR}/{path.name}",
            script=str(script.get("name") or header.get("ceremony") or path.stem),
            version=str(script.get("version", "?")), time=str(header.get("time", "?")),
            head=str(last["head"]) if sealed else "", sealed=sealed,
        ))
    return result


def online_facts(defaults: Path = CRL_SIGNER_DEFAULTS) -> OnlineFacts:
    """The CRL job's schedule and PIN file from the role that provisions it (its defaults file), so the CPS
    says what the hosts do; the role's own defaults when the suite is installed without its roles."""
    schedule, pin_file = "hourly", "/etc/ceremony/{{ crl_signer_ca }}.pin"
    if defaults.is_file():
        try:
            data = yaml.safe_load(defaults.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise PolicyError(f"{defaults}: malformed YAML: {exc}") from None
        schedule = str(data.get("crl_signer_on_calendar", schedule))
        pin_file = str(data.get("crl_signer_pin_file", pin_file))
    if schedule not in _CALENDAR_HOURS:
        raise PolicyError(f"{defaults}: crl_signer_on_calendar is {schedule!r}; the CPS states the CRL job's period "
                          f"(4.9.7) and knows {', '.join(_CALENDAR_HOURS)}")
    return OnlineFacts(schedule=schedule, period_hours=_CALENDAR_HOURS[schedule],
                       pin_file=pin_file.replace("{{ crl_signer_ca }}", "<ca>"), pin_file_mode=PIN_FILE_MODE,
                       expired_entries_kept=EXPIRED_ENTRIES_KEPT)


def registry_backup_facts(defaults: Path = SUBORDINATE_CA_DEFAULTS) -> RegistryBackupFacts:
    """The registry backup timer and retention from the role that installs them (its defaults file)."""
    schedule, keep = "hourly", 48
    if defaults.is_file():
        try:
            data = yaml.safe_load(defaults.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise PolicyError(f"{defaults}: malformed YAML: {exc}") from None
        schedule = str(data.get("subordinate_ca_registry_backup_on_calendar", schedule))
        keep_value = data.get("subordinate_ca_registry_backup_keep", keep)
        if not isinstance(keep_value, int) or isinstance(keep_value, bool) or keep_value < 1:
            raise PolicyError(f"{defaults}: subordinate_ca_registry_backup_keep is {keep_value!r}; the CPS (5.1.8) "
                              "states how many registry backups the host keeps: a positive integer")
        keep = keep_value
    return RegistryBackupFacts(schedule=schedule, keep=keep)


def read_manifest(out: Path) -> dict[str, Any]:
    path = out / MANIFEST_NAME
    if not path.is_file():
        return {"rehearsal": False, "artifacts": []}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PolicyError(f"{path}: unreadable manifest: {exc}") from None


#: Signature algorithms by (key type, hash): what the issuing CA's key signs with (``hash_for``).
_SIGNATURES = {("ec", "sha256"): ("ecdsa-with-SHA256", "1.2.840.10045.4.3.2"),
               ("ec", "sha384"): ("ecdsa-with-SHA384", "1.2.840.10045.4.3.3"),
               ("rsa", "sha256"): ("sha256WithRSAEncryption", "1.2.840.113549.1.1.11"),
               ("rsa", "sha384"): ("sha384WithRSAEncryption", "1.2.840.113549.1.1.12")}


def signature_of(public_key: Any) -> tuple[str, str]:
    """(name, OID) of the signature a CA key of this type makes on the certificates it issues."""
    family = "ec" if isinstance(public_key, ec.EllipticCurvePublicKey) else "rsa"
    return _SIGNATURES.get((family, hash_for(public_key).name), ("?", "?"))


def _engine_profile_certificate(p: Any, ca: CA, issuer_cert: x509.Certificate, country: str) -> x509.Certificate:
    """A certificate the issuance code would make with this profile, on a throwaway key and subject:
    the CPS reads the profile's extensions from the engine's own builder, so that the text is what the
    issuance ceremony writes (QcCClegislation included), not a second description of it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, country),
                         x509.NameAttribute(NameOID.COMMON_NAME, "profile")])
    now = issuer_cert.not_valid_before_utc
    builder = ee_builder(p, ca, issuer_cert, subject, key.public_key(), 1, now, now + dt.timedelta(days=1),
                         legislation_for(country))
    return builder.sign(key, hash_for(key.public_key()))


def _profiles(defn: LoadedDefinition, out: Path, manifest: dict[str, Any], rehearsal: bool) -> list[ProfileFacts]:
    ee_entries = [a for a in manifest.get("artifacts", []) if a.get("kind") == "end-entity-certificate"]
    result = []
    for ca_name, ca in defn.model.cas.items():
        for name, p in ca.profiles.items():
            cert = None
            for entry in ee_entries:
                path = out / entry["path"]
                if entry.get("profile") not in (None, name) or not path.is_file():
                    continue
                candidate = load_certificate(path)
                cp = _has(candidate, ExtensionOID.CERTIFICATE_POLICIES)
                oids = [i.policy_identifier.dotted_string for i in cp.value] if cp else []
                if entry.get("profile") == name or oids == list(p.policy_oids):
                    cert = candidate
                    break
            issuer_cert = load_certificate(out / f"{ca_name}.crt.pem")
            source = "certificate"
            if cert is None:
                cert, source = _engine_profile_certificate(p, ca, issuer_cert, defn.model.organisation.country), \
                    "definition"
            exts, ku = describe_certificate_extensions(cert, True), _key_usage(cert)
            sig_name, sig_oid = signature_of(issuer_cert.public_key())
            required, allowed = subject_attributes(p.kind)
            result.append(ProfileFacts(name=name, issuer=ca_name,
                                       issuer_common_name=_cn(subject_name(ca.subject, rehearsal)), kind=p.kind,
                                       validity_days=p.validity_days,
                                       policy_oids=list(p.policy_oids), qc_pds_url=p.qc_pds_url,
                                       qc_pds_lang=p.qc_pds_lang, source=source, extensions=exts, key_usage=ku,
                                       pds=p.pds_locations, signature_algorithm=sig_name, signature_oid=sig_oid,
                                       required_attributes=required, allowed_attributes=allowed))
    return result


#: id-ce-expiredCertsOnCRL (X.509 (2019) 9.6.2.9), which ``ceremony/crl/encoding.py`` writes.
EXPIRED_CERTS_ON_CRL = "2.5.29.60"


_CRL_EXT_NAMES = {"2.5.29.60": "expiredCertsOnCRL", "2.5.29.35": "authorityKeyIdentifier", "2.5.29.20": "cRLNumber",
                  "2.5.29.28": "issuingDistributionPoint", "2.5.29.27": "deltaCRLIndicator",
                  "2.5.29.46": "freshestCRL", "1.3.6.1.5.5.7.1.1": "authorityInfoAccess"}


def _idp_text(idp: x509.IssuingDistributionPoint) -> str:
    parts = [n.value for n in idp.full_name or []]
    for flag in ("only_contains_user_certs", "only_contains_ca_certs", "only_contains_attribute_certs",
                 "indirect_crl"):
        if getattr(idp, flag):
            parts.append(flag.replace("_", " "))
    return ", ".join(parts) or "present"


def _crl_extension_rows(crl: x509.CertificateRevocationList, scope: str, ca: str) -> list[dict[str, str]]:
    rows = []
    for e in crl.extensions:
        oid = e.oid.dotted_string
        if oid == "2.5.29.35":
            value = "issuer's subjectKeyIdentifier"
        elif oid == "2.5.29.20":
            value = "monotonically increasing integer"
        elif isinstance(e.value, x509.IssuingDistributionPoint):
            value = _idp_text(e.value)
        elif oid == EXPIRED_CERTS_ON_CRL:
            value = _expired_certs_text(e.value)
        else:
            value = type(e.value).__name__
        name = _CRL_EXT_NAMES.get(oid, getattr(e.oid, "_name", oid))
        rows.append({"scope": scope, "ca": ca, "oid": oid, "name": name,
                     "critical": "yes" if e.critical else "no", "value": value})
    return rows


def _expired_certs_text(value: Any) -> str:
    """ExpiredCertsOnCRL's GeneralizedTime (X.509 9.6.2.9): since when expired entries stay listed."""
    der = getattr(value, "value", b"")
    try:
        when = dt.datetime.strptime(der[2:].decode("ascii"), "%Y%m%d%H%M%SZ").replace(tzinfo=dt.UTC)
    except (ValueError, UnicodeDecodeError):
        return "entries kept after expiry (undecodable date: " + bytes(der).hex() + ")"
    return f"entries kept after expiry, since {when:%Y-%m-%d %H:%M:%S} UTC (notBefore of the CA certificate)"


def _engine_crl(ca: CaFacts, cert: x509.Certificate) -> x509.CertificateRevocationList:
    """An empty CRL as the engine encodes it for this CA, signed by a throwaway key: the CPS reads the CRL
    profile from the encoder itself until a real CRL exists. The root's CRLs are signed at root CRL
    ceremonies with an IssuingDistributionPoint onlyContainsCACerts (``ceremonies/root_crl.py``); a
    subordinate's by the CRL job with ExpiredCertsOnCRL at its certificate's notBefore (``crl/job.py``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    this_update = cert.not_valid_before_utc
    root = ca.role == "root"
    header = crlenc.CrlHeader(cert.subject, ski, 1, this_update, this_update + ca.crl.lifetime_td,
                              only_ca_certs=root, expired_certs_on_crl=None if root else this_update)
    der, _, _ = crlenc.build_crl(header, [], key)
    return x509.load_der_x509_crl(der)


def _crl_profile(out: Path, manifest: dict[str, Any], cas: list[CaFacts]) -> CrlProfileFacts:
    """From the first CRL the manifest lists of each kind (root, subordinate): a stable choice, since
    later CRLs are added after it; before any CRL exists, from the engine's encoder (:func:`_engine_crl`)."""
    rows: list[dict[str, str]] = []
    files: list[str] = []
    for kind, label in (("root-crl", "root"), ("subordinate-crl", "subordinate")):
        for entry in manifest.get("artifacts", []):
            path = out / entry["path"]
            if entry.get("kind") != kind or not path.is_file():
                continue
            data = path.read_bytes()
            try:
                crl = x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
            except ValueError:
                continue
            files.append(entry["path"])
            rows += _crl_extension_rows(crl, label, str(entry.get("ca", "root" if label == "root" else "")))
            break
    if not files:
        for ca in cas:
            cert = load_certificate(out / ca.certificate_file)
            rows += _crl_extension_rows(_engine_crl(ca, cert), "root" if ca.role == "root" else "subordinate",
                                        ca.name)
    return CrlProfileFacts(source="crl" if files else "definition", version=2, extensions=rows,
                           entry_extensions=["reasonCode", "invalidityDate"], files=files)


def _scripts() -> list[ScriptFacts]:
    result: list[ScriptFacts] = []
    if not SCRIPTS_DIR.is_dir():
        return result
    for path in sorted(SCRIPTS_DIR.glob("*.yml")):
        raw = path.read_bytes()
        try:
            data = yaml.safe_load(raw) or {}
        except yaml.YAMLError:
            continue
        if not isinstance(data, dict):
            continue
        title = data.get("title") or {}
        roles: set[str] = set()
        steps = 0
        for act in data.get("acts") or []:
            for step in (act or {}).get("steps") or []:
                steps += 1
                if isinstance(step, dict) and step.get("role"):
                    roles.add(str(step["role"]))
        result.append(ScriptFacts(
            name=str(data.get("name", path.stem)), version=str(data.get("version", "?")),
            title_fr=str(title.get("fr", path.stem)) if isinstance(title, dict) else str(title),
            title_en=str(title.get("en", path.stem)) if isinstance(title, dict) else str(title),
            independent_witness=str(data.get("independent_witness", "not stated")), roles=sorted(roles),
            steps=steps, sha256=hashlib.sha256(raw).hexdigest()))
    return result


def approval_problems(defn: LoadedDefinition) -> None:
    """Refuse documents marked approved on values the legal service has not confirmed, or without the
    approving body's decision and effective date in the history line of each current version: an approved
    CP/CPS is one the Comité can cite, and it cannot cite "article 64 (to be confirmed)"."""
    docs = defn.model.documents
    if docs is None or docs.status != "approved":
        return
    if docs.awaiting_confirmation:
        values = "; ".join(f"documents.{p} = {documents_value(docs, p)!r}" for p in docs.awaiting_confirmation)
        raise PolicyError(f"{defn.path}: documents.status is 'approved' but documents.awaiting_confirmation still "
                          f"lists {len(docs.awaiting_confirmation)} value(s) the legal service has not confirmed "
                          f"({values}); confirm each and remove it from the list, or set documents.status to "
                          "'draft' or 'submitted'")
    for doc in ("cp", "cps"):
        version = getattr(docs, doc).version
        line = [h for h in docs.history if h.version == version][-1]
        if line.decision is None or line.effective is None:
            raise PolicyError(f"{defn.path}: documents.status is 'approved' but the history line of version {version} "
                              f"(documents.{doc}.version) has no {'decision' if line.decision is None else 'effective'}"
                              "; an approved version states the approving body's decision and its effective date")
        notice = docs.legal.notice_days if docs.legal else 0
        days = (line.effective - line.date).days
        if days < notice:
            raise PolicyError(f"{defn.path}: documents.status is 'approved' but version {version} takes effect on "
                              f"{line.effective} ({days} days after its date {line.date}); "
                              f"the CP (9.10.1, 9.12.2) requires at least documents.legal.notice_days ({notice}) days")


def derive_facts(defn: LoadedDefinition, out: str | Path) -> Facts:
    """Everything the documents state, from the definition and the artifacts under ``out``."""
    out_dir = Path(out)
    model = defn.model
    if model.documents is None:
        raise PolicyError(f"{defn.path}: documents: the definition has no 'documents' section (CP/CPS OIDs, "
                          "versions, titles, repository URL, approving body, history)")
    versions = {h.version for h in model.documents.history}
    for doc in ("cp", "cps"):
        version = getattr(model.documents, doc).version
        if version not in versions:
            raise PolicyError(f"{defn.path}: documents.history: no entry for version {version} "
                              f"(documents.{doc}.version); every published version has a dated history line "
                              "(date, version, changes_fr, changes_en, approved_by)")
    for part in ("legal", "termination", "incidents"):
        if getattr(model.documents, part) is None:
            raise PolicyError(f"{defn.path}: documents.{part}: missing; chapter 9 and sections 5.7 and 5.8 state "
                              "these values (see docs/policy.md, 'The definition's documents section')")
    approval_problems(defn)
    manifest = read_manifest(out_dir)
    rehearsal = bool(manifest.get("rehearsal"))
    cas = [ca_facts(name, ca, out_dir, rehearsal) for name, ca in model.cas.items()]
    return Facts(environment=model.environment, rehearsal=rehearsal, organisation=model.organisation,
                 documents=model.documents, ceremony=model.ceremony, cas=cas,
                 profiles=_profiles(defn, out_dir, manifest, rehearsal),
                 crl_profile=_crl_profile(out_dir, manifest, cas),
                 scripts=_scripts(), transcripts=transcript_facts(out_dir),
                 transcripts_dir=str(out_dir / TRANSCRIPTS_DIR), online=online_facts(),
                 successor=next((successor_facts(n, ca, out_dir, rehearsal) for n, ca in model.cas.items()
                                 if ca.role == "root" and ca.successor is not None), None),
                 sealing_eku=str(model.ceremony.sealing_eku))


_UNITS = {"fr": {"s": ("seconde", "secondes"), "m": ("minute", "minutes"), "h": ("heure", "heures"),
                 "d": ("jour", "jours")},
          "en": {"s": ("second", "seconds"), "m": ("minute", "minutes"), "h": ("hour", "hours"),
                 "d": ("day", "days")}}


def duration_text(value: str | dt.timedelta, lang: str) -> str:
    """``24h`` → ``24 heures`` / ``24 hours``: the definition's own unit, spelled out."""
    if isinstance(value, dt.timedelta):
        seconds = int(value.total_seconds())
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            if seconds % size == 0:
                value = f"{seconds // size}{unit}"
                break
    parse_duration(str(value))
    n, unit = int(str(value)[:-1]), str(value)[-1]
    one, many = _UNITS[lang][unit]
    return f"{n} {one if n == 1 else many}"


def date_text(value: dt.date | dt.datetime, lang: str) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return value.isoformat()
