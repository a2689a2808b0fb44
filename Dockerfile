# fbt code location image: Dagster webserver, daemon, gRPC code server, Celery
# workers and the MLflow server all run from it (docker-compose.yml).
# Not built or run on the CI machine (no Docker there): see docs/scale-out.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 \
    FBT_HOME=/data/fbt DAGSTER_HOME=/opt/dagster/home
WORKDIR /opt/fbt
COPY pyproject.toml README.md ./
COPY fbt_pipelines ./fbt_pipelines
COPY assets ./assets
COPY resources ./resources
COPY dagster.yaml workspace.yaml ./
COPY deploy ./deploy
RUN pip install -e . && mkdir -p /data/fbt /opt/dagster/home \
    && cp deploy/postgres/dagster.yaml /opt/dagster/home/dagster.yaml
