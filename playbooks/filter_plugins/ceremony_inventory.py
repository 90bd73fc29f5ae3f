"""Filter ``ceremony_inventory_problems``: the inventory's (and ``-e``'s) variables checked before a run.

Ansible ignores a variable nobody reads: ``subordinate_ca_user_pni`` in group_vars or
``-e crl_signer_on_calender=daily`` would change nothing and say nothing. The playbooks call this
filter in their first plays (``playbooks/checks.yml``) over every host of the run and stop on any problem:

* a name that is neither an option of a role (``roles/*/meta/argument_specs.yml``, ``defaults/``) nor
  one of the playbooks' own variables (``playbooks/vars/inventory_variables.yml``), with the closest
  known name as a suggestion; a retired name with what replaced it;
* a secret (an option marked ``no_log``, or ``secret`` in inventory_variables.yml) that is not a
  string, such as a PIN written unquoted (YAML reads ``012345`` as a number and drops the zero), or
  that refers to a variable that does not exist (the vault file was never created);
* a vault file (``vault.yml`` under ``group_vars/`` or ``host_vars/``) that defines variables in clear;
* ``ansible_become: false`` on a host whose roles become the CA's user (it would override their
  ``become`` and run the CA's key and CRL job as the connecting user).

The problems name hosts, variables and files, never a value.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from jinja2 import Undefined

# Variables Ansible itself puts in every host's variables (besides the ansible_* ones).
MAGIC = frozenset({
    "group_names", "groups", "hostvars", "inventory_dir", "inventory_file", "inventory_hostname",
    "inventory_hostname_short", "omit", "play_hosts", "playbook_dir", "role_name", "role_names", "role_path",
    "module_setup",
})
ALLOWED_PREFIXES = ("ansible_", "vault_")
VAULT_FILE_NAMES = ("vault.yml", "vault.yaml")


def _yaml(path: str) -> Any:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def role_variables(roles_dir: str) -> tuple[set[str], set[str]]:
    """Every option of every role (argument specs and defaults), and the ones marked no_log."""
    known: set[str] = set()
    secret: set[str] = set()
    for role in sorted(os.listdir(roles_dir)):
        specs = os.path.join(roles_dir, role, "meta", "argument_specs.yml")
        if os.path.isfile(specs):
            for entry in ((_yaml(specs) or {}).get("argument_specs") or {}).values():
                for name, option in ((entry or {}).get("options") or {}).items():
                    known.add(name)
                    if (option or {}).get("no_log"):
                        secret.add(name)
        defaults = os.path.join(roles_dir, role, "defaults", "main.yml")
        if os.path.isfile(defaults):
            known.update((_yaml(defaults) or {}).keys())
    return known, secret


def _run_time_names(hostvars: Any, host: str) -> set[str]:
    """Facts and registered results of this run (not the inventory's): gathered, set_fact, register."""
    manager = getattr(hostvars, "_variable_manager", None)
    if manager is None:
        return set()
    names: set[str] = set()
    try:
        names.update(manager._nonpersistent_fact_cache.get(host, {}).keys())
        names.update((manager._fact_cache.get(host) or {}).keys())
    except (AttributeError, KeyError, TypeError):  # another Ansible version: check every name
        pass
    return names


def _extra_var_names(hostvars: Any) -> set[str]:
    manager = getattr(hostvars, "_variable_manager", None)
    try:
        return set(manager.extra_vars.keys()) if manager is not None else set()
    except AttributeError:
        return set()


def _describe_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "empty (null)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _undefined_reason(value: Undefined) -> str:
    """Why a value is undefined (Ansible's marker says which variable), without the value."""
    try:
        message = value._as_message()  # type: ignore[attr-defined]
    except Exception:
        message = ""
    return (str(message).splitlines() or ["undefined"])[0]


def _vault_files(inventory_dir: str) -> list[str]:
    found = []
    for kind in ("group_vars", "host_vars"):
        for root, _dirs, files in os.walk(os.path.join(inventory_dir, kind)):
            found.extend(os.path.join(root, f) for f in files if f in VAULT_FILE_NAMES)
    return sorted(found)


def clear_vault_files(inventory_dirs: Iterable[str]) -> list[str]:
    """Vault files that define variables without being encrypted."""
    problems = []
    for inventory_dir in sorted(set(inventory_dirs)):
        for path in _vault_files(inventory_dir):
            with open(path, "rb") as handle:
                if handle.read(14).startswith(b"$ANSIBLE_VAULT"):
                    continue
            try:
                data = _yaml(path)
            except yaml.YAMLError:
                data = {"?": None}
            if data:
                problems.append(f"{path} defines variables in clear: a vault file is encrypted "
                                f"(ansible-vault create {path}, or ansible-vault encrypt {path}); "
                                "PINs never stay in plain YAML")
    return problems


def ceremony_inventory_problems(hostvars: Any, hosts: Iterable[str], roles_dir: str,
                                spec: Mapping[str, Any]) -> list[str]:
    """Every problem found in the variables of ``hosts``, one line each; empty when all is well."""
    known, secret = role_variables(roles_dir)
    own = spec.get("inventory_variables") or {}
    known.update(own)
    secret.update(name for name, entry in own.items() if (entry or {}).get("secret"))
    internal = set(spec.get("internal_variables") or [])
    retired = dict(spec.get("retired_variables") or {})
    extra = _extra_var_names(hostvars)
    unknown: dict[str, list[str]] = {}
    bad_secrets: dict[tuple[str, str], list[str]] = {}
    inventory_dirs: list[str] = []
    for host in hosts:
        data = hostvars[host]
        names = set(data.keys())
        if "inventory_dir" in names and data["inventory_dir"]:
            inventory_dirs.append(str(data["inventory_dir"]))
        run_time = _run_time_names(hostvars, host) - extra
        for name in sorted(names - MAGIC - known - (internal - extra) - run_time):
            if not name.startswith(ALLOWED_PREFIXES):
                unknown.setdefault(name, []).append(host)
        for name in sorted(names & secret):
            try:
                value = data[name]
                reason = _undefined_reason(value) if isinstance(value, Undefined) else None
            except Exception as exc:  # the value refers to a variable that is not there (no vault file)
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if reason is not None:
                problem = (f"cannot be resolved: {reason}; put the PIN in the inventory's encrypted vault file "
                           "(ansible-vault create <inventory>/group_vars/<group>/vault.yml, docs/provisioning.md)")
            else:
                if isinstance(value, str):
                    continue
                problem = (f"is {_describe_type(value)}, not a string: write a PIN in quotes in YAML "
                           "(vault_...: \"012345\"); unquoted digits are read as a number and a leading zero is lost")
            bad_secrets.setdefault((name, problem), []).append(host)
    problems = []
    for host in hosts:
        data = hostvars[host]
        groups = set(data.get("group_names") or [])
        need = sorted(groups & set(spec.get("become_user_groups") or []))
        if need and "ansible_become" in data and data["ansible_become"] is False:
            problems.append(f"ansible_become: false ({host}) turns off the roles' own become: the {', '.join(need)} "
                            "roles run the CA's key, CSR and CRL job as the CA's user (become_user, su); connect as "
                            "root (ansible_user: root, no ansible_become) or leave ansible_become: true")
    for name, where in sorted(unknown.items()):
        source = "given with -e" if name in extra else f"set for {', '.join(where)}"
        if name in retired:
            problems.append(f"{name} ({source}) is no longer used: {retired[name]}")
            continue
        if name in internal:
            problems.append(f"{name} ({source}) is set by the playbooks themselves while they run; never set it")
            continue
        guess = difflib.get_close_matches(name, sorted(known | set(retired)), n=1, cutoff=0.75)
        hint = f"; did you mean {guess[0]}?" if guess else ""
        problems.append(f"{name} ({source}) is not a variable of this suite, nothing would read it{hint} "
                        "(known: roles/*/meta/argument_specs.yml, playbooks/vars/inventory_variables.yml)")
    problems.extend(f"{name} ({', '.join(where)}) {problem}" for (name, problem), where in sorted(bad_secrets.items()))
    problems.extend(clear_vault_files(inventory_dirs))
    return problems


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"ceremony_inventory_problems": ceremony_inventory_problems}
