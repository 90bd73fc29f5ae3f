"""The subordinate CRL job on real SoftHSM tokens: openssl, pkilint, previous-CRL checks, crash safety.

One hierarchy (root, qualified CA, two end-entity certificates in a registry) is built per module;
each test works on its own copy of the registry and its own publication directory.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import SOFTHSM_CONF, base_definition_data, tree, write_definition
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ceremony.ca.registry import CertRecord, Registry
from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
from ceremony.common.errors import CeremonyError, DefinitionError, RegistryError, VerificationError
from ceremony.common.fingerprints import sha256_hex
from ceremony.crl.encoding import lint_crl
from ceremony.crl.job import KILL_HOOK_ENV, run_crl_job
from ceremony.crl.state import last_reserved, state_path
from ceremony.definition.model import load_definition
from ceremony.hsm import softhsm
from ceremony.hsm.session import open_session, pin_source_for
from ceremony.hsm.signers import hash_for, signing_key
from ceremony.transcript.recorder import ConsoleRecorder

pytestmark = pytest.mark.hsm
PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER


@dataclass
class Pki:
    """A built hierarchy: definition, CA certificates, registry with a good and a to-be-revoked EE."""

    dir: Path
    definition: Path
    registry: Path
    good: Path
    bad: Path
    good_serial: int
    bad_serial: int

    def copy_registry(self, dest: Path) -> Path:
        target = dest / "registry.sqlite3"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.registry, target)
        return target


def _token_definition(base: Path, mutate: Any = None) -> Path:
    data = base_definition_data()
    data["cas"]["root"]["backup"] = {"mode": "none"}
    for ca_name, ca in data["cas"].items():
        suffix = secrets.token_hex(4)
        label = f"crl-{ca_name}-{suffix}"[:32]
        env = f"TEST_CRL_PIN_{ca_name.upper()}_{suffix.upper()}"
        pin, so = softhsm.random_pin(), softhsm.random_pin()
        softhsm.init_token(SOFTHSM_CONF, label, pin, so)
        os.environ[env], os.environ[env + "_SO"] = pin, so
        ca["hsm"].update({"module": softhsm.softhsm_module(), "token": {"label": label}, "pin_env": env,
                          "so_pin_env": env + "_SO"})
    if mutate:
        mutate(data)
    base.mkdir(parents=True, exist_ok=True)
    return write_definition(base / "pki.yml", data)


def issue_ee(defn_path: Path, out: Path, name: str) -> x509.Certificate:
    """A minimal end-entity certificate signed through the qualified CA's HSM key (test helper)."""
    defn = load_definition(defn_path)
    ca = defn.model.cas["qualified"]
    issuer = x509.load_pem_x509_certificate((out / "qualified.crt.pem").read_bytes())
    ee_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name.from_rfc4514_string(f"CN={name},C=ML"))
               .issuer_name(issuer.subject).public_key(ee_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
               .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), True)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
               .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                   [x509.UniformResourceIdentifier(ca.publication.crl_url)], None, None, None)]), False))
    with open_session(ca.hsm, pin_source_for(ca.hsm, interactive=False)) as session:
        key = signing_key(session, ca.hsm.key_label)
        cert = builder.sign(key, hash_for(key))
    (out / f"{name}.pem").write_bytes(cert.public_bytes(PEM))
    return cert


def record_for(cert: x509.Certificate, profile: str = "test") -> CertRecord:
    return CertRecord(serial=cert.serial_number, subject=cert.subject.rfc4514_string(), profile=profile,
                      not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                      sha256=sha256_hex(cert.public_bytes(DER)), status="good", revoked_at=None, reason=None,
                      invalidity_date=None)


def build_pki(base: Path) -> Pki:
    pki = _token_definition(base)
    defn = load_definition(pki)
    rec = ConsoleRecorder(rehearsal=True)
    root_ceremony(defn, base, rec, rehearsal=True, interactive=False)
    subordinate_key_ceremony(defn, "qualified", base, rec, rehearsal=True, interactive=False)
    sign_subordinate_ceremony(defn, "qualified", base / "qualified.csr.pem", base, rec, rehearsal=True,
                              interactive=False)
    good, bad = issue_ee(pki, base, "good"), issue_ee(pki, base, "bad")
    registry = base / "registry.sqlite3"
    with Registry.open(registry, create=True) as reg:
        reg.add_many([record_for(good), record_for(bad)])
    return Pki(base, pki, registry, base / "good.pem", base / "bad.pem", good.serial_number, bad.serial_number)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("crl-pki"))


