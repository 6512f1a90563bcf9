"""Grade untrusted (say, LLM-written) solutions: each runs in its own sandbox, with a time limit, and only its
output comes back."""

import pytest

# Per solution. Generous: the vandal below deletes all of /usr (inside its sandbox), several seconds on a busy machine.
TIME_LIMIT_S = 20

SOLUTIONS = {
    "correct": "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))\n",
    "wrong": "print(42)\n",
    "endless": "while True:\n    pass\n",
    "vandal": "import shutil, os\nshutil.rmtree('/usr', ignore_errors=True)\nprint(sum([1, 2, 3]))\n",
}


def grade(sandbox, source: str) -> str:
    sandbox.fs.write("/tmp/solution.py", source.encode())
    try:
        result = sandbox.exec("python3", "/tmp/solution.py", stdin="1 2 3\n", timeout=TIME_LIMIT_S)
    except TimeoutError:
        return "timeout"
    return "pass" if result.exit_code == 0 and result.stdout.strip() == "6" else "fail"


@pytest.mark.parametrize("name,expected", [("correct", "pass"), ("wrong", "fail"), ("endless", "timeout"),
                                           ("vandal", "pass")])
def test_grade(sandbox, name, expected):
    assert grade(sandbox, SOLUTIONS[name]) == expected


def test_vandalism_stays_inside(sandbox):
    sandbox.shell("rm -rf /usr/share/doc 2>/dev/null; touch /usr/pwned 2>/dev/null; true")
    import os

    assert not os.path.exists("/usr/pwned") and os.path.isdir("/usr/share/doc")
