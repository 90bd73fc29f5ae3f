"""The PKI definition: one YAML file per environment, the single source of truth.

The definition is validated strictly before anything touches an HSM. Unknown keys, wrong types,
weak algorithms, impossible dates and validity beyond the caps are refused with a
:class:`~ceremony.common.errors.DefinitionError` naming the file, the line, the key path and what is
allowed. The models are frozen so that nothing downstream can change a value after validation.

Layout (see ``inventory/testing/pki.yml`` for a commented example)::

    version: 1
    environment: testing
    organisation: {name, short_name, country, locality, url, email, address}
    limits: {root_max_years, subordinate_max_years}          # may lower the caps only
    documents: {cp: {...}, cps: {...}, history: [...]}     # CP/CPS identification
    ceremony: {crypto_officer_quorum, security_officer_quorum, require_independent_witness}
    cas:
      <name>: {role: root|subordinate, issuer, subject: [{CN: ...}, ...], key, validity,
               path_length, policy_oids, name_constraints, publication, hsm, crl,
               ocsp, backup, profiles, lint, destruction,
               termination: {decided, reference, successor_body, reason},
               successor: {generation, subject, key, validity, hsm, ..., cross_certificate}}   # root only
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import ipaddress
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlparse

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from ceremony.common.errors import DefinitionError

ROOT_MAX_YEARS = 25


SUBORDINATE_MAX_YEARS = 15


ALLOWED_CURVES = ("P-256", "P-384")


ALLOWED_RSA_BITS = (3072, 4096)


# BR 4.9.7: a CA issuing end-entity certificates: nextUpdate at most 10 days after thisUpdate,
# a new CRL at least every 7 days. A CA issuing only CA certificates: at most 12 months.
BR_EE_ISSUER_MAX_LIFETIME = dt.timedelta(days=10)


BR_EE_ISSUER_MAX_INTERVAL = dt.timedelta(days=7)


BR_CA_ONLY_MAX_LIFETIME = dt.timedelta(days=365)


MAX_CLOCK_SKEW = dt.timedelta(hours=1)


OID = Annotated[str, StringConstraints(pattern=r"^[0-2](\.(0|[1-9][0-9]*))+$")]


Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,62}$")]


Label = Annotated[str, StringConstraints(min_length=1, max_length=32)]


# Subject attributes an operator may use, in the short names people write, with the
# maximum lengths of RFC 5280 Appendix A (ub-* upper bounds).
SUBJECT_ATTRIBUTES: dict[str, int] = {
    "C": 2, "ST": 128, "L": 128, "O": 64, "OU": 64, "CN": 64,
    "organizationIdentifier": 64, "serialNumber": 64, "DC": 63,
}


_DURATION = re.compile(r"^([1-9][0-9]*)([smhd])$")


_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> dt.timedelta:
    """Parse ``30s``, ``5m``, ``24h`` or ``91d``: human-readable, unambiguous durations."""
    m = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"{text!r} is not a duration like '300s', '5m', '24h' or '7d'")
    return dt.timedelta(**{_DURATION_UNITS[m.group(2)]: int(m.group(1))})


Duration = Annotated[str, StringConstraints(pattern=_DURATION.pattern)]


class _Strict(BaseModel):
    """Refuse unknown keys and coercions: ``size: "4096"`` is a mistake, not a number."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Organisation(_Strict):
    name: str = Field(min_length=1, max_length=64)
    short_name: str = Field(min_length=1, max_length=32)
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
    locality: str | None = None
    url: str | None = None
    email: str | None = None
    address: str | None = None


class Limits(_Strict):
    root_max_years: int = Field(default=ROOT_MAX_YEARS, ge=1)
    subordinate_max_years: int = Field(default=SUBORDINATE_MAX_YEARS, ge=1)

    @field_validator("root_max_years")
    @classmethod
    def _root_cap(cls, v: int) -> int:
        if v > ROOT_MAX_YEARS:
            raise ValueError(f"a definition may lower the root cap, never raise it above {ROOT_MAX_YEARS}")
        return v

    @field_validator("subordinate_max_years")
    @classmethod
    def _sub_cap(cls, v: int) -> int:
        if v > SUBORDINATE_MAX_YEARS:
            raise ValueError(
                f"a definition may lower the subordinate cap, never raise it above {SUBORDINATE_MAX_YEARS}")
        return v


class EcKey(_Strict):
    algorithm: Literal["ecdsa"]
    curve: str

    @field_validator("curve")
    @classmethod
    def _curve(cls, v: str) -> str:
        if v not in ALLOWED_CURVES:
            raise ValueError(f"unknown or unsupported curve {v!r}; allowed: {', '.join(ALLOWED_CURVES)}")
        return v

    def describe(self) -> str:
        return f"ECDSA {self.curve}"


class RsaKey(_Strict):
    algorithm: Literal["rsa"]
    bits: int

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: int) -> int:
        if v < ALLOWED_RSA_BITS[0]:
            raise ValueError(f"RSA {v} is too weak; allowed: {', '.join(map(str, ALLOWED_RSA_BITS))}")
        if v not in ALLOWED_RSA_BITS:
            raise ValueError(f"RSA {v} is not supported; allowed: {', '.join(map(str, ALLOWED_RSA_BITS))}")
        return v

    def describe(self) -> str:
        return f"RSA {self.bits}"


KeySpec = Annotated[EcKey | RsaKey, Field(discriminator="algorithm")]


class Validity(_Strict):
    # YAML gives a datetime for an unquoted timestamp; a quoted ISO 8601 string is accepted too.
    not_before: Annotated[AwareDatetime, Field(strict=False)]
    not_after: Annotated[AwareDatetime, Field(strict=False)]

    @model_validator(mode="after")
    def _order(self) -> Validity:
        if self.not_after <= self.not_before:
            raise ValueError("not_after must be later than not_before")
        return self

    def exceeds_years(self, years: int) -> bool:
        """Calendar comparison: 2026-12-01 to 2038-12-01 is exactly 12 years, leap days or not."""
        start = self.not_before
        try:
            limit = start.replace(year=start.year + years)
        except ValueError:  # 29 February
            limit = start.replace(year=start.year + years, day=28)
        return self.not_after > limit

    @property
    def years(self) -> float:
        return (self.not_after - self.not_before).total_seconds() / (365.2425 * 86400)


#: RFC 7512 path attributes that describe a token, its slot or its module: what a token URI may say.
TOKEN_URI_ATTRIBUTES = ("token", "manufacturer", "model", "serial", "slot-id", "slot-description",
                        "slot-manufacturer", "library-manufacturer", "library-description", "library-version")


_OBJECT_URI_ATTRIBUTES = ("object", "id", "type")


