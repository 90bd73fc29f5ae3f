"""``ca.issue`` → ``ca.revoke`` → ``crl.sign`` from a working directory with a RELATIVE ``--out``, as an
operator types them (subprocesses, ``inventory/ENV/pki.yml`` under the working directory).

The default places follow the ceremonies' output directory: the CA certificate and the registry in
``OUT``, the CRL in ``OUT/crl``; ``ca.revoke`` prints the exact ``crl.sign`` line to run next, and that
line works as printed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, tree
from cryptography import x509
from test_issuance import hierarchy, natural_person, write_csr  # noqa: F401 - fixture reused

from ceremony.ca.registry import Registry
from ceremony.definition.model import LoadedDefinition

pytestmark = pytest.mark.hsm
INVOKE = str(REPO / ".venv" / "bin" / "invoke")
ENV = "testing"
OUT = "out/x"


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``invoke ARGS`` in ``cwd``: the tasks come from the repository, every path is relative to ``cwd``."""
    return subprocess.run([INVOKE, "--search-root", str(REPO), *args], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)


@pytest.fixture(scope="module")
def workdir(hierarchy: tuple[LoadedDefinition, Path],  # noqa: F811 - the imported fixture
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``inventory/testing/pki.yml`` and ``out/x/qualified.crt.pem`` where the signing ceremony leaves them."""
    defn, cas = hierarchy
    work = tmp_path_factory.mktemp("work")
    (work / "inventory" / ENV).mkdir(parents=True)
    shutil.copy(defn.path, work / "inventory" / ENV / "pki.yml")
    (work / OUT).mkdir(parents=True)
    shutil.copy(cas / "qualified.crt.pem", work / OUT / "qualified.crt.pem")
    return work


def registered(work: Path) -> list[int]:
    with Registry.open(work / OUT / "qualified-registry.sqlite3") as reg:
        return [r.serial for r in reg.list()]


def test_issue_revoke_sign_with_a_relative_out(workdir: Path) -> None:
    work = workdir
    write_csr(work / "awa.csr", natural_person())
    issue = ("ca.issue", "--profile", "qes-natural-person", "--csr", "awa.csr", "--env", ENV, "--out", OUT,
             "--rehearsal")
    first = run(work, *issue, "--new-registry")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Traceback" not in first.stderr and f"{OUT}/out" not in first.stdout + first.stderr
    [serial] = registered(work)
    pem = f"{OUT}/qes-natural-person-{serial:x}.crt.pem"
    assert (work / pem).is_file() and pem in first.stdout
    manifest = (work / OUT / "manifest.json").read_text(encoding="utf-8")
    assert f'"path": "qes-natural-person-{serial:x}.crt.pem"' in manifest, "listed relative to the manifest"
    assert not (work / OUT / "out").exists(), "the relative output directory was not joined twice"

    # A retry of the same command (the operator unsure whether it worked) issues no second certificate.
    before = tree(work / OUT)
    retry = run(work, *issue)
    assert retry.returncode == 6, retry.stdout + retry.stderr
    assert retry.stderr.startswith("error: awa.csr: ") and len(retry.stderr.strip().splitlines()) == 1
    assert f"certificate {serial:x}" in retry.stderr and "nothing was signed" in retry.stderr
    assert registered(work) == [serial] and tree(work / OUT) == before
    # Only the same key is a duplicate: the same subject with a new key (a renewal) is issued.
    write_csr(work / "awa-new.csr", natural_person())
    renewal = run(work, *issue[:4], "awa-new.csr", *issue[5:])
    assert renewal.returncode == 0, renewal.stdout + renewal.stderr
    assert len(registered(work)) == 2

    revoke = run(work, "ca.revoke", format(serial, "x"), "--reason", "keyCompromise", "--env", ENV, "--out", OUT,
                 "--rehearsal")
    assert revoke.returncode == 0, revoke.stdout + revoke.stderr
    command = f"invoke crl.sign --ca qualified --env {ENV} --out {OUT}"
    assert revoke.stdout.rstrip().endswith(f"publish a CRL within 24 hours: {command}"), revoke.stdout

    # The line as printed, from the same directory: the CA certificate is found in OUT, the CRL lands in OUT/crl.
    sign = run(work, *shlex.split(command)[1:])
    assert sign.returncode == 0, sign.stdout + sign.stderr
    crl = x509.load_der_x509_crl((work / OUT / "crl" / "qualified.crl").read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None and len(crl) == 1
    assert crl.last_update_utc >= entry.revocation_date_utc, "thisUpdate never precedes a revocation it lists"


def test_crl_sign_without_the_ca_certificate_names_every_place(workdir: Path) -> None:
    work = workdir
    out = "out/empty"
    (work / out).mkdir(parents=True)
    before = tree(work)
    result = run(work, "crl.sign", "--ca", "qualified", "--env", ENV, "--out", out)
    assert result.returncode == 4, result.stdout + result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith("error: the certificate of CA 'qualified' was "
                                                                 "not found; looked at: ")
    for place in (f"{out}/qualified.crt.pem (the ceremonies' output directory, --out)",
                  f"inventory/{ENV}/qualified.crt.pem (next to the definition)",
                  "/var/lib/ceremony/qualified/qualified.crt.pem (where the role subordinate_ca installs it)"):
        assert place in message
    assert message.endswith("pass --ca-cert FILE, or --out DIR: the output directory the signing ceremony wrote "
                            "it to")
    assert tree(work) == before, "nothing was written"


def test_revoke_prints_the_options_it_was_given() -> None:
    """With --definition and --registry the printed line carries them too (quoted for the shell)."""
    import sys

    sys.path.insert(0, str(REPO))  # Invoke loads ``tasks`` from the repository root, as the operator does
    from tasks.ca_tasks import crl_sign_command

    assert crl_sign_command("qualified", "production", None, None, None) == \
        "invoke crl.sign --ca qualified --env production"
    assert crl_sign_command("qualified", "trial", "my defs/pki.yml", "out/x", "r.sqlite3") == \
        "invoke crl.sign --ca qualified --env trial --definition 'my defs/pki.yml' --out out/x --registry r.sqlite3"
