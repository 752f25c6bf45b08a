#!/bin/sh
# Make a private CA, a collector certificate and agent client certificates with openssl, for
# mutual TLS (docs/security.md). Used by docker-compose.tls.yml; fine for a lab, a starting
# point for production (keep ca.key offline there).
#
#   scripts/make-certs.sh DIR [COLLECTOR_NAME...] -- [AGENT_ID...]
#   scripts/make-certs.sh certs collector-1 collector-2 localhost -- agent-1 agent-2
#
# Writes DIR/ca.pem, DIR/ca.key, DIR/collector.pem + .key (every COLLECTOR_NAME as a DNS SAN,
# plus 127.0.0.1) and DIR/<agent>.pem + .key (CN and DNS SAN = the agent id). Existing files
# are kept, so it can run at every start; delete DIR to start over.
set -eu
dir=${1:?usage: make-certs.sh DIR [COLLECTOR_NAME...] -- [AGENT_ID...]}
shift
servers=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do servers="$servers $1"; shift; done
[ $# -gt 0 ] && shift
[ -n "$servers" ] || servers="localhost"
days=${CERT_DAYS:-825}
mkdir -p "$dir"
cd "$dir"
umask 077

if [ ! -f ca.pem ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -keyout ca.key -out ca.pem -subj "/CN=telemetry CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
fi

# issue NAME CN SAN EKU
issue() {
  [ -f "$1.pem" ] && return 0
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$1.key" -out "$1.csr" -subj "/CN=$2"
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
    "$4" "$3" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
    -sha256 -extfile "$1.ext" -out "$1.pem"
  rm -f "$1.csr" "$1.ext"
}

san="IP:127.0.0.1"
first=""
for name in $servers; do
  san="$san,DNS:$name"
  [ -n "$first" ] || first=$name
done
issue collector "$first" "$san" serverAuth
for agent in "$@"; do
  issue "$agent" "$agent" "DNS:$agent" clientAuth
done
# Readable by the containers' unprivileged user (uid 10001); the CA key stays private.
chmod 644 ./*.pem ./*.key
chmod 600 ca.key
ls -l
