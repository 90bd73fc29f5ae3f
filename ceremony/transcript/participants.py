"""Who is in the room: sign-in, roles and the separation rules a ceremony must respect.

The rules (ETSI EN 319 411-1 GEN-6.5.1, WebTrust 4.1, BR 6.1.1.1) are checked twice: before a
ceremony starts (a violation stops it before any file or HSM object exists) and again by the
auditor's verifier on the signed-in records of the transcript. Both use :func:`check_separation`,
so they cannot disagree.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ceremony.common.errors import CeremonyError

ROLES: dict[str, dict[str, str]] = {
    "administrator": {"en": "Ceremony Administrator", "fr": "Administrateur de cérémonie"},
    "internal-witness": {"en": "Internal Witness", "fr": "Témoin interne"},
    "crypto-officer": {"en": "Crypto Officer", "fr": "Officier cryptographique"},
    "security-officer": {"en": "HSM Security Officer", "fr": "Responsable de sécurité du HSM"},
    "independent-witness": {"en": "Independent witness or auditor", "fr": "Témoin indépendant ou auditeur"},
    "custodian": {"en": "Key share custodian", "fr": "Dépositaire de part de clé"},
}


class ParticipantError(CeremonyError):
    """Sign-in refused: a missing role, an unchecked identity or a separation-of-duties violation."""

    exit_code = 12


@dataclass(frozen=True)
class Participant:
    name: str
    roles: tuple[str, ...]
    id_document: str
    id_checked_by: str
    signed_in_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "roles": list(self.roles), "id_document": self.id_document,
                "id_checked_by": self.id_checked_by, "signed_in_at": self.signed_in_at}

    def has(self, role: str) -> bool:
        return role in self.roles


def person_key(name: str) -> str:
    """Two spellings of one name (case, accents, spaces) are one person for the separation rules."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(text.casefold().split())


def parse_participants(data: Any, where: str) -> list[Participant]:
    """Participants from an answers/participants file (a list of mappings)."""
    if not isinstance(data, list) or not data:
        raise ParticipantError(f"{where}: participants: a list of people is required "
                               "(name, roles, id_document, id_checked_by)")
    people = []
    allowed = {"name", "roles", "id_document", "id_checked_by"}
    for i, p in enumerate(data):
        path = f"{where}: participants[{i}]"
        if not isinstance(p, dict):
            raise ParticipantError(f"{path}: a participant is a mapping with {', '.join(sorted(allowed))}")
        unknown = set(p) - allowed
        if unknown:
            raise ParticipantError(f"{path}.{sorted(unknown)[0]}: unknown key (allowed: {', '.join(sorted(allowed))})")
        for key in ("name", "id_document", "id_checked_by"):
            if not isinstance(p.get(key), str) or not p[key].strip():
                raise ParticipantError(f"{path}.{key}: required, a non-empty text")
        roles = p.get("roles")
        if isinstance(roles, str):
            roles = [roles]
        if not isinstance(roles, list) or not roles:
            raise ParticipantError(f"{path}.roles: at least one role (allowed: {', '.join(ROLES)})")
        for r in roles:
            if r not in ROLES:
                raise ParticipantError(f"{path}.roles: {r!r} is not a role (allowed: {', '.join(ROLES)})")
        people.append(Participant(p["name"].strip(), tuple(dict.fromkeys(roles)), p["id_document"].strip(),
                                  p["id_checked_by"].strip()))
    return people


@dataclass(frozen=True)
class Rules:
    """What the ceremony needs: from the script (roles, witness), the definition (quorums), the mode."""

    required_roles: frozenset[str]
    crypto_officer_quorum: int = 1
    custodian_quorum: int = 0
    independent_witness_required: bool = True
    notes: tuple[str, ...] = field(default=())
    security_officer_quorum: int = 1  # more than 1 only where the SO PIN is split (token initialisation)

    def as_dict(self) -> dict[str, Any]:
        rules = {"required_roles": sorted(self.required_roles), "crypto_officer_quorum": self.crypto_officer_quorum,
                 "custodian_quorum": self.custodian_quorum,
                 "independent_witness_required": self.independent_witness_required}
        if self.security_officer_quorum > 1:  # absent where it is 1: earlier transcripts' headers stay as they were
            rules["security_officer_quorum"] = self.security_officer_quorum
        return rules

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rules:
        return cls(frozenset(data["required_roles"]), int(data["crypto_officer_quorum"]),
                   int(data["custodian_quorum"]), bool(data["independent_witness_required"]),
                   security_officer_quorum=int(data.get("security_officer_quorum", 1)))


def rules_for(script: Any, definition: Any, rehearsal: bool) -> Rules:
    """The rules of one ceremony: ``script`` a :class:`~ceremony.transcript.scriptbook.Script`,
    ``definition`` loaded."""
    model = definition.model
    roles = set(script.roles())
    witness_required = (script.independent_witness == "required" and model.ceremony.require_independent_witness
                        and not rehearsal)
    if witness_required:
        roles.add("independent-witness")
    quorum = model.ceremony.crypto_officer_quorum if "crypto-officer" in roles else 0
    custodians = 0
    if script.custodians:
        thresholds = [ca.backup.threshold for ca in model.cas.values() if ca.backup.threshold]
        custodians = max(thresholds, default=1)
    # The Security Officers' quorum counts where their parts make the SO PIN: the token initialisation only.
    so_quorum = model.ceremony.security_officer_quorum if script.name == "token-initialisation" else 1
    return Rules(frozenset(roles), quorum, custodians, witness_required, security_officer_quorum=so_quorum)


