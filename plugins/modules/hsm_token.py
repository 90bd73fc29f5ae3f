#!/usr/bin/python
# ruff: noqa: E402  (Ansible convention: DOCUMENTATION, EXAMPLES and RETURN come before the imports)
"""Ansible module hsm_token: make sure a PKCS#11 token is there (initialise it on SoftHSM only)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: hsm_token
short_description: Ensure a PKCS#11 token exists; initialise it when it is a SoftHSM2 token
description:
  - Looks the token up by label through the PKCS#11 module, using the ceremony engine
    (C(ceremony.hsm)) in Python.
  - On SoftHSM2 (O(softhsm_conf) given) an absent token is initialised and its PINs are set through
    PKCS#11; the PINs never appear on a command line.
  - On a real HSM (no O(softhsm_conf)) an absent token is an error, since initialising a production token
    is done at a ceremony with the vendor's tools, never by a playbook.
  - Must run with the interpreter of the suite's virtualenv (see the ceremony_suite role).
version_added: "0.1.0"
author: Ceremony suite maintainers
options:
  label:
    description: Token label.
    type: str
    required: true
  module:
    description: Path of the PKCS#11 module on the managed host.
    type: path
    required: true
  softhsm_conf:
    description: SoftHSM2 configuration file; set means the token may be initialised here.
    type: path
  user_pin:
    description: User PIN to set on a new SoftHSM token, and to log in to check an existing one.
    type: str
  so_pin:
    description: Security Officer PIN to set on a new SoftHSM token.
    type: str
  pin_file:
    description: A 0600 file on the managed host holding the user PIN (instead of O(user_pin)).
    type: path
  state:
    description: Only V(present); tokens are never deleted by a playbook.
    type: str
    choices: [present]
    default: present
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - The PINs are C(no_log) options; pass them from a vault or an environment lookup.
"""

EXAMPLES = r"""
- name: Test token for the qualified CA
  hsm_token:
    label: scse-test-qualified
    module: /usr/lib/softhsm/libsofthsm2.so
    softhsm_conf: /etc/softhsm/softhsm2.conf
    user_pin: "{{ lookup('ansible.builtin.env', 'CEREMONY_QUALIFIED_PIN') }}"
    so_pin: "{{ lookup('ansible.builtin.env', 'CEREMONY_QUALIFIED_SO_PIN') }}"
  vars:
    ansible_python_interpreter: /opt/ceremony-suite/venv/bin/python
"""

RETURN = r"""
token:
  description: What the engine records about the token (module, label, serial, model, versions).
  returned: when the token exists after the task (not in check mode for a new token)
  type: dict
created:
  description: Whether the token was initialised by this task.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.ceremony_engine import (
    HSM_ARGUMENT_SPEC,
    fail_on_engine_error,
    prepare_environment,
    require_engine,
)


def _find(module_path: str, label: str):
    from ceremony import hsm
    from ceremony.definition import TokenRef
    from ceremony.errors import HsmError

    lib = hsm.load_module(module_path)
    hsm.rescan(module_path)
    try:
        token = hsm.find_token(lib, TokenRef(label=label))
    except HsmError as exc:
        if "token not found" in str(exc):
            return lib, None
        raise
    return lib, token


def run(module: AnsibleModule) -> None:
    from ceremony import hsm, softhsm
    from ceremony.errors import CeremonyError

    p = module.params
    prepare_environment(module)
    try:
        lib, token = _find(p["module"], p["label"])
        if token is not None:
            evidence = hsm.token_evidence(p["module"], lib, token).as_dict()
            module.exit_json(changed=False, created=False, token=evidence,
                             diff={"before": {"label": p["label"], "present": True},
                                   "after": {"label": p["label"], "present": True}})
        if not p["softhsm_conf"]:
            module.fail_json(msg=f"token {p['label']!r} not found through {p['module']}; a real HSM token is "
                                 "initialised at a ceremony with the vendor's tools, not by Ansible")
        if not p["user_pin"] or not p["so_pin"]:
            module.fail_json(msg=f"token {p['label']!r} is absent: user_pin and so_pin are required to "
                                 "initialise it")
        diff = {"before": {"label": p["label"], "present": False}, "after": {"label": p["label"], "present": True}}
        if module.check_mode:
            module.exit_json(changed=True, created=True, diff=diff)
        from pathlib import Path

        softhsm.init_token(Path(p["softhsm_conf"]), p["label"], p["user_pin"], p["so_pin"], module=p["module"])
        lib, token = _find(p["module"], p["label"])
        module.exit_json(changed=True, created=True, diff=diff,
                         token=hsm.token_evidence(p["module"], lib, token).as_dict())
    except CeremonyError as exc:
        fail_on_engine_error(module, exc)


def main() -> None:
    spec = dict(
        label=dict(type="str", required=True),
        module=dict(type="path", required=True),
        so_pin=dict(type="str", no_log=True),
        state=dict(type="str", choices=["present"], default="present"),
        **HSM_ARGUMENT_SPEC,
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    require_engine(module)
    run(module)


if __name__ == "__main__":
    main()
