"""Root rollover with cross-certificates (issue 18, part 3) on real SoftHSM tokens, checked by openssl and GnuTLS.

One module-scoped setup builds the hierarchy once (root, qualified subordinate, one end-entity certificate), then
the successor root on the root's own token under new labels (its key ceremony, sealed and recorded), then both
cross-certificates through the operator's commands (``invoke ceremony.cross-certify [--reverse]``). Copies of the
output directory taken between the stages serve the refusals, each of which leaves disk and tokens unchanged.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, SOFTHSM_CONF, TestToken, base_definition_data, softhsm_token, tree, write_definition
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ceremony.ca.registry import Registry
from ceremony.ceremonies.destroy_key import destroy_key_ceremony, key_certificates
from ceremony.ceremonies.issuance import issue_certificate
from ceremony.ceremonies.preflight import run_preflight
from ceremony.ceremonies.rollover import cross_certification_ceremony, cross_plan, new_root_ceremony
from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
from ceremony.common.display import make_console
from ceremony.common.errors import DefinitionError, HsmError, LintError, RequestError
from ceremony.definition.model import Hsm, TokenRef, load_definition
from ceremony.hsm.keys import spki_sha256
from ceremony.hsm.session import open_session, pin_source_for
from ceremony.transcript import chain as transcript
from ceremony.transcript.anchor import load_anchor
from ceremony.transcript.audit import verify
from ceremony.transcript.recorder import ConsoleRecorder
from ceremony.x509.certificates import cross_builder
from ceremony.x509.lint import lint_certificate

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("rollover")]
INVOKE = str(REPO / ".venv" / "bin" / "invoke")
FORWARD, REVERSE = "root.g2.by-g1", "root.g1.by-g2"


@dataclass
class Roll:
    data: dict[str, Any]
    definition: Path
    hierarchy: Path  # root, qualified, one end-entity certificate
    new_root: Path  # + the successor root
    full: Path  # + both cross-certificates
    ee: Path
    tokens: dict[str, TestToken]
    new_root_transcript: Path
    root_labels: set[str]  # on the root's token after the rollover (a later test destroys the old root's key)


def quiet() -> Any:
    return make_console(file=open(os.devnull, "w"))


def console() -> ConsoleRecorder:
    return ConsoleRecorder(rehearsal=True, console=quiet())



def successor(root_hsm: dict[str, Any]) -> dict[str, Any]:
    """The successor root on the old root's token, under labels of its own; the reverse cross-certificate asked."""
    return {
        "generation": 2,
        "subject": [{"C": "ML"}, {"O": "Service de Certification et de Signature Electronique"},
                    {"CN": "SCSE Test Root CA 2026 G2"}],
        "key": {"algorithm": "ecdsa", "curve": "P-384"},
        "validity": {"not_before": dt.datetime(2026, 6, 1, tzinfo=dt.UTC),
                     "not_after": dt.datetime(2046, 6, 1, tzinfo=dt.UTC)},
        "publication": {"crl_url": "http://pki.test.scse.ml/crl/root-g2.crl",
                        "certificate_url": "http://pki.test.scse.ml/certs/root-g2.cer"},
        "hsm": {**root_hsm, "key_label": "root-2026-g2"},
        "cross_certificate": {"reverse": True},
    }


def recorded(defn: Any, script: str, out: Path) -> Any:
    return transcript.open_transcript(out / "transcripts", script, defn, rehearsal=True, console=quiet())


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CEREMONY_")}
    return subprocess.run([INVOKE, *args], cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**clean, "SOFTHSM2_CONF": str(SOFTHSM_CONF)}, timeout=300)


