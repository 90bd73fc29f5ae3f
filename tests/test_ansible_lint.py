"""ansible-lint and yamllint, run plainly as a sysadmin would: no options, the project's own configuration.

``.ansible-lint`` pins the production profile and offline mode, ``.yamllint`` the rules and what is
not linted (the virtualenv, ``out/``). They run as part of the suite so that a role that drifts from
the production profile fails CI, not a sysadmin's first deployment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "YAMLLINT_"))}
    env.update(PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}", NO_COLOR="1")
    return subprocess.run(list(args), cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=600)


def test_project_lint_configuration_pins_production_and_offline() -> None:
    config = yaml.safe_load((REPO / ".ansible-lint").read_text())
    assert config["profile"] == "production" and config["offline"] is True
    assert yaml.safe_load((REPO / ".yamllint").read_text())["extends"] == "default"


def test_plain_ansible_lint_passes() -> None:
    """`ansible-lint` with no option: the project's .ansible-lint makes it the production profile, offline."""
    proc = _run(str(BIN / "ansible-lint"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Profile 'production' was required, and it passed" in out, out[-2000:]
    assert "0 failure(s), 0 warning(s)" in out, out[-2000:]


def test_plain_yamllint_passes_without_a_warning() -> None:
    """`yamllint .` with no option, over the whole tree but the virtualenv and out/: not one line of output."""
    proc = _run(str(BIN / "yamllint"), ".")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.stdout.strip() == "", proc.stdout[-4000:]
    strict = _run(str(BIN / "yamllint"), "--strict", ".")
    assert strict.returncode == 0, strict.stdout[-4000:]


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
