"""What the terminal says to the people in the room, in French or in English.

Ceremonies in Mali are held in French; an auditor from abroad may follow in English. The terminal's
language is chosen per ceremony (``--lang``, default ``ceremony.language`` in the definition). Only
what is *shown* changes: the transcript records stay in one language (English) with stable step ids,
so the seal and the verifier never depend on the language of the room; a ``say`` record keeps, word for
word, what the room was shown, in the room's language. Acts and steps take their titles from the
ceremony script, which has both languages.
"""

from __future__ import annotations

from typing import Any

from ceremony.common.errors import DefinitionError

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


# What the witness is shown at each step, the offline check and the summary at the end (ceremonies,
# root CRL batch, key backup and restore). Values (hashes, subjects, paths, dates) are data, filled in.
_WITNESS: dict[str, dict[str, str]] = {
    "en": {
        "yes": "yes", "NO": "NO", "none": "(none)",
        "not_enforced": " (rehearsal: not enforced)",
        "off_problem": "offline check: cannot list the network interfaces: {problem}",
        "off_ok": "offline check: no network interface other than loopback is up",
        "off_up": "offline check: interfaces up: {names}",
        "w_token": "  token {label} serial {serial} ({manufacturer} {model}, firmware {firmware})",
        "w_pin_prompt": "  PIN: typed at the prompt by the Crypto Officer",
        "w_pin_from": "  PIN: from {where}",
        "w_definition": "  definition: {path} (SHA-256 {sha}), CA {ca}",
        "w_out_dir": "  output directory: {path}",
        "w_files": "  files to be written: {files} (with a copy of the definition, manifest.json and the transcript "
                   "under transcripts/)",
        "w_no_limit": "no limit (no pathLenConstraint)",
        "w_plan_subject": "  subject (as in the certificate): {subject}",
        "w_issuer": "  issuer: {issuer}",
        "w_self_signed": "the same (self-signed)",
        "w_issuer_later": "{issuer}, at the signing ceremony",
        "w_validity": "  validity: {start} to {end}",
        "w_key_type": "  key type: {kind}",
        "w_path_length": "  path length: {value}",
        "w_lint_none": "  pkilint: no finding at WARNING or above{where}",
        "w_lint_some": "  pkilint: {n} finding(s) at WARNING or above{where}, each allowed by the definition:",
        "w_lint_allowed": "    {finding} — allowed because: {reason}",
        "w_no_reason": "(no reason given)",
        "w_lint_lower": "    ({n} finding(s) below WARNING, recorded in the evidence)",
        "w_stage_stand_in": "the profile, with a stand-in key",
        "w_stage_profile": "the profile",
        "w_stage_after": "after signing",
        "w_lint_busy": "pkilint: checking the to-be-signed certificate",
        "w_lint_after_busy": "pkilint: checking the signed certificate",
        "w_flag_local": "  generated on this token (CKA_LOCAL): {v}",
        "w_flag_sensitive": "  always sensitive (CKA_ALWAYS_SENSITIVE): {v}",
        "w_flag_never": "  never extractable (CKA_NEVER_EXTRACTABLE): {v}",
        "w_flag_wrap": "    extractable only wrapped under a trusted key (CKA_WRAP_WITH_TRUSTED: {v}), for the M-of-N "
                       "key backup the definition asks for",
        "w_label": "  label: {label}, CKA_ID: {id}",
        "w_new_key": "  public key of the new key pair (SPKI)",
        "w_signed": "  signed inside the HSM by the key {label} (SPKI SHA-256 {sha}), {algorithm}, {size}-byte "
                    "signature",
        "w_cert_serial": "  certificate serial (hex): {serial}",
        "w_subject": "  subject: {subject}",
        "w_serial": "  serial (hex): {serial}",
        "w_not_before": "  notBefore: {when}",
        "w_not_after": "  notAfter: {when}",
        "w_ca_flag": "  CA: {ca}, path length: {length}",
        "w_bc_absent": "  basicConstraints: ABSENT",
        "w_sig_verified": "  signature: verified with the issuer's public key",
        "w_tbs_same": "  TBS: identical to the one linted before signing",
        "w_csr_pinned": "  matches cas.{ca}.spki_sha256, pinned in the definition",
        "w_csr_pub": "  matches {path}, written at the subordinate key ceremony ({fingerprint})",
        "w_csr_unchecked": "  NOT CHECKED BY THE SOFTWARE: cas.{ca}.spki_sha256 does not pin the key and {path} is not "
                           "here. The witness must compare the hash above, line by line, with the hash read aloud and "
                           "written on the paper script at the subordinate key ceremony, and not confirm this step if "
                           "they differ",
        "w_root_cert": "Root certificate {subject}",
        "w_key_spki": "  key SPKI SHA-256: {sha}",
        "w_csr_subject": "  CSR subject: {subject}",
        "w_csr_pop": "  CSR signature: verified with the new public key (proof of possession)",
        "w_public_key": "Public key of {ca} (SPKI)",
        "w_issuer_cert": "  issuer certificate: {path} (SHA-256 {sha})",
        "w_csr": "  CSR: {path}",
        "w_csr_sig": "  signature: verified (proof of possession of the key)",
        "w_csr_subject_def": "  subject: {subject} (as the definition gives it)",
        "w_csr_key": "  CSR key of {ca} (SPKI)",
        "w_sub_cert": "Certificate of {ca} {subject}",
        "w_sealing_key": "Transcript-sealing key {label} (seals the ceremony transcripts; the CA key never does)",
        "w_sealing_cert": "Certificate of the transcript-sealing key of {ca}, issued by the root (digital "
                          "signature only, extended key usage {eku})",
        "w_sealing_fp": "Transcript-sealing certificate of {ca}",
        "w_addendum_of": "  recorded ceremony: {file} ({ceremony}), SHA-256 {sha}, final head {head}",
        "w_recording": "  recording {file}: {size} bytes, SHA-256 {sha}",
        # the root CRL batch
        "w_root_cert_file": "  root certificate: {path} (SHA-256 {sha})",
        "w_crl_issuer": "  issuer of the CRLs: {subject}",
        "w_root_key": "  root key (SPKI), which must sign them",
        "w_crl_plan": "  {n} CRL(s), numbers {first} to {last}, every {interval}, each valid {lifetime}{previous}",
        "w_crl_in_force": " (the CRL in force now is number {n})",
        "w_crl_first": " (the first root CRLs)",
        "w_crl_line": "    CRL {n}: thisUpdate {this_update}, nextUpdate {next_update}",
        "w_crl_entries": "  entries in each CRL: {n}",
        "w_revoke_now": "  revoke now: serial (hex) {serial}, {subject}, reason {reason}{invalidity}",
        "w_invalidity": ", invalidity date {when}",
        "w_root_crl": "root CRL {n}",
        "w_crl_after": "{what}, after signing",
        "w_crl_lint_busy": "pkilint: checking the to-be-signed {what}",
        "w_crl_after_busy": "pkilint: checking the signed {what}",
        "w_entry_one": "{n} entry", "w_entry_many": "{n} entries",
        "w_crl_signed": "  {what} signed by the root key: thisUpdate {this_update}, nextUpdate {next_update}, "
                        "{entries}",
        "w_crl_verified": "  {what}: signature verified with the root certificate's key, TBS identical to the one "
                          "linted",
        "w_crl_against": "  against CRL {n}: {follows}",
        "w_crl_title": "Root CRL {n} (thisUpdate {this_update}, nextUpdate {next_update})",
        # key backup and restore
        "w_certificate": "  certificate: {path} (SHA-256 fingerprint {sha}), subject {subject}",
        "w_backup_key": "  key of {ca} to back up (SPKI, from the certificate)",
        "w_backup_quorum": "  backup {id} of {ca}: quorum {threshold} of {count} custodians",
        "w_backup_share": "    share {i}: {name}, bag {bag}",
        "w_backup_key_is": "  key {label} (CKA_ID {id}, {algorithm}) is the certificate's key: SPKI SHA-256 {sha}",
        "w_stale": "  destroyed {n} wrapping key(s) left by an interrupted backup: {labels}",
        "w_wrap_key": "  AES-256 wrapping key {label} from the token's random generator; key check value {kcv}",
        "w_wrap_trust": "  wrapping key {label} on the token, set by the Security Officer: CKA_TRUSTED {trusted}, "
                        "wrap/unwrap only, sensitive {sensitive}, extractable {extractable}",
        "w_wrapped": "  key {label} wrapped with {mechanism} (RFC 5649): {size} bytes, SHA-256 {sha}",
        "w_proven": "  proven: unwrapped into a session object, its test signature verifies against the certificate",
        "w_wrap_destroyed": "  wrapping key {label} destroyed on the token: only a quorum of {threshold} custodians "
                            "can rebuild it",
        "w_shares": "  {scheme}: {count} shares, any {threshold} rebuild the wrapping key (checked: they recombine to "
                    "the key of check value {kcv})",
        "w_share_to": "  share {index} of {count} -> {name}, bag {bag}, checksum {checksum}",
        "w_backup_file": "  backup file {path} (sha256 {sha})",
        "w_restore_onto": "  restore onto: {token}, key label {label}",
        "w_backup_of": "  backup {id} of {ca}, made {created}: checksum verified",
        "w_restore_quorum": "  quorum: {threshold} of {count} custodians: {names}",
        "w_same_key": "  the same key as the certificate {path}",
        "w_share_presented": "  share {index} presented by {custodian} from bag {bag} (checksum {checksum})",
        "w_restored": "  key {label} restored: CKA_LOCAL {local}, CKA_SENSITIVE {sensitive}, SPKI SHA-256 {sha}",
        "w_same_key_id": "  the same key as the certificate {path}; CKA_ID {id}, {algorithm}",
        "w_trusted_only": "  extractable only under a trusted key (CKA_WRAP_WITH_TRUSTED): {v}; CKA_LOCAL is false "
                          "for every unwrapped key",
        "w_custodian_bag": "{name} (bag {bag})",
        "w_key_in_backup": "  key in the backup (SPKI)",
        "w_restored_key": "  restored key {label} (SPKI, read back from the token)",
        "w_test_sig": "  the test signature verifies against the original certificate",
        "w_test_message": "  test message: {message}",
        "w_restored_is": "  so the restored private key is the key of {path} (SPKI SHA-256 {sha})",
        # the summary at the end
        "s_title": "Summary",
        "s_files": "Files written by this run",
        "s_files_tail": " ({n}, SHA-256 as sha256sum prints it):",
        "s_fingerprints": "Fingerprints",
        "s_fingerprints_tail": " (SHA-256, OpenSSL form):",
        "s_certificate": "certificate {subject}",
        "s_public_key": "public key {name} (SPKI)",
        "s_transcript": "Transcript: ",
        "s_no_transcript": "none (the transcript module is not installed)",
        "s_next": "Next:",
        "s_intact": "INTACT: the transcript verifies",
        "s_sealed_unanchored": "SEALED: chain, records and seal verify; the auditor anchors it in the root "
                               "(invoke audit.verify TRANSCRIPT --trust ROOT)",
        "s_not_anchored": "SEALED, NOT YET ANCHORED: the seal verifies; its key chains to the root once its "
                          "certificate is issued (subordinate signing ceremony)",
        "s_incomplete": "INCOMPLETE: the ceremony did not finish; the transcript does not pass",
        "s_invalid": "INVALID",
        "s_invalid_at": "INVALID: first bad record {seq}",
        "s_not_sealed": "NOT SEALED: the ceremony ended {status}; the transcript does not pass",
        "s_not_verified": "NOT VERIFIED: the verifier could not run: {error}",
        "n_root_crls": "at the root, pre-sign the root CRLs",
        "n_sub_key": "on the HSM of {ca} (its own workstation), generate its key and CSR",
        "n_carry_csr": "carry {csr} and {pub} to the offline root, at the same paths, and run there",
        "n_carry_cert": "carry {cert} to the host of {ca}; at the root, pre-sign the root CRLs",
        "n_publish": "copy {path} to the publication server and run there (the timer then runs it on schedule)",
        "n_shares": "print each share page, seal it in its custodian's bag and delete the share files; the backup is "
                    "proven by a restore onto a spare token",
        "n_root_restored": "the restored root key signs at the next root ceremony",
        "n_addendum": "keep the recordings where the service keeps them; the auditor checks each with sha256sum "
                      "against the addendum, and the whole directory with",
        "n_restored": "the restored key of {ca} signs its CRL again",
    },
    "fr": {
        "yes": "oui", "NO": "NON", "none": "(aucun)",
        "not_enforced": " (répétition : non imposé)",
        "off_problem": "contrôle hors ligne : impossible de lister les interfaces réseau : {problem}",
        "off_ok": "contrôle hors ligne : aucune interface réseau autre que loopback n'est active",
        "off_up": "contrôle hors ligne : interfaces actives : {names}",
        "w_token": "  jeton {label} numéro de série {serial} ({manufacturer} {model}, micrologiciel {firmware})",
        "w_pin_prompt": "  PIN : saisi à l'invite par l'officier cryptographique",
        "w_pin_from": "  PIN : depuis {where}",
        "w_definition": "  définition : {path} (SHA-256 {sha}), AC {ca}",
        "w_out_dir": "  répertoire de sortie : {path}",
        "w_files": "  fichiers à écrire : {files} (avec une copie de la définition, manifest.json et le procès-verbal "
                   "sous transcripts/)",
        "w_no_limit": "sans limite (pas de pathLenConstraint)",
        "w_plan_subject": "  sujet (tel qu'il figurera dans le certificat) : {subject}",
        "w_issuer": "  émetteur : {issuer}",
        "w_self_signed": "le même (auto-signé)",
        "w_issuer_later": "{issuer}, à la cérémonie de signature",
        "w_validity": "  validité : du {start} au {end}",
        "w_key_type": "  type de clé : {kind}",
        "w_path_length": "  longueur de chemin : {value}",
        "w_lint_none": "  pkilint : aucun constat de niveau WARNING ou supérieur{where}",
        "w_lint_some": "  pkilint : {n} constat(s) de niveau WARNING ou supérieur{where}, chacun admis par la "
                       "définition :",
        "w_lint_allowed": "    {finding} — admis parce que : {reason}",
        "w_no_reason": "(aucun motif donné)",
        "w_lint_lower": "    ({n} constat(s) de niveau inférieur à WARNING, consignés dans les preuves)",
        "w_stage_stand_in": "le profil, avec une clé de substitution",
        "w_stage_profile": "le profil",
        "w_stage_after": "après la signature",
        "w_lint_busy": "pkilint : contrôle du certificat à signer",
        "w_lint_after_busy": "pkilint : contrôle du certificat signé",
        "w_flag_local": "  générée sur ce jeton (CKA_LOCAL) : {v}",
        "w_flag_sensitive": "  toujours sensible (CKA_ALWAYS_SENSITIVE) : {v}",
        "w_flag_never": "  jamais extractible (CKA_NEVER_EXTRACTABLE) : {v}",
        "w_flag_wrap": "    extractible seulement enveloppée sous une clé de confiance (CKA_WRAP_WITH_TRUSTED : {v}), "
                       "pour la sauvegarde M parmi N que demande la définition",
        "w_label": "  libellé : {label}, CKA_ID : {id}",
        "w_new_key": "  clé publique de la nouvelle paire de clés (SPKI)",
        "w_signed": "  signée dans le HSM par la clé {label} (SPKI SHA-256 {sha}), {algorithm}, signature de "
                    "{size} octets",
        "w_cert_serial": "  numéro de série du certificat (hex) : {serial}",
        "w_subject": "  sujet : {subject}",
        "w_serial": "  numéro de série (hex) : {serial}",
        "w_not_before": "  notBefore : {when}",
        "w_not_after": "  notAfter : {when}",
        "w_ca_flag": "  AC : {ca}, longueur de chemin : {length}",
        "w_bc_absent": "  basicConstraints : ABSENTE",
        "w_sig_verified": "  signature : vérifiée avec la clé publique de l'émetteur",
        "w_tbs_same": "  TBS : identique à celui contrôlé avant la signature",
        "w_csr_pinned": "  correspond à cas.{ca}.spki_sha256, épinglée dans la définition",
        "w_csr_pub": "  correspond à {path}, écrite à la cérémonie de clé de l'AC subordonnée ({fingerprint})",
        "w_csr_unchecked": "  NON VÉRIFIÉ PAR LE LOGICIEL : cas.{ca}.spki_sha256 n'épingle pas la clé et {path} n'est "
                           "pas ici. Le témoin doit comparer l'empreinte ci-dessus, ligne par ligne, avec celle lue à "
                           "voix haute et écrite sur le script papier à la cérémonie de clé de l'AC subordonnée, et ne "
                           "pas confirmer cette étape si elles diffèrent",
        "w_root_cert": "Certificat racine {subject}",
        "w_key_spki": "  SPKI SHA-256 de la clé : {sha}",
        "w_csr_subject": "  sujet de la CSR : {subject}",
        "w_csr_pop": "  signature de la CSR : vérifiée avec la nouvelle clé publique (preuve de possession)",
        "w_public_key": "Clé publique de {ca} (SPKI)",
        "w_issuer_cert": "  certificat de l'émetteur : {path} (SHA-256 {sha})",
        "w_csr": "  CSR : {path}",
        "w_csr_sig": "  signature : vérifiée (preuve de possession de la clé)",
        "w_csr_subject_def": "  sujet : {subject} (tel que le donne la définition)",
        "w_csr_key": "  clé de la CSR de {ca} (SPKI)",
        "w_sub_cert": "Certificat de {ca} {subject}",
        "w_sealing_key": "Clé de scellement des transcriptions {label} (elle scelle les transcriptions des "
                         "cérémonies ; la clé de l'AC ne le fait jamais)",
        "w_sealing_cert": "Certificat de la clé de scellement des transcriptions de {ca}, émis par la racine "
                          "(signature numérique seulement, usage étendu de clé {eku})",
        "w_sealing_fp": "Certificat de scellement des transcriptions de {ca}",
        "w_addendum_of": "  cérémonie enregistrée : {file} ({ceremony}), SHA-256 {sha}, tête finale {head}",
        "w_recording": "  enregistrement {file} : {size} octets, SHA-256 {sha}",
        "w_root_cert_file": "  certificat racine : {path} (SHA-256 {sha})",
        "w_crl_issuer": "  émetteur des CRL : {subject}",
        "w_root_key": "  clé racine (SPKI), qui doit les signer",
        "w_crl_plan": "  {n} CRL, numéros {first} à {last}, une tous les {interval}, chacune valide "
                      "{lifetime}{previous}",
        "w_crl_in_force": " (la CRL en vigueur porte le numéro {n})",
        "w_crl_first": " (les premières CRL racine)",
        "w_crl_line": "    CRL {n} : thisUpdate {this_update}, nextUpdate {next_update}",
        "w_crl_entries": "  entrées dans chaque CRL : {n}",
        "w_revoke_now": "  révoquer maintenant : numéro de série (hex) {serial}, {subject}, motif {reason}{invalidity}",
        "w_invalidity": ", date d'invalidité {when}",
        "w_root_crl": "CRL racine {n}",
        "w_crl_after": "{what}, après la signature",
        "w_crl_lint_busy": "pkilint : contrôle de la {what} à signer",
        "w_crl_after_busy": "pkilint : contrôle de la {what} signée",
        "w_entry_one": "{n} entrée", "w_entry_many": "{n} entrées",
        "w_crl_signed": "  {what} signée par la clé racine : thisUpdate {this_update}, nextUpdate {next_update}, "
                        "{entries}",
        "w_crl_verified": "  {what} : signature vérifiée avec la clé du certificat racine, TBS identique à celui "
                          "contrôlé",
        "w_crl_against": "  par rapport à la CRL {n} : {follows}",
        "w_crl_title": "CRL racine {n} (thisUpdate {this_update}, nextUpdate {next_update})",
        "w_certificate": "  certificat : {path} (empreinte SHA-256 {sha}), sujet {subject}",
        "w_backup_key": "  clé de {ca} à sauvegarder (SPKI, d'après le certificat)",
        "w_backup_quorum": "  sauvegarde {id} de {ca} : quorum de {threshold} dépositaires sur {count}",
        "w_backup_share": "    part {i} : {name}, sac {bag}",
        "w_backup_key_is": "  la clé {label} (CKA_ID {id}, {algorithm}) est celle du certificat : SPKI SHA-256 {sha}",
        "w_stale": "  {n} clé(s) d'enveloppement laissée(s) par une sauvegarde interrompue détruite(s) : {labels}",
        "w_wrap_key": "  clé d'enveloppement AES-256 {label} issue du générateur aléatoire du jeton ; valeur de "
                      "contrôle {kcv}",
        "w_wrap_trust": "  clé d'enveloppement {label} sur le jeton, définie par le responsable de la sécurité : "
                        "CKA_TRUSTED {trusted}, enveloppement/désenveloppement seulement, sensible {sensitive}, "
                        "extractible {extractable}",
        "w_wrapped": "  clé {label} enveloppée avec {mechanism} (RFC 5649) : {size} octets, SHA-256 {sha}",
        "w_proven": "  prouvé : désenveloppée dans un objet de session, sa signature de test se vérifie avec le "
                    "certificat",
        "w_wrap_destroyed": "  clé d'enveloppement {label} détruite sur le jeton : seul un quorum de {threshold} "
                            "dépositaires peut la reconstituer",
        "w_shares": "  {scheme} : {count} parts, {threshold} d'entre elles reconstituent la clé d'enveloppement "
                    "(vérifié : elles redonnent la clé de valeur de contrôle {kcv})",
        "w_share_to": "  part {index} sur {count} -> {name}, sac {bag}, somme de contrôle {checksum}",
        "w_backup_file": "  fichier de sauvegarde {path} (sha256 {sha})",
        "w_restore_onto": "  restauration sur : {token}, libellé de clé {label}",
        "w_backup_of": "  sauvegarde {id} de {ca}, faite le {created} : somme de contrôle vérifiée",
        "w_restore_quorum": "  quorum : {threshold} dépositaires sur {count} : {names}",
        "w_same_key": "  la même clé que celle du certificat {path}",
        "w_share_presented": "  part {index} présentée par {custodian}, sortie du sac {bag} (somme de contrôle "
                             "{checksum})",
        "w_restored": "  clé {label} restaurée : CKA_LOCAL {local}, CKA_SENSITIVE {sensitive}, SPKI SHA-256 {sha}",
        "w_same_key_id": "  la même clé que celle du certificat {path} ; CKA_ID {id}, {algorithm}",
        "w_trusted_only": "  extractible seulement sous une clé de confiance (CKA_WRAP_WITH_TRUSTED) : {v} ; "
                          "CKA_LOCAL est faux pour toute clé désenveloppée",
        "w_custodian_bag": "{name} (sac {bag})",
        "w_key_in_backup": "  clé contenue dans la sauvegarde (SPKI)",
        "w_restored_key": "  clé restaurée {label} (SPKI, relue sur le jeton)",
        "w_test_sig": "  la signature de test se vérifie avec le certificat d'origine",
        "w_test_message": "  message de test : {message}",
        "w_restored_is": "  la clé privée restaurée est donc celle de {path} (SPKI SHA-256 {sha})",
        "s_title": "Résumé",
        "s_files": "Fichiers écrits par cette cérémonie",
        "s_files_tail": " ({n}, SHA-256 tel que sha256sum l'affiche) :",
        "s_fingerprints": "Empreintes",
        "s_fingerprints_tail": " (SHA-256, forme OpenSSL) :",
        "s_certificate": "certificat {subject}",
        "s_public_key": "clé publique {name} (SPKI)",
        "s_transcript": "Procès-verbal : ",
        "s_no_transcript": "aucun (le module du procès-verbal n'est pas installé)",
        "s_next": "Ensuite :",
        "s_intact": "INTACT : le procès-verbal est vérifié",
        "s_sealed_unanchored": "SCELLÉ : chaîne, enregistrements et scellement vérifiés ; l'auditeur le rattache à "
                               "la racine (invoke audit.verify TRANSCRIPT --trust ROOT)",
        "s_not_anchored": "SCELLÉ, PAS ENCORE ANCRÉ : le scellement est vérifié ; sa clé sera rattachée à la racine "
                          "quand son certificat aura été émis (cérémonie de signature de la subordonnée)",
        "s_incomplete": "INCOMPLET : la cérémonie ne s'est pas terminée ; le procès-verbal n'est pas valable",
        "s_invalid": "INVALIDE",
        "s_invalid_at": "INVALIDE : premier enregistrement erroné {seq}",
        "s_not_sealed": "NON SCELLÉ : la cérémonie s'est terminée ({status}) ; le procès-verbal n'est pas valable",
        "s_not_verified": "NON VÉRIFIÉ : le vérificateur n'a pas pu s'exécuter : {error}",
        "n_root_crls": "à la racine, pré-signer les CRL racine",
        "n_sub_key": "sur le HSM de {ca} (son propre poste), générer sa clé et sa CSR",
        "n_carry_csr": "porter {csr} et {pub} à la racine hors ligne, aux mêmes chemins, et y lancer",
        "n_carry_cert": "porter {cert} sur l'hôte de {ca} ; à la racine, pré-signer les CRL racine",
        "n_publish": "copier {path} sur le serveur de publication et y lancer (le minuteur la relance ensuite selon "
                     "le calendrier)",
        "n_shares": "imprimer chaque page de part, la sceller dans le sac de son dépositaire et effacer les fichiers "
                    "de parts ; la sauvegarde est prouvée par une restauration sur un jeton de réserve",
        "n_root_restored": "la clé racine restaurée signe à la prochaine cérémonie racine",
        "n_addendum": "conserver les enregistrements là où le service les garde ; l'auditeur vérifie chacun avec "
                      "sha256sum par rapport à l'addendum, et tout le répertoire avec",
        "n_restored": "la clé restaurée de {ca} signe de nouveau sa CRL",
    },
}


