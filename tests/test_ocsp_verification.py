"""What the OCSP job checks after the HSM signs (issue 13, speed and scale): every response parsed back and compared,
the signature's form, no ECDSA nonce twice, and the signature verified for each session's first response, every
revocation and a random share of the rest (docs/ocsp.md, "What is verified").

The job's part runs on a fresh root and qualified CA on SoftHSM tokens with the real signer ceremony; the "corrupted
key" is made on the token itself: the signer label's private key replaced by another key while the public key
object (which the job compares with the signer certificate) stays the right one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, KeyType, ObjectClass

from ceremony.ca.registry import CertRecord, Registry
from ceremony.ceremonies.ocsp_signer import ocsp_signer_ceremony
from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
from ceremony.common.errors import VerificationError
from ceremony.definition.model import load_definition
from ceremony.hsm.session import open_session, pin_source_for
from ceremony.ocsp.cli import create_store
from ceremony.ocsp.encoding import ResponderContext, Status, check_response, signature_well_formed, verify_response
from ceremony.ocsp.job import NonceWatch, run_ocsp_job
from ceremony.ocsp.store import ResponseStore
from ceremony.transcript.recorder import ConsoleRecorder

NOW = 1_780_000_000


def _cert(key: Any, name: str, issuer_key: Any = None, issuer_name: str | None = None) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name or name)])
    start = dt.datetime.fromtimestamp(NOW - 86400, dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=30)).sign(issuer_key or key, hashes.SHA384()))


@pytest.fixture(scope="module")
def software() -> tuple[ResponderContext, Any, Any]:
    """A CA and a delegated signer with software keys: the encoder and the checks, without an HSM."""
    ca_key, signer_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca = _cert(ca_key, "CA")
    signer = _cert(signer_key, "signer", ca_key, "CA")
    return ResponderContext(ca, signer, ("sha1", "sha256")), signer_key, ca_key


TIMES = (NOW, NOW - 60, NOW - 60 + 4 * 86400)


@pytest.mark.parametrize("status", [Status(), Status(NOW - 3600, 1), Status(NOW - 3600, None)])
@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_a_response_by_the_signer_passes_both_checks(software: tuple[ResponderContext, Any, Any], status: Status,
                                                     algorithm: str) -> None:
    context, signer_key, _ = software
    tbs = context.response_data(0x1234, algorithm, status, *TIMES)
    der = context.sign(tbs, signer_key)
    parsed = verify_response(der, tbs, signer_key.public_key(), 0x1234, status, *TIMES[1:])
    assert parsed.serial_number == 0x1234
    assert check_response(der, tbs, signer_key.public_key(), 0x1234, status, *TIMES[1:]).signature == \
        parsed.signature


def test_a_signature_by_another_key_is_caught_by_verification_only(
        software: tuple[ResponderContext, Any, Any]) -> None:
    """Why the job still verifies some signatures: a well-formed signature by the wrong key passes the cheap check."""
    context, signer_key, ca_key = software
    tbs = context.response_data(0x1234, "sha256", Status(), *TIMES)
    der = context.sign(tbs, ca_key)
    check_response(der, tbs, signer_key.public_key(), 0x1234, Status(), *TIMES[1:])
    with pytest.raises(VerificationError, match="response for 1234 made by the HSM does not verify with the signer"):
        verify_response(der, tbs, signer_key.public_key(), 0x1234, Status(), *TIMES[1:])


class _Faulty:
    """A software key whose signatures come out altered as a faulty HSM might return them."""

    def __init__(self, key: Any, alter: Callable[[bytes], bytes]) -> None:
        self.key, self.alter = key, alter

    def public_key(self) -> Any:
        return self.key.public_key()

    def sign(self, data: bytes, algorithm: Any) -> bytes:
        return self.alter(self.key.sign(data, algorithm))


@pytest.mark.parametrize(("what", "make"), [
    ("zeros", lambda sig: b"\x00" * len(sig)),
    ("r = 0", lambda sig: utils.encode_dss_signature(0, utils.decode_dss_signature(sig)[1])),
    ("r too long", lambda sig: utils.encode_dss_signature(1 << 400, utils.decode_dss_signature(sig)[1])),
    ("truncated", lambda sig: sig[:-3]),
])
def test_a_malformed_signature_is_caught_by_the_cheap_check(software: tuple[ResponderContext, Any, Any], what: str,
                                                            make: Callable[[bytes], bytes]) -> None:
    context, signer_key, _ = software
    tbs = context.response_data(0x99, "sha1", Status(), *TIMES)
    bad = context.sign(tbs, _Faulty(signer_key, make))
    with pytest.raises(VerificationError, match=r"not a well-formed signature of the signer.s key|does not parse"):
        check_response(bad, tbs, signer_key.public_key(), 0x99, Status(), *TIMES[1:])


def test_rsa_signature_form() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sig = key.sign(b"x", padding.PKCS1v15(), hashes.SHA256())
    assert signature_well_formed(key.public_key(), sig)
    assert not signature_well_formed(key.public_key(), sig[1:])
    assert not signature_well_formed(key.public_key(), b"\xff" * len(sig))  # not below the modulus
    assert not signature_well_formed(key.public_key(), b"\x00" * len(sig))


def test_a_response_that_says_something_else_is_caught(software: tuple[ResponderContext, Any, Any]) -> None:
    context, signer_key, _ = software
    tbs = context.response_data(0x1234, "sha1", Status(), *TIMES)
    der = context.sign(tbs, signer_key)
    with pytest.raises(VerificationError, match="for 1235, parsed back, differs"):
        check_response(der, tbs, signer_key.public_key(), 0x1235, Status(), *TIMES[1:])
    with pytest.raises(VerificationError, match="parsed back, differs"):
        check_response(der, tbs, signer_key.public_key(), 0x1234, Status(NOW, 1), *TIMES[1:])
    other = context.response_data(0x1234, "sha256", Status(), *TIMES)
    with pytest.raises(VerificationError, match="does not carry the ResponseData that was encoded"):
        check_response(der, other, signer_key.public_key(), 0x1234, Status(), *TIMES[1:])


def test_a_nonce_used_twice_stops_the_run_and_memory_stays_bounded() -> None:
    watch = NonceWatch(window=4)
    for r in range(1, 10):
        watch.add(r << 200 | r, r)
    assert len(watch.current) + len(watch.previous) <= 8
    with pytest.raises(VerificationError, match=r"nonce it had already used.*nothing of this run is stored"):
        watch.add(9 << 200 | 9, 0xABC)
    watch.add(1 << 200 | 1, 1)  # seen long ago, out of the window: not remembered (bounded memory)


# --- the job on SoftHSM -------------------------------------------------------------------------------------------

@pytest.fixture
def ocsp_ca(tmp_path: Path, definition_on_tokens: Any) -> dict[str, Any]:
    """A root, the qualified CA and its OCSP signer on fresh tokens; a registry of 12 certificates (the 4th and the
    9th revoked) and an empty store."""
    path, _ = definition_on_tokens()
    defn = load_definition(path)
    out = tmp_path / "out"
    rec = ConsoleRecorder(rehearsal=True)
    root_ceremony(defn, out, rec, rehearsal=True, interactive=False)
    subordinate_key_ceremony(defn, "qualified", out, rec, rehearsal=True, interactive=False)
    sign_subordinate_ceremony(defn, "qualified", out / "qualified.csr.pem", out, rec, rehearsal=True,
                              issuer_cert_path=out / "root.crt.pem", interactive=False)
    ocsp_signer_ceremony(defn, "qualified", out, rec, rehearsal=True, interactive=False)
    registry = _registry(tmp_path / "registry.sqlite3", revoked=(3, 8))
    store = create_store(path, "qualified", tmp_path / "ocsp.sqlite3", out)
    return {"defn": defn, "path": path, "out": out, "registry": registry, "store": store}


def _registry(path: Path, revoked: tuple[int, ...]) -> Path:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    serials = [0x1000 + i for i in range(12)]
    with Registry.open(path, create=True) as reg:
        reg.add_many(CertRecord(serial=s, subject="CN=t", profile="qes-natural-person",
                                not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=300),
                                sha256="00" * 32, status="good") for s in serials)
        for i in revoked:
            reg.revoke(serials[i], "keyCompromise")
    return path


def _run(ca: dict[str, Any], **kwargs: Any) -> Any:
    return run_ocsp_job(ca["defn"], "qualified", ca["registry"], ca["store"], ceremony_out=ca["out"], **kwargs)


@pytest.mark.hsm
def test_which_signatures_the_job_verifies(ocsp_ca: dict[str, Any]) -> None:
    # One session, nothing sampled: its first response (a good one) and the 4 revoked responses, nothing else.
    first = _run(ocsp_ca, workers=1, verify_rate=0.0)
    assert first.signed == 24 and first.verified == 1 + 4
    # --verify-all: every one of them, here at the next refresh.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2, minutes=1)
    again = _run(ocsp_ca, workers=2, verify_rate=1.0, now=later)
    assert again.signed == 24 and again.verified == 24 and again.reasons == {"refresh": 24}
    with pytest.raises(ValueError, match="allowed from 0 to 1"):
        _run(ocsp_ca, verify_rate=1.5)


@pytest.mark.hsm
def test_a_corrupted_signer_key_is_caught_at_each_sessions_first_response(ocsp_ca: dict[str, Any],
                                                                         tmp_path: Path) -> None:
    """The token's public key object is the certificate's (the job's up-front check passes), but the private key under
    the signer's label is another one: with no revocation and nothing sampled, each session's first response is what
    is verified, and it fails; nothing is stored."""
    ca = ocsp_ca["defn"].model.cas["qualified"]
    assert ca.ocsp is not None
    label = ca.hsm.ocsp_signer_label(ca.ocsp)
    with open_session(ca.hsm, pin_source_for(ca.hsm, None, False), rw=True) as session:
        right = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        params = session.create_domain_parameters(KeyType.EC, {Attribute.EC_PARAMS: right[Attribute.EC_PARAMS]},
                                                  local=True)
        wrong_public, wrong = params.generate_keypair(store=True, label="stand-in")
        right.destroy()
        wrong[Attribute.LABEL] = label
        wrong_public.destroy()
    all_good = {**ocsp_ca, "registry": _registry(tmp_path / "good.sqlite3", revoked=()),
                "store": create_store(ocsp_ca["path"], "qualified", tmp_path / "good-ocsp.sqlite3", ocsp_ca["out"])}
    with pytest.raises(VerificationError, match="does not verify with the signer certificate's key"):
        _run(all_good, workers=2, verify_rate=0.0)
    with ResponseStore.open(all_good["store"], read_only=True) as store:
        assert store.count() == 0
