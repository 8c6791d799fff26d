# syntax=docker/dockerfile:1
# PartyPilot app image: one `python -m partypilot serve` process per container. docker-compose.yml
# runs two of them behind nginx; docs/deploy.md explains the whole stack.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Runtime dependencies first, exactly as locked (requirements/runtime.txt is exported from uv.lock by
# `make lock`, every file with its hash), so a code change reuses this layer. Only `[project]
# dependencies`: no extras, so no test, lint, load or local-service tools (nx-27017, Locust,
# Playwright) in the image; tests/test_dependencies.py and tests/test_compose.py check that.
COPY requirements/runtime.txt requirements/runtime.txt
RUN pip install --require-hashes --no-deps -r requirements/runtime.txt

# The project itself, without dependencies: they are all in the layer above.
COPY . .
RUN pip install --no-deps . \
    && useradd --system --user-group --uid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin partypilot \
    && mkdir -p /data/media \
    && chown -R partypilot:partypilot /data

# The code runs from /app (python -m imports from the working directory), next to frontend/ and
# geo/data/. Uploaded media live under /data, a volume shared by every app container. Production
# is the default: without JWT_SECRET and PARTYPILOT_ALLOWED_ORIGINS the process refuses to start.
ENV PARTYPILOT_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    PARTYPILOT_DATA_DIR=/data \
    PARTYPILOT_FRONTEND_DIR=/app/frontend

USER partypilot
EXPOSE 8080

# 200 only while MongoDB and Redis both answer (GET /api/health says 503 otherwise).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/health' % os.environ.get('PORT', '8080'), timeout=4)"]

CMD ["python", "-m", "partypilot", "serve"]
