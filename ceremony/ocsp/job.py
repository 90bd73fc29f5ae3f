"""The OCSP pre-signing job: registry → responses signed by the delegated signer in the HSM → the store.

The scheduler runs it every few minutes (``ceremony-ocsp-sign``). A run signs, for every certificate in the CA's
registry and every CertID hash of the definition, a response when none is stored, when the stored one reached its
refresh point (``ocsp.refresh`` after its thisUpdate, BR 4.9.10), or when the certificate's status changed (a
revocation is answered by the next run, minutes later). Everything else stays as it is.

Order of a run, chosen so that a failure changes nothing:

1. definition, CA certificate, signer certificate (issued by the CA, EKU OCSPSigning, and with at least one
   response validity left: a response never outlives its signer), the store (it must exist and read as this
   CA's; with ``check_store`` SQLite's quick_check too, which reads the whole file: for an operator's check, not
   for every run of a gigabyte store), the registry — each refused with one message;
2. the HSM: module, token, login and the signer key (the key of the signer certificate); one more read-only
   session per extra worker (the login is the token's, shared by every session of the process);
3. the registry and the store are walked side by side in serial order (no list of a million certificates in
   memory) and the work is queued; a good and a revoked response are linted (pkilint, RFC 6960) with a throwaway
   key like the signer's first, and the first signed response of each status after signing;
4. worker threads sign (one PKCS#11 session each; python-pkcs11 releases the GIL in C_Sign), every response is
   parsed back with cryptography and compared with what was encoded, no ECDSA nonce may repeat, and the signature
   is verified for each session's first response, every revocation and a random share of the rest (all of them
   with ``verify_rate=1``, ``--verify-all``); the main thread writes them into one store transaction, committed
   only when every response of the run is signed and checked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import queue
import random
import resource
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import exceptions as p11e

from ceremony.ca.generations import ca_for_generation, generation_stem, key_of
from ceremony.ca.registry import Registry
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
from ceremony.common.fingerprints import sha256_hex
from ceremony.crl.job import (
    HealthCheckError,
    after_termination,
    find_ca_certificate,
    pin_latch_path,
    read_pin_latch,
    set_pin_latch,
)
from ceremony.definition.model import CA, LoadedDefinition, Ocsp, load_definition
from ceremony.hsm.keys import spki_sha256
from ceremony.hsm.session import PinRejectedError, find_token, load_module, open_session, pin_source_for
from ceremony.hsm.signers import signing_key
from ceremony.ocsp.encoding import (
    ResponderContext,
    Status,
    check_response,
    ecdsa_r,
    lint_response,
    verify_response,
)
from ceremony.ocsp.metrics import OcspMetrics
from ceremony.ocsp.signer import SignerCertificate, current_signer
from ceremony.ocsp.store import ResponseStore, Row, StoreError
from ceremony.x509.files import load_issuer_certificate
from ceremony.x509.lint import enforce, throwaway_key_like

#: Responses handed to a worker at once: large enough that the queues cost nothing, small enough to share well.
CHUNK = 256


#: The share of responses whose signature the job verifies beyond those it always verifies (each session's first,
#: every revocation): docs/ocsp.md, "What is verified". ``--verify-all`` (``verify_rate=1``) verifies every one.
VERIFY_RATE = 0.125


#: ECDSA ``r`` values remembered per generation to catch a nonce used twice (:class:`NonceWatch`).
NONCE_WINDOW = 16384


@dataclass(frozen=True)
class OcspJobResult:
    ca: str
    signed: int
    stored: int
    reasons: dict[str, int]
    signer: Path
    signer_not_after: dt.datetime
    oldest_this_update: int | None
    workers: int
    timings: dict[str, float] = field(default_factory=dict)
    peak_mb: float = 0.0
    verified: int = 0
    """Signatures of this run verified with the signer's key (every response was parsed back and compared)."""

    def summary(self) -> str:
        why = ", ".join(f"{n} {r}" for r, n in sorted(self.reasons.items())) or "nothing due"
        checked = f", {self.verified} signature(s) verified" if self.signed else ""
        return (f"OCSP {self.ca!r}: {self.signed} response(s) signed ({why}){checked}, {self.stored} stored; signer "
                f"{self.signer.name} valid until {self.signer_not_after:%Y-%m-%dT%H:%M:%SZ}")


