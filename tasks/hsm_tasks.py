"""The HSM acceptance check: ``invoke hsm.check --env ENV [--ca NAME] [--json FILE] [--html FILE]``.

Thin: load the definition, run the engine (``ceremony.hsm.check``), print the table, write the reports. For a
buyer evaluating a vendor's module and for the operators before any ceremony (docs/hsm-check.md). Exit 0 when
every required probe passed, 3 (an HSM error) when one failed: the reports are written either way, since a
failed check is what a buyer most needs on paper.
"""

from __future__ import annotations

from invoke import Collection, Context, task

from ._cli import operator_errors
from .ceremony_tasks import HELP, _definition


@task(help={"env": HELP["env"], "definition": HELP["definition"],
            "ca": "check only this CA's token (default: every CA of the definition)",
            "json": "write the JSON report to this new file", "html": "write the HTML report to this new file",
            "pin_file": HELP["pin_file"] + " (with --ca)",
            "passive": "read the mechanism lists only, create no object (what every ceremony's pre-flight does)"})
@operator_errors
def check(c: Context, env: str | None = None, definition: str | None = None, ca: str | None = None,
          json: str | None = None, html: str | None = None, pin_file: str | None = None,
          passive: bool = False) -> None:
    """Probe each CA's HSM for what the ceremonies need (throwaway objects, always removed); table and reports."""
    import json as json_module
    from pathlib import Path

    from rich.table import Table
    from rich.text import Text

    from ceremony.common.display import make_console
    from ceremony.common.errors import HsmError
    from ceremony.common.fileio import check_absent, write_new
    from ceremony.definition.model import load_definition
    from ceremony.hsm.check import render_html, run_check, table_rows
    from ceremony.hsm.weak_keys import blocklist_state

    defn = load_definition(_definition(env, definition))
    outputs = [Path(p) for p in (json, html) if p]
    check_absent(*outputs)  # before any token is touched
    report = run_check(defn, ca, pin_file=pin_file, active=not passive)
    console = make_console()
    for token in report.tokens:
        t, m = token.description["token"], token.description["module"]
        console.rule(Text(f"HSM check of {token.ca!r}: {m['library_description']} {m['library_version']} — "
                          f"token {t['label']!r}, model {t['model']!r}, serial {t['serial']!r}, firmware "
                          f"{t['firmware_version']}", style="bold"))
        console.print(Text(f"module {m['path']} (SHA-256 {m['sha256']}), PKCS#11 {m['cryptoki_version']}; flags: "
                           f"{', '.join(t['flags'])}; clock: {t['clock']}"))
    table = Table(show_lines=False)
    for column in ("CA", "probe", "result", "detail", "needed by / if it fails"):
        table.add_column(column, overflow="fold")
    for row in table_rows(report):
        style = "red" if row[2] == "FAIL" else "green" if row[2] == "pass" else None
        table.add_row(*(Text(cell) for cell in row), style=style)
    console.print(table)
    console.print(Text(f"weak-key checks (every generated key, every CSR key): {blocklist_state()}"))
    if json:
        write_new(json, (json_module.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n").encode())
        print(f"JSON report: {json}")
    if html:
        write_new(html, render_html(report).encode())
        print(f"HTML report: {html}")
    if not report.ok:
        failed = [f"{t.ca}: {p.id}" for t in report.tokens for p in t.probes if p.failed]
        raise HsmError(f"HSM check failed: {', '.join(failed)}; see the table above for what each failure means")
    print("HSM check passed: every probe the definition's ceremonies need passed"
          + (" (passive: mechanism lists only)" if passive else ""))


ns = Collection()
ns.add_task(check)
