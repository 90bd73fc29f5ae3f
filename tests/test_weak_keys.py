"""Weak keys (badkeys) are refused before any signature: in a subordinate CA's CSR, in an end-entity CSR, and
when the token generates one; the refusal names the check, and nothing is signed, written or registered.

The weak keys are made here, offline, from chosen primes (cryptography's ``RSAPrivateNumbers``), so that each
has the right size (RSA 3072) and passes every size rule: only the weak-key check can refuse it.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import badkeys.allkeys.block
import badkeys.utils
import gmpy2
import pytest
from conftest import base_definition_data, tree, write_definition
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute

from ceremony.ca.registry import Registry
from ceremony.ceremonies.issuance import issue_certificate
from ceremony.ceremonies.preflight import check_csr_file
from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
from ceremony.common.errors import HsmError, RequestError
from ceremony.definition.model import Hsm, LoadedDefinition, RsaKey, load_definition
from ceremony.hsm import keys as hsm_keys
from ceremony.hsm import weak_keys
from ceremony.hsm.keys import generate_key
from ceremony.hsm.session import open_session, pin_source_for
from ceremony.transcript.recorder import ConsoleRecorder
from ceremony.x509.csr import check_csr, load_csr
from ceremony.x509.profiles import subject_name

#: The modulus of ROCA's fingerprint (badkeys.rsakeys.roca): a vulnerable prime is k·M + 65537^a mod M.
ROCA_M = 0x924CBA6AE99DFA084537FACC54948DF0C23DA044D8CABE0EDD75BC6


def rsa_from_primes(p: int, q: int) -> rsa.RSAPrivateKey:
    e = 65537
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), rsa.RSAPublicNumbers(e, p * q))
    return numbers.private_key()


def fermat_key() -> rsa.RSAPrivateKey:
    """RSA 3072 whose primes differ by about 2^200: n = a² - b² with a just above √n, found in one step."""
    while True:
        p = int(gmpy2.next_prime(secrets.randbits(1536) | (3 << 1534)))
        q = int(gmpy2.next_prime(p + (1 << 200)))
        if (p * q).bit_length() == 3072 and gmpy2.gcd(65537, (p - 1) * (q - 1)) == 1:
            return rsa_from_primes(p, q)


def _roca_prime(bits: int) -> int:
    while True:
        k = secrets.randbits(bits - ROCA_M.bit_length() + 1)
        p = k * ROCA_M + pow(65537, secrets.randbelow(1 << 62), ROCA_M)
        if p.bit_length() == bits and (p >> (bits - 2)) == 3 and gmpy2.is_prime(p) and (p - 1) % 65537:
            return p


def roca_key() -> rsa.RSAPrivateKey:
    """RSA 3072 whose primes have the structure of Infineon's RSALib (CVE-2017-15361): ROCA's fingerprint."""
    return rsa_from_primes(_roca_prime(1536), _roca_prime(1536))


WEAK = {"fermat": fermat_key, "roca": roca_key}


@pytest.fixture(scope="module")
def weak_key() -> Callable[[str], rsa.RSAPrivateKey]:
    made: dict[str, rsa.RSAPrivateKey] = {}

    def _get(check: str) -> rsa.RSAPrivateKey:
        if check not in made:
            made[check] = WEAK[check]()
        return made[check]

    return _get


def rsa_definition(tmp_path: Path) -> LoadedDefinition:
    """The testing definition with the qualified CA's key RSA 3072 (no token is touched by these checks)."""
    data = copy.deepcopy(base_definition_data())
    data["cas"]["qualified"]["key"] = {"algorithm": "rsa", "bits": 3072}
    return load_definition(write_definition(tmp_path / "pki.yml", data))


