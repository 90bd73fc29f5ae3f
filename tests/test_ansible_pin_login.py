"""``hsm_token`` logs in to an existing token with the PIN it is given: what the CA host's roles run after a PIN change.

After the token's user PIN changes (docs/provisioning.md, "Changing the CA token's user PIN") the vault gets the new
PIN and role ``crl_signer`` rewrites the job's 0600 PIN file, then checks with ``hsm_token`` (``pin_file``) that the
token takes it, before any job tries it. Shown with real ``ansible`` on a fresh SoftHSM token whose PIN is changed
with C_SetPIN: the file holding the old PIN is refused with the engine's message (the token and the file named, the
PIN never shown), the file rewritten with the new PIN is accepted, and without a PIN nothing is logged in to.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_ansible_crl_modules import ansible

from ceremony.definition.model import Hsm, TokenRef
from ceremony.hsm import softhsm
from ceremony.hsm.pins import PinSource
from ceremony.hsm.session import open_session

pytestmark = pytest.mark.hsm


def pin_file(path: Path, pin: str) -> Path:
    path.write_text(pin + "\n")
    path.chmod(0o600)
    return path


def login_args(token, **extra: object) -> dict[str, object]:
    return {"label": token.label, "module": token.module, "softhsm_conf": os.environ["SOFTHSM2_CONF"], **extra}


def test_the_old_pin_file_is_refused_and_the_rewritten_one_accepted(tmp_path: Path, make_token) -> None:
    token = make_token("pinlogin", hsm="softhsm")
    old = pin_file(tmp_path / "qualified.pin", token.user_pin)
    code, result, text = ansible("hsm_token", login_args(token, pin_file=str(old)))
    assert code == 0 and result["logged_in"] is True and result["changed"] is False, text

    new_pin = softhsm.random_pin()
    target = Hsm(module=token.module, token=TokenRef(label=token.label), key_label="x", pin_env=token.pin_env)
    with open_session(target, PinSource(env=token.pin_env, interactive=False)) as session:
        session.set_pin(token.user_pin, new_pin)  # C_SetPIN, as the PIN change does

    code, result, text = ansible("hsm_token", login_args(token, pin_file=str(old)))
    assert code != 0, text
    assert str(result["msg"]).startswith(f"wrong PIN for token label {token.label!r}"), result.get("msg")
    assert str(old) in str(result["msg"])
    assert token.user_pin not in text and new_pin not in text

    pin_file(old, new_pin)
    code, result, text = ansible("hsm_token", login_args(token, pin_file=str(old)))
    assert code == 0 and result["logged_in"] is True, text
    assert new_pin not in text

    code, result, text = ansible("hsm_token", login_args(token))
    assert code == 0 and result["logged_in"] is False, text