def parse_token_uri(uri: str) -> dict[str, str]:
    """The path attributes of an RFC 7512 URI naming a token, percent-decoded.

    Raises ``ValueError`` (a message that never repeats the query part, which could hold a PIN) for
    anything but a token description: a query (``pin-value``, ``pin-source``, ``module-path``), an
    object attribute (the key is ``hsm.key_label``), an unknown or repeated attribute. An attribute
    this suite does not know would otherwise be ignored and the URI match a token it does not describe.
    """
    if not uri.startswith("pkcs11:"):
        raise ValueError("a PKCS#11 URI starts with 'pkcs11:' (RFC 7512)")
    path, has_query, query = uri[len("pkcs11:"):].partition("?")
    if has_query:
        names = [q.partition("=")[0] for q in query.split("&") if q]
        if {"pin-value", "pin-source"} & set(names):
            raise ValueError("a PKCS#11 URI must not carry pin-value or pin-source; PINs come from the "
                             "environment (hsm.pin_env), a 0600 file (--pin-file) or a prompt")
        raise ValueError("a token URI takes no query attributes (found: " + ", ".join(names) + "); the module "
                         "is hsm.module")
    attrs: dict[str, str] = {}
    for part in filter(None, path.split(";")):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"malformed PKCS#11 URI attribute {part!r} (allowed: name=value pairs separated by "
                             "';')")
        if name in _OBJECT_URI_ATTRIBUTES:
            raise ValueError(f"the URI attribute {name!r} selects a key, not a token; the key is named by "
                             "hsm.key_label: leave it out of the token URI")
        if name not in TOKEN_URI_ATTRIBUTES:
            guess = difflib.get_close_matches(name, TOKEN_URI_ATTRIBUTES, n=1)
            raise ValueError(f"unknown PKCS#11 URI attribute {name!r}"
                             + (f" (did you mean {guess[0]!r}?)" if guess else "")
                             + f"; allowed: {', '.join(TOKEN_URI_ATTRIBUTES)}")
        if name in attrs:
            raise ValueError(f"the URI attribute {name!r} is given twice")
        attrs[name] = unquote(value)
    if not attrs:
        raise ValueError("the PKCS#11 URI names no token attribute; allowed: " + ", ".join(TOKEN_URI_ATTRIBUTES))
    return attrs


class TokenRef(_Strict):
    """How to find the token: exactly one of label, serial or RFC 7512 PKCS#11 URI."""

    label: Label | None = None
    serial: str | None = None
    uri: str | None = None

    @model_validator(mode="after")
    def _one(self) -> TokenRef:
        given = [k for k in ("label", "serial", "uri") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of label, serial or uri")
        if self.uri is not None:
            parse_token_uri(self.uri)
        return self

    def initial_label(self) -> str | None:
        """The label a token initialisation gives this token: ``label``, or the ``token`` attribute of the URI (the
        URI's other attributes, such as the model or serial, are the HSM's own and match once it is initialised);
        None when only a serial names it."""
        if self.label is not None:
            return self.label
        return parse_token_uri(self.uri).get("token") if self.uri is not None else None

    def describe(self) -> str:
        if self.label is not None:
            return f"token label {self.label!r}"
        if self.serial is not None:
            return f"token serial {self.serial!r}"
        return f"token {self.uri}"


class Hsm(_Strict):
    module: str = Field(min_length=1, description="path of the PKCS#11 module (.so)")
    token: TokenRef
    key_label: Label
    seal_label: Label | None = None
    """Label of the transcript-sealing key on this token (default ``<key_label>-seal``): CA keys sign
    certificates and CRLs only (EN 319 411-1 GEN-6.5.3-03), so ceremonies are sealed by a key of their own."""
    pin_env: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]*$")] | None = None
    """Name of the environment variable holding the user PIN (never the PIN itself)."""
    so_pin_env: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]*$")] | None = None
    split_user_pin: bool | None = None
    """Whether the token initialisation splits the user PIN among ``ceremony.crypto_officer_quorum`` Crypto Officers.
    Default: yes for the root (and its successor), whose token is opened only at ceremonies; no for a subordinate,
    whose CRL and OCSP jobs open its token unattended with the PIN from the service's 0600 file. ``true`` for a
    subordinate activated only at ceremonies."""
    module_config: str | None = Field(default=None, min_length=1, max_length=4096)
    """The module's configuration string, handed to C_Initialize (CK_C_INITIALIZE_ARGS.pReserved) for a module that
    needs one, such as NSS softokn's ``configdir='sql:DIR' certPrefix='' keyPrefix='' secmod='secmod.db' flags=``.
    Configuration only: a PIN or password here is refused (it would sit in the definition file)."""

    @property
    def sealing_label(self) -> str:
        return self.seal_label or f"{self.key_label}-seal"

    def ocsp_signer_label(self, ocsp: Ocsp) -> str:
        """Label of the delegated OCSP signer's key on this token: ``ocsp.signer_label`` or ``<key_label>-ocsp``."""
        return ocsp.signer_label or f"{self.key_label}-ocsp"

    @model_validator(mode="after")
    def _distinct_labels(self) -> Hsm:
        if self.sealing_label == self.key_label:
            raise ValueError("seal_label must differ from key_label: the sealing key is not the CA key")
        if len(self.sealing_label) > 32:
            raise ValueError(f"the sealing key's label {self.sealing_label!r} is longer than 32 characters; "
                             "set seal_label")
        if self.module_config is not None:
            if any(c in self.module_config for c in "\r\n\0"):
                raise ValueError("module_config is one line (the module's configuration string)")
            secret = _SECRET_IN_CONFIG.search(self.module_config)
            if secret:
                raise ValueError(f"module_config holds {secret.group(1)!r}: a PIN or password never goes into the "
                                 "definition; the module's configuration string names files and options only")
            register_module_config(self.module, self.module_config)
        return self


#: A key in a module's configuration string that would carry a secret (``pin=``, ``password=``, ``pin-value=``...).
_SECRET_IN_CONFIG = re.compile(r"(?i)\b((?:so-?|user-?)?(?:pin|passw(?:or)?d|passphrase|secret)(?:-?value)?)\s*[=:]")


_MODULE_CONFIGS: dict[str, str] = {}


def register_module_config(module: str, config: str) -> None:
    """Remember the configuration string a definition gives for ``module``.

    A PKCS#11 module is initialised once per process, by whichever part of the suite loads it first, and most of
    them know only the module's path; the string comes from the definition, so the definition hands it over here
    when it is validated, and :func:`ceremony.hsm.session.load_module` reads it back.
    """
    _MODULE_CONFIGS[os.path.realpath(module)] = config


def module_config_for(module: str) -> str | None:
    """The configuration string the last validated definition gave for ``module`` (None: the module needs none)."""
    return _MODULE_CONFIGS.get(os.path.realpath(module))


def _http_url(v: str) -> str:
    u = urlparse(v)
    if u.scheme != "http" or not u.netloc:
        raise ValueError(f"{v!r} must be an http:// URL (relying parties fetch CRLs and "
                         "certificates over plain http, RFC 5280 4.2.1.13)")
    return v


