#!/usr/bin/env bash
# Sets up one RabbitMQ vhost for the saga orchestrator with least privilege: a user per
# service, permission regexes that allow exactly what each service does, limits, and the
# topology declared once by the deployer (the services themselves may not configure).
# Safe to run again: everything is created if missing and converged if present.
# The model, the regexes and why each is needed: docs/security.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: rabbitmq-least-privilege.sh [options] VHOST PARTICIPANT...

Creates (idempotently) VHOST and these users, each with only the permissions it needs:
  <prefix>orchestrator            the orchestrator (and the operator commands retry/abort)
  <prefix>participant-<name>      one per PARTICIPANT named here
  <prefix>client                  `saga start` and other programs that start sagas
  <prefix>dlq-operator            `saga dlq list|show|replay`
  <prefix>deployer                declares the topology (the only user that may configure)
then declares the topology as the deployer, sets the queue-length policy and the vhost and
user limits. A new user's password comes from SAGA_PASSWORD_<ROLE> (ROLE: ORCHESTRATOR,
CLIENT, DLQ_OPERATOR, DEPLOYER, PARTICIPANT_<NAME>, upper case, other characters as _)
or is generated and printed once; an existing user keeps its password unless one is given.

options:
  --user-prefix P     prefix of the user names (default: saga-)
  --max-length N      messages a work queue may hold before publishers get nacks
                      (default: 100000; the queues' own x-max-length is 1000000)
  --no-declare        do not declare the topology (the services will refuse to start
                      until it exists)
  --restrict-guest    remove guest's permissions on VHOST
  --delete-guest      delete the guest user altogether (every vhost)
  -h, --help          this text

environment:
  SAGA_RABBITMQCTL       the rabbitmqctl command (default: rabbitmqctl)
  SAGA_PYTHON            a Python with this package installed, to declare the topology
                         (default: python3)
  SAGA_DEPLOY_AMQP_URL   the broker, without user or vhost (default: amqp://localhost:5672/);
                         amqps:// uses SAGA_AMQP_CA_FILE, SAGA_AMQP_CERT_FILE, SAGA_AMQP_KEY_FILE
  SAGA_VHOST_MAX_CONNECTIONS (default 1000), SAGA_VHOST_MAX_QUEUES (default 1000),
  SAGA_USER_MAX_CONNECTIONS (default 64), SAGA_USER_MAX_CHANNELS (default 512)
EOF
}

die() {
  echo "rabbitmq-least-privilege: $*" >&2
  exit 2
}

prefix="saga-"
max_length=100000
declare_topology=1
restrict_guest=0
delete_guest=0
positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --user-prefix) [ $# -ge 2 ] || die "--user-prefix needs a value"; prefix="$2"; shift 2 ;;
    --max-length) [ $# -ge 2 ] || die "--max-length needs a value"; max_length="$2"; shift 2 ;;
    --no-declare) declare_topology=0; shift ;;
    --restrict-guest) restrict_guest=1; shift ;;
    --delete-guest) delete_guest=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; positional+=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) positional+=("$1"); shift ;;
  esac
