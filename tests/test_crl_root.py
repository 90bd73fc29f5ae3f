"""Root CRL batches: consecutive numbers, overlapping validity, revoking a subordinate CA, refusals."""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import tree
from cryptography import x509
from test_crl_job import Pki, build_pki

from ceremony.ceremonies.root_crl import Revocation, root_crl_batch_ceremony, root_registry_path
from ceremony.common.errors import CeremonyError, VerificationError
from ceremony.crl.encoding import lint_crl
from ceremony.definition.model import load_definition
from ceremony.transcript.recorder import ConsoleRecorder

pytestmark = pytest.mark.hsm

STEPS_ONE_CRL = ["offline-check", "definition-check", "token-open", "crl-lint", "crl-sign", "crl-verify",
                 "ocsp-sign", "outputs-write", "fingerprint-read-aloud"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("crl-root-pki"))


def _root_out(pki: Pki, dest: Path) -> Path:
    shutil.copytree(pki.dir, dest, ignore=shutil.ignore_patterns("registry.sqlite3*"))
    return dest


def test_batch_has_consecutive_numbers_and_overlapping_validity(pki: Pki, tmp_path: Path) -> None:
    out = _root_out(pki, tmp_path / "root")
    rec = ConsoleRecorder(rehearsal=True)
    start = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    batch = root_crl_batch_ceremony(load_definition(pki.definition), out, rec, rehearsal=True, interactive=False,
                                    start=start)
    assert [c.number for c in batch.crls] == [1, 2, 3, 4]  # crl.batch_count: 4 in the testing definition
    assert [s for s, _ in rec.steps] == STEPS_ONE_CRL[:3] + ["crl-lint", "crl-sign", "crl-verify", "ocsp-sign"] * 4 \
        + STEPS_ONE_CRL[-2:]
    crls = [x509.load_der_x509_crl(c.der_path.read_bytes()) for c in batch.crls]
    assert crls[0].last_update_utc == start - dt.timedelta(minutes=5)
    for a, b in itertools.pairwise(crls):
        assert b.last_update_utc - a.last_update_utc == dt.timedelta(days=91)
        assert a.next_update_utc > b.last_update_utc  # overlap
    for c in crls:
        assert c.next_update_utc - c.last_update_utc == dt.timedelta(days=120)
        idp = c.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
        assert idp.critical and idp.value.only_contains_ca_certs
    kinds = [a["kind"] for a in rec.artifacts]
    assert kinds.count("root-crl") == 8
    assert kinds.count("root-ocsp-store") == 4  # the root serves OCSP (publication.ocsp_url): one store a period
    # A second batch continues the numbering.
    again = root_crl_batch_ceremony(load_definition(pki.definition), out, ConsoleRecorder(rehearsal=True),
                                    rehearsal=True, interactive=False, start=start + dt.timedelta(days=365),
                                    count=2)
    assert [c.number for c in again.crls] == [5, 6]


def test_revoking_the_subordinate_ca_makes_openssl_reject_its_chain(pki: Pki, tmp_path: Path) -> None:
    from ceremony.crl.job import run_crl_job

    out = _root_out(pki, tmp_path / "root")
    defn = load_definition(pki.definition)
    first = root_crl_batch_ceremony(defn, out, ConsoleRecorder(rehearsal=True), rehearsal=True, interactive=False,
                                    count=1)
    batch = root_crl_batch_ceremony(defn, out, ConsoleRecorder(rehearsal=True), rehearsal=True, interactive=False,
                                    count=1, revoke=[Revocation(out / "qualified.crt.pem", "keyCompromise")])
    assert batch.crls[0].number == first.crls[0].number + 1 and batch.crls[0].entries == 1
    sub = x509.load_pem_x509_certificate((out / "qualified.crt.pem").read_bytes())
    assert batch.revoked == [sub.serial_number]
    signed = x509.load_der_x509_crl(batch.crls[0].der_path.read_bytes())
    [entry] = list(signed)
    assert signed.last_update_utc >= entry.revocation_date_utc, "thisUpdate never precedes a revocation it lists"
    assert root_registry_path(out, "root").exists()
    assert not [f for f in lint_crl(batch.crls[0].der_path.read_bytes(), ca_only=True)
                if f.severity in ("ERROR", "FATAL", "WARNING")]
    reg = pki.copy_registry(tmp_path / "reg")
    run_crl_job(pki.definition, "qualified", reg, tmp_path / "pub")
    verify = subprocess.run(["openssl", "verify", "-crl_check_all", "-CAfile", str(out / "root.crt.pem"),
                             "-untrusted", str(out / "qualified.crt.pem"), "-CRLfile",
                             str(tmp_path / "pub" / "qualified.crl.pem"), "-CRLfile", str(batch.crls[0].pem_path),
                             str(pki.good)], capture_output=True, text=True)
    assert verify.returncode != 0 and "certificate revoked" in verify.stdout + verify.stderr
    # The next batch keeps the entry; revoking it again is refused and changes nothing.
    before = tree(out)
    with pytest.raises(CeremonyError, match="revoked already"):
        root_crl_batch_ceremony(defn, out, ConsoleRecorder(rehearsal=True), rehearsal=True, interactive=False,
                                count=1, revoke=[Revocation(out / "qualified.crt.pem", "keyCompromise")])
    assert tree(out) == before
    nxt = root_crl_batch_ceremony(defn, out, ConsoleRecorder(rehearsal=True), rehearsal=True, interactive=False,
                                  count=1)
    assert nxt.crls[0].entries == 1