class Publication(_Strict):
    """Where this CA's own CRL and certificate are published; certificates it issues point here."""

    crl_url: str
    certificate_url: str
    ocsp_url: str | None = None
    """The offline root only: where its pre-signed responses for the certificates it issued are served (the root CRL
    batch signs them; subordinate CA and sealing certificates carry this URL). An online CA has an ``ocsp`` section."""

    _check = field_validator("crl_url", "certificate_url")(classmethod(lambda cls, v: _http_url(v)))
    _check_ocsp = field_validator("ocsp_url")(classmethod(lambda cls, v: v if v is None else _http_url(v)))


class Crl(_Strict):
    """CRL cadence. ``interval`` is how often a new CRL is signed, ``lifetime`` nextUpdate-thisUpdate."""

    interval: Duration
    lifetime: Duration
    clock_skew: Duration = "5m"
    batch_count: int | None = Field(default=None, ge=1, le=40)
    """Root only: how many CRLs a root CRL ceremony pre-signs, ``interval`` apart."""
    partitions: int | None = None
    """Online CAs issuing end-entity certificates only: split the CRL into this many partition CRLs
    (:data:`MIN_CRL_PARTITIONS` to :data:`MAX_CRL_PARTITIONS`). Each certificate issued afterwards names one
    partition, chosen from its serial and recorded in the registry; the partition's URL is
    :func:`partition_crl_url` of ``publication.crl_url`` (docs/crl.md, "Partitioned CRLs")."""

    @model_validator(mode="after")
    def _overlap(self) -> Crl:
        if parse_duration(self.lifetime) <= parse_duration(self.interval):
            raise ValueError("lifetime must exceed interval so that consecutive CRLs overlap")
        if parse_duration(self.clock_skew) > MAX_CLOCK_SKEW:
            raise ValueError("clock_skew is at most 1h")
        return self

    @property
    def interval_td(self) -> dt.timedelta:
        return parse_duration(self.interval)

    @property
    def lifetime_td(self) -> dt.timedelta:
        return parse_duration(self.lifetime)

    @property
    def clock_skew_td(self) -> dt.timedelta:
        return parse_duration(self.clock_skew)


#: BR 4.9.10: an OCSP response's validity interval is at least eight hours and at most ten days.
BR_OCSP_MIN_VALIDITY = dt.timedelta(hours=8)


BR_OCSP_MAX_VALIDITY = dt.timedelta(days=10)


#: BR 4.9.10: below 16 hours of validity a response is refreshed at half its validity; from 16 hours on, at least
#: eight hours before its nextUpdate and at most four days after its thisUpdate.
BR_OCSP_SHORT_VALIDITY = dt.timedelta(hours=16)


BR_OCSP_REFRESH_BEFORE_NEXT = dt.timedelta(hours=8)


BR_OCSP_MAX_REFRESH = dt.timedelta(days=4)


#: A delegated OCSP signer certificate is short-lived (it carries id-pkix-ocsp-nocheck: nobody can check whether
#: it was revoked, so its lifetime is the exposure).
OCSP_SIGNER_MAX_VALIDITY = dt.timedelta(days=90)


CertIdHash = Literal["sha1", "sha256"]


OCSP_CERT_ID_HASHES: tuple[CertIdHash, ...] = ("sha1", "sha256")


class Ocsp(_Strict):
    """The OCSP service of an online CA: responses pre-signed by a delegated signer, served by a responder.

    ``validity`` is nextUpdate - thisUpdate of every response, ``refresh`` how long after its thisUpdate a
    response is signed again (both checked against BR 4.9.10 by the definition), ``signer_validity`` the
    lifetime of the delegated signer's certificate, ``signer_label`` the signer key's label on the CA's token
    (default ``<key_label>-ocsp``), ``cert_id_hashes`` the CertID hashes a response is stored under.
    """

    url: str
    validity: Duration
    refresh: Duration
    signer_validity: Duration = "30d"
    signer_label: Label | None = None
    cert_id_hashes: list[CertIdHash] = Field(default_factory=lambda: list(OCSP_CERT_ID_HASHES),
                                                           min_length=1)

    _check = field_validator("url")(classmethod(lambda cls, v: _http_url(v)))

    @property
    def validity_td(self) -> dt.timedelta:
        return parse_duration(self.validity)

    @property
    def refresh_td(self) -> dt.timedelta:
        return parse_duration(self.refresh)

    @property
    def signer_validity_td(self) -> dt.timedelta:
        return parse_duration(self.signer_validity)

    @field_validator("cert_id_hashes")
    @classmethod
    def _distinct_hashes(cls, v: list[CertIdHash]) -> list[CertIdHash]:
        if len(set(v)) != len(v):
            raise ValueError("each CertID hash once (allowed: sha1, sha256)")
        return v


def ocsp_problems(ocsp: Ocsp) -> list[tuple[str, str, str]]:
    """``(field, problem, allowed)`` of every BR 4.9.10 limit ``ocsp`` breaks (empty: it keeps them all)."""
    validity, refresh = ocsp.validity_td, ocsp.refresh_td
    found = []
    if validity < BR_OCSP_MIN_VALIDITY:
        found.append(("validity", f"{ocsp.validity} is shorter than the Baseline Requirements allow (4.9.10)",
                      "at least 8h"))
    elif validity > BR_OCSP_MAX_VALIDITY:
        found.append(("validity", f"{ocsp.validity} is longer than the Baseline Requirements allow (4.9.10)",
                      "at most 10d"))
    elif validity < BR_OCSP_SHORT_VALIDITY:
        if refresh > validity / 2:
            found.append(("refresh", f"{ocsp.refresh} is later than half of the validity {ocsp.validity} "
                          "(BR 4.9.10, validity under 16 hours)", f"at most {_human(validity / 2)}"))
    else:
        latest = min(validity - BR_OCSP_REFRESH_BEFORE_NEXT, BR_OCSP_MAX_REFRESH)
        if refresh > latest:
            found.append(("refresh", f"{ocsp.refresh} is too late for a validity of {ocsp.validity} (BR 4.9.10: at "
                          "least 8 hours before nextUpdate and at most 4 days after thisUpdate)",
                          f"at most {_human(latest)}"))
    if ocsp.signer_validity_td > OCSP_SIGNER_MAX_VALIDITY:
        found.append(("signer_validity", f"{ocsp.signer_validity} is too long for a certificate nobody can check "
                      "for revocation (id-pkix-ocsp-nocheck)", "at most 90d"))
    elif ocsp.signer_validity_td < 3 * validity:
        found.append(("signer_validity", f"{ocsp.signer_validity} is shorter than three response validities "
                      f"({ocsp.validity}): every response must expire before its signer", f"at least "
                      f"{_human(3 * validity)}"))
    return found


