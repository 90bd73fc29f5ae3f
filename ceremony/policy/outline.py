"""The RFC 3647 outline (section 6 of the RFC) as data, with the French titles.

Every CP and CPS the suite generates follows this outline exactly: each section and subsection,
numbered and titled as in the RFC, in this order. The check (:mod:`ceremony.policy.check`) compares
the headings of a generated document against this list, so a section can neither be forgotten nor
renamed. The French titles are the Service's translations; the English ones are the RFC's words.
"""

# ruff: noqa: E501  (the outline below is data: one line per RFC 3647 heading, titles unbroken)
from __future__ import annotations

from dataclasses import dataclass

LANGS = ("fr", "en")


DOCUMENTS = ("cp", "cps")


@dataclass(frozen=True)
class Section:
    number: str
    title_en: str
    title_fr: str

    @property
    def level(self) -> int:
        """1 for a chapter ("4"), 2 for "4.9", 3 for "4.9.7"."""
        return self.number.count(".") + 1

    @property
    def anchor(self) -> str:
        """A stable HTML anchor: ``s-4-9-7``; it never changes with the title or the language."""
        return "s-" + self.number.replace(".", "-")

    def title(self, lang: str) -> str:
        return self.title_fr if lang == "fr" else self.title_en

    def heading(self, lang: str) -> str:
        """The Markdown heading exactly as the documents carry it: ``### 4.9.7 CRL issuance ...``."""
        number = f"{self.number}." if self.level == 1 else self.number
        return f"{'#' * self.level} {number} {self.title(lang)}"


