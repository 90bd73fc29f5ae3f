"""The rehearsal's CA stage: the root, then each subordinate's key, CSR and signing."""

from __future__ import annotations

from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
from ceremony.rehearsal.context import RehearsalContext


def ca_ceremonies(ctx: RehearsalContext) -> None:
    """Root key and certificate, then for each subordinate its key and CSR and the signing."""
    model = ctx.definition.model
    with ctx.recorder("root-key-generation") as rec:
        root_ceremony(ctx.definition, ctx.out, rec, rehearsal=True, interactive=False)
    for name, ca in model.cas.items():
        if ca.role != "subordinate":
            continue
        with ctx.recorder("subordinate-key-generation") as rec:
            subordinate_key_ceremony(ctx.definition, name, ctx.out, rec, rehearsal=True, interactive=False)
        with ctx.recorder("subordinate-signing") as rec:
            sign_subordinate_ceremony(ctx.definition, name, ctx.out / f"{name}.csr.pem", ctx.out, rec,
                                      rehearsal=True, issuer_cert_path=ctx.out / f"{ca.issuer}.crt.pem",
                                      interactive=False)
