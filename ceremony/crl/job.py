"""The subordinate CA's scheduled CRL job: registry → CRL → HSM → checks → publication → metrics.

The scheduler (systemd timer or cron, role ``crl_signer``) runs it often (hourly); a run signs a
new CRL only when one is *due*: no CRL published yet, the definition's ``crl.interval`` has passed
since the published thisUpdate, the number of revocations changed (a revocation is published on
the next run, well within the 24 hours of BR 4.9.7), or ``force``.

Every run, due or not, checks what signing needs (:func:`checked_token`): the PIN source, the
PKCS#11 module, the token, the login and the CA key (present, the CA certificate's key). A broken
PIN file or a missing token is reported within the hour (non-zero exit, metrics, journal), not on
the day the CRL falls due. A PIN the token refuses sets a *latch* (:func:`pin_latch_path`): no
later run tries the PIN again until an operator clears it, so an unattended job never walks a real
HSM into its PIN lockout.

Every run also asks the kernel whether the clock is synchronised (:mod:`ceremony.common.clock`) when the
host requires it (``/etc/ceremony/clock.json``, role ``host_baseline``): thisUpdate and nextUpdate
come from this clock, so an unsynchronised clock or one whose maximum error is over the bound stops
the run before the token is opened, with the reason ``clock``.

Order of a signing run, chosen so that a failure changes nothing that matters:

1. definition (its CRL limits are checked on load), CA certificate, publication directory, the
   registry, a lock so that two runs never overlap, the clock (when required);
2. the PIN latch, the PIN source, the module, the token, the login, the key (every run);
3. the published CRL; is a CRL due? If not, the run ends here;
4. the entries are read from the registry as a stream and encoded (:mod:`ceremony.crl.encoding`), and the TBS
   is linted with pkilint after signing it with a throwaway key like the CA's (the whole CRL up to
   :data:`~ceremony.crl.encoding.LINT_FULL_MAX` entries, a structural sample above);
5. the CRL number is reserved durably (:mod:`ceremony.crl.state`) — *then* the HSM signs;
6. the signature, the TBS, an independent parse and a sample of serials are verified, the CRL
   is linted again, and it is checked against the previous CRL (:mod:`ceremony.crl.checks`);
7. PEM then DER are replaced atomically in the publication directory (DER, the file the CRL URL
   serves, last), and the metrics are written.

A CA with ``crl.partitions: N`` (docs/crl.md, "Partitioned CRLs") has several CRLs, its *targets*
(:func:`crl_targets`): the full CRL while an unexpired certificate names it, and every partition CRL. Steps 3
to 6 run for each target (its own published CRL, number state, entries, lint, signature and previous-CRL check);
a run is due when any target is, and then re-signs them all. Step 7 publishes them together: nothing is renamed
until every target is signed, staged and checked, and the renames go through a journal that a killed run's
successor finishes (:func:`_publish_all`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import resource
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cryptography import x509

from ceremony.ca.generations import IssuerGeneration, ca_for_generation, generation_of, issuer_generations
from ceremony.ca.registry import CRL_ENTRY, NO_DATE, Registry
from ceremony.common.clock import ClockPolicy, ClockStatus, check_clock
from ceremony.common.errors import (
    CeremonyError,
    DefinitionError,
    HsmError,
    LintError,
    OutputError,
    PinError,
    RegistryError,
    VerificationError,
)
from ceremony.common.fileio import replace_atomically
from ceremony.crl import encoding as crlenc
from ceremony.crl.checks import CrlSummary, check_against_previous, summarise
from ceremony.crl.metrics import CrlMetrics, PartitionMetrics, write_metrics
from ceremony.crl.state import check_not_ahead, reserve, state_path
from ceremony.definition.model import CA, LoadedDefinition, crl_url_for, load_definition
from ceremony.hsm.keys import spki_sha256
from ceremony.hsm.pins import get_pin, origin_text, pin_origin
from ceremony.hsm.session import PinRejectedError, find_token, load_module, open_session, pin_source_for
from ceremony.hsm.signers import signing_key
from ceremony.x509.files import load_issuer_certificate
from ceremony.x509.lint import enforce, throwaway_key_like

#: Test hook: ``after-sign`` makes the process kill itself (SIGKILL) right after the HSM signed,
#: ``before-publish`` once the new files are staged under temporary names: the crash tests use it.
KILL_HOOK_ENV = "CEREMONY_CRL_TEST_KILL"


#: Where the job looks for the CA certificate when ``--ca-cert`` is not given, after the ceremonies'
#: output directory when the caller names one (``invoke crl.sign``: ``--out``, default ``out/ENV``,
#: where the signing ceremony writes ``<ca>.crt.pem``): next to the definition, then the subordinate
#: CA directory the Ansible role ``subordinate_ca`` installs.
DEFAULT_CA_DIRS = (("{definition_dir}", "next to the definition"),
                   ("/var/lib/ceremony/{ca}", "where the role subordinate_ca installs it"))


@dataclass(frozen=True)
class CrlJobResult:
    ca: str
    signed: bool
    number: int
    entries: int
    this_update: dt.datetime
    next_update: dt.datetime
    der_path: Path
    pem_path: Path
    reason: str
    timings: dict[str, float]
    peak_mb: dict[str, float] = field(default_factory=dict)
    """Peak resident memory of the process (MB) at the end of each step."""
    clock: ClockStatus | None = None
    """The kernel's clock state the run checked (None: the run had no clock requirement)."""
    crls: tuple[CrlOutput, ...] = ()
    """Every CRL of the run, the full CRL first (when it is still published), then the partitions."""

    @property
    def partitions(self) -> tuple[CrlOutput, ...]:
        """The current key's partition CRLs."""
        return tuple(c for c in self.current if c.partition is not None)

    @property
    def full(self) -> CrlOutput | None:
        """The full CRL (None: the CA partitions and no unexpired certificate names the full CRL any more)."""
        return next((c for c in self.current if c.partition is None), None)

    @property
    def current(self) -> tuple[CrlOutput, ...]:
        """The CRLs signed by the CA's current key (the first output's generation)."""
        return tuple(c for c in self.crls if c.generation == self.crls[0].generation) if self.crls else ()

    @property
    def earlier(self) -> tuple[CrlOutput, ...]:
        """The CRLs of earlier keys (after a re-key), for what they issued that has not expired yet."""
        return tuple(c for c in self.crls if c not in self.current)

    def summary(self) -> str:
        earlier = "".join(f"; key generation {c.generation}: {c.der_path.name} #{c.number} ({c.entries} entries)"
                          for c in self.earlier)
        return self._summary() + earlier

    def _summary(self) -> str:
        verb = "signed and published" if self.signed else "is current; nothing signed"
        if not self.partitions:
            return (f"CRL {self.number} of {self.ca!r} {verb} ({self.entries} entries, thisUpdate "
                    f"{self.this_update:%Y-%m-%dT%H:%M:%SZ}, nextUpdate {self.next_update:%Y-%m-%dT%H:%M:%SZ}): "
                    f"{self.der_path} ({self.reason})")
        verb = "signed and published together" if self.signed else "are current; nothing signed"
        parts = ", ".join(f"p{c.partition} #{c.number} ({c.entries})" for c in self.partitions)
        full = self.full
        head = f"full CRL #{full.number} ({full.entries} entries) and " if full else ""
        return (f"CRLs of {self.ca!r} {verb}: {head}{len(self.partitions)} partitions {parts}; thisUpdate "
                f"{self.this_update:%Y-%m-%dT%H:%M:%SZ}, nextUpdate {self.next_update:%Y-%m-%dT%H:%M:%SZ}; in "
                f"{self.der_path.parent} ({self.reason})")