def ocsp_ca(defn: LoadedDefinition, ca_name: str) -> tuple[CA, Ocsp]:
    """The online CA and its OCSP section; a CA without one (the root included) is refused by name."""
    ca = defn.model.ca(ca_name)
    if ca.ocsp is None:
        raise DefinitionError(str(defn.path), f"cas.{ca_name}.ocsp", "this CA has no OCSP service",
                              ", ".join(n for n, c in defn.model.cas.items() if c.ocsp is not None)
                              or "add an ocsp section to an online CA")
    return ca, ca.ocsp


def check_signer_time(signer: SignerCertificate, ocsp: Ocsp, now: dt.datetime, ca_name: str) -> None:
    """Refuse a signer certificate that is not yet valid, expired, or with less than one response validity left."""
    cert, path = signer.cert, signer.path
    renew = f"renew it: invoke ocsp.signer --ca {ca_name} --env ENV"
    if now < cert.not_valid_before_utc:
        raise VerificationError(f"{path}: the OCSP signer certificate is valid only from "
                                f"{cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}; nothing was signed")
    if now >= cert.not_valid_after_utc:
        raise VerificationError(f"{path}: the OCSP signer certificate expired on "
                                f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}; nothing was signed; {renew}")
    if now + ocsp.validity_td > cert.not_valid_after_utc:
        raise VerificationError(f"{path}: the OCSP signer certificate expires on "
                                f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}, before a response signed now "
                                f"(valid {ocsp.validity}) would; nothing was signed; {renew}")


def store_issuer_sha256(cert: x509.Certificate) -> str:
    return sha256_hex(cert.public_bytes(serialization.Encoding.DER))


@contextlib.contextmanager
def signer_sessions(ca: CA, ocsp: Ocsp, signer: SignerCertificate, workers: int, pin_file: str | None,
                    interactive: bool, latch: Path | None = None, ca_name: str = "") -> Iterator[list[Any]]:
    """One signer key object per worker, each in its own session; the first session logs in.

    Every failure is one :class:`HsmError` saying the HSM is unavailable and why, before anything is signed. The
    PIN latch of the CRL job (:func:`ceremony.crl.job.read_pin_latch`) is honoured and set the same way: the token's
    PIN is the CA's, and a job that runs every few minutes must never walk the HSM into its PIN lockout.
    """
    label = ca.hsm.ocsp_signer_label(ocsp)
    where = ca.hsm.token.describe()
    clear = f"ceremony-crl-sign --clear-pin-latch --ca {ca_name} --out {latch.parent.parent}" if latch else ""
    if latch is not None:
        found = read_pin_latch(latch)
        if found is not None:
            raise HealthCheckError("pin_latched", f"the PIN for {where} was refused by the token, latch "
                                   f"{found.describe()}; it is not tried again until an operator corrects it and "
                                   f"runs: {clear}; nothing was signed")
    source = pin_source_for(ca.hsm, pin_file, interactive)
    try:
        lib = load_module(ca.hsm.module)
        token = find_token(lib, ca.hsm.token)
    except HsmError as exc:
        raise HsmError(f"the HSM is unavailable ({exc}); nothing was signed, the stored responses are unchanged") \
            from None
    with contextlib.ExitStack() as stack:
        try:
            first = stack.enter_context(open_session(ca.hsm, source, rw=False))
        except PinRejectedError as exc:
            if latch is not None:
                set_pin_latch(latch, ca, "CKR_PIN_LOCKED" if exc.locked else "CKR_PIN_INCORRECT", str(exc))
            raise HealthCheckError("pin_locked" if exc.locked else "pin_incorrect",
                                   f"{exc}. The PIN latch is set ({latch}): no run tries the PIN again until an "
                                   f"operator corrects it and runs: {clear}; nothing was signed") from None
        except PinError:
            raise
        except HsmError as exc:
            raise HsmError(f"the HSM is unavailable ({exc}); nothing was signed, the stored responses are "
                           "unchanged") from None
        keys = []
        try:
            key = signing_key(first, label)
        except HsmError:
            raise HsmError(f"{where} holds no OCSP signer key {label!r}: it is made by invoke ocsp.signer --ca "
                           "CA --env ENV; nothing was signed") from None
        if spki_sha256(key.public_key()) != spki_sha256(signer.cert.public_key()):
            raise HsmError(f"the key {label!r} on {where} is not the key of {signer.path}; nothing was signed")
        keys.append(key)
        for _ in range(workers - 1):
            try:
                session = token.open(rw=False)
            except p11e.PKCS11Error as exc:
                raise HsmError(f"the HSM is unavailable (another session on {where}: {type(exc).__name__}); "
                               "nothing was signed") from None
            stack.callback(_close, session)
            keys.append(signing_key(session, label))
        yield keys


