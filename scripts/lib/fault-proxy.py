#!/usr/bin/env python3
"""A loopback TCP proxy a test controls: the network faults of a tunnel without namespaces.

    fault-proxy.py TARGET_PORT CONTROL_FILE

Listens on a free 127.0.0.1 port (printed as "listening on 127.0.0.1:PORT") and forwards
every connection to 127.0.0.1:TARGET_PORT. The CONTROL_FILE's content (re-read every 20 ms)
sets the fault:
  pass       forward (the default, also for a missing or empty file)
  drop       close every open connection once (a link that went down); new ones pass
  blackhole  keep connections open but forward nothing and accept no new ones (a partition:
             no error reaches either end)
"""
import asyncio
import os
import sys

target_port = int(sys.argv[1])
control = sys.argv[2]
open_pairs = set()
mode = "pass"


def read_mode():
    try:
        with open(control) as f:
            return f.read().strip() or "pass"
    except OSError:
        return "pass"


async def pump(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            while mode == "blackhole":
                await asyncio.sleep(0.02)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def handle(client_reader, client_writer):
    if mode == "blackhole":
        client_writer.transport.abort()
        return
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
    except OSError:
        client_writer.close()
        return
    pair = (client_writer, up_writer)
    open_pairs.add(pair)
    await asyncio.gather(pump(client_reader, up_writer), pump(up_reader, client_writer))
    open_pairs.discard(pair)


async def watch():
    global mode
    while True:
        new = read_mode()
        if new == "drop" and mode != "drop":
            for client, upstream in list(open_pairs):
                client.transport.abort()
                upstream.transport.abort()
        mode = new
        await asyncio.sleep(0.02)


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    asyncio.get_running_loop().create_task(watch())
    async with server:
        await server.serve_forever()


asyncio.run(main())
