"""Errors an operator sees.

Every failure the suite anticipates is a ``CeremonyError`` whose message is complete on its own:
the command-line front door prints it as one line and exits non-zero, without a traceback. Messages
never contain a PIN: secrets are not passed to constructors of these classes at all.
"""

from __future__ import annotations


class CeremonyError(Exception):
    """Base class: an anticipated failure with a message meant for a person."""

    exit_code = 1


class DefinitionError(CeremonyError):
    """The PKI definition (or another input file) is malformed or violates a rule.

    The message always names the file, the key path inside it and what is allowed.
    """

    exit_code = 2

    def __init__(self, file: str, path: str, problem: str, allowed: str | None = None,
                 line: int | None = None) -> None:
        self.file = file
        self.path = path
        self.problem = problem
        self.allowed = allowed
        self.line = line
        where = f"{file}:{line}" if line else file
        msg = f"{where}: {path or '(top level)'}: {problem}"
        if allowed:
            msg += f" (allowed: {allowed})"
        super().__init__(msg)


class HsmError(CeremonyError):
    """The PKCS#11 module, token, login or key lookup failed."""

    exit_code = 3


class TokenNotFoundError(HsmError):
    """No initialised token matches the reference (a caller may create one: a SoftHSM rehearsal token)."""


class PinError(HsmError):
    """A PIN could not be obtained safely (missing variable, file with loose permissions...)."""


class OutputError(CeremonyError):
    """An output file exists already or could not be written atomically."""

    exit_code = 4


class LintError(CeremonyError):
    """pkilint reported findings at WARNING or above that the definition does not allow."""

    exit_code = 5


class RequestError(CeremonyError):
    """A certificate signing request was refused (bad signature, weak key, unexpected key)."""

    exit_code = 6


class OfflineCheckError(CeremonyError):
    """A ceremony held air-gapped (root ceremonies, key backup and restore) was asked to run on a host with a network
    interface up."""

    exit_code = 7


class VerificationError(CeremonyError):
    """What the HSM returned does not verify or does not match what was linted."""

    exit_code = 8


class RegistryError(CeremonyError):
    """The certificate registry refused a change or could not be opened (missing, corrupt, locked,
    newer schema, unknown serial, invalid reason or date). The registry is unchanged."""

    exit_code = 9
