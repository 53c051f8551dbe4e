"""`ilnp-tap`: watch a running node's bus, one decoded line per frame, or (--pcap) the
node's packets as a pcap of the underlay's datagrams.

Attaching is a plain SUB connection to the broker: it never disturbs the node, and
topics nobody watches are not even sent by their publishers. Data frames reach the
broker too: each publisher sends the broker a copy after the direct push
(docs/DESIGN.md, "The direct data path"), so link.rx and link.tx are every datagram
the link received and every one the router handed it to send.
"""
from __future__ import annotations

import json
import os
import sys
import time

import click

from actors.config import ConfigError, load_config
from actors.proto import topics
from actors.proto.addr import format64, format_ilv
from actors.proto.frames import LinkItem, RxItem, TxItem
from actors.proto.ilnp import WireError, unpack_header
from bus.client import BusClient, RequestError
from bus.rundir import RunDir

from .common import OneLineCommand, json_option, node, run_dir_option
from .pcap import PcapWriter, udp_datagram
from .tap_underlay import UnderlayView


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


# --- --json: NIDs, locators and I-LVs as text ------------------------------------

def _text_locs(values) -> list[str]:
    return [format64(v) for v in values]


def _header_json(datagram: bytes) -> dict | None:
    """The ILNPv6 header of a datagram, addresses as I-LVs; None if it has none."""
    try:
        _vtf, _plen, nh, hop, src_loc, src_nid, dst_loc, dst_nid = unpack_header(datagram)
    except WireError:
        return None
    return {"src": format_ilv(src_loc, src_nid), "dst": format_ilv(dst_loc, dst_nid), "nh": nh, "hop": hop}


def _item_json(topic: bytes, item) -> dict:
    """A data item by its layout (frames.py) with its fields named; one of the wrong
    shape stays as it came (bytes in hex)."""
    if topic in (topics.LINK_RX, topics.LINK_TX):
        link = LinkItem(*item)
        return {"loc": format64(link.loc), "datagram": link.datagram.hex(),
                "ilnp": _header_json(link.datagram)}
    if topic.startswith(topics.ILNP_RX):
        rx = RxItem(*item)
        return {"src": format_ilv(rx.src_loc, rx.src_nid), "dst": format_ilv(rx.dst_loc, rx.dst_nid),
                "arrival_loc": format64(rx.arrival_loc), "payload": rx.payload.hex(), "opts": _jsonable(rx.opts)}
    if topic == topics.ILNP_TX:
        tx = TxItem(*item)
        return {"dst_nid": format64(tx.dst_nid), "dst_locs": _text_locs(tx.dst_locs or ()),
                "next_header": tx.next_header, "payload": tx.payload.hex(),
                "via": None if tx.via is None else format64(tx.via), "opts": _jsonable(tx.opts)}
    raise TypeError("not a data topic")


def _state_json(topic: bytes, body: dict) -> dict:
    """A state frame with its locators and NIDs written as text (raises on a body
    without its owner's layout: the caller shows that one as it came)."""
    out = dict(body)
    if topic == topics.STATE_LOCATORS:
        for key in ("cur", "joined", "leaving"):
            out[key] = _text_locs(body[key])
    elif topic == topics.STATE_HOSTS:
        out["hosts"] = [[hostname, format64(nid), _text_locs(locs), *rest]
                        for hostname, nid, locs, *rest in body["hosts"]]
    elif topic == topics.STATE_SESSIONS:
        out["sessions"] = [format_ilv(loc, nid) for loc, nid in body["sessions"]]
    elif topic == topics.MOB_PEER:
        out["nid"] = format64(body["nid"])
        out["locs"] = _text_locs(body["locs"])
        if body.get("via") is not None:
            out["via"] = format64(body["via"])
    return out


def frame_json(topic: bytes, body: dict) -> dict:
    """The body of a frame for --json: addresses as text (`0:0:0:a`, `ffff:0:0:a`,
    I-LVs `0:0:0:a:ffff:0:0:a`), bytes as hex; what does not fit its topic's layout is
    left as it came."""
    items = body.get("p")
    if isinstance(items, list):
        converted = []
        for item in items:
            try:
                converted.append(_item_json(topic, item))
            except (TypeError, ValueError, AttributeError):
                converted.append(_jsonable(item))
        return {**_jsonable({k: v for k, v in body.items() if k != "p"}), "p": converted}
    try:
        return _jsonable(_state_json(topic, body))
    except (KeyError, TypeError, ValueError):
        return _jsonable(body)


# --- --pcap: the node's packets as the underlay's datagrams -------------------------

