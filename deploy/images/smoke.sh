#!/usr/bin/env bash
# Builds the production images (deploy/images/*.Dockerfile) through the container engine and
# smoke-tests them the way Cloud Run runs them: Envoy (PLANT), the authz sidecar, the audit
# shipper sidecar and the reference backend share one network namespace, each read-only,
# non-root, with no capabilities; authz and the shipper share a journal volume, Envoy and the
# shipper an access-log volume, at the image's paths (render's cloudrun target). PostgreSQL is
# provisioned by the app image (python3 -m devstack provision) and migrated as the migrations
# login. Checks: users, read-only roots, no build tools in the final stages, every HEALTHCHECK
# healthy, one config revision in both images, and through PLANT: /ready 200, no token 401
# problem+json, a token 200 with the identity headers; through CP (same image,
# GATEWAY_ENTRY=cp): 401; then each request's audit row, decision and completion, and `audit
# verify` in the shipper's container.
#
#   eval "$(PATH=$PWD/.cache/bin:$PATH bash ../shared/containers/setup --env)"
#   deploy/images/smoke.sh
#
# Only this run's containers and image tags are removed at the end, whatever happened.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$here"
run=gateway-deploy-smoke-$$
app=localhost/gateway-deploy/app:smoke-$$
envoy=localhost/gateway-deploy/envoy:smoke-$$
WAIT_SECONDS=${WAIT_SECONDS:-240}
PY=${PY:-$here/.venv/bin/python}
# Cloud Run's render, except that the backend is the sidecar here (no run.app URL to reach).
RENDER_ARGS="--var project_number=123456789012 --set upstreams.backend.host=127.0.0.1 --set upstreams.backend.port=8091 --set upstreams.backend.tls=false --set upstreams.backend.id_token_audience=null"

