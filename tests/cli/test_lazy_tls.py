"""The runner's deferred OpenSSL: a process that holds `ssl` already keeps it, and a
masked one gets the real module, handed to asyncio, on its first `import ssl`."""

from __future__ import annotations

import subprocess
import sys

from zmesh.cli.lazy_tls import unmask_ssl
from zmesh.cli.runner import BOOT


def test_with_ssl_imported_already_nothing_is_masked_or_replaced() -> None:
    import ssl

    finders = list(sys.meta_path)
    assert unmask_ssl() is False
    assert sys.modules["ssl"] is ssl and sys.meta_path == finders


MASKED = """
import sys
{mask}
import asyncio, asyncio.sslproto
from zmesh.cli.lazy_tls import unmask_ssl
print(unmask_ssl(), "ssl" in sys.modules)
import ssl
again = asyncio.sslproto.SSLAgainErrors[0] is ssl.SSLWantReadError
print(asyncio.sslproto.ssl is ssl, asyncio.base_events.ssl is ssl,
      asyncio.selector_events.ssl is ssl, again)
"""


def run(mask: str) -> list[str]:
    code = MASKED.format(mask=mask)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    ).stdout.split("\n")


def test_a_masked_ssl_loads_on_first_import_and_asyncio_gets_it() -> None:
    mask = BOOT.split("; from ")[0]  # the runner's own mask
    assert run(mask)[:2] == ["True False", "True True True True"]


def test_a_process_that_imported_ssl_first_keeps_it() -> None:
    assert run("import ssl; " + BOOT.split("; from ")[0])[:2] == [
        "False True",
        "True True True True",
    ]
