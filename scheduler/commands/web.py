"""The web process: `tayori serve`."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]
from gunicorn.glogging import Logger  # type: ignore[import-untyped]

from scheduler.commands.common import CommandError, migrated_runtime
from scheduler.settings import Settings
from scheduler.web.app import create_app

DEFAULT_PORT = 8000


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    """gunicorn, configured here rather than from a file, building the app in each
    worker process (a database connection must not cross a fork)."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return create_app(self._settings, migrated_runtime(self._settings))


class _GunicornLogs(Logger):  # type: ignore[misc]
    """gunicorn's own lines (started, a worker booted or timed out) go where Tayori's
    go, in LOG_FORMAT, rather than through gunicorn's own handler and format.
    Never below INFO: at DEBUG gunicorn writes each request's path, which can hold
    an unsubscribe token."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
        self.error_log.setLevel(max(logging.INFO, logging.getLogger().level))
        self.error_log.propagate = True


def serve(args: argparse.Namespace, settings: Settings) -> int:
    port = args.port if args.port is not None else _port_from_env()
    migrated_runtime(settings).close()  # refuse to start on a database not up to date
    options = {
        "bind": f"{args.host}:{port}",
        "workers": int(os.environ.get("WEB_CONCURRENCY") or 2),
        "threads": 4,
        "accesslog": None,  # a request's path can carry an unsubscribe token
        "logger_class": _GunicornLogs,
        "timeout": 30,
        "graceful_timeout": 10,
        # gunicorn's control socket sits in the home folder: two servers would share it.
        "control_socket_disable": True,
    }
    _Gunicorn(settings, options).run()
    return 0


def _port_from_env() -> int:
    text = os.environ.get("PORT") or str(DEFAULT_PORT)
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise CommandError(f"PORT: expected a port number, got {text!r}")
    return int(text)
