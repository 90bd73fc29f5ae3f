"""Partitioned CRLs (issue 13, part 6) on real SoftHSM tokens: issuance names one partition, the job publishes
every partition CRL with the full CRL, openssl and pkilint agree, numbering survives kills, bad inputs change nothing.

One hierarchy per module (root, qualified CA with ``crl.partitions: 2``); a certificate issued before partitioning
(with the same definition without ``partitions``) names the full CRL, the others name a partition. Each test works
on its own copy of the registry and its own publication directory.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SOFTHSM_CONF, base_definition_data, tree, write_definition
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import ceremony.ca.registry as registry_module
from ceremony.ca.registry import CertRecord, Registry
from ceremony.ceremonies.issuance import IssuedCertificate, issue_certificate
from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
from ceremony.common.errors import CeremonyError, DefinitionError, OutputError
from ceremony.crl.checks import summarise
from ceremony.crl.encoding import lint_crl
from ceremony.crl.job import KILL_HOOK_ENV, crl_targets, journal_path, metrics_for, run_crl_job
from ceremony.crl.metrics import read_sample
from ceremony.crl.state import MAX_UNPUBLISHED, last_reserved, state_path
from ceremony.definition.model import LoadedDefinition, load_definition, partition_crl_url
from ceremony.hsm import softhsm
from ceremony.transcript.recorder import ConsoleRecorder

pytestmark = pytest.mark.hsm

URL = "http://pki.test.scse.ml/crl/qualified.crl"


@dataclass
class Partitioned:
    dir: Path
    definition: Path
    legacy_definition: Path
    registry: Path
    legacy: IssuedCertificate
    """Issued before partitioning: names the full CRL."""
    by_partition: dict[int, list[IssuedCertificate]]

    def copy_registry(self, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(self.registry, dest / "registry.sqlite3"))


def _csr(path: Path, cn: str) -> Path:
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "ML"), x509.NameAttribute(NameOID.GIVEN_NAME, "Awa"),
                         x509.NameAttribute(NameOID.SURNAME, "Keita"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(ec.generate_private_key(ec.SECP256R1()),
                                                                             hashes.SHA256())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Partitioned:
    base = tmp_path_factory.mktemp("crl-partitions")
    data = copy.deepcopy(base_definition_data())
    data["cas"]["root"]["backup"] = {"mode": "none"}
    for name, ca in data["cas"].items():
        suffix = secrets.token_hex(4)
        label = f"part-{name}-{suffix}"[:32]
        env = f"TEST_PART_PIN_{name.upper()}_{suffix.upper()}"
        os.environ[env] = softhsm.random_pin()
        softhsm.init_token(SOFTHSM_CONF, label, os.environ[env], softhsm.random_pin())
        ca["hsm"].update(module=softhsm.softhsm_module(), token={"label": label}, pin_env=env)
        ca["hsm"].pop("so_pin_env", None)
    legacy_path = write_definition(base / "pki-before.yml", data)
    data["cas"]["qualified"]["crl"]["partitions"] = 2
    pki = write_definition(base / "pki.yml", data)
    defn = load_definition(pki)
    rec = ConsoleRecorder(rehearsal=True)
    root_ceremony(defn, base, rec, rehearsal=True, interactive=False)
    subordinate_key_ceremony(defn, "qualified", base, rec, rehearsal=True, interactive=False)
    sign_subordinate_ceremony(defn, "qualified", base / "qualified.csr.pem", base, rec, rehearsal=True,
                              interactive=False)
    registry = base / "registry.sqlite3"

    def issue(d: LoadedDefinition, cn: str) -> IssuedCertificate:
        with Registry.open(registry, create=True) as reg:
            return issue_certificate(d, "qualified", "qes-natural-person", _csr(base / "csr" / f"{cn}.pem", cn),
                                     base / "ee", reg, rec, issuer_cert_path=base / "qualified.crt.pem",
                                     rehearsal=True, interactive=False)

    legacy = issue(load_definition(legacy_path), "Before Partitioning")
    by_partition: dict[int, list[IssuedCertificate]] = {0: [], 1: []}
    for i in range(40):  # random serials: until each partition has two certificates
        if min(len(v) for v in by_partition.values()) >= 2:
            break
        one = issue(defn, f"Subscriber {i}")
        assert one.crl_partition is not None
        by_partition[one.crl_partition].append(one)
    assert min(len(v) for v in by_partition.values()) >= 2, {k: [f"{c.serial:x}" for c in v]
                                                             for k, v in by_partition.items()}
    return Partitioned(base, pki, legacy_path, registry, legacy, by_partition)


def _dp(cert_path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    dps = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    return [n.value for dp in dps for n in dp.full_name or []]


def _number(der: bytes) -> int:
    return x509.load_der_x509_crl(der).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def _verify(p: Partitioned, cert: Path, crl_pem: Path) -> subprocess.CompletedProcess[str]:
    """openssl verify -crl_check: the chain to the root, the CA's status from the one CRL given."""
    return subprocess.run(["openssl", "verify", "-crl_check", "-CAfile", str(p.dir / "root.crt.pem"), "-untrusted",
                           str(p.dir / "qualified.crt.pem"), "-CRLfile", str(crl_pem), str(cert)],
                          capture_output=True, text=True)


