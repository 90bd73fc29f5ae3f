"""NSS softokn, the second PKCS#11 implementation: one rehearsal on it (every CA ceremony, issuance, the CRL job,
the root CRL batch), its limits refused with their reason before anything is done, the wrapping algorithm found by
known answer on both implementations, a SoftHSM backup refused by a restore onto softokn, and pkcs11-tool
cross-checking softokn's key attributes through p11-kit (pkcs11-tool cannot give softokn its configuration string).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, TestToken, base_definition_data, tree, write_definition
from test_backup import BackedUp, make_backup

from ceremony.backup.format import BackupError, load_backup
from ceremony.ceremonies.restore import restore_ceremony
from ceremony.common.errors import DefinitionError, HsmError
from ceremony.definition.model import EcKey, Hsm, TokenRef, load_definition
from ceremony.hsm import nss
from ceremony.hsm import session as hsm
from ceremony.hsm.keys import generate_key
from ceremony.hsm.wrapping import PKCS7_RFC3394, RFC5649, wrap_algorithm
from ceremony.transcript.recorder import ConsoleRecorder

pytestmark = pytest.mark.hsm

MakeToken = Callable[..., TestToken]

#: p11-kit's proxy module: it reads module files from /etc/pkcs11/modules (as root, per-user configuration is
#: ignored) and hands each one's ``x-init-reserved`` to C_Initialize, which is how pkcs11-tool reaches softokn.
P11_KIT_PROXY = ("/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so", "/usr/lib/x86_64-linux-gnu/libp11-kit.so.0")


def _hsm(tok: TestToken, label: str = "ca-key") -> Hsm:
    return Hsm(module=tok.module, token=TokenRef(label=tok.label), key_label=label, pin_env=tok.pin_env,
               so_pin_env=tok.so_pin_env, module_config=tok.module_config)


@contextlib.contextmanager
def p11_kit_module(config: str) -> Iterator[str]:
    """A p11-kit module file for softokn with ``config``, enabled in pkcs11-tool only, for the block; one test at a
    time (a lock), removed in any case. Yields the proxy module's path."""
    proxy = next((p for p in P11_KIT_PROXY if os.path.exists(p)), None)
    if os.geteuid() != 0 or proxy is None or shutil.which("pkcs11-tool") is None:
        pytest.skip("pkcs11-tool reaches softokn through p11-kit's system module directory: needs root and p11-kit")
    directory = Path("/etc/pkcs11/modules")
    made = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    with open("/run/lock/ceremony-test-p11-kit.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        module = directory / f"ceremony-test-softokn-{os.getpid()}.module"
        try:
            module.write_text(f"module: {nss.nss_module()}\nx-init-reserved: {config}\nenable-in: pkcs11-tool\n")
            yield proxy
        finally:
            module.unlink(missing_ok=True)
            if made:
                with contextlib.suppress(OSError):
                    directory.rmdir()
                    directory.parent.rmdir()


def pkcs11_tool_objects(config: str, label: str, pin: str) -> str:
    with p11_kit_module(config) as proxy:
        return subprocess.run(["pkcs11-tool", "--module", proxy, "--token-label", label, "--login", "--pin", pin,
                               "--list-objects"], capture_output=True, text=True, check=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin"}).stdout


@pytest.fixture(scope="module")
def nss_rehearsal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """``invoke rehearse --hsm nss`` once, as the operator runs it."""
    out = tmp_path_factory.mktemp("nss-rehearsal") / "out"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CEREMONY_", "SOFTHSM2_CONF"))}
    run = subprocess.run([str(REPO / ".venv" / "bin" / "invoke"), "rehearse", "--hsm", "nss", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=900, env=clean)
    return out, run


@pytest.mark.xdist_group("nss-rehearsal")
def test_rehearsal_on_softokn_runs_every_ceremony_issuance_and_crl_job(nss_rehearsal: tuple[Path, Any]) -> None:
    out, run = nss_rehearsal
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "throwaway NSS softokn tokens" in run.stdout
    assert "key backup and restore are not rehearsed on NSS softokn: NSS softokn does not enforce " \
           "CKA_WRAP_WITH_TRUSTED" in " ".join(run.stdout.split())
    manifest = json.loads((out / "manifest.json").read_text())
    kinds = {a["kind"] for a in manifest["artifacts"]}
    assert {"root-certificate", "subordinate-certificate", "end-entity-certificate", "subordinate-crl", "root-crl",
            "cp", "cps"} <= kinds
    assert "key-backup" not in kinds
    definition = load_definition(out / "pki.yml")
    assert all(ca.hsm.module == nss.nss_module() and ca.hsm.module_config for ca in definition.model.cas.values())
    # The root key ceremony's transcript verifies (CKA_LOCAL is false on softokn; never extractable stands for it).
    root_cert = out / "root.crt.pem"
    verify = subprocess.run([str(REPO / ".venv" / "bin" / "invoke"), "audit.verify",
                             str(out / "transcripts" / "root-key-generation-1.jsonl"), "--trust", str(root_cert),
                             "--rehearsal"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-2000:]


@pytest.mark.xdist_group("nss-rehearsal")
def test_pkcs11_tool_sees_softokn_keys_sensitive_never_extractable(nss_rehearsal: tuple[Path, Any]) -> None:
    out, run = nss_rehearsal
    assert run.returncode == 0
    config = (out / "hsm" / "nss-module-config.txt").read_text().strip()
    pins = dict(line.split("=", 1) for line in (out / "hsm" / "rehearsal-pins.env").read_text().split())
    root = load_definition(out / "pki.yml").model.cas["root"].hsm
    listing = pkcs11_tool_objects(config, str(root.token.label), pins[str(root.pin_env)])
    private = listing.split("Private Key Object")[1].split("Public Key Object")[0]
    assert f"label:      {root.key_label}" in private
    assert "Usage:      sign" in private
    # softokn never sets CKA_LOCAL: pkcs11-tool shows it too.
    assert "Access:     sensitive, always sensitive, never extractable\n" in private, private


def test_wrap_pad_is_rfc5649_on_softhsm_and_pkcs7_rfc3394_on_softokn(make_token: MakeToken) -> None:
    found = {}
    for kind in ("softhsm", "nss"):
        tok = make_token("wrap", hsm=kind)
        with hsm.open_session(_hsm(tok), hsm.pin_source_for(_hsm(tok), interactive=False)) as session:
            found[kind] = wrap_algorithm(session)
            assert list(session.get_objects()) == [], "the known-answer test leaves no object"
    assert found == {"softhsm": RFC5649, "nss": PKCS7_RFC3394}


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> BackedUp:
    return make_backup(tmp_path_factory)


@pytest.mark.xdist_group("nss-backup")
def test_backup_names_its_algorithm_and_module(backed_up: BackedUp) -> None:
    wrapping = load_backup(backed_up.result.backup_file)["wrapping"]
    assert wrapping["algorithm"] == RFC5649 and wrapping["mechanism"] == "CKM_AES_KEY_WRAP_PAD"
    assert wrapping["mechanism_code"] == "0x0000210a" and "known-answer" in wrapping["algorithm_found_by"]
    assert wrapping["module"]["library_manufacturer"].startswith("SoftHSM")


@pytest.mark.xdist_group("nss-backup")
def test_softhsm_backup_restored_onto_softokn_is_refused_before_anything(backed_up: BackedUp, make_token: MakeToken,
                                                                           tmp_path: Path) -> None:
    tok = make_token("restore", hsm="nss")
    target = _hsm(tok, "root-2026")
    shares = list(backed_up.result.share_files.values())[:2]
    with pytest.raises(BackupError) as info:
        restore_ceremony(backed_up.definition, "root", backed_up.result.backup_file, shares, tmp_path / "out",
                         ConsoleRecorder(rehearsal=True), rehearsal=True, certificate=backed_up.out / "root.crt.pem",
                         target=target, interactive=False)
    message = " ".join(str(info.value).split())
    assert f"the key was wrapped with {RFC5649} (CKM_AES_KEY_WRAP_PAD on" in message
    assert f"the mechanism of the same name is {PKCS7_RFC3394}, another algorithm" in message
    assert f"Nothing was created on token label {tok.label!r}" in message
    with hsm.open_session(target, hsm.pin_source_for(target, interactive=False)) as session:
        assert list(session.get_objects()) == []
    assert not (tmp_path / "out").exists() or tree(tmp_path / "out") == set(), "no output"


def test_key_for_a_wrapped_backup_is_refused_on_softokn(make_token: MakeToken) -> None:
    tok = make_token("gen", hsm="nss")
    with hsm.open_session(_hsm(tok), hsm.pin_source_for(_hsm(tok), interactive=False)) as session:
        with pytest.raises(HsmError, match="does not enforce CKA_WRAP_WITH_TRUSTED") as info:
            generate_key(session, EcKey(algorithm="ecdsa", curve="P-384"), "ca-key", backup=True)
        assert "nothing was generated" in str(info.value)
        assert list(session.get_objects()) == []


def test_softokn_has_no_security_officer_once_initialised(make_token: MakeToken) -> None:
    tok = make_token("so", hsm="nss")
    so_pin = hsm.pin_source_for(_hsm(tok), interactive=False, so=True)
    with pytest.raises(HsmError, match="has no Security Officer login \\(CKR_USER_TYPE_INVALID\\)"), \
            hsm.open_session(_hsm(tok), so_pin, so=True):
        pass


@pytest.mark.parametrize("kind", ["softhsm", "nss"])
def test_every_session_logs_in_again(make_token: MakeToken, kind: str) -> None:
    """A token that forgets the login when a session closes (C_Logout on close): each session logs in anew."""
    tok = make_token("relogin", hsm=kind)
    h = _hsm(tok)
    with hsm.open_session(h, hsm.pin_source_for(h, interactive=False)) as session:
        generate_key(session, EcKey(algorithm="ecdsa", curve="P-256"), "ca-key")
    lib = hsm.load_module(tok.module)
    with hsm.find_token(lib, h.token).open(rw=False) as public:  # no login: the private key is not visible
        assert hsm.find_public_key(public, "ca-key") is not None
        with pytest.raises(HsmError, match="no private key"):
            hsm.find_private_key(public, "ca-key")
    for _ in range(2):
        with hsm.open_session(h, hsm.pin_source_for(h, interactive=False)) as session:
            assert hsm.find_private_key(session, "ca-key") is not None


def test_token_not_found_on_softokn_points_to_p11_kit_not_pkcs11_tool(make_token: MakeToken) -> None:
    """pkcs11-tool cannot give softokn its configuration string: the message names the tokens the string opened and
    the p11-kit way, not a pkcs11-tool command that would fail."""
    tok = make_token("lost", hsm="nss")
    with pytest.raises(HsmError) as info:
        hsm.find_token(hsm.load_module(tok.module), TokenRef(label="no-such-token"))
    message = str(info.value)
    assert f"token {tok.label!r} has {tok.label!r}" in message and "through p11-kit's proxy" in message
    assert "pkcs11-tool --module" not in message


def test_module_needing_a_configuration_string_is_told_so() -> None:
    """A fresh process: softokn without hsm.module_config refuses C_Initialize, and the message says what to set."""
    code = ("from ceremony.hsm.session import load_module\nfrom ceremony.common.errors import HsmError\n"
            f"try:\n    load_module({nss.nss_module()!r})\nexcept HsmError as e:\n    print(e)\n")
    run = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert "refused C_Initialize without a configuration string (CKR_ARGUMENTS_BAD): give it as " \
           "hsm.module_config in the definition" in run.stdout, run.stdout + run.stderr


def test_module_config_never_holds_a_pin(tmp_path: Path) -> None:
    data = base_definition_data()
    data["cas"]["root"]["hsm"]["module_config"] = "configdir='sql:/x' password=1234"
    with pytest.raises(DefinitionError) as info:
        load_definition(write_definition(tmp_path / "pki.yml", data))
    assert "cas.root.hsm" in str(info.value) and "'password': a PIN or password never goes into the definition" \
        in str(info.value)
    assert "1234" not in str(info.value)