def _close(session: Any) -> None:
    with contextlib.suppress(p11e.PKCS11Error):
        session.close()


#: Why a run signs a response, in the order a run checks them: none is stored for the certificate and hash, the
#: certificate's status differs from the stored response's, or the stored response reached its refresh point
#: (``ocsp.refresh`` after its thisUpdate). Nothing else makes the job sign: the CPS (4.9.9) is generated from this
#: tuple, and a reason it does not know stops the documents' build.
RESIGN_REASONS: tuple[str, ...] = ("new", "status changed", "refresh")
NEW, STATUS_CHANGED, REFRESH = RESIGN_REASONS


def _work(registry: Registry, store_path: Path, hashes: tuple[str, ...], now: int,
          refresh: int, generations: tuple[int, ...] | None = None) -> Iterator[tuple[int, str, Status, str]]:
    """``(serial, hash, status, reason)`` of every response to sign, walking registry and store in serial order
    (the certificates of the issuer ``generations`` only, when given: one key's after a re-key)."""
    with ResponseStore.open(store_path, read_only=True) as reader:
        stored = reader.states()
        current = next(stored, None)
        for serial, revoked_at, reason in registry.iter_status(generations=generations):
            status = Status(revoked_at, reason)
            have: dict[str, tuple[str, int]] = {}
            while current is not None and current[0] <= serial:
                if current[0] == serial:
                    have[current[1]] = (current[2], current[3])
                current = next(stored, None)
            for h in hashes:
                found = have.get(h)
                if found is None:
                    yield serial, h, status, NEW
                elif found[0] != status.fingerprint:
                    yield serial, h, status, STATUS_CHANGED
                elif now >= found[1] + refresh:
                    yield serial, h, status, REFRESH


class NonceWatch:
    """The ECDSA ``r`` values of the last signatures of a run (every worker's): one seen twice means the HSM used a
    nonce twice, and two published signatures with one nonce give the signer key away; the run fails and neither is
    stored. Bounded (two generations of ``window`` values, about 4 MB) so that memory does not grow with the run;
    a failing random generator repeats itself soon, not once in a hundred thousand signatures."""

    def __init__(self, window: int = NONCE_WINDOW) -> None:
        self.window = window
        self.current: set[int] = set()
        self.previous: set[int] = set()
        self.lock = threading.Lock()

    def add(self, r: int | None, serial: int) -> None:
        if r is None:  # not an ECDSA signature: check_response refused it already
            return
        r &= (1 << 96) - 1  # 96 bits tell nonces apart (a false alarm under once in 10^18 runs) in half the memory
        with self.lock:
            if r in self.current or r in self.previous:
                raise VerificationError(f"the HSM signed the OCSP response for {serial:x} with a nonce it had already "
                                        "used (the same ECDSA r twice): its random generator is failing; nothing "
                                        "of this run is stored, do not sign with this HSM until it is examined")
            self.current.add(r)
            if len(self.current) >= self.window:
                self.previous, self.current = self.current, set()


