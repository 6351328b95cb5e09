"""Examples/redis-console: the page talks RESP to a real redis-server through wsbridge, in Chromium and in
Firefox."""

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from conftest import ROOT, WAIT


def text_of(browser, element_id):
    return browser.find_element(By.ID, element_id).get_attribute("textContent")


def count_of(browser, element_id):
    return int(browser.find_element(By.ID, element_id).get_attribute("data-count"))


def run(browser, command):
    """Type a command, press Enter, wait for exactly one more reply; return it as the page shows it."""
    before = count_of(browser, "replies")
    box = browser.find_element(By.ID, "command")
    box.send_keys(command, Keys.ENTER)
    WebDriverWait(browser, WAIT).until(
        lambda b: count_of(b, "replies") >= before + 1, f"no reply to {command!r}"
    )
    assert count_of(browser, "replies") == before + 1, f"more than one reply to {command!r}"
    return text_of(browser, "last-reply")


def test_redis_console_round_trips_commands(readme_session, any_browser):
    browser = any_browser
    readme_session("redis-console", ports=[6379, 6080, 8000])
    browser.get("http://localhost:8000/")
    assert browser.find_element(By.ID, "url").get_attribute("value") == "ws://localhost:6080/?token=redis"
    browser.find_element(By.ID, "connect").click()
    WebDriverWait(browser, WAIT).until(lambda b: text_of(b, "state") == "open", "the page did not connect")

    assert run(browser, "SET k v") == "OK"
    assert run(browser, "GET k") == '"v"'
    assert run(browser, "INCR n") == "(integer) 1"
    assert run(browser, "INCR n") == "(integer) 2"
    assert run(browser, "GET nothing") == "(nil)"
    assert run(browser, "RPUSH list a b") == "(integer) 2"
    assert run(browser, "LRANGE list 0 -1") == '1) "a"\n2) "b"'
    assert run(browser, "LRANGE nothing 0 -1") == "(empty array)"
    assert run(browser, 'SET greeting "hello world"') == "OK"
    assert run(browser, "GET greeting") == '"hello world"'
    assert run(browser, 'SET crlf "a\\r\\nb"') == "OK"
    assert run(browser, "STRLEN crlf") == "(integer) 4"
    assert run(browser, "SET u héllo") == "OK"
    assert run(browser, "STRLEN u") == "(integer) 6"  # UTF-8 bytes, as sent
    assert run(browser, "GET u") == '"héllo"'
    assert run(browser, "NOPE x").startswith("(error) ERR unknown command 'NOPE'")

    # A reply far larger than one WebSocket message: the bridge sends one binary message per backend read,
    # so the page must put the 200000-byte bulk string together from several messages.
    assert run(browser, "SETRANGE big 199999 x") == "(integer) 200000"
    messages = count_of(browser, "messages")
    assert run(browser, "GET big") == '"' + "\\x00" * 40 + "…" + "\\x00" * 39 + 'x" (200000 bytes)'
    assert count_of(browser, "messages") - messages > 1, "the large reply came in one message: nothing was split"
    assert run(browser, "PING") == "PONG"  # still in step with the stream after it


def test_resp_parser_takes_any_split_of_the_stream(browser):
    """The page's parser, fed the same replies byte by byte and all at once, gives the same results."""
    browser.get((ROOT / "Examples" / "redis-console" / "index.html").as_uri())  # no server needed
    stream = (
        "+OK\r\n-ERR bad\r\n:42\r\n$5\r\nhe\r\no\r\n$-1\r\n*-1\r\n*0\r\n"
        "*3\r\n$1\r\na\r\n*2\r\n:1\r\n$0\r\n\r\n+x\r\n"
        "%1\r\n+key\r\n,3.5\r\n_\r\n#t\r\n(12345678901234567890\r\n"
    )
    expected = [
        "OK", "(error) ERR bad", "(integer) 42", '"he\\r\\no"', "(nil)", "(nil)", "(empty array)",
        '1) "a"\n2) 1) (integer) 1\n   2) ""\n3) x',
        "1) key => (double) 3.5", "(nil)", "(true)", "(integer) 12345678901234567890",
    ]
    result = browser.execute_script(
        """
        const bytes = new TextEncoder().encode(arguments[0]);
        const whole = new RespParser().push(bytes).map((r) => format(r));
        const split = [];
        const parser = new RespParser();
        for (const b of bytes) split.push(...parser.push(Uint8Array.of(b)).map((r) => format(r)));
        return {whole, split, left: parser.buffer.length};
        """,
        stream,
    )
    assert result["whole"] == expected
    assert result["split"] == expected
    assert result["left"] == 0
