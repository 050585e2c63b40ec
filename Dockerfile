# syntax=docker/dockerfile:1
# One image for every Clarion process; the command picks which:
#   clarion serve users|templates|notifications     clarion worker dispatcher|email|push|sweeper     clarion migrate
# (deploy/k8s/ runs each as its own Deployment, the migration as a Job). Envoy runs from the official Envoy image.
#
#   docker build -t ghcr.io/clarion/clarion:0.1.0 .
#
# The base is pinned by tag and by the digest of its multi-architecture index, so a rebuild starts from the same
# bits until someone moves the pin on purpose. To move it:
#   docker buildx imagetools inspect python:3.11-slim-bookworm   # prints the index digest ("Digest: sha256:…")
# and replace tag and digest below. tests/deploy/test_dockerfile.py checks the digest is there.
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS base

# Build: the wheel from pyproject.toml (hatchling, as `make install` builds the editable install), then a virtualenv
# holding it and its runtime dependencies, nothing else: no extras, no pip. The dependencies are the lockfile's
# (requirements/runtime.txt, from the same resolution as `make install`'s), each file's hash checked.
FROM base AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Exactly what the wheel is built from (pyproject's [tool.hatch] sections); .dockerignore keeps out everything else.
COPY pyproject.toml README.md ./
COPY requirements/runtime.txt requirements/runtime.txt
COPY services/ services/
COPY gen/ gen/
COPY gateway/ gateway/
COPY console/ console/
# --only-binary: every dependency must come as a wheel, so no compiler is needed here either, and a dependency
# that would have to be compiled fails the build instead of quietly pulling one in.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/clarion \
 && python -m pip --python /opt/clarion/bin/python install --only-binary=:all: --require-hashes -r requirements/runtime.txt \
 && python -m pip --python /opt/clarion/bin/python install --no-deps /wheels/clarion-*.whl

# Runtime: the same slim base (no compilers, no headers), the virtualenv, a numeric unprivileged user.
FROM base AS runtime
# The release this image is (pyproject's version; tests/deploy/test_dockerfile.py keeps them equal); a release build
# passes the commit: docker build --build-arg REVISION="$(git rev-parse HEAD)".
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="clarion" \
      org.opencontainers.image.description="Notification platform: contracts first, gRPC and REST, email and push." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/clarion-notify/clarion"
# Bytecode was compiled at install time; the root filesystem is read-only in Kubernetes, so never try to write it.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/clarion/bin:$PATH \
    CLARION_GRPC_HOST=0.0.0.0 \
    CLARION_DATA_DIR=/tmp/clarion
# A passwd entry for the uid, for libraries that look the user up; no home, no shell.
RUN groupadd --system --gid 10001 clarion \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin clarion
COPY --from=build /opt/clarion /opt/clarion
USER 10001:10001
WORKDIR /tmp
# gRPC (clarion serve) and the workers' HTTP health port.
EXPOSE 50051 8081
# Exec form: clarion is PID 1 and gets SIGTERM itself, which starts its drain.
ENTRYPOINT ["clarion"]
CMD ["--help"]
