"""Key-backup ceremony on real SoftHSM tokens: shares, backup file, custody record, refusals.

A module-scoped backup of the testing root (2-of-3 custodians) is shared by the tests that only
read it; refusals use their own tokens. Every refusal leaves no new file and no new HSM object.
"""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import SOFTHSM_CONF, TestToken, base_definition_data, own_network_namespace, tree, write_definition
from cryptography import x509

from ceremony.backup.format import load_backup
from ceremony.backup.shares import read_share
from ceremony.ceremonies.backup import BackupResult, backup_ceremony
from ceremony.ceremonies.root_key import root_ceremony
from ceremony.common.errors import DefinitionError, HsmError, OfflineCheckError, OutputError
from ceremony.definition.model import Hsm, LoadedDefinition, TokenRef, load_definition
from ceremony.hsm import session as hsm
from ceremony.hsm import softhsm
from ceremony.hsm.keys import spki_sha256
from ceremony.transcript.recorder import ConsoleRecorder

pytestmark = pytest.mark.hsm

BACKUP_STEPS = ["offline-check", "definition-check", "token-open", "wrapping-key-generate", "wrapping-key-trust",
                "key-wrap", "shares-split", "shares-distribute", "outputs-write"]


class CapturingRecorder(ConsoleRecorder):
    """The console recorder, also keeping everything said, to prove no share value is ever shown."""

    def __init__(self) -> None:
        from io import StringIO

        from rich.console import Console

        self.buffer = StringIO()
        super().__init__(rehearsal=True, console=Console(file=self.buffer, width=200))
        self.sealed: list[dict[str, Any]] = []

    def seal(self, private_key: Any, verifier: Any) -> None:
        self.sealed.append({"key": private_key, "verifier": dict(verifier)})

    def everything(self) -> str:
        return self.buffer.getvalue() + json.dumps(self.evidence_log, default=str) + json.dumps(self.artifacts)


@dataclass
class BackedUp:
    definition: LoadedDefinition
    out: Path
    root_token: TestToken
    result: BackupResult
    recorder: CapturingRecorder


def token_for(name: str) -> TestToken:
    """A fresh token outside the function-scoped fixture (for module-scoped fixtures)."""
    label = f"m-{name}-{os.urandom(4).hex()}"
    env = f"TEST_PIN_M_{name.upper()}_{os.urandom(4).hex().upper()}"
    tok = TestToken(label=label, user_pin=softhsm.random_pin(), so_pin=softhsm.random_pin(), pin_env=env,
                    so_pin_env=env + "_SO", module=softhsm.softhsm_module(), conf=SOFTHSM_CONF)
    softhsm.init_token(SOFTHSM_CONF, label, tok.user_pin, tok.so_pin)
    os.environ[tok.pin_env] = tok.user_pin
    os.environ[tok.so_pin_env] = tok.so_pin
    return tok


def definition_data_on(tokens: dict[str, TestToken]) -> dict[str, Any]:
    data = copy.deepcopy(base_definition_data())
    for ca_name, ca in data["cas"].items():
        tok = tokens[ca_name]
        ca["hsm"].update(module=tok.module, token={"label": tok.label}, pin_env=tok.pin_env,
                         so_pin_env=tok.so_pin_env)
    return data


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackedUp]:
    yield make_backup(tmp_path_factory)


def make_backup(tmp_path_factory: pytest.TempPathFactory) -> BackedUp:
    """Root ceremony then backup of the testing root (2 of 3) on fresh tokens."""
    tmp = tmp_path_factory.mktemp("backup")
    tokens = {"root": token_for("root"), "qualified": token_for("qualified")}
    defn = load_definition(write_definition(tmp / "pki.yml", definition_data_on(tokens)))
    out = tmp / "out"
    root_ceremony(defn, out, ConsoleRecorder(rehearsal=True), rehearsal=True, interactive=False)
    rec = CapturingRecorder()
    result = backup_ceremony(defn, "root", out, rec, rehearsal=True, interactive=False)
    return BackedUp(defn, out, tokens["root"], result, rec)


def labels_on(tok: TestToken) -> list[tuple[str, str]]:
    """Every token object (class, label), seen from a fresh session: session objects are gone."""
    h = Hsm(module=tok.module, token=TokenRef(label=tok.label), key_label="x", pin_env=tok.pin_env)
    with hsm.open_session(h, hsm.pin_source_for(h, interactive=False)) as session:
        return sorted((str(o.object_class), o.label) for o in session.get_objects())


