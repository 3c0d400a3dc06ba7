"""`zmesh shell`: an asyncio REPL on a node that has joined the cluster (`iex --remsh`).

`node` (the shell's node), `zmesh` and `asyncio` are bound; top-level `await` works.
With `-c CODE` it runs CODE, prints the value of a final expression (if not None) and
leaves. Either way the node leaves the cluster cleanly on exit.
"""

from __future__ import annotations

import ast
import asyncio
import code
import concurrent.futures
import inspect
import signal
import sys
import threading
import types
from typing import Annotated, Any

import typer

import zmesh

from .common import (
    Access,
    AllowOpt,
    CookieOpt,
    CurveSecretOpt,
    SeedOpt,
    cli_node,
    guarded,
    join_seed,
    mesh,
    registry_synced,
)

BANNER = (
    "zmesh shell on node {name}, joined through {seed} ({members}).\n"
    "`node`, `zmesh` and `asyncio` are bound; top-level await works. Ctrl-D leaves."
)


def shell(
    seed: SeedOpt = None,
    cookie: CookieOpt = None,
    curve_secret: CurveSecretOpt = None,
    allow: AllowOpt = None,
    command: Annotated[
        str | None, typer.Option("--command", "-c", help="Run CODE, print its value, leave.")
    ] = None,
) -> None:
    """An asyncio REPL on a node joined to the cluster, with `node` and `zmesh` bound."""

    async def main() -> None:
        async with cli_node(Access(cookie, curve_secret, allow), seed) as node:
            seed_name = await join_seed(node, seed)
            await registry_synced(node, await mesh(node, seed_name))
            namespace: dict[str, Any] = {"node": node, "zmesh": zmesh, "asyncio": asyncio}
            if command is not None:
                await run_code(command, namespace)
            else:
                members = ", ".join(sorted({seed_name, *node.nodes()}))
                banner = BANNER.format(name=node.name, seed=seed_name, members=members)
                await interact(namespace, banner)

    guarded(main)


async def run_code(source: str, namespace: dict[str, Any]) -> None:
    """Run `source` (statements; top-level await allowed); print a final expression's
    value. An exception is printed as a traceback and exits 1."""
    try:
        tree = ast.parse(source, "<zmesh shell -c>", "exec")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        assert last is None or isinstance(last, ast.Expr)
        await _run(compile(tree, "<zmesh shell -c>", "exec", flags=_FLAGS), namespace)
        if last is not None:
            expr = ast.Expression(last.value)
            value = await _run(compile(expr, "<zmesh shell -c>", "eval", flags=_FLAGS), namespace)
            if value is not None:
                print(repr(value), flush=True)
    except SyntaxError as exc:
        print(f"zmesh: syntax error in -c: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    except Exception:
        import traceback

        traceback.print_exc()
        raise typer.Exit(1) from None


_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


async def _run(compiled: types.CodeType, namespace: dict[str, Any]) -> Any:
    result = eval(compiled, namespace)
    if inspect.iscoroutine(result):
        result = await result
    return result


async def interact(namespace: dict[str, Any], banner: str) -> None:
    """Read-eval-print in a thread; the code runs on this loop, where the node lives."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    console = AsyncConsole(namespace, loop)

    def read_loop() -> None:
        try:
            console.interact(banner=banner, exitmsg="")
        except SystemExit:
            pass
        finally:
            loop.call_soon_threadsafe(_finish, done)

    thread = threading.Thread(target=read_loop, name="zmesh-shell", daemon=True)
    thread.start()
    loop.add_signal_handler(signal.SIGINT, console.interrupt)
    try:
        await done
    finally:
        loop.remove_signal_handler(signal.SIGINT)


class AsyncConsole(code.InteractiveConsole):
    """An InteractiveConsole whose code runs as a task on `loop` (as `python -m asyncio`)."""

    def __init__(self, namespace: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(namespace, "<zmesh shell>")
        self.compile.compiler.flags |= _FLAGS
        self.loop = loop
        self.running: asyncio.Task[Any] | None = None

    def interrupt(self) -> None:
        """Ctrl-C: cancel the running code; at the prompt, a reminder of how to leave."""
        if self.running is not None and not self.running.done():
            self.running.cancel()
        else:
            print("\nKeyboardInterrupt (Ctrl-D leaves)", file=sys.stderr, flush=True)

    def runcode(self, code: types.CodeType) -> None:
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def start() -> None:
            try:
                value = types.FunctionType(code, self.locals)()
            except BaseException as exc:
                result.set_exception(exc)
                return
            if not inspect.iscoroutine(value):
                result.set_result(value)
                return
            task = self.running = self.loop.create_task(value)
            task.add_done_callback(lambda t: _copy(t, result))

        self.loop.call_soon_threadsafe(start)
        try:
            result.result()
        except SystemExit:
            raise
        except KeyboardInterrupt:
            print("KeyboardInterrupt", file=sys.stderr, flush=True)
        except BaseException:
            self.showtraceback()


def _finish(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


def _copy(task: asyncio.Task[Any], result: concurrent.futures.Future[Any]) -> None:
    if task.cancelled():
        result.set_exception(KeyboardInterrupt())
    elif task.exception() is not None:
        result.set_exception(task.exception())
    else:
        result.set_result(task.result())
