# syntax=docker/dockerfile:1
# lethe: one image for the API, the Celery worker, beat, flower and the one-shot migration.
# Build:  docker build -t lethe:latest .      (or `docker compose build`)

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# builder: a virtualenv with the CPU-only torch wheel, lethe and its production extras
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, in its own layer (largest download, changes least). CPU build only: no CUDA
# libraries in the image. Keep this pin equal to the one in pyproject.toml.
RUN pip install --upgrade pip setuptools wheel \
 && pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /src
COPY . .

# `redis` extra: the production broker/result backend is Redis. flower: the monitoring UI.
# torch is already satisfied (2.13.0+cpu matches ==2.13.0), so PyPI's CUDA build is not pulled.
RUN pip install ".[redis,s3]" flower \
 && python -c "import torch; assert not torch.version.cuda, torch.version.cuda" \
 && mkdir -p /opt/lethe \
 && if [ -d migrations ]; then cp -r migrations /opt/lethe/migrations; fi \
 && if [ -f alembic.ini ]; then cp alembic.ini /opt/lethe/alembic.ini; fi

# ---------------------------------------------------------------------------------------------
# runtime: slim Python, the virtualenv, an unprivileged user
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="lethe" \
      org.opencontainers.image.description="Right-to-be-forgotten requests against ML models" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LETHE_ENVIRONMENT=production \
    LETHE_DATA_DIR=/var/lib/lethe \
    LETHE_ARTIFACT_URL=/var/lib/lethe/artifacts

# Fixed uid/gid so that files on shared artifact storage have the same owner on every host.
RUN groupadd --system --gid 10001 lethe \
 && useradd --system --uid 10001 --gid lethe --home-dir /home/lethe --create-home \
            --shell /usr/sbin/nologin lethe \
 && mkdir -p /var/lib/lethe/artifacts /var/lib/lethe/beat /var/lib/lethe/audit-checkpoints \
 && chown -R lethe:lethe /var/lib/lethe

COPY --from=builder /opt/venv /opt/venv
# Alembic scripts (and alembic.ini, if the repo has one) beside the working directory, so
# `lethe migrate` finds them whether it resolves them from the package or from the cwd.
COPY --from=builder /opt/lethe /app

WORKDIR /app
USER lethe:lethe

# No VOLUME instruction (it would leave an anonymous volume behind every migrate/beat/flower
# container); compose mounts the shared named volume on /var/lib/lethe/artifacts, and a fresh
# named volume takes this directory's owner (lethe) on first use.
EXPOSE 8000

ENTRYPOINT ["lethe"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
