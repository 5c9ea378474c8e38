#!/usr/bin/env bash
# CI smoke test of the compose stack: build the app image, start every service and wait until
# all are healthy (bounded), then send real requests through PLANT, CP and PP (401, 200 with the
# identity headers at the backend, 403 by RBAC and by OPA policy, 402 once a budget is spent)
# and check each one's audit rows in PostgreSQL, one per hop with decision and completion
# (compose/smoke_checks.py, as the reader login): no session is the superuser's, and every
# access log was rotated (a 4 KiB rotation size; the shipper asks Envoy to reopen over the admin
# socket they share). Then `audit verify` in the shipper's container passes on those rows.
# Prints the image sizes and the time from `up` to healthy; always `docker compose down -v` at
# the end and removes the app image it built.
#
#   eval "$(bash ../shared/containers/setup --env)"   # stand-in images + DOCKER_HOST (CI)
#   compose/ci-smoke.sh
#
# A service that exits, turns unhealthy or restarts fails the run at once, and one that is not
# healthy after UP_SECONDS (default 300) fails it then; either way its logs and last
# healthcheck output are printed. BUILD_SECONDS (default 900) bounds the image build.
# Host ports are free ones unless PLANT_PORT, CP_PORT, PP_PORT, BACKEND_PORT, POSTGRES_PORT are
# set; secrets are generated for this run only (a temporary env file, mode 0600). PYTHON is the
# interpreter of the checks (default: the repository's .venv, made by tools/bootstrap.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$here"
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-gateway-smoke-$$}
# Our own tag: other checkouts build theirs on the same engine at the same time.
export APP_IMAGE=${APP_IMAGE:-localhost/envoy-authz-gateway/app:$COMPOSE_PROJECT_NAME}
BUILD_SECONDS=${BUILD_SECONDS:-900}
UP_SECONDS=${UP_SECONDS:-300}
PYTHON=${PYTHON:-$repo/.venv/bin/python}
LONG_RUNNING=(postgres redis opa authz shipper backend envoy-plant envoy-cp envoy-pp)
ONE_SHOT=(render provision migrate)