def snapshot(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def roll(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Roll]:
    tmp = tmp_path_factory.mktemp("rollover")
    data = copy.deepcopy(base_definition_data())
    with pytest.MonkeyPatch.context() as mp:
        tokens = {name: softhsm_token(mp, f"ro-{name}") for name in ("root", "qualified")}
        for name, ca in data["cas"].items():
            tok = tokens[name]
            ca["hsm"].update(module=tok.module, token={"label": tok.label}, pin_env=tok.pin_env,
                             so_pin_env=tok.so_pin_env)
        data["cas"]["root"]["backup"] = {"mode": "none"}
        data["cas"]["qualified"]["backup"] = {"mode": "none"}
        data["cas"]["root"]["successor"] = successor(data["cas"]["root"]["hsm"])
        definition = write_definition(tmp / "pki.yml", data)
        defn = load_definition(definition)
        out = tmp / "out"
        root_ceremony(defn, out, console(), rehearsal=True, interactive=False)
        subordinate_key_ceremony(defn, "qualified", out, console(), rehearsal=True, interactive=False)
        sign_subordinate_ceremony(defn, "qualified", out / "qualified.csr.pem", out, console(), rehearsal=True,
                                  interactive=False)
        key = ec.generate_private_key(ec.SECP256R1())
        csr = tmp / "awa.csr.pem"
        csr.write_bytes(x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, "ML"), x509.NameAttribute(NameOID.GIVEN_NAME, "Awa"),
            x509.NameAttribute(NameOID.SURNAME, "Traoré"), x509.NameAttribute(NameOID.COMMON_NAME, "Awa Traoré"),
        ])).sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        with Registry.open(tmp / "registry.sqlite", create=True) as reg:
            issued = issue_certificate(defn, "qualified", "qes-natural-person", csr, tmp / "ee", reg, console(),
                                       issuer_cert_path=out / "qualified.crt.pem", rehearsal=True, interactive=False)
        hierarchy = snapshot(out, tmp / "hierarchy")
        with recorded(defn, "new-root-key-generation", out) as rec:
            new_root_ceremony(defn, out, rec, rehearsal=True, interactive=False)
        new_root = snapshot(out, tmp / "new-root")
        for extra in ((), ("--reverse",)):
            run = invoke("ceremony.cross-certify", "--definition", str(definition), "--out", str(out),
                         "--rehearsal", *extra)
            assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        labels = {label for label, _ in objects(tokens["root"])}
        yield Roll(data, definition, hierarchy, new_root, out, issued.pem_path, tokens, rec.path, labels)


def objects(tok: TestToken) -> set[tuple[str, str]]:
    hsm = Hsm(module=tok.module, token=TokenRef(label=tok.label), key_label="x", pin_env=tok.pin_env)
    with open_session(hsm, pin_source_for(hsm, interactive=False), rw=False) as session:
        return {(str(o.label), type(o).__name__) for o in session.get_objects()}


def state(roll: Roll, out: Path) -> tuple[set[str], bytes, dict[str, set[tuple[str, str]]]]:
    return tree(out), (out / "manifest.json").read_bytes(), {n: objects(t) for n, t in roll.tokens.items()}


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def exit_of(path: Path, out: Path, anchor: str) -> int:
    return verify(path, out, trust=load_anchor(str(out / anchor), out), rehearsal=True).exit_code


