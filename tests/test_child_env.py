"""No PIN reaches a child process, whatever the name of the variable the definition gives it.

A rehearsal's ceremonies run (in a process of their own, as at a terminal) with PINs exported under
names no rule could guess (no ``PIN``, no ``CEREMONY_`` in them), as an operator's ``export`` or a
systemd ``Environment=`` would give them; the children the engine starts on the way (SoftHSM's
tool, ``openssl verify``, ``pdftotext``, the PDF renderer's interpreter) are then inspected
through ``/proc/<pid>/environ``: the tools through wrappers on PATH that copy their own
environment before running the real tool, the renderer's interpreter (started by absolute path)
by watching the ceremony process's children while it runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, base_definition_data, write_definition

from ceremony.common import child_process

pytestmark = pytest.mark.hsm

ODD_NAMES = {"CEREMONY_ROOT_PIN": "CLEF_DU_COFFRE", "CEREMONY_ROOT_SO_PIN": "ZZ_ALPHA_1",
             "CEREMONY_QUALIFIED_PIN": "MOT_DE_PASSE", "CEREMONY_QUALIFIED_SO_PIN": "OPERATOR_SECRET_B"}
WRAPPED = ("softhsm2-util", "openssl", "pdftotext")


def environ_of(pid: int) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


class Children:
    """Every child of process ``parent`` seen while the block runs, with its environment."""

    def __init__(self, parent: int) -> None:
        self.parent = parent
        self.seen: dict[int, tuple[str, dict[str, str]]] = {}
        self._stop = threading.Event()

    def _watch(self) -> None:
        # A child between fork and exec still shows the parent's command line and environment (the
        # secrets included): it is looked at again until it has become the program it starts.
        parent_cmdline = Path(f"/proc/{self.parent}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit() or int(entry.name) in self.seen:
                    continue
                try:
                    status = Path(entry.path, "status").read_text()
                    cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if f"\nPPid:\t{self.parent}\n" in status and cmdline != parent_cmdline:
                    env = environ_of(int(entry.name))
                    if env:
                        self.seen[int(entry.name)] = (cmdline, env)
            self._stop.wait(0.002)

    def __enter__(self) -> Children:
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def wrapped_tools(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Wrappers that copy their own environment to ``dumps/`` and run the real tool: (bin, dumps)."""
    bin_dir, dumps = tmp_path / "bin", tmp_path / "dumps"
    bin_dir.mkdir()
    dumps.mkdir()
    for tool in WRAPPED:
        real = shutil.which(tool)
        assert real, f"{tool} is not installed (scripts/bootstrap.sh installs it)"
        wrapper = bin_dir / tool
        wrapper.write_text(f"#!/bin/sh\ncat /proc/$$/environ > {dumps}/{tool}.$$\nexec {real} \"$@\"\n")
        wrapper.chmod(0o755)
    yield bin_dir, dumps


#: The ceremony process: a rehearsal's ceremonies and CRLs, a policy PDF rendered and read back.
SCRIPT = """
import sys
from pathlib import Path
from ceremony.rehearsal import crl as crl_rehearsal
from ceremony.rehearsal.ca import ca_ceremonies
from ceremony.rehearsal.context import prepare
from ceremony.common.pdf import pdf_text
from ceremony.policy.render import render_pdfs

out, definition = Path(sys.argv[1]), Path(sys.argv[2])
ctx = prepare(out / "out", definition)
ca_ceremonies(ctx)
crl_rehearsal.rehearse(ctx)
pdfs = render_pdfs({"fr": "<html><body><p>Politique de certification</p></body></html>"}, workers=2)
(out / "cp.pdf").write_bytes(pdfs["fr"][0])
assert "Politique de certification" in pdf_text(out / "cp.pdf")
"""


def test_no_child_of_a_ceremony_process_inherits_a_pin(tmp_path: Path, wrapped_tools: tuple[Path, Path]) -> None:
    bin_dir, dumps = wrapped_tools
    data = base_definition_data()
    for ca in data["cas"].values():
        ca["hsm"]["pin_env"] = ODD_NAMES[ca["hsm"]["pin_env"]]
        ca["hsm"]["so_pin_env"] = ODD_NAMES[ca["hsm"]["so_pin_env"]]
    definition = write_definition(tmp_path / "pki.yml", data)
    secrets = {name: f"{n}-{os.urandom(6).hex()}" for n, name in enumerate(ODD_NAMES.values())}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CEREMONY_", "SOFTHSM2_CONF", "TEST_PIN_"))}
    env.update(secrets)  # the operator's export, under names nobody could filter on
    env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path), str(definition)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with Children(proc.pid) as children:
        output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]

    dumped = {path: environ_of_dump(path) for path in dumps.iterdir()}
    assert {path.name.split(".")[0] for path in dumped} == set(WRAPPED)  # every kind of child was inspected
    renderers = {pid: child_env for pid, (cmdline, child_env) in children.seen.items() if " -c " in cmdline}
    assert renderers, children.seen  # the PDF renderer's interpreter was seen while it ran
    for child_env in [*dumped.values(), *renderers.values()]:
        assert child_env.get("PATH", "").startswith(str(bin_dir))  # a real environment was read
        leaked = (set(child_env) & set(secrets)) | {k for k, v in child_env.items() if v in secrets.values()}
        assert not leaked, leaked
        assert set(child_env) <= {*child_process.PASSED_THROUGH, "LANG", "LC_ALL", "SOFTHSM2_CONF"}, sorted(child_env)


def environ_of_dump(path: Path) -> dict[str, str]:
    raw = path.read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def test_run_refuses_an_inherited_environment() -> None:
    with pytest.raises(TypeError, match="extra_env"):
        child_process.run(["true"], env=dict(os.environ))
