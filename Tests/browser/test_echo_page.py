"""The README's walk-through of Examples/echo.html, in Chromium and in Firefox: with the Quick start's echo server
and bridge running, the page (opened straight from the file) connects, sends `hello` and shows the bytes that come
back; with the echo server stopped, a new connection ends with Close 1014 `backend refused`; a wrong token is a
refused handshake, which the page sees as an error and code 1006."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from conftest import ARTIFACTS, ROOT, WAIT, port_open


def start(args: list[str], log_name: str, port: int) -> subprocess.Popen:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = open(ARTIFACTS / log_name, "w")
    proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 30
    while not port_open(port):  # the process's own readiness, as the README's user sees it: the port answers
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise AssertionError(f"{args[0]} did not listen on {port}: {(ARTIFACTS / log_name).read_text()[-2000:]}")
        time.sleep(0.1)
    return proc


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (the bridge drains for at most its --shutdown-timeout, 10 s), then SIGKILL to the whole group."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture
def quick_start():
    """The README's Quick start: `python3 Examples/tcp-echo.py &` and `wsbridge --targets Examples/targets.yaml`."""
    busy = [p for p in (7000, 6080) if port_open(p)]
    if busy:
        raise AssertionError(f"ports {busy} are in use: run these tests with scripts/test-browser (own namespace)")
    binary = os.environ.get("WSBRIDGE_BIN", str(ROOT / ".build" / "release" / "wsbridge"))
    started: list[subprocess.Popen] = []
    try:
        started.append(start([sys.executable, "Examples/tcp-echo.py"], "echo-page.echo.log", 7000))
        started.append(start([binary, "--targets", "Examples/targets.yaml"], "echo-page.wsbridge.log", 6080))
        yield tuple(started)
    finally:
        for proc in reversed(started):  # each one, whatever happened to the other
            try:
                stop(proc)
            except Exception as error:  # noqa: BLE001 - reported, and the next one is still stopped
                print(f"could not stop {proc.args}: {error!r}")


def log_lines(browser) -> list[str]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#log div')).map(d => d.textContent.slice(14));"
    )


def wait_for(browser, predicate, what: str) -> list[str]:
    """The page's log lines once `predicate` holds for them."""

    def ready(b):
        lines = log_lines(b)
        return lines if predicate(lines) else False

    return WebDriverWait(browser, WAIT, poll_frequency=0.1).until(ready, what)


def state(browser) -> str:
    return browser.execute_script("return document.getElementById('state').textContent;")


def session(browser, url: str) -> None:
    browser.execute_script("document.getElementById('url').value = arguments[0];", url)
    WebDriverWait(browser, WAIT).until(lambda b: state(b) == "closed", "the page is not ready to connect")
    browser.execute_script("document.getElementById('clear').click(); document.getElementById('connect').click();")


def test_the_readme_walk_through_of_echo_html(quick_start, any_browser):
    echo, _ = quick_start
    browser = any_browser
    browser.get((ROOT / "Examples" / "echo.html").as_uri())

    session(browser, "ws://localhost:6080/?token=echo")
    WebDriverWait(browser, WAIT).until(lambda b: state(b) == "open", "the page did not connect")
    browser.execute_script("document.getElementById('send').click();")
    lines = wait_for(browser, lambda ls: any(line.startswith("received") for line in ls), "nothing came back")
    assert 'sent 5 bytes (binary frame): "hello"' in lines and 'received 5 bytes: "hello"' in lines, lines

    # "Stop the echo server and connect again to see Close 1014 with reason backend refused."
    stop(echo)
    lines = wait_for(browser, lambda ls: any(line.startswith("closed:") for line in ls), "the session did not end")
    assert lines[-1] == 'closed: code 1000, reason "backend closed", wasClean true', lines
    session(browser, "ws://localhost:6080/?token=echo")
    lines = wait_for(browser, lambda ls: any(line.startswith("closed:") for line in ls), "no close")
    assert lines[-1] == 'closed: code 1014, reason "backend refused", wasClean true', lines

    # "A wrong token is refused with HTTP 404 before the upgrade; ... the page sees an error and code 1006."
    session(browser, "ws://localhost:6080/?token=nope")
    lines = wait_for(browser, lambda ls: any(line.startswith("closed:") for line in ls), "no close")
    assert lines[-2].startswith("error"), lines
    assert lines[-1] == 'closed: code 1006, reason "", wasClean false', lines
