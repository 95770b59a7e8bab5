# One image for every kommune-iot process: ingest, api, migrate, maintenance, evaluate,
# broker-acl. The command picks the process: `docker run IMAGE ingest`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# xmlsec1 signs and verifies the SAML messages of the staff sign-in (pysaml2).
RUN apt-get update && apt-get install -y --no-install-recommends xmlsec1 \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first, in their own layer, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import subprocess, sys, tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
subprocess.check_call([sys.executable, '-m', 'pip', 'install', *deps])"

COPY . .
# The processes run from /app: alembic.ini, migrations and api/static are found there.
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app

USER app
# Inside a container the API must listen beyond loopback; the proxy is its only client.
ENV IOT_API_HOST=0.0.0.0

ENTRYPOINT ["python", "-m", "cli"]
CMD ["--help"]
