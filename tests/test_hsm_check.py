"""The HSM acceptance check on a real SoftHSM token, and the same probe refusing a ceremony up front.

``invoke hsm.check`` is run as an operator or a buyer runs it: table on the terminal, JSON and HTML reports, every
throwaway object gone afterwards (also after an interruption). The pre-flight runs the passive half of the probe
(mechanism lists only, no object): a module without a mechanism the definition needs is refused before anyone
signs in, and the root key ceremony is refused on a token that is not empty. Nothing here depends on SoftHSM:
a second PKCS#11 implementation is probed through the same code.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from ceremony.ceremonies.preflight import PreflightError, run_preflight
from ceremony.definition.model import load_definition
from ceremony.hsm import check as hsm_check
from ceremony.hsm.session import find_token, load_module, open_session, pin_source_for

pytestmark = pytest.mark.hsm

INVOKE = str(REPO / ".venv" / "bin" / "invoke")


def _objects(defn_path: Path, ca: str = "root") -> list[str]:
    hsm = load_definition(defn_path).model.cas[ca].hsm
    with open_session(hsm, pin_source_for(hsm, interactive=False)) as session:
        return [str(o[Attribute.LABEL]) for o in session.get_objects()]


def test_check_prints_the_table_and_writes_the_reports(definition_on_tokens: Any, tmp_path: Path) -> None:
    defn, tokens = definition_on_tokens()
    report, page = tmp_path / "check.json", tmp_path / "check.html"
    proc = subprocess.run([INVOKE, "hsm.check", "--definition", str(defn), "--ca", "root", "--json", str(report),
                           "--html", str(page)], cwd=REPO, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=dict(os.environ, COLUMNS="200"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for text in ("HSM check of 'root'", f"token '{tokens['root'].label}'", "RFC 5649: 40 bytes",
                 "HSM check passed", "clock: none (CKF_CLOCK_ON_TOKEN not set)"):
        assert text in proc.stdout, text
    data = json.loads(report.read_text())
    assert data["kind"] == "hsm-check" and data["ok"] is True and data["mode"].startswith("active")
    token, = data["tokens"]
    assert token["ca"] == "root" and token["token"]["label"] == tokens["root"].label
    assert token["token"]["model"] == "SoftHSM v2" and token["token"]["serial"] and token["token"]["firmware_version"]
    assert "CKF_RNG" in token["token"]["flags"] and "CKM_ECDSA" in token["mechanisms"]
    probes = {p["id"]: p for p in token["probes"]}
    for probe in probes.values():
        assert set(probe) == {"id", "what", "result", "required", "detail", "if_failed", "needed_by"}
        assert probe["result"] in ("pass", "fail", "info") and probe["what"] and probe["detail"]
    assert {pid: p["result"] for pid, p in probes.items()} == {  # every probe the definition calls for, in order
        "mechanism.keygen.ecdsa-p384": "pass", "mechanism.sign.ecdsa-p384": "pass", "token.random": "pass",
        "mechanism.wrap.aes-key-wrap-pad": "pass", "mechanism.unwrap.aes-key-wrap-pad": "pass",
        "object.random": "pass", "object.keygen.ecdsa-p384": "pass", "object.sign.ecdsa-p384": "pass",
        "object.sign-alternative.ecdsa-p384": "info",  # SoftHSM 2.6: no CKM_ECDSA_SHA384
        "object.non-extractable.ecdsa-p384": "pass", "object.backup-keygen.ecdsa-p384": "pass",
        "object.wrap-with-trusted": "pass", "object.wrap.rfc5649": "pass", "object.cleanup": "pass"}
    assert probes["object.non-extractable.ecdsa-p384"]["detail"] == "the token refused (KeyUnextractable)"
    assert "key-backup" in probes["object.wrap.rfc5649"]["needed_by"]
    assert "CKA_NEVER_EXTRACTABLE True" in probes["object.keygen.ecdsa-p384"]["detail"]
    assert "CKA_WRAP_WITH_TRUSTED True" in probes["object.backup-keygen.ecdsa-p384"]["detail"]
    assert page.read_text().startswith("<!DOCTYPE html>") and "object.wrap.rfc5649" in page.read_text()
    assert _objects(defn) == []  # every throwaway object removed
    again = subprocess.run([INVOKE, "hsm.check", "--definition", str(defn), "--ca", "root", "--json", str(report)],
                           cwd=REPO, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert again.returncode == 4 and "never overwritten" in again.stderr and "Traceback" not in again.stderr


def test_check_on_softokn_says_what_it_cannot_do_for_the_ceremonies(definition_on_tokens: Any, tmp_path: Path) -> None:
    """The same check on NSS softokn (its configuration string from hsm.module_config), the root asking for a wrapped
    backup: the table and the reports come out, every probe listed with its result, and the failures are softokn's
    real limits with what they mean: a never-extractable key wraps out (the host holds it in the clear), no
    CKA_WRAP_WITH_TRUSTED (and the probe that needs that key says it did not run), its CKM_AES_KEY_WRAP_PAD is not
    RFC 5649. The passive probe, which creates nothing, knows the first from the token's identity."""
    def wrapped_root(data: dict[str, Any]) -> None:
        data["cas"]["root"]["backup"] = {"mode": "wrapped", "threshold": 2, "custodians": ["A B", "C D", "E F"]}

    defn_path, tokens = definition_on_tokens(wrapped_root, hsm="nss")
    report, page = tmp_path / "check.json", tmp_path / "check.html"
    proc = subprocess.run([INVOKE, "hsm.check", "--definition", str(defn_path), "--ca", "root", "--json", str(report),
                           "--html", str(page)], cwd=REPO, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=dict(os.environ, COLUMNS="200"))
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "NSS Internal Crypto Services" in proc.stdout and "model 'NSS 3'" in proc.stdout
    assert "weak-key checks (every generated key, every CSR key): badkeys" in proc.stdout
    data = json.loads(report.read_text())
    assert data["ok"] is False and data["mode"].startswith("active")
    token, = data["tokens"]
    assert token["token"]["label"] == tokens["root"].label and token["module"]["library_manufacturer"] == \
        "Mozilla Foundation"
    results = {p["id"]: p["result"] for p in token["probes"]}
    assert results == {
        "mechanism.keygen.ecdsa-p384": "pass", "mechanism.sign.ecdsa-p384": "pass", "token.random": "pass",
        "mechanism.wrap.aes-key-wrap-pad": "pass", "mechanism.unwrap.aes-key-wrap-pad": "pass",
        "object.random": "pass", "object.keygen.ecdsa-p384": "pass", "object.sign.ecdsa-p384": "pass",
        "object.sign-alternative.ecdsa-p384": "pass",  # softokn has CKM_ECDSA_SHA384 (SoftHSM 2.6 has not)
        "object.non-extractable.ecdsa-p384": "fail", "object.backup-keygen.ecdsa-p384": "fail",
        "object.wrap-with-trusted": "fail", "object.wrap.rfc5649": "fail", "object.cleanup": "pass"}
    probes = {p["id"]: p for p in token["probes"]}
    assert "CKA_NEVER_EXTRACTABLE True" in probes["object.keygen.ecdsa-p384"]["detail"]
    assert "CKA_LOCAL False" in probes["object.keygen.ecdsa-p384"]["detail"]
    assert "the host unwrapped" in probes["object.non-extractable.ecdsa-p384"]["detail"]
    assert "private key in the clear (its public key is the token's)" in \
        probes["object.non-extractable.ecdsa-p384"]["detail"]
    assert "a production ceremony is refused" in probes["object.non-extractable.ecdsa-p384"]["if_failed"]
    assert "does not enforce CKA_WRAP_WITH_TRUSTED" in probes["object.backup-keygen.ecdsa-p384"]["detail"]
    assert probes["object.wrap-with-trusted"]["detail"].startswith(
        "not probed: it needs the key pair that object.backup-keygen.ecdsa-p384 could not generate")
    assert "PKCS#7 padding + RFC 3394" in probes["object.wrap.rfc5649"]["detail"]
    assert "cannot be restored on an RFC 5649 module" in probes["object.wrap.rfc5649"]["if_failed"]
    failed = sorted(p for p, r in results.items() if r == "fail")
    assert "HSM check failed: " in proc.stderr and all(f"root: {p}" in proc.stderr for p in failed)
    assert "object.non-extractable.ecdsa-p384" in page.read_text()
    assert _objects(defn_path) == []  # every throwaway object removed from the database
    passive = hsm_check.run_check(load_definition(defn_path), "root", interactive=False, active=False)
    limits = [p for p in passive.tokens[0].probes if p.failed]
    assert [p.id for p in limits] == [hsm_check.CONFINEMENT_ID, hsm_check.TRUSTED_WRAP_ID]
    assert "CKA_EXTRACTABLE false" in limits[0].detail and "CKA_WRAP_WITH_TRUSTED" in limits[1].detail
    assert _objects(defn_path) == []


