"""The CRL rehearsal stage on its own (CA ceremonies, then ``ceremony.rehearsal.crl``), in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from cryptography import x509

pytestmark = pytest.mark.hsm

SCRIPT = """
import sys
from ceremony.rehearsal.context import prepare
from ceremony.rehearsal.ca import ca_ceremonies
from ceremony.rehearsal import crl as crl_rehearsal
ctx = prepare(sys.argv[1])
ca_ceremonies(ctx)
crl_rehearsal.rehearse(ctx)
"""


def test_stage_lists_certificates_crls_registry_and_openssl_agrees(tmp_path: Path) -> None:
    out = tmp_path / "r"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CEREMONY_", "SOFTHSM2_CONF"))}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    flat = " ".join(run.stdout.split())  # the console wraps long lines
    assert "certificate revoked (expected: revoked)" in flat and "OK (expected: good)" in flat
    assert "with qualified-p" in flat and "with qualified.crl.pem" in flat  # each with the CRL its DP names
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rehearsal"] is True
    by_kind: dict[str, list[dict]] = {}
    for a in manifest["artifacts"]:
        by_kind.setdefault(a["kind"], []).append(a)
    ee = by_kind["end-entity-certificate"]
    # PEM + DER of two certificates issued before partitioning, two after; the first of each pair revoked.
    assert sorted(a["status"] for a in ee) == ["good"] * 4 + ["revoked"] * 4 and len(ee) == 8
    assert {a["format"] for a in by_kind["subordinate-crl"]} == {"der", "pem"}
    partitions = by_kind["crl-partition"]
    assert sorted((a["partition"], a["format"]) for a in partitions) == [(0, "der"), (0, "pem"), (1, "der"),
                                                                          (1, "pem")]
    listed = set()
    for a in partitions:
        assert a["path"] == f"crl/qualified-p{a['partition']}.crl" + (".pem" if a["format"] == "pem" else "")
        assert a["url"] == f"http://pki.test.scse.ml/crl/qualified-p{a['partition']}.crl" and a["number"] == 1
        if a["format"] == "der":
            one = x509.load_der_x509_crl((out / a["path"]).read_bytes())
            idp = one.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
            assert idp.critical and [n.value for n in idp.value.full_name] == [a["url"]]
            listed |= {r.serial_number for r in one}
    assert len(listed) == 1  # the one partitioned certificate revoked, in its partition only
    assert len(by_kind["root-crl"]) == 8 and [a["number"] for a in by_kind["root-crl"]][::2] == [1, 2, 3, 4]
    assert [a["path"] for a in by_kind["registry"]] == ["qualified-registry.sqlite3"]
    crl = x509.load_der_x509_crl((out / "crl" / "qualified.crl").read_bytes())
    revoked = next(a for a in ee if a["status"] == "revoked" and a["format"] == "pem")
    serial = x509.load_pem_x509_certificate((out / revoked["path"]).read_bytes()).serial_number
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None and entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name == \
        "key_compromise"
    assert entry.extensions.get_extension_for_class(x509.InvalidityDate)
    assert (out / "metrics" / "ceremony_crl_qualified.prom").exists()
    assert "(REHEARSAL)" in crl.issuer.rfc4514_string()
