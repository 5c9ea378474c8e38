#!/bin/bash
# Entrypoint of the Envoy image: runs Envoy for $GATEWAY_ENTRY (plant, cp, pp) with the flags
# render wrote (envoy/flags: the access-log flush interval), extra arguments going to Envoy;
# `--health` instead asks that entry point's listener for its readiness route, which Envoy
# answers itself (the image has bash, not curl).
set -euo pipefail
entry=${GATEWAY_ENTRY:-plant}
config=/etc/gateway/envoy/$entry.yaml
[[ -f $config ]] || { echo "gateway-envoy: no config for GATEWAY_ENTRY=$entry ($config)" >&2; exit 2; }
if [[ ${1:-} == --health ]]; then
	port=$(awk -v e="$entry" '$1 == e {print $2}' /etc/gateway/envoy/ports)
	exec 3<>"/dev/tcp/127.0.0.1/$port"
	printf 'GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
	read -r -t 3 status_line <&3
	[[ $status_line == *" 200 "* ]]
	exit
fi
flags_file=/etc/gateway/envoy/flags
[[ -f $flags_file ]] || { echo "gateway-envoy: no $flags_file (render's envoy/flags)" >&2; exit 2; }
mapfile -t flags <"$flags_file"
# no hot restart: it needs shared memory a read-only container may not have, and is not used
exec envoy -c "$config" --disable-hot-restart --log-level "${ENVOY_LOG_LEVEL:-info}" "${flags[@]}" "$@"
