"""The root's later life (issue 18, points 3 and 5): the successor root's own CRLs, and the root's final CRL with
its archive, on real SoftHSM tokens, checked by openssl and the archive's own verifier.

The hierarchy is test_rollover's (root, qualified subordinate, an end-entity certificate, the successor root on the
root's token, both cross-certificates), built once for this module; each test works on its own copy of the output
directory (a root CRL ceremony changes no token object, so the tokens are shared and compared before and after each
refusal).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import tree, write_definition
from cryptography import x509
from test_rollover import FORWARD, REVERSE, Roll, console, invoke, objects, recorded
from test_rollover import roll as rollover_hierarchy  # noqa: F401 - a fixture, registered under this name

from ceremony.ceremonies.root_crl import (
    Revocation,
    final_crl_path,
    publish_root_crl,
    root_crl_batch_ceremony,
    root_registry_path,
)
from ceremony.common.errors import DefinitionError, OutputError, RegistryError, VerificationError
from ceremony.crl.encoding import FINAL_NEXT_UPDATE
from ceremony.definition.model import load_definition
from ceremony.transcript.anchor import load_anchor
from ceremony.transcript.archive import verify_archive
from ceremony.transcript.audit import verify

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("rollover")]
DECISION = {"decided": dt.date(2026, 1, 15), "reference": "Décision n°31 du Comité de Certification et de Signature",
            "successor_body": "Archives nationales du Mali"}


@pytest.fixture(scope="module")
def roll(rollover_hierarchy: Roll) -> Roll:  # noqa: F811 - the fixture imported above, built once for this module
    return rollover_hierarchy


def copy_of(roll: Roll, dest: Path) -> Path:
    shutil.copytree(roll.full, dest)
    return dest


def variant(roll: Roll, path: Path, change: Any) -> Path:
    data = copy.deepcopy(roll.data)
    change(data)
    return write_definition(path, data)


def decided(roll: Roll, tmp: Path, when: dt.date = DECISION["decided"]) -> Path:  # type: ignore[assignment]
    def add(data: dict[str, Any]) -> None:
        data["cas"]["root"]["termination"] = {**DECISION, "decided": when}
    return variant(roll, tmp / f"pki-decided-{when}.yml", add)


def state(roll: Roll, out: Path) -> tuple[set[str], bytes, set[tuple[str, str]]]:
    return tree(out), (out / "manifest.json").read_bytes(), objects(roll.tokens["root"])


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True)


def exit_of(path: Path, out: Path, anchor: str) -> int:
    return verify(path, out, trust=load_anchor(str(out / anchor), out), rehearsal=True).exit_code


# --- the successor's CRLs --------------------------------------------------------------------------------------------
def test_successor_signs_its_own_crls_which_openssl_verifies(roll: Roll, tmp_path: Path) -> None:
    out = copy_of(roll, tmp_path / "out")
    defn = load_definition(roll.definition)
    with recorded(defn, "root-crl-batch", out) as rec:
        batch = root_crl_batch_ceremony(defn, out, rec, rehearsal=True, interactive=False, count=2, successor=True)
    # its own number sequence and files; the old root's sequence is untouched (its first CRL is number 1)
    assert [c.number for c in batch.crls] == [1, 2]
    assert sorted(p.name for p in (out / "crl").iterdir() if not p.name.startswith(".")) == [
        "root.g2-1.crl", "root.g2-1.crl.pem", "root.g2-2.crl", "root.g2-2.crl.pem"]
    old = root_crl_batch_ceremony(defn, out, console(), rehearsal=True, interactive=False, count=1)
    assert [c.number for c in old.crls] == [1] and old.crls[0].der_path.name == "root-1.crl"
    new_root = x509.load_pem_x509_certificate((out / "root.g2.crt.pem").read_bytes())
    for crl in batch.crls:
        parsed = x509.load_der_x509_crl(crl.der_path.read_bytes())
        assert parsed.issuer == new_root.subject
        checked = openssl("crl", "-in", str(crl.pem_path), "-CAfile", str(out / "root.g2.crt.pem"), "-noout")
        assert checked.returncode == 0 and "verify OK" in checked.stderr + checked.stdout
        wrong = openssl("crl", "-in", str(crl.pem_path), "-CAfile", str(out / "root.crt.pem"), "-noout")
        assert "verify OK" not in wrong.stderr + wrong.stdout  # the old root's key did not sign it
    # what the successor issued, the reverse cross-certificate, is checked against its CRL
    reverse = out / f"{REVERSE}.crt.pem"
    good = openssl("verify", "-crl_check", "-CAfile", str(out / "root.g2.crt.pem"), "-CRLfile",
                   str(batch.crls[0].pem_path), str(reverse))
    assert good.returncode == 0, good.stdout + good.stderr
    # the transcript is sealed by the successor's sealing key: anchored by the successor, and by the old root
    # through the forward cross-certificate
    assert exit_of(rec.path, out, "root.g2.crt.pem") == 0
    assert exit_of(rec.path, out, "root.crt.pem") == 0
    sealed = [json.loads(line) for line in Path(rec.path).read_text(encoding="utf-8").splitlines()]
    seal = [r for r in sealed if r["type"] == "seal"]
    assert seal and seal[-1]["verifier"]["path"] == "root.g2.seal.crt.pem"
    # revoking the reverse cross-certificate: the successor's next CRL lists it, openssl refuses it as revoked
    revoked = root_crl_batch_ceremony(defn, out, console(), rehearsal=True, interactive=False, count=1,
                                      successor=True, revoke=[Revocation(reverse, "superseded")])
    assert revoked.crls[0].number == 3 and revoked.crls[0].entries == 1
    assert root_registry_path(out, "root.g2").is_file() and not root_registry_path(out, "root").exists()
    refused = openssl("verify", "-crl_check", "-CAfile", str(out / "root.g2.crt.pem"), "-CRLfile",
                      str(revoked.crls[0].pem_path), str(reverse))
    assert refused.returncode != 0 and "certificate revoked" in refused.stdout + refused.stderr
    # the successor cannot revoke what the old root issued; nothing changes
    before = state(roll, out)
    with pytest.raises(VerificationError, match="not issued by this root"):
        root_crl_batch_ceremony(defn, out, console(), rehearsal=True, interactive=False, count=1, successor=True,
                                revoke=[Revocation(out / "qualified.crt.pem")])
    assert state(roll, out) == before


def test_invoke_successor_batch_and_publish_both_roots(roll: Roll, tmp_path: Path) -> None:
    """The operator's commands: ``crl.root-batch --successor`` (its pre-flight opens the successor's key) and
    ``crl.publish-root``, which publishes the old root's CRL and the successor's, each at its own URL's file name."""
    out = copy_of(roll, tmp_path / "out")
    pub = tmp_path / "pub"
    common = ("--definition", str(roll.definition), "--out", str(out), "--rehearsal", "--count", "1")
    for extra in ((), ("--successor",)):
        run = invoke("crl.root-batch", *common, *extra)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "root CRL 1 of root.g2:" in run.stdout
    published = invoke("crl.publish-root", "--definition", str(roll.definition), "--batch-dir", str(out), "--out",
                       str(pub), "--metrics-dir", str(tmp_path / "metrics"))
    assert published.returncode == 0, published.stdout + published.stderr
    assert "root CRL 1 of root published" in published.stdout and "root CRL 1 of root.g2 published" in published.stdout
    old = x509.load_der_x509_crl((pub / "root.crl").read_bytes())
    new = x509.load_der_x509_crl((pub / "root-g2.crl").read_bytes())
    assert old.issuer != new.issuer and (pub / "root-g2.crl.pem").is_file()
    assert new.issuer == x509.load_pem_x509_certificate((out / "root.g2.crt.pem").read_bytes()).subject
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == ["ceremony_crl_root.g2.prom",
                                                                        "ceremony_crl_root.prom"]
    again = publish_root_crl(load_definition(roll.definition), out, pub, successor=True)
    assert not again.changed


