"""Benchmarks: ``invoke bench.crl --entries N [--partitions P]`` — this suite's CRL job against ``openssl ca -gencrl``,
and with ``--partitions`` the same revocations signed as P partition CRLs in the same run.

Both sides get the same revocation set (same serials, revocation times, reasons, invalidity
dates). Each side runs as its own child process under a small wrapper that reports the child's
wall time and peak resident memory (``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of the wrapper, which
has that one child), so the two measurements never mix.

* suite: the real ``ceremony-crl-sign`` command (read the registry, encode, lint, sign with a
  SoftHSM P-384 key — hash on the host, ``CKM_ECDSA`` on the digest —, verify, publish DER+PEM);
* openssl: ``openssl ca -gencrl`` over an ``index.txt`` holding the same entries, with a throwaway
  P-384 software key.

Afterwards (not timed) the suite's CRL is parsed by ``openssl crl`` and by cryptography, and
every serial of the registry is checked to be in it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from invoke import Collection, Context, task

from ._cli import operator_errors

REPO = Path(__file__).resolve().parent.parent
_WRAPPER = ("import json, resource, subprocess, sys, time\n"
            "t = time.perf_counter()\n"
            "p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)\n"
            "wall = time.perf_counter() - t\n"
            "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
            "print(json.dumps({'rc': p.returncode, 'wall': wall, 'maxrss_kb': ru.ru_maxrss, "
            "'cpu': ru.ru_utime + ru.ru_stime, "
            "'stdout': p.stdout.decode(errors='replace')[-2000:], "
            "'stderr': p.stderr.decode(errors='replace')[-2000:]}))\n")
# Reasons in the generated set (RFC 5280 codes; None = unspecified, no reasonCode): the BR 7.2.2 set
# except privilegeWithdrawn, which `openssl ca` does not know.
_REASONS = [None] * 6 + [1] * 3 + [4, 5, 3]
_OPENSSL_REASONS = {1: "keyCompromise", 3: "affiliationChanged", 4: "superseded", 5: "cessationOfOperation"}


def measure(argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``argv`` in a fresh wrapper process: its wall time, CPU time (user + system) and peak RSS, nobody
    else's."""
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *argv], capture_output=True, text=True, env=env,
                         check=True)
    return json.loads(out.stdout)


def revocation_set(n: int, now: int, seed: int = 2026) -> list[tuple[int, int, int | None, int | None, int]]:
    """``n`` distinct random serials with realistic times, ordered by serial (the registry's row form)."""
    rnd = random.Random(seed)
    serials: set[int] = set()
    while len(serials) < n:
        serials.add(rnd.getrandbits(159) | 1 << 120)
    rows = []
    for s in sorted(serials):
        revoked = now - rnd.randrange(2 * 365 * 86400)
        reason = rnd.choice(_REASONS)
        inv = revoked - rnd.randrange(30 * 86400) if reason == 1 and rnd.random() < 0.3 else None
        rows.append((s, revoked, reason, inv, now + rnd.randrange(86400, 3 * 365 * 86400)))
    return rows


def bench_hierarchy(work: Path) -> Path:
    """A root and a qualified CA on fresh SoftHSM tokens, made by the rehearsal ceremonies from the testing
    definition (root backups off): the benchmarks' issuer. Returns the definition written under ``work/ca``."""
    import yaml

    from ceremony.ceremonies.root_key import root_ceremony
    from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
    from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
    from ceremony.common.display import make_console
    from ceremony.definition.model import load_definition
    from ceremony.hsm import softhsm
    from ceremony.transcript.recorder import ConsoleRecorder

    conf = softhsm.write_config(work / "hsm")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    data = yaml.safe_load((REPO / "inventory" / "testing" / "pki.yml").read_text(encoding="utf-8"))
    data["cas"]["root"]["backup"] = {"mode": "none"}
    for name, ca in data["cas"].items():
        env = f"BENCH_PIN_{name.upper()}"
        os.environ[env], os.environ[env + "_SO"] = softhsm.random_pin(), softhsm.random_pin()
        label = f"bench-{name}"
        softhsm.init_token(conf, label, os.environ[env], os.environ[env + "_SO"])
        ca["hsm"].update({"module": softhsm.softhsm_module(), "token": {"label": label}, "pin_env": env,
                          "so_pin_env": env + "_SO"})
    pki = work / "ca" / "pki.yml"
    pki.parent.mkdir(parents=True)
    pki.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    defn = load_definition(pki)
    quiet = ConsoleRecorder(rehearsal=True, console=make_console(file=open(os.devnull, "w")))  # noqa: SIM115
    out = pki.parent
    root_ceremony(defn, out, quiet, rehearsal=True, interactive=False)
    subordinate_key_ceremony(defn, "qualified", out, quiet, rehearsal=True, interactive=False)
    sign_subordinate_ceremony(defn, "qualified", out / "qualified.csr.pem", out, quiet, rehearsal=True,
                              interactive=False)
    return pki