for _lang in LANGS:
    _TEXT[_lang].update(_WITNESS[_lang])


YES = {"en": ("y", "yes"), "fr": ("o", "oui")}


NO = {"en": ("n", "no"), "fr": ("n", "non")}


def say(lang: str, key: str, **values: Any) -> str:
    """The text ``key`` in ``lang`` with ``values`` filled in (values are data: shown as they are)."""
    return _TEXT[lang if lang in _TEXT else "en"][key].format(**values)


def check_lang(lang: str) -> str:
    if lang not in LANGS:

        raise DefinitionError("command line", "--lang", f"{lang!r} is not a language of the terminal",
                              ", ".join(LANGS))
    return lang


# The life-cycle ceremonies (ceremony/ceremonies/renewal.py, sealing_certification.py, destroy_key.py) and their
# next steps; appended here so that the catalogue above stays as it was.
_LIFECYCLE: dict[str, dict[str, str]] = {
    "en": {
        "l_seal_anchors": "  transcripts sealed by this key, anchored once it is certified: {files}",
        "l_renew_from": "  current certificate: {path} (generation {generation}, valid until {end}); this ceremony "
                        "issues generation {generation_next} for the same key",
        "l_same_key": "  same key: {pub} (key ceremony) and {cert} hold {fingerprint}",
        "l_renewed_cert": "Certificate of {ca}, generation {generation}: {subject}",
        "l_destroy_key": "  key of {ca} to destroy: SPKI SHA-256 {fingerprint}, on {tokens}",
        "l_destroy_cert": "  certificate of this key: {path}, valid until {end}",
        "l_destroy_decision": "  decision recorded in the definition: {decision} ({date})",
        "l_destroy_backups": "  backup and share files of this key: {files}",
        "l_destroy_sealer": "  this transcript will be sealed by the transcript-sealing key of {ca} on {token}",
        "l_listing": "  {token}: {n} object(s) before the destruction (listed in the transcript)",
        "l_key_present": "  key pair {label} (CKA_ID {id}) present on {token}",
        "l_destroyed": "  {n} object(s) labelled {label} destroyed on {token}",
        "l_key_absent": "  {token}, fresh session: no object of the key {fingerprint} is left ({n} object(s) remain)",
        "l_shredded": "  share file shredded: {file}",
        "l_backup_inert": "  backup {file} ({id}): its shares are destroyed; the file stays as the archive's record",
        "l_no_backup": "  no wrapped backup of this key in the output directory",
        "n_renewed": "carry {cert} to the host of {ca} and install it beside the current certificate; the same key "
                     "keeps signing its CRLs",
        "n_sealing_certified": "the transcripts this key sealed are now anchored; check the whole directory with",
        "n_destroyed": "keep the destruction report and the transcript with the archive; check the whole directory "
                       "with",
        "n_pin_changed": "from now on the token opens with the new parts only; check the directory with",
        "n_terminated": "publish the final CRL (crl/) and install the final OCSP store; the auditor verifies the "
                        "archive with their own anchor before the key-destruction ceremony (ceremony.destroy-key):",
    },
    "fr": {
        "l_seal_anchors": "  procès-verbaux scellés par cette clé, ancrés une fois la clé certifiée : {files}",
        "l_renew_from": "  certificat en cours : {path} (génération {generation}, valide jusqu'au {end}) ; cette "
                        "cérémonie émet la génération {generation_next} pour la même clé",
        "l_same_key": "  même clé : {pub} (cérémonie des clés) et {cert} portent {fingerprint}",
        "l_renewed_cert": "Certificat de {ca}, génération {generation} : {subject}",
        "l_destroy_key": "  clé de {ca} à détruire : SPKI SHA-256 {fingerprint}, sur {tokens}",
        "l_destroy_cert": "  certificat de cette clé : {path}, valide jusqu'au {end}",
        "l_destroy_decision": "  décision consignée dans la définition : {decision} ({date})",
        "l_destroy_backups": "  fichiers de sauvegarde et de parts de cette clé : {files}",
        "l_destroy_sealer": "  ce procès-verbal sera scellé par la clé de scellement de {ca} sur {token}",
        "l_listing": "  {token} : {n} objet(s) avant la destruction (listés dans le procès-verbal)",
        "l_key_present": "  bi-clé {label} (CKA_ID {id}) présente sur {token}",
        "l_destroyed": "  {n} objet(s) étiqueté(s) {label} détruit(s) sur {token}",
        "l_key_absent": "  {token}, nouvelle session : aucun objet de la clé {fingerprint} ne reste ({n} objet(s) "
                        "restant(s))",
        "l_shredded": "  fichier de part détruit : {file}",
        "l_backup_inert": "  sauvegarde {file} ({id}) : ses parts sont détruites ; le fichier reste comme trace "
                          "d'archive",
        "l_no_backup": "  aucune sauvegarde chiffrée de cette clé dans le répertoire de sortie",
        "n_renewed": "porter {cert} sur l'hôte de {ca} et l'installer à côté du certificat en cours ; la même clé "
                     "continue de signer ses CRL",
        "n_sealing_certified": "les procès-verbaux scellés par cette clé sont désormais ancrés ; vérifier tout le "
                               "répertoire avec",
        "n_destroyed": "conserver le rapport de destruction et le procès-verbal avec l'archive ; vérifier tout le "
                       "répertoire avec",
        "n_pin_changed": "le jeton ne s'ouvre désormais qu'avec les parts nouvelles ; vérifier le répertoire avec",
        "n_terminated": "publier la dernière LCR (crl/) et installer le dernier magasin OCSP ; l'auditeur vérifie "
                        "l'archive avec sa propre ancre avant la cérémonie de destruction de clé "
                        "(ceremony.destroy-key) :",
    },
}


