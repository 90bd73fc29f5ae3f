"""bench.ocsp's nginx ceiling (issue 13): nginx started for one run on a loopback port with a throwaway configuration
under the run's directory serves the response body as a static file, and is gone when the block ends."""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO))  # Invoke loads ``tasks`` from the repository root, as the operator does
from tasks.bench_ocsp_tasks import nginx_static


def test_nginx_serves_the_body_on_loopback_and_stops(tmp_path: Path) -> None:
    root = tmp_path / "static"
    root.mkdir()
    body = os.urandom(1137)
    (root / "static.der").write_bytes(body)
    with nginx_static(root, tmp_path / "nginx") as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "/static.der", timeout=10) as resp:
            assert resp.read() == body
            assert resp.headers["Content-Type"] == "application/ocsp-response"
        pid = int((tmp_path / "nginx" / "nginx.pid").read_text())
        os.kill(pid, 0)  # the master runs
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError), urllib.request.urlopen(url + "/static.der", timeout=2):
        pass
    # Everything it wrote is under the run's directory: nothing of the distribution's configuration was used.
    assert (tmp_path / "nginx" / "nginx.conf").read_text().count("127.0.0.1:") == 1


def test_a_configuration_nginx_refuses_is_one_message(tmp_path: Path) -> None:
    # A directory whose name ends nginx's quoted string early: refused, with nginx's reason, before it starts.
    with pytest.raises(SystemExit, match=r"nginx refuses the bench configuration .*nginx\.conf"), \
            nginx_static(Path('/no"such dir'), tmp_path / "nginx"):
        pass
