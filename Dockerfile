# syntax=docker/dockerfile:1
# rollbackd container image: the package in a virtualenv on Debian's slim
# Python, run as a non-root user with a read-only root filesystem.
#
#   docker build -t rollbackd:0.1.0 .
#
# Writable paths at run time (mount volumes there with readOnlyRootFilesystem):
#   /var/lib/rollbackd   the journal (SQLite)
#   /tmp                 HOME and TMPDIR
# The config is read from /etc/rollbackd/rollbackd.yaml (a ConfigMap).

# A version tag, never latest; pin a digest here for reproducible builds.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The venv lives at the same path in both stages: its scripts hard-code it.
RUN python -m venv /opt/rollbackd
WORKDIR /src
COPY pyproject.toml README.md ./
# .dockerignore leaves rollbackd/testing (kubesim, the test servers) out of the
# context, so the image carries only the daemon.
COPY rollbackd ./rollbackd
# Only the runtime dependencies: no demo or test extra (jsonpatch, pytest).
# pip compiles the bytecode at install time: the read-only image cannot later.
RUN /opt/rollbackd/bin/pip install . \
 && mkdir -p /image/var/lib/rollbackd
# Fail the build, not the pod, when the installed package is incomplete: the
# entry point must start and the packaged OpenAPI document must be there.
RUN /opt/rollbackd/bin/rollbackd --help >/dev/null \
 && /opt/rollbackd/bin/python -c "import importlib.resources as r; r.files('rollbackd').joinpath('openapi.yaml').read_text()" \
 || { echo "installed rollbackd is incomplete (package data in pyproject.toml?)" >&2; exit 1; }
# ... and must carry no test or demo code: `rollbackd demo` says what it needs.
RUN /opt/rollbackd/bin/python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('pytest', 'jsonpatch', 'rollbackd.testing')))" \
 && /opt/rollbackd/bin/rollbackd demo 2>&1 | grep -q "needs the demo extra" \
 || { echo "the runtime image carries test or demo code, or rollbackd demo needs it" >&2; exit 1; }

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="rollbackd" \
      org.opencontainers.image.description="Rolls back a bad Kubernetes Deployment rollout, verifies the rollback, and pages when it cannot." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/rollbackd/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp
COPY --from=builder /opt/rollbackd /opt/rollbackd
# The journal directory, owned by the runtime user so an emptyDir or a fresh
# volume mounted there starts writable.
COPY --from=builder --chown=65532:65532 /image/var/lib/rollbackd /var/lib/rollbackd
# Numeric, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 65532:65532
WORKDIR /var/lib/rollbackd
VOLUME ["/var/lib/rollbackd"]
EXPOSE 8080
ENTRYPOINT ["rollbackd"]
CMD ["run", "--config", "/etc/rollbackd/rollbackd.yaml"]
