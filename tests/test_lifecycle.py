"""The life-cycle ceremonies of issue 18 on real SoftHSM tokens: sealing-key certification, subordinate renewal
(same key), key destruction.

One module-scoped setup runs the CA ceremonies once (root key, subordinate key and signing, the subordinate's key
backup, and its restore onto a second token, which leaves a sealing key with a CSR only); each test works on its
own copy of that output directory. Bad input is refused with one message, before the sign-in when given through
the task, with disk and tokens unchanged.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, SOFTHSM_CONF, TestToken, base_definition_data, tree, write_definition
from cryptography import x509

from ceremony.ceremonies.backup import backup_ceremony
from ceremony.ceremonies.destroy_key import destroy_key_ceremony
from ceremony.ceremonies.renewal import renewal_ceremony
from ceremony.ceremonies.restore import restore_ceremony
from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.sealing_certification import sealing_certification_ceremony
from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
from ceremony.common.display import make_console
from ceremony.common.errors import CeremonyError, HsmError, RequestError
from ceremony.definition.model import Hsm, LoadedDefinition, TokenRef, load_definition
from ceremony.hsm import softhsm
from ceremony.hsm.keys import spki_sha256
from ceremony.hsm.session import open_session, pin_source_for
from ceremony.transcript import chain as transcript
from ceremony.transcript.anchor import load_anchor
from ceremony.transcript.audit import verify
from ceremony.transcript.recorder import ConsoleRecorder

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("lifecycle")]
CA = "qualified"
INVOKE = str(REPO / ".venv" / "bin" / "invoke")


@dataclass
class Life:
    tmp: Path
    data: dict[str, Any]
    definition: Path
    out: Path
    tokens: dict[str, TestToken]  # root, qualified, restore (the qualified key restored onto it)


def quiet() -> Any:
    return make_console(file=open(os.devnull, "w"))


def console() -> ConsoleRecorder:
    return ConsoleRecorder(rehearsal=True, console=quiet())


def _token(mp: pytest.MonkeyPatch, name: str, like: TestToken | None = None) -> TestToken:
    """A fresh token; ``like``: with that token's PIN and variables (a second token of the same CA, whose PIN comes
    from the same source, as the destruction and restore tasks read it)."""
    suffix = secrets.token_hex(4)
    label, env = f"t-lc-{name}-{suffix}"[:32], f"TEST_PIN_LC_{name.upper()}_{suffix.upper()}"
    tok = TestToken(label=label, user_pin=softhsm.random_pin(), so_pin=softhsm.random_pin(), pin_env=env,
                    so_pin_env=env + "_SO", module=softhsm.softhsm_module(), conf=SOFTHSM_CONF)
    if like is not None:
        tok = TestToken(label=label, user_pin=like.user_pin, so_pin=like.so_pin, pin_env=like.pin_env,
                        so_pin_env=like.so_pin_env, module=like.module, conf=SOFTHSM_CONF)
    softhsm.init_token(SOFTHSM_CONF, label, tok.user_pin, tok.so_pin)
    mp.setenv(tok.pin_env, tok.user_pin)
    mp.setenv(tok.so_pin_env, tok.so_pin)
    return tok


def recorded(defn: LoadedDefinition, script: str, out: Path) -> Any:
    return transcript.open_transcript(out / "transcripts", script, defn, rehearsal=True, console=quiet())


@pytest.fixture(scope="module")
def life(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Life]:
    tmp = tmp_path_factory.mktemp("lifecycle")
    data = copy.deepcopy(base_definition_data())
    with pytest.MonkeyPatch.context() as mp:
        tokens = {name: _token(mp, name) for name in ("root", CA)}
        tokens["restore"] = _token(mp, "restore", like=tokens[CA])
        for name, ca in data["cas"].items():
            tok = tokens[name]
            ca["hsm"].update(module=tok.module, token={"label": tok.label}, pin_env=tok.pin_env,
                             so_pin_env=tok.so_pin_env)
        data["cas"]["root"]["backup"] = {"mode": "none"}
        data["cas"][CA]["backup"] = {"mode": "wrapped", "threshold": 2,
                                     "custodians": ["Aminata Diarra", "Bakary Coulibaly", "Fatoumata Traoré"]}
        definition = write_definition(tmp / "pki.yml", data)
        defn = load_definition(definition)
        out = tmp / "out"
        root_ceremony(defn, out, console(), rehearsal=True, interactive=False)
        subordinate_key_ceremony(defn, CA, out, console(), rehearsal=True, interactive=False)
        sign_subordinate_ceremony(defn, CA, out / f"{CA}.csr.pem", out, console(), rehearsal=True, interactive=False)
        backup_ceremony(defn, CA, out, console(), rehearsal=True, interactive=False)
        target = Hsm(module=tokens["restore"].module, token=TokenRef(label=tokens["restore"].label),
                     key_label=defn.model.cas[CA].hsm.key_label, pin_env=tokens["restore"].pin_env,
                     so_pin_env=tokens["restore"].so_pin_env)
        with recorded(defn, "key-restore", out) as rec:
            restore_ceremony(defn, CA, out / "backup" / f"{CA}.key-backup.json",
                             sorted((out / "backup").glob(f"{CA}.share-*"))[:2], out, rec, rehearsal=True,
                             target=target, interactive=False)
        yield Life(tmp, data, definition, out, tokens)


def copy_of(life: Life, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(life.out, out)
    return out


def objects(tok: TestToken) -> set[tuple[str, str]]:
    hsm = Hsm(module=tok.module, token=TokenRef(label=tok.label), key_label="x", pin_env=tok.pin_env)
    with open_session(hsm, pin_source_for(hsm, interactive=False), rw=False) as session:
        return {(str(o.label), type(o).__name__) for o in session.get_objects()}


def state(life: Life, out: Path) -> tuple[set[str], bytes, dict[str, set[tuple[str, str]]]]:
    return tree(out), (out / "manifest.json").read_bytes(), {n: objects(t) for n, t in life.tokens.items()}


def exit_of(path: Path, out: Path) -> int:
    return verify(path, out, trust=load_anchor(str(out / "root.crt.pem"), out), rehearsal=True).exit_code


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CEREMONY_")}
    return subprocess.run([INVOKE, *args], cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**clean, "SOFTHSM2_CONF": str(SOFTHSM_CONF)}, timeout=300)


def definition_with(life: Life, tmp_path: Path, mutate: Any) -> Path:
    data = copy.deepcopy(life.data)
    mutate(data)
    return write_definition(tmp_path / "pki-changed.yml", data)


# --- C. sealing-key certification ---------------------------------------------------------------------------
def test_certifying_the_restored_sealing_key_anchors_the_restore_transcript(life: Life, tmp_path: Path) -> None:
    out = copy_of(life, tmp_path)
    restore = next((out / "transcripts").glob("key-restore-*.jsonl"))
    csr = next(out.glob(f"{CA}.seal.*.csr.pem"))
    argv = ["audit.verify", str(restore), "--artifacts", str(out), "--trust", str(out / "root.crt.pem"), "--rehearsal"]
    before = invoke(*argv)
    assert before.returncode == 4, before.stdout[-2000:]  # not anchored: the sealing key has a CSR only
    # bad input through the task: a renamed CSR (its name no longer carries its key's hash), refused before the
    # sign-in with one line; nothing is written
    renamed = csr.with_name(f"{CA}.seal.{'0' * 16}.csr.pem")
    shutil.copyfile(csr, renamed)
    snapshot = state(life, out)
    refused = invoke("ceremony.certify-sealing-key", "--ca", CA, "--csr", str(renamed), "--definition",
                     str(life.definition), "--out", str(out), "--rehearsal")
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode != 0 and len(errors) == 1 and "the file name says 0000000000000000" in errors[0]
    assert "Sign-in" not in refused.stdout and state(life, out) == snapshot
    renamed.unlink()

    defn = load_definition(life.definition)
    with recorded(defn, "sealing-certification", out) as rec:
        result = sealing_certification_ceremony(defn, CA, out, rec, rehearsal=True, csr=csr, interactive=False)
    assert result.anchors == [restore.name]
    assert result.certificate.name == csr.name.replace(".csr.pem", ".crt.pem")
    cert = x509.load_pem_x509_certificate(result.certificate.read_bytes())
    assert cert.public_key() == x509.load_pem_x509_csr(csr.read_bytes()).public_key()
    openssl = subprocess.run(["openssl", "verify", "-CAfile", str(out / "root.crt.pem"), str(result.certificate)],
                             capture_output=True, text=True)
    assert openssl.returncode == 0, openssl.stderr
    after = invoke(*argv)
    assert after.returncode == 0 and "INTACT" in after.stdout, after.stdout[-2000:]
    assert exit_of(rec.path, out) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {a["path"] for a in manifest["artifacts"] if a["kind"] == "sealing-certificate"} >= {
        result.certificate.name, result.certificate.name.replace(".pem", ".der")}
    with pytest.raises(RequestError, match="exists already"):  # certified once; never overwritten
        sealing_certification_ceremony(defn, CA, out, console(), rehearsal=True, csr=csr, interactive=False)


# --- B. renewal with the same key -------------------------------------------------------------------------------
def test_renewal_issues_generation_2_for_the_same_key(life: Life, tmp_path: Path) -> None:
    out = copy_of(life, tmp_path)
    snapshot = state(life, out)
    # the definition still gives the validity of generation 1: nothing to renew, refused before the sign-in
    refused = invoke("ceremony.renew-subordinate", "--ca", CA, "--definition", str(life.definition), "--out",
                     str(out), "--rehearsal")
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode != 0 and len(errors) == 1 and "validity.not_after" in errors[0], refused.stderr
    assert "Sign-in" not in refused.stdout and state(life, out) == snapshot

    changed = definition_with(life, tmp_path, lambda d: d["cas"][CA]["validity"].update(
        not_after="2040-01-01T00:00:00Z"))
    defn = load_definition(changed)
    # a key ceremony's public key that is not the certified key: a new key is a re-key, refused
    good_pub = (out / f"{CA}.pub.pem").read_bytes()
    shutil.copyfile(out / "root.pub.pem", out / f"{CA}.pub.pem")
    with pytest.raises(RequestError, match="is not the key of"):
        renewal_ceremony(defn, CA, out, console(), rehearsal=True, interactive=False)
    (out / f"{CA}.pub.pem").write_bytes(good_pub)
    assert state(life, out) == snapshot

    with recorded(defn, "subordinate-renewal", out) as rec:
        result = renewal_ceremony(defn, CA, out, rec, rehearsal=True, interactive=False)
    assert result.generation == 2 and sorted(result.files) == [f"{CA}.g2.crt.der", f"{CA}.g2.crt.pem"]
    g1 = x509.load_pem_x509_certificate((out / f"{CA}.crt.pem").read_bytes())
    g2 = x509.load_pem_x509_certificate((out / f"{CA}.g2.crt.pem").read_bytes())
    assert g2.public_key() == g1.public_key() and g2.subject == g1.subject and g2.serial_number != g1.serial_number
    assert g2.not_valid_after_utc.year == 2040 and g1.not_valid_after_utc.year == 2036
    openssl = subprocess.run(["openssl", "verify", "-x509_strict", "-CAfile", str(out / "root.crt.pem"),
                              str(out / f"{CA}.g2.crt.pem")], capture_output=True, text=True)
    assert openssl.returncode == 0, openssl.stderr
    entries = [a for a in json.loads((out / "manifest.json").read_text())["artifacts"]
               if a["path"].startswith(f"{CA}.g2.")]
    assert {(a["kind"], a["generation"], a["key"]) for a in entries} == {("subordinate-certificate", 2, "same")}
    assert exit_of(rec.path, out) == 0


# --- A. key destruction -------------------------------------------------------------------------------------------
def test_destroying_a_key_is_refused_while_nothing_allows_it(life: Life, tmp_path: Path) -> None:
    out = copy_of(life, tmp_path)
    snapshot = state(life, out)
    # certificates still valid and no decision recorded: refused through the task before the sign-in
    refused = invoke("ceremony.destroy-key", "--ca", CA, "--definition", str(life.definition), "--out", str(out),
                     "--rehearsal")
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode != 0 and len(errors) == 1 and f"cas.{CA}.destruction: not set" in errors[0]
    assert "Sign-in" not in refused.stdout and state(life, out) == snapshot
    # a decision about another key
    other = definition_with(life, tmp_path, lambda d: d["cas"][CA].update(destruction={
        "decision": "Décision n°1 du Comité", "date": dt.date(2030, 1, 1), "spki_sha256": "0" * 64}))
    with pytest.raises(RequestError, match="about another key"):
        destroy_key_ceremony(load_definition(other), CA, out, console(), rehearsal=True, interactive=False)
    # a decision for this key, but a token that does not hold it (an empty one, opened with the same PIN source):
    # refused after opening it, nothing destroyed
    empty = f"t-lc-empty-{secrets.token_hex(4)}"
    softhsm.init_token(SOFTHSM_CONF, empty, life.tokens[CA].user_pin, softhsm.random_pin())
    digest = spki(out / f"{CA}.crt.pem")
    decided = definition_with(life, tmp_path, lambda d: d["cas"][CA].update(destruction={
        "decision": "Décision n°1 du Comité", "date": dt.date(2030, 1, 1), "spki_sha256": digest}))
    with pytest.raises(HsmError, match="0 private and 0 public key"):
        destroy_key_ceremony(load_definition(decided), CA, out, console(), rehearsal=True, interactive=False,
                             tokens=[empty])
    assert state(life, out) == snapshot


def spki(cert: Path) -> str:
    return spki_sha256(x509.load_pem_x509_certificate(cert.read_bytes()).public_key())


def pkcs11_tool(tok: TestToken) -> str:
    return subprocess.run(["pkcs11-tool", "--module", tok.module, "--token-label", tok.label, "--login", "--pin",
                           tok.user_pin, "--list-objects"], capture_output=True, text=True, check=True,
                          env={"SOFTHSM2_CONF": str(tok.conf)}).stdout


def test_destroying_the_key_on_every_token_with_its_sealing_keys(life: Life, tmp_path: Path) -> None:
    """Both tokens that hold the subordinate's key (its own and the restored copy) lose the key and their sealing
    keys; the root token's sealing key seals; the share files left in the directory are shredded and recorded."""
    out = copy_of(life, tmp_path)
    digest = spki(out / f"{CA}.crt.pem")
    decided = definition_with(life, tmp_path, lambda d: d["cas"][CA].update(destruction={
        "decision": "Décision n°7 du Comité de Certification", "date": dt.date(2030, 1, 1), "spki_sha256": digest}))
    defn = load_definition(decided)
    shares = sorted((out / "backup").glob(f"{CA}.share-*.txt"))
    assert len(shares) == 3
    label = defn.model.cas[CA].hsm.key_label
    holders = [life.tokens[CA], life.tokens["restore"]]
    assert all(f"label:      {label}" in pkcs11_tool(t) for t in holders)
    with recorded(defn, "key-destruction", out) as rec:
        result = destroy_key_ceremony(defn, CA, out, rec, rehearsal=True, interactive=False,
                                      tokens=[t.label for t in holders], destroy_sealing_key=True)
    for tok in holders:
        listing = pkcs11_tool(tok)
        assert label not in listing and "seal" not in listing, listing
    assert "root" in pkcs11_tool(life.tokens["root"])  # the root token is untouched
    assert not any(s.exists() for s in shares) and (out / "backup" / f"{CA}.key-backup.json").is_file()
    records = [json.loads(line) for line in rec.path.read_text().splitlines()]
    evidence = [(r["name"], r["data"]) for r in records if r["type"] == "evidence"]
    listings = [d for n, d in evidence if n == "token-objects"]
    assert [d["stage"] for d in listings] == ["before", "before", "after", "after"]
    assert all(any(o.get("spki_sha256") == digest for o in d["objects"]) for d in listings[:2])
    assert not any(o.get("spki_sha256") == digest for d in listings[2:] for o in d["objects"])
    assert [d["token"] for n, d in evidence if n == "key-absent"] == [f"token label {t.label!r}" for t in holders]
    shredded = [d for n, d in evidence if n == "share-custody"]
    assert sorted(d["file"] for d in shredded) == [f"backup/{s.name}" for s in shares]
    assert all(d["action"] == "shredded" and d["by"] != d["witness"] for d in shredded)
    assert [n for n, _ in evidence].count("key-destroyed") == 4  # CA key and sealing key, on each token
    assert records[-1]["verifier"]["path"] == "root.seal.crt.pem" and result.sealed_by == "root.seal.crt.pem"
    assert exit_of(rec.path, out) == 0
    report = json.loads(result.report.read_text())
    assert report["key_spki_sha256"] == digest and report["decision"]["spki_sha256"] == digest


def test_the_sealing_key_destroyed_cannot_seal_its_own_destruction(life: Life, tmp_path: Path) -> None:
    """The root's own sealing key cannot seal the transcript of its destruction."""
    out = copy_of(life, tmp_path)
    digest = spki(out / "root.crt.pem")
    decided = definition_with(life, tmp_path, lambda d: d["cas"]["root"].update(destruction={
        "decision": "Décision n°9 du Comité", "date": dt.date(2045, 1, 1), "spki_sha256": digest}))
    snapshot = state(life, out)
    with pytest.raises(CeremonyError, match="--seal-token"):
        destroy_key_ceremony(load_definition(decided), "root", out, console(), rehearsal=True, interactive=False,
                             destroy_sealing_key=True)
    assert state(life, out) == snapshot