def test_successor_without_its_own_crl_url_is_refused(roll: Roll, tmp_path: Path) -> None:
    out = copy_of(roll, tmp_path / "out")

    def drop(data: dict[str, Any]) -> None:
        del data["cas"]["root"]["successor"]["publication"]

    definition = variant(roll, tmp_path / "pki-no-url.yml", drop)
    before = state(roll, out)
    with pytest.raises(DefinitionError, match=r"cas\.root\.successor\.publication\.crl_url"):
        root_crl_batch_ceremony(load_definition(definition), out, console(), rehearsal=True, interactive=False,
                                successor=True)
    run = invoke("crl.root-batch", "--definition", str(definition), "--out", str(out), "--rehearsal", "--successor")
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert str(definition) in run.stderr and "cas.root.successor.publication.crl_url" in run.stderr
    assert state(roll, out) == before


# --- the root's final CRL and archive -------------------------------------------------------------------------------
def test_final_crl_refusals_leave_disk_and_token_unchanged(roll: Roll, tmp_path: Path) -> None:
    out = copy_of(roll, tmp_path / "out")
    plain = load_definition(roll.definition)
    before = state(roll, out)
    with pytest.raises(DefinitionError, match=r"cas\.root\.termination: not set"):
        root_crl_batch_ceremony(plain, out, console(), rehearsal=True, interactive=False, final=True)
    future = load_definition(decided(roll, tmp_path, dt.date.today() + dt.timedelta(days=3)))
    with pytest.raises(DefinitionError, match=r"cas\.root\.termination\.decided: .* is in the future"):
        root_crl_batch_ceremony(future, out, console(), rehearsal=True, interactive=False, final=True)
    defn = load_definition(decided(roll, tmp_path))
    # the subordinate and the forward cross-certificate are CA certificates of the root, valid and not revoked
    with pytest.raises(RegistryError, match="every CA certificate the root issued revoked or expired") as refused:
        root_crl_batch_ceremony(defn, out, console(), rehearsal=True, interactive=False, final=True)
    assert "SCSE Test Root CA 2026 G2" in str(refused.value) and "Qualified" in str(refused.value)
    with pytest.raises(DefinitionError, match="--final with --successor"):
        root_crl_batch_ceremony(defn, out, console(), rehearsal=True, interactive=False, final=True, successor=True)
    with pytest.raises(VerificationError, match="--final signs one CRL"):
        root_crl_batch_ceremony(defn, out, console(), rehearsal=True, interactive=False, final=True, count=3)
    # one of the two revoked in the same run is not enough
    with pytest.raises(RegistryError, match="G2"):
        root_crl_batch_ceremony(defn, out, console(), rehearsal=True, interactive=False, final=True,
                                revoke=[Revocation(out / "qualified.crt.pem", "cessationOfOperation")])
    assert state(roll, out) == before
    bad = invoke("crl.root-batch", "--definition", str(roll.definition), "--out", str(out), "--rehearsal", "--final")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cas.root.termination" in bad.stderr, bad.stderr
    both = invoke("crl.root-batch", "--definition", str(roll.definition), "--out", str(out), "--rehearsal", "--final",
                  "--successor")
    assert both.returncode == 2 and both.stderr.count("\n") == 1 and "--successor" in both.stderr, both.stderr
    assert state(roll, out) == before


