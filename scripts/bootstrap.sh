#!/usr/bin/env bash
# Install what the suite needs on a Debian 12 machine, idempotently:
#   - system packages (SoftHSM2, OpenSC, OpenSSL, debootstrap, PDF rendering libraries, ...)
#   - the Python virtualenv in .venv with the exact versions pinned in pyproject.toml
# A second run is fast: each step is skipped when what it would install is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3-venv                       # the virtualenv in .venv
  softhsm2 opensc openssl            # the stand-in HSM and the independent PKCS#11 checker
  libnss3 libnss3-tools libp11-kit0  # NSS softokn, the second PKCS#11 implementation (certutil); p11-kit's proxy for pkcs11-tool
  debootstrap iproute2 openssh-client rsync   # throwaway Debian test hosts; ssh-keygen: auditor attestations
  curl                               # the relying party fetching CRLs from the test publication host
  jq                                 # the auditor's recipe in docs/transcripts.md, run by the tests
  gnutls-bin                         # certtool --verify-chain: chains through the cross-certificates, checked by GnuTLS
  systemd                            # systemd-analyze verify for timer units
  prometheus                         # promtool: check and unit-test the alert rules (the daemon is not used)
  libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b fonts-dejavu-core   # WeasyPrint PDF rendering
  libharfbuzz-subset0                # WeasyPrint subsets fonts with HarfBuzz (fonttools fallback is ~10x slower)
  poppler-utils                      # pdftotext: tests read the PDFs' text layer
  yamllint
  gnutls-bin                         # ocsptool: the second, independent OCSP client the tests ask the responder with
  apache2-utils                      # ab: the load generator of invoke bench.ocsp (responder throughput, latency)
  nginx-light                        # invoke bench.ocsp's static-file ceiling (its own loopback config per run; the distribution's service is not used)
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
stamp=.venv/.bootstrap-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -x .venv/bin/python ]]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
  echo "bootstrap: installing Python dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  # setuptools' editable install always adds an informational notice ("Editable installation ... be
  # careful with folders named like the package"); it is silenced by its exact text, nothing else is:
  # pip's errors and any other warning still show.
  PYTHONWARNINGS="ignore:Editable installation" .venv/bin/pip install -q -e '.[dev]'
  echo "$want" >"$stamp"
fi
