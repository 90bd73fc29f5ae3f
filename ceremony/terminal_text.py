"""What the terminal says to the people in the room, in French or in English.

Ceremonies in Mali are held in French; an auditor from abroad may follow in English. The terminal's
language is chosen per ceremony (``--lang``, default ``ceremony.language`` in the definition). Only
what is *shown* changes: the transcript records stay in one language (English) with stable step ids,
so the seal and the verifier never depend on the language of the room. Acts and steps take their
titles from the ceremony script, which has both languages.
"""

from __future__ import annotations

from typing import Any

LANGS = ("fr", "en")

_TEXT: dict[str, dict[str, str]] = {
    "en": {
        "sign_in": "Sign-in.",
        "roles_needed": " Roles needed: {roles}",
        "quorum": "  Crypto Officer quorum: {n} distinct people",
        "ask_name": "Name (empty line when everyone has signed in)",
        "ask_roles": "Roles of {name} (comma separated: {roles}{keep})",
        "keep_hint": "; Enter keeps them, - removes this person",
        "not_a_role": "not a role: {roles}",
        "none_given": "(none given)",
        "ask_id": "Identity document of {name} (type and number)",
        "ask_checker": "Name of who checked {name}'s identity document",
        "removed": "  {name} removed from the sign-in",
        "refused": "Sign-in refused: ",
        "refused_help": "Correct the sign-in: each person's roles are asked again (Enter keeps them, - removes "
                        "the person), then anyone missing signs in.",
        "bag_open": "Serial of the tamper-evident bag opened: {bag}",
        "bag_reseal": "Serial of the new tamper-evident bag sealed: {bag}",
        "bag_line_open": "  bag {bag} opened: serial {serial}",
        "bag_line_reseal": "  bag {bag} sealed: serial {serial}",
        "witness_q": "did you witness step {n} ({title})?",
        "head_q": "chain head copied onto the paper script?",
        "exception": "Exception:",
        "continue_q": "{name} (Ceremony Administrator): continue the ceremony?",
        "decision_q": "Decision and reason, for the record",
        "stopped": "The ceremony stops:",
        "failure_note": "{name} (Ceremony Administrator): note for the record (Enter for none)",
        "interrupted": "Interrupted ceremony:",
        "interrupted_line": " {path} has no closing record.",
        "new_transcript_q": "Start a new transcript, recording the interruption as an exception?",
        "act": "Act {n} of {m}: {title}",
        "step": "▶ Step {k} of {n}: {title}",
        "step_who": " ({id}; {role}: {names})",
        "next": "  next: step {k} of {n}, {title}",
        "last": "  that was the last scripted step: the seal follows",
        "next_round": "  next: another round from step {k} of {n} ({title}), or {after}",
        "next_after": "step {k} of {n} ({title}) after the last round",
        "last_after": "the seal after the last round",
        "failed": "✗ step {id} failed",
        "wrote": "  wrote {path}",
        "head_title": "End of act {n}: chain head",
        "final_head": "Final chain head, signed in the HSM",
        "signed_in": "  signed in: {name} — {roles} (identity {doc}, checked by {checker})",
        "exception_line": "Exception {n}: {what} — {decision} ({who})",
        "transcript": "transcript: {path}",
        "status": "transcript {path}: {status}",
        "rehearsal": " — REHEARSAL",
        "sealed": "sealed", "failed_status": "failed", "interrupted_status": "interrupted", "unsealed": "unsealed",
    },
    "fr": {
        "sign_in": "Émargement.",
        "roles_needed": " Rôles requis : {roles}",
        "quorum": "  Quorum des officiers cryptographiques : {n} personnes distinctes",
        "ask_name": "Nom (ligne vide quand tout le monde a émargé)",
        "ask_roles": "Rôles de {name} (séparés par des virgules : {roles}{keep})",
        "keep_hint": " ; Entrée les garde, - retire cette personne",
        "not_a_role": "rôle inconnu : {roles}",
        "none_given": "(aucun)",
        "ask_id": "Pièce d'identité de {name} (type et numéro)",
        "ask_checker": "Nom de la personne qui a vérifié la pièce d'identité de {name}",
        "removed": "  {name} est retiré(e) de l'émargement",
        "refused": "Émargement refusé : ",
        "refused_help": "Corrigez l'émargement : les rôles de chaque personne sont redemandés (Entrée les garde, "
                        "- retire la personne), puis les personnes manquantes émargent.",
        "bag_open": "Numéro du sac de sécurité ouvert : {bag}",
        "bag_reseal": "Numéro du nouveau sac de sécurité scellé : {bag}",
        "bag_line_open": "  sac {bag} ouvert : numéro {serial}",
        "bag_line_reseal": "  sac {bag} scellé : numéro {serial}",
        "witness_q": "avez-vous été témoin de l'étape {n} ({title}) ?",
        "head_q": "tête de chaîne recopiée sur le script papier ?",
        "exception": "Exception :",
        "continue_q": "{name} (administrateur de cérémonie) : poursuivre la cérémonie ?",
        "decision_q": "Décision et motif, pour le procès-verbal",
        "stopped": "La cérémonie s'arrête :",
        "failure_note": "{name} (administrateur de cérémonie) : observation pour le procès-verbal (Entrée si aucune)",
        "interrupted": "Cérémonie interrompue :",
        "interrupted_line": " {path} n'a pas d'enregistrement de clôture.",
        "new_transcript_q": "Ouvrir un nouveau procès-verbal qui consigne l'interruption comme exception ?",
        "act": "Acte {n} sur {m} : {title}",
        "step": "▶ Étape {k} sur {n} : {title}",
        "step_who": " ({id} ; {role} : {names})",
        "next": "  ensuite : étape {k} sur {n}, {title}",
        "last": "  c'était la dernière étape du script : le scellement suit",
        "next_round": "  ensuite : un nouveau tour depuis l'étape {k} sur {n} ({title}), ou {after}",
        "next_after": "l'étape {k} sur {n} ({title}) après le dernier tour",
        "last_after": "le scellement après le dernier tour",
        "failed": "✗ échec de l'étape {id}",
        "wrote": "  écrit {path}",
        "head_title": "Fin de l'acte {n} : tête de chaîne",
        "final_head": "Tête de chaîne finale, signée dans le HSM",
        "signed_in": "  émargé : {name} — {roles} (pièce {doc}, vérifiée par {checker})",
        "exception_line": "Exception {n} : {what} — {decision} ({who})",
        "transcript": "procès-verbal : {path}",
        "status": "procès-verbal {path} : {status}",
        "rehearsal": " — RÉPÉTITION",
        "sealed": "scellé", "failed_status": "échec", "interrupted_status": "interrompu", "unsealed": "non scellé",
    },
}

YES = {"en": ("y", "yes"), "fr": ("o", "oui")}
NO = {"en": ("n", "no"), "fr": ("n", "non")}


def say(lang: str, key: str, **values: Any) -> str:
    """The text ``key`` in ``lang`` with ``values`` filled in (values are data: shown as they are)."""
    return _TEXT[lang if lang in _TEXT else "en"][key].format(**values)


def check_lang(lang: str) -> str:
    if lang not in LANGS:
        from .errors import DefinitionError

        raise DefinitionError("command line", "--lang", f"{lang!r} is not a language of the terminal",
                              ", ".join(LANGS))
    return lang