def test_backup_writes_one_0600_share_per_custodian_and_the_backup_file(backed_up: BackedUp) -> None:
    result, out = backed_up.result, backed_up.out
    custodians = ["Aminata Diarra", "Bakary Coulibaly", "Fatoumata Traoré"]
    assert list(result.share_files) == custodians
    cert = x509.load_pem_x509_certificate((out / "root.crt.pem").read_bytes())
    for i, name in enumerate(custodians, 1):
        path = result.share_files[name]
        assert path.parent == out / "backup"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        share = read_share(path)
        assert (share.custodian, share.index, share.threshold, share.count) == (name, i, 2, 3)
        assert share.bag == result.bags[name] and share.bag.startswith("REHEARSAL-")
        assert share.backup_id == result.backup_id and share.rehearsal
        assert share.key_spki_sha256 == spki_sha256(cert.public_key())
        assert len(share.value) == 32
        assert "REHEARSAL SHARE" in path.read_text()
    body = load_backup(result.backup_file)
    assert body["key"]["spki_sha256"] == spki_sha256(cert.public_key()) == result.key_spki_sha256
    assert body["wrapping"]["mechanism"] == "CKM_AES_KEY_WRAP_PAD"
    assert body["quorum"]["threshold"] == 2 and [c["name"] for c in body["quorum"]["custodians"]] == custodians
    assert {c["share_checksum"] for c in body["quorum"]["custodians"]} == \
        {read_share(p).checksum for p in result.share_files.values()}
    manifest = json.loads((out / "manifest.json").read_text())
    kinds = [(a["kind"], a["path"]) for a in manifest["artifacts"]]
    assert ("key-backup", "backup/root.key-backup.json") in kinds
    assert sum(1 for k, _ in kinds if k == "key-backup-share") == 3


def test_backup_record_names_custodians_bags_and_checksums_never_share_values(backed_up: BackedUp) -> None:
    rec, result = backed_up.recorder, backed_up.result
    assert rec.steps == [(s, "done") for s in BACKUP_STEPS]
    custody = [data for name, data in rec.evidence_log if name == "share-custody"]
    assert [(c["custodian"], c["bag"]) for c in custody] == list(result.bags.items())
    everything = rec.everything()
    for path in result.share_files.values():
        share = read_share(path)
        assert share.checksum in everything
        assert share.value.hex() not in everything
        first_line = path.read_text().split("value:")[1].splitlines()[1].split(":", 1)[1].strip()
        assert first_line not in everything
    trust = dict(rec.evidence_log)["wrapping-key-trust"]
    assert trust["trusted"] and trust["set_by"] == "security-officer" and trust["sensitive"]
    wrap = dict(rec.evidence_log)["key-wrap"]
    assert wrap["wrapping_key_destroyed"] and wrap["verified_by_test_unwrap_and_signature"]
    # sealed by the root token's transcript-sealing key, never by the root key it backs up
    assert rec.sealed[0]["verifier"]["kind"] == "certificate"
    assert rec.sealed[0]["verifier"]["path"] == "root.seal.crt.pem"


def der_fingerprint(pem: Path) -> str:
    """The certificate's SHA-256 fingerprint as an auditor computes it: ``openssl x509 -outform DER | sha256sum``."""
    proc = subprocess.run(["sh", "-c", 'openssl x509 -in "$1" -outform DER | sha256sum', "sh", str(pem)],
                          env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True, timeout=30)
    return proc.stdout.split()[0]


def sha256sum(path: Path) -> str:
    return subprocess.run(["sha256sum", str(path)], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          check=True, timeout=30).stdout.split()[0]


def test_certificate_evidence_is_the_fingerprint_of_the_der_certificate_not_of_the_pem_file(
        backed_up: BackedUp) -> None:
    """The ``certificate`` evidence's ``sha256`` is what the root key ceremony records and the auditor compares:
    the SHA-256 of the DER certificate. The PEM file read is named with its own hash, under another name."""
    pem = backed_up.out / "root.crt.pem"
    fingerprint = der_fingerprint(pem)
    evidence = dict(backed_up.recorder.evidence_log)["certificate"]
    assert evidence["sha256"] == fingerprint
    assert evidence["file_sha256"] == sha256sum(pem) != fingerprint
    assert evidence["path"] == str(pem) and evidence["spki_sha256"] == backed_up.result.key_spki_sha256
    assert evidence["sha256"] == sha256sum(backed_up.out / "root.crt.der")  # the root ceremony's DER file
    assert load_backup(backed_up.result.backup_file)["certificate"]["sha256"] == fingerprint
    assert f"certificate: {pem} (SHA-256 fingerprint {fingerprint[:16]}…)" in backed_up.recorder.buffer.getvalue()


