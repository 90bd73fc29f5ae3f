"""``invoke bench.crl`` works end to end at a small size (a functional check, not a timing assertion)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = [pytest.mark.hsm, pytest.mark.bench]


def test_bench_crl_runs_both_sides_and_the_crl_parses(tmp_path: Path) -> None:
    result = tmp_path / "bench.json"
    run = subprocess.run([str(REPO / ".venv" / "bin" / "invoke"), "bench.crl", "--entries", "2000",
                          "--workdir", str(tmp_path / "work"), "--json-out", str(result)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ceremony-crl-sign" in run.stdout and "openssl ca -gencrl" in run.stdout and "ratio" in run.stdout
    data = json.loads(result.read_text())
    assert data["entries"] == 2000
    assert data["checks"] == {"openssl_parses": True, "cryptography_entries": 2002, "every_serial_present": True}
    assert data["suite"]["rc"] == 0 and data["openssl"]["rc"] == 0
    assert data["suite"]["maxrss_kb"] > 0 and data["openssl"]["maxrss_kb"] > 0
    ossl = subprocess.run(["openssl", "crl", "-in", str(tmp_path / "work" / "openssl" / "crl.pem"), "-noout",
                           "-text"], capture_output=True, text=True)
    assert ossl.returncode == 0 and ossl.stdout.count("Serial Number:") == 2000
    assert "total" in data["steps"]["seconds"]


def test_bench_crl_refuses_a_size_that_is_not_a_count(tmp_path: Path) -> None:
    for bad in ("0", "-5"):
        run = subprocess.run([str(REPO / ".venv" / "bin" / "invoke"), "bench.crl", "--entries", bad, "--workdir",
                              str(tmp_path / bad)], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert run.returncode != 0 and "--entries" in run.stderr and "Traceback" not in run.stderr
        assert not (tmp_path / bad).exists()
