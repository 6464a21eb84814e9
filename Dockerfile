# convstream worker image: `docker build -t convstream .`, then `docker run convstream worker`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# .dockerignore keeps the context to what `pip install .` needs.
COPY . .
RUN pip install ".[rocksdb]" \
    && useradd --system --create-home --uid 10001 convstream \
    && mkdir -p /data \
    && chown convstream:convstream /data

# The worker keeps its local state here; compose mounts a volume on it for the replay job.
ENV CONVSTREAM_DATA_DIR=/data
WORKDIR /data
USER convstream

ENTRYPOINT ["convstream"]
CMD ["worker"]
