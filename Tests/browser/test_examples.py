"""Every example with a README is run by a browser test, so every command in Examples/*/README.md runs in CI."""

import re

from conftest import MARKER, ROOT, readme_blocks


# Examples whose README is run by a script of its own (run by scripts/test), not by a browser test.
RUN_BY_SCRIPTS = {
    "scale-out": "scripts/scale-out",  # runs the README's sh blocks as written
    "kubernetes": "scripts/check-kubernetes",  # no cluster here: its files are validated offline, no sh block
}


def test_every_example_readme_is_run_by_a_test():
    examples = {readme.parent.name for readme in (ROOT / "Examples").glob("*/README.md")}
    sources = "".join(path.read_text(encoding="utf-8") for path in (ROOT / "Tests" / "browser").glob("test_*.py"))
    run = set(re.findall(r'readme_session\("([^"]+)"', sources))
    for example, script in RUN_BY_SCRIPTS.items():
        assert (ROOT / script).is_file(), script
        assert f"Examples/{example}" in (ROOT / script).read_text(encoding="utf-8"), f"{script} does not use Examples/{example}"
        assert f"{script}" in (ROOT / "scripts" / "test").read_text(encoding="utf-8"), f"scripts/test does not run {script}"
    run |= set(RUN_BY_SCRIPTS)
    assert examples == run, f"examples without a test: {sorted(examples - run)}; tests of no example: {sorted(run - examples)}"
    kubernetes = (ROOT / "Examples" / "kubernetes" / "README.md").read_text(encoding="utf-8")
    assert "```sh" not in kubernetes, "a shell block in Examples/kubernetes/README.md would not be run"


def test_every_example_readme_has_commands_and_a_stop():
    for readme in sorted((ROOT / "Examples").glob("*/README.md")):
        if readme.parent.name in RUN_BY_SCRIPTS:
            continue
        before, after = readme_blocks(readme)  # fails unless MARKER is there once
        assert before, f"{readme}: no ```sh block before {MARKER!r}"
        assert after, f"{readme}: no ```sh block after {MARKER!r} to stop what it started"