def test_a_production_ceremony_on_softokn_is_refused_up_front(definition_on_tokens: Any, tmp_path: Path) -> None:
    """Softokn lists every mechanism the root key ceremony needs, but lets a never-extractable key out: the pre-flight
    refuses the production ceremony on it, from the token's identity and before anyone signs in; a rehearsal gets a
    note. A root asking for a wrapped backup is refused even in a rehearsal (softokn cannot protect that key). Nothing
    is created on the token or on disk."""
    defn = load_definition(definition_on_tokens(hsm="nss")[0])
    report = run_preflight(defn, "root-key-generation", tmp_path / "out", rehearsal=False, interactive=False)
    capabilities = [f for f in report.findings if f.check == "HSM capabilities of 'root'"]
    assert [f.ok for f in capabilities] == [True], capabilities
    refused, = [f for f in report.problems if f.check.startswith("HSM of 'root': the CA key stays in the token")]
    assert "NSS softokn wraps a private key marked CKA_SENSITIVE and CKA_EXTRACTABLE false" in refused.detail
    assert "root-key-generation cannot run on it in production" in refused.detail
    assert "invoke hsm.check --env testing --ca root must pass" in refused.fix
    with pytest.raises(PreflightError, match="the CA key stays in the token"):
        report.raise_if_failed()
    rehearsal = run_preflight(defn, "root-key-generation", tmp_path / "out", rehearsal=True, interactive=False)
    note, = [f for f in rehearsal.findings if f.check.startswith("HSM of 'root'")]
    assert note.ok and note.warning and "a rehearsal's keys are throwaway" in note.detail
    assert not [f for f in rehearsal.problems if f.check.startswith("HSM")], rehearsal.problems
    assert _objects(defn.path) == [] and not (tmp_path / "out").exists()

    def wrapped_root(data: dict[str, Any]) -> None:
        data["cas"]["root"]["backup"] = {"mode": "wrapped", "threshold": 2, "custodians": ["A B", "C D", "E F"]}

    wrapped = load_definition(definition_on_tokens(wrapped_root, name="wrapped.yml", hsm="nss")[0])
    report = run_preflight(wrapped, "root-key-generation", tmp_path / "out", rehearsal=True, interactive=False)
    refused, = [f for f in report.problems if f.check.startswith("HSM of 'root'")]
    assert "does not enforce CKA_WRAP_WITH_TRUSTED" in refused.detail
    assert "cas.root.backup.mode wrapped cannot be honoured: set it to none" in refused.detail
    assert "cas.root.backup" in refused.fix
    assert _objects(wrapped.path) == [] and not (tmp_path / "out").exists()


