"""Examples/close-codes: what page JavaScript reads when a session ends, in Chromium and in Firefox."""

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import WAIT

EXPECTED = {
    # A refused handshake (HTTP 404 unknown token) is hidden from scripts: error, then 1006.
    "wrong-token": 'events: error, close\ncode 1006, reason "", wasClean false',
    # The upgrade completes, then the bridge says why: 1014 backend refused.
    "backend-down": 'events: open, close\ncode 1014, reason "backend refused", wasClean true',
    # The backend writes "bye\n" (4 bytes) and closes: the bytes, then 1000 backend closed.
    "backend-closes": 'events: open, message (4 bytes), close\ncode 1000, reason "backend closed", wasClean true',
}


@pytest.fixture
def page(readme_session, any_browser):
    session = readme_session("close-codes", ports=[7001, 6080, 8000])
    any_browser.get("http://localhost:8000/")
    return any_browser, session


def result_when_closed(browser, row):
    cell = browser.find_element(By.CSS_SELECTOR, f"#{row} .result")
    WebDriverWait(browser, WAIT).until(
        lambda b: cell.get_attribute("data-state") == "closed", f"the {row} session did not close"
    )
    return cell.get_attribute("textContent")


def test_close_codes_page_shows_what_javascript_reads(page):
    browser, session = page
    for row, expected in EXPECTED.items():
        browser.find_element(By.CSS_SELECTOR, f"#{row} button").click()
        assert result_when_closed(browser, row) == expected, row

    # The page could not read the 404. Chromium's console shows it, as the README says; Firefox's only says that it
    # could not connect (each engine reports it in its own words).
    console = [entry["message"] for entry in browser.get_log("browser")]
    if browser.engine == "chromium":
        assert any("?token=wrong" in m and "Unexpected response code: 404" in m for m in console), console
    else:
        assert any("can’t establish a connection to the server at ws://localhost:6080/?token=wrong" in m
                   for m in console), console

    # The bridge logged each session's end with the same code and reason.
    log = session.output()
    assert "closed_by=server code=1014 down=0" in log and "reason=backend refused" in log
    assert "closed_by=backend code=1000 down=4" in log and "reason=backend closed" in log
