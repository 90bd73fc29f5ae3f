"""The rehearsal's CA stage: the root, then each subordinate's token, key, CSR and signing.

On SoftHSM each subordinate's token starts blank and is initialised at its token initialisation ceremony, as an
operator does before the CA's key ceremony (README): its user PIN is one PIN from the CA's variable (an online CA's
jobs open its token unattended, docs/lifecycle.md), and its key ceremony takes the sealing key the token was born
with. The root's token is made directly, with the whole PIN the operator may give (``CEREMONY_ROOT_PIN``), which the
root CRL batches and the key backup read; NSS softokn has no token initialisation for a new token."""

from __future__ import annotations

from ceremony.ceremonies.root_key import root_ceremony
from ceremony.ceremonies.sign_subordinate import sign_subordinate_ceremony
from ceremony.ceremonies.subordinate_key import subordinate_key_ceremony
from ceremony.ceremonies.token_init import token_init_ceremony
from ceremony.rehearsal.context import RehearsalContext


def ca_ceremonies(ctx: RehearsalContext) -> None:
    """Root key and certificate, then for each subordinate its token (SoftHSM), its key and CSR, and the signing."""
    model = ctx.definition.model
    with ctx.recorder("root-key-generation") as rec:
        root_ceremony(ctx.definition, ctx.out, rec, rehearsal=True, interactive=False)
    for name, ca in model.cas.items():
        if ca.role != "subordinate":
            continue
        if ctx.hsm == "softhsm":
            with ctx.recorder("token-initialisation") as rec:
                token_init_ceremony(ctx.definition, name, ctx.out, rec, rehearsal=True, interactive=False)
        with ctx.recorder("subordinate-key-generation") as rec:
            subordinate_key_ceremony(ctx.definition, name, ctx.out, rec, rehearsal=True, interactive=False)
        with ctx.recorder("subordinate-signing") as rec:
            sign_subordinate_ceremony(ctx.definition, name, ctx.out / f"{name}.csr.pem", ctx.out, rec,
                                      rehearsal=True, issuer_cert_path=ctx.out / f"{ca.issuer}.crt.pem",
                                      interactive=False)
