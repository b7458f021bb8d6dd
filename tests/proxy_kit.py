"""One client connection forwarded to a server, for the tests' cuttable and slow proxies
(the broker behind fault_kit.TcpProxy, Redis behind RedisLink, slow broker answers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  target: tuple[str, int], open_writers: set[asyncio.StreamWriter],
                  hold_answers_s: Callable[[], float] = lambda: 0.0) -> None:
    """Forward one accepted connection to ``target`` both ways until either side closes,
    then close both (HTTP/1.1, Kafka and Redis clients do not half-close). Both writers are
    in ``open_writers`` while the connection lasts, so that a proxy can cut it by aborting
    them; each answer from the server waits ``hold_answers_s()`` seconds first. A server
    that refuses the connection: the client's is aborted."""
    try:
        up_reader, up_writer = await asyncio.open_connection(*target)
    except OSError:
        writer.transport.abort()
        return
    open_writers |= {writer, up_writer}

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, answers: bool) -> None:
        try:
            while data := await src.read(65536):
                if answers and (hold := hold_answers_s()):
                    await asyncio.sleep(hold)
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.transport.abort()

    await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))
    open_writers -= {writer, up_writer}
