# Production Envoy image: the Envoy configs of every entry point (PLANT, CP, PP) rendered for one
# target, under /etc/gateway/envoy. GATEWAY_ENTRY (plant, cp, pp) picks the one to run. Runs as
# Envoy's uid 101 with a read-only root: Envoy writes only its stdout and its audit access log,
# in the target's audit.access_log_dir (/var/run/gateway/access-logs), where the deployment
# mounts a volume it shares with the audit shipper (no hot restart).
#
#   docker build -f deploy/images/envoy.Dockerfile --build-arg TARGET=cloudrun \
#       --build-arg RENDER_ARGS="--var project_number=123456789012" -t gateway/envoy .
#
# The render stage has Python and the render libraries; the final stage only Envoy's base.
#checkov:skip=CKV_DOCKER_7:the base is an ARG defaulting to a pinned version tag (checkov cannot resolve ARG)
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG ENVOY_IMAGE=envoyproxy/envoy:v1.40.0

FROM ${PYTHON_IMAGE} AS render
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY deploy/images/render-requirements.txt ./
RUN python3 -m venv /opt/render && /opt/render/bin/pip install -r render-requirements.txt
COPY render.py ./
COPY config/ config/
COPY envoy_templates/ envoy_templates/
COPY gateway_config/ gateway_config/
COPY authz_service/ authz_service/
COPY policies/ policies/
ARG TARGET=cloudrun
ARG RENDER_ARGS=
# hadolint ignore=SC2086 - RENDER_ARGS is a list of arguments
RUN /opt/render/bin/python render.py --config config/gateway.yaml --target "$TARGET" $RENDER_ARGS \
        --out /out --envoy-dir /etc/gateway/envoy \
    && /opt/render/bin/python -c "import sys, yaml; [print(e, yaml.safe_load(open(f'/out/envoy/{e}/lds.yaml'))['resources'][0]['address']['socket_address']['port_value']) for e in sys.argv[1:]]" plant cp pp > /out/envoy/ports

FROM ${ENVOY_IMAGE}
LABEL org.opencontainers.image.title="envoy-authz-gateway envoy" \
      org.opencontainers.image.description="Envoy with the rendered PLANT, CP and PP configs"
COPY --from=render /out/envoy /etc/gateway/envoy
COPY deploy/images/gateway-envoy.sh /usr/local/bin/gateway-envoy
# the mount point of the access-log volume; Envoy (101) writes, the shipper (10001) renames and
# removes: a volume that starts from it (an anonymous one) is writable by both. A deployment's
# own volume (Cloud Run in-memory, a pod's emptyDir) replaces it.
RUN mkdir -p /var/run/gateway/access-logs && chmod 0777 /var/run/gateway/access-logs
ENV GATEWAY_ENTRY=plant
USER 101:101
EXPOSE 8090 8015 8006
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/gateway-envoy", "--health"]
ENTRYPOINT ["/usr/local/bin/gateway-envoy"]