class PcapTap:
    """Bus frames of link.rx and link.tx to pcap records, one flush per frame (a batch),
    so a reader at the other end of a pipe sees packets as they come."""

    def __init__(self, writer: PcapWriter, view: UnderlayView):
        self.writer = writer
        self.view = view
        self.bad_items = 0
        # data frames carry when they left in CLOCK_MONOTONIC ns: the pcap wants wall time
        self._wall_offset = time.time_ns() - time.monotonic_ns()

    def datagrams(self, topic: bytes, item: LinkItem) -> list[bytes]:
        """The IP/UDP packets an item is on the wire. link.tx: from our address to each
        destination of the interface it leaves on (a group, the broadcast address, every
        unicast peer); link.rx: to where it arrived, from a sender the bus does not name."""
        if not isinstance(item.datagram, bytes):
            raise TypeError("a datagram is bytes")
        route = self.view.route(item.loc)
        if topic == topics.LINK_TX:
            return [udp_datagram(source, dest, route.port, port, item.datagram, route.hop_limit)
                    for source, dest, port in route.sends]
        return [udp_datagram(route.sender, route.arrival, route.port, route.port, item.datagram, route.hop_limit)]

    def write_frame(self, topic: bytes, body: dict, limit: int | None = None) -> int:
        """Write the frame's items (at most `limit`); returns how many were written (an
        item sent to several unicast peers is one item, one record per peer)."""
        items = body.get("p")
        if topic not in (topics.LINK_RX, topics.LINK_TX) or not isinstance(items, list):
            return 0
        sent = body.get("t")
        stamp = sent + self._wall_offset if type(sent) is int and sent > 0 else time.time_ns()
        written = 0
        for item in items:
            if limit is not None and written >= limit:
                break
            try:
                packets = self.datagrams(topic, LinkItem(*item))
            except (TypeError, ValueError, OverflowError):
                self.bad_items += 1  # not the layout link items have: not a datagram of ours
                continue
            for packet in packets:
                self.writer.write(stamp, packet)
            written += 1
        if written:
            self.writer.flush()
        return written


def _underlay_of(run: RunDir) -> UnderlayView:
    """The node's underlay, from the config its broker names in node.json."""
    conf = run.read_node_info().get("conf")
    if not isinstance(conf, str) or not conf:
        raise click.ClickException(f"{run.node_json} names no config: the tap cannot tell the node's underlay")
    try:
        return UnderlayView(load_config(conf))
    except ConfigError as exc:
        raise click.ClickException(f"the node's config: {exc}") from None


def _open_output(path: str):
    if path == "-":
        return sys.stdout.buffer
    try:
        return open(path, "wb")
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None


def capture(client, view: UnderlayView, out, count: int | None = None, deadline: float | None = None,
            started=lambda: None) -> PcapTap | None:
    """Write the frames `client` receives (link.rx, link.tx) to `out` as a pcap until
    `count` packets, the deadline, or the reader at the other end of a pipe leaves
    (returns None then: EPIPE ends a capture quietly)."""
    try:
        tap = PcapTap(PcapWriter(out), view)
        out.flush()  # a reader at the other end of a pipe can open the capture now
        started()
        while count is None or tap.writer.packets < count:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            frame = client.recv(left)
            if frame is None:
                break
            tap.write_frame(*frame, limit=None if count is None else count - tap.writer.packets)
    except BrokenPipeError:
        # Wireshark closed, or head had enough: what Python would still flush at exit
        # has nowhere to go either
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
        return None
    except KeyboardInterrupt:
        pass
    return tap


def _run_capture(run: RunDir, path: str, count: int | None, deadline: float | None) -> None:
    """--pcap: what can be refused (the config, the file) is, before the bus is touched."""
    view = _underlay_of(run)
    out = _open_output(path)
    where = "stdout" if path == "-" else path
    client = None
    try:
        client = BusClient(run, name="tap")
        client.subscribe(topics.LINK_RX)
        client.subscribe(topics.LINK_TX)

        def started():
            client.wait_ready()  # our subscriptions have reached the broker: capturing from here
            click.echo(f"ilnp-tap: capturing link.rx and link.tx of {run.path} to {where}", err=True)

        tap = capture(client, view, out, count, deadline, started)
    except RequestError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if client is not None:
            client.close()
        if out is not sys.stdout.buffer:
            out.close()
    if tap is None:
        return
    lost = f", {client.gaps} frames missed by the tap" if client.gaps else ""
    bad = f", {tap.bad_items} bad items" if tap.bad_items else ""
    click.echo(f"ilnp-tap: {tap.writer.packets} packets to {where}{lost}{bad}", err=True)


@click.command(cls=OneLineCommand)
@click.argument("prefixes", nargs=-1)
@run_dir_option
@json_option
@click.option("--count", "-c", type=click.IntRange(min=1), default=None, help="Stop after N frames.")
@click.option("--timeout", "-t", type=click.FloatRange(min=0), default=None,
              help="Stop after S seconds (also when nothing arrives).")
@click.option("--hello", is_flag=True,
              help="Say hello after attaching, so every state owner republishes its state now.")
@click.option("--pcap", "pcap_path", metavar="FILE", default=None,
              help="Write the ILNP packets the node sends and receives to FILE (- for stdout) as a pcap "
                   "of the underlay's IP/UDP datagrams (tools/wireshark/ilnp.lua decodes them); "
                   "--count counts packets.")
def main(prefixes, run_dir, as_json, count, timeout, hello, pcap_path):
    """Print every bus frame of a running node (or those whose topic starts with PREFIXES),
    or capture its packets (--pcap)."""
    if pcap_path is not None and (prefixes or as_json or hello):
        raise click.UsageError("--pcap captures link.rx and link.tx: no PREFIXES, --json or --hello with it")
    if pcap_path == "-" and sys.stdout.isatty():
        raise click.UsageError("--pcap -: stdout is a terminal; pipe it (| wireshark -k -i -) or give a file")
    run = node(run_dir)
    if pcap_path is not None:
        _run_capture(run, pcap_path, count, None if timeout is None else time.monotonic() + timeout)
        return
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
                                   "body": frame_json(topic, body)})
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
