"""Examples/novnc: Debian's noVNC page reaches a real VNC desktop (TigerVNC Xvnc) through wsbridge, in Chromium
and in Firefox."""

import io
import os
import subprocess

from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import WAIT

URL = "http://localhost:8000/vnc.html?autoconnect=true&port=6080&path=websockify%3Ftoken%3Ddesktop-1"
ORANGE = (0xFF, 0x88, 0x00)  # the README's `xsetroot -solid '#ff8800'`
WIDTH, HEIGHT = 1024, 768  # the README's `Xvnc -geometry 1024x768`


def canvas_pixels(browser):
    """The noVNC canvas as the browser paints it: a screenshot of the element, as RGB pixels."""
    canvas = browser.find_element(By.CSS_SELECTOR, "#noVNC_container canvas")
    return Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB")


def test_novnc_draws_the_remote_desktop(readme_session, any_browser):
    browser = any_browser
    session = readme_session("novnc", ports=[5901, 6080, 8000])
    browser.get(URL)

    WebDriverWait(browser, WAIT).until(
        lambda b: "noVNC_connected" in b.find_element(By.TAG_NAME, "html").get_attribute("class"),
        "noVNC did not connect",
    )
    # noVNC sizes its canvas to the remote screen once the server says how big it is.
    size = WebDriverWait(browser, WAIT).until(
        lambda b: b.execute_script(
            "const c = document.querySelector('#noVNC_container canvas');"
            "return c && c.width > 0 ? [c.width, c.height] : null;"
        ),
        "noVNC made no canvas",
    )
    assert size == [WIDTH, HEIGHT]

    # The first framebuffer update may come a moment after "connected": wait until it is painted.
    points = [(x, y) for x in (10, WIDTH // 2, WIDTH - 10) for y in (10, HEIGHT // 2, HEIGHT - 10)]

    def shows(colour):
        def check(b):
            image = canvas_pixels(b)
            return image.size == (WIDTH, HEIGHT) and all(image.getpixel(p) == colour for p in points)
        return check

    def seen():
        image = canvas_pixels(browser)
        return {p: "#%02x%02x%02x" % image.getpixel(p) for p in points}

    WebDriverWait(browser, WAIT, poll_frequency=0.25).until(shows(ORANGE), "the canvas never showed #ff8800")
    assert set(seen().values()) == {"#ff8800"}

    # A live session: change the remote desktop, and the page follows.
    subprocess.run(["xsetroot", "-solid", "#0066cc"], env={**os.environ, "DISPLAY": ":1"}, check=True, timeout=10)
    WebDriverWait(browser, WAIT, poll_frequency=0.25).until(
        shows((0x00, 0x66, 0xCC)), "the canvas did not follow the desktop to #0066cc"
    )
    assert set(seen().values()) == {"#0066cc"}

    # The session went through the bridge, to the token's backend.
    assert "backend=127.0.0.1:5901" in session.output()
