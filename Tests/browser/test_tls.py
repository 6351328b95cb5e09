"""Examples/tls: an https page reaches a TLS backend with its own CA through wss://, in Chromium and in Firefox."""

import base64
import hashlib
import subprocess

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import CHROMEDRIVER, CHROMIUM, ROOT, WAIT, FirefoxBrowser


def spki_pin(cert) -> str:
    """base64 SHA-256 of the certificate's public key, as Chromium's --ignore-certificate-errors-spki-list takes."""
    pem = subprocess.run(["openssl", "x509", "-in", str(cert), "-pubkey", "-noout"], capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pem, capture_output=True, check=True).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(params=["chromium", "firefox"])
def page(readme_session, request):
    session = readme_session("tls", ports=[7443, 6443])
    if request.param == "firefox":
        # Marionette has no per-certificate trust: the session accepts the example's self-signed certificate as
        # Firefox's "accept the risk" would, for the page and its wss:// connection alike.
        driver = FirefoxBrowser(accept_insecure_certs=True)
        driver.get("https://localhost:6443/")
        yield driver, session
        driver.quit()
        return
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--no-first-run",
        "--disable-gpu",
        # Trust the example's certificate, and only it: as importing its CA would, without touching a profile.
        f"--ignore-certificate-errors-spki-list={spki_pin(ROOT / 'Examples/tls/certs/localhost.pem')}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.get("https://localhost:6443/")
    yield driver, session
    driver.quit()


def test_https_page_wss_session_to_a_tls_backend(page):
    browser, session = page
    assert browser.execute_script("return location.protocol") == "https:"
    browser.find_element(By.ID, "send").click()
    log = browser.find_element(By.ID, "log")
    WebDriverWait(browser, WAIT).until(lambda b: log.get_attribute("data-state") == "closed", "the session did not close")
    assert log.get_attribute("textContent") == 'open (https://localhost:6443)\nreceived: hello over wss\nclose 1000 ""\n'
    out = session.output()
    assert "TLS certificates loaded" in out
    assert "closed_by=client code=1000 down=14" in out and "up=14" in out, out[-2000:]