def test_throwaway_objects_are_removed_on_interruption_and_by_the_next_check(
        definition_on_tokens: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    defn_path, _ = definition_on_tokens()
    defn = load_definition(defn_path)

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(hsm_check, "rfc5649_probe", interrupted)  # Ctrl-C after the key pairs were generated
        with pytest.raises(KeyboardInterrupt):
            hsm_check.run_check(defn, "root", interactive=False)
    assert _objects(defn_path) == []
    hsm = defn.model.cas["root"].hsm  # a check killed outright leaves a labelled object: the next one removes it
    with open_session(hsm, pin_source_for(hsm, interactive=False)) as session:
        session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True, Attribute.PRIVATE: True,
                               Attribute.LABEL: hsm_check.THROWAWAY_LABEL + "-killed", Attribute.VALUE: b"x"})
    report = hsm_check.run_check(defn, "root", interactive=False)
    probes = {p.id: p for p in report.tokens[0].probes}
    assert probes["object.leftovers"].status == "pass" and "-killed" in probes["object.leftovers"].detail
    assert report.ok and _objects(defn_path) == []


def test_raw_token_info_reads_the_same_token(definition_on_tokens: Any) -> None:
    defn_path, tokens = definition_on_tokens()
    hsm = load_definition(defn_path).model.cas["root"].hsm
    token = find_token(load_module(hsm.module), hsm.token)
    info = hsm_check.raw_token_info(hsm.module, token.slot.slot_id)
    assert info is not None and info["label"] == tokens["root"].label and info["pin_length"][0] >= 4