# --- the ceremonies and what they leave --------------------------------------------------------------------------
def test_successor_root_and_both_cross_certificates(roll: Roll) -> None:
    out = roll.full
    old, new = cert(out / "root.crt.pem"), cert(out / "root.g2.crt.pem")
    forward, reverse = cert(out / f"{FORWARD}.crt.pem"), cert(out / f"{REVERSE}.crt.pem")
    assert new.issuer == new.subject != old.subject and new.public_key() != old.public_key()
    ski = x509.SubjectKeyIdentifier
    for cross, subject, issuer in ((forward, new, old), (reverse, old, new)):
        assert cross.subject.public_bytes() == subject.subject.public_bytes() and cross.issuer == issuer.subject
        assert cross.public_key() == subject.public_key()
        assert cross.extensions.get_extension_for_class(ski).value == subject.extensions.get_extension_for_class(
            ski).value
        aki = cross.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        assert aki == issuer.extensions.get_extension_for_class(ski).value.digest
        constraints = cross.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.critical and constraints.value.ca and constraints.value.path_length is None
        policies = cross.extensions.get_extension_for_class(x509.CertificatePolicies).value
        assert [p.policy_identifier.dotted_string for p in policies] == ["2.5.29.32.0"]
        assert not [f for f in lint_certificate(cross.public_bytes(serialization.Encoding.DER)) if f.blocking]
        cross.verify_directly_issued_by(issuer)
    assert forward.not_valid_before_utc == new.not_valid_before_utc
    assert forward.not_valid_after_utc == old.not_valid_after_utc  # the earlier of the two roots' ends
    # the manifest: the kinds issue 18 names, and one transcript per ceremony
    artifacts = json.loads((out / "manifest.json").read_text())["artifacts"]
    kinds = {(a["path"], a["kind"], a.get("subject"), a.get("issuer"), a.get("generation")) for a in artifacts}
    assert {("root.g2.crt.pem", "new-root-certificate", None, None, 2),
            (f"{FORWARD}.crt.pem", "cross-certificate", "new-root", "root", 2),
            (f"{REVERSE}.crt.pem", "cross-certificate", "root", "new-root", 1)} <= kinds
    scripts = [json.loads(p.read_text().splitlines()[0])["script"]["name"]
               for p in (out / "transcripts").glob("*.jsonl")]
    assert scripts.count("new-root-key-generation") == 1 and scripts.count("cross-certification") == 2
    # each transcript verifies against the root whose token sealed it: the old root's for the forward
    # cross-certification, the successor's (the new anchor) for its own key ceremony and the reverse one
    crosses = sorted((out / "transcripts").glob("cross-certification-*.jsonl"))
    assert exit_of(crosses[0], out, "root.crt.pem") == 0
    assert exit_of(crosses[1], out, "root.g2.crt.pem") == 0
    assert exit_of(out / "transcripts" / roll.new_root_transcript.name, out, "root.g2.crt.pem") == 0
    # an auditor who trusts only the old root's fingerprint verifies them too, through the forward cross-certificate
    assert exit_of(crosses[1], out, "root.crt.pem") == 0
    assert exit_of(out / "transcripts" / roll.new_root_transcript.name, out, "root.crt.pem") == 0
    # the old root's key destruction names the old root's key, never its successor's (a later generation of the root)
    digest, certificates = key_certificates(out, "root")
    assert digest == spki_sha256(old.public_key()) and [p.name for p, _ in certificates] == ["root.crt.pem"]
    # the successor's keys sit on the old root's token beside the old root's, under their own labels
    assert {"root-2026", "root-2026-seal", "root-2026-g2", "root-2026-g2-seal"} <= roll.root_labels


def test_without_the_forward_cross_certificate_the_old_root_anchors_nothing_of_the_successor(roll: Roll,
                                                                                           tmp_path: Path) -> None:
    """The old root's fingerprint reaches the successor's sealing keys only through the cross-certificate it signed:
    without it (or with the reverse one alone) the successor's key ceremony is not anchored (exit 4)."""
    out = tmp_path / "out"
    shutil.copytree(roll.full, out)
    for suffix in (".crt.pem", ".crt.der"):
        (out / f"{FORWARD}{suffix}").unlink(missing_ok=True)
    assert exit_of(out / "transcripts" / roll.new_root_transcript.name, out, "root.g2.crt.pem") == 0
    assert exit_of(out / "transcripts" / roll.new_root_transcript.name, out, "root.crt.pem") == 4


def chain_file(path: Path, *certs: Path) -> Path:
    path.write_bytes(b"".join(c.read_bytes() for c in certs))
    return path


def certtool_chain(chain: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["certtool", "--verify-chain", "--infile", str(chain)], capture_output=True, text=True)