#: Root rollover (ceremony/ceremonies/rollover.py): the successor root's key ceremony and the cross-certification.
_ROLLOVER: dict[str, dict[str, str]] = {
    "en": {
        "r_successor": "  successor root, generation {generation}: it succeeds {old} ({path}); its key goes on {token} "
                       "under the label {label}",
        "r_cross_plan": "  cross-certificate: the key of {subject} ({subject_role}) certified by {issuer} "
                        "({issuer_role})",
        "r_cross_terms": "  validity: {start} to {end}; path length: {length}; policies: {policies}; name "
                         "constraints: {constraints}",
        "r_subject_key_title": "Key to cross-certify, of {subject}",
        "r_subject_key": "  subject key: {cert} (self-signed, its signature verifies) and {pub} (its key ceremony) "
                         "hold {fingerprint}",
        "r_cross_checked": "  the cross-certificate certifies {fingerprint}, the key of {cert}: same subject and "
                           "subject key identifier, authority key identifier and signature of {issuer}",
        "r_cross_fp": "Cross-certificate of {subject}, issued by {issuer}",
        "n_new_root": "publish {cert} beside the root in service; then cross-certify the two roots at the offline "
                      "root",
        "n_cross": "publish the cross-certificate with the roots' certificates; check the whole directory with",
    },
    "fr": {
        "r_successor": "  racine successeur, génération {generation} : elle succède à {old} ({path}) ; sa clé va sur "
                       "{token} sous le libellé {label}",
        "r_cross_plan": "  certificat croisé : la clé de {subject} ({subject_role}) certifiée par {issuer} "
                        "({issuer_role})",
        "r_cross_terms": "  validité : du {start} au {end} ; longueur de chemin : {length} ; politiques : {policies} ; "
                         "contraintes de noms : {constraints}",
        "r_subject_key_title": "Clé à certifier de façon croisée, de {subject}",
        "r_subject_key": "  clé du sujet : {cert} (auto-signé, sa signature est vérifiée) et {pub} (sa cérémonie des "
                         "clés) portent {fingerprint}",
        "r_cross_checked": "  le certificat croisé certifie {fingerprint}, la clé de {cert} : même sujet et même "
                           "identifiant de clé du sujet, identifiant de clé d'autorité et signature de {issuer}",
        "r_cross_fp": "Certificat croisé de {subject}, émis par {issuer}",
        "n_new_root": "publier {cert} à côté de la racine en service ; puis certifier les deux racines de façon "
                      "croisée à la racine hors ligne",
        "n_cross": "publier le certificat croisé avec les certificats des racines ; vérifier tout le répertoire avec",
    },
}