done
[ ${#positional[@]} -ge 2 ] || { usage >&2; exit 2; }
vhost="${positional[0]}"
participants=("${positional[@]:1}")

[[ "$max_length" =~ ^[1-9][0-9]*$ ]] || die "--max-length must be a positive whole number, not '$max_length'"
[[ "$prefix" =~ ^[A-Za-z0-9_.-]*$ ]] || die "--user-prefix may hold only letters, digits, '_', '.' and '-'"
for name in "${participants[@]}"; do
  # The participant name rule of the saga definitions: it is also a routing key and a
  # queue name, and is spliced into the permission regexes below (escaped).
  [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "participant name '$name' must be letters, digits, '_', '.' or '-'"
done
for limit in SAGA_VHOST_MAX_CONNECTIONS SAGA_VHOST_MAX_QUEUES SAGA_USER_MAX_CONNECTIONS SAGA_USER_MAX_CHANNELS; do
  value="${!limit:-}"
  [ -z "$value" ] || [[ "$value" =~ ^[1-9][0-9]*$ ]] || die "$limit must be a positive whole number, not '$value'"
done

read -r -a ctl <<<"${SAGA_RABBITMQCTL:-rabbitmqctl}"
python="${SAGA_PYTHON:-python3}"
command -v "${ctl[0]}" >/dev/null || die "${ctl[0]} not found; set SAGA_RABBITMQCTL"

rmq() {
  "${ctl[@]}" --quiet "$@" >/dev/null
}

regex_escape() {
  # Participant names hold only [A-Za-z0-9_.-]; of those only '.' means something in a regex.
  printf '%s' "${1//./\\.}"
}

role_variable() {
  local role="${1^^}"
  printf 'SAGA_PASSWORD_%s' "${role//[^A-Z0-9]/_}"
}

generate_password() {
  # 32 characters from [A-Za-z0-9]: no shell or URL quoting needed anywhere. (Reading a
  # fixed amount first: tr on an endless /dev/urandom dies of SIGPIPE under pipefail.)
  local raw=""
  while [ ${#raw} -lt 32 ]; do
    raw+="$(head -c 512 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9')"
  done
  printf '%s' "${raw:0:32}"
}

existing_users="$("${ctl[@]}" --quiet list_users --no-table-headers | cut -f1)"
generated=()

ensure_user() {
  local user="$1" role="$2" variable password
  variable="$(role_variable "$role")"
  password="${!variable:-}"
  if grep -qxF -- "$user" <<<"$existing_users"; then
    if [ -n "$password" ]; then
      rmq change_password "$user" "$password"
    fi
  else
    if [ -z "$password" ]; then
      password="$(generate_password)"
      generated+=("$user $password")
    fi
    rmq add_user "$user" "$password"
  fi
  # No tags: no management UI, no impersonator (user_id stays verifiable).
  rmq set_user_tags "$user"
  rmq set_user_limits "$user" \
    "{\"max-connections\": ${SAGA_USER_MAX_CONNECTIONS:-64}, \"max-channels\": ${SAGA_USER_MAX_CHANNELS:-512}}"
}

grant() {
  local user="$1" configure="$2" write="$3" read="$4"
  rmq set_permissions -p "$vhost" "$user" "$configure" "$write" "$read"
}

# -- the vhost ----------------------------------------------------------------------------
if ! "${ctl[@]}" --quiet list_vhosts --no-table-headers | grep -qxF -- "$vhost"; then
  rmq add_vhost "$vhost"
fi
rmq set_vhost_limits -p "$vhost" \
  "{\"max-connections\": ${SAGA_VHOST_MAX_CONNECTIONS:-1000}, \"max-queues\": ${SAGA_VHOST_MAX_QUEUES:-1000}}"

# -- the regexes (docs/security.md explains each) -------------------------------------------
nothing='^$'
participant_names=""
for name in "${participants[@]}"; do
  participant_names+="${participant_names:+|}$(regex_escape "$name")"
done

orchestrator="${prefix}orchestrator"
ensure_user "$orchestrator" orchestrator
grant "$orchestrator" "$nothing" \
  '^(saga\.commands|saga\.dlx|amq\.default)$' \
  '^saga\.orchestrator\.(start|replies)$'

for name in "${participants[@]}"; do
  user="${prefix}participant-${name}"
  ensure_user "$user" "participant_${name}"
  grant "$user" "$nothing" \
    '^(saga\.dlx|amq\.default)$' \
    "^saga\\.participant\\.$(regex_escape "$name")\$"
done

client="${prefix}client"
ensure_user "$client" client
grant "$client" '^saga\.client\.[0-9a-f-]+$' '^amq\.default$' '^saga\.client\.[0-9a-f-]+$'

dlq_operator="${prefix}dlq-operator"
ensure_user "$dlq_operator" dlq_operator
grant "$dlq_operator" "$nothing" '^amq\.default$' \
  "^saga\\.(orchestrator\\.(start|replies)|participant\\.(${participant_names}))\\.dlq\$"

deployer="${prefix}deployer"
ensure_user "$deployer" deployer
grant "$deployer" '^saga\.' '^saga\.' '^saga\.'

# -- limits on the work queues --------------------------------------------------------------
# Only max-length and overflow: the queues declare x-max-length (the lower of argument and
# policy wins) and x-overflow=reject-publish (a quorum queue takes the policy's overflow
# over its argument, so it must stay reject-publish: drop-head would silently turn the
# at-least-once dead-lettering into at-most-once). The DLQs get no policy: the DLQ tool
# reads them by handing messages back, which a delivery limit would break, and
# reject-publish is not honoured on a dead-letter target (rabbitmq-server #8495).
rmq set_policy -p "$vhost" --apply-to queues --priority 10 saga-work-queue-limits \
  "^saga\\.(orchestrator\\.(start|replies)|participant\\.(${participant_names}))\$" \
  "{\"max-length\": ${max_length}, \"overflow\": \"reject-publish\"}"

# -- guest ----------------------------------------------------------------------------------
if [ "$restrict_guest" = 1 ] && grep -qxF guest <<<"$existing_users"; then
  "${ctl[@]}" --quiet clear_permissions -p "$vhost" guest >/dev/null 2>&1 || true
fi
if [ "$delete_guest" = 1 ] && grep -qxF guest <<<"$existing_users"; then
  rmq delete_user guest
fi

# Printed before anything else can fail: a password generated and lost cannot be recovered.
echo "vhost '$vhost': users ${orchestrator}, ${prefix}participant-{$(IFS=,; echo "${participants[*]}")}, ${client}, ${dlq_operator}, ${deployer}"
if [ ${#generated[@]} -gt 0 ]; then
  echo "generated passwords (shown this once; store them now):"
  for entry in "${generated[@]}"; do
    echo "  ${entry%% *} ${entry#* }"
  done
fi

# -- the topology, declared by the deployer -------------------------------------------------
if [ "$declare_topology" = 1 ]; then
  deployer_password="$(role_variable deployer)"
  deployer_password="${!deployer_password:-}"
  if [ -z "$deployer_password" ]; then
    for entry in "${generated[@]}"; do
      [ "${entry%% *}" = "$deployer" ] && deployer_password="${entry#* }"
    done
  fi
  [ -n "$deployer_password" ] || die "cannot declare the topology: $deployer exists and SAGA_PASSWORD_DEPLOYER is not set (set it, or pass --no-declare)"
  SAGA_DEPLOY_USER="$deployer" SAGA_DEPLOY_PASSWORD="$deployer_password" SAGA_DEPLOY_VHOST="$vhost" \
    "$python" - "${participants[@]}" <<'PY' || die "declaring the topology failed (above)"
import asyncio
import os
import sys
from urllib.parse import quote

try:
    from yarl import URL

    from orchestrator.errors import SagaError
    from orchestrator.tls import TlsSettings
    from orchestrator.topology import orchestrator_topology
    from orchestrator.transports.amqp import AmqpTransport
except ImportError as exc:
    sys.exit(f"rabbitmq-least-privilege: {sys.executable} cannot import the orchestrator "
             f"package ({exc}); set SAGA_PYTHON to the Python of its virtual environment")


async def declare() -> None:
    base = URL(os.environ.get("SAGA_DEPLOY_AMQP_URL") or "amqp://localhost:5672/")
    url = base.with_user(os.environ["SAGA_DEPLOY_USER"]).with_password(
        os.environ["SAGA_DEPLOY_PASSWORD"]
    ).with_path("/" + quote(os.environ["SAGA_DEPLOY_VHOST"], safe=""), encoded=True)
    url_text = TlsSettings.from_env(os.environ).applied_to(str(url))
    transport = AmqpTransport(url_text, name="saga-deployer")
    await transport.connect()
    try:
        await transport.declare(orchestrator_topology(sys.argv[1:]))
    finally:
        await transport.close()


try:
    asyncio.run(declare())
except SagaError as exc:
    sys.exit(f"rabbitmq-least-privilege: {exc}")
PY
  echo "vhost '$vhost': topology declared by ${deployer}"
fi
