#!/usr/bin/env bash
# Makes the example's certificates in Examples/tls/certs/ (git-ignored) with the openssl CLI:
#   ca.pem                      a CA for the browser side, and localhost.pem/.key signed by it (the bridge's wss://)
#   backend-ca.pem              the backend's own CA, and echo-internal.pem/.key for the name echo.internal
# Everything is EC P-256 and valid for 30 days. Run again to renew: the bridge picks new files up by itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
mkdir -p certs
cd certs

ca() {  # ca NAME "CN"
    openssl ecparam -name prime256v1 -genkey -noout -out "$1.key"
    openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 30 -subj "/CN=$2" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
leaf() {  # leaf NAME CA "SAN" : a server certificate (the leaf, then its CA: a chain)
    openssl ecparam -name prime256v1 -genkey -noout -out "$1.key"
    openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$1"
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -out "$1.leaf.pem" -days 30 \
        -extfile "$1.ext" 2>/dev/null
    cat "$1.leaf.pem" "$2.pem" >"$1.pem"
    rm -f "$1.csr" "$1.ext" "$1.leaf.pem"
}
ca ca "wsbridge example CA"
leaf localhost ca "DNS:localhost,IP:127.0.0.1"
ca backend-ca "backend example CA"
leaf echo-internal backend-ca "DNS:echo.internal"
echo "certificates in $(pwd)"