# number | RFC 3647 title | titre français
_OUTLINE = """
1|INTRODUCTION|INTRODUCTION
1.1|Overview|Présentation générale
1.2|Document name and identification|Nom et identification du document
1.3|PKI participants|Participants à l'IGC
1.3.1|Certification authorities|Autorités de certification
1.3.2|Registration authorities|Autorités d'enregistrement
1.3.3|Subscribers|Abonnés
1.3.4|Relying parties|Utilisateurs de certificats
1.3.5|Other participants|Autres participants
1.4|Certificate usage|Usage des certificats
1.4.1|Appropriate certificate uses|Usages autorisés des certificats
1.4.2|Prohibited certificate uses|Usages interdits des certificats
1.5|Policy administration|Administration de la politique
1.5.1|Organization administering the document|Organisme gérant le document
1.5.2|Contact person|Point de contact
1.5.3|Person determining CPS suitability for the policy|Entité déterminant la conformité de la DPC à la politique
1.5.4|CPS approval procedures|Procédures d'approbation de la DPC
1.6|Definitions and acronyms|Définitions et acronymes
2|PUBLICATION AND REPOSITORY RESPONSIBILITIES|RESPONSABILITÉS EN MATIÈRE DE PUBLICATION ET DE DÉPÔT
2.1|Repositories|Dépôts
2.2|Publication of certification information|Publication des informations de certification
2.3|Time or frequency of publication|Délais ou fréquence de publication
2.4|Access controls on repositories|Contrôle d'accès aux dépôts
3|IDENTIFICATION AND AUTHENTICATION|IDENTIFICATION ET AUTHENTIFICATION
3.1|Naming|Nommage
3.1.1|Types of names|Types de noms
3.1.2|Need for names to be meaningful|Nécessité d'utiliser des noms explicites
3.1.3|Anonymity or pseudonymity of subscribers|Anonymat ou pseudonymat des abonnés
3.1.4|Rules for interpreting various name forms|Règles d'interprétation des différentes formes de noms
3.1.5|Uniqueness of names|Unicité des noms
3.1.6|Recognition, authentication, and role of trademarks|Reconnaissance, authentification et rôle des marques déposées
3.2|Initial identity validation|Validation initiale de l'identité
3.2.1|Method to prove possession of private key|Méthode de preuve de la possession de la clé privée
3.2.2|Authentication of organization identity|Authentification de l'identité d'un organisme
3.2.3|Authentication of individual identity|Authentification de l'identité d'une personne physique
3.2.4|Non-verified subscriber information|Informations non vérifiées de l'abonné
3.2.5|Validation of authority|Validation de l'habilitation
3.2.6|Criteria for interoperation|Critères d'interopérabilité
3.3|Identification and authentication for re-key requests|Identification et authentification pour les demandes de renouvellement de clé
3.3.1|Identification and authentication for routine re-key|Identification et authentification pour un renouvellement de clé courant
3.3.2|Identification and authentication for re-key after revocation|Identification et authentification pour un renouvellement de clé après révocation
3.4|Identification and authentication for revocation request|Identification et authentification pour les demandes de révocation
4|CERTIFICATE LIFE-CYCLE OPERATIONAL REQUIREMENTS|EXIGENCES OPÉRATIONNELLES SUR LE CYCLE DE VIE DES CERTIFICATS
4.1|Certificate Application|Demande de certificat
4.1.1|Who can submit a certificate application|Personnes habilitées à déposer une demande de certificat
4.1.2|Enrollment process and responsibilities|Processus d'enregistrement et responsabilités
4.2|Certificate application processing|Traitement d'une demande de certificat
4.2.1|Performing identification and authentication functions|Exécution des fonctions d'identification et d'authentification
4.2.2|Approval or rejection of certificate applications|Acceptation ou rejet de la demande de certificat
4.2.3|Time to process certificate applications|Durée de traitement d'une demande de certificat
4.3|Certificate issuance|Délivrance du certificat
4.3.1|CA actions during certificate issuance|Actions de l'AC concernant la délivrance du certificat
4.3.2|Notification to subscriber by the CA of issuance of certificate|Notification par l'AC de la délivrance du certificat à l'abonné
4.4|Certificate acceptance|Acceptation du certificat
4.4.1|Conduct constituting certificate acceptance|Démarche d'acceptation du certificat
4.4.2|Publication of the certificate by the CA|Publication du certificat par l'AC
4.4.3|Notification of certificate issuance by the CA to other entities|Notification par l'AC aux autres entités de la délivrance du certificat
4.5|Key pair and certificate usage|Usages de la bi-clé et du certificat
4.5.1|Subscriber private key and certificate usage|Utilisation de la clé privée et du certificat par l'abonné
4.5.2|Relying party public key and certificate usage|Utilisation de la clé publique et du certificat par l'utilisateur du certificat
4.6|Certificate renewal|Renouvellement d'un certificat
4.6.1|Circumstance for certificate renewal|Causes possibles de renouvellement d'un certificat
4.6.2|Who may request renewal|Origine d'une demande de renouvellement
4.6.3|Processing certificate renewal requests|Procédure de traitement d'une demande de renouvellement
4.6.4|Notification of new certificate issuance to subscriber|Notification à l'abonné de la délivrance d'un nouveau certificat
4.6.5|Conduct constituting acceptance of a renewal certificate|Démarche d'acceptation du nouveau certificat
4.6.6|Publication of the renewal certificate by the CA|Publication du nouveau certificat par l'AC
4.6.7|Notification of certificate issuance by the CA to other entities|Notification par l'AC aux autres entités de la délivrance du nouveau certificat
4.7|Certificate re-key|Délivrance d'un nouveau certificat suite à changement de la bi-clé
4.7.1|Circumstance for certificate re-key|Causes possibles de changement d'une bi-clé
4.7.2|Who may request certification of a new public key|Origine d'une demande de certification d'une nouvelle clé publique
4.7.3|Processing certificate re-keying requests|Procédure de traitement d'une demande de changement de bi-clé
4.7.4|Notification of new certificate issuance to subscriber|Notification à l'abonné de la délivrance du nouveau certificat
4.7.5|Conduct constituting acceptance of a re-keyed certificate|Démarche d'acceptation du nouveau certificat
4.7.6|Publication of the re-keyed certificate by the CA|Publication du nouveau certificat par l'AC
4.7.7|Notification of certificate issuance by the CA to other entities|Notification par l'AC aux autres entités de la délivrance du nouveau certificat
4.8|Certificate modification|Modification du certificat
4.8.1|Circumstance for certificate modification|Causes possibles de modification d'un certificat
4.8.2|Who may request certificate modification|Origine d'une demande de modification d'un certificat
4.8.3|Processing certificate modification requests|Procédure de traitement d'une demande de modification d'un certificat
4.8.4|Notification of new certificate issuance to subscriber|Notification à l'abonné de la délivrance du certificat modifié
4.8.5|Conduct constituting acceptance of modified certificate|Démarche d'acceptation du certificat modifié
4.8.6|Publication of the modified certificate by the CA|Publication du certificat modifié par l'AC
4.8.7|Notification of certificate issuance by the CA to other entities|Notification par l'AC aux autres entités de la délivrance du certificat modifié
4.9|Certificate revocation and suspension|Révocation et suspension des certificats
4.9.1|Circumstances for revocation|Causes possibles d'une révocation
4.9.2|Who can request revocation|Origine d'une demande de révocation
4.9.3|Procedure for revocation request|Procédure de traitement d'une demande de révocation
4.9.4|Revocation request grace period|Délai accordé à l'abonné pour formuler la demande de révocation
4.9.5|Time within which CA must process the revocation request|Délai de traitement par l'AC d'une demande de révocation
4.9.6|Revocation checking requirement for relying parties|Exigences de vérification de la révocation par les utilisateurs de certificats
4.9.7|CRL issuance frequency (if applicable)|Fréquence d'établissement des LCR (le cas échéant)
4.9.8|Maximum latency for CRLs (if applicable)|Délai maximal de publication d'une LCR (le cas échéant)
4.9.9|On-line revocation/status checking availability|Disponibilité d'un système de vérification en ligne de la révocation et de l'état des certificats
4.9.10|On-line revocation checking requirements|Exigences de vérification en ligne de la révocation des certificats par les utilisateurs
4.9.11|Other forms of revocation advertisements available|Autres moyens disponibles d'information sur les révocations
4.9.12|Special requirements re key compromise|Exigences spécifiques en cas de compromission de la clé privée
4.9.13|Circumstances for suspension|Causes possibles d'une suspension
4.9.14|Who can request suspension|Origine d'une demande de suspension
4.9.15|Procedure for suspension request|Procédure de traitement d'une demande de suspension
4.9.16|Limits on suspension period|Limites de la période de suspension d'un certificat
4.10|Certificate status services|Fonction d'information sur l'état des certificats
4.10.1|Operational characteristics|Caractéristiques opérationnelles
4.10.2|Service availability|Disponibilité de la fonction
4.10.3|Optional features|Dispositifs optionnels
4.11|End of subscription|Fin de la relation entre l'abonné et l'AC
4.12|Key escrow and recovery|Séquestre de clé et recouvrement
4.12.1|Key escrow and recovery policy and practices|Politique et pratiques de recouvrement par séquestre des clés
4.12.2|Session key encapsulation and recovery policy and practices|Politique et pratiques d'encapsulation et de recouvrement des clés de session
5|FACILITY, MANAGEMENT, AND OPERATIONAL CONTROLS|MESURES DE SÉCURITÉ NON TECHNIQUES
5.1|Physical controls|Mesures de sécurité physique
5.1.1|Site location and construction|Situation géographique et construction des sites
5.1.2|Physical access|Accès physique
5.1.3|Power and air conditioning|Alimentation électrique et climatisation
5.1.4|Water exposures|Vulnérabilité aux dégâts des eaux
5.1.5|Fire prevention and protection|Prévention et protection incendie
5.1.6|Media storage|Conservation des supports
5.1.7|Waste disposal|Mise hors service des supports
5.1.8|Off-site backup|Sauvegardes hors site
5.2|Procedural controls|Mesures de sécurité procédurales
5.2.1|Trusted roles|Rôles de confiance
5.2.2|Number of persons required per task|Nombre de personnes requises par tâche
5.2.3|Identification and authentication for each role|Identification et authentification pour chaque rôle
5.2.4|Roles requiring separation of duties|Rôles exigeant une séparation des attributions
5.3|Personnel controls|Mesures de sécurité vis-à-vis du personnel
5.3.1|Qualifications, experience, and clearance requirements|Qualifications, compétences et habilitations requises
5.3.2|Background check procedures|Procédures de vérification des antécédents
5.3.3|Training requirements|Exigences en matière de formation initiale
5.3.4|Retraining frequency and requirements|Exigences et fréquence en matière de formation continue
5.3.5|Job rotation frequency and sequence|Fréquence et séquence de rotation entre différentes attributions
5.3.6|Sanctions for unauthorized actions|Sanctions en cas d'actions non autorisées
5.3.7|Independent contractor requirements|Exigences vis-à-vis du personnel des prestataires externes
5.3.8|Documentation supplied to personnel|Documentation fournie au personnel
5.4|Audit logging procedures|Procédures de constitution des données d'audit
5.4.1|Types of events recorded|Types d'événements à enregistrer
5.4.2|Frequency of processing log|Fréquence de traitement des journaux d'événements
5.4.3|Retention period for audit log|Période de conservation des journaux d'événements
5.4.4|Protection of audit log|Protection des journaux d'événements
5.4.5|Audit log backup procedures|Procédure de sauvegarde des journaux d'événements
5.4.6|Audit collection system (internal vs. external)|Système de collecte des journaux (interne ou externe)
5.4.7|Notification to event-causing subject|Notification de l'enregistrement d'un événement au responsable de l'événement
5.4.8|Vulnerability assessments|Évaluation des vulnérabilités
5.5|Records archival|Archivage des données
5.5.1|Types of records archived|Types de données à archiver
5.5.2|Retention period for archive|Période de conservation des archives
5.5.3|Protection of archive|Protection des archives
5.5.4|Archive backup procedures|Procédure de sauvegarde des archives
5.5.5|Requirements for time-stamping of records|Exigences d'horodatage des données
5.5.6|Archive collection system (internal or external)|Système de collecte des archives (interne ou externe)
5.5.7|Procedures to obtain and verify archive information|Procédures de récupération et de vérification des archives
5.6|Key changeover|Changement de clé d'AC
5.7|Compromise and disaster recovery|Reprise suite à compromission et sinistre
5.7.1|Incident and compromise handling procedures|Procédures de remontée et de traitement des incidents et des compromissions
5.7.2|Computing resources, software, and/or data are corrupted|Procédures de reprise en cas de corruption des ressources informatiques, des logiciels ou des données
5.7.3|Entity private key compromise procedures|Procédures de reprise en cas de compromission de la clé privée d'une entité
5.7.4|Business continuity capabilities after a disaster|Capacités de continuité d'activité suite à un sinistre
5.8|CA or RA termination|Fin de vie de l'AC ou de l'AE
6|TECHNICAL SECURITY CONTROLS|MESURES DE SÉCURITÉ TECHNIQUES
6.1|Key pair generation and installation|Génération et installation des bi-clés
6.1.1|Key pair generation|Génération des bi-clés
6.1.2|Private key delivery to subscriber|Transmission de la clé privée à son propriétaire
6.1.3|Public key delivery to certificate issuer|Transmission de la clé publique à l'AC
6.1.4|CA public key delivery to relying parties|Transmission de la clé publique de l'AC aux utilisateurs de certificats
6.1.5|Key sizes|Tailles des clés
6.1.6|Public key parameters generation and quality checking|Génération des paramètres des clés publiques et vérification de leur qualité
6.1.7|Key usage purposes (as per X.509 v3 key usage field)|Objectifs d'usage de la clé (selon le champ « key usage » de X.509 v3)
6.2|Private Key Protection and Cryptographic Module Engineering Controls|Mesures de sécurité pour la protection des clés privées et pour les modules cryptographiques
6.2.1|Cryptographic module standards and controls|Standards et mesures de sécurité pour les modules cryptographiques
6.2.2|Private key (n out of m) multi-person control|Contrôle de la clé privée par plusieurs personnes (n parmi m)
6.2.3|Private key escrow|Séquestre de la clé privée
6.2.4|Private key backup|Copie de secours de la clé privée
6.2.5|Private key archival|Archivage de la clé privée
6.2.6|Private key transfer into or from a cryptographic module|Transfert de la clé privée vers ou depuis un module cryptographique
6.2.7|Private key storage on cryptographic module|Stockage de la clé privée dans un module cryptographique
6.2.8|Method of activating private key|Méthode d'activation de la clé privée
6.2.9|Method of deactivating private key|Méthode de désactivation de la clé privée
6.2.10|Method of destroying private key|Méthode de destruction de la clé privée
6.2.11|Cryptographic Module Rating|Niveau de qualification du module cryptographique
6.3|Other aspects of key pair management|Autres aspects de la gestion des bi-clés
6.3.1|Public key archival|Archivage des clés publiques
6.3.2|Certificate operational periods and key pair usage periods|Durées de vie des certificats et durées d'utilisation des bi-clés
6.4|Activation data|Données d'activation
6.4.1|Activation data generation and installation|Génération et installation des données d'activation
6.4.2|Activation data protection|Protection des données d'activation
6.4.3|Other aspects of activation data|Autres aspects liés aux données d'activation
6.5|Computer security controls|Mesures de sécurité des systèmes informatiques
6.5.1|Specific computer security technical requirements|Exigences de sécurité technique spécifiques aux systèmes informatiques
6.5.2|Computer security rating|Niveau de qualification des systèmes informatiques
6.6|Life cycle technical controls|Mesures de sécurité des systèmes durant leur cycle de vie
6.6.1|System development controls|Mesures de sécurité liées au développement des systèmes
6.6.2|Security management controls|Mesures liées à la gestion de la sécurité
6.6.3|Life cycle security controls|Niveau d'évaluation sécurité du cycle de vie des systèmes
6.7|Network security controls|Mesures de sécurité réseau
6.8|Time-stamping|Horodatage
7|CERTIFICATE, CRL, AND OCSP PROFILES|PROFILS DES CERTIFICATS, DES LCR ET OCSP
7.1|Certificate profile|Profil des certificats
7.1.1|Version number(s)|Numéro(s) de version
7.1.2|Certificate extensions|Extensions du certificat
7.1.3|Algorithm object identifiers|Identifiants d'algorithmes
7.1.4|Name forms|Formes de noms
7.1.5|Name constraints|Contraintes sur les noms
7.1.6|Certificate policy object identifier|Identifiant de politique de certification
7.1.7|Usage of Policy Constraints extension|Utilisation de l'extension « Policy Constraints »
7.1.8|Policy qualifiers syntax and semantics|Syntaxe et sémantique des qualificatifs de politique
7.1.9|Processing semantics for the critical Certificate Policies extension|Sémantique de traitement de l'extension critique « Certificate Policies »
7.2|CRL profile|Profil des LCR
7.2.1|Version number(s)|Numéro(s) de version
7.2.2|CRL and CRL entry extensions|Extensions de LCR et d'entrées de LCR
7.3|OCSP profile|Profil OCSP
7.3.1|Version number(s)|Numéro(s) de version
7.3.2|OCSP extensions|Extensions OCSP
8|COMPLIANCE AUDIT AND OTHER ASSESSMENTS|AUDIT DE CONFORMITÉ ET AUTRES ÉVALUATIONS
8.1|Frequency or circumstances of assessment|Fréquence et circonstances des évaluations
8.2|Identity/qualifications of assessor|Identité et qualifications des évaluateurs
8.3|Assessor's relationship to assessed entity|Relations entre évaluateurs et entités évaluées
8.4|Topics covered by assessment|Sujets couverts par les évaluations
8.5|Actions taken as a result of deficiency|Actions prises suite aux conclusions des évaluations
8.6|Communication of results|Communication des résultats
9|OTHER BUSINESS AND LEGAL MATTERS|AUTRES PROBLÉMATIQUES MÉTIERS ET LÉGALES
9.1|Fees|Tarifs
9.1.1|Certificate issuance or renewal fees|Tarifs pour la délivrance ou le renouvellement de certificats
9.1.2|Certificate access fees|Tarifs pour accéder aux certificats
9.1.3|Revocation or status information access fees|Tarifs pour accéder aux informations sur l'état et la révocation des certificats
9.1.4|Fees for other services|Tarifs pour d'autres services
9.1.5|Refund policy|Politique de remboursement
9.2|Financial responsibility|Responsabilité financière
9.2.1|Insurance coverage|Couverture par les assurances
9.2.2|Other assets|Autres ressources
9.2.3|Insurance or warranty coverage for end-entities|Couverture et garantie concernant les entités utilisatrices
9.3|Confidentiality of business information|Confidentialité des données professionnelles
9.3.1|Scope of confidential information|Périmètre des informations confidentielles
9.3.2|Information not within the scope of confidential information|Informations hors du périmètre des informations confidentielles
9.3.3|Responsibility to protect confidential information|Responsabilités en termes de protection des informations confidentielles
9.4|Privacy of personal information|Protection des données personnelles
9.4.1|Privacy plan|Politique de protection des données personnelles
9.4.2|Information treated as private|Informations à caractère personnel
9.4.3|Information not deemed private|Informations à caractère non personnel
9.4.4|Responsibility to protect private information|Responsabilité en termes de protection des données personnelles
9.4.5|Notice and consent to use private information|Notification et consentement d'utilisation des données personnelles
9.4.6|Disclosure pursuant to judicial or administrative process|Communication des données personnelles aux autorités judiciaires ou administratives
9.4.7|Other information disclosure circumstances|Autres circonstances de divulgation d'informations personnelles
9.5|Intellectual property rights|Droits sur la propriété intellectuelle et industrielle
9.6|Representations and warranties|Déclarations et garanties
9.6.1|CA representations and warranties|Déclarations et garanties de l'AC
9.6.2|RA representations and warranties|Déclarations et garanties de l'AE
9.6.3|Subscriber representations and warranties|Déclarations et garanties des abonnés
9.6.4|Relying party representations and warranties|Déclarations et garanties des utilisateurs de certificats
9.6.5|Representations and warranties of other participants|Déclarations et garanties des autres participants
9.7|Disclaimers of warranties|Limites de garantie
9.8|Limitations of liability|Limites de responsabilité
9.9|Indemnities|Indemnités
9.10|Term and termination|Durée et fin anticipée de validité du document
9.10.1|Term|Durée de validité
9.10.2|Termination|Fin anticipée de validité
9.10.3|Effect of termination and survival|Effets de la fin de validité et clauses restant applicables
9.11|Individual notices and communications with participants|Notifications individuelles et communications entre les participants
9.12|Amendments|Amendements
9.12.1|Procedure for amendment|Procédures d'amendements
9.12.2|Notification mechanism and period|Mécanisme et période d'information sur les amendements
9.12.3|Circumstances under which OID must be changed|Circonstances selon lesquelles l'OID doit être changé
9.13|Dispute resolution provisions|Dispositions concernant la résolution des conflits
9.14|Governing law|Juridictions compétentes
9.15|Compliance with applicable law|Conformité aux législations et réglementations
9.16|Miscellaneous provisions|Dispositions diverses
9.16.1|Entire agreement|Accord global
9.16.2|Assignment|Transfert d'activités
9.16.3|Severability|Conséquences d'une clause non valide
9.16.4|Enforcement (attorneys' fees and waiver of rights)|Application et renonciation (honoraires d'avocats et renonciation aux droits)
9.16.5|Force Majeure|Force majeure
9.17|Other provisions|Autres dispositions
"""


def _parse(text: str) -> tuple[Section, ...]:
    sections = []
    for line in text.strip().splitlines():
        number, en, fr = line.split("|")
        sections.append(Section(number, en, fr))
    return tuple(sections)


OUTLINE: tuple[Section, ...] = _parse(_OUTLINE)


BY_NUMBER: dict[str, Section] = {s.number: s for s in OUTLINE}


def has_children(number: str) -> bool:
    """A section with subsections may carry no text of its own; a leaf section never is empty."""
    prefix = number + "."
    return any(s.number.startswith(prefix) for s in OUTLINE)


def no_stipulation(lang: str) -> str:
    return "Aucune stipulation." if lang == "fr" else "No stipulation."
