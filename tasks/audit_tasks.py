"""Auditor tasks: verify a ceremony transcript offline, and render it as HTML and PDF (fr/en).

``audit.verify`` needs no HSM and no network, and a trust anchor: the root certificate (or its SHA-256
fingerprint) the auditor brings. Exit codes: 0 intact and sealed by a key anchored in that root, 1
invalid (tampered, or a rule did not hold; the first bad record is named), 2 incomplete (no closing
record: the ceremony was interrupted), 3 complete but not sealed (the ceremony failed or never sealed
its record), 4 not anchored (the seal verifies but its key has no certification path to the root among
the artifacts, e.g. a subordinate key ceremony before its certificate exists), 5 a rehearsal transcript
without --rehearsal, 6 the auditor's attestation does not verify (--allowed-signers given: missing, of
another transcript, or signed by a key not in that file), 64 no usable trust anchor (none given, or one that
is not a root certificate or its fingerprint) or an unusable --allowed-signers file: without an anchor
nothing passes, but a failing file keeps its own code.

``audit.verify-all`` exits 0 when nothing is found, else by the most serious category of finding: 1 a
transcript, the ledger, the manifest or a report; 6 an attestation; 7 the continuity of the bags (a bag
opened with another serial than the one it was resealed with); 64 no usable anchor.

``audit.verify-archive`` checks a CA's termination archive (docs/lifecycle.md, "CA termination"): 0 when every
member's SHA-256 matches its manifest, every final CRL (each partition, each key after a re-key) verifies under the
CA certificate of its key with nextUpdate 99991231235959Z and every transcript in it verifies against the anchor; 1
otherwise, the member named; 64 no usable anchor.

``audit.attest`` signs a transcript's final head with the auditor's own OpenSSH key (``ssh-keygen -Y sign``,
namespace ``ceremony-transcript``) and lists the message and the signature in the manifest.
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
                         "relative to the transcript)",
            "allowed_signers": "the auditor's OpenSSH allowed-signers file: the transcript must carry an "
                               "attestation signed by one of its keys (exit 6 otherwise)"})
@operator_errors
def verify(c: Context, transcript: str, trust: str | None = None, rehearsal: bool = False,
           artifacts: str | None = None, expect_head: str | None = None, allowed_signers: str | None = None) -> None:
    """Verify a ceremony transcript offline against a trust anchor: chain, seal, anchor, script, roles,
    exceptions, artifacts."""
    from ceremony.transcript.anchor import NO_ANCHOR, load_anchor
    from ceremony.transcript.attestation import check_allowed_signers
    from ceremony.transcript.audit import artifacts_base, report_lines
    from ceremony.transcript.audit import verify as verify_transcript

    path = Path(transcript)
    given = Path(artifacts) if artifacts else None
    # An anchor given but unusable stops here (exit 64); none given: the file is still examined, a failing
    # verdict keeps its own exit code, and a consistent file exits 64 (nothing passes without an anchor).
    anchor = load_anchor(trust, artifacts_base(path, given)) if trust else None
    signers = check_allowed_signers(allowed_signers) if allowed_signers else None
    result = verify_transcript(path, given, trust=anchor, rehearsal=rehearsal, expect_head=expect_head,
                               allowed_signers=signers)
    print("\n".join(report_lines(result)))
    if anchor is None:
        print(f"error: {NO_ANCHOR}", file=sys.stderr)
    if result.exit_code != 0:
        sys.exit(result.exit_code)


@task(name="verify-all",
      help={"directory": "the ceremonies' output directory (transcripts/, manifest.json, the artifacts)",
            "trust": "the trust anchor: the root certificate file or its SHA-256 fingerprint (required)",
            "rehearsal": "accept rehearsal transcripts (without it a rehearsal never passes)",
            "allowed_signers": "the auditor's OpenSSH allowed-signers file: every sealed transcript must carry an "
                               "attestation signed by one of its keys"})
@operator_errors
def verify_all(c: Context, directory: str, trust: str | None = None, rehearsal: bool = False,
               allowed_signers: str | None = None) -> None:
    """Verify every transcript of an output directory against a trust anchor, the ledger that links them,
    the bags' continuity, the attestations and the manifest; print one table."""
    from ceremony.transcript.anchor import load_anchor
    from ceremony.transcript.attestation import check_allowed_signers
    from ceremony.transcript.ledger import table_lines, verify_directory

    base = Path(directory)
    anchor = load_anchor(trust, base)
    signers = check_allowed_signers(allowed_signers) if allowed_signers else None
    result = verify_directory(base, anchor, rehearsal=rehearsal, allowed_signers=signers)
    print("\n".join(table_lines(result)))
    if result.exit_code != 0:
        sys.exit(result.exit_code)


@task(name="verify-archive",
      help={"archive": "a CA's termination archive (OUT/termination/<ca>.termination-archive.tar)",
            "trust": "the trust anchor: the root certificate file or its SHA-256 fingerprint (required)",
            "rehearsal": "accept rehearsal transcripts (without it a rehearsal never passes)"})
@operator_errors
def verify_archive(c: Context, archive: str, trust: str | None = None, rehearsal: bool = False) -> None:
    """Verify a termination archive offline: every member's SHA-256 against its manifest, every final CRL (each
    partition, each key) under the CA certificate of its key (nextUpdate 99991231235959Z), every transcript in it
    against the trust anchor."""
    from ceremony.transcript.archive import verify_archive as check_archive

    result = check_archive(Path(archive), trust, rehearsal=rehearsal)
    print("\n".join(result.lines()))
    if result.exit_code != 0:
        sys.exit(result.exit_code)


@task(help={"transcript": "the sealed transcript (.jsonl) to attest, after verifying it",
            "key": "your OpenSSH private key file (e.g. ~/.ssh/id_ed25519); ssh-keygen asks its passphrase",
            "signer": "your name as it appears in the attestation (quote it)"})
@operator_errors
def attest(c: Context, transcript: str, key: str | None = None, signer: str | None = None) -> None:
    """The auditor's attestation: sign the transcript's final head with your own key (ssh-keygen -Y sign);
    writes TRANSCRIPT.attestation and TRANSCRIPT.attestation.sig and lists them in the manifest."""
    from ceremony.transcript.attestation import AttestationError
    from ceremony.transcript.attestation import attest as sign_attestation

    if not key or not signer:
        raise AttestationError("audit.attest needs --key KEYFILE (your OpenSSH private key) and --signer NAME")
    for path in sign_attestation(Path(transcript), Path(key), signer):
        print(f"wrote {path}")


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
ns.add_task(verify_archive)
ns.add_task(attest)
ns.add_task(report)
