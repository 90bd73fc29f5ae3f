"""The CP/CPS's one error class, in a module of its own so that every module of the package can raise it
(``ceremony.policy.facts`` re-exports it, where the rest of the suite imports it from)."""

from __future__ import annotations

from ceremony.common.errors import CeremonyError


class PolicyError(CeremonyError):
    """The CP/CPS cannot be built or checked: a missing input, a bad fragment, or drift."""

    exit_code = 10