def test_wrapping_key_is_gone_and_the_ca_key_is_unchanged(backed_up: BackedUp) -> None:
    from test_hsm import pkcs11_tool_objects

    objects = labels_on(backed_up.root_token)
    assert sorted(label for _, label in objects) == ["root-2026", "root-2026", "root-2026-seal", "root-2026-seal"]
    listing = pkcs11_tool_objects(backed_up.root_token)
    assert "Secret Key Object" not in listing and "backup-wrap" not in listing


def _fresh_root(definition_on_tokens: Callable[..., tuple[Path, dict[str, TestToken]]], tmp_path: Path,
                mutate: Callable[[dict[str, Any]], None] | None = None) -> tuple[LoadedDefinition, Path, TestToken]:
    pki, tokens = definition_on_tokens(mutate)
    defn = load_definition(pki)
    out = tmp_path / "out"
    root_ceremony(defn, out, ConsoleRecorder(rehearsal=True), rehearsal=True, interactive=False)
    return defn, out, tokens["root"]


def test_ca_without_backup_policy_is_refused(backed_up: BackedUp) -> None:
    before = tree(backed_up.out)
    with pytest.raises(DefinitionError, match=r"cas\.qualified\.backup\.mode: 'none'.*allowed: wrapped"):
        backup_ceremony(backed_up.definition, "qualified", backed_up.out, ConsoleRecorder(rehearsal=True),
                        rehearsal=True, interactive=False)
    assert tree(backed_up.out) == before


def test_second_backup_into_the_same_directory_is_refused_and_leaves_no_wrapping_key(backed_up: BackedUp) -> None:
    before, objects = tree(backed_up.out), labels_on(backed_up.root_token)
    with pytest.raises(OutputError, match=r"root\.key-backup\.json: output file exists already"):
        backup_ceremony(backed_up.definition, "root", backed_up.out, ConsoleRecorder(rehearsal=True),
                        rehearsal=True, interactive=False)
    assert tree(backed_up.out) == before and labels_on(backed_up.root_token) == objects


def test_key_generated_without_backup_policy_cannot_be_backed_up(definition_on_tokens: Any, tmp_path: Path) -> None:
    def no_backup(d: dict[str, Any]) -> None:
        d["cas"]["root"]["backup"] = {"mode": "none"}

    defn, out, root_tok = _fresh_root(definition_on_tokens, tmp_path, no_backup)
    data = yaml.safe_load(defn.path.read_text())
    data["cas"]["root"]["backup"] = base_definition_data()["cas"]["root"]["backup"]
    wrapped_defn = load_definition(write_definition(tmp_path / "wrapped.yml", data))
    before, objects = tree(out), labels_on(root_tok)
    with pytest.raises(HsmError, match="was not generated for a wrapped backup"):
        backup_ceremony(wrapped_defn, "root", out, ConsoleRecorder(rehearsal=True), rehearsal=True,
                        interactive=False)
    assert tree(out) == before and labels_on(root_tok) == objects


def test_production_backup_needs_a_bag_serial_per_custodian(backed_up: BackedUp, tmp_path: Path,
                                                          air_gapped: None) -> None:
    with pytest.raises(DefinitionError, match="--bag: Aminata Diarra: no tamper-evident bag serial"):
        backup_ceremony(backed_up.definition, "root", tmp_path / "prod", ConsoleRecorder(rehearsal=False),
                        rehearsal=False, interactive=False, certificate=backed_up.out / "root.crt.pem",
                        bags={"Bakary Coulibaly": "SN-1", "Fatoumata Traoré": "SN-2"})
    with pytest.raises(DefinitionError, match="--bag: Nobody: is not a custodian"):
        backup_ceremony(backed_up.definition, "root", tmp_path / "prod", ConsoleRecorder(rehearsal=False),
                        rehearsal=False, interactive=False, bags={"Nobody": "SN-9"})
    with pytest.raises(DefinitionError, match="same bag serial"):
        backup_ceremony(backed_up.definition, "root", tmp_path / "prod", ConsoleRecorder(rehearsal=False),
                        rehearsal=False, interactive=False,
                        bags={"Aminata Diarra": "SN-1", "Bakary Coulibaly": "SN-1", "Fatoumata Traoré": "SN-2"})
    assert not (tmp_path / "prod").exists()


