"""The README's "Scaling out" example runs as written, in a fresh process (it asks for its own
8 CPU devices), and prints the placements its comments promise."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_scaling_out_example_runs_and_prints_what_it_says():
    text = README.read_text()
    section = text[text.index("## Scaling out") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    ).stdout.splitlines()
    promised = [line.split("# ", 1)[1] for line in code.splitlines() if line.startswith("print(")]
    assert out == promised
