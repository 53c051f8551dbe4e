"""`ilnp-attack bus-garbage`: a local process of the node's user sends malformed frames and
requests to every endpoint of the node's run directory (issue 12): the bus (bus-in.sock),
every request socket (ctl-*.sock) and every inbox (in-*.sock), and plain bytes that are
not ZMTP at all to each. Every actor must survive all of it and count each frame and
request it dropped (`ilnp-status`); nothing here is well-formed, so nothing is taken.

    ilnp-attack bus-garbage --run-dir DIR [--frames N] [--seed S]

What it sends, N of each kind to each endpoint, in turn:
- inboxes (a topic's or an actor's): one part, three parts, an undecodable body, a body
  that is not a map, a batch `p` that is not a list, a batch of one item of no layout;
  each is one drop at the consumer (bad_frames, bad_bodies, bad_items, or unhandled when
  the actor takes no such topic there).
- the bus: the same frame-level garbage on every state and control topic, senders that
  are not names, and state bodies with keys missing or of the wrong types (each
  subscriber counts it). State
  topics that applications follow too (state.hosts, state.ports) get frame-level
  garbage only: a BusClient drops and counts that, but the application library takes
  the bodies of those topics as they come (docs/NOTES.md).
- request sockets: undecodable requests, no command, a command of the wrong type or
  unknown, argument names that are not strings, and every command of the node with
  arguments of the wrong types; each gets a one-line refusal and one count (bad_requests,
  unknown_commands, requests_refused).
Prints one JSON line: what went where, and how the requests were answered.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import socket
import time
from pathlib import Path

import click
import zmq

from actors.proto import topics
from actors.registry import BY_NAME
from bus.client import BusClient
from bus.codec import HELLO, pack, unpack
from tools.common import node, run_dir_option

NAME = f"bus-garbage.{os.getpid()}"
BAD_VALUES = ([[1]], {"x": [2]}, 1.5, b"\xff\xfe")  # no command of the node takes any of these
COMMANDS = {  # every command of the node and its arguments (docs/DESIGN.md, Requests)
    "status": (), "ping": (), "joined": (), "sessions": (), "routes": (), "ports": (),
    "bind": ("port", "pid", "inbox"), "unbind": ("port", "pid"), "hosts": (), "conflicts": (),
    "resolve": ("name",), "locators": (), "move": ("locs",), "list": (),
    "map": ("local_port", "host", "remote_port"), "unmap": ("local_port",),
    "serve": ("stp_port", "host", "port"), "listen": ("local_port", "host", "stp_port"),
    "forwards": (), "delete": ("serve",),
}
STATE_BODIES = {  # keys missing or of the wrong types: no owner ever sends these
    topics.STATE_LOCATORS: ({}, {"joined": "0:0:0:a", "leaving": []}, {"joined": [[10]], "leaving": [1.5]},
                            {"joined": [-1], "leaving": []}, {"cur": [10], "joined": [10]}),
    topics.STATE_SESSIONS: ({}, {"sessions": 7}, {"sessions": {"x": 1}}),
    topics.STATE_FORWARDING: ({}, {"epoch": "x"}, {"epoch": [1]}),
    topics.MOB_PEER: ({}, {"nid": [1], "locs": [10], "via": 10}, {"nid": 1, "locs": "x", "via": 10},
                      {"nid": 1, "locs": [10], "via": "x"}),
}
FRAME_ONLY = (HELLO, topics.STATE_HOSTS, topics.STATE_PORTS)
BAD_ITEM = [[1], "x", None]  # three fields: no data topic has items of three


def frame_garbage(topic: bytes, seq) -> list:
    """The frame-level kinds, in turn: each is one drop wherever it arrives."""
    return [[topic], [topic, pack({}), b"extra"], [topic, b"\xc1"], [topic, pack([1, 2])],
            [topic, pack({"a": NAME, "q": next(seq), "p": 7})],
            [topic, pack({"a": NAME, "q": next(seq), "p": [BAD_ITEM]})]]


def bus_garbage_frames(seq) -> list:
    frames = []
    for topic in (*FRAME_ONLY, *STATE_BODIES):
        frames += frame_garbage(topic, seq)[:4]
    for topic in (HELLO, *STATE_BODIES):  # a sender that is not a name (it took every actor down once)
        frames += [[topic, pack({"a": [1], "q": 1})], [topic, pack({"a": {"x": 1}, "q": [2]})]]
    for topic, bodies in STATE_BODIES.items():
        frames += [[topic, pack({"a": NAME, "q": next(seq), **body})] for body in bodies]
    return frames


def bad_requests() -> list[bytes]:
    out = [b"\xc1", b"", pack([1]), pack({"nocmd": 1}), pack({"cmd": [1]}), pack({"cmd": 7}),
           pack({"cmd": "no-such-command"}), pack({"cmd": "status", 1: 2}), pack({"cmd": "ping", "extra": 1})]
    for cmd, params in COMMANDS.items():
        for value in BAD_VALUES:
            out.append(pack({"cmd": cmd, **({p: value for p in params} if params else {"junk": value})}))
    return out


def inbox_topic(path: Path) -> bytes:
    """The topic to send to an inbox: its own for a topic's inbox, else the first data
    topic its actor consumes (echo: its STP port), else one nobody takes there."""
    name = path.name[len("in-"):-len(".sock")]
    if name.startswith("t-"):
        return name[2:].encode()
    consumes = BY_NAME[name].consumes if name in BY_NAME else ()
    if consumes:
        return consumes[0]
    return topics.stp_rx(7) if name == "echo" else b"ilnp.rx.42.00000"


def raw_bytes(path: Path) -> bool:
    """Not ZMTP at all (zmq drops the connection), or on an inbox (SEQPACKET) a message
    whose topic length runs past its end (the inbox counts it): nothing an actor takes."""
    junk = b"\xff" * 64 + b"GET / HTTP/1.0\r\n\r\n" + os.urandom(64)
    for kind in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET):
        try:
            with socket.socket(socket.AF_UNIX, kind) as sock:
                sock.settimeout(1.0)
                sock.connect(str(path))
                sock.sendall(junk)
            return True
        except OSError:
            continue
    return False


def send_requests(ctx: zmq.Context, path: Path, reqs: list[bytes]) -> dict:
    """Each request on a DEALER, waiting for its answer; how they were answered."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{path}")
    got = {"sent": 0, "refused": 0, "accepted": 0, "unanswered": 0}
    try:
        for raw in reqs:
            sock.send_multipart([b"", raw])
            got["sent"] += 1
            if not sock.poll(2000):
                got["unanswered"] += 1
                continue
            reply = unpack(sock.recv_multipart()[-1])
            got["accepted" if reply.get("ok") else "refused"] += 1
    finally:
        sock.close()
    return got


