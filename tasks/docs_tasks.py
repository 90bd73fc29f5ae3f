"""CP/CPS tasks: build the documents from the definition and the certificates, and check them.

``invoke docs.build --env testing --out out/rehearsal`` after a rehearsal; ``--env production`` reads the
certificates from ``out/production`` and fails, naming the file, while a certificate is missing.
"""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, Context, task

from ._cli import operator_errors

HELP = {
    "env": "environment: reads inventory/ENV/pki.yml and the prose in inventory/ENV/policy (default: production)",
    "definition": "path of the PKI definition (overrides --env)",
    "out": "directory holding the certificates and manifest; documents go to OUT/docs "
           "(default: out/rehearsal for testing, out/ENV otherwise)",
    "policy": "directory of the prose fragments (default: policy/ beside the definition)",
}


def _inputs(env: str, definition: str | None, out: str | None, policy: str | None) -> tuple[object, Path,
                                                                                             Path | None]:
    from ceremony.definition.model import load_definition

    defn = load_definition(Path(definition) if definition else Path("inventory") / env / "pki.yml")
    out_dir = Path(out or ("out/rehearsal" if env == "testing" else f"out/{env}"))
    return defn, out_dir, Path(policy) if policy else None


@task(help=HELP)
@operator_errors
def build(c: Context, env: str = "production", definition: str | None = None, out: str | None = None,
          policy: str | None = None) -> None:
    """Build the CP and CPS (fr, en) as Markdown, HTML and PDF under OUT/docs and list them in the manifest."""
    from ceremony.policy.render import build_documents

    defn, out_dir, policy_dir = _inputs(env, definition, out, policy)
    result = build_documents(defn, out_dir, policy_dir)
    for path in result.written:
        print(f"written   {path}")
    for path in result.unchanged:
        print(f"unchanged {path}")
    for name, seconds in sorted(result.pdf_seconds.items()):
        print(f"pdf       {name}: {seconds:.1f} s")


@task(help=HELP)
@operator_errors
def check(c: Context, env: str = "production", definition: str | None = None, out: str | None = None,
          policy: str | None = None) -> None:
    """Check the CP/CPS: RFC 3647 outline, no empty section, no vague wording, no drift from the definition."""
    from ceremony.policy.check import check_documents

    defn, out_dir, policy_dir = _inputs(env, definition, out, policy)
    checked = check_documents(defn, out_dir, policy_dir)
    print(f"CP/CPS check passed: {len(checked)} files under {out_dir / 'docs'}")


ns = Collection("docs")
ns.add_task(build)
ns.add_task(check)