def test_final_crl_then_archive_then_no_batch_after_it(roll: Roll, tmp_path: Path) -> None:
    out = copy_of(roll, tmp_path / "out")
    defn = load_definition(roll.definition)
    root_crl_batch_ceremony(defn, out, console(), rehearsal=True, interactive=False, count=1, revoke=[
        Revocation(out / "qualified.crt.pem", "cessationOfOperation"),
        Revocation(out / f"{FORWARD}.crt.pem", "cessationOfOperation")])
    definition = decided(roll, tmp_path)
    run = invoke("crl.root-batch", "--definition", str(definition), "--out", str(out), "--rehearsal", "--final")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-3000:]
    final = final_crl_path(out / "crl", "root")
    assert final is not None and final.name == "root-2.crl"
    crl = x509.load_der_x509_crl(final.read_bytes())
    assert crl.next_update_utc == FINAL_NEXT_UPDATE and len(crl) == 2
    text = openssl("crl", "-in", f"{final}.pem", "-CAfile", str(out / "root.crt.pem"), "-noout", "-text")
    assert "verify OK" in text.stdout + text.stderr and "Next Update: Dec 31 23:59:59 9999 GMT" in text.stdout
    parsed = openssl("asn1parse", "-inform", "DER", "-in", str(final))
    assert "GENERALIZEDTIME   :99991231235959Z" in parsed.stdout
    # the manifest, the transcript of the root's last ceremony, and its archive
    artifacts = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert {(a["path"], a["kind"]) for a in artifacts} >= {("crl/root-2.crl", "final-crl"),
                                                           ("termination/root.termination-archive.tar",
                                                            "termination-archive")}
    [transcript] = sorted((out / "transcripts").glob("root-termination-*.jsonl"))
    assert exit_of(transcript, out, "root.crt.pem") == 0
    archive = out / "termination" / "root.termination-archive.tar"
    check = verify_archive(archive, str(out / "root.crt.pem"), rehearsal=True)
    assert check.exit_code == 0, check.lines()
    assert check.final_crl is not None and check.final_crl["path"] == "out/crl/root-2.crl"
    assert {name for name, _ in check.transcripts} >= {f"out/transcripts/{roll.new_root_transcript.name}"}
    task = invoke("audit.verify-archive", str(archive), "--trust", str(out / "root.crt.pem"), "--rehearsal")
    assert task.returncode == 0, task.stdout[-3000:]
    # the final CRL is published and stays in force
    pub = tmp_path / "pub"
    published = publish_root_crl(defn, out, pub, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=3650))
    assert published.number == 2 and (pub / "root.crl").read_bytes() == final.read_bytes()
    # no batch follows it: a plain one, another final one, each refused with one message, nothing changed
    before = state(roll, out)
    for final_again in (False, True):
        with pytest.raises(OutputError, match="no root CRL follows it"):
            root_crl_batch_ceremony(load_definition(definition), out, console(), rehearsal=True, interactive=False,
                                    count=None if final_again else 1, final=final_again)
    after = invoke("crl.root-batch", "--definition", str(roll.definition), "--out", str(out), "--rehearsal")
    assert after.returncode != 0 and after.stderr.count("\n") == 1 and "no root CRL follows it" in after.stderr
    assert state(roll, out) == before  # refused before the pre-flight: not even a transcript
    # one byte changed in the archive: its verifier names the member
    damaged = tmp_path / "damaged.tar"
    data = bytearray(archive.read_bytes())
    at = data.index(b"-----BEGIN CERTIFICATE-----") + 40
    data[at] ^= 1
    damaged.write_bytes(bytes(data))
    assert verify_archive(damaged, str(out / "root.crt.pem"), rehearsal=True).exit_code != 0


