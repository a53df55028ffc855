#!/usr/bin/env bash
# Installs the system packages pgcloak's demo, tests and benchmarks need, when
# they are missing. Idempotent: does nothing when everything is present.
#   PostgreSQL server binaries (initdb, postgres), psql, pgbench,
#   SoftHSM2 (softhsm2-util + the PKCS#11 module), pkcs11-tool (opensc),
#   PgBouncer (benchmarks and comparisons).
set -euo pipefail

have_pg_server() {
  local f
  command -v initdb >/dev/null 2>&1 && return 0
  for f in /usr/lib/postgresql/*/bin/initdb; do [ -x "$f" ] && return 0; done
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && return 0
  return 1
}
have_softhsm_module() {
  local f
  for f in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so /usr/lib64/softhsm/libsofthsm2.so /usr/lib64/pkcs11/libsofthsm2.so; do
    [ -e "$f" ] && return 0
  done
  return 1
}
have_pgbouncer() {
  command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]
}

pkgs=()
have_pg_server || pkgs+=(postgresql)
command -v psql >/dev/null 2>&1 || pkgs+=(postgresql-client)
command -v pgbench >/dev/null 2>&1 || pkgs+=(postgresql-contrib)
{ command -v softhsm2-util >/dev/null 2>&1 && have_softhsm_module; } || pkgs+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || pkgs+=(opensc)
have_pgbouncer || pkgs+=(pgbouncer)

if [ ${#pkgs[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: missing: ${pkgs[*]}" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: no apt-get here; install these packages yourself: ${pkgs[*]}" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-deps: not root and no sudo; install: ${pkgs[*]}" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
# The Debian postgresql package starts a cluster of its own; pgcloak never
# uses it (tests run their own throwaway clusters), so stop it if it runs.
if command -v pg_lsclusters >/dev/null 2>&1 && pg_lsclusters -h 2>/dev/null | grep -q online; then
  $SUDO pg_ctlcluster --force "$(pg_lsclusters -h | awk 'NR==1{print $1}')" "$(pg_lsclusters -h | awk 'NR==1{print $2}')" stop 2>/dev/null || true
fi
echo "install-deps: installed ${pkgs[*]}" >&2