def _human(value: dt.timedelta) -> str:
    """A duration in the definition's own notation (the largest unit that divides it)."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class Backup(_Strict):
    mode: Literal["none", "wrapped"] = "none"
    threshold: int | None = Field(default=None, ge=2)
    custodians: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _quorum(self) -> Backup:
        if self.mode == "wrapped":
            if self.threshold is None or len(self.custodians) < self.threshold:
                raise ValueError("a wrapped backup needs threshold M and at least M custodians")
            if len(set(self.custodians)) != len(self.custodians):
                raise ValueError("custodian names must be distinct")
        elif self.threshold is not None or self.custodians:
            raise ValueError("threshold and custodians apply to mode 'wrapped' only")
        return self


def _https_pds(v: str) -> str:
    if urlparse(v).scheme != "https":
        raise ValueError("the PKI Disclosure Statement URL must be https:// (ETSI EN 319 412-5)")
    return v


class PdsLocation(_Strict):
    """One more language of the PKI Disclosure Statement (QcPDS lists one location per language)."""

    url: str
    lang: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}$")]

    _check = field_validator("url")(classmethod(lambda cls, v: _https_pds(v)))


class Profile(_Strict):
    """An end-entity certificate profile issued by a subordinate CA (ETSI EN 319 412)."""

    kind: Literal["qualified-signature", "qualified-seal"]
    validity_days: int = Field(ge=1, le=1186)
    policy_oids: list[OID] = Field(min_length=1)
    qc_pds_url: str
    qc_pds_lang: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}$")] = "en"
    qc_pds_translations: list[PdsLocation] = Field(default_factory=list)
    """The PDS in other languages (French is authoritative, the English one serves relying parties abroad):
    every location goes into the certificates' QcPDS statement."""

    _check_pds = field_validator("qc_pds_url")(classmethod(lambda cls, v: _https_pds(v)))

    @model_validator(mode="after")
    def _one_pds_per_language(self) -> Profile:
        langs = [self.qc_pds_lang, *(t.lang for t in self.qc_pds_translations)]
        if len(set(langs)) != len(langs):
            raise ValueError(f"qc_pds_translations: one PDS per language ({', '.join(langs)} given)")
        return self

    @property
    def pds_locations(self) -> list[tuple[str, str]]:
        """(url, language) of every PDS, the first one first."""
        return [(self.qc_pds_url, self.qc_pds_lang), *((t.url, t.lang) for t in self.qc_pds_translations)]


class LintAllowance(_Strict):
    validation: str = Field(min_length=1, description="pkilint validation code")
    reason: str = Field(min_length=10, description="why this finding is accepted, in writing")


class NameConstraints(_Strict):
    permitted_dns: list[str] = Field(default_factory=list)
    excluded_dns: list[str] = Field(default_factory=list)
    permitted_email: list[str] = Field(default_factory=list)
    excluded_email: list[str] = Field(default_factory=list)
    permitted_ip: list[str] = Field(default_factory=list)
    excluded_ip: list[str] = Field(default_factory=list)
    permitted_directory: list[list[dict[str, str]]] = Field(default_factory=list)

    @field_validator("permitted_ip", "excluded_ip")
    @classmethod
    def _nets(cls, v: list[str]) -> list[str]:
        for n in v:
            ipaddress.ip_network(n, strict=True)
        return v

    @model_validator(mode="after")
    def _nonempty(self) -> NameConstraints:
        if not any(getattr(self, f) for f in type(self).model_fields):
            raise ValueError("name_constraints needs at least one permitted or excluded subtree")
        return self


class KeyDestruction(_Strict):
    """The recorded decision to destroy a CA key while certificates of it are still valid (issue 18).

    Destroying a key early ends what it can sign (CRLs for what it issued), so the key-destruction ceremony
    refuses it unless the definition, which the witnesses and the auditor read, names the decision: who took
    it, when, and which key (its SPKI SHA-256, so that a decision about one key never covers a later one).
    """

    decision: str = Field(min_length=10, max_length=400, description="the decision's reference and who took it")
    date: dt.date
    spki_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class CaTermination(_Strict):
    """The recorded decision to terminate this CA (RFC 3647 5.8, ETSI EN 319 401 7.12; ``ceremony.terminate``).

    Termination revokes every unexpired certificate the CA issued and signs its last CRL: it cannot be undone, so
    the ceremony refuses unless the definition, which the witnesses and the auditor read, names the decision: when
    it was taken, its reference (who decided), and the body that keeps the archive and the last CRL afterwards.
    The CP/CPS (5.8) state it when it is set.
    """

    decided: dt.date
    reference: str = Field(min_length=10, max_length=400, description="the decision's reference and who took it")
    successor_body: str = Field(min_length=3, max_length=400,
                                description="the body that keeps the archive and the last CRL published")
    reason: Literal["cessationOfOperation", "superseded", "affiliationChanged", "privilegeWithdrawn",
                    "keyCompromise"] = "cessationOfOperation"
    """The reason code of the revocations the termination records (RFC 5280 5.3.1; the CA/Browser Forum's allowlist
    for CRLs, BR 7.2.2): cessationOfOperation unless the decision says otherwise."""


Subject = list[dict[str, str]]


#: The policy identifier anyPolicy (RFC 5280 4.2.1.4): a cross-certificate between two roots of one service that
#: vouches for everything the subject root's hierarchy issues under its own policies (BR 7.1.2.10.5 allows it for
#: an affiliated subject CA).
ANY_POLICY = "2.5.29.32.0"


class CrossCertificate(_Strict):
    """How the old and the successor root cross-certify each other (root rollover, issue 18; docs/lifecycle.md).

    The forward cross-certificate (the old root certifies the successor's key) always exists; ``reverse`` asks for
    the other one too (the successor certifies the old root's key), for relying parties that trust only the new
    root. Subject, key and subject key identifier are the subject root's own (BR 7.1.2.2.2, 7.1.2.2.3); what the
    definition decides is listed here.
    """

    reverse: bool = False
    validity: Validity | None = None
    """Of the forward cross-certificate; default: from the successor's start to the end of whichever root ends
    first. The reverse one runs from the later start of the two roots to the earlier end."""
    path_length: int | None = Field(default=None, ge=0)
    """pathLenConstraint of both cross-certificates; default: the subject root's own (none for an unlimited root)."""
    policy_oids: list[OID] = Field(default_factory=lambda: [ANY_POLICY], min_length=1)
    """certificatePolicies of both; default anyPolicy (BR 7.1.2.2.4: a cross-certificate carries policies)."""
    name_constraints: NameConstraints | None = None
    lint: list[LintAllowance] = Field(default_factory=list)