def test_refusals_leave_disk_unchanged(pki: Pki, tmp_path: Path) -> None:
    out = _root_out(pki, tmp_path / "root")
    defn = load_definition(pki.definition)
    before = tree(out)
    with pytest.raises(VerificationError, match="not issued by this root"):
        root_crl_batch_ceremony(defn, out, ConsoleRecorder(rehearsal=True), rehearsal=True, interactive=False,
                                revoke=[Revocation(pki.good)])
    with pytest.raises(CeremonyError, match="not allowed"):
        root_crl_batch_ceremony(defn, out, ConsoleRecorder(rehearsal=True), rehearsal=True, interactive=False,
                                revoke=[Revocation(out / "qualified.crt.pem", "removeFromCRL")])
    with pytest.raises(VerificationError, match="1 to 40"):
        root_crl_batch_ceremony(defn, out, ConsoleRecorder(rehearsal=True), rehearsal=True, interactive=False,
                                count=41)
    assert tree(out) == before


def test_invoke_root_batch_task(pki: Pki, tmp_path: Path) -> None:
    import os

    from conftest import REPO

    out = _root_out(pki, tmp_path / "root")
    invoke = [str(REPO / ".venv" / "bin" / "invoke"), "crl.root-batch", "--definition", str(pki.definition),
              "--out", str(out), "--rehearsal"]
    bad = subprocess.run([*invoke, "--start", "yesterday"], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--start" in bad.stderr
    assert not (out / "transcripts").exists() and not (out / "crl").exists()
    ok = subprocess.run([*invoke, "--count", "2"], cwd=REPO, capture_output=True, text=True, env=dict(os.environ))
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr
    assert "root CRL 1:" in ok.stdout and "root CRL 2:" in ok.stdout
    assert sorted(p.name for p in (out / "crl").iterdir()) == ["root-1.crl", "root-1.crl.pem", "root-1.ocsp.sqlite3",
                                                               "root-2.crl", "root-2.crl.pem", "root-2.ocsp.sqlite3"]


def test_publish_root_crl_in_force(pki: Pki, tmp_path: Path) -> None:
    from ceremony.ceremonies.root_crl import publish_root_crl

    out = _root_out(pki, tmp_path / "root")
    defn = load_definition(pki.definition)
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    root_crl_batch_ceremony(defn, out, ConsoleRecorder(rehearsal=True), rehearsal=True, interactive=False,
                            start=start)
    pub = tmp_path / "pub"
    with pytest.raises(CeremonyError, match="no root CRL in force"):
        publish_root_crl(defn, out, pub, now=start - dt.timedelta(days=1))
    first = publish_root_crl(defn, out, pub, now=start)
    assert first.number == 1 and first.changed and (pub / "root.crl").exists() and (pub / "root.crl.pem").exists()
    assert not publish_root_crl(defn, out, pub, now=start + dt.timedelta(days=1)).changed
    later = publish_root_crl(defn, out, pub, now=start + dt.timedelta(days=200))
    assert later.number == 3 and later.changed
    with pytest.raises(CeremonyError, match="not greater"):  # the clock went back: never publish an older CRL
        publish_root_crl(defn, out, pub, now=start + dt.timedelta(days=100))
    with pytest.raises(CeremonyError, match="overdue"):
        publish_root_crl(defn, out, pub, now=start + dt.timedelta(days=500))
    assert x509.load_der_x509_crl((pub / "root.crl").read_bytes()).extensions.get_extension_for_class(
        x509.CRLNumber).value.crl_number == 3


def test_invoke_root_batch_signs_in_from_an_answers_file(pki: Pki, tmp_path: Path) -> None:
    """The operator's sign-in sheet reaches the root CRL ceremony's transcript, which verifies."""
    import json
    import os

    from conftest import REPO
    from test_transcript_interrupt import answers

    out = _root_out(pki, tmp_path / "root")
    sheet = answers(tmp_path / "answers.yml")
    ok = subprocess.run([str(REPO / ".venv" / "bin" / "invoke"), "crl.root-batch", "--definition",
                         str(pki.definition), "--out", str(out), "--rehearsal", "--count", "1",
                         "--answers", str(sheet)],
                        cwd=REPO, capture_output=True, text=True, env=dict(os.environ))
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr
    [transcript] = sorted((out / "transcripts").glob("root-crl-batch-*.jsonl"))
    records = [json.loads(line) for line in transcript.read_text(encoding="utf-8").splitlines()]
    signed_in = {r["participant"]["name"] for r in records if r["type"] == "sign-in"}
    assert signed_in == {"Awa Traoré", "Binta Keïta", "Cheick Diallo", "Drissa Coulibaly"}
    assert {r["serial"] for r in records if r["type"] == "bag"} == {"ML-0001", "ML-0002", "ML-0003", "ML-0004"}
    verify = subprocess.run([str(REPO / ".venv" / "bin" / "invoke"), "audit.verify", str(transcript), "--trust",
                             str(out / "root.crt.pem"), "--rehearsal"], cwd=REPO, capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout[-2000:]