PRODUCTION_BAGS = {"Aminata Diarra": "SN-004711", "Bakary Coulibaly": "SN-004712", "Fatoumata Traoré": "SN-004713"}


def test_production_backup_refuses_to_run_while_a_network_interface_is_up(backed_up: BackedUp,
                                                                          tmp_path: Path) -> None:
    """As the root key ceremony does: the offline check is the first step, and in production an interface up
    (a veth in a network namespace of the test's own, on the real kernel) stops the ceremony before the
    definition is checked or the token opened: nothing written, the token as it was."""
    objects = labels_on(backed_up.root_token)
    rec = ConsoleRecorder(rehearsal=False)
    with own_network_namespace("cerveth0"), pytest.raises(OfflineCheckError) as refused:
        backup_ceremony(backed_up.definition, "root", tmp_path / "prod", rec, rehearsal=False, interactive=False,
                        certificate=backed_up.out / "root.crt.pem", bags=PRODUCTION_BAGS)
    assert "network interface(s) cerveth0 up" in str(refused.value)
    assert "ip link set cerveth0 down" in str(refused.value) and "docs/air-gapped.md" in str(refused.value)
    assert rec.steps == [("offline-check", "failed")]
    assert not (tmp_path / "prod").exists() and labels_on(backed_up.root_token) == objects


def test_rehearsal_backup_records_the_offline_check_without_enforcing_it(backed_up: BackedUp,
                                                                         tmp_path: Path) -> None:
    """The same namespace, in a rehearsal: the interface is recorded and the backup goes on, as at the root."""
    rec = CapturingRecorder()
    with own_network_namespace("cerveth0"):
        backup_ceremony(backed_up.definition, "root", tmp_path / "reh", rec, rehearsal=True, interactive=False,
                        certificate=backed_up.out / "root.crt.pem")
    assert rec.steps == [(s, "done") for s in BACKUP_STEPS]
    check = dict(rec.evidence_log)["offline-check"]
    assert check["non_loopback_up"] == ["cerveth0"] and check["offline"] is False and check["enforced"] is False
    assert "offline check: interfaces up: cerveth0 (rehearsal: not enforced)" in rec.buffer.getvalue()
    assert dict(backed_up.recorder.evidence_log)["offline-check"]["enforced"] is False