# --- the successor as the root in service ---------------------------------------------------------------------------
#: What the new root's output directory starts with (docs/lifecycle.md, "The successor as the root in service"): the
#: successor's certificates under the root's name, and each subordinate's key ceremony outputs.
PROMOTED = {"root.g2.crt.pem": "root.crt.pem", "root.g2.crt.der": "root.crt.der", "root.g2.pub.pem": "root.pub.pem",
            "root.g2.seal.crt.pem": "root.seal.crt.pem"}
SUBORDINATE_KEY_FILES = (".csr.pem", ".pub.pem", ".seal.csr.pem", ".seal.pub.pem")


def in_service(data: dict[str, Any]) -> None:
    """The definition after the switch: cas.root describes the successor (its subject, key, validity, token labels
    and URLs); the successor entry is gone; a subordinate re-signed by it begins no earlier than it does."""
    root = data["cas"]["root"]
    successor = root.pop("successor")
    for field in ("subject", "key", "validity", "hsm", "publication"):
        root[field] = successor[field]
    data["cas"]["qualified"]["validity"]["not_before"] = successor["validity"]["not_before"]


def test_successor_becomes_the_root_in_service_in_a_new_output_directory(roll: Roll, tmp_path: Path) -> None:
    """The documented switch, run: a new output directory whose root is the successor (its files copied under the
    root's name), the subordinate's existing key re-signed there at a subordinate signing ceremony, the successor's
    CRL numbers continued. What the subordinate issued under the old root verifies from the new root directly."""
    from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony

    old_out = copy_of(roll, tmp_path / "old")
    old_defn = load_definition(roll.definition)
    first = root_crl_batch_ceremony(old_defn, old_out, console(), rehearsal=True, interactive=False, count=2,
                                    successor=True)
    new_out = tmp_path / "new"
    new_out.mkdir()
    for source, target in PROMOTED.items():
        shutil.copyfile(old_out / source, new_out / target)
    for suffix in SUBORDINATE_KEY_FILES:
        shutil.copyfile(old_out / f"qualified{suffix}", new_out / f"qualified{suffix}")
    (new_out / ".state").mkdir()  # the successor's CRL numbers go on: RFC 5280 5.2.3, one issuer, one sequence
    shutil.copyfile(old_out / ".state" / "root.g2.crlnumber", new_out / ".state" / "root.crlnumber")
    definition = variant(roll, tmp_path / "pki-in-service.yml", in_service)
    defn = load_definition(definition)
    with recorded(defn, "subordinate-signing", new_out) as rec:
        sign_subordinate_ceremony(defn, "qualified", new_out / "qualified.csr.pem", new_out, rec, rehearsal=True,
                                  interactive=False)
    new_root = x509.load_pem_x509_certificate((new_out / "root.crt.pem").read_bytes())
    sub = x509.load_pem_x509_certificate((new_out / "qualified.crt.pem").read_bytes())
    old_sub = x509.load_pem_x509_certificate((old_out / "qualified.crt.pem").read_bytes())
    assert sub.issuer == new_root.subject and sub.subject == old_sub.subject
    assert sub.public_key() == old_sub.public_key()
    # the end-entity certificate issued under the old root verifies from the new root, no cross-certificate needed
    ee = openssl("verify", "-CAfile", str(new_out / "root.crt.pem"), "-untrusted", str(new_out / "qualified.crt.pem"),
                 str(roll.ee))
    assert ee.returncode == 0, ee.stdout + ee.stderr
    assert exit_of(rec.path, new_out, "root.crt.pem") == 0  # sealed by the successor's sealing key: the new anchor
    # the root CRL ceremony signs the successor's next number, at its URL, under the name the root has now
    batch = root_crl_batch_ceremony(defn, new_out, console(), rehearsal=True, interactive=False, count=1)
    assert batch.crls[0].number == first.crls[-1].number + 1 and batch.crls[0].der_path.name == "root-g2-3.crl"
    pub = tmp_path / "pub"
    publish_root_crl(old_defn, old_out, pub, successor=True)
    assert publish_root_crl(defn, new_out, pub).number == 3  # replaces the successor's CRL 1 at root-g2.crl
    checked = openssl("verify", "-crl_check", "-CAfile", str(new_out / "root.crt.pem"), "-CRLfile",
                      str(batch.crls[0].pem_path), str(new_out / "qualified.crt.pem"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_ctrl_c_during_the_archive_leaves_nothing_half_written(roll: Roll, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the archive is verified (the final CRL signed, staged, not published): nothing is published and
    the manifest is unchanged; only the reserved CRL number advances (crl/state.py), and the next run completes."""
    from ceremony.ceremonies import root_crl

    out = copy_of(roll, tmp_path / "out")
    defn = load_definition(roll.definition)
    root_crl_batch_ceremony(defn, out, console(), rehearsal=True, interactive=False, count=1, revoke=[
        Revocation(out / "qualified.crt.pem", "cessationOfOperation"),
        Revocation(out / f"{FORWARD}.crt.pem", "cessationOfOperation")])
    final_defn = load_definition(decided(roll, tmp_path))
    before = state(roll, out)

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(root_crl, "verify_archive", interrupted)
        with pytest.raises(KeyboardInterrupt):
            root_crl_batch_ceremony(final_defn, out, console(), rehearsal=True, interactive=False, final=True)
    files, manifest, objects_now = state(roll, out)
    assert files - before[0] == set() and before[0] - files == set() and manifest == before[1]
    assert objects_now == before[2]
    assert final_crl_path(out / "crl", "root") is None and not (out / "termination").exists()
    assert (out / ".state" / "root.crlnumber").read_text().strip() != ""
    batch = root_crl_batch_ceremony(final_defn, out, console(), rehearsal=True, interactive=False, final=True)
    assert batch.crls[0].number == 3 and batch.archive is not None and batch.archive.is_file()  # 2 was reserved
    assert batch.crls[0].next_update == FINAL_NEXT_UPDATE


def test_expired_ca_certificates_need_no_revocation(roll: Roll, tmp_path: Path) -> None:
    """The termination's condition is 'revoked or expired': checked (without a token) at a moment after the
    subordinate's and the forward cross-certificate's notAfter, nothing needs revoking; today both do."""
    from ceremony.ceremonies.root_crl import check_root_batch

    out = copy_of(roll, tmp_path / "out")
    defn = load_definition(decided(roll, tmp_path))
    ends = [x509.load_pem_x509_certificate((out / name).read_bytes()).not_valid_after_utc
            for name in ("qualified.crt.pem", f"{FORWARD}.crt.pem")]
    with pytest.raises(RegistryError, match="still valid and not revoked"):
        check_root_batch(defn, out, rehearsal=True, final=True)
    assert ends[0] < ends[1]  # the subordinate (10 years) ends before the cross-certificate (the roots' end)
    with pytest.raises(RegistryError, match="G2") as one_left:  # the subordinate expired, the cross-certificate not
        check_root_batch(defn, out, rehearsal=True, final=True, now=ends[0] + dt.timedelta(seconds=1))
    assert "Qualified" not in str(one_left.value)
    check_root_batch(defn, out, rehearsal=True, final=True, now=ends[1] + dt.timedelta(seconds=1))
