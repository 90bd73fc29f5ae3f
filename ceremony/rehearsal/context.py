"""The rehearsal: every ceremony end to end on throwaway tokens (SoftHSM2, or NSS softokn), without prompts.

Everything lives under the output directory: the SoftHSM configuration and tokens
(``hsm/``), the PINs (``hsm/rehearsal-pins.env``, mode 0600: rehearsal tokens are throwaway),
the definition copy, certificates, CSRs, transcripts and documents. The manifest says
``"rehearsal": true`` and every certificate's CN carries ``(REHEARSAL)``, so nothing from a
rehearsal can be mistaken for production.

PINs: for each CA, the variables named by ``pin_env`` / ``so_pin_env`` in the definition are
used when set (documented in the README), otherwise random PINs are generated.

Later capabilities (CRLs, key backup, CP/CPS) add *stages*: functions ``rehearse(ctx)`` listed in
:data:`STAGES`, run in order after the CA ceremonies.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rich.console import Console

from ceremony.ceremonies.pin_change import new_parts_variable
from ceremony.common import child_process
from ceremony.common.display import make_console
from ceremony.common.errors import DefinitionError, OutputError
from ceremony.common.fileio import replace_atomically, write_new
from ceremony.common.manifest import MANIFEST_NAME, Manifest
from ceremony.definition.model import LoadedDefinition, load_definition
from ceremony.hsm import nss, pins, softhsm
from ceremony.transcript.attestation import NAMESPACE, attest, final_head
from ceremony.transcript.recorder import Recorder
from ceremony.transcript.recording import recorded

DEFAULT_DEFINITION = Path(__file__).resolve().parent.parent.parent / "inventory" / "testing" / "pki.yml"


PINS_FILE = "rehearsal-pins.env"

#: The rehearsal auditor: the independent witness who attests each sealed transcript with an SSH key made at
#: run time (in a temporary directory, removed with the process; never in the outputs, never committed).
AUDITOR = "Fatim Sissoko (rehearsal)"

#: The auditor's public key as an OpenSSH allowed-signers file, in the outputs (what an auditor brings).
ALLOWED_SIGNERS = "auditor/allowed_signers"


@dataclass
class RehearsalContext:
    """What a rehearsal stage gets: the output directory, the definition, the tokens and PINs."""

    out: Path
    definition: LoadedDefinition
    manifest: Manifest
    hsm_dir: Path
    softhsm_conf: Path
    pins: dict[str, str] = field(default_factory=dict)
    console: Console = field(default_factory=make_console)
    transcripts: list[Path] = field(default_factory=list)
    auditor_key: Path | None = None
    hsm: str = "softhsm"
    """The PKCS#11 implementation of the throwaway tokens: ``softhsm`` or ``nss``."""
    _auditor_dir: tempfile.TemporaryDirectory[str] | None = None

    def new_token(self, label: str) -> tuple[str, str]:
        """Initialise one more throwaway token; returns the names of its user and SO PIN variables."""
        stem = "CEREMONY_" + label.upper().replace("-", "_")
        user_env, so_env = stem + "_PIN", stem + "_SO_PIN"
        for env in (user_env, so_env):
            self.pins[env] = os.environ.get(env) or softhsm.random_pin()
            pins.hold(env, self.pins[env])
        softhsm.init_token(self.softhsm_conf, label, self.pins[user_env], self.pins[so_env])
        _write_pins(self)
        return user_env, so_env

    def hold_split_pin(self, user_env: str, so_env: str, officers: list[str]) -> None:
        """Parts of a split user PIN, one per officer (``<user_env>_PART_<n>`` when set, else random), and a whole
        SO PIN, handed to this process (``pins.hold_parts``/``pins.hold``) for a token the token initialisation
        ceremony makes; the pins file lists the parts as ``<user_env>_PART_<n>``, the variables an unattended run
        reads them from. Nobody is given the PIN they make."""
        entries = [(officer, os.environ.get(pins.part_variable(user_env, n)) or secrets.token_urlsafe(12))
                   for n, officer in enumerate(officers, start=1)]
        pins.hold_parts(user_env, entries)
        for n, (_, part) in enumerate(entries, start=1):
            self.pins[pins.part_variable(user_env, n)] = part
        self.pins[so_env] = os.environ.get(so_env) or softhsm.random_pin()
        pins.hold(so_env, self.pins[so_env])
        _write_pins(self)

    def hold_new_parts(self, user_env: str, officers: list[str]) -> list[tuple[str, str]]:
        """New parts of a split user PIN for its change (the split-PIN change ceremony), one per officer, random, held
        under ``<user_env>_NEW`` as the ceremony reads them; :meth:`adopt_parts` makes them the current ones once the
        token has them."""
        entries = [(officer, secrets.token_urlsafe(12)) for officer in officers]
        pins.hold_parts(new_parts_variable(user_env), entries)
        return entries

    def adopt_parts(self, user_env: str, entries: list[tuple[str, str]]) -> None:
        """After a PIN change: ``entries`` are the parts of the PIN held under ``user_env`` from now on (in this
        process, and as ``<user_env>_PART_<n>`` in the pins file)."""
        pins.hold_parts(user_env, entries)
        pins.release_parts(new_parts_variable(user_env))
        for n, (_, part) in enumerate(entries, start=1):
            self.pins[pins.part_variable(user_env, n)] = part
        _write_pins(self)

    @contextlib.contextmanager
    def recorder(self, script_name: str, definition: LoadedDefinition | None = None) -> Iterator[Recorder]:
        """The record of one ceremony: its transcript, listed in the manifest with its reports. ``definition``: the
        copy the ceremony runs with when the operator changed it for that ceremony (a later validity, a successor
        root, a destruction decision), which the transcript then names; default the rehearsal's own."""
        n = sum(1 for p in self.transcripts if p.name.rsplit("-", 1)[0] == script_name) + 1
        path = self.out / "transcripts" / f"{script_name}-{n}.jsonl"
        with recorded(script_name, definition or self.definition, self.out, rehearsal=True, console=self.console,
                      numbered=path, manifest=self.manifest) as rec:
            yield rec
        self.transcripts.append(path)
        if final_head(path) is not None:
            # Attested before the next ceremony begins, so that its ledger link names the attestation too.
            for written in attest(path, self.auditor(), AUDITOR, manifest=self.manifest):
                self.console.print(f"  attested by {AUDITOR}: {written.relative_to(self.out)}")

    def auditor(self) -> Path:
        """The rehearsal auditor's private key (made on first use) and, in the outputs, its allowed-signers file."""
        if self.auditor_key is not None:
            return self.auditor_key
        self._auditor_dir = tempfile.TemporaryDirectory(prefix="rehearsal-auditor-")
        key = Path(self._auditor_dir.name) / "id_ed25519"
        tool = shutil.which("ssh-keygen", path=child_process.DEFAULT_PATH)
        if tool is None:
            raise OutputError("ssh-keygen is not installed (openssh-client; scripts/bootstrap.sh installs it): the "
                              "rehearsal's auditor attests every transcript with an SSH key")
        made = child_process.run([tool, "-q", "-t", "ed25519", "-N", "", "-C", AUDITOR, "-f", str(key)],
                                 capture_output=True, text=True, timeout=60)
        if made.returncode != 0:
            raise OutputError(f"ssh-keygen could not make the rehearsal auditor's key: {made.stderr.strip()}")
        public = key.with_name(key.name + ".pub").read_text(encoding="utf-8").split()
        line = f'"{AUDITOR}" namespaces="{NAMESPACE}" {public[0]} {public[1]}\n'
        signers = write_new(self.out / ALLOWED_SIGNERS, line.encode("utf-8"))
        self.manifest.add("auditor-allowed-signers", signers, "ssh-allowed-signers", signer=AUDITOR)
        self.auditor_key = key
        return key


