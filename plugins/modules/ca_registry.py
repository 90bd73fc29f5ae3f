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
  - Creates the registry only on first provisioning. It records the creation in a marker beside the
    registry (C(<path>.provisioned.json), holding the path, creation time, schema version and backup directory); an
    existing registry without a marker (provisioned before the marker existed) gets one. When the
    marker is there but the registry is not (moved away, lost), or when backups of it exist, the
    task fails with one message naming the path, the newest backup found and the exact restore
    command, and creates nothing (check mode too).
  - A migration of an existing registry is preceded by a verified backup next to it
    (C(registry-pre-migration-v<old>-to-v<new>-<UTC>.sqlite3)), returned as RV(pre_migration_backup).
version_added: "0.1.0"
author: Ceremony suite maintainers
options:
  path:
    description: The registry file.
    type: path
    required: true
  backup_dir:
    description:
      - Directory of the registry's scheduled backups (role option C(subordinate_ca_registry_backup_dir)).
      - Recorded in the marker so that a later refusal names the newest backup even when a task does not
        give it; searched, with the registry's own directory, for backups when the registry is missing.
    type: path
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
marker:
  description: The provisioning marker beside the registry.
  returned: always
  type: str
pre_migration_backup:
  description: The verified backup taken before a schema migration.
  returned: when the schema was migrated
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.ceremony_engine import fail_on_engine_error, require_engine


def run(module: AnsibleModule) -> None:
    import datetime as dt
    import pwd
    from pathlib import Path

    from ceremony.ca.registry import SCHEMA_VERSION, Registry, stored_schema_version
    from ceremony.ca.registry_backup import (
        list_backups,
        marker_content,
        marker_path,
        missing_registry_message,
        read_marker,
        write_marker,
    )
    from ceremony.common.errors import CeremonyError

    path = module.params["path"]
    backup_dir = module.params["backup_dir"]
    if not os.path.isdir(os.path.dirname(path) or "."):
        module.fail_json(msg=f"path: the directory of {path} does not exist; the subordinate_ca role creates it")
    try:
        before = stored_schema_version(path)
        marker = read_marker(path)
    except CeremonyError as exc:
        fail_on_engine_error(module, exc)
    marker_file = str(marker_path(path))
    if before is None:
        # Never a new empty registry where one existed: the marker says it was created here, or
        # backups of it exist (the whole directory may have been moved, marker included).
        dirs = [d for d in (backup_dir, (marker or {}).get("backup_dir")) if d]
        if marker is not None or list_backups(path, dirs):
            user = pwd.getpwuid(os.geteuid()).pw_name
            module.fail_json(msg=missing_registry_message(path, marker or {}, dirs, user),
                             marker=marker_file)
    if before is not None and before > SCHEMA_VERSION:
        module.fail_json(msg=f"{path}: schema version {before} is newer than this suite knows (at most "
                             f"{SCHEMA_VERSION}); upgrade the suite, the file was left unchanged")
    diff = {"before": {"path": path, "schema_version": before, "marker": marker},
            "after": {"path": path, "schema_version": SCHEMA_VERSION}}
    marker_needed = marker is None or (backup_dir is not None and marker.get("backup_dir") != backup_dir)
    changed = before != SCHEMA_VERSION or marker_needed
    if module.check_mode:
        module.exit_json(changed=changed, created=before is None, schema_version=SCHEMA_VERSION, marker=marker_file,
                         diff=diff)
    result: dict[str, object] = {}
    try:
        with Registry.open(path, create=before is None) as registry:
            version, count = registry.schema_version, registry.count()
            if registry.migration_backup is not None:
                result["pre_migration_backup"] = str(registry.migration_backup)
        if marker_needed:
            now = dt.datetime.now(dt.UTC)
            content = dict(marker) if marker is not None else marker_content(Path(path), version, now)
            if marker is None and before is not None:
                content["created"] = None  # existing before the marker: its creation time is unknown
                content["marker_written"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
            if backup_dir is not None:
                content["backup_dir"] = backup_dir
            write_marker(path, content)
    except CeremonyError as exc:
        fail_on_engine_error(module, exc)
    diff["after"]["schema_version"] = version
    module.exit_json(changed=changed, created=before is None, schema_version=version, certificates=count,
                     marker=marker_file, diff=diff, **result)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(path=dict(type="path", required=True),
                           backup_dir=dict(type="path"),
                           state=dict(type="str", choices=["present"], default="present")),
        supports_check_mode=True,
    )
    require_engine(module)
    run(module)


if __name__ == "__main__":
    main()