for _lang in LANGS:
    _TEXT[_lang].update(_LIFECYCLE[_lang])
    _TEXT[_lang].update(_ROLLOVER[_lang])


# The token initialisation ceremony (ceremony/ceremonies/token_init.py) and split PINs at later logins.
_TOKENS: dict[str, dict[str, str]] = {
    "en": {
        "t_target": "  token to initialise: label {token}, module {module}, slot {slot}",
        "t_reinitialise": "  RE-INITIALISATION of {token}: every object on it is destroyed ({hint}); its SO PIN stays",
        "t_quorums": "  user PIN: {user} Crypto Officer part(s); SO PIN: {so} Security Officer part(s)",
        "t_parts_ask": "  {pin}: {n} parts, each typed by its officer and never shown ({people})",
        "t_parts_entered": "  {pin}: parts entered by {people}; combined, nobody knows the PIN",
        "t_pin_single": "  {pin}: one PIN, from {where}",
        "t_initialised": "  token {token} initialised in slot {slot} (C_InitToken)",
        "t_user_pin_set": "  user PIN of {token} set by the Security Officer (C_InitPIN)",
        "t_login_ok": "  fresh session: login accepted with the PIN made of the parts of {people}",
        "t_one_pin": "the one PIN",
        "t_user_whole": "  the user PIN of {ca} is one PIN, not split: its CRL and OCSP jobs open the token unattended "
                        "(hsm.split_user_pin: true splits it, for a CA activated only at ceremonies)",
        "t_record": "  token record written on {token}: whose parts make each PIN, and its sealing key",
        "t_sealing_fp": "Transcript-sealing key born with token {token}",
        "t_sealing_reused": "  transcript-sealing key {label}: the one born with this token at its initialisation",
        "t_pin_parts": "  the user PIN of {token} is made of the parts of {officers}: each types their part, unseen",
        "n_token_initialised": "the CA's key ceremony on this token takes this sealing key; its certificate from the "
                               "root anchors this transcript; verify with",
    },
    "fr": {
        "t_target": "  jeton à initialiser : libellé {token}, module {module}, emplacement {slot}",
        "t_reinitialise": "  RÉINITIALISATION de {token} : tous ses objets sont détruits ({hint}) ; son PIN SO reste",
        "t_quorums": "  PIN utilisateur : {user} part(s) d'officiers cryptographiques ; PIN SO : {so} part(s) de "
                     "responsables de sécurité",
        "t_parts_ask": "  {pin} : {n} parts, chacune saisie par son officier et jamais affichée ({people})",
        "t_parts_entered": "  {pin} : parts saisies par {people} ; combinées, personne ne connaît le PIN",
        "t_pin_single": "  {pin} : un seul PIN, depuis {where}",
        "t_initialised": "  jeton {token} initialisé dans l'emplacement {slot} (C_InitToken)",
        "t_user_pin_set": "  PIN utilisateur de {token} fixé par le responsable de sécurité (C_InitPIN)",
        "t_login_ok": "  nouvelle session : authentification acceptée avec le PIN fait des parts de {people}",
        "t_one_pin": "le PIN unique",
        "t_user_whole": "  le PIN utilisateur de {ca} est un seul PIN, non partagé : ses tâches CRL et OCSP ouvrent le "
                        "jeton sans personne (hsm.split_user_pin: true le partage, pour une AC activée seulement en "
                        "cérémonie)",
        "t_record": "  fiche du jeton écrite sur {token} : de qui sont les parts de chaque PIN, et sa clé de "
                    "scellement",
        "t_sealing_fp": "Clé de scellement née avec le jeton {token}",
        "t_sealing_reused": "  clé de scellement {label} : celle née avec ce jeton à son initialisation",
        "t_pin_parts": "  le PIN utilisateur de {token} est fait des parts de {officers} : chacun saisit la sienne, "
                       "sans affichage",
        "n_token_initialised": "la cérémonie de clé de l'AC sur ce jeton prend cette clé de scellement ; son "
                               "certificat émis par la racine ancre ce procès-verbal ; vérifier avec",
    },
}