log() { printf 'deploy-smoke: %s\n' "$*" >&2; }
fail() {
	log "FAILED: $*"
	exit 1
}
containers=() # with a HEALTHCHECK: each must turn healthy
others=()     # PostgreSQL
volumes=("$run-journal" "$run-access-logs")
cleanup() {
	local rc=$?
	if ((rc != 0)); then
		for name in "${containers[@]}" "${others[@]}"; do
			log "logs of $name:"
			docker logs --tail 40 "$name" >&2 2>&1 || true
		done
	fi
	# newest first: the first container owns the network namespace the others join, and is
	# not removed while they exist (nor, then, the volume it mounts)
	local all=("${containers[@]}" "${others[@]}") i
	for ((i = ${#all[@]} - 1; i >= 0; i--)); do
		docker rm -f -v "${all[i]}" >/dev/null 2>&1 || true
	done
	for volume in "${volumes[@]}"; do
		docker volume rm -f "$volume" >/dev/null 2>&1 || log "could not remove volume $volume"
	done
	docker rmi -f "$app" "$envoy" >/dev/null 2>&1 || true
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# podman by default writes OCI images, which drop HEALTHCHECK: ask for the Docker format.
# The journal and access logs are named volumes (removed at the end): podman's --tmpfs over a
# directory of the image comes up root-owned whatever its mode option says, while a new volume
# takes the mode of the image's directory it is first mounted on.
# (and podman's Docker API does not show an image's healthcheck: inspect with podman too; a
# one-shot whose output is checked runs through podman as well: through its Docker API the
# output of a container that exits at once is sometimes lost, which an empty answer would hide)
if command -v podman >/dev/null; then
	build() { podman build -q --format docker "$@"; }
	inspect_image() { podman image inspect --format "$1" "$2"; }
	run_once() { podman run --rm "$@"; }
else
	build() { docker build -q "$@"; }
	inspect_image() { docker image inspect --format "$1" "$2"; }
	run_once() { docker run --rm "$@"; }
fi
build_args=(--build-arg "TARGET=cloudrun" --build-arg "RENDER_ARGS=$RENDER_ARGS")
[[ -z ${PYTHON_IMAGE:-} ]] || build_args+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
log "build $app"
build -f deploy/images/app.Dockerfile "${build_args[@]}" -t "$app" . >/dev/null
envoy_args=("${build_args[@]}")
[[ -z ${ENVOY_IMAGE:-} ]] || envoy_args+=(--build-arg "ENVOY_IMAGE=$ENVOY_IMAGE")
log "build $envoy"
build -f deploy/images/envoy.Dockerfile "${envoy_args[@]}" -t "$envoy" . >/dev/null

log "image checks: user, healthcheck, no build tools, one revision"
[[ $(inspect_image '{{.Config.User}}' "$app") == 10001:10001 ]] || fail "app image user"
[[ $(inspect_image '{{.Config.User}}' "$envoy") == 101:101 ]] || fail "envoy image user"
for image in "$app" "$envoy"; do
	[[ -n $(inspect_image '{{if .Config.Healthcheck}}{{.Config.Healthcheck.Test}}{{end}}' "$image") ]] ||
		fail "$image has no HEALTHCHECK"
	found=$(run_once --entrypoint /bin/sh "$image" -c \
		'for t in gcc cc make g++ pip pip3 /opt/venv/bin/pip; do command -v "$t" || true; done')
	[[ -z $found ]] || fail "$image has build tools: $found"
done
# no `| head` under pipefail: an early-closing reader fails the script at random (SIGPIPE)
revision() {
	local text
	text=$(run_once --entrypoint cat "$1" "$2") || fail "cannot read $2 in $1"
	grep -m 1 -oE '[0-9a-f]{64}' <<<"$text" || fail "no revision in $2 of $1"
}
app_revision=$(revision "$app" /etc/gateway/authz/runtime.json)
envoy_revision=$(revision "$envoy" /etc/gateway/envoy/plant/rds.yaml)
[[ -n $app_revision && $app_revision == "$envoy_revision" ]] ||
	fail "runtime.json revision $app_revision != Envoy's $envoy_revision"

newsecret() { "$PY" -c 'import secrets; print(secrets.token_urlsafe(32))'; }
secret=$(newsecret)
issuers="[{\"issuer\": \"https://smoke.gateway.local\", \"audiences\": [\"gateway\"], \"algorithms\": [\"HS256\"], \"hs256_secret\": \"$secret\"}]"
hardened=(--read-only --cap-drop ALL --security-opt no-new-privileges --tmpfs /tmp)
# the image's paths, render's cloudrun target: what Cloud Run's in-memory volumes are mounted on
journal=(-v "$run-journal:/var/run/gateway/journal")
access_logs=(-v "$run-access-logs:/var/run/gateway/access-logs")
declare -A passwords
for duty in migrator shipper retention reader backend; do passwords[$duty]=$(newsecret); done
db_url() { echo "postgresql://gateway_$1:${passwords[$1]}@127.0.0.1:5432/gateway"; }

log "docker run: Envoy PLANT, then PostgreSQL (provisioned, migrated), authz, shipper, backend and Envoy CP in its network namespace"
docker volume create "$run-journal" >/dev/null
docker volume create "$run-access-logs" >/dev/null
docker run -d --name "$run-plant" "${hardened[@]}" "${access_logs[@]}" -e GATEWAY_ENTRY=plant \
	-p 127.0.0.1::8090 -p 127.0.0.1::8015 -p 127.0.0.1::5432 "$envoy" >/dev/null
containers+=("$run-plant")
shared=(--network "container:$run-plant")
superuser_password=$(newsecret)
docker run -d --name "$run-db" "${shared[@]}" -e POSTGRES_PASSWORD="$superuser_password" \
	-e POSTGRES_DB=gateway "${POSTGRES_IMAGE:-postgres:15}" >/dev/null
others+=("$run-db")
pg_deadline=$((SECONDS + WAIT_SECONDS))
until docker exec "$run-db" pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; do
	((SECONDS < pg_deadline)) || fail "PostgreSQL not ready after ${WAIT_SECONDS}s"
	sleep 1
done
docker run --rm "${hardened[@]}" "${shared[@]}" \
	-e PROVISION_SUPERUSER_DSN="postgresql://postgres:$superuser_password@127.0.0.1:5432/postgres" \
	-e MIGRATOR_DB_PASSWORD="${passwords[migrator]}" -e SHIPPER_DB_PASSWORD="${passwords[shipper]}" \
	-e RETENTION_DB_PASSWORD="${passwords[retention]}" -e READER_DB_PASSWORD="${passwords[reader]}" \
	-e BACKEND_DB_PASSWORD="${passwords[backend]}" \
	"$app" python3 -m devstack provision --database gateway --passwords-from-env >/dev/null ||
	fail "provisioning (python3 -m devstack provision) failed"
docker run --rm "${hardened[@]}" "${shared[@]}" -e AUTHZ_DATABASE_URL="$(db_url migrator)" \
	"$app" alembic upgrade head >/dev/null 2>&1 || fail "alembic upgrade head as the migrations login failed"
log "PostgreSQL provisioned and migrated; no component logs in as the superuser from here on"
docker run -d --name "$run-authz" "${hardened[@]}" "${shared[@]}" "${journal[@]}" \
	-e GATEWAY_ROLE=authz -e AUTHZ_GRPC_ADDRESS=127.0.0.1:9001 -e AUTHZ_ADMIN_ADDRESS= \
	-e AUTHZ_JWT_ISSUERS="$issuers" "$app" >/dev/null
containers+=("$run-authz")
docker run -d --name "$run-shipper" "${hardened[@]}" "${shared[@]}" "${journal[@]}" "${access_logs[@]}" \
	-e GATEWAY_ROLE=shipper -e AUTHZ_SHIPPER_ACCESS_LOGS=plant,cp \
	-e AUTHZ_SHIPPER_DATABASE_URL="$(db_url shipper)" \
	-e AUTHZ_SHIPPER_RETENTION_DATABASE_URL="$(db_url retention)" \
	"$app" python3 -m authz_service audit ship >/dev/null
containers+=("$run-shipper")
docker run -d --name "$run-backend" "${hardened[@]}" "${shared[@]}" -e GATEWAY_ROLE=backend \
	-e BACKEND_PORT=8091 "$app" python3 -m backend --host 127.0.0.1 --port 8091 >/dev/null
containers+=("$run-backend")
docker run -d --name "$run-cp" "${hardened[@]}" "${shared[@]}" "${access_logs[@]}" \
	-e GATEWAY_ENTRY=cp "$envoy" >/dev/null
containers+=("$run-cp")

deadline=$((SECONDS + WAIT_SECONDS))
for name in "${containers[@]}"; do
	until [[ $(docker inspect -f '{{.State.Health.Status}}' "$name") == healthy ]]; do
		[[ $(docker inspect -f '{{.State.Running}}' "$name") == true ]] || fail "$name exited"
		((SECONDS < deadline)) || fail "$name not healthy after ${WAIT_SECONDS}s"
		sleep 1
	done
	[[ $(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$name") == true ]] || fail "$name root is writable"
	log "$name healthy"
done

port() {
	local mapped
	mapped=$(docker port "$run-plant" "$1/tcp") || fail "no published port for $1"
	mapped=${mapped%%$'\n'*}
	echo "${mapped##*:}"
}
plant=http://127.0.0.1:$(port 8090)
cp=http://127.0.0.1:$(port 8015)
reader=postgresql://gateway_reader:${passwords[reader]}@127.0.0.1:$(port 5432)/gateway
token=$("$PY" -c 'import sys; from authz_service.devtokens import sign_dev_token as s; print(s(sys.argv[1], "https://smoke.gateway.local", "gateway", "smoke-user", ["customer"], "cust-smoke"))' "$secret")
"$PY" - "$plant" "$cp" "$token" "$reader" <<'PYTHON'
"""The smoke requests and their audit rows; exits non-zero with the first thing that is wrong."""
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

import psycopg

plant, cp, token, reader = sys.argv[1:]
rows = {}  # correlation id -> (gateway type, decision, final status) of its one row


def get(url, headers=None, row=None):
    headers = dict(headers or {})
    if row is not None:
        headers["x-correlation-id"] = correlation = str(uuid.uuid4())
        rows[correlation] = row
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.headers.get("content-type", ""), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("content-type", ""), error.read()


def expect(what, got, want, body=b""):
    if got != want:
        sys.exit(f"deploy-smoke: FAILED: {what}: got {got!r}, want {want!r} {body[:400]!r}")
    print(f"deploy-smoke: {what}: {got}", file=sys.stderr)


expect("PLANT /ready", get(f"{plant}/ready")[0], 200)
status, ctype, body = get(f"{plant}/api/v1/me", row=("PLANT", "deny", 401))
expect("PLANT /api/v1/me without a token", (status, ctype), (401, "application/problem+json"))
expect("its problem type", json.loads(body)["type"].rsplit("/", 1)[-1], "token_missing")
bearer = {"authorization": f"Bearer {token}"}
status, _, body = get(f"{plant}/api/v1/me", bearer, row=("PLANT", "allow", 200))
expect("PLANT /api/v1/me with a token", status, 200, body)
headers = {name.lower(): value for name, value in json.loads(body)["headers"].items()}
expect("identity header at the backend", headers.get("x-user-id"), "smoke-user")
status, ctype, _ = get(f"{cp}/api/v1/me", row=("CP", "deny", 401))
expect("CP /api/v1/me without a token", (status, ctype), (401, "application/problem+json"))

# the journal (authz) and the access log (Envoy) joined by the shipper: one row each, both halves
deadline, found = time.monotonic() + 60, {}
while time.monotonic() < deadline:
    with psycopg.connect(reader, connect_timeout=10) as conn:
        found = {c: (g, d, s) for c, g, d, s in conn.execute(
            "SELECT correlation_id, gateway_type, decision, status_code FROM gateway_audit_logs "
            "WHERE correlation_id = ANY(%s) AND decision IS NOT NULL AND completed_at IS NOT NULL",
            (list(rows),))}
    if found == rows:
        break
    time.sleep(0.5)
expect("audit rows (decision and completion) of the smoke's requests", found, rows)
PYTHON
docker exec -e "AUTHZ_VERIFY_DATABASE_URL=$(db_url reader)" "$run-shipper" \
	python3 -m authz_service audit verify >&2 || fail "audit verify found a broken chain"
log "OK"
