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
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rehearsal"] is True
    by_kind: dict[str, list[dict]] = {}
    for a in manifest["artifacts"]:
        by_kind.setdefault(a["kind"], []).append(a)
    ee = by_kind["end-entity-certificate"]
    assert sorted({a["status"] for a in ee}) == ["good", "revoked"] and len(ee) == 4  # PEM + DER of two
    assert {a["format"] for a in by_kind["subordinate-crl"]} == {"der", "pem"}
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
