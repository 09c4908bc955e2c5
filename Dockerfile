# syntax=docker/dockerfile:1
#
# jira-authz image: the Envoy ext_authz gRPC service (`jira-authz serve`).
#
#   docker build -t jira-authz:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#
# Base: python:3.11-slim-bookworm pinned by digest (Docker Hub, as published 2026-08-24) so a
# rebuild gets the same bits; refresh with
#   docker buildx imagetools inspect python:3.11-slim-bookworm --format '{{json .Manifest.Digest}}'
# and pass it as --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# --- builder: the project wheel plus wheels of every runtime dependency -----------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The context is an allow-list (.dockerignore): pyproject, the package, protos, Envoy configs.
COPY . .
# Build isolation fetches the build requirements (setuptools, grpcio-tools) into a throw-away
# environment; only wheels land in /wheels. No compiler needed: every dependency ships
# manylinux wheels for CPython 3.11.
RUN pip wheel --wheel-dir /wheels . \
 && test -n "$(find /wheels -name 'jira_authz-*.whl')"

# --- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="jira-authz" \
      org.opencontainers.image.description="Envoy external-authorization service: API tokens in front of Jira" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

# No .pyc writes at run time (read-only root filesystem); stdout unbuffered for JSON logs.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# Install from the builder's wheels only (--no-index): nothing resolved from the network here,
# no build tools, no sources. pip compiles the .pyc files at install time, so the read-only
# root filesystem costs no start-up time. pip itself is removed from the final image afterwards:
# nothing installs at run time.
# xds-protos overwrites OpenTelemetry's proto modules with an old copy: opentelemetry-proto is
# reinstalled last so the OTLP exporter loads.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/jira_authz-*.whl \
 && pip install --no-index --find-links=/wheels --force-reinstall --no-deps \
        /wheels/opentelemetry_proto-*.whl \
 && pip uninstall -y pip setuptools wheel \
 && groupadd --system --gid 10001 jira-authz \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin jira-authz \
 && mkdir -p /etc/jira-authz

# Numeric UID so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
# 9191 Envoy Check + gRPC health (and 9192… for --workers), 9291 the same Check over HTTP/1.1 for
# Envoy's gRPC bridge (9292…), 9190 admin API (never routed through Envoy), 9090 metrics.
EXPOSE 9191 9291 9190 9090
ENTRYPOINT ["jira-authz", "serve"]
CMD ["--config", "/etc/jira-authz/config.yaml"]
