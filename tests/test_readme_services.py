"""The README's services example is the code the OS-process tests run (it cannot drift)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import zmesh_test_app

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_distributed_counter_is_the_one_the_tests_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (example,) = [b for b in blocks if b.startswith("class DistributedCounter")]
    assert example.strip() == inspect.getsource(zmesh_test_app.DistributedCounter).strip()
