"""The evidence auditors ask for beyond steps and keys: who approved the script, who entered the room,
which equipment and software, the host's logs, and where every backup share went.

BR §6.1.1.1, WebTrust 4.1, ETSI EN 319 411-1 GEN-6.5.1 and the IANA KSK practice ask a ceremony to
show more than what the HSM did. Each fact here is an ``evidence`` record of a kind the verifier knows
(:data:`KINDS`) and checks for shape (:func:`shape_problems`), so a transcript cannot carry a malformed
or half-filled one unnoticed. Where each fact comes from decides its trust:

- **people say** (the answers file; generated and marked in a rehearsal): the script's approval
  (``script-approval``), the equipment's serials and boot medium hash (``equipment``), a person
  entering or leaving mid-ceremony (``facility-access``), a share file shredded after its handover
  (``share-custody`` in a later ceremony). Each answers-file key is validated by a ``parse_*`` function
  here with one message naming the file, the field and what is allowed;
- **the machine says** (collected, never typed): the software that matters with its package version
  and the SHA-256 of the file actually used (``header.environment.software``, at the start), and the
  host's logs hashed at the close (``machine-logs``; a log that is not there is recorded as missing,
  never an error: the record says what the auditor can and cannot compare).

The verifier reads these records; it never runs these collectors.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.util
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.backends import default_backend

from ceremony.common import child_process
from ceremony.common.errors import CeremonyError
from ceremony.common.fileio import sha256_file

#: The evidence kinds this module defines (``evidence`` records' ``name``).
KINDS = ("script-approval", "equipment", "facility-access", "machine-logs", "share-custody", "recorded-ceremony",
         "recording")

#: Directions of a facility-access record.
DIRECTIONS = ("enter", "leave")

#: What a share-custody record may say happened to a share page and its file.
CUSTODY_ACTIONS = ("handed-over", "shredded")

_HEX64 = re.compile(r"[0-9a-f]{64}")

#: Machine logs read at the close when the answers file names none (a missing one is recorded as such).
DEFAULT_LOG_FILES = ("/var/log/syslog", "/var/log/auth.log")


class EvidenceError(CeremonyError):
    """An answers-file fact that cannot be recorded as it is: named by file and field, nothing written."""

    exit_code = 11


def utc_time(value: Any) -> dt.datetime | None:
    """An ISO 8601 time with its zone (``Z`` or an offset), as UTC; None when it is not one."""
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(dt.UTC)


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip()) and "\n" not in value and len(value) <= 200


# -- people-supplied facts: the answers file -----------------------------------------------------------------
def _fail(where: str, field: str, problem: str, allowed: str) -> EvidenceError:
    return EvidenceError(f"{where}: {field}: {problem} (allowed: {allowed})")


def _mapping(value: Any, where: str, field: str, keys: set[str], required: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, field, "not a mapping", f"a mapping with {', '.join(sorted(keys))}")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise _fail(where, f"{field}.{unknown[0]}", "unknown key", ", ".join(sorted(keys)))
    for key in sorted(required):
        if key not in value:
            raise _fail(where, f"{field}.{key}", "required", _ALLOWED.get(key, "a value"))
    return value


_ALLOWED = {"approved_by": "a name on one line", "approved_at": "an ISO 8601 time with its zone, e.g. "
            "2026-11-20T10:00:00Z", "version": "the script's version number", "sha256": "64 hex digits",
            "workstation_serial": "the serial on the workstation's label", "boot_medium_sha256": "64 hex digits",
            "removable_media": "a list of serials", "name": "a name on one line", "role": "a role or function "
            "on one line", "time": "an ISO 8601 time with its zone", "direction": ", ".join(DIRECTIONS),
            "reason": "a reason on one line", "file": "the share file's path relative to the output directory",
            "action": ", ".join(CUSTODY_ACTIONS), "by": "a name on one line", "witness": "a name on one line"}


def _field(data: Mapping[str, Any], where: str, field: str, key: str) -> str:
    value = data.get(key)
    if key in ("approved_at", "time"):
        when = utc_time(value)
        if when is None:
            raise _fail(where, f"{field}.{key}", f"{value!r} is not a time with its zone", _ALLOWED[key])
        return iso(when)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not _text(value):
        raise _fail(where, f"{field}.{key}", f"{value!r} is not usable", _ALLOWED.get(key, "text on one line"))
    return str(value).strip()


def _sha256(value: Any, where: str, field: str) -> str:
    text = str(value or "").strip().lower().replace(":", "")
    if not _HEX64.fullmatch(text):
        raise _fail(where, field, f"{value!r} is not a SHA-256", "64 hex digits (colons allowed)")
    return text


def parse_script_approval(value: Any, where: str) -> dict[str, Any]:
    """``script_approval: {approved_by, role, version, sha256, approved_at}``: who approved which version
    of the ceremony script (identified by its SHA-256) and when. Checked against the script at the start."""
    data = _mapping(value, where, "script_approval", {"approved_by", "role", "version", "sha256", "approved_at"},
                    {"approved_by", "version", "sha256", "approved_at"})
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _fail(where, "script_approval.version", f"{version!r} is not a version number", _ALLOWED["version"])
    approval = {"approved_by": _field(data, where, "script_approval", "approved_by"), "version": version,
                "sha256": _sha256(data.get("sha256"), where, "script_approval.sha256"),
                "approved_at": _field(data, where, "script_approval", "approved_at"), "source": "answers file"}
    if "role" in data:
        approval["role"] = _field(data, where, "script_approval", "role")
    return approval


def check_approval(approval: Mapping[str, Any], script_name: str, version: int, sha256: str, where: str) -> None:
    """The approval must be of this very script: same version, same SHA-256 (refused before anything starts)."""
    if approval.get("version") != version:
        raise _fail(where, "script_approval.version", f"{approval.get('version')} was approved, the ceremony "
                    f"runs {script_name} version {version}", f"{version}, once that version is approved")
    if approval.get("sha256") != sha256:
        raise _fail(where, "script_approval.sha256", f"the approved SHA-256 is not that of {script_name} version "
                    f"{version} ({sha256}): the script changed since it was approved", sha256)


def parse_equipment(value: Any, where: str) -> dict[str, Any]:
    """``equipment: {workstation_serial, boot_medium_sha256, removable_media: [serials]}``."""
    data = _mapping(value, where, "equipment", {"workstation_serial", "boot_medium_sha256", "removable_media"},
                    {"workstation_serial", "boot_medium_sha256"})
    media = data.get("removable_media") or []
    if not isinstance(media, list):
        raise _fail(where, "equipment.removable_media", "not a list", _ALLOWED["removable_media"])
    serials = []
    for i, serial in enumerate(media):
        if isinstance(serial, int) and not isinstance(serial, bool):
            serial = str(serial)
        if not _text(serial):
            raise _fail(where, f"equipment.removable_media[{i}]", f"{serial!r} is not a serial", "text on one line")
        serials.append(str(serial).strip())
    return {"workstation_serial": _field(data, where, "equipment", "workstation_serial"),
            "boot_medium_sha256": _sha256(data.get("boot_medium_sha256"), where, "equipment.boot_medium_sha256"),
            "removable_media": serials, "source": "answers file"}


def parse_facility_access(value: Any, where: str) -> list[dict[str, Any]]:
    """``facility_access: [{name, role, time, direction: enter|leave, reason}]``: people entering or leaving
    the room during the ceremony (visitors, a technician, a participant stepping out)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(where, "facility_access", "not a list", "a list of {name, role, time, direction, reason}")
    entries = []
    for i, item in enumerate(value):
        field = f"facility_access[{i}]"
        data = _mapping(item, where, field, {"name", "role", "time", "direction", "reason"},
                        {"name", "role", "time", "direction", "reason"})
        if data.get("direction") not in DIRECTIONS:
            raise _fail(where, f"{field}.direction", f"{data.get('direction')!r} is not a direction",
                        _ALLOWED["direction"])
        entries.append({"name": _field(data, where, field, "name"), "role": _field(data, where, field, "role"),
                        "time": _field(data, where, field, "time"), "direction": data["direction"],
                        "reason": _field(data, where, field, "reason"), "source": "answers file"})
    return entries


