#!/usr/bin/python
# ruff: noqa: E402  (Ansible convention: DOCUMENTATION, EXAMPLES and RETURN come before the imports)
"""Ansible module ca_registry: a subordinate CA's certificate registry, created and migrated by the engine."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ca_registry
short_description: Ensure a subordinate CA's certificate registry exists at the suite's schema version
description:
  - Creates the SQLite certificate registry (WAL mode, file mode 0640) through the engine
    (C(ceremony.registry.Registry)) when it does not exist, and applies the engine's ordered schema
    migrations when it is older than the installed suite.
  - Never deletes or rewrites certificates; an unreadable, locked or corrupt file, or a schema newer
    than the installed suite, fails with one message and the file unchanged.
  - The CRL job refuses a missing registry (a wrong path must never produce an empty CRL), so the
    registry is created deliberately, here, when the CA host is provisioned.
  - Must run with the interpreter of the suite's virtualenv, as the CA's system user (the file's owner).
version_added: "0.1.0"
author: Ceremony suite maintainers
options:
  path:
    description: The registry file.
    type: path
    required: true
  state:
    description: Only V(present); a registry is never deleted by a playbook.
    type: str
    choices: [present]
    default: present
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The schema version before and after.
"""

EXAMPLES = r"""
- name: Certificate registry of the qualified CA
  ca_registry:
    path: /var/lib/ceremony/registry/registry.sqlite3
  become: true
  become_user: ceremony-ca
  vars:
    ansible_python_interpreter: /opt/ceremony-suite/venv/bin/python
"""

RETURN = r"""
schema_version:
  description: The registry's schema version after the task (the predicted one in check mode).
  returned: always
  type: int
created:
  description: Whether the file was created by this task.
  returned: always
  type: bool
certificates:
  description: Number of certificates the registry holds.
  returned: when the registry exists after the task
  type: int
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.ceremony_engine import fail_on_engine_error, require_engine


def run(module: AnsibleModule) -> None:
    from ceremony.errors import CeremonyError
    from ceremony.registry import SCHEMA_VERSION, Registry, stored_schema_version

    path = module.params["path"]
    if not os.path.isdir(os.path.dirname(path) or "."):
        module.fail_json(msg=f"path: the directory of {path} does not exist; the subordinate_ca role creates it")
    try:
        before = stored_schema_version(path)
    except CeremonyError as exc:
        fail_on_engine_error(module, exc)
    if before is not None and before > SCHEMA_VERSION:
        module.fail_json(msg=f"{path}: schema version {before} is newer than this suite knows (at most "
                             f"{SCHEMA_VERSION}); upgrade the suite, the file was left unchanged")
    diff = {"before": {"path": path, "schema_version": before}, "after": {"path": path,
                                                                          "schema_version": SCHEMA_VERSION}}
    changed = before != SCHEMA_VERSION
    if module.check_mode:
        module.exit_json(changed=changed, created=before is None, schema_version=SCHEMA_VERSION, diff=diff)
    try:
        with Registry.open(path, create=True) as registry:
            version, count = registry.schema_version, registry.count()
    except CeremonyError as exc:
        fail_on_engine_error(module, exc)
    module.exit_json(changed=changed, created=before is None, schema_version=version, certificates=count, diff=diff)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(path=dict(type="path", required=True),
                           state=dict(type="str", choices=["present"], default="present")),
        supports_check_mode=True,
    )
    require_engine(module)
    run(module)


if __name__ == "__main__":
    main()
