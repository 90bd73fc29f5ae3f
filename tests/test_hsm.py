"""The HSM layer against real SoftHSM tokens, cross-checked with OpenSC's pkcs11-tool."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

import cryptography
import pytest
from conftest import TestToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ceremony.common.errors import HsmError
from ceremony.definition.model import EcKey, Hsm, RsaKey, TokenRef
from ceremony.hsm import session as hsm
from ceremony.hsm.keys import generate_key, spki_sha256
from ceremony.hsm.signers import HsmEcPrivateKey, HsmRsaPrivateKey, hash_for, signing_key

pytestmark = pytest.mark.hsm


def _hsm(tok: TestToken, ref: TokenRef | None = None, label: str = "ca-key") -> Hsm:
    return Hsm(module=tok.module, token=ref or TokenRef(label=tok.label), key_label=label, pin_env=tok.pin_env,
               so_pin_env=tok.so_pin_env)


def _session(h: Hsm):  # type: ignore[no-untyped-def]
    return hsm.open_session(h, hsm.pin_source_for(h, interactive=False))


def pkcs11_tool_objects(tok: TestToken) -> str:
    """What OpenSC's independent implementation sees on the token (test PINs only)."""
    return subprocess.run(
        ["pkcs11-tool", "--module", tok.module, "--token-label", tok.label, "--login", "--pin", tok.user_pin,
         "--list-objects"], capture_output=True, text=True, check=True, env={"SOFTHSM2_CONF": str(tok.conf)}).stdout


@pytest.mark.parametrize("spec", [EcKey(algorithm="ecdsa", curve="P-256"), EcKey(algorithm="ecdsa", curve="P-384"),
                                  RsaKey(algorithm="rsa", bits=3072), RsaKey(algorithm="rsa", bits=4096)],
                         ids=lambda s: s.describe())
def test_generated_key_is_sensitive_local_sign_only(make_token: Callable[[str], TestToken], spec) -> None:  # type: ignore[no-untyped-def]
    tok = make_token("gen")
    h = _hsm(tok)
    with _session(h) as session:
        ev = generate_key(session, spec, "ca-key")
        key = signing_key(session, "ca-key")
        assert spki_sha256(key.public_key()) == ev.spki_sha256
    assert (ev.local, ev.always_sensitive, ev.never_extractable, ev.sensitive) == (True, True, True, True)
    assert (ev.extractable, ev.decrypt, ev.unwrap, ev.derive, ev.sign) == (False, False, False, False, True)
    assert len(ev.id_hex) == 32
    listing = pkcs11_tool_objects(tok)
    private = listing.split("Private Key Object")[1].split("Public Key Object")[0]
    assert "label:      ca-key" in private
    assert "Usage:      sign\n" in private, private
    assert "Access:     sensitive, always sensitive, never extractable, local" in private