def job_ca(defn: LoadedDefinition, ca_name: str) -> CA:
    """The subordinate CA the job signs for; the root's CRLs are signed at its ceremonies only."""
    ca = defn.model.ca(ca_name)
    if ca.role != "subordinate":
        raise VerificationError(f"cas.{ca_name} is the root: its CRLs are signed in batches at a root ceremony "
                                "(invoke crl.root-batch), not by the scheduled job")
    return ca


def after_termination(path: Path, what: str, rule: str) -> VerificationError:
    """The one refusal of a scheduled job (CRL, OCSP) that finds what the CA's termination left at ``path``: the
    final CRL, the final OCSP store. Its answers are the last the CA gives (docs/lifecycle.md, "CA termination"),
    so the job changes nothing and says to disable its timer, which is what the termination's checklist asks."""
    return VerificationError(f"{path}: {what}, signed at the CA's termination; {rule}: nothing was signed or "
                             "replaced; disable this job's timer")


def publication_names(ca: CA) -> tuple[str, str]:
    """``(DER file, PEM file)``: the basename of the CA's ``crl_url`` and the same with ``.pem``."""
    name = os.path.basename(urlparse(ca.publication.crl_url).path)
    if not name or name in (".", ".."):
        raise VerificationError(f"cannot take a file name from crl_url {ca.publication.crl_url!r}")
    return name, name + ".pem"


def find_ca_certificate(defn: LoadedDefinition, ca_name: str, given: str | Path | None,
                        output_dir: str | Path | None = None) -> Path:
    """``given``, else the first ``<ca>.crt.pem`` found: in ``output_dir`` (the ceremonies' output
    directory), next to the definition, in ``/var/lib/ceremony/<ca>/``. None found: one message with
    every place looked at and the options that name the certificate."""
    if given:
        return Path(given)
    places = [(Path(output_dir), "the ceremonies' output directory, --out")] if output_dir is not None else []
    places += [(Path(d.format(definition_dir=defn.path.parent, ca=ca_name)), why) for d, why in DEFAULT_CA_DIRS]
    candidates = [(directory / f"{ca_name}.crt.pem", why) for directory, why in places]
    for path, _ in candidates:
        if path.is_file():
            return path
    looked = "; ".join(f"{path} ({why})" for path, why in candidates)
    remedy = "pass --ca-cert FILE" + (", or --out DIR: the output directory the signing ceremony wrote it to"
                                      if output_dir is not None else "")
    raise OutputError(f"the certificate of CA {ca_name!r} was not found; looked at: {looked}; {remedy}")


@dataclass(frozen=True)
class Issuer:
    """The CA as the CRL names it, taken from its certificate (so the CRL matches it byte for byte)."""

    cert: x509.Certificate
    path: Path

    @property
    def name(self) -> x509.Name:
        return self.cert.subject

    @property
    def key_id(self) -> bytes:
        try:
            return self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            raise VerificationError(f"{self.path}: the CA certificate has no subject key identifier") from None

    @property
    def public_key(self) -> Any:
        return self.cert.public_key()


def load_issuer(path: Path, ca_name: str) -> Issuer:

    cert = load_issuer_certificate(path, ca_name)
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise VerificationError(f"{path}: not a CA certificate (basicConstraints/keyUsage missing)") from None
    if not bc.ca or not ku.crl_sign:
        raise VerificationError(f"{path}: the certificate may not sign CRLs (needs CA and cRLSign)")
    return Issuer(cert, path)


def read_published(path: Path) -> tuple[bytes, CrlSummary] | None:
    """The published CRL (DER) and its summary, or None when there is none yet."""
    try:
        der = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputError(f"{path}: cannot read the published CRL: {exc.strerror}") from None
    try:
        return der, summarise(x509.load_der_x509_crl(der))
    except ValueError as exc:
        raise VerificationError(f"{path}: the published CRL does not parse ({exc}); move it away after "
                                "checking why (the next CRL must follow the last good one)") from None


