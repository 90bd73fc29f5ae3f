"""The wrapped backup of a re-key's key (issue 18) on real SoftHSM tokens.

A subordinate CA with a wrapped-backup policy is re-keyed (key generation 2 under ``<key_label>.g2``); its key
ceremony and the re-key generate each key extractable only under a trusted key. The backup names the key by its key
generation, as the key destruction does (one shared choice, ``ceremony.ca.generations.chosen_key``): without
``--key-generation`` a re-keyed CA is refused before anything happens; with it, generation 2's key is backed up,
restored under its own label onto a fresh token, and signs for generation 2's certificate. A backup of one key
generation is refused for another, with nothing created on the target token.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, SOFTHSM_CONF, TestToken, base_definition_data, softhsm_token, tree, write_definition
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, ObjectClass
from test_backup import labels_on

from ceremony.backup.format import BackupError, load_backup
from ceremony.ceremonies.backup import backup_ceremony
from ceremony.ceremonies.destroy_key import destroy_key_ceremony
from ceremony.ceremonies.rekey import certify_rekey_ceremony, rekey_key_ceremony
from ceremony.ceremonies.restore import restore_ceremony
from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
from ceremony.common.display import make_console
from ceremony.common.errors import RequestError
from ceremony.definition.model import Hsm, LoadedDefinition, TokenRef, load_definition
from ceremony.hsm import session as hsm
from ceremony.hsm.keys import spki_sha256
from ceremony.hsm.signers import hash_for, signing_key
from ceremony.transcript import chain as transcript
from ceremony.transcript.anchor import load_anchor
from ceremony.transcript.audit import verify
from ceremony.transcript.recorder import ConsoleRecorder

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("backup-rekey")]
CA = "qualified"
LABEL = "qualified-2026"
INVOKE = str(REPO / ".venv" / "bin" / "invoke")
CUSTODIANS = ["Aminata Diarra", "Bakary Coulibaly", "Fatoumata Traoré"]
MakeToken = Callable[..., TestToken]


@dataclass
class Rekeyed:
    definition: LoadedDefinition
    out: Path
    tokens: dict[str, TestToken]


def quiet() -> Any:
    return make_console(file=open(os.devnull, "w"))


def console() -> ConsoleRecorder:
    return ConsoleRecorder(rehearsal=True, console=quiet())


@pytest.fixture(scope="module")
def rekeyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rekeyed]:
    """Root and qualified CA on tokens of their own, the qualified CA's keys made for a wrapped backup (2 of 3), then
    re-keyed: ``qualified.g2.crt.pem`` certifies the key ``qualified-2026.g2``."""
    tmp = tmp_path_factory.mktemp("backup-rekey")
    data = copy.deepcopy(base_definition_data())
    with pytest.MonkeyPatch.context() as mp:
        tokens = {name: softhsm_token(mp, f"rk-{name}") for name in ("root", CA)}
        for name, ca in data["cas"].items():
            tok = tokens[name]
            ca["hsm"].update(module=tok.module, token={"label": tok.label}, pin_env=tok.pin_env,
                             so_pin_env=tok.so_pin_env)
            ca["backup"] = {"mode": "wrapped", "threshold": 2, "custodians": CUSTODIANS}
        definition = load_definition(write_definition(tmp / "pki.yml", data))
        out = tmp / "out"
        root_ceremony(definition, out, console(), rehearsal=True, interactive=False)
        subordinate_key_ceremony(definition, CA, out, console(), rehearsal=True, interactive=False)
        sign_subordinate_ceremony(definition, CA, out / f"{CA}.csr.pem", out, console(), rehearsal=True,
                                  interactive=False)
        rekey_key_ceremony(definition, CA, out, console(), rehearsal=True, interactive=False)
        certify_rekey_ceremony(definition, CA, out, console(), rehearsal=True, interactive=False)
        yield Rekeyed(definition, out, tokens)


def copy_of(r: Rekeyed, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(r.out, out)
    return out


def target_of(tok: TestToken) -> Hsm:
    return Hsm(module=tok.module, token=TokenRef(label=tok.label), key_label=LABEL, pin_env=tok.pin_env,
               so_pin_env=tok.so_pin_env)


def test_a_rekeyed_ca_names_the_key_to_back_up_and_nothing_is_done_otherwise(rekeyed: Rekeyed,
                                                                              tmp_path: Path) -> None:
    out = copy_of(rekeyed, tmp_path)
    before, objects = tree(out), labels_on(rekeyed.tokens[CA])
    with pytest.raises(RequestError, match=r"^'qualified' has had 2 keys \(key generations 1, 2, re-keyed\): name "
                                           r"the one to back up with --key-generation \(allowed: 1, 2\)$"):
        backup_ceremony(rekeyed.definition, CA, out, console(), rehearsal=True, interactive=False)
    with pytest.raises(RequestError, match=r"--key-generation 3: not a key generation of 'qualified' \('qualified' "
                                           r"has no certificate of generation 3 in .*\); allowed: 1, 2"):
        backup_ceremony(rekeyed.definition, CA, out, console(), rehearsal=True, interactive=False, key_generation=3)
    # a certificate of the other key given with --key-generation 2
    with pytest.raises(BackupError, match=r"qualified\.crt\.pem: certifies key [0-9a-f]{64}, but key generation 2 "
                                          r"of 'qualified' is key [0-9a-f]{64} \(qualified\.g2\.crt\.pem\)"):
        backup_ceremony(rekeyed.definition, CA, out, console(), rehearsal=True, interactive=False, key_generation=2,
                        certificate=out / f"{CA}.crt.pem")
    assert tree(out) == before and labels_on(rekeyed.tokens[CA]) == objects
    # the operator's command: refused before anyone signs in, with the same one message
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEREMONY_")}
    env |= {"SOFTHSM2_CONF": str(SOFTHSM_CONF), "COLUMNS": "400"}
    done = subprocess.run([INVOKE, "backup.create", "--ca", CA, "--definition", str(rekeyed.definition.path),
                           "--out", str(out), "--rehearsal"], cwd=REPO, capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 6 and done.stderr.count("error: ") == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "name the one to back up with --key-generation (allowed: 1, 2)" in done.stderr, done.stderr[-2000:]
    assert tree(out) == before and labels_on(rekeyed.tokens[CA]) == objects
    # with --key-generation 2 the pre-flight looks for that key's own label, and the ceremony backs it up
    done = subprocess.run([INVOKE, "backup.create", "--ca", CA, "--definition", str(rekeyed.definition.path),
                           "--out", str(out), "--rehearsal", "--key-generation", "2"], cwd=REPO, capture_output=True,
                          text=True, env=env, stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # the summary's next step restores that very backup with its key generation
    assert f"backup.restore --ca {CA} --key-generation 2 --backup {out / 'backup' / f'{CA}.g2.key-backup.json'}" in \
        " ".join(done.stdout.split()), done.stdout[-3000:]
    body = load_backup(out / "backup" / f"{CA}.g2.key-backup.json")
    assert body["key"]["label"] == f"{LABEL}.g2" and not (out / "backup" / f"{CA}.key-backup.json").exists()
    assert labels_on(rekeyed.tokens[CA]) == objects  # the wrapping key is gone again


def test_the_rekeys_key_is_backed_up_restored_under_its_label_and_signs(rekeyed: Rekeyed, make_token: MakeToken,
                                                                          tmp_path: Path) -> None:
    out = copy_of(rekeyed, tmp_path)
    g2 = x509.load_pem_x509_certificate((out / f"{CA}.g2.crt.pem").read_bytes())
    g1 = x509.load_pem_x509_certificate((out / f"{CA}.crt.pem").read_bytes())
    with transcript.open_transcript(out / "transcripts", "key-backup", rekeyed.definition, rehearsal=True,
                                    console=quiet()) as rec:
        result = backup_ceremony(rekeyed.definition, CA, out, rec, rehearsal=True, interactive=False,
                                 key_generation=2)
    assert result.backup_file == out / "backup" / f"{CA}.g2.key-backup.json"
    assert sorted(p.name for p in result.share_files.values()) == sorted(
        f"{CA}.g2.share-{i}-{name}.txt" for i, name in
        enumerate(["aminata-diarra", "bakary-coulibaly", "fatoumata-traore"], 1))
    body = load_backup(result.backup_file)
    assert body["key"]["label"] == f"{LABEL}.g2" and body["key"]["generation"] == 2
    assert body["key"]["spki_sha256"] == result.key_spki_sha256 == spki_sha256(g2.public_key())
    assert result.key_spki_sha256 != spki_sha256(g1.public_key())
    manifest = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert {(a["kind"], a.get("key_generation")) for a in manifest if a["path"].startswith(f"backup/{CA}.g2.")} == \
        {("key-backup", 2), ("key-backup-share", 2)}
    # sealed by the token's sealing key, which the root certified: verifies at once
    assert verify(rec.path, out, trust=load_anchor(str(out / "root.crt.pem"), out), rehearsal=True).exit_code == 0

    # a backup of key generation 2 is not restored as generation 1's key: nothing is created on the target
    wrong = make_token("rk-wrong")
    shares = list(result.share_files.values())[1:]
    with pytest.raises(BackupError, match=r"the backup of key generation 2 of 'qualified', not of key generation 1 "
                                          r"\(qualified\.crt\.pem\); restore it with --key-generation 2"):
        restore_ceremony(rekeyed.definition, CA, result.backup_file, shares, out, console(), rehearsal=True,
                         target=target_of(wrong), interactive=False, key_generation=1)
    assert labels_on(wrong) == []

    # restored onto a fresh token under its own label, it signs for generation 2's certificate
    tok = make_token("rk-restore")
    with transcript.open_transcript(out / "transcripts", "key-restore", rekeyed.definition, rehearsal=True,
                                    console=quiet()) as rec:
        restored = restore_ceremony(rekeyed.definition, CA, result.backup_file, shares, out, rec, rehearsal=True,
                                    target=target_of(tok), interactive=False, key_generation=2)
    assert restored.report == out / "backup" / f"{CA}.g2.restore-{tok.label}.json"
    assert restored.key["label"] == f"{LABEL}.g2" and restored.key["local"] is False
    assert (str(ObjectClass.PRIVATE_KEY), f"{LABEL}.g2") in labels_on(tok)
    with hsm.open_session(target_of(tok), hsm.pin_source_for(target_of(tok), interactive=False)) as session:
        key = signing_key(session, f"{LABEL}.g2")
        signature = key.sign(b"signed after the restore", ec.ECDSA(hash_for(key)))
        assert not list(session.get_objects({Attribute.LABEL: LABEL}))  # the first key was not restored
    g2.public_key().verify(signature, b"signed after the restore", ec.ECDSA(hash_for(key)))  # type: ignore
    report = json.loads(restored.report.read_text())
    assert report["restored_key"]["spki_sha256"] == spki_sha256(g2.public_key())
    # the restore of a subordinate key gives the fresh token a new sealing key awaiting the root's certificate:
    # its transcript is intact but not anchored yet (exit 4)
    assert verify(rec.path, out, trust=load_anchor(str(out / "root.crt.pem"), out), rehearsal=True).exit_code == 4


def test_destroying_the_rekeys_key_shreds_its_own_shares_only(rekeyed: Rekeyed, tmp_path: Path) -> None:
    """The key destruction finds the backup of the key it destroys under its key generation's name and shreds that
    backup's share files, not those of the CA's other key. (Runs last: it destroys generation 2's key on the token.)"""
    out = copy_of(rekeyed, tmp_path)
    first = backup_ceremony(rekeyed.definition, CA, out, console(), rehearsal=True, interactive=False,
                            key_generation=1)
    second = backup_ceremony(rekeyed.definition, CA, out, console(), rehearsal=True, interactive=False,
                             key_generation=2)
    assert first.backup_file.name == f"{CA}.key-backup.json" and second.backup_file.name == f"{CA}.g2.key-backup.json"
    data = yaml.safe_load(rekeyed.definition.path.read_text(encoding="utf-8"))
    data["cas"][CA]["destruction"] = {"decision": "Décision de test (REHEARSAL)", "date": dt.date.today(),
                                      "spki_sha256": second.key_spki_sha256}
    decided = load_definition(write_definition(tmp_path / "decided.yml", data))
    with transcript.open_transcript(out / "transcripts", "key-destruction", decided, rehearsal=True,
                                    console=quiet()) as rec:
        result = destroy_key_ceremony(decided, CA, out, rec, rehearsal=True, interactive=False, key_generation=2)
    assert sorted(result.shredded) == sorted(p.relative_to(out).as_posix() for p in second.share_files.values())
    assert all(not p.exists() for p in second.share_files.values())
    assert all(p.is_file() for p in first.share_files.values())
    report = json.loads(result.report.read_text())
    assert report["backups"] == [f"backup/{CA}.g2.key-backup.json"] and report["key_label"] == f"{LABEL}.g2"
    labels = [label for _, label in labels_on(rekeyed.tokens[CA])]
    assert f"{LABEL}.g2" not in labels and LABEL in labels