def _suite_setup(work: Path, rows: list[tuple[int, int, int | None, int | None, int]]) -> dict[str, Any]:
    """The benchmarks' hierarchy (:func:`bench_hierarchy`) and a registry filled with ``rows``."""
    pki = bench_hierarchy(work)
    registry = work / "registry.sqlite3"
    _add_revoked(registry, rows, create=True)
    import sqlite3

    with contextlib.closing(sqlite3.connect(registry)) as conn:  # as a registry in service would be
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {"definition": pki, "registry": registry, "out": work / "pub"}


def _add_revoked(registry: Path, rows: list[tuple[int, int, int | None, int | None, int]],
                 create: bool = False, partitions: int | None = None) -> None:
    """Register the rows as revoked certificates; with ``partitions``, each names partition ``serial mod N``
    as issuance records it (:func:`ceremony.definition.model.crl_partition_for`)."""
    from ceremony.ca.registry import REASON_NAMES, CertRecord, Registry

    utc = dt.UTC
    with Registry.open(registry, create=create) as reg:
        reg.add_many(CertRecord(
            serial=s, subject="CN=bench", profile="qes-natural-person",
            not_before=dt.datetime.fromtimestamp(r - 86400 * 400, utc), not_after=dt.datetime.fromtimestamp(na, utc),
            sha256="00" * 32, status="revoked", revoked_at=dt.datetime.fromtimestamp(r, utc),
            reason=REASON_NAMES[c or 0], invalidity_date=None if i is None else dt.datetime.fromtimestamp(i, utc),
            crl_partition=None if partitions is None else s % partitions)
            for s, r, c, i, na in rows)


