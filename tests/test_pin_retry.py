"""A PIN mistyped at the prompt is asked again, with the token's state; a PIN from a variable never is.

The prompt needs a real terminal: the driver runs under a pseudo-terminal (pexpect), as at a ceremony.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pexpect
import pytest

from ceremony.common.errors import HsmError
from ceremony.definition.model import Hsm, TokenRef
from ceremony.hsm.session import open_session, pin_source_for

DRIVER = """
import sys
from ceremony.definition.model import Hsm, TokenRef
from ceremony.hsm.session import open_session, pin_source_for
hsm = Hsm(module=sys.argv[1], token=TokenRef(label=sys.argv[2]), key_label="k")
with open_session(hsm, pin_source_for(hsm)) as session:
    print("LOGGED-IN", flush=True)
"""


@pytest.mark.hsm
def test_wrong_pin_at_the_prompt_is_asked_again(tmp_path: Path, make_token: Any) -> None:
    token = make_token("pin")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "SOFTHSM2_CONF": str(token.conf), "LANG": "C.UTF-8"}  # no PIN variable
    child = pexpect.spawn(sys.executable, [str(driver), token.module, token.label], env=env, encoding="utf-8",
                          timeout=30)
    child.expect("user PIN for token label")
    child.sendline("000000")
    child.expect(r"wrong PIN for token label '[^']+'\.")
    child.expect(r"Type it again \(2 more tries at this prompt\)")
    child.expect("user PIN for token label")
    child.sendline(token.user_pin)
    child.expect("LOGGED-IN")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.mark.hsm
def test_wrong_pin_from_a_variable_is_not_retried_and_names_its_source(make_token: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    token = make_token("pinenv")
    monkeypatch.setenv(token.pin_env, "000000")
    hsm = Hsm(module=token.module, token=TokenRef(label=token.label), key_label="k", pin_env=token.pin_env)
    with pytest.raises(HsmError) as err, open_session(hsm, pin_source_for(hsm, interactive=False)):
        pass
    message = str(err.value)
    assert f"from environment variable {token.pin_env}" in message and "Correct it there" in message
    assert "000000" not in message
