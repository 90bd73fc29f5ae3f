"""``invoke ceremony.script``: print a ceremony script on paper for the Internal Witness.

Thin: check the arguments, load the definition, let :mod:`ceremony.transcript.paper_script` write
``OUT/scripts/<name>.<lang>.pdf`` and ``.html`` (never over an existing file) and list them in
``OUT/manifest.json``, then show what was written with its SHA-256.
"""

from __future__ import annotations

from pathlib import Path

from invoke import Context, task

from ._cli import operator_errors

HELP = {
    "env": "environment (required): reads inventory/ENV/pki.yml",
    "ceremony": "the ceremony script to print (a name from ceremony/scripts, e.g. root-key-generation)",
    "lang": "fr, en or both (default: both)",
    "out": "output directory (default: out/ENV); the files go to OUT/scripts/",
    "rehearsal": "print a rehearsal copy (REHEARSAL banner; the output directory must be a rehearsal one)",
}


def _environments() -> str:
    return ", ".join(sorted(p.parent.name for p in Path("inventory").glob("*/pki.yml"))) or "none found"


@task(positional=[], help=HELP)
@operator_errors
def script(c: Context, env: str | None = None, ceremony: str | None = None, lang: str = "both",
           out: str | None = None, rehearsal: bool = False) -> None:
    """Print a ceremony script (PDF and HTML, French and/or English) for the witnesses to follow and sign."""
    from ceremony.common.display import make_console
    from ceremony.common.manifest import Manifest
    from ceremony.definition.model import load_definition
    from ceremony.transcript import scriptbook
    from ceremony.transcript.paper_script import PaperScriptError, check_lang, find_script, write_paper_scripts

    if not env:
        raise PaperScriptError(f"--env is required: the environment whose inventory/ENV/pki.yml the script is "
                               f"printed for (allowed: {_environments()})")
    if not ceremony:
        raise PaperScriptError(f"--ceremony is required (allowed: {', '.join(scriptbook.available())})")
    langs = check_lang(lang)
    find_script(ceremony)
    definition_path = Path("inventory") / env / "pki.yml"
    if not definition_path.is_file():
        raise PaperScriptError(f"--env {env!r}: there is no {definition_path} (allowed: {_environments()})")
    definition = load_definition(definition_path)
    out_dir = Path(out or f"out/{env}")
    manifest = Manifest(out_dir, rehearsal)
    written = write_paper_scripts(definition, ceremony, out_dir, langs, rehearsal=rehearsal, manifest=manifest)
    console = make_console()
    console.print(f"paper script {ceremony}{' (REHEARSAL)' if rehearsal else ''} for {definition.path} "
                  f"(sha256 {definition.sha256}):")
    for p in written:
        console.print(f"  {p.path}  sha256 {p.sha256}")
    console.print(f"listed in {manifest.path} (kind paper-script)")