def _published(pub: Path) -> dict[str, bytes]:
    """The published files (not the temporary ones a killed run leaves, which no URL serves)."""
    return {f.name: f.read_bytes() for f in sorted(pub.iterdir()) if f.is_file() and not f.name.startswith(".")}


def test_issuance_names_one_partition_and_records_it(parts: Partitioned) -> None:
    assert _dp(parts.legacy.pem_path) == [URL]
    with Registry.open(parts.registry) as reg:
        assert reg.get(parts.legacy.serial).crl_partition is None
        for index, certs in parts.by_partition.items():
            for one in certs:
                assert one.serial % 2 == index and reg.get(one.serial).crl_partition == index
                assert _dp(one.pem_path) == [f"http://pki.test.scse.ml/crl/qualified-p{index}.crl"]
        full, named = reg.crl_scopes_named(dt.datetime.now(dt.UTC))
    assert full is True and named == [0, 1]


def test_partition_crls_published_with_the_full_crl_openssl_and_pkilint_agree(parts: Partitioned,
                                                                              tmp_path: Path) -> None:
    reg = parts.copy_registry(tmp_path / "reg")
    revoked, good = parts.by_partition[0][0], parts.by_partition[0][1]
    other = parts.by_partition[1][0]
    with Registry.open(reg) as r:
        r.revoke(revoked.serial, "keyCompromise")
        r.revoke(parts.legacy.serial, "superseded")
    pub = tmp_path / "pub"
    said: list[str] = []
    result = run_crl_job(parts.definition, "qualified", reg, pub, say=said.append)
    assert [c.partition for c in result.crls] == [None, 0, 1] and result.signed
    assert sorted(_published(pub)) == sorted(["qualified.crl", "qualified.crl.pem", "qualified-p0.crl",
                                              "qualified-p0.crl.pem", "qualified-p1.crl", "qualified-p1.crl.pem"])
    assert "full CRL #1 (2 entries) and 2 partitions p0 #1 (1), p1 #1 (0)" in said[0]
    for c in result.crls:
        crl = x509.load_der_x509_crl(c.der_path.read_bytes())
        assert [f for f in lint_crl(c.der_path.read_bytes()) if f.severity != "INFO"] == []
        serials = {e.serial_number for e in crl}
        if c.partition is None:  # the full CRL lists every revocation and has no issuing distribution point
            assert serials == {revoked.serial, parts.legacy.serial}
            with pytest.raises(x509.ExtensionNotFound):
                crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
            continue
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
        assert idp.critical and idp.value.only_contains_user_certs
        assert [n.value for n in idp.value.full_name] == [partition_crl_url(URL, c.partition)] == [c.url]
        assert serials == ({revoked.serial} if c.partition == 0 else set())  # only in its own partition
    p0, p1 = pub / "qualified-p0.crl.pem", pub / "qualified-p1.crl.pem"
    refused = _verify(parts, revoked.pem_path, p0)
    assert refused.returncode != 0 and "certificate revoked" in refused.stdout + refused.stderr
    assert _verify(parts, good.pem_path, p0).returncode == 0
    assert _verify(parts, other.pem_path, p1).returncode == 0
    # A partition CRL is not the CRL of a certificate of another partition (its scope does not match).
    wrong = _verify(parts, other.pem_path, p0)
    assert wrong.returncode != 0 and "different CRL scope" in wrong.stdout + wrong.stderr
    legacy = _verify(parts, parts.legacy.pem_path, pub / "qualified.crl.pem")
    assert legacy.returncode != 0 and "certificate revoked" in legacy.stdout + legacy.stderr
    # Metrics: per partition, and the CA-level nextUpdate is the soonest of all.
    text = metrics_for(result, "qualified", result.der_path, 1.0).render()
    assert 'x509_crl_partition_number{ca="qualified",partition="0"} 1' in text
    assert 'x509_crl_partition_entries{ca="qualified",partition="0"} 1' in text
    assert 'x509_crl_partition_entries{ca="qualified",partition="1"} 0' in text
    # Nothing changed: not due; a revocation in partition 1 makes all of them due, each with its next number.
    assert not run_crl_job(parts.definition, "qualified", reg, pub).signed
    with Registry.open(reg) as r:
        r.revoke(other.serial, "cessationOfOperation")
    again = run_crl_job(parts.definition, "qualified", reg, pub)
    assert again.signed and [(c.partition, c.number, c.entries) for c in again.crls] == \
        [(None, 2, 3), (0, 2, 1), (1, 2, 1)]
    assert again.reason == "the full CRL: revocations changed (2 → 3)"
    assert [last_reserved(state_path(pub, "qualified", p)) for p in (None, 0, 1)] == [2, 2, 2]


