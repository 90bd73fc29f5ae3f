"""Shared fixtures: real PKCS#11 tokens (SoftHSM2, or NSS softokn), throwaway per test, and definitions on them.

SoftHSM reads ``SOFTHSM2_CONF`` when the module is loaded, so every test process gets its own
configuration and token directory before anything imports the module. Tokens get unique labels
and random PINs generated at run time; the PINs reach the engine through environment variables,
exactly as in a ceremony.

``CEREMONY_TEST_HSM=nss`` (or ``make_token(name, hsm="nss")``) makes the tokens NSS softokn databases instead: one
configuration string per test process opens all of them (:class:`ceremony.hsm.nss.NssTokens`), and definitions
carry it as ``hsm.module_config``.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
TESTING_DEFINITION = REPO / "inventory" / "testing" / "pki.yml"

# A run started in the background of a non-interactive shell inherits SIGINT (and SIGQUIT) ignored, and so
# would every ceremony a test interrupts with Ctrl-C: it would never stop. The tests' processes take the
# operator's terminal default, which their children inherit (a caught signal is reset to default at exec).
signal.signal(signal.SIGINT, signal.default_int_handler)

_HSM_DIR = Path(tempfile.mkdtemp(prefix="ceremony-test-hsm-"))
atexit.register(shutil.rmtree, _HSM_DIR, True)
from ceremony.ceremonies.offline import check_offline  # noqa: E402
from ceremony.hsm import nss, softhsm  # noqa: E402

SOFTHSM_CONF = softhsm.write_config(_HSM_DIR)
os.environ["SOFTHSM2_CONF"] = str(SOFTHSM_CONF)

#: The implementation the token fixtures use unless a test names one: ``softhsm`` or ``nss``.
TEST_HSM = os.environ.get("CEREMONY_TEST_HSM", "softhsm")
if TEST_HSM not in ("softhsm", "nss"):
    raise SystemExit(f"CEREMONY_TEST_HSM={TEST_HSM!r}: softhsm or nss")

_NSS_TOKENS: list[nss.NssTokens] = []


#: Softokn databases opened at once per test process: one configuration string then serves every definition a
#: test writes (re-initialising the module with a longer string would close the tokens an older definition names).
NSS_POOL = 24


_NSS_FREE: list[str] = []


def nss_tokens() -> nss.NssTokens:
    """This test process's softokn tokens (the pool opened on first use)."""
    if not _NSS_TOKENS:
        _NSS_TOKENS.append(nss.NssTokens(_HSM_DIR / "nss"))
        _NSS_FREE.extend(f"t-nss{i:02d}-{secrets.token_hex(3)}" for i in range(NSS_POOL))
        _NSS_TOKENS[0].reserve(list(_NSS_FREE))
    return _NSS_TOKENS[0]


@dataclass(frozen=True)
class TestToken:
    """A fresh SoftHSM token; PINs are generated at run time and exported as env variables."""

    __test__ = False
    label: str
    user_pin: str
    so_pin: str
    pin_env: str
    so_pin_env: str
    module: str
    conf: Path
    hsm: str = "softhsm"
    module_config: str | None = None
    """softokn's configuration string when the token was made (it opens this token and the process's earlier ones)."""


@pytest.fixture
def softhsm_module() -> str:
    return softhsm.softhsm_module()


def softhsm_token(mp: pytest.MonkeyPatch, name: str) -> TestToken:
    """A new SoftHSM token with random PINs, its PIN variables set through ``mp`` (a module-scoped fixture passes a
    ``pytest.MonkeyPatch.context()``, the function-scoped ``make_token`` its ``monkeypatch``)."""
    suffix = secrets.token_hex(4)
    label = f"t-{name}-{suffix}"[:32]
    env = f"TEST_PIN_{name.upper().replace('-', '_')}_{suffix.upper()}"
    token = TestToken(label=label, user_pin=softhsm.random_pin(), so_pin=softhsm.random_pin(), pin_env=env,
                      so_pin_env=env + "_SO", module=softhsm.softhsm_module(), conf=SOFTHSM_CONF)
    softhsm.init_token(SOFTHSM_CONF, label, token.user_pin, token.so_pin)
    mp.setenv(token.pin_env, token.user_pin)
    mp.setenv(token.so_pin_env, token.so_pin)
    return token


@pytest.fixture
def make_token(monkeypatch: pytest.MonkeyPatch) -> Callable[..., TestToken]:
    """``make_token("root")`` initialises a new token and sets its PIN variables for the test; ``hsm="nss"`` (or
    ``CEREMONY_TEST_HSM=nss``) makes it a softokn database, whose only PIN is the user's."""

    def _make(name: str = "tok", hsm: str | None = None) -> TestToken:
        if (hsm or TEST_HSM) != "nss":
            return softhsm_token(monkeypatch, name)
        suffix = secrets.token_hex(4)
        label = f"t-{name}-{suffix}"[:32]
        env = f"TEST_PIN_{name.upper().replace('-', '_')}_{suffix.upper()}"
        tokens = nss_tokens()
        label = _NSS_FREE.pop(0) if _NSS_FREE else label
        user_pin = softhsm.random_pin()
        config = tokens.add(label, user_pin)
        token = TestToken(label=label, user_pin=user_pin, so_pin=softhsm.random_pin(), pin_env=env,
                          so_pin_env=env + "_SO", module=tokens.module, conf=SOFTHSM_CONF, hsm="nss",
                          module_config=config)
        monkeypatch.setenv(token.pin_env, token.user_pin)
        monkeypatch.setenv(token.so_pin_env, token.so_pin)
        return token

    return _make


