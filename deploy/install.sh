#!/usr/bin/env bash
# Install IKOMA on a Debian/Ubuntu VPS: a venv in /opt/ikoma, the secrets in /etc/ikoma (0600), the
# systemd units of deploy/systemd/, then `ikoma serve` and a runner for this machine.
#
#   sudo deploy/install.sh                          # API (SQLite in /var/lib/ikoma) + this machine's runner
#   sudo deploy/install.sh --database-url postgresql://ikoma:…@db.internal:5432/ikoma
#   sudo IKOMA_BOOTSTRAP_TOKEN=ikb_… deploy/install.sh --runner-only --api-url https://ikoma.example.net
#
# Run it again to upgrade: the package is reinstalled and the units rewritten; secrets, settings and the
# runner's credentials are kept as they are. Nothing given on the command line reaches a shell unquoted.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: install.sh [options]
  --source SPEC          what pip installs (default: the checkout this script belongs to)
  --port N               port of the API, on 127.0.0.1 (default 3000; put Caddy or nginx in front)
  --database-url URL     PostgreSQL (default: SQLite in /var/lib/ikoma); kept in /etc/ikoma/secrets.env
  --no-runner            install the API only
  --runner-only          install the runner only (another machine): needs --api-url and the
                         one-time token in IKOMA_BOOTSTRAP_TOKEN (`ikoma runners bootstrap-token`)
  --api-url URL          the API the runner talks to (default: http://127.0.0.1:PORT)
  --no-start             write everything, start nothing
EOF
}

die() {
  printf 'install.sh: %s\n' "$*" >&2
  exit 1
}

say() {
  printf '==> %s\n' "$*"
}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=/opt/ikoma
VENV="$PREFIX/venv"
ETC=/etc/ikoma
DATA_DIR=/var/lib/ikoma
RUNNER_DIR=/var/lib/ikoma-runner
UNIT_DIR=/etc/systemd/system
SERVICE_USER=ikoma

source_spec="$SCRIPT_DIR/.."
port=3000
database_url=""
api_url=""
with_api=1
with_runner=1
start=1

while [ "$#" -gt 0 ]; do
  case "$1" in
    --source) source_spec=${2:?--source needs a value}; shift 2 ;;
    --port) port=${2:?--port needs a value}; shift 2 ;;
    --database-url) database_url=${2:?--database-url needs a value}; shift 2 ;;
    --api-url) api_url=${2:?--api-url needs a value}; shift 2 ;;
    --no-runner) with_runner=0; shift ;;
    --runner-only) with_api=0; shift ;;
    --no-start) start=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

if ! [[ "$port" =~ ^[1-9][0-9]{0,4}$ ]] || [ "$port" -gt 65535 ]; then
  die "--port must be 1-65535"
