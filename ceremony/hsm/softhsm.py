"""Throwaway SoftHSM2 tokens for rehearsals and tests.

A rehearsal gets its own SoftHSM configuration and token directory under its output directory,
so it can never touch a real token. ``softhsm2-util`` is the only way to run C_InitToken here
(python-pkcs11 does not expose it), and it takes PINs on its command line; so the token is
initialised with *transient* random PINs and the real PINs are then set through PKCS#11
(C_SetPIN / C_InitPIN) inside this process. The real PINs never appear in a process listing.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pkcs11

from ceremony.common import child_process
from ceremony.common.errors import HsmError
from ceremony.hsm.session import load_module, rescan

SOFTHSM_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
)


def softhsm_module() -> str:
    for p in SOFTHSM_MODULE_CANDIDATES:
        if os.path.isfile(p):
            return p
    raise HsmError("SoftHSM2 is not installed (libsofthsm2.so not found); run scripts/bootstrap.sh")


def write_config(directory: str | Path) -> Path:
    """Create ``directory/tokens`` and ``directory/softhsm2.conf`` pointing at it."""
    d = Path(directory).resolve()
    tokens = d / "tokens"
    tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = d / "softhsm2.conf"
    if not conf.exists():
        conf.write_text(
            "# SoftHSM2 configuration of a rehearsal: throwaway tokens, never production.\n"
            f"directories.tokendir = {tokens}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n",
            encoding="utf-8",
        )
        conf.chmod(0o600)
    return conf


def random_pin() -> str:
    return secrets.token_hex(12)


def init_token(conf: Path, label: str, user_pin: str, so_pin: str, module: str | None = None) -> None:
    """Initialise a fresh token labelled ``label`` and set its PINs without exposing them."""
    util = shutil.which("softhsm2-util")
    if util is None:
        raise HsmError("softhsm2-util is not installed; run scripts/bootstrap.sh")
    # Throwaway PINs on the command line, replaced through PKCS#11 below: the real ones never reach argv.
    t_user, t_so = random_pin(), random_pin()
    proc = child_process.run(
        [util, "--init-token", "--free", "--label", label, "--pin", t_user, "--so-pin", t_so],
        extra_env={"SOFTHSM2_CONF": str(conf)}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise HsmError(f"softhsm2-util could not initialise token {label!r}: "
                       f"{proc.stderr.strip().replace(t_user, '***').replace(t_so, '***')}")
    # The module is loaded with the same configuration in this process: make sure of it.
    if os.environ.get("SOFTHSM2_CONF") != str(conf):
        raise HsmError("SOFTHSM2_CONF must point at the rehearsal configuration before tokens are set up")

    mod = module or softhsm_module()
    rescan(mod)
    lib = load_module(mod)
    token = lib.get_token(token_label=label)
    with token.open(rw=True, so_pin=t_so) as so_session:
        so_session.set_pin(t_so, so_pin)
        so_session.init_pin(user_pin)
    with token.open(rw=True, user_pin=user_pin):
        pass


def delete_token(conf: Path, label: str) -> None:
    util = shutil.which("softhsm2-util") or "softhsm2-util"
    child_process.run([util, "--delete-token", "--token", label], extra_env={"SOFTHSM2_CONF": str(conf)},
                      capture_output=True)


__all__ = ["delete_token", "init_token", "pkcs11", "random_pin", "softhsm_module", "write_config"]