class Successor(_Strict):
    """The root that succeeds this one (root rollover): a new key under a new subject, its own self-signed
    certificate ``<root>.g<generation>.crt.pem``, and cross-certificates with the root it succeeds.

    ``hsm`` says where its key goes: another token, or the same token under new key and sealing labels (an
    existing label is refused, never a reason to generate another key). What is left out is the old root's:
    ``publication`` (give the successor its own URLs as soon as it issues CRLs of its own), ``crl``, ``backup``.
    """

    generation: int = Field(default=2, ge=2, le=99)
    subject: Subject = Field(min_length=1)
    key: KeySpec
    validity: Validity
    path_length: int | None = Field(default=None, ge=0)
    publication: Publication | None = None
    hsm: Hsm
    crl: Crl | None = None
    backup: Backup | None = None
    lint: list[LintAllowance] = Field(default_factory=list)
    cross_certificate: CrossCertificate = CrossCertificate()

    @field_validator("subject")
    @classmethod
    def _subject(cls, v: Subject) -> Subject:
        return check_subject(v)

    def as_ca(self, root: CA) -> CA:
        """The successor as a root CA of its own, so that the root key ceremony's steps serve it unchanged; what it
        leaves out is the old root's."""
        return CA(role="root", subject=self.subject, key=self.key, validity=self.validity,
                  path_length=self.path_length, publication=self.publication or root.publication, hsm=self.hsm,
                  crl=self.crl or root.crl, backup=self.backup or root.backup, lint=self.lint)


class CA(_Strict):
    role: Literal["root", "subordinate"]
    issuer: Name | None = None
    subject: Subject = Field(min_length=1)
    key: KeySpec
    spki_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    """Pins the subordinate key: the signing ceremony refuses a CSR with another key."""
    validity: Validity
    path_length: int | None = Field(default=None, ge=0)
    policy_oids: list[OID] = Field(default_factory=list)
    name_constraints: NameConstraints | None = None
    publication: Publication
    hsm: Hsm
    crl: Crl
    ocsp: Ocsp | None = None
    """The OCSP service of an online CA (the offline root has none: its status comes from its CRL batches)."""
    backup: Backup = Backup()
    profiles: dict[Name, Profile] = Field(default_factory=dict)
    lint: list[LintAllowance] = Field(default_factory=list)
    destruction: KeyDestruction | None = None
    """Set only to destroy this CA's key while its certificates are still valid (ceremony.destroy-key)."""
    termination: CaTermination | None = None
    """Set only to terminate this CA (ceremony.terminate): its last revocations, last CRL and archive."""
    successor: Successor | None = None
    """On the root only: the root that will succeed it (ceremony.new-root, ceremony.cross-certify)."""

    @field_validator("subject")
    @classmethod
    def _subject(cls, v: Subject) -> Subject:
        return check_subject(v)

    @property
    def common_name(self) -> str:
        return next(rdn["CN"] for rdn in self.subject if "CN" in rdn)


def check_subject(v: Subject) -> Subject:
    """A subject as the definition writes it: one known attribute per RDN, RFC 5280 lengths, a CN."""
    for i, rdn in enumerate(v):
        if len(rdn) != 1:
            raise ValueError(f"subject[{i}] must be one 'ATTRIBUTE: value' pair")
        (attr, value), = rdn.items()
        if attr not in SUBJECT_ATTRIBUTES:
            raise ValueError(f"subject[{i}]: unknown attribute {attr!r}; allowed: "
                             + ", ".join(SUBJECT_ATTRIBUTES))
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"subject[{i}]: {attr} must be a non-empty string")
        if len(value) > SUBJECT_ATTRIBUTES[attr]:
            raise ValueError(f"subject[{i}]: {attr} is longer than {SUBJECT_ATTRIBUTES[attr]} characters")
        if attr == "C" and not re.fullmatch(r"[A-Z]{2}", value):
            raise ValueError(f"subject[{i}]: C must be a two-letter ISO 3166 code")
    if not any("CN" in rdn for rdn in v):
        raise ValueError("subject needs a CN")
    return v


class DocumentId(_Strict):
    oid: OID
    version: Annotated[str, StringConstraints(pattern=r"^[0-9]+\.[0-9]+$")]
    title_fr: str
    title_en: str


class HistoryEntry(_Strict):
    date: dt.date
    version: str
    changes_fr: str
    changes_en: str
    approved_by: str
    effective: dt.date | None = None
    """The date the version takes effect (after the notice period); None while it awaits approval."""
    decision: str | None = None
    """The reference of the approving body's decision (9.12.1)."""


class Bilingual(_Strict):
    """A value the CP/CPS states in both languages (French is authoritative)."""

    fr: str = Field(min_length=1)
    en: str = Field(min_length=1)


class LegalText(_Strict):
    """A text of law the documents cite, with the articles they rely on (chapter 9 cites them by number)."""

    title: Bilingual
    articles: dict[Annotated[str, StringConstraints(pattern=r"^[a-z_]+$")], str] = Field(default_factory=dict)
    """Named articles, e.g. ``qualified_certificate: "article 2"``; templates cite them by name."""


class Legal(_Strict):
    """The legal frame of chapter 9: the documents cite these values instead of typing them, so that the
    law's articles and the liability amounts are stated once, here, and checked for presence."""

    authoritative_language: Literal["fr", "en"] = "fr"
    law: LegalText
    decree: LegalText | None = None
    other_texts: list[Bilingual] = Field(default_factory=list)
    qc_legislation: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
    """Country whose law makes the certificates qualified (QcCClegislation, EN 319 412-5)."""
    licence: Bilingual
    liability_cap: int = Field(ge=0)
    """Maximum compensation per certificate and per incident, in ``currency``."""
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "XOF"
    insurance: Bilingual
    conciliation_days: int = Field(default=60, ge=1, le=365)
    conciliation_body: Bilingual
    courts: Bilingual
    administrative_courts: Bilingual
    notice_days: int = Field(default=30, ge=0, le=365)
    """A new version is published this many days before it takes effect (9.10.1, 9.12.2)."""
    review_months: int = Field(default=12, ge=1, le=12)
    """The documents are reviewed at least this often, even without a change (a history line each time)."""


class Termination(_Strict):
    """What happens when the service or one of its CAs ends (RFC 3647 5.8, EN 319 401 7.12)."""

    notice_days: int = Field(ge=30)
    successor: Bilingual
    """The body that keeps the archives and the revocation status information after termination."""


class IncidentTarget(_Strict):
    who: Bilingual
    within_hours: int = Field(ge=1, le=72)


class Incidents(_Strict):
    """Whom the service tells of a security incident, and how soon (RFC 3647 5.7.1, EN 319 401 7.9)."""

    notify: list[IncidentTarget] = Field(min_length=1)
    exercise_months: int = Field(default=12, ge=1, le=12)
    """The continuity and compromise plans are exercised at least this often."""


class Revocation(_Strict):
    """Commitments the CP/CPS make on revocation; the drift check holds the text and the CRL cadence to them."""

    max_hours: int = Field(default=24, ge=1, le=24)
    """From an authenticated revocation request to the status being published (EN 319 411-1 REV-6.2.4-03A)."""
    emergency_root_crl_hours: int = Field(default=24, ge=1, le=24)
    """A root CRL revoking a subordinate CA is signed at an extraordinary ceremony within this time."""


