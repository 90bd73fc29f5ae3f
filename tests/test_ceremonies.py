"""The three CA ceremonies on real SoftHSM tokens, cross-checked with openssl and pkilint.

Every bad input exits with one clear message and leaves no new file and no new HSM object.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TestToken, tree
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
from ceremony.common.errors import CeremonyError, HsmError, LintError, OutputError, RequestError
from ceremony.definition.model import load_definition
from ceremony.hsm import session as hsm
from ceremony.transcript.recorder import ConsoleRecorder
from ceremony.x509.lint import lint_certificate

pytestmark = pytest.mark.hsm

Flow = Callable[..., tuple[Path, dict[str, TestToken]]]


def rec() -> ConsoleRecorder:
    return ConsoleRecorder(rehearsal=True)


def object_count(tok: TestToken) -> int:
    from ceremony.definition.model import Hsm, TokenRef
    h = Hsm(module=tok.module, token=TokenRef(label=tok.label), key_label="x", pin_env=tok.pin_env)
    with hsm.open_session(h, hsm.pin_source_for(h, interactive=False)) as session:
        return len(list(session.get_objects()))


def run_all(pki: Path, out: Path) -> None:
    defn = load_definition(pki)
    root_ceremony(defn, out, rec(), rehearsal=True, interactive=False)
    subordinate_key_ceremony(defn, "qualified", out, rec(), rehearsal=True, interactive=False)
    sign_subordinate_ceremony(defn, "qualified", out / "qualified.csr.pem", out, rec(), rehearsal=True,
                              interactive=False)


def no_backup(d: dict[str, Any]) -> None:
    d["cas"]["root"]["backup"] = {"mode": "none"}


def test_full_hierarchy_verifies_with_openssl_and_pkilint(definition_on_tokens: Flow, tmp_path: Path) -> None:
    pki, tokens = definition_on_tokens(no_backup)
    out = tmp_path / "out"
    run_all(pki, out)
    verify = subprocess.run(["openssl", "verify", "-x509_strict", "-CAfile", str(out / "root.crt.pem"),
                             str(out / "qualified.crt.pem")], capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stdout.strip().endswith(": OK"), verify.stdout + verify.stderr
    root = x509.load_pem_x509_certificate((out / "root.crt.pem").read_bytes())
    sub = x509.load_der_x509_certificate((out / "qualified.crt.der").read_bytes())
    assert root.subject.rfc4514_string().startswith("CN=SCSE Test Root CA 2026 (REHEARSAL)")
    assert sub.issuer == root.subject
    for cert in (root, sub):
        assert 0 < cert.serial_number < 2 ** 159 and cert.serial_number.bit_length() > 64
        assert [f for f in lint_certificate(cert.public_bytes(serialization.Encoding.DER)) if f.blocking] == []
    # The subordinate certificate carries the key the subordinate's HSM holds.
    csr = x509.load_pem_x509_csr((out / "qualified.csr.pem").read_bytes())
    assert csr.public_key() == sub.public_key()
    assert (out / "qualified.pub.der").read_bytes() == sub.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rehearsal"] is True
    kinds = {(a["kind"], a["format"]) for a in manifest["artifacts"]}
    for kind in ("root-certificate", "root-public-key", "subordinate-csr", "subordinate-public-key",
                 "subordinate-certificate"):
        assert {(kind, "pem"), (kind, "der")} <= kinds
    assert ("pki-definition", "yaml") in kinds
    import hashlib
    for a in manifest["artifacts"]:
        assert hashlib.sha256((out / a["path"]).read_bytes()).hexdigest() == a["sha256"]
    # pkcs11-tool sees each CA private key as sensitive, never extractable, local, sign only.
    from test_hsm import pkcs11_tool_objects
    for tok in tokens.values():
        private = pkcs11_tool_objects(tok).split("Private Key Object")[1].split("Public Key Object")[0]
        assert "Usage:      sign\n" in private
        assert "Access:     sensitive, always sensitive, never extractable, local" in private


def _assert_unchanged(out: Path, before_files: set[str], tokens: dict[str, TestToken],
                      before_objects: dict[str, int]) -> None:
    assert (tree(out) if out.exists() else set()) == before_files, "no new file"
    assert {n: object_count(t) for n, t in tokens.items()} == before_objects, "no new HSM object"


def _state(out: Path, tokens: dict[str, TestToken]) -> tuple[set[str], dict[str, int]]:
    return (tree(out) if out.exists() else set()), {n: object_count(t) for n, t in tokens.items()}


def _expect(exc_type: type[CeremonyError], fn: Callable[[], Any], *needles: str) -> CeremonyError:
    with pytest.raises(exc_type) as info:
        fn()
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    return info.value


def test_missing_token_changes_nothing(definition_on_tokens: Flow, tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["cas"]["root"]["hsm"]["token"] = {"label": "absent-token"}
    pki, tokens = definition_on_tokens(mutate)
    out = tmp_path / "out"
    state = _state(out, tokens)
    _expect(HsmError, lambda: root_ceremony(load_definition(pki), out, rec(), rehearsal=True, interactive=False),
            "token not found", "absent-token")
    _assert_unchanged(out, state[0], tokens, state[1])


def test_wrong_pin_changes_nothing(definition_on_tokens: Flow, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pki, tokens = definition_on_tokens()
    out = tmp_path / "out"
    state = _state(out, tokens)
    monkeypatch.setenv(tokens["root"].pin_env, "000000-wrong")
    err = _expect(HsmError, lambda: root_ceremony(load_definition(pki), out, rec(), rehearsal=True,
                                                  interactive=False), "wrong PIN")
    assert "000000-wrong" not in str(err)
    monkeypatch.setenv(tokens["root"].pin_env, tokens["root"].user_pin)
    _assert_unchanged(out, state[0], tokens, state[1])


def test_existing_key_label_changes_nothing(definition_on_tokens: Flow, tmp_path: Path) -> None:
    pki, tokens = definition_on_tokens()
    defn = load_definition(pki)
    root_ceremony(defn, tmp_path / "first", rec(), rehearsal=True, interactive=False)
    out = tmp_path / "second"
    state = _state(out, tokens)
    _expect(HsmError, lambda: root_ceremony(defn, out, rec(), rehearsal=True, interactive=False),
            "already exists", "root-2026")
    _assert_unchanged(out, state[0], tokens, state[1])


def test_existing_output_is_never_overwritten(definition_on_tokens: Flow, tmp_path: Path) -> None:
    pki, tokens = definition_on_tokens()
    out = tmp_path / "out"
    out.mkdir()
    (out / "root.crt.der").write_bytes(b"precious")
    state = _state(out, tokens)
    _expect(OutputError, lambda: root_ceremony(load_definition(pki), out, rec(), rehearsal=True,
                                               interactive=False), "root.crt.der", "never overwritten")
    _assert_unchanged(out, state[0], tokens, state[1])
    assert (out / "root.crt.der").read_bytes() == b"precious"


def test_lint_finding_stops_before_the_hsm_unless_allowed_by_name(definition_on_tokens: Flow,
                                                                  tmp_path: Path) -> None:
    def bad_dc(d: dict[str, Any]) -> None:
        d["cas"]["root"]["subject"].insert(0, {"DC": "example"})
    pki, tokens = definition_on_tokens(bad_dc)
    out = tmp_path / "out"
    state = _state(out, tokens)
    _expect(LintError, lambda: root_ceremony(load_definition(pki), out, rec(), rehearsal=True, interactive=False),
            "pkix.name_domain_components_invalid_domain_name", "lint:")
    _assert_unchanged(out, state[0], tokens, state[1])

    def allowed(d: dict[str, Any]) -> None:
        bad_dc(d)
        d["cas"]["root"]["lint"] = [{"validation": "pkix.name_domain_components_invalid_domain_name",
                                     "reason": "test: a single-label DC is accepted on purpose here"}]
    pki2, _ = definition_on_tokens(allowed, name="allowed.yml")
    root_ceremony(load_definition(pki2), tmp_path / "allowed", rec(), rehearsal=True, interactive=False)
    assert (tmp_path / "allowed" / "root.crt.pem").exists()


@pytest.fixture
def root_ready(definition_on_tokens: Flow, tmp_path: Path) -> tuple[Path, dict[str, TestToken], Path]:
    pki, tokens = definition_on_tokens()
    out = tmp_path / "out"
    root_ceremony(load_definition(pki), out, rec(), rehearsal=True, interactive=False)
    return pki, tokens, out


def _software_csr(key: Any, pki: Path) -> bytes:
    from ceremony.x509.profiles import subject_name
    ca = load_definition(pki).model.cas["qualified"]
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject_name(ca.subject, True)).sign(
        key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def test_csr_with_bad_signature_is_refused(root_ready: tuple[Path, dict[str, TestToken], Path],
                                           tmp_path: Path) -> None:
    pki, tokens, out = root_ready
    good = x509.load_pem_x509_csr(_software_csr(ec.generate_private_key(ec.SECP384R1()), pki))
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # flip a bit inside the signature value
    csr = tmp_path / "tampered.csr"
    csr.write_bytes(bytes(der))
    state = _state(out, tokens)
    _expect(RequestError, lambda: sign_subordinate_ceremony(load_definition(pki), "qualified", csr, out, rec(),
                                                            rehearsal=True, interactive=False),
            "does not verify", "proof of possession")
    _assert_unchanged(out, state[0], tokens, state[1])


@pytest.mark.parametrize("weak", ["P-256", "RSA-3072"])
def test_csr_with_weaker_key_is_refused(root_ready: tuple[Path, dict[str, TestToken], Path], tmp_path: Path,
                                        weak: str) -> None:
    pki, tokens, out = root_ready
    key = ec.generate_private_key(ec.SECP256R1()) if weak == "P-256" else rsa.generate_private_key(65537, 3072)
    csr = tmp_path / "weak.csr"
    csr.write_bytes(_software_csr(key, pki))
    state = _state(out, tokens)
    _expect(RequestError, lambda: sign_subordinate_ceremony(load_definition(pki), "qualified", csr, out, rec(),
                                                            rehearsal=True, interactive=False),
            "cas.qualified.key", "ECDSA P-384")
    _assert_unchanged(out, state[0], tokens, state[1])


def test_csr_key_must_match_the_pinned_spki(definition_on_tokens: Flow, tmp_path: Path) -> None:
    def pin(d: dict[str, Any]) -> None:
        d["cas"]["qualified"]["spki_sha256"] = "0" * 64
    pki, tokens = definition_on_tokens(pin)
    out = tmp_path / "out"
    defn = load_definition(pki)
    root_ceremony(defn, out, rec(), rehearsal=True, interactive=False)
    subordinate_key_ceremony(defn, "qualified", out, rec(), rehearsal=True, interactive=False)
    state = _state(out, tokens)
    _expect(RequestError, lambda: sign_subordinate_ceremony(defn, "qualified", out / "qualified.csr.pem", out, rec(),
                                                            rehearsal=True, interactive=False),
            "spki_sha256 pins")
    _assert_unchanged(out, state[0], tokens, state[1])


def test_requested_extensions_are_ignored(root_ready: tuple[Path, dict[str, TestToken], Path],
                                          tmp_path: Path) -> None:
    pki, _, out = root_ready
    from ceremony.x509.profiles import subject_name
    ca = load_definition(pki).model.cas["qualified"]
    key = ec.generate_private_key(ec.SECP384R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(subject_name(ca.subject, True))
           .add_extension(x509.BasicConstraints(ca=True, path_length=5), critical=True)
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("evil.example")]), critical=False)
           .sign(key, hashes.SHA384()))
    path = tmp_path / "ext.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    seal_key = ec.generate_private_key(ec.SECP384R1())  # the sealing key's CSR, beside it, may ask for anything too
    seal_csr = (x509.CertificateSigningRequestBuilder().subject_name(subject_name(ca.subject, True))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(seal_key, hashes.SHA384()))
    (tmp_path / "qualified.seal.csr.pem").write_bytes(seal_csr.public_bytes(serialization.Encoding.PEM))
    sign_subordinate_ceremony(load_definition(pki), "qualified", path, out, rec(), rehearsal=True,
                              interactive=False)
    cert = x509.load_pem_x509_certificate((out / "qualified.crt.pem").read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    sealing = x509.load_pem_x509_certificate((out / "qualified.seal.crt.pem").read_bytes())
    assert not sealing.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert sealing.public_key() == seal_key.public_key()


def test_offline_check_refuses_outside_rehearsal() -> None:
    """The judgement on given flags (the kernel itself is read in tests/test_offline.py)."""
    from ceremony.ceremonies.offline import IFF_LOOPBACK, IFF_RUNNING, IFF_UP, assess
    flags = {"lo": IFF_UP | IFF_LOOPBACK | IFF_RUNNING, "eth0": IFF_UP | IFF_RUNNING | 0x1002, "wlan0": 0x1002}
    result = assess(flags, enforce=True)
    assert result.up == ["eth0"] and result.interfaces["wlan0"] == "down" and result.interfaces["lo"] == "loopback up"
    assert not result.offline and "ip link set eth0 down" in str(result.refusal())
    assert result.as_dict()["method"] and result.as_dict()["non_loopback_up"] == ["eth0"]
    assert assess({**flags, "eth0": 0x1002}, enforce=True).offline


def test_key_to_be_backed_up_is_extractable_only_under_a_trusted_key(definition_on_tokens: Flow,
                                                                     tmp_path: Path) -> None:
    """The testing root has a wrapped backup policy: CKA_WRAP_WITH_TRUSTED, still sensitive and sign-only."""
    pki, tokens = definition_on_tokens()
    recorder = rec()
    root_ceremony(load_definition(pki), tmp_path / "out", recorder, rehearsal=True, interactive=False)
    key, sealing = [data for name, data in recorder.evidence_log if name == "key"]
    assert key["wrap_with_trusted"] and key["extractable"] and key["sensitive"] and not key["never_extractable"]
    # The sealing key beside it is never extractable: it is not backed up, a restored CA gets a new one.
    assert sealing["purpose"] == "transcript-sealing" and sealing["never_extractable"] and not sealing["extractable"]
    from test_hsm import pkcs11_tool_objects
    listing = pkcs11_tool_objects(tokens["root"])
    private = [block.split("Public Key Object")[0] for block in listing.split("Private Key Object")[1:]]
    root_block = next(b for b in private if "label:      root-2026\n" in b)
    seal_block = next(b for b in private if "label:      root-2026-seal\n" in b)
    assert "Usage:      sign\n" in root_block
    assert "Access:     sensitive, always sensitive, extractable, local" in root_block
    assert "Usage:      sign\n" in seal_block and "never extractable" in seal_block