@contextlib.contextmanager
def job_lock(out: Path, ca_name: str) -> Iterator[None]:
    """One run per CA at a time: a second run (a slow run overlapping the next timer) refuses."""
    lock_path = state_path(out, ca_name).with_suffix(".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o640)
    except OSError as exc:
        raise OutputError(f"{lock_path}: cannot create the job lock: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"another CRL job for {ca_name!r} is running (lock {lock_path}); "
                              "nothing was done") from None
        yield
    finally:
        os.close(fd)


class HealthCheckError(HsmError):
    """What signing needs is not there (PIN source, module, token, login, key): found on every run.

    ``reason`` is the label of the failure metric (:data:`ceremony.crl.metrics.FAILURE_REASONS`).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def pin_latch_path(out: str | Path, ca_name: str) -> Path:
    """``<out>/.state/<ca>.pin-failed``: set when the token refused the job's PIN (next to the CRL number state)."""
    return state_path(Path(out), ca_name).with_suffix(".pin-failed")


@dataclass(frozen=True)
class PinLatch:
    """A PIN latch as found on disk: when it was set and why (never the PIN)."""

    path: Path
    set_at: dt.datetime
    reason: str
    detail: str

    def describe(self) -> str:
        return f"set {self.set_at:%Y-%m-%dT%H:%M:%SZ} ({self.reason})"


def read_pin_latch(path: Path) -> PinLatch | None:
    """The latch at ``path``, or None. A latch that does not parse is still a latch (its mtime is the time)."""
    try:
        raw = path.read_bytes()
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise HealthCheckError("pin_latched", f"{path}: cannot read the PIN latch ({exc.strerror}); the PIN is not "
                                              "tried while it may be set") from None
    try:
        data = json.loads(raw)
        set_at = dt.datetime.fromisoformat(data["set_at"])
        return PinLatch(path, set_at, str(data["reason"]), str(data.get("detail", "")))
    except (ValueError, KeyError, TypeError):
        return PinLatch(path, dt.datetime.fromtimestamp(mtime, dt.UTC).replace(microsecond=0), "unreadable latch", "")


def clear_pin_latch_command(ca_name: str, out: str | Path) -> str:
    return f"ceremony-crl-sign --clear-pin-latch --ca {ca_name} --out {out}"


def set_pin_latch(path: Path, ca: CA, reason: str, detail: str, now: dt.datetime | None = None) -> PinLatch:
    """Write the latch (atomically, 0640): the time, the PKCS#11 reason and what the token said; no secret."""
    set_at = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    data = {"set_at": set_at.isoformat(), "reason": reason, "token": ca.hsm.token.describe(),
            "key_label": ca.hsm.key_label, "detail": detail}
    try:
        replace_atomically(path, (json.dumps(data, indent=2) + "\n").encode(), mode=0o640)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the PIN latch ({exc.strerror}); the token refused the PIN: "
                          "correct it before the next run") from None
    return PinLatch(path, set_at, reason, detail)


def clear_pin_latch(out: str | Path, ca_name: str) -> PinLatch | None:
    """Remove the latch (the operator's decision, after correcting the PIN); returns what was cleared."""
    path = pin_latch_path(out, ca_name)
    latch = read_pin_latch(path)
    if latch is None:
        return None
    try:
        path.unlink()
    except FileNotFoundError:
        return latch
    except OSError as exc:
        raise OutputError(f"{path}: cannot remove the PIN latch ({exc.strerror}); run the command as the job's "
                          "user") from None
    return latch


@contextlib.contextmanager
def checked_token(ca: CA, issuer: Issuer, latch_path: Path, pin_file: str | None = None,
                  interactive: bool = False, clear_command: str | None = None) -> Iterator[Any]:
    """Check what signing needs (:func:`checked_keys`) and yield the CA's signing key with its session open."""
    with checked_keys(ca, [(ca.hsm.key_label, issuer)], latch_path, pin_file, interactive, clear_command) as keys:
        yield keys[0]


@contextlib.contextmanager
def checked_keys(ca: CA, wanted: list[tuple[str, Issuer]], latch_path: Path, pin_file: str | None = None,
                 interactive: bool = False, clear_command: str | None = None) -> Iterator[list[Any]]:
    """Check what signing needs, in order, and yield the signing keys ``wanted`` (label, the certificate the key
    must be the key of: one per key generation that signs a CRL, :mod:`ceremony.ca.generations`) with their
    session open.

    The PIN latch, the PIN source (a 0600 file owned by this user, or the variable set), the module,
    the token, the login, the key (present, and the key of the CA certificate). Each failure is a
    :class:`HealthCheckError` with its reason. A PIN the token refuses writes the latch first: the
    PIN is never tried again until an operator clears it.
    """
    clear = clear_command or f"ceremony-crl-sign --clear-pin-latch --ca <ca> --out {latch_path.parent.parent}"
    latch = read_pin_latch(latch_path)
    token = ca.hsm.token.describe()
    if latch is not None:
        raise HealthCheckError("pin_latched", f"the PIN for {token} was refused by the token, latch {latch.describe()}"
                                              f"; it is not tried again until an operator corrects it and runs: "
                                              f"{clear}")
    source = pin_source_for(ca.hsm, pin_file, interactive)
    origin = pin_origin(source)
    if origin != "prompt":
        try:
            get_pin(source)  # mode, owner, not empty, or the variable set; the value is dropped at once
        except PinError as exc:
            raise HealthCheckError("pin_source", str(exc)) from None
    try:
        lib = load_module(ca.hsm.module)
    except HsmError as exc:
        raise HealthCheckError("module", str(exc)) from None
    try:
        find_token(lib, ca.hsm.token)
    except HsmError as exc:
        raise HealthCheckError("token", str(exc)) from None
    with contextlib.ExitStack() as stack:
        try:
            session = stack.enter_context(open_session(ca.hsm, source))
        except PinRejectedError as exc:
            code = "CKR_PIN_LOCKED" if exc.locked else "CKR_PIN_INCORRECT"
            set_pin_latch(latch_path, ca, code, f"{exc} (PIN from {origin_text(source, origin)})")
            raise HealthCheckError("pin_locked" if exc.locked else "pin_incorrect",
                                   f"{exc}. The PIN latch is set ({latch_path}): no run tries the PIN again until "
                                   f"an operator corrects it and runs: {clear}") from None
        except PinError as exc:
            raise HealthCheckError("pin_source", str(exc)) from None
        except HsmError as exc:
            raise HealthCheckError("login", str(exc)) from None
        keys = []
        for label, issuer in wanted:
            try:
                key = signing_key(session, label)
            except HsmError as exc:
                raise HealthCheckError("key_missing", f"{token}: {exc}") from None
            if spki_sha256(key.public_key()) != spki_sha256(issuer.public_key):
                raise HealthCheckError("key_mismatch", f"the key {label!r} on {token} is not the key of the "
                                                       f"CA certificate {issuer.path}")
            keys.append(key)
        yield keys