def job(p: Pki, registry: Path, out: Path, **kw: Any) -> Any:
    return run_crl_job(p.definition, "qualified", registry, out, **kw)


def openssl_verify(p: Pki, cert: Path, *crls: Path) -> subprocess.CompletedProcess[str]:
    args = ["openssl", "verify", "-crl_check_all", "-CAfile", str(p.dir / "root.crt.pem"),
            "-untrusted", str(p.dir / "qualified.crt.pem")]
    for c in crls:
        args += ["-CRLfile", str(c)]
    return subprocess.run([*args, str(cert)], capture_output=True, text=True)


def test_openssl_accepts_good_rejects_revoked_and_checks_sub_against_root_crl(pki: Pki, tmp_path: Path) -> None:
    from ceremony.ceremonies.root_crl import root_crl_batch_ceremony

    reg = pki.copy_registry(tmp_path / "reg")
    with Registry.open(reg) as r:
        assert r.revoke(pki.bad_serial, "keyCompromise")
    pub = tmp_path / "pub"
    result = job(pki, reg, pub)
    assert result.signed and result.entries == 1 and result.number == 1
    sub_crl = pub / "qualified.crl"
    assert (pub / "qualified.crl.pem").read_bytes().startswith(b"-----BEGIN X509 CRL-----")
    root_out = tmp_path / "root"
    shutil.copytree(pki.dir, root_out, ignore=shutil.ignore_patterns("registry.sqlite3*", "crl"))
    batch = root_crl_batch_ceremony(load_definition(pki.definition), root_out, ConsoleRecorder(rehearsal=True),
                                    rehearsal=True, interactive=False, count=1)
    root_crl = batch.crls[0].pem_path
    ok = openssl_verify(pki, pki.good, sub_crl.with_suffix(".crl.pem"), root_crl)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    revoked = openssl_verify(pki, pki.bad, sub_crl.with_suffix(".crl.pem"), root_crl)
    assert revoked.returncode != 0 and "certificate revoked" in revoked.stdout + revoked.stderr
    # Without the root CRL the subordinate cannot be checked: -crl_check_all really uses it.
    missing = openssl_verify(pki, pki.good, sub_crl.with_suffix(".crl.pem"))
    assert missing.returncode != 0 and "unable to get certificate CRL" in missing.stdout + missing.stderr
    # pkilint: no ERROR (nor WARNING) on either CRL.
    assert not [f for f in lint_crl(sub_crl.read_bytes()) if f.severity in ("ERROR", "FATAL", "WARNING")]
    assert not [f for f in lint_crl(batch.crls[0].der_path.read_bytes(), ca_only=True)
                if f.severity in ("ERROR", "FATAL", "WARNING")]
    crl = x509.load_der_x509_crl(sub_crl.read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(pki.bad_serial)
    assert entry is not None
    # Qualified certificates' status outlives them: ExpiredCertsOnCRL (2.5.29.60, non-critical) says revoked
    # certificates are listed after expiry since the CA began (its certificate's notBefore, GeneralizedTime).
    expired = crl.extensions.get_extension_for_oid(x509.ObjectIdentifier("2.5.29.60"))
    ca_cert = x509.load_pem_x509_certificate((pki.dir / "qualified.crt.pem").read_bytes())
    assert not expired.critical
    assert expired.value.value == b"\x18\x0f" + ca_cert.not_valid_before_utc.strftime("%Y%m%d%H%M%SZ").encode()
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert crl.next_update_utc - crl.last_update_utc == dt.timedelta(days=7)


def test_not_due_then_due_on_revocation_and_number_increases(pki: Pki, tmp_path: Path) -> None:
    reg = pki.copy_registry(tmp_path / "reg")
    pub = tmp_path / "pub"
    first = job(pki, reg, pub)
    assert first.signed and first.entries == 0
    again = job(pki, reg, pub)
    assert not again.signed and again.number == first.number
    with Registry.open(reg) as r:
        r.revoke(pki.good_serial, "superseded")
    second = job(pki, reg, pub)
    assert second.signed and second.number == first.number + 1 and second.entries == 1
    later = job(pki, reg, pub, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=25))
    assert later.signed and later.number == second.number + 1 and "interval" in later.reason
    assert last_reserved(state_path(pub, "qualified")) == later.number