class Documents(_Strict):
    cp: DocumentId
    cps: DocumentId
    repository_url: str
    history: list[HistoryEntry] = Field(min_length=1)
    approving_body: str
    ocsp_url: str | None = None
    legal: Legal | None = None
    termination: Termination | None = None
    incidents: Incidents | None = None
    revocation: Revocation = Revocation()
    status: Literal["draft", "submitted", "approved"] = "draft"
    """Where the current versions stand: being written, submitted to the approving body, or approved by it.
    The CP/CPS show it in their approval block; ``docs.build`` and ``docs.check`` refuse "approved" while
    ``awaiting_confirmation`` still names a value (a document cannot be approved on unconfirmed law)."""
    awaiting_confirmation: list[str] = Field(default_factory=list)
    """Values the legal service has not yet confirmed against the promulgated texts, as paths under
    ``documents`` (``legal.law.articles.provider_liability``, ``legal.liability_cap``, ``history.0.decision``):
    the approval block of both documents lists each with its current value."""

    @model_validator(mode="after")
    def _confirmations_name_fields(self) -> Documents:
        """Each path must name a value that exists, so that a typo cannot hide an unconfirmed one."""
        for path in self.awaiting_confirmation:
            if documents_value(self, path) is None:
                raise ValueError(f"awaiting_confirmation: {path!r} names no value of 'documents' (write a path "
                                 "such as 'legal.liability_cap', 'legal.law.articles.provider_liability' or "
                                 "'history.0.decision')")
        return self


def documents_value(documents: Documents, path: str) -> Any:
    """The value at ``path`` (dot-separated names, mapping keys or list indexes) under ``documents``; None
    when the path names nothing."""
    value: Any = documents
    for part in path.split("."):
        if isinstance(value, list):
            value = value[int(part)] if part.isdigit() and int(part) < len(value) else None
        elif isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, BaseModel) and part in type(value).model_fields:
            value = getattr(value, part)
        else:
            value = None
        if value is None:
            return None
    return value


class CeremonyRules(_Strict):
    crypto_officer_quorum: int = Field(default=1, ge=1, le=16)
    security_officer_quorum: int = Field(default=1, ge=1, le=16, description="HSM Security Officers whose parts "
                                         "make a token's SO PIN at its initialisation (1: one SO PIN, not split)")
    require_independent_witness: bool = True
    sealing_eku: OID = Field(default="2.16.466.1.1.1.3.1", description="extended key usage of the "
                             "transcript-sealing certificates the root issues (an OID of the service's own arc)")
    language: Literal["fr", "en"] = Field(default="en", description="language of the terminal at ceremonies "
                                          "(--lang overrides it); transcripts are recorded in English")


