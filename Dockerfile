# One image for the worker and the API: `elimu worker` / `elimu api`.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY models ./models
COPY streams ./streams
COPY api ./api
COPY scripts ./scripts
COPY infra ./infra
RUN pip install .
RUN useradd --create-home elimu && mkdir -p /data && chown elimu /data
USER elimu
ENV ELIMU_DATA_DIR=/data
ENTRYPOINT ["elimu"]
