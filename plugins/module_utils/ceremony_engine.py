"""Shared plumbing of the ceremony suite's Ansible modules.

The modules run on the managed host with the Python of the suite's virtualenv (the
``ceremony_suite`` role installs it), import the ``ceremony`` engine and call it directly: the
same code the Invoke tasks run, never a shell-out. This file keeps three things in one place:
importing the engine with a clear message when it is missing, giving the engine its PIN without
the PIN ever reaching argv or a message, and turning the engine's errors into ``fail_json``.
"""

from __future__ import annotations

import os
import traceback

ENGINE_IMPORT_ERROR = None
try:
    import ceremony  # noqa: F401  (only checks that the engine is importable)
except ImportError:
    ENGINE_IMPORT_ERROR = traceback.format_exc()

# Options every HSM-touching module accepts.
HSM_ARGUMENT_SPEC = {
    "softhsm_conf": {"type": "path"},
    "user_pin": {"type": "str", "no_log": True},
    "pin_file": {"type": "path"},
}


def require_engine(module) -> None:
    """Fail with one clear message when the module does not run with the suite's interpreter."""
    if ENGINE_IMPORT_ERROR is not None:
        module.fail_json(
            msg="the ceremony engine is not importable by this interpreter; run the module with the "
                "suite's virtualenv (ansible_python_interpreter: the ceremony_suite role's "
                "ceremony_suite_python)",
            exception=ENGINE_IMPORT_ERROR,
        )


def prepare_environment(module) -> None:
    """Point SoftHSM at its configuration before the PKCS#11 module is first loaded."""
    conf = module.params.get("softhsm_conf")
    if conf:
        if not os.path.isfile(conf):
            module.fail_json(msg=f"softhsm_conf: {conf} does not exist; the softhsm role writes it")
        os.environ["SOFTHSM2_CONF"] = conf


def pin_source(module, hsm, so: bool = False):
    """A PinSource for ``hsm``: the user_pin option (held in this process's memory under the
    definition's ``pin_env`` name: never exported, never on a command line) or a 0600 ``pin_file``."""
    from ceremony.hsm import pins
    from ceremony.hsm.pins import PinSource

    env_name = (hsm.so_pin_env if so else hsm.pin_env) or ("ANSIBLE_CEREMONY_SO_PIN" if so
                                                           else "ANSIBLE_CEREMONY_PIN")
    value = module.params.get("so_pin" if so else "user_pin")
    if value:
        pins.hold(env_name, value)
    return PinSource(env=env_name, file=None if so else module.params.get("pin_file"), interactive=False)


def load_ca(module, definition: str, ca_name: str):
    """The loaded definition and the CA named ``ca_name`` in it, or ``fail_json`` naming the field."""
    from ceremony.common.errors import CeremonyError
    from ceremony.definition.model import load_definition

    try:
        loaded = load_definition(definition)
    except CeremonyError as exc:
        module.fail_json(msg=str(exc))
    if ca_name not in loaded.model.cas:
        module.fail_json(msg=f"{definition}: cas.{ca_name}: no such CA; the definition has "
                             f"{', '.join(sorted(loaded.model.cas))}")
    return loaded, loaded.model.cas[ca_name]


def fail_on_engine_error(module, exc: Exception) -> None:
    module.fail_json(msg=str(exc), error=type(exc).__name__)