def _sign_at(pki: Pki, reg: Path, pub: Path, **kw: Any) -> Any:
    return job(pki, reg, pub, force=True, **kw)


def test_previous_check_refuses_lower_number(pki: Pki, tmp_path: Path) -> None:
    reg = pki.copy_registry(tmp_path / "reg")
    pub = tmp_path / "pub"
    _sign_at(pki, reg, pub)
    _sign_at(pki, reg, pub)
    # The state file is lost and an older CRL restored over the publication: numbers can only go up.
    published = (pub / "qualified.crl").read_bytes()
    state_path(pub, "qualified").unlink()
    result = _sign_at(pki, reg, pub)
    assert result.number == 3
    assert x509.load_der_x509_crl(published).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2


def test_previous_check_failures_leave_publication_unchanged(pki: Pki, tmp_path: Path) -> None:
    from ceremony.crl import checks as crl_check

    reg = pki.copy_registry(tmp_path / "reg")
    with Registry.open(reg) as r:
        r.revoke(pki.bad_serial, "keyCompromise")
    pub = tmp_path / "pub"
    _sign_at(pki, reg, pub)
    before = (pub / "qualified.crl").read_bytes()
    # thisUpdate earlier than the published one (clock went backwards).
    with pytest.raises(VerificationError, match="clock is behind"):
        _sign_at(pki, reg, pub, now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    # An entry dropped while the certificate is unexpired: the registry lost the revocation.
    fresh = pki.copy_registry(tmp_path / "restored")
    with pytest.raises(VerificationError, match="dropped"):
        _sign_at(pki, fresh, pub)
    assert (pub / "qualified.crl").read_bytes() == before
    # Each rule on its own, through the checker.
    prev = before
    with pytest.raises(VerificationError, match="not greater"):
        crl_check.check_against_previous(prev, prev, lambda s: None)


def test_previous_check_rules_individually(pki: Pki, tmp_path: Path) -> None:
    """Number, issuer, thisUpdate, dropped entries: each rule fails on its own."""
    from ceremony.crl import encoding as crlenc
    from ceremony.crl.checks import check_against_previous

    key = ec.generate_private_key(ec.SECP384R1())
    issuer = x509.Name.from_rfc4514_string("CN=Test CA,C=ML")
    t0 = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    rows = [(10, 1760000000, 1, None, 2000000000), (20, 1760000000, None, None, 1770000000)]

    def make(number: int, this: dt.datetime, entries: list[Any], name: x509.Name = issuer,
             aki: bytes = b"\x01" * 20) -> bytes:
        h = crlenc.CrlHeader(name, aki, number, this, this + dt.timedelta(days=7))
        return crlenc.build_crl(h, entries, key)[0]

    prev = make(5, t0, rows)
    assert check_against_previous(prev, make(6, t0 + dt.timedelta(days=1), rows), lambda s: None)
    with pytest.raises(VerificationError, match="not greater"):
        check_against_previous(prev, make(5, t0 + dt.timedelta(days=1), rows), lambda s: None)
    with pytest.raises(VerificationError, match="issuer name differs"):
        check_against_previous(prev, make(6, t0, rows, name=x509.Name.from_rfc4514_string("CN=Other")),
                               lambda s: None)
    with pytest.raises(VerificationError, match="key identifier differs"):
        check_against_previous(prev, make(6, t0, rows, aki=b"\x02" * 20), lambda s: None)
    with pytest.raises(VerificationError, match="earlier than"):
        check_against_previous(prev, make(6, t0 - dt.timedelta(seconds=1), rows), lambda s: None)
    expiry = {10: dt.datetime(2033, 5, 18, tzinfo=dt.UTC), 20: dt.datetime(2026, 1, 31, tzinfo=dt.UTC)}
    with pytest.raises(VerificationError, match=r"dropped.*serials a"):
        check_against_previous(prev, make(6, t0, rows[1:]), expiry.get)
    # Serial 20 expired before the new thisUpdate: it may leave the CRL.
    assert check_against_previous(prev, make(6, t0, rows[:1]), expiry.get)


def test_crash_between_signing_and_publishing_never_reuses_a_number(pki: Pki, tmp_path: Path) -> None:
    reg = pki.copy_registry(tmp_path / "reg")
    pub = tmp_path / "pub"
    args = [sys.executable, "-c", "import sys; from ceremony.crl.cli import crl_sign_main; sys.exit(crl_sign_main())",
            "--definition", str(pki.definition), "--ca", "qualified", "--registry", str(reg), "--out", str(pub),
            "--metrics-dir", str(tmp_path / "metrics")]
    first = subprocess.run(args, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    published = (pub / "qualified.crl").read_bytes()
    killed = subprocess.run([*args, "--force"], capture_output=True, text=True,
                            env={**os.environ, KILL_HOOK_ENV: "after-sign"})
    assert killed.returncode == -9
    assert (pub / "qualified.crl").read_bytes() == published  # previous CRL still published, intact
    assert x509.load_der_x509_crl(published).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
    assert last_reserved(state_path(pub, "qualified")) == 2  # the killed run's number was reserved
    staged = subprocess.run([*args, "--force"], capture_output=True, text=True,
                            env={**os.environ, KILL_HOOK_ENV: "before-publish"})
    assert staged.returncode == -9
    assert (pub / "qualified.crl").read_bytes() == published and list(pub.glob(".qualified.crl*.tmp"))
    assert last_reserved(state_path(pub, "qualified")) == 3
    second = subprocess.run([*args, "--force"], capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert not list(pub.glob(".*.tmp"))  # the killed run's temporary files are gone
    crl = x509.load_der_x509_crl((pub / "qualified.crl").read_bytes())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 4
    metrics = (tmp_path / "metrics" / "ceremony_crl_qualified.prom").read_text()
    assert 'x509_crl_number{ca="qualified"} 4' in metrics
    assert 'x509_crl_last_run_success{ca="qualified"} 1' in metrics
    assert 'x509_crl_entries{ca="qualified"} 0' in metrics
    assert "x509_crl_next_update_seconds" in metrics


def test_cli_failure_is_one_line_and_metrics_say_failure(pki: Pki, tmp_path: Path) -> None:
    pub = tmp_path / "pub"
    bad_registry = tmp_path / "corrupt.sqlite3"
    bad_registry.write_bytes(b"this is not a database" * 100)
    run = subprocess.run([sys.executable, "-c", "import sys; from ceremony.crl.cli import crl_sign_main; "
                          "sys.exit(crl_sign_main())", "--definition", str(pki.definition), "--ca", "qualified",
                          "--registry", str(bad_registry), "--out", str(pub), "--metrics-dir", str(tmp_path / "m")],
                         capture_output=True, text=True)
    assert run.returncode == RegistryError.exit_code
    assert len(run.stderr.strip().splitlines()) == 1 and run.stderr.startswith("error: ")
    assert "corrupt" in run.stderr or "not a" in run.stderr
    metrics = (tmp_path / "m" / "ceremony_crl_qualified.prom").read_text()
    assert 'x509_crl_last_run_success{ca="qualified"} 0' in metrics
    assert not pub.exists()  # nothing created: not even the state directory


def test_corrupt_or_locked_registry_leaves_published_crl_unchanged(pki: Pki, tmp_path: Path) -> None:
    import sqlite3

    reg = pki.copy_registry(tmp_path / "reg")
    pub = tmp_path / "pub"
    job(pki, reg, pub)
    before = tree(pub), (pub / "qualified.crl").read_bytes()
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    with pytest.raises(RegistryError):
        job(pki, corrupt, pub, force=True)
    holder = sqlite3.connect(reg, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(RegistryError, match="locked"):
            job(pki, reg, pub, force=True, registry_timeout=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (tree(pub), (pub / "qualified.crl").read_bytes()) == before


@pytest.mark.parametrize(("path", "value", "match"), [
    ("lifetime", "11d", "at most 10d"),
    ("interval", "8d", "at most 7d"),
    ("clock_skew", "2h", "clock_skew"),
])
def test_definition_crl_limits_refused_through_the_job(pki: Pki, tmp_path: Path, path: str, value: str,
                                                        match: str) -> None:
    import yaml

    data = yaml.safe_load(pki.definition.read_text())
    data["cas"]["qualified"]["crl"][path] = value
    if path == "interval":
        data["cas"]["qualified"]["crl"]["lifetime"] = "9d"
    bad = write_definition(tmp_path / "pki.yml", data)
    pub = tmp_path / "pub"
    with pytest.raises(DefinitionError, match=match):
        run_crl_job(bad, "qualified", pki.registry, pub, ca_cert=pki.dir / "qualified.crt.pem")
    assert not pub.exists()


def test_root_is_refused_and_missing_ca_cert_is_clear(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="root"):
        run_crl_job(pki.definition, "root", pki.registry, tmp_path / "pub")
    with pytest.raises(CeremonyError, match="not there"):
        run_crl_job(pki.definition, "qualified", pki.registry, tmp_path / "pub", ca_cert=tmp_path / "nope.pem")


def test_metrics_render_is_prometheus_text() -> None:
    from ceremony.crl.metrics import CrlMetrics

    text = CrlMetrics("qualified", True, 7, 3, 1.5e9, 0.25).render(now=1.6e9)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert 'x509_crl_number{ca="qualified"} 7' in lines
    # Prometheus's text format, as its own checker reads it (promtool: scripts/bootstrap.sh installs it).
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_above_the_full_lint_size_the_sample_is_linted_and_the_crl_is_whole(pki: Pki, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from ceremony.crl import encoding as crlenc
    from ceremony.crl.checks import entry_serials

    monkeypatch.setattr(crlenc, "LINT_FULL_MAX", 50)
    reg = pki.copy_registry(tmp_path / "reg")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    records = [CertRecord(serial=(i << 100) | 12345, subject=f"CN=n{i}", profile="test",
                          not_before=now - dt.timedelta(days=10), not_after=now + dt.timedelta(days=300),
                          sha256="ab" * 32, status="revoked", revoked_at=now - dt.timedelta(days=i % 9),
                          reason=["keyCompromise", "superseded", "unspecified", "cessationOfOperation"][i % 4],
                          invalidity_date=now - dt.timedelta(days=20) if i % 7 == 0 else None)
               for i in range(1, 301)]
    with Registry.open(reg) as r:
        r.add_many(records)
    result = job(pki, reg, tmp_path / "pub")
    der = (tmp_path / "pub" / "qualified.crl").read_bytes()
    assert result.entries == 300 and sorted(entry_serials(der)) == sorted(r.serial for r in records)
    parsed = subprocess.run(["openssl", "crl", "-inform", "DER", "-noout", "-in",
                             str(tmp_path / "pub" / "qualified.crl")], capture_output=True)
    assert parsed.returncode == 0
    assert not [f for f in lint_crl(der) if f.blocking]
    # A reason the BR forbid is caught by the sample lint, before the HSM signs: nothing published.
    with Registry.open(reg) as r:
        r.add(CertRecord(serial=7 << 140, subject="CN=hold", profile="test", not_before=now - dt.timedelta(days=1),
                         not_after=now + dt.timedelta(days=30), sha256="cd" * 32, status="revoked",
                         revoked_at=now, reason="certificateHold", invalidity_date=None))
    from ceremony.common.errors import LintError

    with pytest.raises(LintError, match="structural sample"):
        job(pki, reg, tmp_path / "pub")
    assert (tmp_path / "pub" / "qualified.crl").read_bytes() == der
    assert last_reserved(state_path(tmp_path / "pub", "qualified")) == result.number  # no number burnt


def test_cli_with_the_role_command_line_and_a_pin_file(pki: Pki, tmp_path: Path) -> None:
    """Exactly the options roles/crl_signer passes; the PIN only in a 0600 file, not in the environment."""
    import yaml

    reg = pki.copy_registry(tmp_path / "reg")
    env_name = yaml.safe_load(pki.definition.read_text())["cas"]["qualified"]["hsm"]["pin_env"]
    pin_file = tmp_path / "qualified.pin"
    pin_file.write_text(os.environ[env_name] + "\n")
    pin_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k != env_name}
    cmd = [str(Path(sys.executable).parent / "ceremony-crl-sign"), "--definition", str(pki.definition),
           "--ca", "qualified", "--registry", str(reg), "--out", str(tmp_path / "pub"), "--pin-file", str(pin_file),
           "--metrics-dir", str(tmp_path / "metrics")]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "CRL 1 of 'qualified' signed and published" in run.stdout
    assert (tmp_path / "pub" / "qualified.crl").exists() and (tmp_path / "pub" / "qualified.crl.pem").exists()
    no_pin = subprocess.run(cmd[:-4] + cmd[-2:] + ["--force"], capture_output=True, text=True, env=env)
    assert no_pin.returncode != 0 and no_pin.stderr.startswith("error: ") and len(no_pin.stderr.splitlines()) == 1
    assert os.environ[env_name] not in no_pin.stderr + no_pin.stdout
    metrics = (tmp_path / "metrics" / "ceremony_crl_qualified.prom").read_text()
    assert 'x509_crl_last_run_success{ca="qualified"} 0' in metrics and 'x509_crl_number{ca="qualified"} 1' in metrics


def _openssl_crl_times(der_path: Path) -> tuple[dt.datetime, list[dt.datetime]]:
    """thisUpdate and every revocationDate as ``openssl crl -text`` reads them (an independent parser)."""
    text = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(der_path), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout

    def when(value: str) -> dt.datetime:
        return dt.datetime.strptime(" ".join(value.split()), "%b %d %H:%M:%S %Y GMT").replace(tzinfo=dt.UTC)

    lines = [line.strip() for line in text.splitlines()]
    this_update = when(next(x for x in lines if x.startswith("Last Update:")).split(":", 1)[1])
    revoked = [when(x.split(":", 1)[1]) for x in lines if x.startswith("Revocation Date:")]
    return this_update, revoked


def test_this_update_never_precedes_a_revocation_it_lists(pki: Pki, tmp_path: Path) -> None:
    """Revoke, then sign at once: thisUpdate is set back by the clock skew (5m), but not before the entry."""
    reg = pki.copy_registry(tmp_path / "reg")
    with Registry.open(reg) as r:
        assert r.revoke(pki.bad_serial, "keyCompromise")
        revoked_at = r.get(pki.bad_serial).revoked_at
    pub = tmp_path / "pub"
    result = job(pki, reg, pub)
    this_update, revocations = _openssl_crl_times(pub / "qualified.crl")
    assert revocations == [revoked_at] and this_update >= revoked_at
    assert this_update == revoked_at == result.this_update, "set back only as far as the revocation"
    crl = x509.load_der_x509_crl((pub / "qualified.crl").read_bytes())
    assert crl.next_update_utc - crl.last_update_utc == dt.timedelta(days=7)  # the definition's lifetime
    assert all(crl.last_update_utc >= e.revocation_date_utc for e in crl)


def test_this_update_keeps_the_clock_skew_for_older_revocations(pki: Pki, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    reg = pki.copy_registry(tmp_path / "reg")
    with Registry.open(reg) as r:
        assert r.revoke(pki.bad_serial, "keyCompromise", now=now - dt.timedelta(hours=1))
    result = job(pki, reg, tmp_path / "pub", now=now)
    this_update, revocations = _openssl_crl_times(tmp_path / "pub" / "qualified.crl")
    assert this_update == result.this_update == now - dt.timedelta(minutes=5)
    assert revocations == [now - dt.timedelta(hours=1)]


def test_a_revocation_after_the_clock_is_refused(pki: Pki, tmp_path: Path) -> None:
    """A revocation dated after this host's time: the clock is wrong; nothing is signed, no number is burnt."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    reg = pki.copy_registry(tmp_path / "reg")
    with Registry.open(reg) as r:
        assert r.revoke(pki.bad_serial, "keyCompromise", now=now + dt.timedelta(minutes=10))
    pub = tmp_path / "pub"
    with pytest.raises(VerificationError) as info:
        job(pki, reg, pub, now=now)
    assert "the clock is behind the latest revocation" in str(info.value) and "nothing was signed" in str(info.value)
    assert not (pub / "qualified.crl").exists() and not (pub / "qualified.crl.pem").exists()
    assert last_reserved(state_path(pub, "qualified")) == 0
