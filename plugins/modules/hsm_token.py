#!/usr/bin/python
# ruff: noqa: E402  (Ansible convention: DOCUMENTATION, EXAMPLES and RETURN come before the imports)
"""Ansible module hsm_token: make sure a PKCS#11 token is there (initialise it on SoftHSM only)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: hsm_token
short_description: Ensure a PKCS#11 token exists; initialise it when it is a SoftHSM2 token
description:
  - Looks the token up through the PKCS#11 module, using the ceremony engine (C(ceremony.hsm)) in
    Python, by label, serial or RFC 7512 PKCS#11 URI exactly as the PKI definition's C(hsm.token)
    gives it (O(token)), or by O(label) alone.
  - On SoftHSM2 (O(softhsm_conf) given) an absent token is initialised and its PINs are set through
    PKCS#11; the PINs never appear on a command line. Its label is the O(token)'s C(label), or the
    C(token) attribute of its URI; a token chosen by serial alone cannot be initialised (SoftHSM
    chooses serials).
  - On a real HSM (no O(softhsm_conf)) an absent token is an error, since initialising a production token
    is done at a ceremony with the vendor's tools, never by a playbook.
  - Must run with the interpreter of the suite's virtualenv (see the ceremony_suite role).
version_added: "0.1.0"
author: Ceremony suite maintainers
options:
  token:
    description: The token as the PKI definition's C(cas.<ca>.hsm.token) gives it, a mapping with
      exactly one of C(label), C(serial) or C(uri) (RFC 7512, e.g. C(pkcs11:token=SCSE-ROOT-2026;serial=...)).
      Pass it straight from the definition, C(pki.cas[ca].hsm.token). Exclusive with O(label).
    type: dict
  label:
    description: Token label, a shorthand for a O(token) with only a C(label). Exclusive with O(token).
    type: str
  module:
    description: Path of the PKCS#11 module on the managed host.
    type: path
    required: true
  softhsm_conf:
    description: SoftHSM2 configuration file; set means the token may be initialised here.
    type: path
  user_pin:
    description: User PIN to set on a new SoftHSM token, and to log in to check an existing one (a read-only session;
      a PIN the token refuses fails the task, naming the token, never the PIN).
    type: str
  so_pin:
    description: Security Officer PIN to set on a new SoftHSM token.
    type: str
  pin_file:
    description: A 0600 file on the managed host holding the user PIN (instead of O(user_pin)); an existing token is
      logged in to with it, as with O(user_pin) (after a PIN change, this checks the service's PIN file).
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
- name: Token of the qualified CA, as the PKI definition names it (label, serial or URI)
  hsm_token:
    token: "{{ pki.cas.qualified.hsm.token }}"
    module: "{{ pki.cas.qualified.hsm.module }}"
  vars:
    ansible_python_interpreter: /opt/ceremony-suite/venv/bin/python

- name: Test token for the qualified CA, initialised on SoftHSM when absent
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
logged_in:
  description: Whether a session on the existing token was logged in to with O(user_pin) or O(pin_file) (false when
    neither was given).
  returned: when the token existed before the task
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.ceremony_engine import (
    HSM_ARGUMENT_SPEC,
    fail_on_engine_error,
    pin_source,
    prepare_environment,
    require_engine,
)


def token_ref(module: AnsibleModule):
    """The engine's TokenRef for the token or label option, or fail_json naming the option."""
    from pydantic import ValidationError

    from ceremony.definition.model import TokenRef

    p = module.params
    given = p["token"] if p["token"] is not None else {"label": p["label"]}
    try:
        return TokenRef.model_validate(dict(given))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'token'}: {e['msg']}" for e in exc.errors())
        module.fail_json(msg=f"token: {problems} (a mapping with exactly one of label, serial or uri, as "
                             "cas.<ca>.hsm.token in the PKI definition)")


