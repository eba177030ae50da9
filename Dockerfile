# The receiver as a sidecar image. Two stages: the first builds a virtualenv from the
# pinned requirements.txt (with pip and its caches), the second copies only that
# virtualenv and the code onto the same slim base. No Docker engine runs where this
# project is tested: tests/test_deploy.py lints this file with hadolint and checks the
# rules below.
FROM python:3.11.7-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt /tmp/requirements.txt
RUN python -m venv /venv \
    && /venv/bin/pip install --require-virtualenv -r /tmp/requirements.txt

FROM python:3.11.7-slim-bookworm
# receiver/dev/ (the demo and its stand-ins for Google) is left out by .dockerignore.
COPY --from=build /venv /venv
WORKDIR /app
COPY gunicorn.conf.py ./
COPY receiver/ ./receiver/

# A numeric non-root user (Kubernetes can check runAsNonRoot against a number). The model
# dir is a volume shared with TF Serving: give the pod fsGroup 10001 so it is writable.
# With a read-only root filesystem the only writable path is /models, the volume: the
# journal and each worker's metrics live in /models/.receiver (TF Serving ignores hidden
# names), and gunicorn's heartbeat files in /dev/shm (gunicorn.conf.py).
USER 10001:10001
ENV PATH=/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8080 \
    RECEIVER_MODEL_DIR=/models \
    RECEIVER_LOG_FORMAT=json \
    PROMETHEUS_MULTIPROC_DIR=/models/.receiver/metrics
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8080') + '/healthz', timeout=4)"]
# Exec form: gunicorn is PID 1 and receives SIGTERM itself (graceful shutdown).
CMD ["gunicorn", "-c", "/app/gunicorn.conf.py"]