def csr_file(path: Path, key: Any, subject: x509.Name) -> Path:
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize("check", ["fermat", "roca"])
def test_the_weak_keys_are_found_by_the_named_check(check: str, weak_key: Callable[[str], Any]) -> None:
    key = weak_key(check)
    assert key.key_size == 3072 and key.public_key().public_numbers().e == 65537
    assert [w.check for w in weak_keys.weak_key_findings(key.public_key())] == [check]
    assert weak_keys.weak_key_problem(ec.generate_private_key(ec.SECP384R1()).public_key()) is None


@pytest.mark.parametrize("check", ["fermat", "roca"])
def test_subordinate_csr_with_a_weak_key_is_refused(check: str, weak_key: Callable[[str], Any],
                                                    tmp_path: Path) -> None:
    defn = rsa_definition(tmp_path)
    ca = defn.model.cas["qualified"]
    path = csr_file(tmp_path / "qualified.csr.pem", weak_key(check), subject_name(ca.subject, True))
    with pytest.raises(RequestError) as err:
        check_csr(load_csr(path), "qualified", ca, str(path), True)
    assert f"{path}: the CSR key is a known-weak key: badkeys check {check!r}" in str(err.value)
    assert "nothing was signed" in str(err.value)
    # The same refusal reaches the pre-flight of the signing ceremony, before anyone signs in.
    finding, = check_csr_file(defn, "qualified", path, tmp_path / "out", True)
    assert not finding.ok and f"badkeys check {check!r}" in finding.detail
    assert not (tmp_path / "out").exists()


def test_signing_ceremony_refuses_a_weak_subordinate_csr_and_signs_nothing(
        definition_on_tokens: Any, weak_key: Callable[[str], Any], tmp_path: Path) -> None:
    """The real signing path: a root key ceremony on a fresh token, then the subordinate signing ceremony given a CSR
    whose RSA 3072 key is Fermat-factorable, then one with ROCA's fingerprint. Each is refused at csr-verify, naming
    the check, before the root key signs anything: no new file, no new object on the root's token."""
    def rsa_qualified(data: dict[str, Any]) -> None:
        data["cas"]["qualified"]["key"] = {"algorithm": "rsa", "bits": 3072}
        data["cas"]["root"]["backup"] = {"mode": "none"}

    pki, _ = definition_on_tokens(rsa_qualified)
    defn, out = load_definition(pki), tmp_path / "out"
    root_ceremony(defn, out, ConsoleRecorder(rehearsal=True), rehearsal=True, interactive=False)
    hsm = defn.model.cas["root"].hsm
    with open_session(hsm, pin_source_for(hsm, interactive=False)) as session:
        objects = sorted(str(o[Attribute.LABEL]) for o in session.get_objects())
    files = tree(out)
    manifest = (out / "manifest.json").read_bytes()
    subject = subject_name(defn.model.cas["qualified"].subject, True)
    for check in ("fermat", "roca"):
        csr = csr_file(tmp_path / f"{check}.csr.pem", weak_key(check), subject)
        with pytest.raises(RequestError) as err:
            sign_subordinate_ceremony(defn, "qualified", csr, out, ConsoleRecorder(rehearsal=True), rehearsal=True,
                                      interactive=False)
        assert f"{csr}: the CSR key is a known-weak key: badkeys check {check!r}" in str(err.value)
        assert "nothing was signed" in str(err.value)
        assert tree(out) == files and (out / "manifest.json").read_bytes() == manifest
        assert not (out / "qualified.crt.pem").exists()
        with open_session(hsm, pin_source_for(hsm, interactive=False)) as session:
            assert sorted(str(o[Attribute.LABEL]) for o in session.get_objects()) == objects


