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
                          "--workdir", str(tmp_path / "work"), "--json-out", str(result), "--partitions", "4"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ceremony-crl-sign" in run.stdout and "openssl ca -gencrl" in run.stdout and "ratio" in run.stdout
    assert "4 partitions, all" in run.stdout and "load average" in run.stdout
    data = json.loads(result.read_text())
    assert data["entries"] == 2000
    assert data["checks"] == {"openssl_parses": True, "cryptography_entries": 2002, "every_serial_present": True}
    assert data["suite"]["rc"] == 0 and data["openssl"]["rc"] == 0
    assert data["suite"]["maxrss_kb"] > 0 and data["openssl"]["maxrss_kb"] > 0
    ossl = subprocess.run(["openssl", "crl", "-in", str(tmp_path / "work" / "openssl" / "crl.pem"), "-noout",
                           "-text"], capture_output=True, text=True)
    assert ossl.returncode == 0 and ossl.stdout.count("Serial Number:") == 2000
    assert "total" in data["steps"]["seconds"]
    # The same 2,000 revocations as 4 partition CRLs in the same run: each serial in exactly its partition.
    assert data["partitioned"]["rc"] == 0 and data["partitions"] == 4
    checks = data["partition_checks"]
    assert checks["every_serial_once"] is True and checks["misplaced"] == 0 and checks["issuing_distribution_points"]
    assert sorted(p.name for p in (tmp_path / "work" / "pub-partitioned").glob("*.crl")) == \
        [f"qualified-p{i}.crl" for i in range(4)]  # no certificate names the full CRL: only the partitions


def test_bench_crl_refuses_a_size_that_is_not_a_count(tmp_path: Path) -> None:
    for bad in ("0", "-5"):
        run = subprocess.run([str(REPO / ".venv" / "bin" / "invoke"), "bench.crl", "--entries", bad, "--workdir",
                              str(tmp_path / bad)], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert run.returncode != 0 and "--entries" in run.stderr and "Traceback" not in run.stderr
        assert not (tmp_path / bad).exists()
    for bad in ("1", "257"):
        run = subprocess.run([str(REPO / ".venv" / "bin" / "invoke"), "bench.crl", "--entries", "10", "--partitions",
                              bad, "--workdir", str(tmp_path / bad)], cwd=REPO, capture_output=True, text=True,
                             timeout=60)
        assert run.returncode != 0 and f"--partitions {bad}: allowed from 2 to 256" in run.stderr
        assert "Traceback" not in run.stderr and not (tmp_path / bad).exists()
