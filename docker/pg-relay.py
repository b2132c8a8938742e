"""`docker/compose.sh up` with STORE=postgres: relays TCP from LISTEN_HOST:PORT to TARGET_HOST:PORT.

PostgreSQL on a developer's host listens on 127.0.0.1, which no container on the system's network can
reach. This relay runs in a container on the host's network, listening on that network's gateway address
only, so that the store container stays on the system's network under its Service name, as in the cluster
(where the database is reached over the pod network). Usage: python pg-relay.py LISTEN_HOST LISTEN_PORT
TARGET_HOST TARGET_PORT
"""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def _main(listen_host: str, listen_port: int, target_host: str, target_port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    server = await asyncio.start_server(handle, listen_host, listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    host, port, target, target_port = sys.argv[1:5]
    asyncio.run(_main(host, int(port), target, int(target_port)))