log() { printf 'ci-smoke: %s\n' "$*" >&2; }
fail() {
	log "FAILED: $*"
	exit 1
}
[[ -x $PYTHON ]] || fail "no Python at $PYTHON for the checks: run tools/bootstrap.sh (or set PYTHON)"
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
secret() { "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))'; }

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
dev_jwt_secret=$(secret)
reader_password=$(secret)
{
	printf 'POSTGRES_USER=postgres\nPOSTGRES_DB=gateway\nPOSTGRES_PASSWORD=%s\n' "$(secret)"
	printf 'DEV_JWT_SECRET=%s\nREADER_DB_PASSWORD=%s\n' "$dev_jwt_secret" "$reader_password"
	for name in MIGRATOR_DB_PASSWORD SHIPPER_DB_PASSWORD RETENTION_DB_PASSWORD BACKEND_DB_PASSWORD; do
		printf '%s=%s\n' "$name" "$(secret)"
	done
	# every access log rotates during the smoke: the shipper's reopen request reaches Envoy
	printf 'ACCESS_LOG_ROTATE_BYTES=4096\n'
} >"$env_file"

compose() { docker compose --env-file "$env_file" -f docker-compose.yml "$@"; }

# state SERVICE: status/health/restarts of its container ("missing" before it exists)
state() {
	local id
	id=$(compose ps -a -q "$1" 2>/dev/null | head -n 1)
	[[ -n $id ]] || {
		echo missing
		return
	}
	docker inspect --format '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}/{{.RestartCount}}/{{.State.ExitCode}}' "$id"
}

# Logs and the last healthcheck output of every service that is not where it should be.
show_failing() {
	local service st waiting=()
	compose ps -a >&2 || true
	for service in "${LONG_RUNNING[@]}" "${ONE_SHOT[@]}"; do
		st=$(state "$service")
		case " ${ONE_SHOT[*]} " in
		*" $service "*) [[ $st == exited/*/*/0 ]] && continue ;;
		*) [[ $st == running/healthy/0/* ]] && continue ;;
		esac
		if [[ $st == missing || $st == created/* ]]; then
			waiting+=("$service") # never started: it waits on one of the others
			continue
		fi
		log "---- $service ($st): last 150 log lines"
		compose logs --no-color --tail=150 "$service" >&2 || true
		local id
		id=$(compose ps -a -q "$service" 2>/dev/null | head -n 1)
		if [[ -n $id ]]; then
			log "---- $service: last healthcheck"
			docker inspect --format '{{if .State.Health}}{{range .State.Health.Log}}exit {{.ExitCode}}: {{.Output}}{{println}}{{end}}{{else}}(no healthcheck){{end}}' "$id" 2>/dev/null | tail -n 3 >&2 || true
		fi
	done
	((${#waiting[@]} == 0)) || log "never started (waiting on the above): ${waiting[*]}"
}

up_pid=
cleanup() {
	local rc=$?
	[[ -z $up_pid ]] || kill "$up_pid" 2>/dev/null || true
	if ((rc != 0)); then
		log "state of the stack:"
		show_failing
	fi
	log "docker compose down -v"
	compose down -v --remove-orphans >&2 || true
	docker image rm "$APP_IMAGE" >/dev/null 2>&1 || true
	rm -f "$env_file"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building $APP_IMAGE (limit ${BUILD_SECONDS}s, project $COMPOSE_PROJECT_NAME)"
build_start=$SECONDS
timeout --kill-after=30 "$BUILD_SECONDS" docker compose --env-file "$env_file" -f docker-compose.yml build >&2 ||
	fail "the image build failed or took over ${BUILD_SECONDS}s"
build_seconds=$((SECONDS - build_start))

# `up` waits on depends_on conditions itself, so a crash-looping dependency would block it for
# good: it runs in the background while this loop watches every container and gives up early.
log "docker compose up (limit ${UP_SECONDS}s)"
up_start=$SECONDS
compose up --detach --no-build >&2 &
up_pid=$!
deadline=$((SECONDS + UP_SECONDS))
while true; do
	pending=()
	for service in "${ONE_SHOT[@]}"; do
		st=$(state "$service")
		[[ $st == exited/*/*/0 ]] && continue
		[[ $st == exited/* || $st == dead/* ]] && fail "$service exited: $st (status/health/restarts/exit code)"
		pending+=("$service")
	done
	for service in "${LONG_RUNNING[@]}"; do
		st=$(state "$service")
		IFS=/ read -r status health restarts _code <<<"$st"
		[[ $st == missing ]] && {
			pending+=("$service")
			continue
		}
		((restarts == 0)) || fail "$service restarted $restarts times (crash loop?): $st"
		[[ $status == exited || $status == dead ]] && fail "$service stopped: $st"
		[[ $health == unhealthy ]] && fail "$service is unhealthy"
		[[ $status == running && $health == healthy ]] || pending+=("$service")
	done
	((${#pending[@]} == 0)) && break
	if [[ -n $up_pid ]] && ! kill -0 "$up_pid" 2>/dev/null; then # `up` returned (or gave up)
		wait "$up_pid" || fail "docker compose up failed (exit $?) with ${pending[*]} not ready"
		up_pid=
	fi
	((SECONDS < deadline)) || fail "not healthy after ${UP_SECONDS}s: ${pending[*]}"
	sleep 1
done
up_seconds=$((SECONDS - up_start))
if [[ -n $up_pid ]]; then
	wait "$up_pid" || fail "docker compose up exited with $?"
	up_pid=
fi
log "all ${#LONG_RUNNING[@]} services healthy ${up_seconds}s after up (build: ${build_seconds}s)"

# A token minted where the README says (inside the authz container, with the stack's secret).
# podman's `exec -T` now and then exits 0 with its output lost: an empty token is asked for
# again (3 tries), and still empty is a failure that says so, not a smoke run without a token.
token=
for _ in 1 2 3; do
	token=$(compose exec -T authz python3 -m devstack token --role customer,support --customer cust-ci --user ci-user) ||
		fail "python -m devstack token failed in the authz container"
	[ -n "$token" ] && break
	log "python -m devstack token printed nothing (the engine lost its output); asking again"
	sleep 1
done
[ -n "$token" ] || fail "python -m devstack token printed nothing, 3 times"
GATEWAY_DEV_JWT_SECRET=$dev_jwt_secret SMOKE_TOKEN=$token PYTHONPATH=$repo "$PYTHON" smoke_checks.py \
	--plant "http://127.0.0.1:$PLANT_PORT" --cp "http://127.0.0.1:$CP_PORT" --pp "http://127.0.0.1:$PP_PORT" \
	--database-url "postgresql://gateway_reader:$reader_password@127.0.0.1:$POSTGRES_PORT/gateway" ||
	fail "the request and audit checks failed (above)"

# Nothing connects as the superuser. The observer must be one (pg_stat_activity hides other
# users' sessions from a login without pg_read_all_stats); its own session is left out.
sessions=$(compose exec -T postgres psql -U "postgres" -d gateway -tA -F ' ' -c \
	"SELECT r.rolname, r.rolsuper, a.application_name FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()") ||
	fail "cannot read pg_stat_activity"
log "database sessions (login, superuser?, application):"
printf '  %s\n' "$sessions" >&2
grep -q '^gateway_shipper f gateway-audit-shipper$' <<<"$sessions" || fail "no session of the shipper's login"
! grep -q '^[^ ]* t ' <<<"$sessions" || fail "a session connects as a superuser"

# The hash chains of every row the smoke made, checked by the image's own `audit verify` (the
# reader login, for this command only: the shipper process itself has no such credential).
compose exec -T -e "AUTHZ_VERIFY_DATABASE_URL=postgresql://gateway_reader:$reader_password@postgres:5432/gateway" \
	shipper python3 -m authz_service audit verify >&2 || fail "audit verify found rows edited, deleted or inserted"
log "audit verify: every chain intact"

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

log "image sizes:"
for image in $(compose config --images | sort -u); do
	docker image inspect --format "  {{.Size}} $image" "$image" 2>/dev/null |
		awk '{ printf "  %7.1f MB  %s\n", $1 / 1e6, $2 }' >&2 || true
done
log "time from up to healthy: ${up_seconds}s (image build before it: ${build_seconds}s)"
log "OK"
