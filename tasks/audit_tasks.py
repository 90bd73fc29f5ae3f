"""Auditor tasks: verify a ceremony transcript offline, and render it as HTML and PDF (fr/en).

``audit.verify`` needs no HSM and no network, and a trust anchor: the root certificate (or its SHA-256
fingerprint) the auditor brings. Exit codes: 0 intact and sealed by a key anchored in that root, 1
invalid (tampered, or a rule did not hold; the first bad record is named), 2 incomplete (no closing
record: the ceremony was interrupted), 3 complete but not sealed (the ceremony failed or never sealed
its record), 4 not anchored (the seal verifies but its key has no certification path to the root among
the artifacts, e.g. a subordinate key ceremony before its certificate exists), 5 a rehearsal transcript
without --rehearsal, 64 no usable trust anchor (none given, or one that is not a root certificate
or its fingerprint): without an anchor nothing passes, but a failing file keeps its own code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from invoke import Collection, Context, task

from ._cli import operator_errors


@task(help={"transcript": "the transcript (.jsonl) to verify",
            "trust": "the trust anchor: the root certificate file (PEM or DER) or its SHA-256 fingerprint, as "
                     "published in the CPS and read aloud at the root ceremony (required)",
            "rehearsal": "accept a rehearsal transcript (without it a rehearsal never passes)",
            "expect_head": "the final chain head the witnesses copied on the paper script: 64 hex digits or the 32 "
                           "PGP words (quoted); the transcript must end with exactly that head",
            "artifacts": "directory holding the artifacts (default: where the transcript's header says, "
                         "relative to the transcript)"})
@operator_errors
def verify(c: Context, transcript: str, trust: str | None = None, rehearsal: bool = False,
           artifacts: str | None = None, expect_head: str | None = None) -> None:
    """Verify a ceremony transcript offline against a trust anchor: chain, seal, anchor, script, roles,
    exceptions, artifacts."""
    from ceremony.transcript.anchor import NO_ANCHOR, load_anchor
    from ceremony.transcript.audit import artifacts_base, report_lines
    from ceremony.transcript.audit import verify as verify_transcript

    path = Path(transcript)
    given = Path(artifacts) if artifacts else None
    # An anchor given but unusable stops here (exit 64); none given: the file is still examined, a failing
    # verdict keeps its own exit code, and a consistent file exits 64 (nothing passes without an anchor).
    anchor = load_anchor(trust, artifacts_base(path, given)) if trust else None
    result = verify_transcript(path, given, trust=anchor, rehearsal=rehearsal, expect_head=expect_head)
    print("\n".join(report_lines(result)))
    if anchor is None:
        print(f"error: {NO_ANCHOR}", file=sys.stderr)
    if result.exit_code != 0:
        sys.exit(result.exit_code)


@task(name="verify-all",
      help={"directory": "the ceremonies' output directory (transcripts/, manifest.json, the artifacts)",
            "trust": "the trust anchor: the root certificate file or its SHA-256 fingerprint (required)",
            "rehearsal": "accept rehearsal transcripts (without it a rehearsal never passes)"})
@operator_errors
def verify_all(c: Context, directory: str, trust: str | None = None, rehearsal: bool = False) -> None:
    """Verify every transcript of an output directory against a trust anchor, the ledger that links them,
    and the manifest; print one table."""
    from ceremony.transcript.anchor import load_anchor
    from ceremony.transcript.ledger import table_lines, verify_directory

    base = Path(directory)
    result = verify_directory(base, load_anchor(trust, base), rehearsal=rehearsal)
    print("\n".join(table_lines(result)))
    if result.exit_code != 0:
        sys.exit(result.exit_code)


@task(help={"transcript": "the transcript (.jsonl) to render",
            "lang": "fr or en (default: both)",
            "out": "output directory (default: next to the transcript)",
            "artifacts": "directory holding the artifacts (as for audit.verify)",
            "pdf": "also write the PDF (default: yes; --no-pdf for HTML only)"})
@operator_errors
def report(c: Context, transcript: str, lang: str | None = None, out: str | None = None,
           artifacts: str | None = None, pdf: bool = True) -> None:
    """Render a transcript as HTML and PDF for the paper sign-off, in French and/or English."""
    from ceremony.transcript.report import write_reports

    langs = [lang] if lang else ["fr", "en"]
    for path in write_reports(Path(transcript), Path(out) if out else None, langs, pdf=pdf,
                              artifacts=Path(artifacts) if artifacts else None):
        print(f"wrote {path}")


ns = Collection()
ns.add_task(verify)
ns.add_task(verify_all)
ns.add_task(report)
