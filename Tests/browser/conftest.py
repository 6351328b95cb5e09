"""Real-browser tests of the example pages: headless Chromium from Debian, driven by Selenium with Debian's
chromedriver (nothing is downloaded).

Each test runs the shell commands of an example's README.md as written (every ```sh block, in order, in one
bash), opens the page the README names, and checks what a user would see. The README's blocks after the
comment `<!-- the page test runs here -->` (stopping everything) run after the page test, and must leave no
process behind.

The READMEs use fixed ports (6080, 6379, 5901, 8000) and X display :1, as a user would. scripts/test-browser
runs these tests in their own network and mount namespaces, so those never collide with anything else on the
machine; run alone (`python3 -m pytest Tests/browser`), the tests need those ports free and say so if not.

On failure (or always, with BROWSER_SCREENSHOTS=1) a test saves a screenshot, the page's HTML and the browser
console in artifacts/browser/ (git-ignored), where the README commands' output also goes.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT = float(os.environ.get("BROWSER_WAIT", "20"))  # seconds a test waits for a page state
MARKER = "<!-- the page test runs here -->"

# Selenium Manager must not try to download a driver or a browser: there is no network for it here.
os.environ.setdefault("SE_OFFLINE", "true")


# ---------------------------------------------------------------------------------------------------------
# README commands


def readme_blocks(readme: Path) -> tuple[list[str], list[str]]:
    """The ```sh blocks of a README, split at MARKER into (before the page test, after it)."""
    text = readme.read_text(encoding="utf-8")
    if text.count(MARKER) != 1:
        raise AssertionError(f"{readme} must contain the line {MARKER!r} exactly once")
    before, after = text.split(MARKER)
    fence = re.compile(r"^```sh\n(.*?)^```$", re.S | re.M)
    return fence.findall(before), fence.findall(after)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class ReadmeSession:
    """The README's commands running in one bash, whose process group holds everything they start."""

    def __init__(self, example: str, ports: list[int]):
        self.example = example
        self.readme = ROOT / "Examples" / example / "README.md"
        self.ports = ports
        self.setup, self.teardown = readme_blocks(self.readme)
        assert self.setup, f"{self.readme} has no ```sh block before {MARKER!r}"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.log_path = ARTIFACTS / f"{example}.commands.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 600) -> None:
        busy = [p for p in self.ports if port_open(p)]
        if busy:
            raise AssertionError(
                f"ports {busy} are already in use: run these tests with scripts/test-browser "
                "(own network namespace), or stop what listens there"
            )
        scripts = ARTIFACTS / f"{self.example}.commands"
        scripts.mkdir(exist_ok=True)
        (scripts / "setup.sh").write_text("set -ex\n" + "".join(self.setup))
        (scripts / "teardown.sh").write_text("set -ex\n" + "".join(self.teardown))
        # One bash: the setup blocks (stdin from /dev/null, so no command eats ours), a line to say they are
        # done, then it waits for a line from us before the teardown blocks. `kill %1` in a README works
        # because the jobs are this bash's own.
        driver = (
            'source "$1" </dev/null; echo "__setup_done__ $?"; read -r _; '
            'source "$2" </dev/null; echo "__teardown_done__ $?"'
        )
        self.log = open(self.log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            ["bash", "-c", driver, "readme", str(scripts / "setup.sh"), str(scripts / "teardown.sh")],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        self._wait_for_line("__setup_done__ 0", timeout, "the README's setup commands")
        deadline = time.monotonic() + 30
        for port in self.ports:
            while not port_open(port):
                if time.monotonic() > deadline:
                    raise AssertionError(f"nothing listens on port {port} 30 s after the README's commands")
                if self.proc.poll() is not None:
                    raise AssertionError(f"the README's shell exited early: {self.output()[-2000:]}")
                time.sleep(0.1)

    def _wait_for_line(self, line: str, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            out = self.output()
            if re.search(rf"^{re.escape(line)}$", out, re.M):
                return
            if re.search(r"^__(setup|teardown)_done__ [1-9]", out, re.M) or self.proc.poll() is not None:
                raise AssertionError(f"{what} failed:\n{out[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not finish within {timeout:.0f}s:\n{out[-3000:]}")
            time.sleep(0.1)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """Run the README's stop commands; then nothing it started may still run."""
        assert self.proc is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        self._wait_for_line("__teardown_done__ 0", 30, "the README's stop commands")
        self.proc.wait(10)
        deadline = time.monotonic() + 15
        while self._group_alive():
            if time.monotonic() > deadline:
                left = subprocess.run(["ps", "-o", "pid,args", "-g", str(self.proc.pid)],
                                      capture_output=True, text=True).stdout
                raise AssertionError(f"the README's stop commands left processes running:\n{left}")
            time.sleep(0.1)

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def kill(self) -> None:
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            for _ in range(50):
                if not self._group_alive():
                    break
                time.sleep(0.1)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()


@pytest.fixture
def readme_session(request):
    """readme_session(example, ports): start the example's README commands; stopped (and checked) at the end."""
    sessions = []

    def start(example: str, ports: list[int]) -> ReadmeSession:
        session = ReadmeSession(example, ports)
        sessions.append(session)
        session.start()
        return session

    yield start
    for session in sessions:
        try:
            if request.node.rep_call.passed if hasattr(request.node, "rep_call") else False:
                session.stop()
        finally:
            session.kill()


# ---------------------------------------------------------------------------------------------------------
# Browser


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI: Chromium's sandbox needs an unprivileged user
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--force-device-scale-factor=1",
        "--no-first-run",
        "--disable-gpu",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)
    if report.when == "call" and (report.failed or os.environ.get("BROWSER_SCREENSHOTS")):
        driver = item.funcargs.get("browser")
        if driver is None:
            return
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", item.name)
        try:
            driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
            (ARTIFACTS / f"{name}.html").write_text(driver.page_source, encoding="utf-8")
            console = "\n".join(f"{e['level']} {e['message']}" for e in driver.get_log("browser"))
            (ARTIFACTS / f"{name}.console.log").write_text(console, encoding="utf-8")
            report.sections.append(("artifacts", f"screenshot, page and console in {ARTIFACTS}/{name}.*"))
        except Exception as error:  # a dead browser must not hide the test's own failure
            report.sections.append(("artifacts", f"could not save a screenshot: {error}"))
