"""ansible-lint and yamllint, run plainly as a sysadmin would: no options, the project's own configuration.

``.ansible-lint`` pins the production profile and offline mode, ``.yamllint`` the rules and what is
not linted (the virtualenv, ``out/``). They run as part of the suite so that a role that drifts from
the production profile fails CI, not a sysadmin's first deployment.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
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
    for module in ("hsm_token", "hsm_key", "ca_csr", "ca_ceremony", "ca_registry", "crl_sign"):
        proc = _run(str(BIN / "ansible-doc"), "-M", "plugins/modules", "--json", module)
        assert proc.returncode == 0, proc.stderr
        assert '"check_mode"' in proc.stdout and '"diff_mode"' in proc.stdout


# An option whose name says it holds a secret (a PIN, a password): never a path to one or the name of
# the variable that holds it (pin_file, pin_env).
SECRET = re.compile(r"(pin|password|passphrase|secret)$")


def test_every_secret_option_of_a_role_is_no_log() -> None:
    """Every role's meta/argument_specs.yml marks its PIN options no_log (and the inventory check treats
    exactly those as secrets: strings, never shown)."""
    found = []
    for specs in sorted((REPO / "roles").glob("*/meta/argument_specs.yml")):
        for entry in (yaml.safe_load(specs.read_text())["argument_specs"] or {}).values():
            for name, option in (entry.get("options") or {}).items():
                if SECRET.search(name):
                    found.append(name)
                    assert option.get("no_log") is True, f"{specs.relative_to(REPO)}: {name} is not no_log"
    assert {"subordinate_ca_user_pin", "subordinate_ca_so_pin"} <= set(found)


class _Captured(Exception):
    pass


def _argument_spec(path: Path) -> dict:
    """The argument spec a custom module gives AnsibleModule (its main() stopped right there)."""
    utils = importlib.util.spec_from_file_location("ansible.module_utils.ceremony_engine",
                                                   REPO / "plugins/module_utils/ceremony_engine.py")
    assert utils and utils.loader
    engine = importlib.util.module_from_spec(utils)
    saved = sys.modules.get("ansible.module_utils.ceremony_engine")
    sys.modules["ansible.module_utils.ceremony_engine"] = engine
    try:
        utils.loader.exec_module(engine)
        spec = importlib.util.spec_from_file_location(f"_module_{path.stem}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        captured: dict = {}

        def capture(argument_spec: dict, **_: object) -> None:
            captured.update(argument_spec)
            raise _Captured

        module.AnsibleModule = capture
        with contextlib.suppress(_Captured):
            module.main()
        return captured
    finally:
        if saved is None:
            sys.modules.pop("ansible.module_utils.ceremony_engine", None)
        else:
            sys.modules["ansible.module_utils.ceremony_engine"] = saved


def test_every_secret_option_of_a_module_is_no_log() -> None:
    secrets_seen = set()
    for path in sorted((REPO / "plugins/modules").glob("*.py")):
        spec = _argument_spec(path)
        assert spec, path.name
        for name, option in spec.items():
            if SECRET.search(name):
                secrets_seen.add(name)
                assert option.get("no_log") is True, f"{path.name}: option {name} is not no_log"
    assert {"user_pin", "so_pin"} <= secrets_seen