def push_frames(path: Path, frames: list) -> int:
    """Each frame as one inbox message (bus/direct.py: topic length, topic, frame); a frame
    of one part has no body, one of three parts a body with bytes after it."""
    sent = 0
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.settimeout(2.0)
            sock.connect(str(path))
            for parts in frames:
                topic = parts[0]
                sock.send(bytes((len(topic),)) + topic + b"".join(parts[1:]))
                sent += 1
    except OSError:
        pass  # the consumer does not read (gone): what was not sent is not counted
    return sent


@click.command("bus-garbage")
@run_dir_option
@click.option("--frames", "count", type=click.IntRange(min=1), default=60, show_default=True,
              help="Frames (and requests) per endpoint.")
@click.option("--seed", type=int, default=None, help="Shuffle the kinds with this seed.")
def bus_garbage(run_dir, count, seed):
    """Malformed frames and requests to every endpoint of a node's run directory."""
    run = node(run_dir)
    rng = random.Random(seed)
    seq = itertools.count(1)
    endpoints = sorted(run.path.glob("*.sock"))  # listed before we add an inbox of our own
    ctx = zmq.Context.instance()
    out: dict = {"frames": {}, "requests": {}, "raw": 0}
    client = BusClient(run, name="bus-garbage")
    try:
        client.wait_ready()   # our publisher knows every subscription now
        frames = bus_garbage_frames(seq)
        sent = [frames[i % len(frames)] for i in range(count)]
        rng.shuffle(sent)
        for parts in sent:
            client.pub.send_multipart(parts)
        out["frames"]["bus-in.sock"] = len(sent)
        reqs = bad_requests()
        for path in endpoints:
            name = path.name
            if name.startswith("ctl-"):
                batch = [reqs[i % len(reqs)] for i in range(count)]
                rng.shuffle(batch)
                out["requests"][name] = send_requests(ctx, path, batch)
            elif name.startswith("in-"):
                kinds = frame_garbage(inbox_topic(path), seq)
                batch = [kinds[i % len(kinds)] for i in range(count)]
                rng.shuffle(batch)
                out["frames"][name] = push_frames(path, batch)
        for path in endpoints:
            if path.name.startswith(("bus-", "ctl-", "in-")):
                out["raw"] += raw_bytes(path)
        time.sleep(0.2)   # the broker forwards what we published before we go
    finally:
        client.close()
    out["total_frames"] = sum(out["frames"].values())
    out["total_requests"] = sum(r["sent"] for r in out["requests"].values())
    out["accepted"] = sum(r["accepted"] for r in out["requests"].values())
    click.echo(json.dumps(out))