def base_definition_data() -> dict[str, Any]:
    """The shipped testing definition as plain data, to be adapted by a test."""
    return yaml.safe_load(TESTING_DEFINITION.read_text(encoding="utf-8"))


def write_definition(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def definition_on_tokens(tmp_path: Path, make_token: Callable[..., TestToken]) \
        -> Iterator[Callable[..., tuple[Path, dict[str, TestToken]]]]:
    """Write a copy of the testing definition whose CAs use fresh tokens.

    ``definition_on_tokens(mutate=fn)`` returns ``(path, {ca_name: TestToken})``; ``mutate`` may
    change the data (a dict) before it is written, to build bad inputs. ``hsm="nss"`` puts the CAs on softokn
    tokens (their key backup policy becomes ``none``: softokn cannot protect a key for a wrapped backup).
    """

    def _make(mutate: Callable[[dict[str, Any]], None] | None = None, name: str = "pki.yml",
              hsm: str | None = None) -> tuple[Path, dict[str, TestToken]]:
        data = copy.deepcopy(base_definition_data())
        tokens: dict[str, TestToken] = {}
        for ca_name, ca in data["cas"].items():
            tok = make_token(ca_name, hsm=hsm)
            tokens[ca_name] = tok
            ca["hsm"]["module"] = tok.module
            ca["hsm"]["token"] = {"label": tok.label}
            ca["hsm"]["pin_env"] = tok.pin_env
            ca["hsm"]["so_pin_env"] = tok.so_pin_env
        last = list(tokens.values())[-1]
        if last.hsm == "nss":
            for ca in data["cas"].values():
                ca["hsm"]["module_config"] = last.module_config  # the string that opens every token made so far
                if ca.get("backup", {}).get("mode") == "wrapped":
                    ca["backup"] = {"mode": "none"}
        if mutate is not None:
            mutate(data)
        return write_definition(tmp_path / name, data), tokens

    yield _make


def tree(directory: Path) -> set[str]:
    """Every file under ``directory`` (relative paths): tests compare before and after a failure."""
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


_CLONE_NEWNET = 0x40000000


_IP_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


@contextlib.contextmanager
def own_network_namespace(*up: str) -> Iterator[None]:
    """This test's thread in a fresh network namespace of the real kernel, for the duration of the block.

    The namespace has loopback (down) and, for each name in ``up``, one end of a veth pair brought up
    (its peer, ``<name>p``, stays down): what the offline check sees, the way ``unshare -n`` and
    ``ip netns`` give it to an operator (tests/test_offline.py). Children started in the block
    (``ip`` here) are in it too. The thread then goes back to its own namespace, and the new one,
    held by nothing, disappears with its interfaces. Needs root; the test is skipped otherwise.
    """
    ip = shutil.which("ip", path=_IP_ENV["PATH"])
    if os.geteuid() != 0 or ip is None:
        pytest.skip("a network namespace of the test's own needs root and ip(8)")
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.unshare(_CLONE_NEWNET) != 0:
            pytest.skip(f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}")
        try:
            for name in up:
                for argv in (("link", "add", name, "type", "veth", "peer", "name", f"{name}p"),
                             ("link", "set", name, "up")):
                    subprocess.run([ip, *argv], env=_IP_ENV, check=True, capture_output=True, timeout=30)
            yield
        finally:
            if libc.setns(own, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "cannot return to the test's own network namespace")
    finally:
        os.close(own)


@pytest.fixture
def air_gapped() -> Iterator[None]:
    """Where the offline check passes, so that a production ceremony gets past its first step to the refusal
    a test is about: this machine as it is when it is already offline, else a fresh network namespace."""
    if check_offline(enforce=False).offline:
        yield
        return
    with own_network_namespace():
        yield


#: The xdist group of the modules that read the one full rehearsal: they run on one worker, so the
#: session fixture below runs ``invoke rehearse`` once for all of them.
REHEARSAL_GROUP = "full-rehearsal"


@pytest.fixture(scope="session")
def full_rehearsal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """``invoke rehearse`` run once, as the operator runs it (a subprocess), with one PIN given by the operator
    and the others generated; (output directory, completed process). Readers must not change it."""
    import subprocess

    out = tmp_path_factory.mktemp("rehearsal") / "out"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CEREMONY_", "SOFTHSM2_CONF"))}
    run = subprocess.run([str(REPO / ".venv" / "bin" / "invoke"), "rehearse", "--out", str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=900,
                         env={**clean, "CEREMONY_ROOT_PIN": "given-root-pin-4711"})
    (out.parent / "stdout.txt").write_text(run.stdout)
    return out, run