def parse_machine_logs(value: Any, where: str) -> list[str]:
    """``machine_logs: [absolute paths]``: the host's log files hashed at the close."""
    if value is None:
        return list(DEFAULT_LOG_FILES)
    if not isinstance(value, list):
        raise _fail(where, "machine_logs", "not a list", "a list of absolute paths of log files")
    paths = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.startswith("/") or "\n" in item:
            raise _fail(where, f"machine_logs[{i}]", f"{item!r} is not an absolute path", "an absolute path")
        paths.append(item)
    return paths


def parse_share_custody(value: Any, where: str) -> list[dict[str, Any]]:
    """``share_custody: [{file, action: shredded|handed-over, by, witness, time}]``: what became of a share
    file after an earlier backup ceremony (typically: shredded after its page was bagged)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(where, "share_custody", "not a list", "a list of {file, action, by, witness, time}")
    entries = []
    for i, item in enumerate(value):
        field = f"share_custody[{i}]"
        data = _mapping(item, where, field, {"file", "action", "by", "witness", "time"},
                        {"file", "action", "by", "witness", "time"})
        if data.get("action") not in CUSTODY_ACTIONS:
            raise _fail(where, f"{field}.action", f"{data.get('action')!r} is not an action", _ALLOWED["action"])
        entry = {key: _field(data, where, field, key) for key in ("file", "by", "witness", "time")}
        if entry["by"] == entry["witness"]:
            raise _fail(where, f"{field}.witness", "the person who shredded cannot be the witness",
                        "another person than 'by'")
        entries.append({**entry, "action": data["action"], "source": "answers file"})
    return entries


# -- generated for a rehearsal ------------------------------------------------------------------------------
def rehearsal_script_approval(version: int, sha256: str, approver: str, started: dt.datetime) -> dict[str, Any]:
    """Approved a minute before the rehearsal's ceremony began (an approval is always before: the verifier
    refuses one dated after the start, and "now" at the sign-in is already after it)."""
    return {"approved_by": approver, "role": "administrator", "version": version, "sha256": sha256,
            "approved_at": iso(started - dt.timedelta(minutes=1)), "source": "rehearsal (generated)"}


def rehearsal_equipment() -> dict[str, Any]:
    tag = secrets.token_hex(3).upper()
    return {"workstation_serial": f"REHEARSAL-WS-{tag}",
            "boot_medium_sha256": hashlib.sha256(b"rehearsal boot medium " + tag.encode()).hexdigest(),
            "removable_media": [f"REHEARSAL-USB-{tag}-1"], "source": "rehearsal (generated)"}


def rehearsal_facility_access(start: dt.datetime) -> list[dict[str, Any]]:
    visitor = "Oumar Sangaré (rehearsal)"
    return [{"name": visitor, "role": "HSM technician", "time": iso(start), "direction": direction,
             "reason": reason, "source": "rehearsal (generated)"}
            for direction, reason in (("enter", "rehearsal: a technician checks the HSM's power supply"),
                                      ("leave", "rehearsal: the check is done"))]


# -- facts the machine gives ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _hash(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_facts(path: str | Path) -> dict[str, Any]:
    """Path, SHA-256 and size of the file at ``path`` (symbolic links followed, both names kept); a file
    that is not there is recorded with ``missing`` and why."""
    given = str(path)
    try:
        resolved = os.path.realpath(given)
        st = os.stat(resolved)
        facts: dict[str, Any] = {"path": given, "sha256": _hash(resolved, st.st_size, st.st_mtime_ns),
                                 "size": st.st_size}
    except OSError as exc:
        return {"path": given, "missing": exc.strerror or "cannot be read"}
    if resolved != given:
        facts["resolved"] = resolved
    return facts


#: Where Debian packages put files; a file elsewhere (a virtualenv, /opt) is not asked of dpkg.
_SYSTEM_PREFIXES = ("/usr/", "/lib", "/bin/", "/sbin/")


@functools.lru_cache(maxsize=16)
def _packages_of(paths: tuple[str, ...]) -> dict[str, tuple[str, str | None]]:
    """The Debian package that installed each of ``paths`` and its version: two ``dpkg-query`` calls in all
    (a ceremony records this at every start). Paths dpkg does not know are left out."""
    query = shutil.which("dpkg-query", path=child_process.DEFAULT_PATH)
    asked = {}
    for path in paths:
        if path.startswith(_SYSTEM_PREFIXES):
            asked[path] = path
            if path.startswith("/usr/"):
                asked[path[4:]] = path  # merged /usr: dpkg may know /lib/... for /usr/lib/...
    if query is None or not asked:
        return {}
    owners: dict[str, str] = {}
    try:
        found = child_process.run([query, "-S", *asked], capture_output=True, text=True, timeout=20)
        for line in found.stdout.splitlines():
            package, _, path = line.partition(": ")
            if path in asked and package and not package.startswith("diversion"):
                owners.setdefault(asked[path], package.split(",")[0].split(":")[0].strip())
        if not owners:
            return {}
        versions = child_process.run([query, "-W", "-f=${Package} ${Version}\\n", *sorted(set(owners.values()))],
                                     capture_output=True, text=True, timeout=20)
    except (OSError, ValueError, subprocess.SubprocessError):
        return {}
    version_of = dict(line.split(" ", 1) for line in versions.stdout.splitlines() if " " in line)
    return {path: (package, version_of.get(package)) for path, package in owners.items()}


def _component(what: str, path: str | None) -> dict[str, Any]:
    if path is None:
        return {"what": what, "missing": "not found on this host"}
    return {"what": what, **file_facts(path)}


def _module_file(name: str) -> str | None:
    """Where the compiled module ``name`` is loaded from (without importing it)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None else None