fi
if [ -n "$database_url" ]; then
  [[ "$database_url" =~ ^postgres(ql)?:// ]] || die "--database-url must start with postgresql://"
fi
# values written to an EnvironmentFile: no quote, backslash, space or newline to escape there
for value in "$database_url" "$api_url"; do
  [[ "$value" =~ [[:space:]\"\'\\] ]] && die "a URL may not hold spaces, quotes or backslashes"
done
if [ "$with_api" -eq 0 ]; then
  [ "$with_runner" -eq 1 ] || die "--runner-only and --no-runner leave nothing to install"
  [ -n "$api_url" ] || die "--runner-only needs --api-url"
  [ -n "${IKOMA_BOOTSTRAP_TOKEN:-}" ] || [ -f "$RUNNER_DIR/runner.json" ] ||
    die "--runner-only needs IKOMA_BOOTSTRAP_TOKEN (from \`ikoma runners bootstrap-token\` on the API host)"
fi
api_url=${api_url:-http://127.0.0.1:$port}
[ "$(id -u)" -eq 0 ] || die "run as root (sudo)"
command -v apt-get >/dev/null || die "this script is for Debian or Ubuntu (apt-get not found)"
[ -f "$SCRIPT_DIR/systemd/ikoma-serve.service" ] || die "run it from an IKOMA checkout (deploy/systemd/ missing)"

# --- packages ---------------------------------------------------------------------------------------
# Debian's own interpreter, never one found first on PATH (pyenv, /usr/local): the venv links to it,
# and the service user must be able to run it
PYTHON=/usr/bin/python3
missing=()
[ -x "$PYTHON" ] || missing+=(python3)
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "IKOMA needs Python >= 3.11 (Debian 12, Ubuntu 24.04 or later); found $("$PYTHON" --version)"

# --- IKOMA in a venv ------------------------------------------------------------------------------
if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.base_prefix != "/usr")' 2>/dev/null; then
  say "creating $VENV"
  install -d -m 0755 "$PREFIX"
  "$PYTHON" -m venv --clear "$VENV"
fi
say "installing IKOMA from $source_spec"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet --upgrade -- "$source_spec"
ikoma="$VENV/bin/ikoma"

# --- user, directories --------------------------------------------------------------------------------
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
  say "creating the system user $SERVICE_USER"
  useradd --system --user-group --home-dir "$DATA_DIR" --shell /usr/sbin/nologin "$SERVICE_USER"
fi
install -d -m 0750 -o root -g "$SERVICE_USER" "$ETC"
install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$DATA_DIR"
install -d -m 0700 -o root -g root "$RUNNER_DIR"

# new_file PATH MODE OWNER:GROUP: an empty file made with its final mode, unless it exists
new_file() {
  if [ ! -e "$1" ]; then
    install -m "$2" -o "${3%:*}" -g "${3#*:}" /dev/null "$1"
    return 0
  fi
  return 1
}

# has_var FILE NAME: whether FILE sets NAME
has_var() {
  grep -q -- "^$2=" "$1"
}

# set_var FILE NAME VALUE: append NAME=VALUE unless FILE already sets NAME (a kept value wins)
set_var() {
  has_var "$1" "$2" || printf '%s=%s\n' "$2" "$3" >>"$1"
}

py() {
  "$VENV/bin/python" -c "$1"
}

# --- secrets: generated once, 0600, never printed ---------------------------------------------------
if [ "$with_api" -eq 1 ]; then
  if new_file "$ETC/admin.key" 0600 root:root; then
    say "generating the admin key ($ETC/admin.key)"
    py 'import secrets; print("ika_" + secrets.token_urlsafe(32))' >"$ETC/admin.key"
  fi
  new_file "$ETC/secrets.env" 0600 root:root || true
  chmod 0600 "$ETC/admin.key" "$ETC/secrets.env"
  set_var "$ETC/secrets.env" IKOMA_ADMIN_KEY "$(head -n 1 "$ETC/admin.key")"
  if ! has_var "$ETC/secrets.env" IKOMA_ENCRYPTION_KEYS; then
    say "generating the encryption key (IKOMA_ENCRYPTION_KEYS in $ETC/secrets.env)"
    set_var "$ETC/secrets.env" IKOMA_ENCRYPTION_KEYS "$(py 'from ikoma.services.vault import new_key; print(new_key())')"
  fi
  if ! has_var "$ETC/secrets.env" IKOMA_AUDIT_KEY; then
    say "generating the audit key (IKOMA_AUDIT_KEY in $ETC/secrets.env)"
    set_var "$ETC/secrets.env" IKOMA_AUDIT_KEY "$(py 'import secrets; print(secrets.token_hex(32))')"
  fi
  if [ -n "$database_url" ]; then
    if has_var "$ETC/secrets.env" DATABASE_URL; then
      say "keeping the DATABASE_URL already in $ETC/secrets.env (edit it there to change it)"
    else
      set_var "$ETC/secrets.env" DATABASE_URL "$database_url"
    fi
  fi

  # settings of the API (docs/configuration.md): written once, then the operator's file
  if new_file "$ETC/ikoma.env" 0640 root:"$SERVICE_USER"; then
    {
      echo "# IKOMA settings (docs/configuration.md); secrets live in secrets.env"
      echo "HOST=127.0.0.1"
      echo "PORT=$port"
      echo "IKOMA_DATA_DIR=$DATA_DIR"
      echo "IKOMA_LOG_LEVEL=info"
      echo "# the audit log's JSONL mirror (/var/log/ikoma is the unit's LogsDirectory); better on other storage"
      echo "#IKOMA_AUDIT_LOG=/var/log/ikoma/audit.jsonl"
    } >>"$ETC/ikoma.env"
  fi
fi

if [ "$with_runner" -eq 1 ]; then
  # the runner's settings: where its credentials (with the API's URL) and spool live, the operations
  # tools' dirs. No IKOMA_API_URL: it would override the URL `ikoma runner register` wrote to runner.json
  if new_file "$ETC/runner.env" 0600 root:root; then
    {
      echo "# IKOMA runner settings (docs/configuration.md, docs/operations.md)"
      echo "IKOMA_DATA_DIR=$RUNNER_DIR"
      echo "IKOMA_APPS_ROOT=/srv/apps"
      echo "IKOMA_BACKUPS_DIR=/var/backups/ikoma"
    } >>"$ETC/runner.env"
  fi
fi

# --- systemd units: the files of deploy/systemd/, as shipped ---------------------------------------
units=()
[ "$with_api" -eq 1 ] && units+=(ikoma-serve.service)
[ "$with_runner" -eq 1 ] && units+=(ikoma-runner.service)
for unit in "${units[@]}"; do
  install -m 0644 "$SCRIPT_DIR/systemd/$unit" "$UNIT_DIR/$unit"
done
say "units written: ${units[*]}"

# register_runner: trade IKOMA_BOOTSTRAP_TOKEN for the runner's credentials ($RUNNER_DIR/runner.json, 0600);
# the token reaches `ikoma runner register` through its environment, never its argv
register_runner() {
  say "registering this machine's runner with $api_url"
  IKOMA_BOOTSTRAP_TOKEN="$1" IKOMA_DATA_DIR="$RUNNER_DIR" "$ikoma" runner register --api-url "$api_url"
}

# a runner joining an API elsewhere registers now, whether or not anything starts here
if [ "$with_runner" -eq 1 ] && [ ! -f "$RUNNER_DIR/runner.json" ] && [ -n "${IKOMA_BOOTSTRAP_TOKEN:-}" ]; then
  register_runner "$IKOMA_BOOTSTRAP_TOKEN"
fi

if [ "$start" -eq 0 ] || [ ! -d /run/systemd/system ]; then
  say "not starting anything (--no-start, or systemd is not running); then:"
  say "  systemctl daemon-reload && systemctl enable --now ${units[*]}"
  exit 0
fi

systemctl daemon-reload
if [ "$with_api" -eq 1 ]; then
  systemctl enable --quiet ikoma-serve.service
  systemctl restart ikoma-serve.service
  say "waiting for the API at http://127.0.0.1:$port/readyz"
  IKOMA_API_URL="http://127.0.0.1:$port" "$ikoma" wait --timeout 180 ||
    die "the API did not become ready: journalctl -u ikoma-serve"
fi

if [ "$with_runner" -eq 1 ]; then
  if [ ! -f "$RUNNER_DIR/runner.json" ]; then
    # this machine's own runner: a server named after the host, and a one-time token for it
    host=$(hostname -s)
    fqdn=$(hostname -f 2>/dev/null || hostname)
    IKOMA_ADMIN_KEY=$(head -n 1 "$ETC/admin.key")
    export IKOMA_API_URL="$api_url" IKOMA_ADMIN_KEY
    if ! "$ikoma" servers show "$host" --json >/dev/null 2>&1; then
      say "registering server $host"
      "$ikoma" servers create "$host" --hostname "$fqdn" --json >/dev/null
    fi
    token=$("$ikoma" runners bootstrap-token --server "$host" --name "runner-$host" --json |
      py 'import json, sys; print(json.load(sys.stdin)["token"])')
    unset IKOMA_ADMIN_KEY
    register_runner "$token"
  fi
  systemctl enable --quiet ikoma-runner.service
  systemctl restart ikoma-runner.service
fi

say "done: systemctl status ${units[*]}"
if [ "$with_api" -eq 1 ]; then
  say "admin key: sudo cat $ETC/admin.key   (back up $ETC/secrets.env apart from the database)"
fi
