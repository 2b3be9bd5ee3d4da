""".ci/run installs the project as README.md's "Set up, run, test" block says, and runs its tests."""

import re
from pathlib import Path

from helpers import assert_shellcheck_clean

ROOT = Path(__file__).resolve().parents[1]
CI_SCRIPT = ROOT / ".ci" / "run"


def setup_block() -> list[str]:
    """The commands (comments dropped) of the first bash block under README's "Set up, run, test"."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Set up, run, test", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def ci_commands() -> str:
    """.ci/run without comments, ``$SUDO`` dropped (the README writes ``sudo``, CI runs as root)."""
    lines = [line.split("#", 1)[0].strip() for line in CI_SCRIPT.read_text(encoding="utf-8").splitlines()]
    return "\n".join(line.replace("$SUDO ", "") for line in lines if line)


def test_ci_installs_and_tests_as_the_readme_says():
    readme, ci = setup_block(), ci_commands()
    installs = [command for command in readme if "install" in command]
    assert any("apt-get install -y chromium" in command for command in installs)  # the browser test's browser
    for command in installs:
        for part in command.replace("sudo ", "").split(" && "):
            assert part in ci, f".ci/run does not run README's {part!r}"
    assert "python -m pytest" in readme and "python -m pytest" in ci.splitlines()  # the whole suite, slow tier too
    assert "VQA_REQUIRE_BROWSER=1" in ci  # where chromium is installed, the browser test may not skip


def test_ci_script_is_shellcheck_clean():
    assert_shellcheck_clean(CI_SCRIPT)