def software_evidence(hsm_modules: Iterable[str]) -> dict[str, Any]:
    """The software a ceremony's result depends on, as this host has it: the Python executable, the
    ``openssl`` program, each HSM client library (PKCS#11 module) the definition names, the compiled parts
    of cryptography and python-pkcs11 that do the work; each with its SHA-256 and size, and the Debian
    package and version where dpkg knows the file. Besides the suite's own sources hash (``sources``)."""
    items = [_component("python", sys.executable),
             _component("openssl", shutil.which("openssl", path=child_process.DEFAULT_PATH))]
    for module in sorted(set(hsm_modules)):
        items.append(_component("hsm-module", module))
    for name, what in (("cryptography.hazmat.bindings._rust", "cryptography-binding"),
                       ("pkcs11._pkcs11", "python-pkcs11-binding")):
        items.append(_component(what, _module_file(name)))
    names = tuple(sorted({str(item[k]) for item in items for k in ("path", "resolved") if k in item}))
    packages = _packages_of(names)
    for item in items:
        if "missing" not in item:
            found = packages.get(str(item.get("resolved"))) or packages.get(str(item["path"]))
            item["package"], item["version"] = found if found is not None else (None, None)
    return {"items": items, "dpkg": shutil.which("dpkg-query", path=child_process.DEFAULT_PATH) is not None,
            "cryptography_openssl": default_backend().openssl_version_text()}