def _write_pins(ctx: RehearsalContext) -> None:
    body = "".join(f"{k}={v}\n" for k, v in sorted(ctx.pins.items())).encode()
    path = ctx.hsm_dir / PINS_FILE
    replace_atomically(path, body, mode=0o600)
    ctx.manifest.add("rehearsal-pins", path, "env")


IMPLEMENTATIONS = ("softhsm", "nss")


def prepare(out: str | Path, definition: str | Path = DEFAULT_DEFINITION, hsm: str = "softhsm") -> RehearsalContext:
    """Create the output directory, fresh tokens and PINs; nothing outside ``out`` is touched.

    ``hsm`` is the PKCS#11 implementation of the throwaway tokens: ``softhsm`` (SoftHSM2) or ``nss`` (NSS softokn,
    one database per token under ``hsm/nss/``; the definition copy then names softokn's module and configuration
    string, and a CA's ``backup.mode: wrapped`` becomes ``none``, said on screen: softokn cannot protect a key for a
    wrapped backup, :data:`ceremony.hsm.nss.NO_WRAPPED_BACKUP`).
    """
    if hsm not in IMPLEMENTATIONS:
        raise DefinitionError("--hsm", "", f"{hsm!r} is not an implementation the rehearsal knows",
                              " or ".join(IMPLEMENTATIONS))
    out_dir = Path(out).resolve()
    if (out_dir / MANIFEST_NAME).exists() or (out_dir.exists() and any(out_dir.iterdir())):
        raise OutputError(f"{out_dir}: holds the outputs of an earlier run; rehearsal outputs are never "
                          "overwritten: remove the directory or pass --out with a new one")
    source = load_definition(definition)  # validate before creating anything
    if hsm == "nss":
        nss.nss_module()  # installed, before anything is created
    hsm_dir = out_dir / "hsm"
    conf = softhsm.write_config(hsm_dir)
    os.environ["SOFTHSM2_CONF"] = str(conf)
    console = make_console()
    pin_of: dict[str, str] = {}
    for ca in source.model.cas.values():
        if ca.hsm.token.label is None:
            raise OutputError("a rehearsal creates its tokens by label; give every CA a token label")
        for env in (ca.hsm.pin_env, ca.hsm.so_pin_env):
            if env:
                pin_of[env] = os.environ.get(env) or softhsm.random_pin()
                pins.hold(env, pin_of[env])
    tokens = nss.NssTokens(hsm_dir / "nss") if hsm == "nss" else None
    if tokens is None:
        write_new(out_dir / "pki.yml", source.path.read_bytes())
    else:
        data = yaml.safe_load(source.path.read_text(encoding="utf-8"))
        for ca in source.model.cas.values():
            tokens.add(str(ca.hsm.token.label), pin_of.get(ca.hsm.pin_env or "") or softhsm.random_pin())
        for name, ca_data in data["cas"].items():
            ca_data["hsm"]["module"] = tokens.module
            ca_data["hsm"]["module_config"] = tokens.config()
            if (ca_data.get("backup") or {}).get("mode") == "wrapped":
                ca_data["backup"] = {"mode": "none"}
                console.print(f"cas.{name}.backup.mode: wrapped becomes none on NSS softokn: {nss.NO_WRAPPED_BACKUP}",
                              markup=False, emoji=False, style="yellow")
        write_new(out_dir / "pki.yml", yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode("utf-8"))
    defn = load_definition(out_dir / "pki.yml")
    manifest = Manifest(out_dir, rehearsal=True)
    manifest.add("pki-definition", out_dir / "pki.yml", "yaml")
    if tokens is None:
        manifest.add("hsm-config", conf, "softhsm2-conf")
    else:
        manifest.add("hsm-config", write_new(hsm_dir / "nss-module-config.txt", (tokens.config() + "\n").encode()),
                     "nss-module-config")
    ctx = RehearsalContext(out=out_dir, definition=defn, manifest=manifest, hsm_dir=hsm_dir, softhsm_conf=conf,
                           console=console, hsm=hsm)
    ctx.pins.update(pin_of)
    if tokens is not None:
        _write_pins(ctx)
        return ctx
    for ca in defn.model.cas.values():
        if ca.role == "subordinate":
            continue  # initialised at its token initialisation ceremony (ceremony/rehearsal/ca.py)
        user_env = ca.hsm.pin_env or ""
        so_env = ca.hsm.so_pin_env or ""
        softhsm.init_token(conf, str(ca.hsm.token.label), ctx.pins.get(user_env) or softhsm.random_pin(),
                           ctx.pins.get(so_env) or softhsm.random_pin(), module=ca.hsm.module)
    _write_pins(ctx)
    return ctx