def test_targets_follow_what_certificates_name_not_only_the_definition(parts: Partitioned, tmp_path: Path) -> None:
    """A later change of N (or turning partitions off) never drops a CRL an unexpired certificate names."""
    now = dt.datetime.now(dt.UTC)
    data = copy.deepcopy(base_definition_data())

    def targets(partitions: int | None, at: dt.datetime = now) -> list[int | None]:
        d = copy.deepcopy(data)
        if partitions is not None:
            d["cas"]["qualified"]["crl"]["partitions"] = partitions
        defn = load_definition(write_definition(tmp_path / f"pki-{partitions}.yml", d))
        with Registry.open(parts.registry) as reg:
            return [t.partition for t in crl_targets(defn.model.cas["qualified"], "qualified", tmp_path, reg, at)]

    assert targets(4) == [None, 0, 1, 2, 3]
    assert targets(None) == [None, 0, 1]  # partitions off: the full CRL again, and the partitions still named
    with Registry.open(parts.registry) as reg:
        last_expiry = max(r.not_after for r in reg.list())
    assert targets(3, last_expiry + dt.timedelta(seconds=1)) == [0, 1, 2]  # nothing left names the full CRL


def _cli(p: Partitioned, reg: Path, pub: Path, *extra: str, kill: str | None = None) -> \
        subprocess.CompletedProcess[str]:
    env = {**os.environ, **({KILL_HOOK_ENV: kill} if kill else {})}
    return subprocess.run([sys.executable, "-c", "import sys; from ceremony.crl.cli import crl_sign_main; "
                           "sys.exit(crl_sign_main())", "--definition", str(p.definition), "--ca", "qualified",
                           "--registry", str(reg), "--out", str(pub), *extra], capture_output=True, text=True, env=env)


