# The production image: the worker by default, `tayori serve` for the web process, and
# `tayori db upgrade` as the release step.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY scheduler ./scheduler
RUN pip install .

COPY jobs.py ./
COPY config ./config
COPY messages ./messages
RUN useradd --system --create-home tayori && mkdir -p var && chown tayori var
USER tayori

# The worker by default; `tayori serve` runs the web process (it listens on $PORT, 8000).
EXPOSE 8000
CMD ["tayori", "run"]