def test_signing_through_the_hsm_with_the_pinned_cryptography(make_token: Callable[[str], TestToken]) -> None:
    """cryptography's builders must keep accepting HSM-backed key objects (pin: 50.0.2)."""
    assert cryptography.__version__ == "50.0.2"
    tok = make_token("sign")
    with _session(_hsm(tok)) as session:
        generate_key(session, EcKey(algorithm="ecdsa", curve="P-384"), "ec")
        generate_key(session, RsaKey(algorithm="rsa", bits=3072), "rsa")
        for label, cls in (("ec", HsmEcPrivateKey), ("rsa", HsmRsaPrivateKey)):
            key = signing_key(session, label)
            assert isinstance(key, cls)
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label)])
            import datetime as dt
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                    .serial_number(1).not_valid_before(dt.datetime(2026, 1, 1))
                    .not_valid_after(dt.datetime(2027, 1, 1)).sign(key, hash_for(key)))
            csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hash_for(key))
            assert csr.is_signature_valid
            cert.verify_directly_issued_by(cert)
            assert key.signatures == 2
            with pytest.raises(HsmError, match="cannot be exported"):
                key.private_bytes()  # type: ignore[call-arg]
    assert isinstance(key.public_key(), ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    assert isinstance(hash_for(key), hashes.SHA256)


def test_token_by_serial_and_uri(make_token: Callable[[str], TestToken]) -> None:
    tok = make_token("find")
    lib = hsm.load_module(tok.module)
    token = hsm.find_token(lib, TokenRef(label=tok.label))
    serial = hsm.token_evidence(tok.module, lib, token).serial
    assert hsm.find_token(lib, TokenRef(serial=serial)).label == tok.label
    assert hsm.find_token(lib, TokenRef(uri=f"pkcs11:token={tok.label};manufacturer=SoftHSM%20project")).label \
        == tok.label
    with pytest.raises(HsmError, match="pin-value"):
        hsm.parse_pkcs11_uri(f"pkcs11:token={tok.label}?pin-value=1234")


def test_unmatched_uri_says_which_attribute_failed_on_each_token(make_token: Callable[[str], TestToken]) -> None:
    """The example's old ``model=HSM`` against a real SoftHSM token: the message names the attribute,
    what was wanted and what the token has, and leaves out the attributes that did match."""
    tok = make_token("uri")
    before = pkcs11_tool_objects(tok)
    uri = f"pkcs11:token={tok.label};manufacturer=SoftHSM%20project;model=HSM"
    with pytest.raises(HsmError) as info, _session(_hsm(tok, TokenRef(uri=uri))):
        pass
    message = str(info.value)
    assert message.startswith(f"token not found: token {uri}: ")
    assert f"model: wanted 'HSM', token {tok.label!r} has 'SoftHSM v2'" in message
    assert f"manufacturer: wanted 'SoftHSM project', token {tok.label!r}" not in message, "it matched"
    assert f"token: wanted {tok.label!r}, token {tok.label!r}" not in message, "it matched"
    assert f"pkcs11-tool --module {os.path.realpath(tok.module)} --list-token-slots" in message
    assert len(message.splitlines()) == 1
    other = make_token("uri-other")
    lib = hsm.load_module(tok.module)
    hsm.rescan(tok.module)
    with pytest.raises(HsmError) as info:
        hsm.find_token(lib, TokenRef(uri=f"pkcs11:token={tok.label};serial=0000"))
    assert f"token: wanted {tok.label!r}, token {other.label!r} has {other.label!r}, serial: wanted '0000'" \
        in str(info.value), "every token present is explained"
    assert pkcs11_tool_objects(tok) == before, "nothing was done on the token"


@pytest.mark.parametrize(("uri", "needle"), [
    ("pkcs11:modle=SoftHSM%20v2", "unknown PKCS#11 URI attribute 'modle' (did you mean 'model'?); allowed: token,"),
    ("pkcs11:token=x;object=ca-key", "'object' selects a key, not a token"),
    ("pkcs11:token=x;token=y", "'token' is given twice"),
    ("pkcs11:token=x?module-path=/tmp/x.so", "takes no query attributes"),
    ("pkcs11:", "names no token attribute"),
])
def test_uri_attributes_that_would_be_ignored_are_refused(uri: str, needle: str) -> None:
    """An attribute the matching does not know would otherwise match any token."""
    with pytest.raises(HsmError) as info:
        hsm.parse_pkcs11_uri(uri)
    assert needle in str(info.value)


def test_example_token_uris_match_a_token_labelled_as_they_say(make_token: Callable[[str], TestToken]) -> None:
    """``inventory/production.example``: its URIs describe nothing a real token would not have."""
    from conftest import REPO, SOFTHSM_CONF

    from ceremony.definition.model import load_definition
    from ceremony.hsm import softhsm

    example = load_definition(REPO / "inventory/production.example/pki.yml").model
    tok = make_token("example")  # for the module and a PIN
    lib = hsm.load_module(tok.module)
    for name, ca in example.cas.items():
        attrs = hsm.parse_pkcs11_uri(ca.hsm.token.uri or "")
        assert set(attrs) == {"token"}, f"{name}: a model or manufacturer in the example would be invented"
        softhsm.init_token(SOFTHSM_CONF, attrs["token"], tok.user_pin, tok.so_pin)
        hsm.rescan(tok.module)
        assert hsm.find_token(lib, ca.hsm.token).label == attrs["token"]


def test_clear_errors(make_token: Callable[[str], TestToken], monkeypatch: pytest.MonkeyPatch) -> None:
    tok = make_token("err")
    with pytest.raises(HsmError, match="module not found"):
        hsm.load_module("/nonexistent/libpkcs11.so")
    with pytest.raises(HsmError, match="token not found"), _session(_hsm(tok, TokenRef(label="no-such-token"))):
        pass
    monkeypatch.setenv(tok.pin_env, "wrong-" + tok.user_pin)
    with pytest.raises(HsmError) as info, _session(_hsm(tok)):
        pass
    assert "wrong PIN" in str(info.value) and tok.user_pin not in str(info.value)
    monkeypatch.setenv(tok.pin_env, tok.user_pin)
    with _session(_hsm(tok)) as session:
        with pytest.raises(HsmError, match="key not found"):
            signing_key(session, "absent")
        generate_key(session, EcKey(algorithm="ecdsa", curve="P-256"), "dup")
        before = len(list(session.get_objects()))
        with pytest.raises(HsmError, match="already exists"):
            generate_key(session, EcKey(algorithm="ecdsa", curve="P-256"), "dup")
        assert len(list(session.get_objects())) == before, "a refused generation creates nothing"
        # Two keys under one label (made by another tool): refuse to guess.
        from pkcs11 import KeyType
        session.generate_keypair(KeyType.RSA, 2048, label="twice", store=True)
        session.generate_keypair(KeyType.RSA, 2048, label="twice", store=True)
        with pytest.raises(HsmError, match="more than one"):
            signing_key(session, "twice")