def issuer_certificate(defn: LoadedDefinition, path: Path) -> Path:
    """A stand-in certificate of the qualified CA (a software key): the weak-key refusal comes before the HSM."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = subject_name(defn.model.cas["qualified"].subject, True)
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA384()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize("check", ["fermat", "roca"])
def test_end_entity_csr_with_a_weak_key_is_refused(check: str, weak_key: Callable[[str], Any],
                                                   tmp_path: Path) -> None:
    defn = load_definition(write_definition(tmp_path / "pki.yml", base_definition_data()))
    issuer = issuer_certificate(defn, tmp_path / "qualified.crt.pem")
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "ML"), x509.NameAttribute(NameOID.GIVEN_NAME, "Awa"),
                         x509.NameAttribute(NameOID.SURNAME, "Keita"),
                         x509.NameAttribute(NameOID.SERIAL_NUMBER, "IDCML-0123456789"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "Awa Keita")])
    csr = csr_file(tmp_path / "request.csr.pem", weak_key(check), subject)
    out, registry = tmp_path / "out", tmp_path / "registry.sqlite"
    with Registry.open(registry, create=True) as reg:
        with pytest.raises(RequestError) as err:
            issue_certificate(defn, "qualified", "qes-natural-person", csr, out, reg, ConsoleRecorder(rehearsal=True),
                              issuer_cert_path=issuer, rehearsal=True, interactive=False)
        assert reg.count() == 0
    assert f"{csr}: the CSR key is a known-weak key: badkeys check {check!r}" in str(err.value)
    assert "nothing was signed" in str(err.value)
    with Registry.open(registry) as reg:
        assert reg.count() == 0
    assert not out.exists() or tree(out) == set()


def test_a_weak_key_generated_on_the_token_is_destroyed(make_token: Any, weak_key: Callable[[str], Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A token whose generator gives close primes: the key is refused at generation, before its first signature,
    and both objects are gone. (SoftHSM generates good keys: what it returned is replaced by the weak key.)"""
    tok = make_token("weak")
    spec = RsaKey(algorithm="rsa", bits=3072)
    monkeypatch.setattr(hsm_keys, "public_key_from_token", lambda pub: weak_key("fermat").public_key())
    defn_hsm = load_definition_hsm(tok)
    with open_session(defn_hsm, pin_source_for(defn_hsm, interactive=False)) as session:
        with pytest.raises(HsmError) as err:
            generate_key(session, spec, "weak-generated")
        assert list(session.get_objects()) == []
    assert "'weak-generated' is a known-weak key: badkeys check 'fermat'" in str(err.value)
    assert "nothing was signed" in str(err.value)


def load_definition_hsm(tok: Any) -> Hsm:
    return Hsm(module=tok.module, token={"label": tok.label}, key_label="k", pin_env=tok.pin_env)


def test_the_blocklist_is_checked_only_when_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without badkeys' downloaded data the blocklist is skipped and the update command is shown; with it (here a
    blocklist of one key, in badkeys' own file format) a listed key is refused by the check 'blocklist'."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    badkeys.utils._cachedir.cache_clear()
    monkeypatch.setattr(badkeys.allkeys.block, "_blmeta", False)
    monkeypatch.setattr(badkeys.allkeys.block, "_bldata", False)
    try:
        assert "blocklist" not in weak_keys.checks_run()
        state = weak_keys.blocklist_state()
        assert weak_keys.UPDATE_COMMAND in state and "NOT installed" in state
        listed = ec.generate_private_key(ec.SECP256R1()).public_key()
        x = listed.public_numbers().x
        entry = hashlib.sha256(x.to_bytes((x.bit_length() + 7) // 8, "big")).digest()[:15] + bytes([7])
        data = tmp_path / "cache" / "badkeys"
        data.mkdir(parents=True)
        (data / "blocklist.dat").write_bytes(entry)
        (data / "badkeysdata.json").write_text(json.dumps({"blocklists": [{"id": 7, "name": "test-published"}]}))
        assert "blocklist" in weak_keys.checks_run() and "NOT" not in weak_keys.blocklist_state()
        found, = weak_keys.weak_key_findings(listed)
        assert (found.check, found.subtest) == ("blocklist", "test-published")
        assert weak_keys.weak_key_problem(ec.generate_private_key(ec.SECP256R1()).public_key()) is None
    finally:
        badkeys.utils._cachedir.cache_clear()