def test_a_ceremony_needing_a_mechanism_the_module_lacks_is_refused_up_front(
        definition_on_tokens: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The definition asks for an RSA 4096 root key; the module (SoftHSM, its mechanism list cut down in this
    process to what an EC-only token lists) cannot generate RSA keys: the root key ceremony is refused by the
    pre-flight, before anyone signs in, and the token is unchanged. The same module passes for an ECDSA root."""
    def rsa_root(data: dict[str, Any]) -> None:
        data["cas"]["root"]["key"] = {"algorithm": "rsa", "bits": 4096}

    defn_path, _ = definition_on_tokens(rsa_root)
    defn = load_definition(defn_path)
    real = hsm_check.mechanism_list
    monkeypatch.setattr(hsm_check, "mechanism_list", lambda slot: real(slot) - {
        Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS, Mechanism.SHA256_RSA_PKCS})
    report = run_preflight(defn, "root-key-generation", tmp_path / "out", rehearsal=True, interactive=False)
    problems = [f for f in report.problems if f.check == "HSM capabilities of 'root'"]
    assert [p.detail.split(":")[0] for p in problems] == [
        "generate RSA 4096 key pairs (CKM_RSA_PKCS_KEY_PAIR_GEN, 4096 bits)",
        "sign with RSA 4096 (CKM_SHA256_RSA_PKCS"]
    assert "the module does not list CKM_RSA_PKCS_KEY_PAIR_GEN" in problems[0].detail
    assert "root-key-generation cannot run" in problems[0].detail and "invoke hsm.check" in problems[0].fix
    with pytest.raises(PreflightError, match="CKM_RSA_PKCS_KEY_PAIR_GEN"):
        report.raise_if_failed()
    assert _objects(defn_path) == [] and not (tmp_path / "out").exists()
    ec_defn = load_definition(definition_on_tokens(name="ec.yml")[0])
    ok = run_preflight(ec_defn, "root-key-generation", tmp_path / "out", rehearsal=True, interactive=False)
    assert [f.ok for f in ok.findings if f.check.startswith("HSM capabilities")] == [True], ok.problems


def test_the_root_key_ceremony_needs_an_empty_token(definition_on_tokens: Any, tmp_path: Path) -> None:
    defn_path, _ = definition_on_tokens()
    defn = load_definition(defn_path)
    ready = run_preflight(defn, "root-key-generation", tmp_path / "out", rehearsal=True, interactive=False)
    assert [f.detail for f in ready.findings if f.check == "token of 'root' empty"] == ["the token holds no object"]
    hsm = defn.model.cas["root"].hsm
    with open_session(hsm, pin_source_for(hsm, interactive=False)) as session:  # a key: softokn stores no data object
        session.generate_key(KeyType.AES, 256, label="left-by-someone", store=True)
    report = run_preflight(defn, "root-key-generation", tmp_path / "out", rehearsal=True, interactive=False)
    empty, = [f for f in report.problems if f.check == "token of 'root' empty"]
    assert "1 object(s): 'left-by-someone' (secret key" in empty.detail and "freshly initialised" in empty.fix
    # Other ceremonies do not ask for an empty token (the subordinate's token is not the root's).
    sub = run_preflight(defn, "subordinate-key-generation", tmp_path / "out", rehearsal=True, ca="qualified",
                        interactive=False)
    assert not [f for f in sub.findings if "empty" in f.check]