class _Signing:
    """Worker threads that sign chunks of work and hand back store rows; the first error stops them all.

    Every response is parsed back and compared with what was encoded (:func:`check_response`); its signature is
    verified with the signer certificate's key (:func:`verify_response`) when it is the first of its worker's
    session, when it states a revocation, and otherwise with probability ``verify_rate`` (drawn from a generator
    seeded by the operating system: an HSM cannot know which signatures are checked). See docs/ocsp.md, "What is
    verified", for why that is enough and ``--verify-all`` for every signature.
    """

    def __init__(self, context: ResponderContext, keys: list[Any], times: tuple[int, int, int],
                 verify_rate: float = 1.0) -> None:
        self.context = context
        self.times = times
        self.verify_rate = verify_rate
        self.todo: queue.Queue[list[tuple[int, str, Status]] | None] = queue.Queue(maxsize=4 * len(keys))
        self.done: queue.Queue[list[Row] | BaseException | None] = queue.Queue(maxsize=4 * len(keys))
        self.stop = threading.Event()
        self.nonces = NonceWatch()
        self.verified = [0] * len(keys)
        self.threads = [threading.Thread(target=self._run, args=(i, key), daemon=True) for i, key in enumerate(keys)]

    def _run(self, index: int, key: Any) -> None:
        produced, this_update, next_update = self.times
        public = self.context.signer.public_key()
        ecdsa = isinstance(public, ec.EllipticCurvePublicKey)
        draw = random.Random(os.urandom(32)).random  # seeded by the OS, unknown to the HSM; no syscall per draw
        rate = self.verify_rate
        verified = 0
        try:
            while not self.stop.is_set():
                chunk = self.todo.get()
                if chunk is None:
                    break
                rows: list[Row] = []
                for serial, h, status in chunk:
                    tbs = self.context.response_data(serial, h, status, produced, this_update, next_update)
                    der = self.context.sign(tbs, key)
                    if verified == 0 or status.revoked_at is not None or rate >= 1.0 or draw() < rate:
                        parsed = verify_response(der, tbs, public, serial, status, this_update, next_update)
                        verified += 1
                    else:
                        parsed = check_response(der, tbs, public, serial, status, this_update, next_update)
                    if ecdsa:
                        self.nonces.add(ecdsa_r(parsed.signature), serial)
                    rows.append((serial, h, status.name, der, this_update, next_update, status.fingerprint))
                self.verified[index] = verified
                self.done.put(rows)
        except BaseException as exc:
            self.stop.set()
            self.done.put(exc)
            return
        self.done.put(None)


def _lint_shapes(context: ResponderContext, samples: dict[str, tuple[int, str, Status]], times: tuple[int, int, int],
                 allowances: Any, what: str, key: Any = None) -> None:
    """Lint one response of each status (signed by a throwaway key like the signer's, or by ``key``)."""
    signer = key or throwaway_key_like(context.signer.public_key())
    for status_name, (serial, h, status) in samples.items():
        der = context.sign(context.response_data(serial, h, status, *times), signer)
        enforce(lint_response(der), allowances, f"the {status_name} OCSP response of {what}")


