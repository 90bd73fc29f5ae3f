"""ansible-lint (production profile, offline) and yamllint over the roles, playbooks and inventories.

They run as part of the suite so that a role that drifts from the production profile fails CI,
not a sysadmin's first deployment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
YAML_PATHS = ["roles", "playbooks", "inventory/testing/hosts.yml", "inventory/testing/group_vars",
              "inventory/testing/host_vars", "inventory/production.example/hosts.yml",
              "inventory/production.example/group_vars", "inventory/production.example/host_vars"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), NO_COLOR="1", ANSIBLE_NOCOLOR="1")
    return subprocess.run(list(args), cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=600)


def test_ansible_lint_production_profile_passes() -> None:
    proc = _run(str(BIN / "ansible-lint"), "--offline", "--profile", "production", "--nocolor", "playbooks", "roles")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "'production' was required, and it passed" in proc.stdout + proc.stderr


def test_yamllint_passes() -> None:
    paths = [p for p in YAML_PATHS if (REPO / p).exists()]
    proc = _run(str(BIN / "yamllint"), "--strict", "-c", str(REPO / "tests/infra/yamllint.yml"), *paths)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def test_every_role_has_the_expected_layout() -> None:
    roles = sorted(p for p in (REPO / "roles").iterdir() if p.is_dir())
    assert {r.name for r in roles} >= {"softhsm", "ceremony_suite", "offline_root", "subordinate_ca", "crl_signer",
                                       "crl_publisher", "monitoring"}
    for role in roles:
        for part in ("defaults/main.yml", "tasks/main.yml", "handlers/main.yml", "meta/main.yml",
                     "meta/argument_specs.yml", "README.md"):
            assert (role / part).is_file(), f"{role.name}: {part} missing"
        assert (role / "templates").is_dir(), f"{role.name}: templates/ missing"


def test_custom_modules_document_themselves() -> None:
    """ansible-doc parses each module's DOCUMENTATION, EXAMPLES and RETURN."""
    for module in ("hsm_token", "hsm_key", "ca_csr", "ca_ceremony"):
        proc = _run(str(BIN / "ansible-doc"), "-M", "plugins/modules", "--json", module)
        assert proc.returncode == 0, proc.stderr
        assert '"check_mode"' in proc.stdout and '"diff_mode"' in proc.stdout