def test_kill_between_partitions_or_among_the_renames_never_half_publishes(parts: Partitioned,
                                                                           tmp_path: Path) -> None:
    reg = parts.copy_registry(tmp_path / "reg")
    pub = tmp_path / "pub"
    assert _cli(parts, reg, pub).returncode == 0
    first = _published(pub)
    # Killed after the full CRL was signed, before the partitions: nothing published changes.
    killed = _cli(parts, reg, pub, "--force", kill="between-partitions")
    assert killed.returncode == -9
    assert _published(pub) == first and not journal_path(pub, "qualified").exists()
    assert last_reserved(state_path(pub, "qualified")) == 2  # the killed run's numbers stay reserved
    # Killed among the renames: the journal names the rest; the next run finishes them before anything else.
    killed = _cli(parts, reg, pub, "--force", kill="mid-publish")
    assert killed.returncode == -9 and journal_path(pub, "qualified").exists()
    half = _published(pub)
    assert half != first and _number(half["qualified.crl"]) != _number(half["qualified-p1.crl"])
    finished = _cli(parts, reg, pub)
    assert finished.returncode == 0, finished.stderr
    assert "nothing signed" in finished.stdout and not journal_path(pub, "qualified").exists()
    done = _published(pub)
    numbers = {name: _number(der) for name, der in done.items() if name.endswith(".crl")}
    assert numbers == {"qualified.crl": 3, "qualified-p0.crl": 2, "qualified-p1.crl": 2}
    assert not list(pub.glob(".*.tmp"))
    for name, der in done.items():  # each PEM is its DER, all of the same (finished) run
        if name.endswith(".pem"):
            assert x509.load_pem_x509_crl(der).public_bytes(serialization.Encoding.DER) == done[name[:-4]]
    forced = run_crl_job(parts.definition, "qualified", reg, pub, force=True)
    assert [c.number for c in forced.crls] == [4, 3, 3]


@pytest.mark.parametrize("bad", ["corrupt-state", "state-ahead", "corrupt-journal", "corrupt-partition-crl"])
def test_bad_partition_state_is_refused_and_changes_nothing(parts: Partitioned, tmp_path: Path, bad: str) -> None:
    reg = parts.copy_registry(tmp_path / "reg")
    pub = tmp_path / "pub"
    run_crl_job(parts.definition, "qualified", reg, pub)
    state = state_path(pub, "qualified", 1)
    if bad == "corrupt-state":
        state.write_text("{\"last_reserved\": \"seven\"}\n")
        needle = f"{state}: the CRL number state is corrupt"
    elif bad == "state-ahead":
        state.write_text(json.dumps({"last_reserved": 2 + MAX_UNPUBLISHED}) + "\n")
        needle = f"{state}: the CRL number state has reserved up to {2 + MAX_UNPUBLISHED}, but the published CRL"
    elif bad == "corrupt-journal":
        journal_path(pub, "qualified").write_text("not json")
        needle = "the publication journal is corrupt"
    else:
        (pub / "qualified-p1.crl").write_bytes(b"\x30\x03garbage")
        needle = f"{pub / 'qualified-p1.crl'}: the published CRL does not parse"
    before = tree(pub), _published(pub), {p.name: p.read_bytes() for p in (pub / ".state").iterdir()}
    with pytest.raises(CeremonyError) as err:
        run_crl_job(parts.definition, "qualified", reg, pub, force=True)
    assert needle in str(err.value) and ("nothing was signed" in str(err.value) or bad == "corrupt-partition-crl")
    assert (tree(pub), _published(pub), {p.name: p.read_bytes() for p in (pub / ".state").iterdir()}) == before
    cli = _cli(parts, reg, pub, "--force")
    assert cli.returncode != 0 and cli.stderr.startswith("error: ") and len(cli.stderr.splitlines()) == 1
    assert "Traceback" not in cli.stderr


