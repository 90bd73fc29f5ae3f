"""The ceremony engine: PKI definition, HSM access, certificates, CRLs, transcripts, documents.

Nothing in this package imports Invoke or Ansible: the Invoke tasks (``tasks/``) and the Ansible
modules (``roles/*/library``, ``plugins/``) are thin front ends over it.
"""

__version__ = "0.1.0"