def run_ocsp_job(definition: str | Path | LoadedDefinition, ca_name: str, registry_path: str | Path,
                 store_path: str | Path, *, ceremony_out: str | Path | None = None, ca_cert: str | Path | None = None,
                 signer_cert: str | Path | None = None, pin_file: str | None = None, interactive: bool = False,
                 now: dt.datetime | None = None, workers: int | None = None, check_store: bool = False,
                 registry_timeout: float = 10.0, say: Callable[[str], None] | None = None,
                 latch_dir: str | Path | None = None, verify_rate: float = VERIFY_RATE) -> OcspJobResult:
    """Sign every response that is missing, due for refresh or whose status changed (see the module docs).

    ``latch_dir``: where the PIN latch lives (``<dir>/.state/<ca>.pin-failed``), default the store's directory;
    give the CRL job's ``--out`` to share one latch with it (the same token, the same PIN). ``verify_rate``: the
    share of the responses, beyond each session's first and every revocation, whose signature is verified (1: all).
    """
    if not 0.0 <= verify_rate <= 1.0:
        raise ValueError(f"verify_rate {verify_rate}: allowed from 0 to 1")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    defn = definition if isinstance(definition, LoadedDefinition) else load_definition(definition)
    ca, ocsp = ocsp_ca(defn, ca_name)
    refuse_final_store(Path(store_path), ca_name)
    issuer_path = find_ca_certificate(defn, ca_name, ca_cert, ceremony_out)
    # The signer certificates are where the signer ceremony wrote them: the ceremonies' output directory, else
    # beside the CA certificate (where the role installs both on the CA host).
    out_dir = Path(ceremony_out) if ceremony_out is not None else issuer_path.parent
    issuer = load_issuer_certificate(issuer_path, ca_name)
    # After a re-key each key answers for what it issued, with the signer it certified, into a store of its own
    # (bound to its certificate): the CA certificate given (--ca-cert) says which key (ceremony.ca.generations).
    key_generation, generations = key_of(issuer_path.parent, ca_name, issuer)
    ca = ca_for_generation(ca, key_generation)
    ocsp = ca.ocsp or ocsp
    signer = current_signer(out_dir, generation_stem(ca_name, key_generation), issuer, signer_cert)
    moment = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    check_signer_time(signer, ocsp, moment, ca_name)
    store_path = Path(store_path)
    workers = workers or max(1, os.cpu_count() or 1)
    with ResponseStore.open(store_path, ca=ca_name, issuer_sha256=store_issuer_sha256(issuer),
                            check=check_store) as store, \
            Registry.open(registry_path, timeout=registry_timeout) as registry, \
            signer_sessions(ca, ocsp, signer, workers, pin_file, interactive,
                            pin_latch_path(Path(latch_dir) if latch_dir else store_path.parent, ca_name),
                            ca_name) as keys:
        timings["checks"] = time.perf_counter() - t0
        context = ResponderContext(issuer, signer.cert, ocsp.cert_id_hashes)
        produced = int(moment.timestamp())
        this_update = produced - int(ca.crl.clock_skew_td.total_seconds())
        times = (produced, this_update, this_update + int(ocsp.validity_td.total_seconds()))
        reasons: dict[str, int] = {}
        work = _work(registry, store_path, tuple(ocsp.cert_id_hashes), produced, int(ocsp.refresh_td.total_seconds()),
                     generations)
        first = next(work, None)
        signed = verified = 0
        if first is not None:
            t = time.perf_counter()
            revoked = Status(this_update, 1)  # keyCompromise: a response with every optional field present
            _lint_shapes(context, {"good": (first[0], first[1], Status()), "revoked": (first[0], first[1], revoked)},
                         times, ca.lint, repr(ca_name))
            timings["lint-before"] = time.perf_counter() - t
            t = time.perf_counter()
            signing = _Signing(context, keys, times, verify_rate)
            linted_after: set[str] = set()

            def feed() -> None:
                chunk: list[tuple[int, str, Status]] = []
                try:
                    for serial, h, status, reason in _chain(first, work):
                        if signing.stop.is_set():
                            break
                        reasons[reason] = reasons.get(reason, 0) + 1
                        chunk.append((serial, h, status))
                        if len(chunk) == CHUNK:
                            signing.todo.put(chunk)
                            chunk = []
                    if chunk:
                        signing.todo.put(chunk)
                except BaseException as exc:
                    signing.stop.set()
                    signing.done.put(exc)
                finally:
                    for _ in signing.threads:
                        signing.todo.put(None)

            def results() -> Iterator[Row]:
                nonlocal signed
                finished = 0
                while finished < len(signing.threads):
                    item = signing.done.get()
                    if item is None:
                        finished += 1
                        continue
                    if isinstance(item, BaseException):
                        signing.stop.set()
                        _drain(signing)
                        raise item
                    for row in item:
                        if row[2] not in linted_after:  # the first signed response of each status, linted
                            linted_after.add(row[2])
                            enforce(lint_response(row[3]), ca.lint, f"the {row[2]} OCSP response of {ca_name!r}")
                        signed += 1
                        yield row

            # The registry's connection belongs to this thread: it feeds, a writer thread fills the transaction.
            failure: list[BaseException] = []

            def write() -> None:
                try:
                    store.replace_all(results())
                except BaseException as exc:
                    signing.stop.set()
                    failure.append(exc)
                    _drain(signing)

            writer = threading.Thread(target=write, daemon=True)
            for thread in signing.threads:
                thread.start()
            writer.start()
            try:
                feed()
            finally:
                writer.join()
                signing.stop.set()
                _drain(signing)
            if failure:
                raise failure[0]
            timings["sign+store"] = time.perf_counter() - t
            verified = sum(signing.verified)
        stored, oldest = store.count(), store.oldest_this_update()
    timings["total"] = time.perf_counter() - t0
    result = OcspJobResult(ca_name, signed, stored, reasons, signer.path, signer.cert.not_valid_after_utc, oldest,
                           len(keys), timings, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, verified)
    if say:
        say(result.summary())
    return result