def init_label(ref) -> str | None:
    """The label a new SoftHSM token gets for ``ref``: its label, or the URI's token attribute."""
    from ceremony.definition.model import parse_token_uri

    if ref.label is not None:
        return ref.label
    if ref.uri is not None:
        return parse_token_uri(ref.uri).get("token")
    return None


def _find(module_path: str, ref):
    from ceremony.common.errors import TokenNotFoundError
    from ceremony.hsm import session as hsm

    lib = hsm.load_module(module_path)
    hsm.rescan(module_path)
    try:
        token = hsm.find_token(lib, ref)
    except TokenNotFoundError:  # absent: a SoftHSM token is then created; any other failure stops
        return lib, None
    return lib, token


def check_login(module: AnsibleModule, ref) -> bool:
    """Log in to the existing token with the user PIN given (``user_pin``, or the 0600 ``pin_file`` a service reads):
    after a PIN change this is what shows that the vault and the service's PIN file hold the token's new PIN, before
    any job tries it. A read-only session; a PIN the token refuses fails the task with the engine's message (the token,
    where the PIN came from; never the PIN). False when no PIN was given: nothing to check."""
    from ceremony.definition.model import Hsm
    from ceremony.hsm import session as hsm

    p = module.params
    if not (p["user_pin"] or p["pin_file"]):
        return False
    target = Hsm(module=p["module"], token=ref, key_label="login-check")
    with hsm.open_session(target, pin_source(module, target), rw=False):
        return True


def run(module: AnsibleModule) -> None:
    from ceremony.common.errors import CeremonyError
    from ceremony.hsm import session as hsm
    from ceremony.hsm import softhsm

    p = module.params
    ref = token_ref(module)
    what = ref.describe()
    prepare_environment(module)
    try:
        lib, token = _find(p["module"], ref)
        if token is not None:
            evidence = hsm.token_evidence(p["module"], lib, token).as_dict()
            logged_in = check_login(module, ref)
            module.exit_json(changed=False, created=False, token=evidence, logged_in=logged_in,
                             diff={"before": {"token": what, "present": True},
                                   "after": {"token": what, "present": True}})
        if not p["softhsm_conf"]:
            module.fail_json(msg=f"{what} not found through {p['module']}; a real HSM token is "
                                 "initialised at a ceremony with the vendor's tools, not by Ansible")
        label = init_label(ref)
        if not label:
            module.fail_json(msg=f"{what} is absent and names no label: a SoftHSM token is initialised by label "
                                 "(give token.label, or a URI with token=...)")
        if not p["user_pin"] or not p["so_pin"]:
            module.fail_json(msg=f"{what} is absent: user_pin and so_pin are required to initialise it")
        diff = {"before": {"token": what, "present": False}, "after": {"token": what, "present": True}}
        if module.check_mode:
            module.exit_json(changed=True, created=True, diff=diff)
        from pathlib import Path

        softhsm.init_token(Path(p["softhsm_conf"]), label, p["user_pin"], p["so_pin"], module=p["module"])
        lib, token = _find(p["module"], ref)
        if token is None:
            module.fail_json(msg=f"a SoftHSM token labelled {label!r} was initialised but {what} does not match it; "
                                 "a URI attribute other than token= (manufacturer, model, serial) cannot describe "
                                 "a new SoftHSM token")
        module.exit_json(changed=True, created=True, diff=diff,
                         token=hsm.token_evidence(p["module"], lib, token).as_dict())
    except CeremonyError as exc:
        fail_on_engine_error(module, exc)


def main() -> None:
    spec = dict(
        token=dict(type="dict"),
        label=dict(type="str"),
        module=dict(type="path", required=True),
        so_pin=dict(type="str", no_log=True),
        state=dict(type="str", choices=["present"], default="present"),
        **HSM_ARGUMENT_SPEC,
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True, mutually_exclusive=[("token", "label")],
                           required_one_of=[("token", "label")])
    require_engine(module)
    run(module)


if __name__ == "__main__":
    main()
