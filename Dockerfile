# churnlens API server: slim runtime, non-root, no build tools in the final image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md churnlens.py ./
COPY features ./features
COPY training ./training
COPY models ./models
COPY serving ./serving
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 churnlens
COPY --from=build /install /usr/local
USER 10001
WORKDIR /home/churnlens
ENV MLFLOW_TRACKING_URI=sqlite:////home/churnlens/mlflow.db \
    NUMBA_CACHE_DIR=/home/churnlens/.cache/numba
EXPOSE 8000
CMD ["churnlens", "serve", "--host", "0.0.0.0", "--port", "8000"]
