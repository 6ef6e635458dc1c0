# One image for the orchestrator and every participant service; docker-compose.yml gives
# each its command (`saga orchestrator run`, `saga participant run MODULE:ATTR`).

# The project's wheel, built apart so the runtime image carries no sources or build tools.
FROM python:3.11-slim AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY alembic ./alembic
COPY contracts ./contracts
COPY orchestrator ./orchestrator
COPY participants ./participants
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The dependencies come from pyproject.toml alone, so this layer is rebuilt only when
# pyproject.toml changes, not on every change to the code.
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/pyproject.toml /tmp/requirements.txt

COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels

# /var/lib/saga is the only place the services write (the blobs example's files, SQLite
# files when no database URL is given); a named volume mounted below it takes its owner.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/saga --create-home saga \
    && mkdir -p /var/lib/saga/blobs \
    && chown -R saga:saga /var/lib/saga
COPY sagas /app/sagas
ENV SAGA_DEFINITIONS=/app/sagas

USER saga
WORKDIR /var/lib/saga
CMD ["saga", "--help"]