def check_separation(people: Iterable[Participant], rules: Rules) -> None:
    """Raise :class:`ParticipantError` naming the first rule that does not hold."""
    people = list(people)
    keys: dict[str, Participant] = {}
    for p in people:
        k = person_key(p.name)
        if k in keys:
            raise ParticipantError(f"{p.name!r} signed in twice; one person signs in once, with all their roles")
        keys[k] = p
    for p in people:
        checker = person_key(p.id_checked_by)
        if checker == person_key(p.name):
            raise ParticipantError(f"{p.name!r}: an identity document is checked by someone else, not its holder")
        if checker not in keys:
            raise ParticipantError(f"{p.name!r}: identity checked by {p.id_checked_by!r}, who has not signed in")

    def holders(role: str) -> list[Participant]:
        return [p for p in people if p.has(role)]

    for role in sorted(rules.required_roles):
        if not holders(role):
            raise ParticipantError(f"nobody signed in as {ROLES[role]['en']} ({role}); this ceremony needs one")
    for p in people:
        if p.has("administrator") and p.has("internal-witness"):
            raise ParticipantError(f"{p.name!r} cannot be both the Ceremony Administrator and the Internal "
                                   "Witness: the witness checks the administrator")
        if p.has("internal-witness") and p.has("crypto-officer"):
            raise ParticipantError(f"{p.name!r} cannot be both the Internal Witness and a Crypto Officer: "
                                   "the witness observes the token activation")
        if p.has("independent-witness") and len(p.roles) > 1:
            raise ParticipantError(f"{p.name!r}: the independent witness or auditor holds no other role")
        if p.has("security-officer") and p.has("crypto-officer") and "security-officer" in rules.required_roles:
            raise ParticipantError(f"{p.name!r} cannot be both the HSM Security Officer and a Crypto Officer: "
                                   "dual control over the wrapping key")
    officers = holders("crypto-officer")
    if rules.crypto_officer_quorum > 1 and len(officers) < rules.crypto_officer_quorum:
        raise ParticipantError(f"the Crypto Officer quorum is {rules.crypto_officer_quorum} distinct people; "
                               f"{len(officers)} signed in: nobody may hold the quorum alone")
    security = holders("security-officer")
    if rules.security_officer_quorum > 1 and len(security) < rules.security_officer_quorum:
        raise ParticipantError(f"the HSM Security Officer quorum is {rules.security_officer_quorum} distinct people; "
                               f"{len(security)} signed in: nobody may hold the SO PIN alone")
    custodians = holders("custodian")
    if rules.custodian_quorum and len(custodians) < rules.custodian_quorum:
        raise ParticipantError(f"the backup threshold is {rules.custodian_quorum} custodians; "
                               f"{len(custodians)} signed in: nobody may hold the quorum alone")


def first_with(people: Iterable[Participant], role: str) -> Participant | None:
    return next((p for p in people if p.has(role)), None)


REHEARSAL_PEOPLE = {
    "administrator": "Moussa Konaté",
    "internal-witness": "Aïssata Sangaré",
    "security-officer": "Oumar Dembélé",
    "independent-witness": "Mariam Sidibé",
}


#: Further HSM Security Officers of a rehearsal whose SO PIN is split (``ceremony.security_officer_quorum``).
REHEARSAL_SECURITY_OFFICERS = ["Awa Keïta", "Boubacar Diallo", "Hawa Coulibaly"]


REHEARSAL_OFFICERS = ["Ibrahim Touré", "Kadiatou Cissé", "Seydou Maïga", "Fanta Camara"]


def rehearsal_participants(rules: Rules, definition: Any) -> list[Participant]:
    """Generated people for a rehearsal, every name marked ``(rehearsal)``; they satisfy ``rules``."""
    def mark(name: str) -> str:
        return f"{name} (rehearsal)"

    admin = mark(REHEARSAL_PEOPLE["administrator"])
    witness = mark(REHEARSAL_PEOPLE["internal-witness"])
    people = [Participant(admin, ("administrator",), "REHEARSAL-ID-ADMIN", witness),
              Participant(witness, ("internal-witness",), "REHEARSAL-ID-WITNESS", admin)]
    if "crypto-officer" in rules.required_roles:
        for i in range(max(1, rules.crypto_officer_quorum)):
            name = REHEARSAL_OFFICERS[i % len(REHEARSAL_OFFICERS)] + ("" if i < len(REHEARSAL_OFFICERS) else f" {i}")
            people.append(Participant(mark(name), ("crypto-officer",), f"REHEARSAL-ID-CO-{i + 1}", admin))
    if "security-officer" in rules.required_roles:
        people.append(Participant(mark(REHEARSAL_PEOPLE["security-officer"]), ("security-officer",),
                                  "REHEARSAL-ID-SO", admin))
        for i, name in enumerate(REHEARSAL_SECURITY_OFFICERS[:max(0, rules.security_officer_quorum - 1)], start=2):
            people.append(Participant(mark(name), ("security-officer",), f"REHEARSAL-ID-SO-{i}", admin))
    if "custodian" in rules.required_roles:
        names: list[str] = []
        for ca in definition.model.cas.values():
            names += [c for c in ca.backup.custodians if c not in names]
        while len(names) < max(rules.custodian_quorum, 1):
            names.append(f"Custodian {len(names) + 1}")
        for i, n in enumerate(names):
            people.append(Participant(mark(n), ("custodian",), f"REHEARSAL-ID-CUSTODIAN-{i + 1}", admin))
    people.append(Participant(mark(REHEARSAL_PEOPLE["independent-witness"]), ("independent-witness",),
                              "REHEARSAL-ID-AUDITOR", admin))
    return people
