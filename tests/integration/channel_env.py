"""A clinic installation whose channels are real: LINE and SMTP servers on loopback,
set through the same environment variables a clinic's `.env` uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.runtime import Runtime, open_runtime
from scheduler.settings import load_settings
from tests.conftest import install_clinic_env
from tests.servers.line_api import LineApiServer
from tests.servers.smtp import SmtpServer

TOKEN = "test-channel-access-token"
SECRET_KEY = "a-long-random-key-for-the-tests-only"
PUBLIC_URL = "https://tayori.clinic.example"


def install_channel_env(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    line_api: LineApiServer,
    smtp_server: SmtpServer,
) -> dict[str, str]:
    env = install_clinic_env(database_url, tmp_path, monkeypatch)
    channels = {
        "LINE_CHANNEL_ACCESS_TOKEN": line_api.access_token,
        "LINE_API_BASE_URL": line_api.base_url,
        "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_SECURITY": "none",
        "MAIL_FROM": "たより整体院 <info@clinic.example>",
        "TAYORI_PUBLIC_URL": PUBLIC_URL,
        "TAYORI_SECRET_KEY": SECRET_KEY,
    }
    for key, value in channels.items():
        monkeypatch.setenv(key, value)
    return {**env, **channels}


def open_channel_runtime(env: dict[str, str]) -> Runtime:
    return open_runtime(load_settings(env))
