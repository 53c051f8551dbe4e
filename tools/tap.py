"""`ilnp-tap`: watch a running node's bus, one decoded line per frame.

Attaching is a plain SUB connection to the broker: it never disturbs the node, and
topics nobody watches are not even sent by their publishers.
"""
from __future__ import annotations

import json
import sys
import time

import click

from actors.proto import topics
from actors.proto.addr import format64
from actors.proto.frames import LinkItem, RxItem, TxItem
from bus.client import BusClient, RequestError

from .common import OneLineCommand, json_option, node, run_dir_option


def _describe_item(topic: bytes, item) -> str:
    try:
        if topic in (topics.LINK_RX, topics.LINK_TX):
            link = LinkItem(*item)
            return f"{format64(link.loc)} {_header_summary(link.datagram)}"
        if topic.startswith(topics.ILNP_RX):
            rx = RxItem(*item)
            return (f"{format64(rx.src_loc)}:{format64(rx.src_nid)} -> {format64(rx.dst_loc)}:"
                    f"{format64(rx.dst_nid)} on {format64(rx.arrival_loc)} {len(rx.payload)}B")
        if topic == topics.ILNP_TX:
            tx = TxItem(*item)
            locs = ",".join(format64(x) for x in tx.dst_locs or ())
            via_s = f" via {format64(tx.via)}" if tx.via is not None else ""
            return f"to {locs}:{format64(tx.dst_nid)} nh {tx.next_header} {len(tx.payload)}B{via_s}"
    except (TypeError, ValueError):
        pass  # not the layout its topic promises: shown raw
    return repr(item)[:120]


def _header_summary(datagram: bytes) -> str:
    if len(datagram) < 40:
        return f"{len(datagram)}B (short)"
    nh, hop = datagram[6], datagram[7]
    src = int.from_bytes(datagram[8:16], "big"), int.from_bytes(datagram[16:24], "big")
    dst = int.from_bytes(datagram[24:32], "big"), int.from_bytes(datagram[32:40], "big")
    return (f"{format64(src[0])}:{format64(src[1])} -> {format64(dst[0])}:{format64(dst[1])}"
            f" nh {nh} hop {hop} {len(datagram)}B")


def describe(topic: bytes, body: dict) -> str:
    who = f"{body.get('a', '?')}#{body.get('q', '?')}"
    items = body.get("p")
    if isinstance(items, list):
        first = _describe_item(topic, items[0]) if items else ""
        more = f" (+{len(items) - 1} more)" if len(items) > 1 else ""
        return f"{topic.decode(errors='replace')} {who} [{len(items)}] {first}{more}"
    rest = {k: v for k, v in body.items() if k not in ("a", "q")}
    return f"{topic.decode(errors='replace')} {who} {_pretty_state(topic, rest)}"


def _locs(values) -> str:
    return ",".join(format64(v) for v in values) or "-"


def _pretty_state(topic: bytes, body: dict) -> str:
    """State frames with locators and NIDs written out; anything else as JSON-ish."""
    try:
        if topic == topics.STATE_LOCATORS:
            return f"cur={_locs(body['cur'])} joined={_locs(body['joined'])} leaving={_locs(body['leaving'])}"
        if topic == topics.STATE_HOSTS:
            return " ".join(f"{h}={format64(nid)}@{_locs(locs)}" for h, nid, locs, *_ in body["hosts"]) or "(none)"
        if topic == topics.STATE_SESSIONS:
            return " ".join(f"{format64(loc)}:{format64(nid)}" for loc, nid in body["sessions"]) or "(none)"
        if topic == topics.MOB_PEER:
            return f"nid={format64(body['nid'])} locs={_locs(body['locs'])}"
    except (KeyError, TypeError, ValueError):
        pass
    return str(_jsonable(body))


def _jsonable(value):
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@click.command(cls=OneLineCommand)
@click.argument("prefixes", nargs=-1)
@run_dir_option
@json_option
@click.option("--count", "-c", type=click.IntRange(min=1), default=None, help="Stop after N frames.")
@click.option("--timeout", "-t", type=click.FloatRange(min=0), default=None,
              help="Stop after S seconds (also when nothing arrives).")
@click.option("--hello", is_flag=True,
              help="Say hello after attaching, so every state owner republishes its state now.")
def main(prefixes, run_dir, as_json, count, timeout, hello):
    """Print every bus frame of a running node (or those whose topic starts with PREFIXES)."""
    run = node(run_dir)
    try:
        client = BusClient(run, name="tap")
    except RequestError as exc:
        raise click.ClickException(str(exc)) from None
    for prefix in prefixes or ("",):
        client.subscribe(prefix.encode())
    if hello:
        client.wait_ready()  # our hello went round: owners have republished
    seen = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while count is None or seen < count:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            frame = client.recv(left)
            if frame is None:
                break
            topic, body = frame
            seen += 1
            if as_json:
                line = json.dumps({"t": round(time.time(), 6), "topic": topic.decode(errors="replace"),
                                   "body": _jsonable(body)})
            else:
                line = f"{time.strftime('%H:%M:%S')} {describe(topic, body)}"
            click.echo(line)
            sys.stdout.flush()
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        client.close()


if __name__ == "__main__":
    main()