class Definition(_Strict):
    version: Literal[1]
    environment: Name
    organisation: Organisation
    limits: Limits = Limits()
    documents: Documents | None = None
    ceremony: CeremonyRules = CeremonyRules()
    cas: dict[Name, CA] = Field(min_length=1)
    #: The file the definition was read from (set by :func:`load_definition`), so that a refusal found after
    #: loading (an unknown CA asked for on the command line) names the operator's file, not a generic name.
    _source: str = PrivateAttr(default="pki.yml")

    @model_validator(mode="after")
    def _hierarchy(self) -> Definition:
        roots = [n for n, ca in self.cas.items() if ca.role == "root"]
        if len(roots) != 1:
            raise _PathError("cas", f"exactly one CA must have role 'root', found {len(roots)}")
        for name, ca in self.cas.items():
            base = f"cas.{name}"
            if ca.role == "root":
                if ca.issuer not in (None, name):
                    raise _PathError(f"{base}.issuer", "a root is its own issuer; leave issuer out")
                if ca.policy_oids:
                    raise _PathError(f"{base}.policy_oids", "a root certificate carries no certificate "
                                     "policies (its subordinates do)")
                if ca.name_constraints:
                    raise _PathError(f"{base}.name_constraints", "not supported on a self-signed root")
                if ca.validity.exceeds_years(self.limits.root_max_years):
                    raise _PathError(f"{base}.validity", f"the root is valid {ca.validity.years:.1f} years",
                                     f"at most {self.limits.root_max_years} years")
                if ca.profiles:
                    raise _PathError(f"{base}.profiles", "a root issues CA certificates only")
                if ca.ocsp is not None:
                    raise _PathError(f"{base}.ocsp", "the offline root has no OCSP service: the status of the "
                                     "subordinate CA certificates comes from the root CRL batches",
                                     "an ocsp section on an online (subordinate) CA only")
                if ca.crl.lifetime_td > BR_CA_ONLY_MAX_LIFETIME:
                    raise _PathError(f"{base}.crl.lifetime", f"{ca.crl.lifetime} is longer than the "
                                     "Baseline Requirements allow (4.9.7)", "at most 365d")
                if ca.crl.partitions is not None:
                    raise _PathError(f"{base}.crl.partitions", "the offline root's CRLs are signed in batches at "
                                     "root ceremonies and cover CA certificates only: they are not partitioned",
                                     "leave crl.partitions out on the root; set it on an online subordinate CA "
                                     "that issues end-entity certificates")
                if ca.successor is not None:
                    self._check_successor(name, ca, ca.successor)
            else:
                if ca.successor is not None:
                    raise _PathError(f"{base}.successor", "only the root has a successor (root rollover); a "
                                     "subordinate CA is renewed or re-keyed")
                if ca.issuer is None or ca.issuer not in self.cas or ca.issuer == name:
                    raise _PathError(f"{base}.issuer", f"unknown issuer {ca.issuer!r}",
                                     ", ".join(n for n in self.cas if n != name))
                parent = self.cas[ca.issuer]
                if ca.validity.exceeds_years(self.limits.subordinate_max_years):
                    raise _PathError(f"{base}.validity", f"valid {ca.validity.years:.1f} years",
                                     f"at most {self.limits.subordinate_max_years} years")
                if ca.validity.not_before < parent.validity.not_before:
                    raise _PathError(f"{base}.validity.not_before",
                                     f"starts before its issuer {ca.issuer!r} ({parent.validity.not_before})")
                if ca.validity.not_after > parent.validity.not_after:
                    raise _PathError(f"{base}.validity.not_after",
                                     f"outlives its issuer {ca.issuer!r} ({parent.validity.not_after})")
                if parent.path_length is not None and parent.path_length < 1:
                    raise _PathError(f"{base}.issuer", f"issuer {ca.issuer!r} has path_length 0")
                if ca.crl.batch_count is not None:
                    raise _PathError(f"{base}.crl.batch_count", "CRL batches are for the offline root")
                if ca.crl.partitions is not None:
                    _check_partitions(base, ca)
                if ca.profiles:
                    if ca.crl.lifetime_td > BR_EE_ISSUER_MAX_LIFETIME:
                        raise _PathError(f"{base}.crl.lifetime", f"{ca.crl.lifetime} exceeds the Baseline "
                                         "Requirements for a CA issuing end-entity certificates (4.9.7)",
                                         "at most 10d")
                    if ca.crl.interval_td > BR_EE_ISSUER_MAX_INTERVAL:
                        raise _PathError(f"{base}.crl.interval", f"{ca.crl.interval} exceeds the Baseline "
                                         "Requirements for a CA issuing end-entity certificates (4.9.7)",
                                         "at most 7d")
                elif ca.crl.lifetime_td > BR_CA_ONLY_MAX_LIFETIME:
                    raise _PathError(f"{base}.crl.lifetime", f"{ca.crl.lifetime} is too long", "at most 365d")
                if ca.publication.ocsp_url is not None:
                    raise _PathError(f"{base}.publication.ocsp_url", "an online CA's OCSP service is its ocsp "
                                     "section (responses signed by a delegated signer)", "cas.<ca>.ocsp.url")
                if ca.ocsp is not None:
                    problems = ocsp_problems(ca.ocsp)
                    if problems:
                        fld, problem, allowed = problems[0]
                        raise _PathError(f"{base}.ocsp.{fld}", problem, allowed)
                    label = ca.hsm.ocsp_signer_label(ca.ocsp)
                    if label in (ca.hsm.key_label, ca.hsm.sealing_label) or len(label) > 32:
                        raise _PathError(f"{base}.ocsp.signer_label", f"{label!r} is the CA key's or the sealing "
                                         "key's label, or longer than 32 characters",
                                         "a label of its own, at most 32 characters")
        labels: dict[tuple[str, str, str], str] = {}
        for name, ca in self.cas.items():
            k = (ca.hsm.module, ca.hsm.token.describe(), ca.hsm.key_label)
            if k in labels:
                raise _PathError(f"cas.{name}.hsm.key_label",
                                 f"same token and key label as CA {labels[k]!r}; every CA has its own key")
            labels[k] = name
        return self

    def _check_successor(self, name: str, root: CA, succ: Successor) -> None:
        """The successor root: its own subject, the root caps, a key label no CA uses on that token, and
        cross-certificates that fit inside both roots' validity."""
        base = f"cas.{name}.successor"
        if [dict(r) for r in succ.subject] == [dict(r) for r in root.subject]:
            raise _PathError(f"{base}.subject", f"the same subject as cas.{name}: a successor root has a name of its "
                             "own (a cross-certificate between two roots of one name is self-issued and chains "
                             "ambiguously)", "a subject that differs, e.g. in its CN")
        if succ.validity.exceeds_years(self.limits.root_max_years):
            raise _PathError(f"{base}.validity", f"the successor root is valid {succ.validity.years:.1f} years",
                             f"at most {self.limits.root_max_years} years")
        if succ.validity.not_before <= root.validity.not_before:
            raise _PathError(f"{base}.validity.not_before", f"not after cas.{name}'s ({root.validity.not_before}): "
                             "a successor starts later than the root it succeeds")
        token = (succ.hsm.module, succ.hsm.token.describe())
        for other_name, other in self.cas.items():
            if (other.hsm.module, other.hsm.token.describe()) != token:
                continue
            taken = {other.hsm.key_label, other.hsm.sealing_label}
            for label, field in ((succ.hsm.key_label, "key_label"), (succ.hsm.sealing_label, "seal_label")):
                if label in taken:
                    raise _PathError(f"{base}.hsm.{field}", f"{label!r} is a label of cas.{other_name} on the same "
                                     "token; the successor's keys get labels of their own",
                                     "another label, or another token")
        cross = succ.cross_certificate
        if cross.validity is not None:
            end = min(root.validity.not_after, succ.validity.not_after)
            if cross.validity.not_before < succ.validity.not_before:
                raise _PathError(f"{base}.cross_certificate.validity.not_before", "before the successor's own "
                                 f"certificate begins ({succ.validity.not_before}; BR 7.1.2.2.1)")
            if cross.validity.not_after > end:
                raise _PathError(f"{base}.cross_certificate.validity.not_after", "after the end of a root it "
                                 f"chains to ({end})", f"at most {end}")

    @property
    def root_name(self) -> str:
        return next(n for n, ca in self.cas.items() if ca.role == "root")

    def successor_root(self) -> tuple[str, CA] | None:
        """The root's successor (root rollover) as a CA of its own, with the stem of its files (``<root>.g<n>``),
        or None when the definition names none."""
        root = self.cas[self.root_name]
        if root.successor is None:
            return None
        return f"{self.root_name}.g{root.successor.generation}", root.successor.as_ca(root)

    def ca_or_successor(self, name: str) -> CA:
        """A CA by name, or the root's successor by the stem of its files (what a ceremony's token need names)."""
        successor = self.successor_root()
        if successor is not None and name == successor[0]:
            return successor[1]
        return self.ca(name)

    def ca(self, name: str) -> CA:
        if name not in self.cas:
            raise DefinitionError(self_file(self), "cas", f"no CA named {name!r}", ", ".join(self.cas))
        return self.cas[name]


#: Bounds of ``crl.partitions``: one partition is the full CRL; above the maximum each run signs and publishes more
#: files than a publication is worth (at a million revocations 64 partitions are 750 kB each) and a relying party
#: gains nothing more.
MIN_CRL_PARTITIONS = 2


MAX_CRL_PARTITIONS = 256


def _check_partitions(base: str, ca: CA) -> None:
    """``crl.partitions``: a whole number in bounds, on an online CA that issues end-entity certificates."""
    n = ca.crl.partitions
    allowed = f"a whole number from {MIN_CRL_PARTITIONS} to {MAX_CRL_PARTITIONS}, or leave it out (one full CRL)"
    if isinstance(n, bool) or not isinstance(n, int) or not MIN_CRL_PARTITIONS <= n <= MAX_CRL_PARTITIONS:
        raise _PathError(f"{base}.crl.partitions", f"{n!r} partitions", allowed)
    if not ca.profiles:
        raise _PathError(f"{base}.crl.partitions", "this CA issues no end-entity certificates (no profiles): "
                         "partitioned CRLs are for a CA whose end-entity certificates name them",
                         "leave crl.partitions out, or define the CA's profiles")
    try:
        partition_crl_url(ca.publication.crl_url, 0)
    except ValueError as exc:
        raise _PathError(f"{base}.publication.crl_url", str(exc), "a URL whose path ends with the CRL's file name") \
            from None


