"""Every example with a README is run by a browser test, so every command in Examples/*/README.md runs in CI."""

import re

from conftest import MARKER, ROOT, readme_blocks


def test_every_example_readme_is_run_by_a_test():
    examples = {readme.parent.name for readme in (ROOT / "Examples").glob("*/README.md")}
    sources = "".join(path.read_text(encoding="utf-8") for path in (ROOT / "Tests" / "browser").glob("test_*.py"))
    run = set(re.findall(r'readme_session\("([^"]+)"', sources))
    assert examples == run, f"examples without a test: {sorted(examples - run)}; tests of no example: {sorted(run - examples)}"


def test_every_example_readme_has_commands_and_a_stop():
    for readme in sorted((ROOT / "Examples").glob("*/README.md")):
        before, after = readme_blocks(readme)  # fails unless MARKER is there once
        assert before, f"{readme}: no ```sh block before {MARKER!r}"
        assert after, f"{readme}: no ```sh block after {MARKER!r} to stop what it started"
