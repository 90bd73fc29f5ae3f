"""Rehearsal stage: back up the root key under its custodians, restore it onto a second token, prove it signs.

Runs after the CA ceremonies (it needs the root certificate). Outputs go to ``OUT/backup/``: the
backup file (manifest kind ``key-backup``), one 0600 share page per custodian (kind
``key-backup-share``) and the restore report (kind ``key-restore-report``). Bag serials are
generated (``REHEARSAL-…``). The restore uses exactly the quorum, the first M custodians'
shares, onto a fresh throwaway token ``<root token label>-restore``.
"""

from __future__ import annotations

from ceremony.ceremonies.backup import backup_ceremony
from ceremony.ceremonies.restore import restore_ceremony
from ceremony.definition.model import Hsm, TokenRef
from ceremony.hsm.nss import NO_WRAPPED_BACKUP, SOFTOKN_WRAP_PAD
from ceremony.rehearsal.context import RehearsalContext


def rehearse(ctx: RehearsalContext) -> None:
    model = ctx.definition.model
    name = model.root_name
    ca = model.cas[name]
    if ctx.hsm == "nss":
        # The definition copy has backup.mode none on softokn (context.prepare): what a backup would meet is said.
        ctx.console.print(f"key backup and restore are not rehearsed on NSS softokn: {NO_WRAPPED_BACKUP}; and its "
                          f"CKM_AES_KEY_WRAP_PAD is {SOFTOKN_WRAP_PAD}, so a backup made elsewhere (RFC 5649) is "
                          "refused by a restore onto it", markup=False, emoji=False, style="yellow")
        return
    if ca.backup.mode != "wrapped":
        ctx.console.print(f"cas.{name}.backup.mode is {ca.backup.mode!r}: no key backup to rehearse", style="yellow")
        return
    with ctx.recorder("key-backup") as rec:
        backup = backup_ceremony(ctx.definition, name, ctx.out, rec, rehearsal=True, interactive=False)
    label = f"{ca.hsm.token.label or name}-restore"[:32]
    user_env, so_env = ctx.new_token(label)
    target = Hsm(module=ca.hsm.module, token=TokenRef(label=label), key_label=ca.hsm.key_label,
                 pin_env=user_env, so_pin_env=so_env)
    threshold = ca.backup.threshold or 2
    quorum = [backup.share_files[c] for c in ca.backup.custodians[:threshold]]
    with ctx.recorder("key-restore") as rec:
        restore_ceremony(ctx.definition, name, backup.backup_file, quorum, ctx.out, rec, rehearsal=True,
                         target=target, interactive=False)
    ctx.console.print(f"key backup {backup.backup_id} of {name!r} restored onto token {label!r} with "
                      f"{threshold} of {len(ca.backup.custodians)} shares; the restored key signs")
