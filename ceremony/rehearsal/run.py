"""The rehearsal from start to end: the CA ceremonies, then every later stage in order; a
stage that fails stops it, none is ever skipped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ceremony.common.display import text
from ceremony.common.manifest import MANIFEST_NAME
from ceremony.rehearsal import backup, crl, lifecycle, ocsp, policy
from ceremony.rehearsal.ca import ca_ceremonies
from ceremony.rehearsal.context import DEFAULT_DEFINITION, PINS_FILE, RehearsalContext, prepare

#: The stages after the CA ceremonies, in order: CRLs first (they need the CA certificates), OCSP (it needs the
#: certificates the CRL stage issued and revoked), then key
#: backup, then the life cycle (ceremony/rehearsal/lifecycle.py: it re-keys the subordinate, rolls the root over and
#: destroys the old key, so it comes after every stage that uses the first key), then the CP/CPS (which describe all
#: of it, every ceremony held included). Imported, not looked up by name: a stage that is
#: missing breaks the import, it is never skipped.
STAGES: list[tuple[str, Callable[[RehearsalContext], object]]] = [
    ("CRLs", crl.rehearse),
    ("OCSP", ocsp.rehearse),
    ("key backup and restore", backup.rehearse),
    ("life cycle: renewal, re-key, root rollover, key destruction", lifecycle.rehearse),
    ("CP/CPS", policy.rehearse),
]


def run_rehearsal(out: str | Path = "out/rehearsal", definition: str | Path = DEFAULT_DEFINITION,
                  hsm: str = "softhsm") -> RehearsalContext:
    ctx = prepare(out, definition, hsm)
    kind = "NSS softokn" if hsm == "nss" else "SoftHSM"
    ctx.console.rule(text(("REHEARSAL", "bold"), f" — throwaway {kind} tokens, nothing here is production"))
    ca_ceremonies(ctx)
    for title, stage in STAGES:
        ctx.console.rule(title)
        stage(ctx)
    ctx.console.rule("rehearsal complete")
    ctx.manifest.reload()  # the ceremonies extend the manifest on disk through their own handles
    ctx.console.print(f"outputs: {ctx.out}\nmanifest: {ctx.out / MANIFEST_NAME} "
                      f"({len(ctx.manifest.artifacts)} artifacts)\nPINs of the throwaway tokens: "
                      f"{ctx.hsm_dir / PINS_FILE}")
    return ctx