_REASON_OF = ((PinError, "pin_source"), (DefinitionError, "definition"), (RegistryError, "registry"),
              (LintError, "lint"), (OutputError, "output"), (VerificationError, "verification"), (HsmError, "hsm"),
              (CeremonyError, "error"))


def failure_reason(exc: BaseException) -> str:
    """The ``reason`` label of a failed run (:data:`ceremony.crl.metrics.FAILURE_REASONS`)."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        return reason
    return next((label for cls, label in _REASON_OF if isinstance(exc, cls)), "unexpected")


def _due(prev: CrlSummary | None, revoked_now: int, ca: CA, now: dt.datetime, force: bool) -> str | None:
    if force:
        return "forced"
    if prev is None:
        return "no CRL published yet"
    if revoked_now != prev.entries:
        return f"revocations changed ({prev.entries} → {revoked_now})"
    if now >= prev.this_update + ca.crl.clock_skew_td + ca.crl.interval_td:
        return f"interval {ca.crl.interval} elapsed"
    if prev.next_update is not None and now >= prev.next_update - ca.crl.interval_td:
        return "nextUpdate is near"
    return None


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _remove_stale_temporaries(out_dir: Path, names: tuple[str, ...]) -> None:
    """Temporary files a killed run left behind (never visible under the published names)."""
    if not out_dir.is_dir():
        return
    for name in names:
        for tmp in out_dir.glob(f".{name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _kill_hook(point: str) -> None:
    if os.environ.get(KILL_HOOK_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _registry_lookup(registry: Any) -> Callable[[int], dt.datetime | None]:
    def lookup(serial: int) -> dt.datetime | None:
        rec = registry.get(serial)
        return None if rec is None else rec.not_after
    return lookup


def _encode_from_registry(registry: Registry, out: bytearray, partition: int | None = None,
                          generations: tuple[int, ...] | None = None
                          ) -> tuple[int, list[crlenc.RevokedRow], int | None]:
    """Stream the registry's packed revocation records (all, or one partition's; of every issuer generation, or
    of ``generations``: one key's) into ``out``.

    Returns the count, a structural sample and the latest revocationDate written (epoch seconds).
    """
    packed = registry.iter_revoked_packed(partition=partition, generations=generations)
    return crlenc.encode_revoked_packed(packed, out, CRL_ENTRY, NO_DATE)


class StagedPublication:
    """Files written to temporary names now (in a background thread, fsynced), renamed on :meth:`commit`.

    Writing and fsyncing 100 MB takes about as long as the checks after signing; doing both at
    once keeps the job short. Until :meth:`commit`, readers see only the previous files; if
    anything fails, the temporary files are removed and the publication is unchanged. The files
    are renamed in the order given (DER last: the file the CRL URL serves), then the directory is
    fsynced.
    """

    def __init__(self, files: list[tuple[Path, Callable[[], Any]]]) -> None:
        self.files = files
        self.temps: list[Path] = []
        self.error: BaseException | None = None
        self.journaled = False
        self.thread = threading.Thread(target=self._write, daemon=True)

    def _write(self) -> None:
        try:
            for dest, chunks in self.files:
                dest.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
                self.temps.append(Path(tmp))
                os.fchmod(fd, 0o644)
                with os.fdopen(fd, "wb") as f:
                    for piece in chunks():
                        f.write(piece)
                    f.flush()
                    os.fsync(f.fileno())
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> StagedPublication:
        self.thread.start()
        return self

    def wait(self) -> None:
        """Until every file is written and fsynced under its temporary name."""
        self.thread.join()
        if self.error is not None:
            raise OutputError(f"{self.files[0][0].parent}: cannot write the CRL: {self.error}")

    def commit(self) -> None:
        self.wait()
        for tmp, (dest, _) in zip(self.temps, self.files, strict=True):
            os.replace(tmp, dest)
        self.temps = []
        fd = os.open(self.files[0][0].parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def __exit__(self, *exc: Any) -> None:
        self.thread.join()
        if self.journaled:  # named in the publication journal: the next run finishes the renames
            return
        for tmp in self.temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


@dataclass(frozen=True)
class CrlTarget:
    """One CRL the job signs: the full CRL (``partition`` None) or one partition CRL, of one key generation."""

    partition: int | None
    url: str
    der_path: Path
    pem_path: Path
    state: Path
    generation: int = 1
    """The key generation whose key signs it (:mod:`ceremony.ca.generations`)."""
    generations: tuple[int, ...] | None = None
    """The issuer generations whose certificates it lists (None: every certificate, the CA has one key)."""
    key_label: str = ""
    issuer: Issuer | None = None
    """The certificate that names the signing key (None: the CA certificate the job found)."""

    @property
    def label(self) -> str:
        scope = "the full CRL" if self.partition is None else f"partition {self.partition}"
        return scope if self.generations is None else f"{scope} of key generation {self.generation}"

    def revoked_count(self, registry: Registry) -> int:
        """How many revocations this CRL lists now (to tell whether it is due)."""
        if self.generations is not None:
            return registry.count_revoked_of(self.generations, self.partition)
        return registry.count("revoked") if self.partition is None else registry.count_revoked_in(self.partition)


@dataclass(frozen=True)
class CrlOutput:
    """What a run published (or found current) for one target."""

    partition: int | None
    number: int
    entries: int
    this_update: dt.datetime
    next_update: dt.datetime
    der_path: Path
    pem_path: Path
    url: str
    generation: int = 1
    """The key generation whose key signed it."""


def crl_targets(ca: CA, ca_name: str, out_dir: Path, registry: Registry, now: dt.datetime,
                gens: list[IssuerGeneration] | None = None) -> list[CrlTarget]:
    """The CRLs a run signs: the current key's, the full CRL first, then the partitions in order, then those of
    every earlier key that still has unexpired certificates (see docs/crl.md).

    The full CRL while the CA does not partition, or while an unexpired certificate names it (issued before
    partitioning); partitions ``0..N-1`` of the definition, and every other partition an unexpired
    certificate still names (issued before the count was lowered). ``gens``: the CA's certificate generations
    (:func:`~ceremony.ca.generations.issuer_generations`); after a re-key each key signs the CRLs of what was issued
    under its certificates, at its generation's URLs, with number sequences of its own. An earlier key's CRLs are
    only those an unexpired certificate names: it issues nothing new.
    """
    keys = sorted({g.key_generation for g in gens or []}) or [1]
    if len(keys) == 1:
        full_named, named = registry.crl_scopes_named(now)
        first = gens[0] if gens else None
        return _key_targets(ca, ca_name, out_dir, keys[0], None, full_named, named, True,
                            None if first is None else Issuer(first.cert, first.path))
    assert gens is not None
    scopes = registry.crl_scopes_by_generation(now)
    current = gens[-1].key_generation
    targets: list[CrlTarget] = []
    for m in [current] + [k for k in keys if k != current]:
        members = tuple(g.generation for g in gens if g.key_generation == m)
        found = [scopes[g] for g in members if g in scopes]
        if m != current and not found:
            continue  # every certificate of this key has expired: its last CRL stays as published
        full_named = any(f for f, _ in found)
        named = sorted({p for _, parts in found for p in parts})
        first = next(g for g in gens if g.key_generation == m)
        targets += _key_targets(ca, ca_name, out_dir, m, members, full_named, named, m == current,
                                Issuer(first.cert, first.path))
    return targets


def _key_targets(ca: CA, ca_name: str, out_dir: Path, key_generation: int, members: tuple[int, ...] | None,
                 full_named: bool, named: list[int], current: bool, issuer: Issuer | None) -> list[CrlTarget]:
    """The CRLs of one key (:func:`crl_targets`)."""
    view = ca_for_generation(ca, key_generation)
    stem = ca_name if key_generation == 1 else f"{ca_name}.g{key_generation}"
    count = ca.crl.partitions
    partitions = sorted((set(range(count or 0)) if current else set()) | set(named))
    targets = []
    common = {"generation": key_generation, "generations": members, "key_label": view.hsm.key_label,
              "issuer": issuer}
    if (count is None and current) or full_named:
        der_name, pem_name = publication_names(view)
        targets.append(CrlTarget(None, view.publication.crl_url, out_dir / der_name, out_dir / pem_name,
                                 state_path(out_dir, stem), **common))  # type: ignore[arg-type]
    for p in partitions:
        url = crl_url_for(view, p)
        name = os.path.basename(urlparse(url).path)
        targets.append(CrlTarget(p, url, out_dir / name, out_dir / (name + ".pem"), state_path(out_dir, stem, p),
                                 **common))  # type: ignore[arg-type]
    return targets


def job_generations(issuer: Issuer, ca_name: str, registry: Registry) -> list[IssuerGeneration]:
    """The CA's certificate generations beside the certificate the job found (``<ca>.crt.pem``,
    ``<ca>.g<n>.crt.pem``), refused when the registry names an issuer generation none of them is: that key's CRL
    could not be signed. A certificate found under another name is the CA's only generation."""
    gens = issuer_generations(issuer.path.parent, ca_name)
    if generation_of(gens, issuer.cert) is None:
        gens = [IssuerGeneration(1, 1, issuer.path, issuer.cert, spki_sha256(issuer.public_key))]
    missing = sorted(set(registry.issuer_generations()) - {g.generation for g in gens})
    if missing:
        raise OutputError(f"{registry.path}: certificates were issued under generation(s) "
                          f"{', '.join(map(str, missing))} of {ca_name!r}, but {issuer.path.parent} holds no "
                          f"{', '.join(f'{ca_name}.g{n}.crt.pem' for n in missing)}; their CRL cannot be signed: "
                          "bring the CA's certificates of every generation beside its first; nothing was signed")
    for g in gens:
        load_issuer(g.path, ca_name)  # every generation may sign CRLs (CA, cRLSign)
    return gens


