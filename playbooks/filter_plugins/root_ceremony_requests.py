"""Filter ``root_ceremony_rekey_requests``: the re-key CSRs waiting for their certification at the offline root.

A subordinate's re-key (``invoke ceremony.rekey-subordinate`` at the CA host) writes ``<ca>.g<n>.csr.pem`` and
``<ca>.g<n>.pub.pem``; ``playbooks/subordinate_ca.yml`` carries both to the exchange directory. The certification
(``ca_ceremony`` action ``certify-rekey``, docs/lifecycle.md) writes ``<ca>.g<n>.crt.pem``, which
``root_ceremony.yml`` carries back out to the same directory. So a request is waiting exactly when the exchange
directory holds the CSR of generation n and no certificate of generation n: that is what this filter lists, from
the file names alone (the module then checks the keys themselves, and does nothing for a key already certified).

``root_ceremony_rekey_requests(file_names, subordinates)`` takes the names of the files in the exchange directory
and the subordinate CAs of the definition, and returns ``[{"ca", "generation", "csr", "pub"}]`` in generation
order per CA (a later generation is certified after an earlier one). A name of another CA, or not of this form, is
ignored: the exchange directory holds other files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

_REQUEST = re.compile(r"^(?P<ca>.+)\.g(?P<n>[1-9][0-9]*)\.csr\.pem$")


def root_ceremony_rekey_requests(file_names: Iterable[str], subordinates: Iterable[str]) -> list[dict[str, Any]]:
    """The re-key CSRs in ``file_names`` without a certificate of their generation beside them."""
    names = {os.path.basename(str(name)) for name in file_names}
    cas = set(subordinates)
    found = []
    for name in names:
        match = _REQUEST.match(name)
        if match is None or match["ca"] not in cas or name != f"{match['ca']}.g{int(match['n'])}.csr.pem":
            continue
        ca, n = match["ca"], int(match["n"])
        if f"{ca}.g{n}.crt.pem" in names:
            continue
        found.append({"ca": ca, "generation": n, "csr": name, "pub": f"{ca}.g{n}.pub.pem"})
    return sorted(found, key=lambda r: (r["ca"], r["generation"]))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"root_ceremony_rekey_requests": root_ceremony_rekey_requests}