def test_wrong_security_officer_pin_leaves_token_and_disk_unchanged(definition_on_tokens: Any, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    defn, out, root_tok = _fresh_root(definition_on_tokens, tmp_path)
    monkeypatch.setenv(root_tok.so_pin_env, "not-the-so-pin")
    before, objects = tree(out), labels_on(root_tok)
    with pytest.raises(HsmError, match="wrong PIN"):
        backup_ceremony(defn, "root", out, ConsoleRecorder(rehearsal=True), rehearsal=True, interactive=False)
    assert tree(out) == before and labels_on(root_tok) == objects


def test_wrapping_key_is_destroyed_when_a_later_step_fails(definition_on_tokens: Any, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the SO created the trusted key (here: the proof of the wrapped blob) cleans up."""
    defn, out, root_tok = _fresh_root(definition_on_tokens, tmp_path)
    before, objects = tree(out), labels_on(root_tok)
    import ceremony.ceremonies.backup as backup_module

    def failing_check(*args: Any, **kwargs: Any) -> None:
        raise backup_module.BackupError("simulated: the test signature does not verify")

    monkeypatch.setattr(backup_module, "verify_test_signature", failing_check)
    with pytest.raises(backup_module.BackupError, match="simulated"):
        backup_ceremony(defn, "root", out, ConsoleRecorder(rehearsal=True), rehearsal=True, interactive=False)
    assert tree(out) == before and labels_on(root_tok) == objects


def _sample_share(**changes: Any) -> Any:
    from dataclasses import replace

    from ceremony.backup.shares import Share

    share = Share(ca="root", backup_id="ab" * 16, key_spki_sha256="cd" * 32, custodian="Fatoumata Traoré",
                  bag="SN-1", index=3, threshold=2, count=3, rehearsal=False, value=bytes(range(32)))
    return replace(share, **changes)


def test_share_page_round_trips_and_tolerates_retyping() -> None:
    from ceremony.backup.shares import parse_share

    share = _sample_share()
    page = share.render()
    assert parse_share(page, "page") == share
    assert "value=" not in repr(share) and share.value.hex() not in repr(share)
    retyped = page.replace("value:\n", "VALUE:\n").replace(" 0001 0203", "  0001  0203").upper() \
        .replace("CUSTODIAN: FATOUMATA TRAORÉ", "custodian: Fatoumata Traoré").replace("CA: ROOT", "ca: root") \
        .replace("BAG: SN-1", "bag: SN-1").replace("REHEARSAL: NO", "rehearsal: no") \
        .replace("FORMAT: CEREMONY-KEY-SHARE/1", "format: ceremony-key-share/1") \
        .replace("BACKUP-ID: " + "AB" * 16, "backup-id: " + "ab" * 16) \
        .replace("KEY-SPKI-SHA256: " + "CD" * 32, "key-spki-sha256: " + "cd" * 32)
    assert parse_share(retyped, "retyped") == share


@pytest.mark.parametrize(("edit", "field", "problem"), [
    (lambda p: p.replace("threshold: 2\n", ""), "threshold", "required field is missing"),
    (lambda p: p.replace("format: ceremony-key-share/1", "format: other/9"), "format", "is not a share format"),
    (lambda p: p.replace("index: 3", "index: three"), "index", "is not a whole number"),
    (lambda p: p.replace("   2: ", "   3: "), "value", "numbered 1, 2, 3"),
    (lambda p: p.replace("bag: SN-1", "bag: SN-2"), "checksum", "does not match the share"),
    (lambda p: p + "colour: blue\n", "colour", "unexpected line"),
])
def test_bad_share_pages_name_the_field(edit: Callable[[str], str], field: str, problem: str) -> None:
    from ceremony.backup.shares import parse_share

    with pytest.raises(DefinitionError, match=f"^aminata.txt: {field}: .*{problem}"):
        parse_share(edit(_sample_share().render()), "aminata.txt")


def test_missing_certificate_is_named_before_the_hsm(backed_up: BackedUp, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="the certificate of 'root' is not there; pass --certificate"):
        backup_ceremony(backed_up.definition, "root", tmp_path / "elsewhere", ConsoleRecorder(rehearsal=True),
                        rehearsal=True, interactive=False)
    assert not (tmp_path / "elsewhere").exists()


def test_a_wrapping_key_left_by_an_interrupted_backup_is_destroyed(definition_on_tokens: Any,
                                                                   tmp_path: Path) -> None:
    """A trusted wrapping key must not outlive its ceremony: one CO alone could wrap the CA key with it."""
    from ceremony.hsm.wrapping import import_wrapping_key

    defn, out, root_tok = _fresh_root(definition_on_tokens, tmp_path)
    h = defn.model.cas["root"].hsm
    with hsm.open_session(h, hsm.pin_source_for(h, interactive=False, so=True), so=True) as so_session:
        import_wrapping_key(so_session, os.urandom(32), "backup-wrap-0123456789abcdef", token=True, trusted=True)
    assert "backup-wrap-0123456789abcdef" in [label for _, label in labels_on(root_tok)]
    rec = CapturingRecorder()
    backup_ceremony(defn, "root", out, rec, rehearsal=True, interactive=False)
    assert dict(rec.evidence_log)["stale-wrapping-keys-destroyed"] == {"labels": ["backup-wrap-0123456789abcdef"]}
    assert sorted(label for _, label in labels_on(root_tok)) == ["root-2026", "root-2026", "root-2026-seal",
                                                                 "root-2026-seal"]


def test_custodian_name_that_cannot_be_printed_is_refused(definition_on_tokens: Any, tmp_path: Path) -> None:
    def two_line_name(d: dict[str, Any]) -> None:
        d["cas"]["root"]["backup"]["custodians"][1] = "Bakary\nCoulibaly"

    pki, _ = definition_on_tokens(two_line_name)
    with pytest.raises(DefinitionError, match=r"cas\.root\.backup\.custodians\[1\]: 'Bakary\\nCoulibaly' cannot be "
                                              "printed on a share page"):
        backup_ceremony(load_definition(pki), "root", tmp_path / "out", ConsoleRecorder(rehearsal=True),
                        rehearsal=True, interactive=False)
    assert not (tmp_path / "out").exists()