def journal_path(out: Path, ca_name: str) -> Path:
    """``<out>/.state/<ca>.publishing``: the renames of a publication in progress (see :func:`_publish_all`)."""
    return state_path(out, ca_name).with_suffix(".publishing")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish_all(out_dir: Path, ca_name: str, staged: list[StagedPublication]) -> None:
    """Rename every staged file into place as one publication: all of them, or (after a crash) all on the next run.

    Every file is written, fsynced and checked before this. The renames are first written to a journal
    (atomically, fsynced); then each file is renamed, the directory fsynced and the journal removed. A run
    killed among the renames leaves the journal, and the next run finishes them (:func:`_recover_publication`)
    before anything else: the full CRL and the partitions are never left half old, half new.
    """
    for s in staged:
        s.wait()
    _kill_hook("before-publish")
    renames = [(tmp.name, dest.name) for s in staged for tmp, (dest, _) in zip(s.temps, s.files, strict=True)]
    journal = journal_path(out_dir, ca_name)
    try:
        replace_atomically(journal, (json.dumps({"renames": renames}) + "\n").encode(), mode=0o640)
    except OSError as exc:
        raise OutputError(f"{journal}: cannot write the publication journal ({exc.strerror}); nothing was "
                          "published") from None
    for s in staged:
        s.journaled = True
    for i, s in enumerate(staged):
        s.commit()
        if i == 0:
            _kill_hook("mid-publish")
    journal.unlink()
    _fsync_dir(journal.parent)


