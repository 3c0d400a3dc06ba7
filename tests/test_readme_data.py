"""The README's distributed-data examples are code the tests run (they cannot drift):
`map_app` runs in zmesh join processes (tests/cluster/test_data_os.py), `cart_example`
runs here on a real 3-node cluster."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import zmesh_test_app

from zmesh.testing import Cluster, wait_until

README = Path(__file__).resolve().parents[1] / "README.md"


def block(start: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (example,) = [b for b in blocks if b.startswith(start)]
    return example.strip()


def test_the_readme_data_examples_are_the_ones_the_tests_run() -> None:
    assert block("async def map_app") == inspect.getsource(zmesh_test_app.map_app).strip()
    assert block("async def cart_example") == inspect.getsource(zmesh_test_app.cart_example).strip()


@pytest.mark.zmesh_nodes(3)
async def test_the_readme_cart_example_runs(zmesh_cluster: Cluster) -> None:
    stores = [await node.kv_open("carts", n=3, partitions=64) for node in zmesh_cluster]
    await wait_until(lambda: all(len(s.members()) == 3 for s in stores), 5)
    assert await zmesh_test_app.cart_example(zmesh_cluster["n2"]) == ["milk", "eggs"]
