#!/usr/bin/env bash
# CI smoke test of the compose stack: build and start it, wait until every service is healthy,
# then check 401 through CP and PP, 200 with a token through PLANT, CP and PP, and the audit
# rows in PostgreSQL; always `docker compose down -v` at the end, whatever happened.
#
#   eval "$(../shared/containers/setup --env)"   # stand-in images + DOCKER_HOST (CI)
#   compose/ci-smoke.sh
#
# Host ports are free ones unless PLANT_PORT, CP_PORT, PP_PORT, BACKEND_PORT, POSTGRES_PORT are
# set; secrets are generated for this run only (a temporary env file, mode 0600).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-gateway-smoke-$$}
WAIT_SECONDS=${WAIT_SECONDS:-900}
LONG_RUNNING=(postgres redis opa authz backend envoy-plant envoy-cp envoy-pp)

log() { printf 'ci-smoke: %s\n' "$*" >&2; }
fail() {
	log "FAILED: $*"
	exit 1
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }

for var in PLANT_PORT CP_PORT PP_PORT BACKEND_PORT POSTGRES_PORT; do
	[[ -n ${!var:-} ]] || export "$var=$(free_port)"
done
# The OPA healthcheck runs OPA's own binary: take its path from the image's entrypoint.
opa_image=${OPA_IMAGE:-openpolicyagent/opa:1.22.2}
if [[ -z ${OPA_BINARY:-} ]]; then
	entry=$(docker image inspect --format '{{if .Config.Entrypoint}}{{index .Config.Entrypoint 0}}{{end}}' "$opa_image" 2>/dev/null || true)
	[[ -z $entry ]] || export OPA_BINARY=$entry
fi
# pip in the image build trusts the image's CA bundle (stand-ins carry the local proxy's CA).
export BUILD_PIP_CERT=${BUILD_PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}

env_file=$(mktemp)
chmod 600 "$env_file"
printf 'POSTGRES_PASSWORD=%s\nDEV_JWT_SECRET=%s\n' "$(secret)" "$(secret)" >"$env_file"
body=$(mktemp)

compose() { docker compose --env-file "$env_file" -f docker-compose.yml "$@"; }

cleanup() {
	local rc=$?
	if ((rc != 0)); then
		log "state of the stack:"
		compose ps -a >&2 || true
		compose logs --no-color --tail=100 >&2 || true
	fi
	log "docker compose down -v"
	compose down -v --remove-orphans >&2 || true
	rm -f "$env_file" "$body"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "docker compose up --build (project $COMPOSE_PROJECT_NAME)"
compose up --build --detach

health() {
	local id
	id=$(compose ps -a -q "$1")
	[[ -n $id ]] || {
		echo missing
		return
	}
	docker inspect --format '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id"
}
deadline=$((SECONDS + WAIT_SECONDS))
for service in "${LONG_RUNNING[@]}"; do
	while true; do
		state=$(health "$service")
		[[ $state == running/healthy ]] && break
		[[ $state == exited/* || $state == dead/* || $state == */unhealthy ]] && fail "$service is $state"
		((SECONDS < deadline)) || fail "$service not healthy after ${WAIT_SECONDS}s ($state)"
		sleep 2
	done
	log "$service healthy"
done

# request EXPECTED_STATUS URL CORRELATION_ID [curl args...]: the status, and problem+json on errors
request() {
	local expected=$1 url=$2 correlation=$3
	shift 3
	local got
	got=$(curl -sS -o "$body" -w '%{http_code} %{content_type}' -H "x-correlation-id: $correlation" "$@" "$url")
	[[ ${got%% *} == "$expected" ]] || fail "$url: got ${got%% *}, wanted $expected: $(head -c 500 "$body")"
	if ((expected >= 400)); then
		[[ ${got#* } == application/problem+json* ]] || fail "$url: content type ${got#* }, wanted problem+json"
	fi
	log "$url -> $expected"
}
uuid() { python3 -c 'import uuid; print(uuid.uuid4())'; }

declare -A url=([plant]=http://127.0.0.1:$PLANT_PORT [cp]=http://127.0.0.1:$CP_PORT [pp]=http://127.0.0.1:$PP_PORT)
correlations=()
for entry in cp pp; do
	id=$(uuid)
	request 401 "${url[$entry]}/api/v1/me" "$id"
	grep -q '"token_missing"' "$body" || fail "$entry 401 body: $(cat "$body")"
	correlations+=("$id")
done
token=$(compose exec -T authz python3 -m devstack token --role customer,support --customer cust-ci --user ci-user)
for entry in plant cp pp; do
	id=$(uuid)
	request 200 "${url[$entry]}/api/v1/me" "$id" -H "Authorization: Bearer $token"
	grep -q '"cust-ci"' "$body" || fail "$entry: the backend did not see x-customer-id: $(cat "$body")"
	correlations+=("$id")
done

# Only hops reach PLANT's internal listener: a client's x-causation-id never gets through PLANT.
forged=$(uuid)
request 200 "${url[plant]}/api/v1/me" "$(uuid)" -H "Authorization: Bearer $token" -H "x-causation-id: $forged"
if grep -q "$forged" "$body"; then fail "PLANT passed a client's x-causation-id to the backend"; fi

ids=$(printf "'%s'," "${correlations[@]}")
sql="SELECT count(DISTINCT correlation_id) FROM gateway_audit_logs WHERE correlation_id IN (${ids%,})"
for _ in $(seq 30); do
	found=$(compose exec -T postgres sh -c 'PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -tAc "$0"' "$sql" | tr -d '[:space:]')
	[[ $found == "${#correlations[@]}" ]] && break
	sleep 1
done
[[ $found == "${#correlations[@]}" ]] || fail "audit rows for $found of ${#correlations[@]} requests"
log "audit rows in PostgreSQL for all ${#correlations[@]} requests"

# Budgets survive a Redis restart (append-only file): a counter written before is there after.
counter="budget:{customer:ci-smoke}:api_calls:day:$(date -u +%F)"
compose exec -T redis redis-cli set "$counter" 7 >/dev/null
compose restart redis >&2
for _ in $(seq 60); do
	[[ $(compose exec -T redis redis-cli ping 2>/dev/null | tr -d '[:space:]') == PONG ]] && break
	sleep 1
done
[[ $(compose exec -T redis redis-cli get "$counter" | tr -d '[:space:]') == 7 ]] ||
	fail "a Redis restart lost the budget counter $counter"
log "a budget counter survived a Redis restart"
log "OK"