def _recover_publication(out_dir: Path, ca_name: str) -> int:
    """Finish the renames of a publication a killed run left in its journal; returns how many were finished."""
    journal = journal_path(out_dir, ca_name)
    try:
        raw = journal.read_bytes()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise OutputError(f"{journal}: cannot read the publication journal: {exc.strerror}") from None
    try:
        renames = json.loads(raw)["renames"]
        pairs = [(str(a), str(b)) for a, b in renames]
        if any("/" in a or "/" in b or not a.startswith(".") for a, b in pairs):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise OutputError(f"{journal}: the publication journal is corrupt (expected {{\"renames\": [[temporary, "
                          "published], ...]}}); nothing was signed or published. Check the publication directory "
                          "by hand, then remove the journal") from None
    done = 0
    try:
        for tmp, dest in pairs:
            if (out_dir / tmp).exists():
                os.replace(out_dir / tmp, out_dir / dest)
                done += 1
        _fsync_dir(out_dir)
        journal.unlink()
        _fsync_dir(journal.parent)
    except OSError as exc:
        raise OutputError(f"{journal}: cannot finish the interrupted publication: {exc.strerror}") from None
    return done


def run_crl_job(definition: str | Path | LoadedDefinition, ca_name: str, registry_path: str | Path,
                out: str | Path, *, pin_file: str | None = None, ca_cert: str | Path | None = None,
                now: dt.datetime | None = None, force: bool = False, interactive: bool = False,
                registry_timeout: float = 10.0, say: Callable[[str], None] | None = None,
                ceremony_out: str | Path | None = None, clock: ClockPolicy | None = None,
                clock_status: ClockStatus | None = None) -> CrlJobResult:
    """Sign and publish the CRLs of subordinate CA ``ca_name`` if one is due (see the module docs).

    ``out`` is the publication directory; ``ceremony_out`` (optional) the ceremonies' output directory,
    the first place the CA certificate is looked for when ``ca_cert`` is not given. ``clock``: the
    host's requirement on its clock (None: not checked); ``clock_status``: the clock state to judge
    instead of the kernel's (tests give an unsynchronised kernel's raw values this way).
    """
    timings: dict[str, float] = {}
    peak_mb: dict[str, float] = {}
    t0 = time.perf_counter()
    defn = definition if isinstance(definition, LoadedDefinition) else load_definition(definition)
    ca = job_ca(defn, ca_name)
    publication_names(ca)
    issuer = load_issuer(find_ca_certificate(defn, ca_name, ca_cert, ceremony_out), ca_name)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: the publication directory is a file")
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    with Registry.open(registry_path, timeout=registry_timeout) as registry, job_lock(out_dir, ca_name), \
            contextlib.ExitStack() as token_stack:
        targets = crl_targets(ca, ca_name, out_dir, registry, now, job_generations(issuer, ca_name, registry))
        _recover_publication(out_dir, ca_name)
        _remove_stale_temporaries(out_dir, tuple(n for t in targets for n in (t.der_path.name, t.pem_path.name)))
        # Every run, due or not: the clock that dates the CRL (before anything opens the token).
        clock_seen = check_clock(clock, "nothing was signed", clock_status)
        # Every run, due or not: PIN latch, PIN source, module, token, login, key (see checked_token).
        t = time.perf_counter()
        signers = list({tg.key_label or ca.hsm.key_label: tg.issuer or issuer for tg in targets}.items())
        found = token_stack.enter_context(checked_keys(ca, signers, pin_latch_path(out_dir, ca_name), pin_file,
                                                       interactive, clear_pin_latch_command(ca_name, out_dir)))
        keys = {label: (key, signer) for (label, signer), key in zip(signers, found, strict=True)}
        timings["token-check"] = time.perf_counter() - t
        # Everything each target needs is read (and refused when bad) before anything is signed.
        published = [read_published(tg.der_path) for tg in targets]
        prevs = [p[1] if p else None for p in published]
        for tg, prev in zip(targets, prevs, strict=True):  # the CA was terminated: no CRL follows its last one
            if prev is not None and prev.next_update == crlenc.FINAL_NEXT_UPDATE:
                raise after_termination(tg.der_path, f"the published CRL is the final CRL of {ca_name!r} (nextUpdate "
                                        "99991231235959Z)", "no CRL follows it")
        reserved = [check_not_ahead(tg.state, prev.number if prev else 0, tg.der_path)
                    for tg, prev in zip(targets, prevs, strict=True)]
        reasons = [_due(prev, tg.revoked_count(registry), ca, now, force)
                   for tg, prev in zip(targets, prevs, strict=True)]
        due = [(tg, r) for tg, r in zip(targets, reasons, strict=True) if r is not None]
        if not due:
            outputs = tuple(CrlOutput(tg.partition, prev.number, prev.entries, prev.this_update, prev.next_update,
                                      tg.der_path, tg.pem_path, tg.url, tg.generation)
                            for tg, prev in zip(targets, prevs, strict=True)
                            if prev is not None and prev.next_update is not None)
            timings["total"] = time.perf_counter() - t0
            return _result(ca_name, False, outputs, "not due", timings, {}, clock_seen)
        reason = due[0][1] if len(targets) == 1 else f"{due[0][0].label}: {due[0][1]}"
        # A published thisUpdate is never later than the time it was signed (see below).
        for tg, prev in zip(targets, prevs, strict=True):
            if prev is not None and now < prev.this_update:
                raise VerificationError(f"the clock is behind the published CRL {tg.der_path} (thisUpdate "
                                        f"{prev.this_update}); check the time on this host; nothing was signed")
        outputs_signed: list[CrlOutput] = []
        staged_all: list[StagedPublication] = []
        with contextlib.ExitStack() as staging:
            for i, (tg, pub, prev, last) in enumerate(zip(targets, published, prevs, reserved, strict=True)):
                if i:
                    _kill_hook("between-partitions")
                key, signer = keys[tg.key_label or ca.hsm.key_label]
                alg_id, _ = crlenc.signature_algorithm(signer.public_key)
                staged, output = _sign_target(tg, pub, prev, last, ca, ca_name, signer, key, registry, alg_id, now,
                                              registry_path, timings, peak_mb, staging)
                staged_all.append(staged)
                outputs_signed.append(output)
            token_stack.close()  # the session is closed before the publication
            t = time.perf_counter()
            _publish_all(out_dir, ca_name, staged_all)
            _add(timings, "publish-wait", time.perf_counter() - t)
            peak_mb["publish-wait"] = _peak_mb()
    timings["total"] = time.perf_counter() - t0
    peak_mb["total"] = _peak_mb()
    result = _result(ca_name, True, tuple(outputs_signed), reason, timings, peak_mb, clock_seen)
    if say:
        say(result.summary())
    return result