def partition_crl_url(crl_url: str, index: int) -> str:
    """The URL of partition ``index`` (0-based): ``-p<index>`` before the extension of ``crl_url``'s last
    path segment, or at its end without one: ``http://h/crl/qualified.crl`` → ``http://h/crl/qualified-p3.crl``.

    The partition CRL is then a file next to the full CRL in the same publication directory, served by the same
    web server rule, and a partition's URL is known from the full CRL's URL and the index alone.
    """
    u = urlparse(crl_url)
    head, _, last = u.path.rpartition("/")
    if not last or last in (".", "..") or u.query or u.fragment:
        raise ValueError(f"crl_url {crl_url!r} must end with a file name (no query or fragment) to form the "
                         "partition URLs from it, e.g. http://pki.example/crl/qualified.crl")
    stem, dot, ext = last.rpartition(".")
    name = f"{stem}-p{index}.{ext}" if dot and stem else f"{last}-p{index}"
    return u._replace(path=f"{head}/{name}").geturl()


def crl_partition_for(ca: CA, serial: int) -> int | None:
    """The CRL partition a new certificate with this serial names: ``serial mod partitions`` (serials are 159
    random bits from the HSM, so the partitions fill evenly); None when the CA does not partition (the full CRL).
    Recorded in the registry at issuance: a later change of the count never moves an issued certificate."""
    n = ca.crl.partitions
    return None if n is None else serial % n


def crl_url_for(ca: CA, partition: int | None) -> str:
    """The URL of the CRL a certificate of ``partition`` names (None: the full CRL, ``publication.crl_url``)."""
    url = ca.publication.crl_url
    return url if partition is None else partition_crl_url(url, partition)


class _PathError(ValueError):
    """Raised inside cross-field validation with the exact key path it concerns."""

    def __init__(self, path: str, problem: str, allowed: str | None = None) -> None:
        super().__init__(problem)
        self.path, self.problem, self.allowed = path, problem, allowed


class LoadedDefinition:
    """A validated definition together with where it came from and its exact bytes' hash."""

    def __init__(self, model: Definition, path: Path, sha256: str) -> None:
        self.model = model
        self.path = path
        self.sha256 = sha256

    def __getattr__(self, item: str) -> Any:
        return getattr(self.model, item)


def self_file(definition: Definition) -> str:
    return definition._source


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})",
                key_node.start_mark)
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_of(root: yaml.Node | None, path: tuple[Any, ...]) -> int | None:
    """Line number (1-based) of the deepest node of ``path`` found in the composed YAML."""
    node, line = root, None
    for part in path:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == str(part):
                    nxt, line = v, k.start_mark.line + 1
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


_ALLOWED_HINTS = {
    "bool_type": "true or false", "int_type": "a whole number", "string_type": "a string",
    "list_type": "a list", "dict_type": "a mapping", "datetime_type":
    "a date and time with a zone, e.g. 2026-01-01T00:00:00Z", "timezone_aware":
    "a date and time with a zone, e.g. 2026-01-01T00:00:00Z", "literal_error": None,
    "string_pattern_mismatch": None, "extra_forbidden": None, "missing": None,
}


def _format_validation_error(file: str, root: yaml.Node | None, err: ValidationError) -> DefinitionError:
    errors = err.errors(include_url=False)
    # An unknown key comes first: a misspelt key (``key_labl``) also makes the real one (``key_label``)
    # missing, and the cause is the spelling, not a missing key.
    e = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p in ("ecdsa", "rsa")))
    exc = e.get("ctx", {}).get("error")
    if isinstance(exc, _PathError):
        parts = tuple(int(p) if p.isdigit() else p for p in exc.path.split("."))
        return DefinitionError(file, exc.path, exc.problem, exc.allowed, _line_of(root, parts))
    path = ".".join(str(p) for p in loc)
    line = _line_of(root, loc)
    kind = e["type"]
    if kind == "extra_forbidden":
        parent_model = _model_at(Definition, tuple(e["loc"][:-1]))
        keys = list(parent_model.model_fields) if parent_model else []
        problem = f"unknown key {loc[-1]!r}"
        guess = difflib.get_close_matches(str(loc[-1]), keys, n=1)
        if guess:
            problem += f"; did you mean {guess[0]!r}?"
        return DefinitionError(file, path, problem, ", ".join(keys) or None, line)
    if kind == "missing":
        return DefinitionError(file, path, "required key is missing", None, line)
    if kind == "literal_error":
        return DefinitionError(file, path, f"{e['input']!r} is not allowed",
                               e.get("ctx", {}).get("expected"), line)
    if kind == "union_tag_invalid":
        return DefinitionError(file, path, f"unknown algorithm {e['input'].get('algorithm')!r}"
                               if isinstance(e["input"], dict) else "unknown algorithm", "ecdsa, rsa", line)
    if kind == "string_pattern_mismatch":
        return DefinitionError(file, path, f"{e['input']!r} has the wrong form",
                               f"text matching {e['ctx']['pattern']}", line)
    msg = e["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    allowed = _ALLOWED_HINTS.get(kind)
    if kind.endswith("_type") and "input" in e:
        msg = f"{msg} (got {type(e['input']).__name__} {e['input']!r})"
    return DefinitionError(file, path, msg, allowed, line)


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` down to ``X`` (a union of several models stays a union)."""
    for _ in range(8):
        origin = typing.get_origin(annotation)
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin is Annotated or (origin in (typing.Union, types.UnionType) and len(args) == 1):
            annotation = args[0]
        else:
            break
    return annotation


def _tagged_models(annotation: Any) -> dict[str, type[BaseModel]]:
    """A union of models told apart by a literal field (``algorithm: ecdsa | rsa``): tag → model."""
    tags: dict[str, type[BaseModel]] = {}
    for member in typing.get_args(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            for f in member.model_fields.values():
                if typing.get_origin(f.annotation) is Literal:
                    tags.update({str(v): member for v in typing.get_args(f.annotation)})
    return tags


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class of the mapping at ``loc`` (pydantic's raw error location), to list the keys it accepts.

    The location names fields, dictionary keys (a CA's or a profile's name), list indexes and the tag
    pydantic puts in for a discriminated union (``ecdsa``/``rsa``).
    """
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        origin = typing.get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            f = current.model_fields.get(str(part))
            if f is None:
                return None
            current = f.annotation
        elif origin is dict:
            current = typing.get_args(current)[1]
        elif origin is list and isinstance(part, int):
            current = typing.get_args(current)[0]
        elif (tagged := _tagged_models(current)) and str(part) in tagged:
            current = tagged[str(part)]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def load_definition(path: str | Path) -> LoadedDefinition:
    """Read, parse and validate a PKI definition; raise :class:`DefinitionError` on any problem."""
    p = Path(path)
    file = str(p)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DefinitionError(file, "", "file not found") from None
    except OSError as exc:
        raise DefinitionError(file, "", f"cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionError(file, "", f"not UTF-8 (byte {exc.start})") from None
    try:
        root = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise DefinitionError(file, "", f"malformed YAML: {problem}",
                              line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise DefinitionError(file, "", "the definition must be a YAML mapping", line=1)
    try:
        model = Definition.model_validate(data)
    except ValidationError as exc:
        raise _format_validation_error(file, root, exc) from None
    model._source = file
    return LoadedDefinition(model, p, hashlib.sha256(raw).hexdigest())