def _journal(since: dt.datetime) -> dict[str, Any]:
    journalctl = shutil.which("journalctl", path=child_process.DEFAULT_PATH)
    entry: dict[str, Any] = {"source": "journal", "path": "journalctl --since " + iso(since)}
    if journalctl is None:
        return {**entry, "missing": "journalctl is not installed"}
    try:
        run = child_process.run([journalctl, "--since", f"@{int(since.timestamp())}", "--utc", "--no-pager", "-q",
                                 "-o", "short-iso-precise"], capture_output=True, timeout=30)
    except (OSError, ValueError) as exc:
        return {**entry, "missing": str(exc)}
    except Exception as exc:  # a journal too slow to read: recorded, the ceremony closes anyway
        return {**entry, "missing": f"{type(exc).__name__}"}
    if run.returncode != 0:
        return {**entry, "missing": (run.stderr or b"").decode("utf-8", "replace").strip()[:200]
                or f"journalctl exited {run.returncode}"}
    data = run.stdout or b""
    if not data.strip():
        return {**entry, "missing": "no journal lines since the ceremony began (no journal on this host)"}
    return {**entry, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
            "lines": data.count(b"\n")}


def machine_logs_evidence(files: Iterable[str], since: dt.datetime) -> dict[str, Any]:
    """The host's logs at the close of the ceremony: the journal's lines since the ceremony began, and each
    named log file (path, SHA-256, size). A log that is not there is recorded with ``missing``: the auditor
    then knows what cannot be compared, and the ceremony is not stopped for it."""
    logs = [_journal(since)]
    logs += [{"source": "file", **file_facts(path)} for path in files]
    return {"since": iso(since), "logs": logs}


def share_handover(custodian: str, index: int, bag: str, checksum: str, file: str) -> dict[str, Any]:
    """The custody record of one backup share at its handover: who holds which share, in which bag, and
    that its file is shredded once the page is bagged (docs/key-backup.md). The verifier then does not
    require the file: a shredded share file is the procedure followed, not a missing artifact."""
    return {"custodian": custodian, "index": index, "bag": bag, "checksum": checksum, "file": file,
            "action": "handed-over", "handed_to": custodian, "file_after_handover": "shredded"}


