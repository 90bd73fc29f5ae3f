"""The publisher's side of CRL publication: verify a CRL, then serve it (``ceremony-crl-publish``).

A publication web server receives CRLs it did not sign: the subordinate CA's CRL pulled from the
signer by a timer, the root CRLs pre-signed at a root ceremony and carried out on removable media.
Nothing reaches the served directory before this module has checked it, with the CA certificate
installed on the publisher as the trust anchor (never a certificate that came with the CRL):

* it parses as a CRL and its signature verifies with the CA certificate's key, with the hash the
  suite uses for that key;
* its issuer is the certificate's subject byte for byte and its authority key identifier the
  certificate's subject key identifier;
* it is in force: thisUpdate is not later than now (plus a small clock tolerance) and nextUpdate
  is still ahead;
* against the CRL served now: a lower CRL Number is refused; the same number is "nothing to do"
  when the bytes are identical and refused otherwise; a higher number must follow the served CRL
  (:func:`ceremony.crl.checks.check_against_previous`: same issuer and key identifier, thisUpdate
  not earlier, no entry dropped).

Then the file is replaced atomically (temporary file in the served directory, fsync, rename,
directory fsync), with its modification time set to the CRL's thisUpdate *before* the rename: the
web server's ``Last-Modified`` is thisUpdate on every publisher, and a reader gets the old CRL or
the new one, never a mixture. Finally an nginx ``map`` include is regenerated from the served
directory: for each CRL, the key ``<url path>|<Last-Modified>`` gives ``"<SHA-256 of the file>"``,
which the site sends as ``ETag``. Keyed by ``Last-Modified`` as well as the path, an entry that is
stale (the file replaced, nginx not reloaded yet) matches nothing, so a CRL is never sent with
another CRL's ETag; it is sent without one until nginx reloads.

Before any of this, when the host requires it (``/etc/ceremony/clock.json``, role
``host_baseline``), the kernel must say the clock is synchronised within its bound
(:mod:`ceremony.common.clock`): "in force" and "expired" are judged by this clock, and a root CRL is put
in force by it, so a publisher with a wrong clock would serve a CRL too early or refuse a good one.

A refused CRL leaves the served file, its time and the map exactly as they were; the command
prints one line ``error: ...`` and exits non-zero (8 for a CRL that fails a check, 4 for a file
that cannot be read or written).

Partitioned CRLs (docs/crl.md, "Partitioned CRLs"): given the CA's ``crl_url`` (``--crl-url``), a run publishes the
full CRL and every partition CRL ``<stem>-p<i>.crl`` pulled beside it (:func:`publish_partitioned`), each one
exactly as above and independently of the others (its own served file, its own number sequence), plus its
*scope*: a partition CRL's issuing distribution point must name the URL it is served at
(:func:`ceremony.definition.model.partition_crl_url` of ``crl_url`` and its index) and the full CRL must have none.
A relying party that fetched partition 3's URL must never get another partition's CRL or the full one: both would
claim a scope the URL does not. The partition files are found in the pulled directory, not listed anywhere, so a
partition that appears later (a certificate issued after the count was raised names it) is served by the next
pull without anything being reconfigured.

Key generations (docs/lifecycle.md, "Re-key"): after a subordinate re-key the signer also signs, per key generation
``m >= 2`` that has unexpired certificates, ``<stem>.g<m>.crl`` and its partitions ``<stem>.g<m>-p<i>.crl``
(:func:`ceremony.ca.generations.generation_url`). A run with ``--crl-url`` publishes those found in the pulled
directory too, each verified under the certificate of *that* key generation, installed beside ``--ca-cert`` in the
publisher's trust directory as the ceremonies name it (``<ca>.crt.pem`` generation 1, ``<ca>.g<n>.crt.pem``): the
first certificate that holds key generation m's key, the one the signer's job signs with. A generation CRL signed by
another key, or one whose key generation has no certificate installed here, is refused and the rest is served.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import email.utils
import fcntl
import hashlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ceremony.ca.generations import generation_url, issuer_generations
from ceremony.common import crash_log
from ceremony.common.clock import ClockPolicy, ClockStatus, add_clock_arguments, check_clock, resolve_policy
from ceremony.common.errors import CeremonyError, OutputError, VerificationError
from ceremony.common.fileio import replace_atomically
from ceremony.crl import encoding as crlenc
from ceremony.crl.checks import CrlSummary, check_against_previous, summarise
from ceremony.crl.job import Issuer, load_issuer, read_published
from ceremony.definition.model import partition_crl_url

#: How far thisUpdate may be ahead of this host's clock (the signer already sets thisUpdate back
#: by its clock skew allowance; this only absorbs the publisher's own clock being a little behind).
DEFAULT_CLOCK_TOLERANCE = dt.timedelta(minutes=5)


#: The URL path under which the served directory appears (the nginx site of role crl_publisher).
DEFAULT_URL_PREFIX = "/crl/"


MAP_HEADER = ("# Written by ceremony-crl-publish after every publication; do not edit.\n"
              "# \"<url path>|<Last-Modified>\" \"<ETag: the SHA-256 of the file>\"\n")


@dataclass(frozen=True)
class Publication:
    """What a run did with one served CRL."""

    path: Path
    number: int
    this_update: dt.datetime
    next_update: dt.datetime | None
    sha256: str
    changed: bool
    etag_map_changed: bool = False

    def summary(self) -> str:
        state = "installed" if self.changed else "already served; nothing changed"
        nxt = f", nextUpdate {self.next_update:%Y-%m-%dT%H:%M:%SZ}" if self.next_update else ""
        return (f"{self.path}: CRL {self.number} {state} (thisUpdate {self.this_update:%Y-%m-%dT%H:%M:%SZ}{nxt}, "
                f"sha256 {self.sha256})")


@dataclass(frozen=True)
class Scope:
    """Where a CRL is served and so what it must claim to cover: the full CRL (``partition`` None: no issuing
    distribution point) or one partition (an issuing distribution point naming exactly ``url``)."""

    url: str
    partition: int | None = None

    def describe(self) -> str:
        return "the full CRL" if self.partition is None else f"partition {self.partition}"


def check_scope(crl: x509.CertificateRevocationList, scope: Scope) -> None:
    """The CRL's issuing distribution point matches where it is served (module docstring)."""
    try:
        idp: x509.IssuingDistributionPoint | None = crl.extensions.get_extension_for_class(
            x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        idp = None
    if scope.partition is None:
        if idp is not None:
            names = _idp_urls(idp)
            named = f" naming {', '.join(names)}" if names else ""
            raise VerificationError(f"it has an issuing distribution point{named} (a partition CRL), but "
                                    f"{scope.url} is the full CRL's URL")
        return
    if idp is None:
        raise VerificationError(f"it has no issuing distribution point (a full CRL), but {scope.url} is the URL of "
                                f"{scope.describe()}")
    names = _idp_urls(idp)
    if names != [scope.url]:
        raise VerificationError(f"its issuing distribution point names {', '.join(names) or 'no URL'}, not "
                                f"{scope.url} where it would be served ({scope.describe()})")


def _idp_urls(idp: x509.IssuingDistributionPoint) -> list[str]:
    return [n.value for n in idp.full_name or () if isinstance(n, x509.UniformResourceIdentifier)]


def http_date(when: dt.datetime | float) -> str:
    """The HTTP date nginx sends as Last-Modified for a file with this modification time."""
    seconds = when.timestamp() if isinstance(when, dt.datetime) else when
    return email.utils.formatdate(int(seconds), usegmt=True)


def _check_signature(der: bytes, crl: x509.CertificateRevocationList, issuer: Issuer) -> None:
    public = issuer.public_key
    _, expected = crlenc.signature_algorithm(public)
    used = crl.signature_hash_algorithm
    if used is None or used.name != expected.name:
        raise VerificationError(f"the CRL is signed with {getattr(used, 'name', 'an unknown hash')}, the CA key "
                                f"signs with {expected.name}")
    tbs = bytes(crlenc.tbs_of(der))
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(crl.signature, tbs, ec.ECDSA(expected))
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(crl.signature, tbs, padding.PKCS1v15(), expected)
        else:  # signature_algorithm refused it already
            raise VerificationError(f"unsupported CA key {type(public).__name__}")
    except InvalidSignature:
        raise VerificationError(f"the signature does not verify with the key of {issuer.path}") from None


def verify_for_publication(der: bytes, issuer: Issuer, served: tuple[bytes, CrlSummary] | None, *,
                           now: dt.datetime, tolerance: dt.timedelta = DEFAULT_CLOCK_TOLERANCE,
                           scope: Scope | None = None) -> CrlSummary:
    """Every check of the module docstring; returns the CRL's summary or raises VerificationError.

    ``scope``: where the CRL is to be served (None: not checked, e.g. the root's ARLs)."""
    try:
        crl = x509.load_der_x509_crl(der)
        summary = summarise(crl)
    except ValueError as exc:
        raise VerificationError(f"not a DER CRL ({exc})") from None
    _check_signature(der, crl, issuer)
    if summary.issuer_der != issuer.name.public_bytes():
        raise VerificationError(f"its issuer {crl.issuer.rfc4514_string()} is not the subject of {issuer.path}")
    if summary.authority_key_id != issuer.key_id:
        raise VerificationError(f"its authority key identifier is not the subject key identifier of {issuer.path}")
    if scope is not None:
        check_scope(crl, scope)
    if summary.this_update > now + tolerance:
        raise VerificationError(f"its thisUpdate {summary.this_update:%Y-%m-%dT%H:%M:%SZ} is in the future "
                                f"(clock here {now:%Y-%m-%dT%H:%M:%SZ}); check the clocks")
    if summary.next_update is None or summary.next_update <= now:
        when = f"at {summary.next_update:%Y-%m-%dT%H:%M:%SZ}" if summary.next_update else "(no nextUpdate)"
        raise VerificationError(f"CRL {summary.number} has expired {when}")
    if served is not None:
        served_der, served_summary = served
        if summary.number < served_summary.number:
            raise VerificationError(f"CRL Number {summary.number} is lower than the served CRL's "
                                    f"{served_summary.number}")
        if summary.number == served_summary.number:
            if der != served_der:
                raise VerificationError(f"CRL Number {summary.number} is already served with other content")
            return summary
        check_against_previous(served_der, der, lambda serial: None, served_summary, summary)
    return summary


@contextlib.contextmanager
def served_lock(directory: Path) -> Iterator[None]:
    """One publication at a time per served directory (the subordinate and root timers may meet)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise OutputError(f"{directory}: cannot open the served directory: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def etag_map_text(served_dir: Path, url_prefix: str = DEFAULT_URL_PREFIX) -> str:
    """The nginx map entries for every CRL in ``served_dir`` (dot files, temporaries, are skipped)."""
    lines = []
    for path in sorted(served_dir.glob("*.crl")):
        if path.name.startswith(".") or not path.is_file():
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        key = f"{url_prefix.rstrip('/')}/{path.name}|{http_date(path.stat().st_mtime)}"
        lines.append(f"\"{key}\" '\"{digest}\"';\n")
    return MAP_HEADER + "".join(lines)


def write_etag_map(served_dir: Path, map_path: Path, url_prefix: str = DEFAULT_URL_PREFIX) -> bool:
    """Regenerate the map include; written (atomically) only when it changes. True when written."""
    text = etag_map_text(served_dir, url_prefix).encode()
    try:
        if map_path.read_bytes() == text:
            return False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise OutputError(f"{map_path}: cannot read the ETag map: {exc.strerror}") from None
    try:
        replace_atomically(map_path, text)
    except OSError as exc:
        raise OutputError(f"{map_path}: cannot write the ETag map: {exc.strerror}") from None
    return True


def _install(der: bytes, summary: CrlSummary, served_path: Path, served: tuple[bytes, CrlSummary] | None) -> bool:
    """Replace the served file (mtime = thisUpdate); for the same CRL only put its time right."""
    stamp = summary.this_update.timestamp()
    try:
        if served is not None and served[0] == der:
            if served_path.stat().st_mtime != stamp:
                os.utime(served_path, (stamp, stamp))
            return False
        replace_atomically(served_path, der, mode=0o644, mtime=stamp)
    except OSError as exc:
        raise OutputError(f"{served_path}: cannot install the CRL: {exc.strerror}") from None
    return True


def load_trust_anchor(ca_cert: str | Path) -> Issuer:
    """The CA certificate installed on this host (never one that came with the CRL)."""
    path = Path(ca_cert)
    if not path.is_file():
        raise OutputError(f"{path}: the CA certificate is not there (the role crl_publisher installs it)")
    return load_issuer(path, path.name)


def publish(der: bytes, source: str, ca_cert: str | Path, served_path: str | Path, *,
            now: dt.datetime | None = None, tolerance: dt.timedelta = DEFAULT_CLOCK_TOLERANCE,
            etag_map: str | Path | None = None, url_prefix: str = DEFAULT_URL_PREFIX,
            clock: ClockPolicy | None = None, clock_status: ClockStatus | None = None,
            scope: Scope | None = None) -> Publication:
    """Verify ``der`` (read from ``source``, named in messages) and serve it at ``served_path``.

    ``clock``: the host's requirement on its clock (None: not checked); ``clock_status``: the state
    to judge instead of the kernel's (tests); ``scope``: what the CRL must cover to be served there.
    """
    served_path = Path(served_path)
    check_clock(clock, f"nothing was published from {source}", clock_status)
    issuer = load_trust_anchor(ca_cert)
    at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    with served_lock(served_path.parent):
        served = read_published(served_path)
        try:
            summary = verify_for_publication(der, issuer, served, now=at, tolerance=tolerance, scope=scope)
        except VerificationError as exc:
            kept = f"CRL {served[1].number} stays served" if served else "nothing is served"
            raise VerificationError(f"{source} refused: {exc}; {served_path}: {kept}") from None
        changed = _install(der, summary, served_path, served)
        map_changed = write_etag_map(served_path.parent, Path(etag_map), url_prefix) if etag_map else False
    return Publication(served_path, summary.number, summary.this_update, summary.next_update,
                       hashlib.sha256(der).hexdigest(), changed, map_changed)


#: A partition CRL's file name: ``<stem>-p<index>.crl`` (index without leading zeros, as the job writes it).
PARTITION_NAME = re.compile(r"(?P<stem>.+)-p(?P<index>0|[1-9][0-9]{0,2})\.crl")


def pulled_partitions(directory: Path, stem: str) -> list[tuple[int, Path]]:
    """The partition CRLs ``<stem>-p<i>.crl`` in ``directory``, by index (dot files, temporaries, skipped)."""
    found = []
    for path in directory.glob(f"{stem}-p*.crl"):
        m = PARTITION_NAME.fullmatch(path.name)
        if m and m.group("stem") == stem and path.is_file():
            found.append((int(m.group("index")), path))
    return sorted(found)


@dataclass(frozen=True)
class Outcome:
    """One CRL of a partitioned publication: what was served, or why it was refused (the others go on)."""

    source: Path
    publication: Publication | None = None
    error: CeremonyError | None = None


def publish_partitioned(crl: str | Path, crl_url: str, ca_cert: str | Path, served_path: str | Path, *,
                        now: dt.datetime | None = None, tolerance: dt.timedelta = DEFAULT_CLOCK_TOLERANCE,
                        etag_map: str | Path | None = None, url_prefix: str = DEFAULT_URL_PREFIX,
                        clock: ClockPolicy | None = None, clock_status: ClockStatus | None = None) -> list[Outcome]:
    """The full CRL ``crl`` and every partition CRL pulled beside it, each verified and served on its own.

    Each CRL is served at the file name its URL gives (``partition_crl_url(crl_url, i)``) next to
    ``served_path``, with its scope checked. One refused CRL never holds back the others: a revocation in
    partition 2 is served even if partition 5's file is damaged (that one is reported, and its served CRL stays).
    The full CRL may be missing when partitions are there (the signer publishes it only while a certificate
    names it); with neither, nothing was pulled and that is an error.
    """
    crl, served_path = Path(crl), Path(served_path)
    base = crl_url.rstrip()
    served_name = base.rpartition("/")[2]
    if served_path.name != served_name:
        raise OutputError(f"{served_path}: the served file must be named as the last segment of --crl-url "
                          f"{base!r} ({served_name})")
    clock_status = check_clock(clock, f"nothing was published from {crl.parent}", clock_status)
    stem = served_name[:-4] if served_name.endswith(".crl") else served_name
    later = pulled_generations(crl.parent, stem)
    outcomes: list[Outcome] = []
    # (pulled file, served file, scope, the CA certificate to verify it under, or the reason there is none)
    targets: list[tuple[Path, Path, Scope, Path | CeremonyError]] = []
    first = _scopes(crl, served_path, base, stem, ca_cert=Path(ca_cert), nothing_ok=bool(later))
    targets += first
    if later:
        try:
            anchors: dict[int, Path] | CeremonyError = generation_anchors(Path(ca_cert))
        except CeremonyError as exc:
            anchors = exc
        for m in sorted(later):
            url = generation_url(base, m)
            name = url.rpartition("/")[2]
            anchor: Path | CeremonyError = anchors if isinstance(anchors, CeremonyError) else anchors.get(m) or \
                OutputError(f"no certificate of key generation {m} is installed beside {ca_cert} (a "
                            "<ca>.g<n>.crt.pem holding that key); run playbooks/publish.yml once the re-key's "
                            "certificate is in the controller's exchange directory")
            targets += _scopes(crl.parent / name, served_path.parent / name, url, name[:-4] if name.endswith(".crl")
                               else name, ca_cert=anchor, nothing_ok=True)
    for source, target, scope, cert in targets:
        try:
            if isinstance(cert, CeremonyError):
                raise VerificationError(f"{source} refused: {cert}; {target}: what is served there stays") from None
            result = publish(read_candidate(source), str(source), cert, target, now=now, tolerance=tolerance,
                             etag_map=etag_map, url_prefix=url_prefix, clock=clock, clock_status=clock_status,
                             scope=scope)
            outcomes.append(Outcome(source, publication=result))
        except CeremonyError as exc:
            outcomes.append(Outcome(source, error=exc))
    return outcomes


def _scopes(crl: Path, served_path: Path, base: str, stem: str, *, ca_cert: Path | CeremonyError,
            nothing_ok: bool) -> list[tuple[Path, Path, Scope, Path | CeremonyError]]:
    """One key's CRLs in the pulled directory: its full CRL (also when nothing of it was pulled, unless
    ``nothing_ok``: then reading it reports the failed transfer) and its partitions."""
    partitions = pulled_partitions(crl.parent, stem)
    found: list[tuple[Path, Path, Scope, Path | CeremonyError]] = []
    if crl.is_file() or not (partitions or nothing_ok):
        found.append((crl, served_path, Scope(base), ca_cert))
    for index, path in partitions:
        url = partition_crl_url(base, index)
        found.append((path, served_path.parent / url.rpartition("/")[2], Scope(url, index), ca_cert))
    return found


#: A later key generation's CRL: ``<stem>.g<m>.crl`` or ``<stem>.g<m>-p<i>.crl`` (m >= 2, no leading zeros).
GENERATION_NAME = re.compile(r"(?P<stem>.+)\.g(?P<m>[2-9]|[1-9][0-9]+)(?:-p(?:0|[1-9][0-9]{0,2}))?\.crl")


def pulled_generations(directory: Path, stem: str) -> set[int]:
    """The key generations ``m >= 2`` with a CRL or partition CRL of ``stem`` in ``directory``."""
    found = set()
    for path in directory.glob(f"{stem}.g*.crl"):
        m = GENERATION_NAME.fullmatch(path.name)
        if m and m.group("stem") == stem and path.is_file():
            found.add(int(m.group("m")))
    return found


def generation_anchors(ca_cert: Path) -> dict[int, Path]:
    """Key generation → the certificate its CRLs are verified under: the first certificate holding that key
    among ``<ca>.crt.pem`` (``ca_cert``) and the ``<ca>.g<n>.crt.pem`` beside it (what the CRL job signs with)."""
    name = ca_cert.name
    if not name.endswith(".crt.pem"):
        raise OutputError(f"{ca_cert}: the CA certificate must be named <ca>.crt.pem for the certificates of its "
                          "later key generations (<ca>.g<n>.crt.pem) to be found beside it")
    gens = issuer_generations(ca_cert.parent, name[:-len(".crt.pem")])
    anchors: dict[int, Path] = {}
    for g in gens:
        anchors.setdefault(g.key_generation, g.path)
    return anchors


def read_candidate(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise OutputError(f"{path}: no CRL there (did the transfer from the signer run?)") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot read the CRL: {exc.strerror}") from None


def in_force(batch_dir: str | Path, stem: str, at: dt.datetime) -> tuple[Path, bytes]:
    """The pre-signed CRL in force in ``batch_dir``: the highest number whose thisUpdate has passed.

    The same rule as :func:`ceremony.ceremonies.root_crl.latest_in_force`; here every file of the batch is
    named in the error when one does not parse, and the chosen file is returned with its bytes.
    """
    best: tuple[int, Path, bytes] | None = None
    directory = Path(batch_dir)
    if not directory.is_dir():
        raise OutputError(f"{directory}: no root CRL batch installed")
    for path in sorted(directory.glob(f"{stem}-*.crl")):
        der = read_candidate(path)
        try:
            s = summarise(x509.load_der_x509_crl(der))
        except (ValueError, VerificationError) as exc:
            raise VerificationError(f"{path}: not a CRL of the batch ({exc}); nothing was published") from None
        if s.this_update <= at and (best is None or s.number > best[0]):
            best = (s.number, path, der)
    if best is None:
        raise OutputError(f"{directory}: no {stem}-<N>.crl in force at {at:%Y-%m-%dT%H:%M:%SZ} "
                          "(install the batch of the last root CRL ceremony)")
    return best[1], best[2]


def publish_in_force(batch_dir: str | Path, ca_cert: str | Path, served_path: str | Path, *,
                     now: dt.datetime | None = None, tolerance: dt.timedelta = DEFAULT_CLOCK_TOLERANCE,
                     etag_map: str | Path | None = None, url_prefix: str = DEFAULT_URL_PREFIX,
                     clock: ClockPolicy | None = None, clock_status: ClockStatus | None = None) -> Publication:
    """Put the pre-signed CRL in force (``<stem>-<N>.crl`` in ``batch_dir``, stem from the served name).

    The clock is checked first: which CRL is in force is decided by it.
    """
    served_path = Path(served_path)
    clock_status = check_clock(clock, f"no root CRL was put in force from {batch_dir}", clock_status)
    at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    stem = served_path.name[:-4] if served_path.name.endswith(".crl") else served_path.name
    path, der = in_force(batch_dir, stem, at)
    try:
        return publish(der, str(path), ca_cert, served_path, now=at, tolerance=tolerance, etag_map=etag_map,
                       url_prefix=url_prefix, clock=clock, clock_status=clock_status)
    except VerificationError as exc:
        if "has expired" in str(exc):
            raise VerificationError(f"{exc} (the newest pre-signed CRL in force has expired: a root CRL "
                                    "ceremony is overdue)") from None
        raise


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ceremony-crl-publish",
        description="Verify a CRL against its CA certificate and the CRL served now, then serve it atomically.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--crl", help="the CRL to publish (DER), e.g. as pulled from the signer")
    what.add_argument("--batch-dir", help="directory of pre-signed CRLs <stem>-<N>.crl (root CRL batches): "
                      "publish the highest number whose thisUpdate has passed")
    p.add_argument("--ca-cert", required=True, help="the certificate of the CA that signs this CRL (PEM or DER), "
                   "installed on this host")
    p.add_argument("--served", required=True, help="the served file, e.g. /var/www/pki/crl/qualified.crl")
    p.add_argument("--crl-url", help="the CA's crl_url (its definition's publication.crl_url): check that the CRL "
                   "is the full CRL, and publish every partition CRL <stem>-p<i>.crl pulled beside --crl too, each "
                   "checked to name the URL it is served at (docs/crl.md, Partitioned CRLs)")
    p.add_argument("--etag-map", help="nginx map include to regenerate (ETag = SHA-256 of each served CRL)")
    p.add_argument("--url-prefix", default=DEFAULT_URL_PREFIX,
                   help=f"URL path of the served directory in the map (default {DEFAULT_URL_PREFIX})")
    p.add_argument("--clock-tolerance", type=int, default=int(DEFAULT_CLOCK_TOLERANCE.total_seconds()),
                   help="seconds thisUpdate may be ahead of this host's clock (default 300)")
    add_clock_arguments(p, "publish")
    return p


def _report(outcomes: list[Outcome]) -> int:
    """One line per CRL (the served ones on stdout, the refused ones on stderr); the worst exit status."""
    status = 0
    for outcome in outcomes:
        if outcome.publication is not None:
            print(outcome.publication.summary())
        elif outcome.error is not None:
            print(f"error: {outcome.error}", file=sys.stderr)
            status = max(status, outcome.error.exit_code)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    tolerance = dt.timedelta(seconds=max(0, args.clock_tolerance))

    try:
        clock = resolve_policy(args.require_clock_sync, args.max_clock_error, args.clock_config)
        if args.crl and args.crl_url:
            return _report(publish_partitioned(args.crl, args.crl_url, args.ca_cert, args.served, tolerance=tolerance,
                                               etag_map=args.etag_map, url_prefix=args.url_prefix, clock=clock))
        if args.crl_url:
            raise OutputError("--crl-url goes with --crl (the root's CRLs of --batch-dir are not partitioned)")
        if args.crl:
            result = publish(read_candidate(args.crl), args.crl, args.ca_cert, args.served, tolerance=tolerance,
                             etag_map=args.etag_map, url_prefix=args.url_prefix, clock=clock)
        else:
            result = publish_in_force(args.batch_dir, args.ca_cert, args.served, tolerance=tolerance,
                                      etag_map=args.etag_map, url_prefix=args.url_prefix, clock=clock)
    except CeremonyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a scheduler still gets one line, naming the traceback's file (or the journal)
        print("error: " + crash_log.report(exc, "crl-publish"), file=sys.stderr)
        return crash_log.EXIT_CODE
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
