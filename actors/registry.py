"""The actor registry: every program of a node, in one table.

Adding an actor is a package with a shell (`main(config, run)`) and one entry here.
`ilnp-actor NAME` (actors/run.py) starts entries by name, config validation accepts
the sections listed here, the direct data path routes each data topic to the actor
that consumes it, and `ilnp-status` asks each of them. tests/test_registry.py checks
that supervisord.conf and the config schema agree with this table.

Optional programs (OPTIONAL) run only when the node's config enables them (`enabled_by`
names the NodeConfig field): they are not in supervisord.conf but in
supervisord.d/NAME.conf, which the `supervision` listener hands to supervisord at start
when the config sets that field (tools/supervision.py). A node without them runs none.
"""
from __future__ import annotations

from dataclasses import dataclass

from bus.actor import Actor

from .proto import topics


@dataclass(frozen=True)
class ActorSpec:
    name: str
    module: str                  # has main(config: NodeConfig, run: RunDir)
    config_sections: tuple[str, ...] = ()  # TOML tables it reads
    consumes: tuple[bytes, ...] = ()       # data topics pushed into its inbox
    priority: int = 40           # start order (supervisord priority): lower starts first
    serves_requests: bool = True  # has a request socket (`status`, ...)
    enabled_by: str | None = None  # optional program: runs only when this NodeConfig field is set


ACTORS: tuple[ActorSpec, ...] = (
    ActorSpec("broker", "actors.broker.main", priority=10, serves_requests=False),
    # keeps the link's underlay socket across the link's restarts (bus/fdstore.py): before the link
    ActorSpec("fdstore", "actors.fdstore.main", priority=15, serves_requests=False),
    ActorSpec("link", "actors.link.main", ("underlay", "link"), (topics.LINK_TX,), priority=20),
    ActorSpec("router", "actors.router.main", ("router",), (topics.LINK_RX, topics.ILNP_TX), priority=20),
    ActorSpec("discovery", "actors.discovery.main", ("discovery",), (topics.ILNP_RX_DISCOVERY,), priority=30),
    ActorSpec("mobility", "actors.mobility.main", ("locators", "mobility"),
              (topics.ILNP_RX_LOCATOR_UPDATE,), priority=30),
    ActorSpec("echo", "actors.echo.main", priority=40),
    ActorSpec("proxy", "actors.proxy.main", ("proxy",), priority=40),
    ActorSpec("stream", "actors.stream.main", ("stream",), priority=40),
)

# Programs a node runs only when its config enables them (supervisord.d/NAME.conf).
OPTIONAL: tuple[ActorSpec, ...] = (
    # the Prometheus endpoint (`[metrics] port`): polls every actor's status on a scrape
    ActorSpec("metrics", "actors.metrics.main", ("metrics",), priority=50, enabled_by="metrics_port"),
)

BY_NAME = {spec.name: spec for spec in ACTORS + OPTIONAL}
NODE_SECTIONS = ("",)  # top-level keys (hostname, nid) belong to the node, not an actor


def spec(name: str) -> ActorSpec:
    """The entry of a registered actor (KeyError for an unknown name)."""
    return BY_NAME[name]


def consumer_of(topic: bytes) -> str | None:
    """The actor that consumes a data topic, if any."""
    for entry in ACTORS:
        if topic in entry.consumes:
            return entry.name
    return None


def config_sections() -> set[str]:
    """Every TOML table some actor reads."""
    return {section for entry in ACTORS + OPTIONAL for section in entry.config_sections}


def enabled_optional(config) -> list[ActorSpec]:
    """The optional programs this node config enables."""
    return [entry for entry in OPTIONAL if getattr(config, entry.enabled_by, None)]


def open_actor(name: str, run, **kwargs) -> Actor:
    """The bus runtime for registered actor `name`, wired as its entry says."""
    entry = spec(name)
    return Actor(name, run, consumes=entry.consumes, serve_requests=entry.serves_requests, **kwargs)
