#!/usr/bin/python
# ruff: noqa: E402  (Ansible convention: DOCUMENTATION, EXAMPLES and RETURN come before the imports)
"""Ansible module ca_csr: the subordinate CA's certificate signing request, signed inside its HSM."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ca_csr
short_description: Write a subordinate CA's CSR, signed by its key inside the HSM
description:
  - Builds the PKCS#10 request of a CA from the PKI definition (subject) and signs it with the CA's
    key on its token, through the ceremony engine (C(ceremony.x509.csr.build_csr)).
  - An existing file that is a valid CSR for the same key and subject is left alone. An existing file
    that is anything else is an error; it is never overwritten.
  - The file is written atomically (temporary file, fsync, link), with mode 0644.
  - Must run with the interpreter of the suite's virtualenv.
version_added: "0.1.0"
author: Ceremony suite maintainers
options:
  definition:
    description: Path of the PKI definition on the managed host.
    type: path
    required: true
  ca:
    description: Name of the subordinate CA under C(cas) in the definition.
    type: str
    required: true
  path:
    description: Where to write the CSR (PEM) on the managed host.
    type: path
    required: true
  rehearsal:
    description: Mark the subject as a rehearsal's (as C(invoke rehearse) does). Defaults to true
      unless the definition's C(environment) is C(production).
    type: bool
  softhsm_conf:
    description: SoftHSM2 configuration file, when the token is a SoftHSM2 token.
    type: path
  user_pin:
    description: The token's user PIN.
    type: str
  pin_file:
    description: A 0600 file on the managed host holding the user PIN.
    type: path
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: CSR of the qualified CA
  ca_csr:
    definition: /etc/ceremony/pki.yml
    ca: qualified
    path: /var/lib/ceremony/qualified/qualified.csr.pem
    softhsm_conf: /etc/softhsm/softhsm2.conf
    user_pin: "{{ qualified_user_pin }}"
  vars:
    ansible_python_interpreter: /opt/ceremony-suite/venv/bin/python
"""

RETURN = r"""
subject:
  description: The CSR's subject (RFC 4514).
  returned: success
  type: str
spki_sha256:
  description: SHA-256 of the key's SubjectPublicKeyInfo.
  returned: success, except check mode for a new CSR
  type: str
path:
  description: The CSR's path.
  returned: success
  type: str
"""

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


def run(module: AnsibleModule) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from ceremony.common.errors import CeremonyError
    from ceremony.common.fileio import write_new
    from ceremony.hsm import session as hsm
    from ceremony.hsm.keys import spki_sha256
    from ceremony.hsm.signers import signing_key
    from ceremony.x509 import csr as csr_mod
    from ceremony.x509.profiles import subject_name

    p = module.params
    loaded, ca = load_ca(module, p["definition"], p["ca"])
    if ca.role != "subordinate":
        module.fail_json(msg=f"{p['definition']}: cas.{p['ca']}.role is {ca.role!r}; a CSR is only made for a "
                             "subordinate CA (the root certificate is self-signed at the root ceremony)")
    rehearsal = p["rehearsal"] if p["rehearsal"] is not None else loaded.model.environment != "production"
    prepare_environment(module)
    path = p["path"]
    subject = subject_name(ca.subject, rehearsal).rfc4514_string()
    try:
        with hsm.open_session(ca.hsm, pin_source(module, ca.hsm), rw=False) as session:
            key = signing_key(session, ca.hsm.key_label)
            digest = spki_sha256(key.public_key())
            after = {"path": path, "subject": subject, "spki_sha256": digest}
            if os.path.exists(path):
                existing = csr_mod.load_csr(path)
                check = csr_mod.check_csr(existing, p["ca"], ca, path, rehearsal)
                if check.spki_sha256 != digest:
                    module.fail_json(msg=f"{path} is a CSR for another key (SPKI SHA-256 {check.spki_sha256}, the "
                                         f"token's key is {digest}); refusing to overwrite it")
                module.exit_json(changed=False, path=path, subject=subject, spki_sha256=digest,
                                 diff={"before": after, "after": after})
            diff = {"before": {"path": path, "present": False}, "after": after}
            if module.check_mode:
                module.exit_json(changed=True, path=path, subject=subject, spki_sha256=digest, diff=diff)
            request = csr_mod.build_csr(ca, key, rehearsal)
            write_new(path, request.public_bytes(Encoding.PEM), 0o644)
    except CeremonyError as exc:
        fail_on_engine_error(module, exc)
    module.exit_json(changed=True, path=path, subject=subject, spki_sha256=digest, diff=diff)


def main() -> None:
    spec = dict(
        definition=dict(type="path", required=True),
        ca=dict(type="str", required=True),
        path=dict(type="path", required=True),
        rehearsal=dict(type="bool"),
        **HSM_ARGUMENT_SPEC,
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    require_engine(module)
    run(module)


if __name__ == "__main__":
    main()
