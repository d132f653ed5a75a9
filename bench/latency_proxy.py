#!/usr/bin/env python3
"""A TCP proxy that adds a round trip's latency, for the S3 benchmarks (run by bench/s3_common.sh with
S3_LATENCY_MS): moto on 127.0.0.1 answers in microseconds, a real S3 endpoint tens of milliseconds
away. Every time the conversation turns around (the server starts answering what the client sent),
the answer waits DELAY_MS first: one delay per request and per TLS handshake step, none per byte.

Usage: latency_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS
"""
import asyncio
import sys


async def pipe(reader, writer, turn, delay, delays_answers):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if delays_answers:
                if turn["client_spoke"]:
                    turn["client_spoke"] = False
                    await asyncio.sleep(delay)
            else:
                turn["client_spoke"] = True
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(client_reader, client_writer, target, delay):
    try:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        client_writer.close()
        return
    turn = {"client_spoke": False}
    await asyncio.gather(
        pipe(client_reader, server_writer, turn, delay, False),
        pipe(server_reader, client_writer, turn, delay, True),
    )


async def main():
    listen, target, delay_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, target, delay_ms / 1000.0), "127.0.0.1", listen
    )
    async with server:
        await server.serve_forever()


asyncio.run(main())
