#!/usr/bin/python
# ruff: noqa: E402  (Ansible convention: DOCUMENTATION, EXAMPLES and RETURN come before the imports)
"""Ansible module ca_ceremony: the offline root's ceremonies, run on the root workstation itself."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ca_ceremony
short_description: Run the root key ceremony or sign a subordinate CA's CSR, on the offline root workstation
description:
  - Calls the ceremony engine (C(ceremony.ceremonies.root_ceremony) or
    C(ceremony.ceremonies.sign_subordinate_ceremony)) with the PKI definition on the host.
  - Runs on the offline workstation itself (local or chroot connection), never across a network.
  - A ceremony whose outputs are already in O(out) and match the token's key (root) or the CSR's
    key (subordinate) is not run again (no change). Outputs are never overwritten.
  - Outside a rehearsal the engine refuses to start while a network interface other than loopback is up.
  - Must run with the interpreter of the suite's virtualenv.
version_added: "0.1.0"
author: Ceremony suite maintainers
options:
  definition:
    description: Path of the PKI definition on the host.
    type: path
    required: true
  action:
    description: V(root) generates the root key and self-signed certificate; V(sign-subordinate)
      issues the certificate of O(ca) from O(csr).
    type: str
    choices: [root, sign-subordinate]
    required: true
  ca:
    description: The subordinate CA (for V(sign-subordinate)).
    type: str
  csr:
    description: The subordinate's CSR on the host (for V(sign-subordinate)), e.g. from removable media.
    type: path
  out:
    description: The ceremony's output directory (the workspace).
    type: path
    required: true
  rehearsal:
    description: Rehearsal (marked as such everywhere, offline check not enforced). Defaults to true
      unless the definition's C(environment) is C(production).
    type: bool
  softhsm_conf:
    description: SoftHSM2 configuration file, when the token is a SoftHSM2 token.
    type: path
  user_pin:
    description: The root token's user PIN.
    type: str
  pin_file:
    description: A 0600 file on the host holding the user PIN.
    type: path
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Root key ceremony
  ca_ceremony:
    definition: /srv/ceremony/pki.yml
    action: root
    out: /srv/ceremony/out
    pin_file: /media/ceremony/root.pin
  vars:
    ansible_python_interpreter: /opt/ceremony-suite/venv/bin/python
"""

RETURN = r"""
outputs:
  description: Paths of the files the ceremony wrote (or found), by name.
  returned: success, except check mode for a ceremony still to run
  type: dict
certificate_sha256:
  description: SHA-256 of the issued certificate (DER).
  returned: success, except check mode for a ceremony still to run
  type: str
log:
  description: What the ceremony showed the room (steps, fingerprints to read aloud).
  returned: when the ceremony ran
  type: str
"""

import io
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.ceremony_engine import (
    HSM_ARGUMENT_SPEC,
    fail_on_engine_error,
    load_ca,
    pin_source,
    prepare_environment,
    require_engine,
)


def _cert(path: str):
    from cryptography import x509

    with open(path, "rb") as handle:
        return x509.load_pem_x509_certificate(handle.read())


def _done_root(module, ca, out: str, name: str) -> dict | None:
    """The existing root outputs, when they are there and belong to the token's key."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from ceremony import hsm
    from ceremony.fingerprints import sha256_hex
    from ceremony.hsm_keys import public_key_from_token
    from ceremony.keys import spki_sha256

    path = os.path.join(out, f"{name}.crt.pem")
    if not os.path.exists(path):
        return None
    cert = _cert(path)
    with hsm.open_session(ca.hsm, pin_source(module, ca.hsm), rw=False) as session:
        token_spki = spki_sha256(public_key_from_token(hsm.find_public_key(session, ca.hsm.key_label)))
    if spki_sha256(cert.public_key()) != token_spki:
        module.fail_json(msg=f"{path} exists but certifies another key than {ca.hsm.key_label!r} on the token; "
                             "refusing to run the ceremony over it")
    return {"outputs": {os.path.basename(path): path},
            "certificate_sha256": sha256_hex(cert.public_bytes(Encoding.DER))}


def _done_sub(module, out: str, name: str, csr_path: str) -> dict | None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from ceremony.csr import load_csr
    from ceremony.fingerprints import sha256_hex
    from ceremony.keys import spki_sha256

    path = os.path.join(out, f"{name}.crt.pem")
    if not os.path.exists(path):
        return None
    cert = _cert(path)
    if spki_sha256(cert.public_key()) != spki_sha256(load_csr(csr_path).public_key()):
        module.fail_json(msg=f"{path} exists but certifies another key than the CSR {csr_path}; "
                             "refusing to overwrite it")
    return {"outputs": {os.path.basename(path): path},
            "certificate_sha256": sha256_hex(cert.public_bytes(Encoding.DER))}


def run(module: AnsibleModule) -> None:
    from rich.console import Console

    from ceremony import ceremonies
    from ceremony.errors import CeremonyError
    from ceremony.recorder import ConsoleRecorder

    p = module.params
    action = p["action"]
    loaded, _ = load_ca(module, p["definition"], p["ca"] or loaded_root(module, p["definition"]))
    model = loaded.model
    rehearsal = p["rehearsal"] if p["rehearsal"] is not None else model.environment != "production"
    if action == "sign-subordinate" and not (p["ca"] and p["csr"]):
        module.fail_json(msg="action=sign-subordinate needs ca and csr")
    root_name = model.root_name
    root = model.cas[root_name]
    name = root_name if action == "root" else p["ca"]
    prepare_environment(module)
    pin_source(module, root.hsm)  # exports user_pin under the root's pin_env for the engine
    try:
        done = (_done_root(module, root, p["out"], root_name) if action == "root"
                else _done_sub(module, p["out"], name, p["csr"]))
        after = {"ceremony": action, "ca": name, "certificate": os.path.join(p["out"], f"{name}.crt.pem")}
        if done is not None:
            module.exit_json(changed=False, diff={"before": after, "after": after}, **done)
        diff = {"before": {"ceremony": action, "ca": name, "certificate": None}, "after": after}
        if module.check_mode:
            module.exit_json(changed=True, diff=diff)
        text = io.StringIO()
        recorder = ConsoleRecorder(rehearsal, Console(file=text, highlight=False, width=120))
        if action == "root":
            result = ceremonies.root_ceremony(loaded, p["out"], recorder, rehearsal=rehearsal,
                                              pin_file=p["pin_file"], interactive=False)
        else:
            result = ceremonies.sign_subordinate_ceremony(loaded, name, p["csr"], p["out"], recorder,
                                                          rehearsal=rehearsal, pin_file=p["pin_file"],
                                                          interactive=False)
    except CeremonyError as exc:
        fail_on_engine_error(module, exc)
    module.exit_json(changed=True, diff=diff, outputs={k: str(v) for k, v in result.files.items()},
                     certificate_sha256=result.fingerprint_sha256, log=text.getvalue())


def loaded_root(module, definition: str) -> str:
    from ceremony.definition import load_definition
    from ceremony.errors import CeremonyError

    try:
        return load_definition(definition).model.root_name
    except CeremonyError as exc:
        module.fail_json(msg=str(exc))


def main() -> None:
    spec = dict(
        definition=dict(type="path", required=True),
        action=dict(type="str", choices=["root", "sign-subordinate"], required=True),
        ca=dict(type="str"),
        csr=dict(type="path"),
        out=dict(type="path", required=True),
        rehearsal=dict(type="bool"),
        **HSM_ARGUMENT_SPEC,
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    require_engine(module)
    run(module)


if __name__ == "__main__":
    main()
