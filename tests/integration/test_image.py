"""The production image, as far as it can be checked without building it (containers
cannot be built here): the wheel its builder stage makes, the commands its entrypoint
and the compose file run, and what the Dockerfile promises (non-root, a health check)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from typing import Any

import pytest
import yaml

from scheduler.commands import parser
from tests.conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
COMPOSE_FILE = ROOT / "compose.yaml"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (keyword, arguments), continued lines joined."""
    text = re.sub(r"\\\n\s*", "", DOCKERFILE)
    lines = (line.strip() for line in text.splitlines())
    return [
        (keyword.upper(), arguments.strip())
        for keyword, _, arguments in (line.partition(" ") for line in lines)
        if keyword and not keyword.startswith("#")
    ]


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each stage, the runtime's last."""
    found: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions():
        if keyword == "FROM":
            found.append([])
        found[-1].append((keyword, arguments))
    return found


def one(stage: list[tuple[str, str]], keyword: str) -> str:
    [arguments] = [a for k, a in stage if k == keyword]
    return arguments


def is_tayori_command(arguments: list[str]) -> bool:
    try:
        parser().parse_args(arguments)
    except SystemExit:
        return False
    return True


# --- the Dockerfile -------------------------------------------------------------------


def test_the_runtime_stage_is_slim_python_311_fed_by_a_builder_stage() -> None:
    builder, runtime = stages()
    assert one(builder, "FROM") == "python:3.11-slim AS builder"
    assert one(runtime, "FROM") == "python:3.11-slim"
    assert ("COPY", "--from=builder /opt/tayori /opt/tayori") in runtime


def test_the_entrypoint_is_tayori_and_the_default_command_the_worker() -> None:
    runtime = stages()[-1]
    assert json.loads(one(runtime, "ENTRYPOINT")) == ["tayori"]
    command = json.loads(one(runtime, "CMD"))
    assert command == ["run"]
    assert is_tayori_command(command)


def test_the_image_runs_as_a_user_who_is_not_root() -> None:
    user = one(stages()[-1], "USER")
    assert user not in ("root", "0")


def test_the_health_check_asks_the_web_process_healthz_on_its_port() -> None:
    check = one(stages()[-1], "HEALTHCHECK")
    assert "CMD python -c " in check
    assert "os.environ.get('PORT', '8000') + '/healthz'" in check


def test_var_is_a_volume_the_tayori_user_may_write() -> None:
    runtime = stages()[-1]
    assert ("VOLUME", "/app/var") in runtime
    assert ("RUN", "mkdir var && chown tayori:tayori var") in runtime


def copied_sources(stage: list[tuple[str, str]]) -> list[str]:
    """Every file or folder `stage` copies from the build context."""
    return [
        source
        for keyword, arguments in stage
        if keyword == "COPY" and not arguments.startswith("--from")
        for source in arguments.split()[:-1]
    ]


def test_dockerignore_lets_through_everything_the_image_copies_and_never_a_dotenv() -> None:
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignore[ignore.index("*") :].count("*") == 1  # everything else is left out
    for source in copied_sources(instructions()):
        assert f"!{source.rstrip('/')}" in ignore or f"!{source.rstrip('/')}/" in ignore
    assert "**/.env" in ignore


# --- the wheel ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel pip builds from what the builder stage copies, and from nothing else."""
    source = tmp_path_factory.mktemp("context")
    for name in copied_sources(stages()[0]):
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    [built] = out.glob("tayori-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_every_file_of_the_package(wheel: zipfile.ZipFile) -> None:
    package = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "scheduler").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert package - set(wheel.namelist()) == set()
    # What the image needs beside the code, named so that a miss reads plainly.
    for needed in (
        "scheduler/store/migrations/env.py",
        "scheduler/store/migrations/script.py.mako",
        "scheduler/web/templates/unsubscribe/page.html",
        "scheduler/commands/templates/link_code.html.j2",
    ):
        assert needed in wheel.namelist()


def test_the_wheel_installs_the_tayori_command(wheel: zipfile.ZipFile) -> None:
    [entry_points] = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[console_scripts]\ntayori = scheduler.commands:program" in text


# --- the compose file -----------------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return loaded


def tayori_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("image") == "tayori"
    }


def test_the_readme_shows_the_compose_file_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"```yaml\n{COMPOSE_FILE.read_text(encoding='utf-8')}```\n" in readme


def test_every_tayori_service_runs_a_real_tayori_command() -> None:
    commands = {name: service["command"] for name, service in tayori_services().items()}
    assert commands == {"release": ["release"], "worker": ["run"], "web": ["serve"]}
    assert all(is_tayori_command(command) for command in commands.values())


def test_release_runs_once_after_postgresql_is_ready_and_the_rest_wait_for_it() -> None:
    services = compose()["services"]
    assert services["release"]["restart"] == "no"
    assert services["release"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("worker", "web"):
        assert services[name]["depends_on"] == {
            "release": {"condition": "service_completed_successfully"}
        }


def test_two_workers_without_the_web_health_check_and_the_web_process_keeps_it() -> None:
    services = tayori_services()
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["healthcheck"] == {"disable": True}
    assert "healthcheck" not in services["web"]


def test_every_tayori_service_reads_dotenv_and_uses_the_compose_postgresql() -> None:
    for service in tayori_services().values():
        assert service["env_file"] == ".env"
        assert service["environment"]["DATABASE_URL"].endswith("@postgres/tayori")


def test_postgresql_keeps_its_data_in_a_named_volume() -> None:
    document = compose()
    assert "postgres-data:/var/lib/postgresql/data" in document["services"]["postgres"]["volumes"]
    assert "postgres-data" in document["volumes"]