def _add(timings: dict[str, float], step: str, seconds: float) -> None:
    """Timings of a step summed over the targets (the benchmark compares whole runs)."""
    timings[step] = timings.get(step, 0.0) + seconds


def _sign_target(tg: CrlTarget, published: tuple[bytes, CrlSummary] | None, prev: CrlSummary | None,
                 last_reserved_number: int, ca: CA, ca_name: str, issuer: Issuer, key: Any, registry: Registry,
                 alg_id: bytes, now: dt.datetime, registry_path: str | Path, timings: dict[str, float],
                 peak_mb: dict[str, float], staging: contextlib.ExitStack) -> tuple[StagedPublication, CrlOutput]:
    """Encode, lint, reserve a number, sign, stage, verify, lint again and check against the previous CRL, for one
    target; the staged files are renamed into place later, with every other target's (:func:`_publish_all`)."""
    number = max(last_reserved_number, prev.number if prev else 0) + 1
    t = time.perf_counter()
    entries = bytearray()
    count, sample, latest = _encode_from_registry(registry, entries, tg.partition, tg.generations)
    # thisUpdate is set back by the clock skew, but never before the published CRL's thisUpdate nor
    # before a revocation the CRL lists (revoke, then sign at once).
    floor = max(now - ca.crl.clock_skew_td, prev.this_update) if prev is not None else now - ca.crl.clock_skew_td
    this_update = crlenc.this_update_covering(floor, latest)
    if this_update > now:
        raise VerificationError(f"the clock is behind the latest revocation in {registry_path} "
                                f"({this_update:%Y-%m-%dT%H:%M:%SZ}); check the time on this host; "
                                "nothing was signed")
    next_update = this_update + ca.crl.lifetime_td
    header = crlenc.CrlHeader(issuer.name, issuer.key_id, number, this_update, next_update,
                              expired_certs_on_crl=issuer.cert.not_valid_before_utc,
                              partition_url=tg.url if tg.partition is not None else None)
    tbs = crlenc.encode_tbs(header, alg_id, entries, count)  # clears ``entries``
    del entries
    _add(timings, "read+encode", time.perf_counter() - t)
    peak_mb["read+encode"] = _peak_mb()

    t = time.perf_counter()
    what = f"the CRL of {ca_name!r}" + ("" if tg.partition is None and tg.generations is None else f" ({tg.label})")
    full_lint = count <= crlenc.LINT_FULL_MAX
    if full_lint:
        trial = crlenc.sign_tbs(tbs, alg_id, throwaway_key_like(issuer.public_key))
        enforce(crlenc.lint_crl(trial), ca.lint, what)
        del trial
    else:
        crlenc.lint_before_signing(header, sample, issuer.public_key, False, ca.lint,
                                   f"{what} (structural sample of {len(sample)} entries)")
    _add(timings, "lint-before", time.perf_counter() - t)
    peak_mb["lint-before"] = _peak_mb()

    t = time.perf_counter()
    reserved = reserve(tg.state, prev.number if prev else 0)
    if reserved != number:
        raise OutputError(f"{tg.state}: CRL number {number} was taken meanwhile; nothing was signed")
    der = crlenc.sign_tbs(tbs, alg_id, key)
    del tbs
    _add(timings, "sign", time.perf_counter() - t)
    peak_mb["sign"] = _peak_mb()
    _kill_hook("after-sign")

    # The files are written (temporary names, fsynced) while the checks run; they are renamed into place
    # only once every check of every target passed.
    staged = staging.enter_context(StagedPublication([(tg.pem_path, lambda: crlenc.pem_chunks(der)),
                                                      (tg.der_path, lambda: [der])]))
    t = time.perf_counter()
    if sample:
        serials = sorted({r[0] for r in sample})
        sample_serials = serials if full_lint else [serials[0], serials[len(serials) // 2]]
    else:
        sample_serials = []
    parsed = crlenc.verify_crl(der, crlenc.tbs_of(der), issuer.public_key, header, count, sample_serials)
    _add(timings, "verify", time.perf_counter() - t)
    peak_mb["verify"] = _peak_mb()
    t = time.perf_counter()
    if full_lint:
        enforce(crlenc.lint_crl(der), ca.lint, what + " (after signing)")
    _add(timings, "lint-after", time.perf_counter() - t)
    peak_mb["lint-after"] = _peak_mb()
    t = time.perf_counter()
    if published is not None:
        try:
            check_against_previous(published[0], der, _registry_lookup(registry), published[1], summarise(parsed))
        except VerificationError as exc:
            raise VerificationError(f"{tg.der_path} ({tg.label}): {exc}") from None
    _add(timings, "previous-check", time.perf_counter() - t)
    peak_mb["previous-check"] = _peak_mb()
    return staged, CrlOutput(tg.partition, number, count, this_update, next_update, tg.der_path, tg.pem_path, tg.url,
                             tg.generation)


def _result(ca_name: str, signed: bool, outputs: tuple[CrlOutput, ...], reason: str, timings: dict[str, float],
            peak_mb: dict[str, float], clock: ClockStatus | None) -> CrlJobResult:
    """The run's result; its headline fields are the full CRL's, or the first partition's when none is published."""
    head = outputs[0]
    return CrlJobResult(ca_name, signed, head.number, head.entries, head.this_update, head.next_update,
                        head.der_path, head.pem_path, reason, timings, peak_mb, clock, outputs)


def metrics_for(result: CrlJobResult | None, ca_name: str, der_path: Path | None,
                duration: float | None, *, error: BaseException | None = None,
                clock: ClockStatus | None = None) -> CrlMetrics:
    """Metrics of a run: the result's values, or (failure) the still-published CRL's and the reason.

    The PIN latch's state is read from the publication directory (``der_path``'s directory) when known;
    the clock state is the one the run checked, else ``clock`` (read by the caller; None: omitted).
    """
    seen = result.clock if result is not None and result.clock is not None else clock
    latch: dict[str, Any] = {}
    if seen is not None:
        latch.update(clock_synchronised=seen.synchronised, clock_max_error_seconds=seen.max_error_seconds)
    if der_path is not None:
        try:
            found = read_pin_latch(pin_latch_path(der_path.parent, ca_name))
            latch.update(pin_latch_known=True, pin_latch_since=found.set_at.timestamp() if found else None)
        except HealthCheckError:
            latch.update(pin_latch_known=True, pin_latch_since=time.time())
    if result is not None:
        signed = tuple(PartitionMetrics(c.partition or 0, c.number, c.entries, c.this_update.timestamp(),
                                        c.next_update.timestamp()) for c in result.partitions)
        full = result.full
        if full is None:  # only partitions: the CA-level times are the soonest to expire (what the alerts watch)
            first = min(result.crls, key=lambda c: c.next_update)  # earlier keys' CRLs included
            return CrlMetrics(ca_name, True, None, sum(c.entries for c in result.partitions),
                              first.next_update.timestamp(), duration, this_update=first.this_update.timestamp(),
                              partitions=signed, **latch)
        next_update = min(c.next_update for c in result.crls)
        return CrlMetrics(ca_name, True, full.number, full.entries, next_update.timestamp(), duration,
                          this_update=full.this_update.timestamp(), partitions=signed, **latch)
    reason = failure_reason(error) if error is not None else None
    summary = None
    parts: tuple[PartitionMetrics, ...] = ()
    if der_path is not None:
        with contextlib.suppress(CeremonyError, OSError, ValueError):
            published = read_published(der_path)
            summary = published[1] if published else None
        parts = _published_partitions(der_path)
    if summary is None:
        if parts:
            soonest = min(parts, key=lambda m: m.next_update)
            return CrlMetrics(ca_name, False, None, sum(m.entries for m in parts), soonest.next_update, duration,
                              failure_reason=reason, this_update=soonest.this_update, partitions=parts, **latch)
        return CrlMetrics(ca_name, False, duration_seconds=duration, failure_reason=reason, **latch)
    nexts = [m.next_update for m in parts] + ([summary.next_update.timestamp()] if summary.next_update else [])
    return CrlMetrics(ca_name, False, summary.number, summary.entries, min(nexts) if nexts else None, duration,
                      failure_reason=reason, this_update=summary.this_update.timestamp(), partitions=parts, **latch)


def _published_partitions(der_path: Path) -> tuple[PartitionMetrics, ...]:
    """The partition CRLs published beside the full CRL's path (``<stem>-p<i><ext>``), for a failed run's metrics:
    what relying parties are still served. A file that does not parse is left out (its age shows in the others)."""
    stem, dot, ext = der_path.name.rpartition(".")
    pattern = re.compile(re.escape(f"{stem}-p") + r"(\d+)" + re.escape(f".{ext}") if dot and stem
                         else re.escape(f"{der_path.name}-p") + r"(\d+)")
    found = []
    for path in sorted(der_path.parent.glob("*")) if der_path.parent.is_dir() else []:
        m = pattern.fullmatch(path.name)
        if not m:
            continue
        with contextlib.suppress(CeremonyError, OSError, ValueError):
            published = read_published(path)
            summary = published[1] if published else None
            if summary is not None and summary.next_update is not None:
                found.append(PartitionMetrics(int(m.group(1)), summary.number, summary.entries,
                                              summary.this_update.timestamp(), summary.next_update.timestamp()))
    return tuple(sorted(found, key=lambda m: m.partition))


def write_job_metrics(metrics_dir: str | Path, metrics: CrlMetrics) -> None:
    try:
        Path(metrics_dir).mkdir(parents=True, exist_ok=True)
        write_metrics(Path(metrics_dir), metrics)
    except OSError as exc:
        raise OutputError(f"{metrics_dir}: cannot write the CRL metrics: {exc.strerror}") from None


def due_reason(definition: str | Path | LoadedDefinition, ca_name: str, registry_path: str | Path,
               out: str | Path, *, now: dt.datetime | None = None, force: bool = False,
               registry_timeout: float = 10.0, ca_cert: str | Path | None = None,
               ceremony_out: str | Path | None = None) -> tuple[str | None, CrlSummary | None]:
    """Why a run would sign now (None: it would not), and the published CRL's summary.

    Touches neither the token nor the publication directory: the Ansible module's check mode
    reports with it what the job would do. The CA certificate (found as the job finds it) tells which keys sign
    CRLs after a re-key; without one, every certificate counts toward the first key's CRLs (the run itself then
    refuses the missing certificate with its message).
    """
    defn = definition if isinstance(definition, LoadedDefinition) else load_definition(definition)
    ca = job_ca(defn, ca_name)
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    try:
        issuer: Issuer | None = load_issuer(find_ca_certificate(defn, ca_name, ca_cert, ceremony_out), ca_name)
    except OutputError:
        issuer = None
    with Registry.open(registry_path, timeout=registry_timeout) as registry:
        gens = job_generations(issuer, ca_name, registry) if issuer is not None else None
        first: tuple[str | None, CrlSummary | None] | None = None
        for tg in crl_targets(ca, ca_name, Path(out), registry, now, gens):
            published = read_published(tg.der_path)
            prev = published[1] if published else None
            reason = _due(prev, tg.revoked_count(registry), ca, now, force)
            if first is None:
                first = (reason, prev)
            if reason is not None:
                return (reason if tg.partition is None and tg.generations is None else f"{tg.label}: {reason}"), \
                    first[1]
        assert first is not None
        return first
