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
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
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
from ceremony.crl.metrics import CrlMetrics, write_metrics
from ceremony.crl.state import last_reserved, reserve, state_path
from ceremony.definition.model import CA, LoadedDefinition, load_definition
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

    def summary(self) -> str:
        verb = "signed and published" if self.signed else "is current; nothing signed"
        return (f"CRL {self.number} of {self.ca!r} {verb} ({self.entries} entries, thisUpdate "
                f"{self.this_update:%Y-%m-%dT%H:%M:%SZ}, nextUpdate {self.next_update:%Y-%m-%dT%H:%M:%SZ}): "
                f"{self.der_path} ({self.reason})")


def job_ca(defn: LoadedDefinition, ca_name: str) -> CA:
    """The subordinate CA the job signs for; the root's CRLs are signed at its ceremonies only."""
    ca = defn.model.ca(ca_name)
    if ca.role != "subordinate":
        raise VerificationError(f"cas.{ca_name} is the root: its CRLs are signed in batches at a root ceremony "
                                "(invoke crl.root-batch), not by the scheduled job")
    return ca


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
    """Check what signing needs, in order, and yield the CA's signing key with its session open.

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
        try:
            key = signing_key(session, ca.hsm.key_label)
        except HsmError as exc:
            raise HealthCheckError("key_missing", f"{token}: {exc}") from None
        if spki_sha256(key.public_key()) != spki_sha256(issuer.public_key):
            raise HealthCheckError("key_mismatch", f"the key {ca.hsm.key_label!r} on {token} is not the key of the "
                                                   f"CA certificate {issuer.path}")
        yield key


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


def _encode_from_registry(registry: Registry, out: bytearray) -> tuple[int, list[crlenc.RevokedRow], int | None]:
    """Stream the registry's packed revocation records into ``out``.

    Returns the count, a structural sample and the latest revocationDate written (epoch seconds).
    """
    return crlenc.encode_revoked_packed(registry.iter_revoked_packed(), out, CRL_ENTRY, NO_DATE)


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
        for tmp in self.temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def run_crl_job(definition: str | Path | LoadedDefinition, ca_name: str, registry_path: str | Path,
                out: str | Path, *, pin_file: str | None = None, ca_cert: str | Path | None = None,
                now: dt.datetime | None = None, force: bool = False, interactive: bool = False,
                registry_timeout: float = 10.0, say: Callable[[str], None] | None = None,
                ceremony_out: str | Path | None = None, clock: ClockPolicy | None = None,
                clock_status: ClockStatus | None = None) -> CrlJobResult:
    """Sign and publish the CRL of subordinate CA ``ca_name`` if one is due (see the module docs).

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
    der_name, pem_name = publication_names(ca)
    issuer = load_issuer(find_ca_certificate(defn, ca_name, ca_cert, ceremony_out), ca_name)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: the publication directory is a file")
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    der_path, pem_path = out_dir / der_name, out_dir / pem_name
    with Registry.open(registry_path, timeout=registry_timeout) as registry, job_lock(out_dir, ca_name), \
            contextlib.ExitStack() as token_stack:
        _remove_stale_temporaries(out_dir, (der_name, pem_name))
        # Every run, due or not: the clock that dates the CRL (before anything opens the token).
        clock_seen = check_clock(clock, "nothing was signed", clock_status)
        # Every run, due or not: PIN latch, PIN source, module, token, login, key (see checked_token).
        t = time.perf_counter()
        key = token_stack.enter_context(checked_token(ca, issuer, pin_latch_path(out_dir, ca_name), pin_file,
                                                      interactive, clear_pin_latch_command(ca_name, out_dir)))
        timings["token-check"] = time.perf_counter() - t
        published = read_published(der_path)
        prev = published[1] if published else None
        reason = _due(prev, registry.count("revoked"), ca, now, force)
        if reason is None:
            assert prev is not None and prev.next_update is not None
            timings["total"] = time.perf_counter() - t0
            return CrlJobResult(ca_name, False, prev.number, prev.entries, prev.this_update, prev.next_update,
                                der_path, pem_path, "not due", timings, clock=clock_seen)
        # A published thisUpdate is never later than the time it was signed (see below).
        if prev is not None and now < prev.this_update:
            raise VerificationError(f"the clock is behind the published CRL (thisUpdate {prev.this_update}); "
                                    "check the time on this host; nothing was signed")
        state = state_path(out_dir, ca_name)
        number = max(last_reserved(state), prev.number if prev else 0) + 1
        alg_id, _ = crlenc.signature_algorithm(issuer.public_key)

        t = time.perf_counter()
        entries = bytearray()
        count, sample, latest = _encode_from_registry(registry, entries)
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
                                  expired_certs_on_crl=issuer.cert.not_valid_before_utc)
        tbs = crlenc.encode_tbs(header, alg_id, entries, count)  # clears ``entries``
        del entries
        timings["read+encode"] = time.perf_counter() - t
        peak_mb["read+encode"] = _peak_mb()

        t = time.perf_counter()
        what = f"the CRL of {ca_name!r}"
        full_lint = count <= crlenc.LINT_FULL_MAX

        if full_lint:
            trial = crlenc.sign_tbs(tbs, alg_id, throwaway_key_like(issuer.public_key))
            enforce(crlenc.lint_crl(trial), ca.lint, what)
            del trial
        else:
            crlenc.lint_before_signing(header, sample, issuer.public_key, False, ca.lint,
                                       f"{what} (structural sample of {len(sample)} entries)")
        timings["lint-before"] = time.perf_counter() - t
        peak_mb["lint-before"] = _peak_mb()

        t = time.perf_counter()
        reserved = reserve(state, prev.number if prev else 0)
        if reserved != number:
            raise OutputError(f"{state}: CRL number {number} was taken meanwhile; nothing was signed")
        der = crlenc.sign_tbs(tbs, alg_id, key)
        del tbs
        token_stack.close()  # the session is closed before the checks after signing
        timings["sign"] = time.perf_counter() - t
        peak_mb["sign"] = _peak_mb()
        _kill_hook("after-sign")

        # The files are written (temporary names, fsynced) while the checks run; they are renamed
        # into place only if every check passes.
        with StagedPublication([(pem_path, lambda: crlenc.pem_chunks(der)), (der_path, lambda: [der])]) as staged:
            t = time.perf_counter()
            serials = sorted({r[0] for r in sample})
            sample_serials = serials if full_lint else [serials[0], serials[len(serials) // 2]]
            parsed = crlenc.verify_crl(der, crlenc.tbs_of(der), issuer.public_key, header, count, sample_serials)
            timings["verify"] = time.perf_counter() - t
            peak_mb["verify"] = _peak_mb()
            t = time.perf_counter()
            if full_lint:
                enforce(crlenc.lint_crl(der), ca.lint, what + " (after signing)")
            timings["lint-after"] = time.perf_counter() - t
            peak_mb["lint-after"] = _peak_mb()
            t = time.perf_counter()
            if published is not None:
                check_against_previous(published[0], der, _registry_lookup(registry), published[1],
                                       summarise(parsed))
            timings["previous-check"] = time.perf_counter() - t
            peak_mb["previous-check"] = _peak_mb()
            t = time.perf_counter()
            staged.wait()
            _kill_hook("before-publish")
            staged.commit()
            timings["publish-wait"] = time.perf_counter() - t
            peak_mb["publish-wait"] = _peak_mb()
    timings["total"] = time.perf_counter() - t0
    peak_mb["total"] = _peak_mb()
    result = CrlJobResult(ca_name, True, number, count, this_update, next_update, der_path, pem_path, reason,
                          timings, peak_mb, clock_seen)
    if say:
        say(result.summary())
    return result


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
        return CrlMetrics(ca_name, True, result.number, result.entries, result.next_update.timestamp(), duration,
                          this_update=result.this_update.timestamp(), **latch)
    reason = failure_reason(error) if error is not None else None
    summary = None
    if der_path is not None:
        with contextlib.suppress(CeremonyError, OSError, ValueError):
            published = read_published(der_path)
            summary = published[1] if published else None
    if summary is None:
        return CrlMetrics(ca_name, False, duration_seconds=duration, failure_reason=reason, **latch)
    return CrlMetrics(ca_name, False, summary.number, summary.entries,
                      summary.next_update.timestamp() if summary.next_update else None, duration,
                      failure_reason=reason, this_update=summary.this_update.timestamp(), **latch)


def write_job_metrics(metrics_dir: str | Path, metrics: CrlMetrics) -> None:
    try:
        Path(metrics_dir).mkdir(parents=True, exist_ok=True)
        write_metrics(Path(metrics_dir), metrics)
    except OSError as exc:
        raise OutputError(f"{metrics_dir}: cannot write the CRL metrics: {exc.strerror}") from None


def due_reason(definition: str | Path | LoadedDefinition, ca_name: str, registry_path: str | Path,
               out: str | Path, *, now: dt.datetime | None = None, force: bool = False,
               registry_timeout: float = 10.0) -> tuple[str | None, CrlSummary | None]:
    """Why a run would sign now (None: it would not), and the published CRL's summary.

    Touches neither the token nor the publication directory: the Ansible module's check mode
    reports with it what the job would do.
    """
    defn = definition if isinstance(definition, LoadedDefinition) else load_definition(definition)
    ca = job_ca(defn, ca_name)
    published = read_published(Path(out) / publication_names(ca)[0])
    prev = published[1] if published else None
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    with Registry.open(registry_path, timeout=registry_timeout) as registry:
        return _due(prev, registry.count("revoked"), ca, now, force), prev
