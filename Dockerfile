# The production image: one image for every process of an installation.
#
#   docker run IMAGE            the worker (`tayori run`)
#   docker run IMAGE serve      the web process: LINE's webhook, unsubscribe, /healthz ($PORT, 8000)
#   docker run IMAGE release    once per deployment: check the templates, migrate the database
#   docker run IMAGE doctor     what is wrong with the settings, database, templates, LINE, SMTP
#
# README.md, "Running with containers", has a compose file with all of them.

# The builder installs Tayori and its dependencies into a virtual environment; the
# runtime gets that folder alone, without pip's cache, build tools or the source.
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/tayori
WORKDIR /src
# What the wheel is built from; pip builds it with the setuptools pyproject.toml asks for.
COPY pyproject.toml README.md LICENSE ./
COPY scheduler ./scheduler
RUN /opt/tayori/bin/pip install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/tayori/bin:$PATH
RUN useradd --system --user-group --create-home --uid 10001 tayori
COPY --from=builder /opt/tayori /opt/tayori

# Tayori reads config/, messages/ and var/ from its working folder. The settings and
# messages here are the shipped defaults: a clinic mounts its own over them.
WORKDIR /app
COPY config ./config
COPY messages ./messages
# var/ holds the SQLite database and the previews of messages not sent (no LINE or
# SMTP credentials). Made before VOLUME so that a new volume is the tayori user's.
RUN mkdir var && chown tayori:tayori var
VOLUME /app/var

USER tayori
EXPOSE 8000
# For the web process: /healthz answers 503 when the database does not. A worker
# container serves no HTTP: run it with this check disabled (the compose file does);
# Docker's restart policy brings back a worker that exits.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=4)"
ENTRYPOINT ["tayori"]
CMD ["run"]
