"""Real-browser tests of the example pages: headless Chromium from Debian, driven by Selenium with Debian's
chromedriver, and (the tests that take `any_browser`) headless Firefox ESR from Debian too, driven over Marionette
by marionette-driver (nothing is downloaded; no geckodriver).

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

    def __init__(self, example: str, ports: list[int], suffix: str = ""):
        self.example = example
        self.readme = ROOT / "Examples" / example / "README.md"
        self.ports = ports
        self.setup, self.teardown = readme_blocks(self.readme)
        assert self.setup, f"{self.readme} has no ```sh block before {MARKER!r}"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.log_path = ARTIFACTS / f"{example}{suffix}.commands.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 600) -> None:
        busy = [p for p in self.ports if port_open(p)]
        if busy:
            raise AssertionError(
                f"ports {busy} are already in use: run these tests with scripts/test-browser "
                "(own network namespace), or stop what listens there"
            )
        scripts = ARTIFACTS / f"{self.log_path.name.removesuffix('.log')}"
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
            exited = self.proc.poll() is not None  # before reading: a shell that printed the line, then exited
            out = self.output()
            if re.search(rf"^{re.escape(line)}$", out, re.M):
                return
            if re.search(r"^__(setup|teardown)_done__ [1-9]", out, re.M) or exited:
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
        param = getattr(request.node, "callspec", None)
        suffix = "".join(f"-{v}" for v in param.params.values()) if param else ""
        session = ReadmeSession(example, ports, suffix)
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
    """Headless Chromium (the tests that need one engine only)."""
    driver = chromium_browser()
    yield driver
    driver.quit()


# ---------------------------------------------------------------------------------------------------------
# Firefox (ESR, Debian's), driven over Marionette by Mozilla's marionette-driver: no geckodriver


FIREFOX = os.environ.get("FIREFOX", "/usr/bin/firefox-esr")


class FirefoxElement:
    """The part of Selenium's WebElement the tests use, over a Marionette element."""

    def __init__(self, client, element):
        self.client = client
        self.element = element

    def get_attribute(self, name: str):
        # Selenium's get_attribute answers the property when there is one (textContent), else the attribute.
        value = self.element.get_property(name)
        return value if value is not None else self.element.get_attribute(name)

    def click(self) -> None:
        self.element.click()

    def send_keys(self, *keys: str) -> None:
        # Selenium's Keys are WebDriver's key codes (Keys.ENTER is U+E007), which Marionette takes as they are.
        self.element.send_keys("".join(keys))

    @property
    def screenshot_as_png(self) -> bytes:
        return self.client.screenshot(element=self.element, format="binary")


class FirefoxBrowser:
    """The part of Selenium's WebDriver the tests use (get, find_element, execute_script, get_log, screenshots),
    over Marionette, so that a test reads the same in both engines."""

    engine = "firefox"

    def __init__(self, accept_insecure_certs: bool = False):
        import tempfile

        from marionette_driver.marionette import Marionette

        self.profile = tempfile.mkdtemp(prefix="wsbridge-firefox-")
        with socket.socket() as s:  # Marionette's port: asked of the kernel, written in the profile
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        prefs = {
            "marionette.port": port,
            "browser.shell.checkDefaultBrowser": "false",
            "browser.startup.homepage_override.mstone": '"ignore"',
            "datareporting.policy.dataSubmissionEnabled": "false",
            "toolkit.telemetry.reportingpolicy.firstRun": "false",
            "devtools.console.stdout.content": "true",
        }
        Path(self.profile, "user.js").write_text("".join(f'user_pref("{k}", {v});\n' for k, v in prefs.items()))
        self.proc = subprocess.Popen(
            [FIREFOX, "--headless", "--marionette", "-remote-allow-system-access", "--no-remote", "--profile", self.profile,
             "--width", "1280", "--height", "1000"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self.client = Marionette(host="127.0.0.1", port=port, startup_timeout=60)
        self.client.start_session({"pageLoadStrategy": "normal", "acceptInsecureCerts": accept_insecure_certs})
        self.client.timeout.page_load = 30

    def get(self, url: str) -> None:
        self.client.navigate(url)

    def find_element(self, by: str, value: str) -> FirefoxElement:
        return FirefoxElement(self.client, self.client.find_element(by, value))  # By's strings are WebDriver's

    def execute_script(self, script: str, *args):
        return self.client.execute_script(script, script_args=list(args), sandbox=None)

    def get_log(self, kind: str) -> list[dict]:
        """The browser console (Firefox's console service, read in the chrome context), as Selenium's entries."""
        assert kind == "browser", kind
        with self.client.using_context(self.client.CONTEXT_CHROME):
            messages = self.client.execute_script(
                "return Services.console.getMessageArray().map(m => m.message || String(m));"
            )
        return [{"level": "INFO", "message": m} for m in messages]

    def save_screenshot(self, path: str) -> None:
        Path(path).write_bytes(self.client.screenshot(format="binary"))

    @property
    def page_source(self) -> str:
        return self.client.page_source

    def quit(self) -> None:
        try:
            self.client.delete_session()
        except Exception:  # a browser that died: the process is ended below all the same
            pass
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        import shutil

        shutil.rmtree(self.profile, ignore_errors=True)


def chromium_browser():
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
    driver.engine = "chromium"
    return driver


@pytest.fixture(params=["chromium", "firefox"])
def any_browser(request):
    """Each test that takes it runs twice: in headless Chromium (Selenium) and in headless Firefox ESR
    (Marionette). The two differ in their handshake headers and in what they report of a refused upgrade."""
    driver = chromium_browser() if request.param == "chromium" else FirefoxBrowser()
    yield driver
    driver.quit()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)
    if report.when == "call" and (report.failed or os.environ.get("BROWSER_SCREENSHOTS")):
        driver = item.funcargs.get("browser") or item.funcargs.get("any_browser")
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