def openssl(anchor: Path, untrusted: list[Path], leaf: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    args = ["openssl", "verify", "-x509_strict", "-purpose", "any", "-CAfile", str(anchor)]
    if untrusted:
        args += ["-untrusted", str(chain_file(tmp / f"untrusted-{len(untrusted)}-{leaf.stem}.pem", *untrusted))]
    return subprocess.run([*args, str(leaf)], capture_output=True, text=True)


def test_chains_from_both_roots_verify_with_openssl_and_gnutls(roll: Roll, tmp_path: Path) -> None:
    out = roll.full
    old, new = out / "root.crt.pem", out / "root.g2.crt.pem"
    forward, reverse, sub = out / f"{FORWARD}.crt.pem", out / f"{REVERSE}.crt.pem", out / "qualified.crt.pem"
    # issued under the old root: from the old root directly, from the new root through the reverse cross-certificate
    for leaf, between in ((sub, []), (roll.ee, [sub])):
        by_old = openssl(old, between, leaf, tmp_path)
        by_new = openssl(new, [*between, reverse], leaf, tmp_path)
        assert by_old.returncode == 0 and by_new.returncode == 0, by_old.stderr + by_new.stderr
        assert certtool_chain(chain_file(tmp_path / f"{leaf.stem}-old.pem", leaf, *between, old)).returncode == 0
        gnutls = certtool_chain(chain_file(tmp_path / f"{leaf.stem}-new.pem", leaf, *between, reverse, new))
        assert gnutls.returncode == 0 and "Chain verification output: Verified" in gnutls.stdout, gnutls.stdout
    # without the cross-certificate the new root vouches for nothing the old root issued
    assert openssl(new, [], sub, tmp_path).returncode != 0
    assert certtool_chain(chain_file(tmp_path / "no-cross.pem", sub, new)).returncode != 0
    assert certtool_chain(chain_file(tmp_path / "wrong-cross.pem", sub, forward, new)).returncode != 0
    # issued under the new root (its sealing certificate): from the old root through the forward cross-certificate
    seal = out / "root.g2.seal.crt.pem"
    assert openssl(new, [], seal, tmp_path).returncode == 0
    assert openssl(old, [forward], seal, tmp_path).returncode == 0
    assert certtool_chain(chain_file(tmp_path / "seal-old.pem", seal, forward, old)).returncode == 0
    assert openssl(old, [], seal, tmp_path).returncode != 0


def test_successor_on_a_token_of_its_own(roll: Roll, tmp_path: Path) -> None:
    """The definition may put the successor on another token instead: that token must be empty, as the first
    root's (the pre-flight says so), and the successor's keys go there alone."""
    data = copy.deepcopy(roll.data)
    with pytest.MonkeyPatch.context() as mp:
        own = softhsm_token(mp, "ro-g2")
        data["cas"]["root"]["successor"]["hsm"].update(token={"label": own.label}, pin_env=own.pin_env,
                                                       so_pin_env=own.so_pin_env)
        defn = load_definition(write_definition(tmp_path / "own-token.yml", data))
        out = snapshot(roll.hierarchy, tmp_path / "out")
        root_objects = objects(roll.tokens["root"])
        report = run_preflight(defn, "new-root-key-generation", out, rehearsal=True, interactive=False)
        assert report.ok, list(report.lines())
        assert any(f.check == "token of 'root.g2' empty" and f.ok for f in report.findings)
        run = invoke("ceremony.new-root", "--definition", str(defn.path), "--out", str(out), "--rehearsal")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "invoke ceremony.cross-certify" in " ".join(run.stdout.split())  # the summary's next step
        assert {p.name for p in out.glob("root.g2.*")} == {f"root.g2.{s}" for s in (
            "crt.der", "crt.pem", "pub.der", "pub.pem", "seal.crt.der", "seal.crt.pem")}
        assert {label for label, _ in objects(own)} == {"root-2026-g2", "root-2026-g2-seal"}
        assert objects(roll.tokens["root"]) == root_objects
        # a token of its own that is not empty (the subordinate's) is refused by the pre-flight
        data["cas"]["root"]["successor"]["hsm"].update(token={"label": roll.tokens["qualified"].label},
                                                       pin_env=roll.tokens["qualified"].pin_env)
        busy = load_definition(write_definition(tmp_path / "busy-token.yml", data))
        report = run_preflight(busy, "new-root-key-generation", snapshot(roll.hierarchy, tmp_path / "busy"),
                               rehearsal=True, interactive=False)
        assert [f.check for f in report.problems] == ["token of 'root.g2' empty"]


# --- bad input: one message, disk and tokens unchanged ------------------------------------------------------------
def test_rekeying_the_root_onto_a_label_that_exists_is_refused(roll: Roll, tmp_path: Path) -> None:
    out = snapshot(roll.hierarchy, tmp_path / "out")  # before the rollover, but the token holds the successor's key
    before = state(roll, out)
    refused = invoke("ceremony.new-root", "--definition", str(roll.definition), "--out", str(out), "--rehearsal")
    assert refused.returncode != 0 and "Sign-in" not in refused.stdout
    assert "objects labelled 'root-2026-g2' exist on the token already" in refused.stdout + refused.stderr
    with pytest.raises(HsmError, match=r"cas\.root\.successor\.hsm\.key_label: an object labelled 'root-2026-g2' "
                                       "already exists on token label"):
        new_root_ceremony(load_definition(roll.definition), out, console(), rehearsal=True, interactive=False)
    assert state(roll, out) == before
    # a successor the definition puts under a label of the root on the same token: refused by the definition check
    data = copy.deepcopy(roll.data)
    data["cas"]["root"]["successor"]["hsm"]["key_label"] = "root-2026-seal"
    with pytest.raises(DefinitionError, match=r"cas\.root\.successor\.hsm\.key_label.*'root-2026-seal' is a label "
                                              "of cas.root on the same token"):
        load_definition(write_definition(tmp_path / "taken.yml", data))


def test_cross_certificate_whose_subject_key_is_not_the_new_roots_is_refused(roll: Roll, tmp_path: Path) -> None:
    out = snapshot(roll.new_root, tmp_path / "out")
    before = state(roll, out)
    good = (out / "root.g2.crt.pem").read_bytes()
    defn = load_definition(roll.definition)
    # a certificate of the successor's name, self-signed by another key, in place of the successor's
    impostor = ec.generate_private_key(ec.SECP384R1())
    real = cert(out / "root.g2.crt.pem")
    fake = (x509.CertificateBuilder().subject_name(real.subject).issuer_name(real.subject)
            .public_key(impostor.public_key()).serial_number(7).not_valid_before(real.not_valid_before_utc)
            .not_valid_after(real.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(impostor.public_key()), critical=False)
            .sign(impostor, hashes.SHA384()))
    (out / "root.g2.crt.pem").write_bytes(fake.public_bytes(serialization.Encoding.PEM))
    refused = invoke("ceremony.cross-certify", "--definition", str(roll.definition), "--out", str(out), "--rehearsal")
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode != 0 and len(errors) == 1, refused.stderr
    assert "the cross-certificate's subject key does not match the new root" in errors[0]
    assert "Sign-in" not in refused.stdout
    with pytest.raises(RequestError, match="subject key does not match the new root"):
        cross_certification_ceremony(defn, out, console(), rehearsal=True, interactive=False)
    (out / "root.g2.crt.pem").write_bytes(good)
    assert state(roll, out) == before
    # the key ceremony's public key replaced by another key: the same refusal
    (out / "root.g2.pub.pem").write_bytes(impostor.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(RequestError, match="subject key does not match the new root"):
        cross_certification_ceremony(defn, out, console(), rehearsal=True, interactive=False)
    assert not list(out.glob("*.by-*"))


def test_reverse_only_when_the_definition_asks(roll: Roll, tmp_path: Path) -> None:
    data = copy.deepcopy(roll.data)
    data["cas"]["root"]["successor"]["cross_certificate"] = {"reverse": False}
    defn = load_definition(write_definition(tmp_path / "no-reverse.yml", data))
    with pytest.raises(DefinitionError, match=r"successor\.cross_certificate\.reverse: false"):
        cross_plan(defn, roll.new_root, reverse=True)
    assert cross_plan(defn, roll.new_root, reverse=False).stem == FORWARD
    # a successor with the old root's subject, or starting with it, is refused when the definition is loaded
    same = copy.deepcopy(roll.data)
    same["cas"]["root"]["successor"]["subject"] = same["cas"]["root"]["subject"]
    with pytest.raises(DefinitionError, match=r"successor\.subject: the same subject"):
        load_definition(write_definition(tmp_path / "same.yml", same))
    early = copy.deepcopy(roll.data)
    early["cas"]["root"]["successor"]["validity"]["not_before"] = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(DefinitionError, match=r"successor\.validity\.not_before"):
        load_definition(write_definition(tmp_path / "early.yml", early))


def test_cross_certificate_profile_with_the_definitions_constraints(roll: Roll, tmp_path: Path) -> None:
    """Path length, policies and name constraints as the definition gives them, pkilint clean (no HSM: the
    profile is a pure function of the two roots' certificates and the definition)."""
    data = copy.deepcopy(roll.data)
    data["cas"]["root"]["successor"]["cross_certificate"].update(
        path_length=1, policy_oids=["2.16.466.1.99.1.1.1"],
        name_constraints={"permitted_dns": ["gouv.ml"], "permitted_email": ["gouv.ml"]})
    defn = load_definition(write_definition(tmp_path / "constrained.yml", data))
    cross = defn.model.cas["root"].successor.cross_certificate
    old, new = cert(roll.new_root / "root.crt.pem"), cert(roll.new_root / "root.g2.crt.pem")
    signer = ec.generate_private_key(ec.SECP384R1())
    built = cross_builder(defn.model.cas["root"], old, new, 5, new.not_valid_before_utc, old.not_valid_after_utc,
                          cross.path_length, cross.policy_oids, cross.name_constraints).sign(signer, hashes.SHA384())
    assert built.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    policies = built.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier.dotted_string for p in policies] == ["2.16.466.1.99.1.1.1"]
    constraints = built.extensions.get_extension_for_class(x509.NameConstraints)
    permitted = [n.value for n in constraints.value.permitted_subtrees or []]
    assert constraints.critical and permitted == ["gouv.ml", "gouv.ml"]
    assert not [f for f in lint_certificate(built.public_bytes(serialization.Encoding.DER)) if f.blocking]
    # constraints pkilint refuses (a bare top-level label) stop the ceremony at the profile lint, before the HSM
    data["cas"]["root"]["successor"]["cross_certificate"]["name_constraints"] = {"permitted_dns": ["ml"]}
    bad = load_definition(write_definition(tmp_path / "bad-constraints.yml", data))
    out = snapshot(roll.new_root, tmp_path / "out")
    before = state(roll, out)
    with pytest.raises(LintError, match=r"pkix\.invalid_domain_name_syntax"):
        cross_certification_ceremony(bad, out, console(), rehearsal=True, interactive=False)
    assert state(roll, out) == before


def test_retiring_the_old_root_leaves_the_successor_on_the_shared_token(roll: Roll, tmp_path: Path) -> None:
    """This destroys the old root's key on the module's root token (the other tests compare the tokens before and
    after themselves, or read the fixture's listing, so the order does not matter): the old root's key
    destruction, decided in the definition, removes the old root's key pair only; the successor's key pairs and the
    old root's sealing key (which seals this ceremony) stay, as pkcs11-tool lists them."""
    out = snapshot(roll.full, tmp_path / "out")
    old = cert(out / "root.crt.pem")
    data = copy.deepcopy(roll.data)
    data["cas"]["root"]["destruction"] = {"decision": "Décision n°9 du Comité (rehearsal)",
                                          "date": dt.date(2026, 12, 1), "spki_sha256": spki_sha256(old.public_key())}
    defn = load_definition(write_definition(tmp_path / "retire.yml", data))
    result = destroy_key_ceremony(defn, "root", out, console(), rehearsal=True, interactive=False)
    assert result.spki_sha256 == spki_sha256(old.public_key())
    labels = {label for label, _ in objects(roll.tokens["root"])}
    assert "root-2026" not in labels and {"root-2026-seal", "root-2026-g2", "root-2026-g2-seal"} <= labels
    tok = roll.tokens["root"]
    listing = subprocess.run(["pkcs11-tool", "--module", tok.module, "--token-label", tok.label, "--login", "--pin",
                              tok.user_pin, "--list-objects"], capture_output=True, text=True, check=True,
                             env={"SOFTHSM2_CONF": str(tok.conf)}).stdout
    seen = {line.split(":", 1)[1].strip() for line in listing.splitlines() if line.strip().startswith("label:")}
    assert "root-2026" not in seen and {"root-2026-seal", "root-2026-g2", "root-2026-g2-seal"} <= seen