def handed_over_files(records: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Share files (paths relative to the output directory) that a custody record says were handed over
    or shredded, with that record's data."""
    found: dict[str, Mapping[str, Any]] = {}
    for r in records:
        if r.get("type") != "evidence" or r.get("name") != "share-custody":
            continue
        data = r.get("data") or {}
        if data.get("file") and (data.get("action") in CUSTODY_ACTIONS or data.get("bag")):
            found[str(data["file"])] = data
    return found


# -- the verifier's shape checks -------------------------------------------------------------------------------
def _need(data: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    return [f"{k}: missing or empty" for k in keys if not _text(data.get(k))]


def _time(data: Mapping[str, Any], key: str) -> list[str]:
    return [] if utc_time(data.get(key)) is not None else [f"{key}: {data.get(key)!r} is not a time with its zone"]


def _file_entry(entry: Any, label: str) -> list[str]:
    if not isinstance(entry, Mapping) or not _text(entry.get("path")):
        return [f"{label}: no path"]
    if "missing" in entry:
        return [] if _text(entry.get("missing")) else [f"{label}: missing without a reason"]
    problems = [] if _HEX64.fullmatch(str(entry.get("sha256"))) else [f"{label}: sha256 is not 64 hex digits"]
    size = entry.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        problems.append(f"{label}: size is not a number of bytes")
    return problems


def shape_problems(name: str, data: Any, header: Mapping[str, Any]) -> list[str]:
    """What is wrong with the shape of an evidence record of kind ``name`` (empty: nothing)."""
    if not isinstance(data, Mapping):
        return ["its data is not a mapping"]
    if name == "script-approval":
        script = header.get("script") or {}
        problems = _need(data, ["approved_by"]) + _time(data, "approved_at")
        if data.get("version") != script.get("version"):
            problems.append(f"version {data.get('version')!r} approved, the ceremony ran version "
                            f"{script.get('version')!r}")
        if data.get("sha256") != script.get("sha256"):
            problems.append("the approved SHA-256 is not the SHA-256 of the script the ceremony ran")
        approved, started = utc_time(data.get("approved_at")), utc_time(header.get("time"))
        if approved is not None and started is not None and approved > started:
            problems.append("approved after the ceremony began")
        return problems
    if name == "equipment":
        problems = _need(data, ["workstation_serial"])
        if not _HEX64.fullmatch(str(data.get("boot_medium_sha256"))):
            problems.append("boot_medium_sha256: not 64 hex digits")
        media = data.get("removable_media")
        if not isinstance(media, list) or not all(_text(m) for m in media):
            problems.append("removable_media: not a list of serials")
        return problems
    if name == "facility-access":
        problems = _need(data, ["name", "role", "reason"]) + _time(data, "time")
        if data.get("direction") not in DIRECTIONS:
            problems.append(f"direction: {data.get('direction')!r} (allowed: {', '.join(DIRECTIONS)})")
        return problems
    if name == "machine-logs":
        logs = data.get("logs")
        if not isinstance(logs, list) or not logs:
            return ["logs: not a list of logs"]
        problems = _time(data, "since")
        for i, entry in enumerate(logs):
            problems += _file_entry(entry, f"logs[{i}]")
        return problems
    if name in ("recorded-ceremony", "recording"):
        # the recording addendum (ceremony.ceremonies.addendum): the transcript recorded, then each video file
        keys = ("file", "sha256", "head") if name == "recorded-ceremony" else ("file", "sha256", "of", "of_sha256",
                                                                                "of_head")
        problems = _need(data, keys)
        for key in keys:
            if (key.endswith("sha256") or key.endswith("head")) and not _HEX64.fullmatch(str(data.get(key))):
                problems.append(f"{key}: not 64 hex digits")
        if name == "recording" and (not isinstance(data.get("size"), int) or isinstance(data.get("size"), bool)
                                    or data["size"] <= 0):
            problems.append("size: not a positive number of bytes")
        return problems
    if name == "share-custody":
        action = data.get("action")
        if action is None:  # a handover recorded before the action was named: custodian and bag say it
            return _need(data, ["custodian", "bag", "file"])
        if action not in CUSTODY_ACTIONS:
            return [f"action: {action!r} (allowed: {', '.join(CUSTODY_ACTIONS)})"]
        if action == "handed-over":
            return _need(data, ["custodian", "bag", "file", "handed_to"])
        problems = _need(data, ["file", "by", "witness"]) + _time(data, "time")
        if data.get("by") == data.get("witness"):
            problems.append("the person who shredded is also the witness")
        return problems
    return []


def software_problems(software: Any) -> list[str]:
    """The shape of ``header.environment.software``."""
    if not isinstance(software, Mapping) or not isinstance(software.get("items"), list):
        return ["environment.software: not a list of software items"]
    problems = []
    for i, item in enumerate(software["items"]):
        if not isinstance(item, Mapping) or not _text(item.get("what")):
            problems.append(f"environment.software.items[{i}]: does not say what it is")
            continue
        if "missing" in item:
            if not _text(item.get("missing")):
                problems.append(f"environment.software.items[{i}]: missing without a reason")
            continue
        problems += _file_entry(item, f"environment.software.items[{i}] ({item['what']})")
    whats = {str(item.get("what")) for item in software["items"] if isinstance(item, Mapping)}
    for needed in ("python", "openssl"):  # hsm-module: one per module the definition names (none: none)
        if needed not in whats:
            problems.append(f"environment.software: no {needed} item")
    return problems