def refuse_final_store(store_path: Path, ca_name: str) -> None:
    """Refuse, before the HSM and before anything is written, a store that holds the final responses of the CA's
    termination (its ``final`` mark): as the CRL job after the final CRL (:func:`ceremony.crl.job.after_termination`),
    the job never replaces the last answers. A missing store is left to :meth:`ResponseStore.open`'s message."""
    if not store_path.is_file():
        return
    with ResponseStore.open(store_path, read_only=True) as store:
        final = store.final
    if final is not None:
        raise after_termination(store_path, f"the OCSP store holds the final responses of {ca_name!r} (written "
                                            f"{final})", "the job never replaces them")


def _chain(first: tuple[int, str, Status, str], rest: Iterator[tuple[int, str, Status, str]]
           ) -> Iterator[tuple[int, str, Status, str]]:
    yield first
    yield from rest


def _drain(signing: _Signing) -> None:
    """Empty the work queue so that no thread stays blocked on a full queue after a failure."""
    with contextlib.suppress(queue.Empty):
        while True:
            signing.todo.get_nowait()
    for _ in signing.threads:
        with contextlib.suppress(queue.Full):
            signing.todo.put_nowait(None)
    for thread in signing.threads:
        thread.join(timeout=5)


_REASON_OF = ((PinError, "pin_source"), (DefinitionError, "definition"), (RegistryError, "registry"),
              (StoreError, "store"), (LintError, "lint"), (OutputError, "output"), (VerificationError, "verification"),
              (HsmError, "hsm"), (CeremonyError, "error"))


def failure_reason(exc: BaseException) -> str:
    """The ``reason`` label of a failed run."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        return reason
    return next((label for cls, label in _REASON_OF if isinstance(exc, cls)), "unexpected")


def metrics_for(result: OcspJobResult | None, ca_name: str, duration: float, *, error: BaseException | None = None,
                store_path: Path | None = None, signer_not_after: dt.datetime | None = None,
                key_generation: int = 1) -> OcspMetrics:
    """The metrics of a run; on failure, what the store still holds (read-only) and the reason. ``key_generation``:
    the key the run signed for (its own metrics file after a re-key, :mod:`ceremony.ocsp.metrics`)."""
    if result is not None:
        return OcspMetrics(ca_name, True, result.signed, result.stored, result.oldest_this_update,
                           result.signer_not_after.timestamp(), duration, key_generation=key_generation)
    stored = oldest = None
    if store_path is not None:
        with contextlib.suppress(CeremonyError, OSError), ResponseStore.open(store_path, read_only=True) as store:
            stored, oldest = store.count(), store.oldest_this_update()
    return OcspMetrics(ca_name, False, 0, stored, oldest, signer_not_after.timestamp() if signer_not_after else None,
                       duration, failure_reason(error) if error is not None else "error", key_generation)