def _openssl_setup(work: Path, rows: list[tuple[int, int, int | None, int | None, int]]) -> Path:
    """An ``openssl ca`` directory: throwaway P-384 key and certificate, index.txt with the same entries."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    d = work / "openssl"
    d.mkdir()
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name.from_rfc4514_string("CN=Bench OpenSSL CA,C=ML")
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA384()))
    (d / "ca.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    (d / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def t(epoch: int, generalized: bool = False) -> str:
        v = dt.datetime.fromtimestamp(epoch, dt.UTC)
        return v.strftime("%Y%m%d%H%M%SZ" if generalized else "%y%m%d%H%M%SZ")

    with open(d / "index.txt", "w", encoding="ascii") as f:
        for s, r, c, i, na in rows:
            if c == 1 and i is not None:
                rev = f"{t(r)},keyTime,{t(i, True)}"
            elif c is not None:
                rev = f"{t(r)},{_OPENSSL_REASONS[c]}"
            else:
                rev = t(r)
            hexs = f"{s:X}"
            f.write(f"R\t{t(na)}\t{rev}\t{'0' * (len(hexs) % 2)}{hexs}\tunknown\t/CN=bench\n")
    (d / "index.txt.attr").write_text("unique_subject = no\n")
    (d / "crlnumber").write_text("01\n")
    (d / "openssl.cnf").write_text(
        "[ca]\ndefault_ca = bench\n[bench]\n"
        f"dir = {d}\ndatabase = $dir/index.txt\ncrlnumber = $dir/crlnumber\ncertificate = $dir/ca.crt\n"
        "private_key = $dir/ca.key\ndefault_md = sha384\ndefault_crl_days = 7\ncrl_extensions = crl_ext\n"
        "unique_subject = no\n[crl_ext]\nauthorityKeyIdentifier = keyid:always\n")
    return d


def _check_suite_crl(der_path: Path, rows: list[tuple[int, int, int | None, int | None, int]]) -> dict[str, Any]:
    """Untimed: openssl and cryptography parse the CRL, and every serial is in it."""
    from cryptography import x509

    parsed = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(der_path), "-noout"],
                            capture_output=True, text=True)
    crl = x509.load_der_x509_crl(der_path.read_bytes())
    listed = [r.serial_number for r in crl]
    return {"openssl_parses": parsed.returncode == 0, "cryptography_entries": len(listed),
            "every_serial_present": listed == [r[0] for r in rows]}


def _partitioned_setup(base: Path, suite: dict[str, Any], rows: list[tuple[int, int, int | None, int | None, int]],
                       partitions: int) -> dict[str, Any]:
    """The same CA with ``crl.partitions: N`` (a second definition on the same tokens, next to the CA certificate)
    and a second registry holding the same revocations, each naming its partition: every CRL of a run is a
    partition CRL (no certificate names the full CRL), as for a CA partitioned from its first issuance."""
    import yaml

    data = yaml.safe_load(Path(suite["definition"]).read_text(encoding="utf-8"))
    data["cas"]["qualified"]["crl"]["partitions"] = partitions
    pki = Path(suite["definition"]).with_name("pki-partitioned.yml")
    pki.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    registry = base / "registry-partitioned.sqlite3"
    _add_revoked(registry, rows, create=True, partitions=partitions)
    import sqlite3

    with contextlib.closing(sqlite3.connect(registry)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {"definition": pki, "registry": registry, "out": base / "pub-partitioned"}


def _check_partitions(out: Path, rows: list[tuple[int, int, int | None, int | None, int]],
                      partitions: int) -> dict[str, Any]:
    """Untimed: every partition CRL parses, carries its critical issuing distribution point, and together they list
    every serial exactly once, each in partition ``serial mod N``."""
    from cryptography import x509

    seen: list[int] = []
    misplaced = 0
    idp_ok = True
    sizes = []
    for p in range(partitions):
        der = (out / f"qualified-p{p}.crl").read_bytes()
        sizes.append(len(der))
        crl = x509.load_der_x509_crl(der)
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
        idp_ok &= idp.critical and idp.value.only_contains_user_certs
        for r in crl:
            seen.append(r.serial_number)
            misplaced += r.serial_number % partitions != p
    return {"every_serial_once": sorted(seen) == [r[0] for r in rows], "misplaced": misplaced,
            "issuing_distribution_points": idp_ok, "largest_partition_bytes": max(sizes),
            "smallest_partition_bytes": min(sizes)}


def bench_crl(entries: int, workdir: str | None = None, partitions: int | None = None) -> dict[str, Any]:
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="bench-crl-"))
    base.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    rows = revocation_set(entries, int(time.time()))
    suite = _suite_setup(base, rows)
    ossl = _openssl_setup(base, rows)
    parted = _partitioned_setup(base, suite, rows, partitions) if partitions else None
    setup = time.perf_counter() - t
    cmd = [str(Path(sys.executable).parent / "ceremony-crl-sign"), "--definition", str(suite["definition"]),
           "--ca", "qualified", "--registry", str(suite["registry"]), "--out", str(suite["out"]),
           "--metrics-dir", str(base / "metrics"), "--timings"]
    ours = measure(cmd, env=dict(os.environ))
    if ours["rc"] != 0:
        raise SystemExit(f"error: the suite's CRL job failed: {ours['stderr'].strip()}")
    split: dict[str, Any] | None = None
    if parted is not None:
        split = measure([cmd[0], "--definition", str(parted["definition"]), "--ca", "qualified", "--registry",
                         str(parted["registry"]), "--out", str(parted["out"]), "--metrics-dir",
                         str(base / "metrics-partitioned"), "--timings"], env=dict(os.environ))
        if split["rc"] != 0:
            raise SystemExit(f"error: the partitioned CRL job failed: {split['stderr'].strip()}")
    theirs = measure(["openssl", "ca", "-config", str(ossl / "openssl.cnf"), "-gencrl", "-batch",
                      "-out", str(ossl / "crl.pem")])
    if theirs["rc"] != 0:
        raise SystemExit(f"error: openssl ca -gencrl failed: {theirs['stderr'].strip()}")
    # A second run, as a scheduled run after new revocations: 0.1 % more entries, scattered among the
    # others, and the new CRL checked against the published one.
    known = {r[0] for r in rows}
    more = [r for r in revocation_set(max(1, entries // 1000), int(time.time()), seed=7) if r[0] not in known]
    del known
    _add_revoked(suite["registry"], more)
    again = measure(cmd, env=dict(os.environ))
    if again["rc"] != 0:
        raise SystemExit(f"error: the suite's second CRL run failed: {again['stderr'].strip()}")
    checks = _check_suite_crl(suite["out"] / "qualified.crl", sorted(rows + more))

    def steps_of(run: dict[str, Any]) -> dict[str, Any]:
        lines = run["stdout"].strip().splitlines()
        return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}

    result = {"steps": steps_of(ours), "steps_second_run": steps_of(again), "suite_second_run": again,
              "entries": entries, "setup_seconds": setup, "suite": ours, "openssl": theirs,
              "checks": checks, "workdir": str(base), "crl_bytes": (suite["out"] / "qualified.crl").stat().st_size,
              "load_average": os.getloadavg(), "cpus": os.cpu_count()}
    if parted is not None and split is not None and partitions:
        result.update(partitions=partitions, partitioned=split, steps_partitioned=steps_of(split),
                      partition_checks=_check_partitions(parted["out"], rows, partitions))
    return result


@task(help={"entries": "number of revoked certificates (default 1000000)",
            "workdir": "keep the registry, CA directories and CRLs here (default: a new temporary directory)",
            "json_out": "also write the results as JSON to this file",
            "partitions": "also sign the same revocations as N partition CRLs (crl.partitions: N, 2 to 256) and "
                          "show that run beside the single CRL (default: none)"})
@operator_errors
def crl(c: Context, entries: int = 1_000_000, workdir: str | None = None, json_out: str | None = None,
        partitions: int = 0) -> None:
    """Sign a CRL of N entries with this suite (SoftHSM key) and with openssl ca -gencrl; compare.
    With --partitions P, also a full re-sign of P partition CRLs of the same entries, side by side."""
    from ceremony.definition.model import MAX_CRL_PARTITIONS, MIN_CRL_PARTITIONS

    if not 1 <= entries <= 10_000_000:
        raise SystemExit(f"error: --entries {entries}: allowed from 1 to 10,000,000")
    if partitions and not MIN_CRL_PARTITIONS <= partitions <= MAX_CRL_PARTITIONS:
        raise SystemExit(f"error: --partitions {partitions}: allowed from {MIN_CRL_PARTITIONS} to "
                         f"{MAX_CRL_PARTITIONS} (crl.partitions), or leave it out")
    if workdir is None:  # a million-entry run leaves hundreds of MB: keep them only when asked
        with tempfile.TemporaryDirectory(prefix="bench-crl-") as tmp:
            _report(bench_crl(entries, tmp, partitions or None), json_out, kept=False)
        return
    _report(bench_crl(entries, workdir, partitions or None), json_out, kept=True)


def _report(r: dict[str, Any], json_out: str | None, kept: bool) -> None:
    entries = r["entries"]
    s, o = r["suite"], r["openssl"]
    print(f"CRL of {entries:,} revoked certificates ({r['crl_bytes']:,} bytes DER); setup {r['setup_seconds']:.1f} s")
    print(f"{'':24}{'wall time':>12}{'peak RSS':>14}")
    print(f"{'ceremony-crl-sign':24}{s['wall']:>10.2f} s{s['maxrss_kb'] / 1024:>11.0f} MB")
    print(f"{'openssl ca -gencrl':24}{o['wall']:>10.2f} s{o['maxrss_kb'] / 1024:>11.0f} MB")
    a = r["suite_second_run"]
    print(f"{'ceremony-crl-sign, 2nd':24}{a['wall']:>10.2f} s{a['maxrss_kb'] / 1024:>11.0f} MB"
          "   (+0.1 % revocations; checks against the published CRL)")
    print(f"{'ratio openssl / suite':24}{o['wall'] / s['wall']:>10.1f} x{o['maxrss_kb'] / s['maxrss_kb']:>12.1f} x")
    if "partitioned" in r:
        p, n = r["partitioned"], r["partitions"]
        print(f"{f'{n} partitions, all':24}{p['wall']:>10.2f} s{p['maxrss_kb'] / 1024:>11.0f} MB"
              f"   (full re-sign of every partition CRL; {p['wall'] / s['wall']:.2f} x the single CRL's time)")
    for label, key in (("suite steps (s)", "steps"), ("2nd run steps (s)", "steps_second_run"),
                       ("partitions steps (s)", "steps_partitioned")):
        if r[key]:
            print(f"{label}: " + ", ".join(f"{k} {v:.2f}" for k, v in r[key]["seconds"].items()))
    ck = r["checks"]
    print(f"suite CRL: openssl crl parses it: {ck['openssl_parses']}; cryptography reads "
          f"{ck['cryptography_entries']:,} entries; every serial present: {ck['every_serial_present']}")
    if "partition_checks" in r:
        pc = r["partition_checks"]
        print(f"partition CRLs: every serial in exactly one: {pc['every_serial_once']}; in the wrong partition: "
              f"{pc['misplaced']}; critical issuing distribution points: {pc['issuing_distribution_points']}; "
              f"sizes {pc['smallest_partition_bytes']:,} to {pc['largest_partition_bytes']:,} bytes")
    load = r["load_average"]
    print(f"machine: {r['cpus']} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (at the end)")
    print(f"files kept in {r['workdir']}" if kept else "work files removed (--workdir DIR keeps them)")
    if json_out:
        Path(json_out).write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")


#: The registry read's reference: the whole CRL job it is part of (read, encode, lint, sign, verify,
#: publish), as measured for a million entries in docs/crl.md ("Performance: a million entries").
REGISTRY_REFERENCE = {"seconds": 1.66, "peak_mb": 178}

_READ = ("import resource, sys, time; from ceremony.ca.registry import Registry\n"
         "with Registry.open(sys.argv[1]) as r:\n"
         "    t = time.perf_counter(); n = sum(1 for _ in r.iter_revoked_rows()); s = time.perf_counter() - t\n"
         "    t = time.perf_counter(); rows = r.revoked_rows(); l = time.perf_counter() - t\n"
         "print(n, len(rows), s, l, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)")


@task(help={"entries": "number of revoked certificates (default 1000000)"})
@operator_errors
def registry(c: Context, entries: int = 1_000_000) -> None:
    """Read N revocations from a registry as the CRL job does (streamed, and as one list), in a fresh process."""
    if not 1 <= entries <= 10_000_000:
        raise SystemExit(f"error: --entries {entries}: allowed from 1 to 10,000,000")
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        path = Path(tmp) / "registry.sqlite3"
        t = time.perf_counter()
        _add_revoked(path, revocation_set(entries, int(time.time())), create=True)
        built = time.perf_counter() - t
        # A fresh process, so that its peak memory is the read's and not the build's.
        out = subprocess.run([sys.executable, "-c", _READ, str(path)], capture_output=True, text=True, check=True)
    n, listed_n, streamed, listed, peak_mb = out.stdout.split()
    if int(n) != entries or int(listed_n) != entries:
        raise SystemExit(f"error: read {n} and {listed_n} revocations back, not {entries}")
    ref = REGISTRY_REFERENCE
    print(f"registry of {entries:,} revocations (built in {built:.1f} s)")
    print(f"{'':28}{'wall time':>12}{'peak RSS':>12}")
    print(f"{'streamed (iter_revoked_rows)':28}{float(streamed):>10.2f} s{'':>12}")
    print(f"{'as a list (revoked_rows)':28}{float(listed):>10.2f} s{int(peak_mb):>9} MB")
    print(f"{'reference: whole CRL job':28}{ref['seconds']:>10.2f} s{ref['peak_mb']:>9} MB   "
          "(1M entries, docs/crl.md)")


ns = Collection()
ns.add_task(crl)
ns.add_task(registry)
