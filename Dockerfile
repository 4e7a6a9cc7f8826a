# churnlens API server: slim runtime, non-root, no build tools in the final image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md churnlens.py ./
COPY features ./features
COPY training ./training
COPY models ./models
COPY serving ./serving
# the postgres extra: a PostgreSQL driver for MLFLOW_TRACKING_URI and CHURNLENS_OUTBOX_URL
RUN pip install --no-cache-dir --prefix=/install "./[postgres]"

FROM python:3.11-slim
# LightGBM needs the OpenMP runtime, which the slim base lacks; Debian's security
# updates move its exact version, so it is not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 churnlens
COPY --from=build /install /usr/local
USER 10001
WORKDIR /home/churnlens
ENV MLFLOW_TRACKING_URI=sqlite:////home/churnlens/mlflow.db \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
    NUMBA_CACHE_DIR=/home/churnlens/.cache/numba \
    PYTHONUNBUFFERED=1
EXPOSE 8000
# liveness only (/healthz): /readyz stays 503 until a model is registered, which an
# orchestrator should probe separately
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["churnlens", "serve", "--host", "0.0.0.0", "--port", "8000"]