for _lang in LANGS:
    _TEXT[_lang].update(_TOKENS[_lang])


# Subordinate re-key (ceremony/ceremonies/rekey.py): the new key at the subordinate's host, its certificate at the root.
_REKEY: dict[str, dict[str, str]] = {
    "en": {
        "k_rekey_plan": "  current certificate: {path} (generation {generation}); this ceremony generates the key of "
                        "generation {generation_next} on {token} under the label {label}; the current key {old_label} "
                        "stays and keeps signing the CRLs of what it issued",
        "k_rekey_key": "Public key of {ca}, generation {generation} (SPKI)",
        "k_certify_plan": "  current certificate: {path} (generation {generation}, valid until {end}); this ceremony "
                          "certifies the new key of generation {generation_next}",
        "k_new_key": "  new key: {fingerprint}, the key of none of {generations}",
        "k_rekey_cert": "Certificate of {ca}, generation {generation} (new key): {subject}",
        "n_rekey_csr": "carry {csr} to the offline root; the root certifies it with",
        "n_rekeyed": "carry {cert} to the host of {ca}: issuance signs with the new key from now on, the earlier key "
                     "keeps signing the CRLs of what it issued; sign the CRLs with",
    },
    "fr": {
        "k_rekey_plan": "  certificat en cours : {path} (génération {generation}) ; cette cérémonie génère la clé de "
                        "la génération {generation_next} sur {token} sous le libellé {label} ; la clé en cours "
                        "{old_label} reste et continue de signer les CRL de ce qu'elle a émis",
        "k_rekey_key": "Clé publique de {ca}, génération {generation} (SPKI)",
        "k_certify_plan": "  certificat en cours : {path} (génération {generation}, valide jusqu'au {end}) ; cette "
                          "cérémonie certifie la nouvelle clé de la génération {generation_next}",
        "k_new_key": "  nouvelle clé : {fingerprint}, la clé d'aucun de {generations}",
        "k_rekey_cert": "Certificat de {ca}, génération {generation} (nouvelle clé) : {subject}",
        "n_rekey_csr": "porter {csr} à la racine hors ligne ; la racine la certifie avec",
        "n_rekeyed": "porter {cert} sur l'hôte de {ca} : l'émission signe désormais avec la nouvelle clé, la clé "
                     "précédente continue de signer les CRL de ce qu'elle a émis ; signer les CRL avec",
    },
}


