# The receiver as a sidecar image: gunicorn as PID 1, running as a non-root user.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY receiver/ receiver/
COPY gunicorn.conf.py .

# The model dir is a volume shared with TF Serving; it must be writable by this user
# (fsGroup 10001 in Kubernetes, or the volume's owner).
RUN useradd --uid 10001 --user-group --no-create-home receiver \
    && mkdir -p /models && chown receiver:receiver /models
USER 10001

ENV PORT=8080 RECEIVER_MODEL_DIR=/models RECEIVER_LOG_FORMAT=json
EXPOSE 8080
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