def test_a_partition_failing_its_previous_check_publishes_nothing(parts: Partitioned, tmp_path: Path) -> None:
    """The previous-CRL check runs per partition; one refusal leaves every CRL of the CA as it was."""
    reg = parts.copy_registry(tmp_path / "reg")
    pub = tmp_path / "pub"
    run_crl_job(parts.definition, "qualified", reg, pub)
    # Partition 1 now serves partition 0's CRL (another scope): the next CRL of partition 1 does not follow it.
    (pub / "qualified-p1.crl").write_bytes((pub / "qualified-p0.crl").read_bytes())
    before = tree(pub), _published(pub)
    with pytest.raises(CeremonyError) as err:
        run_crl_job(parts.definition, "qualified", reg, pub, force=True)
    message = str(err.value)
    assert message.startswith(f"{pub / 'qualified-p1.crl'} (partition 1): the new CRL does not follow the previous "
                              "one: its issuing distribution point (the partition or scope it covers) differs")
    assert message.endswith("nothing was published")
    assert (tree(pub), _published(pub)) == before and not journal_path(pub, "qualified").exists()


def test_partitions_refused_on_the_root_and_out_of_bounds(tmp_path: Path) -> None:
    for ca, value, needle in (("root", 2, "cas.root.crl.partitions: the offline root's CRLs"),
                              ("qualified", 1, "cas.qualified.crl.partitions: 1 partitions (allowed: a whole number "
                                               "from 2 to 256"),
                              ("qualified", 100_000, "cas.qualified.crl.partitions: 100000 partitions")):
        data = base_definition_data()
        data["cas"][ca]["crl"]["partitions"] = value
        path = write_definition(tmp_path / "pki.yml", data)
        with pytest.raises(DefinitionError) as err:
            load_definition(path)
        assert needle in str(err.value), str(err.value)
    assert partition_crl_url(URL, 3) == "http://pki.test.scse.ml/crl/qualified-p3.crl"
    assert partition_crl_url("http://h.example/crl/q", 0) == "http://h.example/crl/q-p0"


def test_a_v1_registry_migrates_and_its_certificates_name_the_full_crl(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "registry.sqlite3"
    monkeypatch.setattr(registry_module, "MIGRATIONS", registry_module.MIGRATIONS[:1])
    monkeypatch.setattr(registry_module, "SCHEMA_VERSION", 1)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript("CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);"
                       + registry_module.MIGRATIONS[0])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    conn.close()
    monkeypatch.undo()
    with Registry.open(path) as reg:
        assert reg.schema_version == registry_module.SCHEMA_VERSION and reg.migration_backup is not None
        reg.add(CertRecord(7, "CN=x", "p", now - dt.timedelta(days=1), now + dt.timedelta(days=9), "0" * 64, "good"))
        reg.revoke(7, "superseded", now=now)
        assert reg.get(7).crl_partition is None and reg.crl_scopes_named(now) == (True, [])
        assert reg.count_revoked_in(0) == 0 and len(b"".join(reg.iter_revoked_packed())) == 45


def test_metrics_of_a_failed_run_still_show_the_served_partitions(parts: Partitioned, tmp_path: Path) -> None:
    reg = parts.copy_registry(tmp_path / "reg")
    pub = tmp_path / "pub"
    run_crl_job(parts.definition, "qualified", reg, pub)
    metrics = metrics_for(None, "qualified", pub / "qualified.crl", 1.0, error=OutputError("x"))
    path = tmp_path / "m.prom"
    path.write_text(metrics.render())
    assert read_sample(path, "x509_crl_partition_number", ca="qualified", partition="1") == 1
    assert read_sample(path, "x509_crl_last_run_success", ca="qualified") == 0
    nexts = [summarise(x509.load_der_x509_crl((pub / n).read_bytes())).next_update
             for n in ("qualified.crl", "qualified-p0.crl", "qualified-p1.crl")]
    assert read_sample(path, "x509_crl_next_update_seconds", ca="qualified") == min(n.timestamp() for n in nexts
                                                                                   if n is not None)