for _lang in LANGS:
    _TEXT[_lang].update(_REKEY[_lang])


# The PIN prompts (ceremony/hsm/pins.py): a PIN, or an officer's part of a split PIN, typed unseen. In the room's
# language like every other question, so that no officer types a secret in answer to words they do not read.
_PINS: dict[str, dict[str, str]] = {
    "en": {
        "pin_user_q": "user PIN for {token}",
        "pin_so_q": "Security Officer PIN for {token}",
        "part_who_q": "{role} entering part {n} of {k} of {pin} (name as signed in)",
        "part_q": "part of {name} ({role}), not shown",
        "part_again_q": "the same part again, {name}",
        "role_user": "Crypto Officer",
        "role_so": "HSM Security Officer",
        "pin_user": "the user PIN of token {token}",
        "pin_so": "the Security Officer PIN of token {token}",
        "p_plan": "  token {token}: {pin} is made of the parts of {officers} ({role}); they enter their current parts, "
                  "then new ones",
        "p_handover_plan": "  {old} hands their part over to {new}: {old} enters the current part, {new} a new part "
                           "in its place (part {n}); afterwards the parts of {officers} make the PIN",
        "p_current_by": "  current parts entered by {people}",
        "p_new_by": "  new parts entered by {people}",
        "p_handed_over": "  the part of {old} is handed over: {new} holds part {n} of {pin}",
        "p_changed": "  {pin} changed (C_SetPIN)",
        "p_fresh_login": "  fresh session: login accepted with the new parts of {people}",
        "p_record": "  token {token}: its record lists the change",
        "p_record_handover": "  token {token}: its record lists the change and names {people} for the parts",
    },
    "fr": {
        "pin_user_q": "PIN utilisateur de {token}",
        "pin_so_q": "PIN du responsable de sécurité de {token}",
        "part_who_q": "{role} qui saisit la part {n} sur {k} du {pin} (nom tel qu'émargé)",
        "part_q": "part de {name} ({role}), non affichée",
        "part_again_q": "la même part une seconde fois, {name}",
        "role_user": "officier cryptographique",
        "role_so": "responsable de sécurité du HSM",
        "pin_user": "PIN utilisateur du jeton {token}",
        "pin_so": "PIN du responsable de sécurité du jeton {token}",
        "p_plan": "  jeton {token} : le {pin} est fait des parts de {officers} ({role}) ; ils saisissent leurs parts "
                  "actuelles, puis de nouvelles",
        "p_handover_plan": "  {old} transmet sa part à {new} : {old} saisit la part actuelle, {new} une part nouvelle "
                           "à sa place (part {n}) ; ensuite les parts de {officers} font le PIN",
        "p_current_by": "  parts actuelles saisies par {people}",
        "p_new_by": "  parts nouvelles saisies par {people}",
        "p_handed_over": "  la part de {old} est transmise : {new} détient la part {n} du {pin}",
        "p_changed": "  {pin} changé (C_SetPIN)",
        "p_fresh_login": "  nouvelle session : authentification acceptée avec les parts nouvelles de {people}",
        "p_record": "  jeton {token} : sa fiche consigne le changement",
        "p_record_handover": "  jeton {token} : sa fiche consigne le changement et nomme {people} pour les parts",
    },
}


for _lang in LANGS:
    _TEXT[_lang].update(_PINS[_lang])
