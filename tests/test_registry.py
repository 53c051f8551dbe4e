"""One actor registry (actors/registry.py): supervisord.conf, the config schema, topic
routing and the actor packages all agree with it."""
from __future__ import annotations

import configparser
import importlib
from pathlib import Path

import pytest

from actors import config, registry
from actors.link.kinds import UNDERLAYS
from actors.proto import topics

ROOT = Path(__file__).resolve().parent.parent
EVERY = registry.ACTORS + registry.OPTIONAL  # every program a node may run


def supervisord_programs(path: Path = ROOT / "supervisord.conf") -> dict[str, configparser.SectionProxy]:
    parser = configparser.RawConfigParser()
    parser.read(path)
    return {s.split(":", 1)[1]: parser[s] for s in parser.sections() if s.startswith("program:")}


def test_supervisord_runs_exactly_the_registered_actors_in_their_order():
    programs = supervisord_programs()
    assert list(programs) == [entry.name for entry in registry.ACTORS]
    for entry in registry.ACTORS:
        program = programs[entry.name]
        assert program["command"] == f"ilnp-actor {entry.name}"
        assert int(program["priority"]) == entry.priority
        assert program["autorestart"] == "true"


@pytest.mark.parametrize("entry", registry.OPTIONAL, ids=lambda e: e.name)
def test_an_optional_program_has_its_own_block_and_a_config_field_that_enables_it(entry):
    """Not in supervisord.conf (a node that does not enable it never runs it), but in
    supervisord.d/NAME.conf, which the supervision listener hands to supervisord."""
    assert entry.name not in supervisord_programs()
    program = supervisord_programs(ROOT / "supervisord.d" / f"{entry.name}.conf")[entry.name]
    assert program["command"] == f"ilnp-actor {entry.name}"
    assert int(program["priority"]) == entry.priority and program["autorestart"] == "true"
    assert entry.enabled_by in config.NodeConfig.__dataclass_fields__
    assert config.NodeConfig.__dataclass_fields__[entry.enabled_by].default is None  # off unless set


def test_the_broker_starts_before_every_actor():
    broker = registry.spec("broker")
    assert all(entry.priority > broker.priority for entry in EVERY if entry is not broker)


def test_the_fd_store_starts_before_the_link_and_after_the_broker():
    """The link takes its underlay socket back from the store at start (bus/fdstore.py)."""
    fdstore, link = registry.spec("fdstore"), registry.spec("link")
    assert registry.spec("broker").priority < fdstore.priority < link.priority
    assert not fdstore.serves_requests and not fdstore.consumes and not fdstore.config_sections


def test_every_config_section_is_read_by_a_registered_actor_and_back():
    schema_sections = {key.split(".")[0] for key in config._SPEC if "." in key}
    assert schema_sections == registry.config_sections()


def test_a_section_no_actor_reads_is_refused():
    with pytest.raises(config.ConfigError, match=r"unknown section \[nosuch\]"):
        config.parse_config({"hostname": "a", "nid": "1:0:0:1", "locators": {"schedule": "0:0:0:a"},
                             "nosuch": {"port": 1}})


def test_every_data_topic_has_exactly_one_consumer():
    for topic in topics.DATA_TOPICS:
        consumers = [entry.name for entry in registry.ACTORS if topic in entry.consumes]
        assert len(consumers) == 1, (topic, consumers)
    consumed = {t for entry in registry.ACTORS for t in entry.consumes}
    assert consumed == set(topics.DATA_TOPICS)


@pytest.mark.parametrize("entry", EVERY, ids=lambda e: e.name)
def test_every_entry_names_a_shell_with_main(entry):
    module = importlib.import_module(entry.module)
    assert callable(module.main)


@pytest.mark.parametrize("entry", [e for e in EVERY if e.serves_requests], ids=lambda e: e.name)
def test_every_actor_shell_opens_its_own_registry_entry(entry):
    """So the bus runtime gets the topics the registry says it consumes."""
    source = (ROOT / (entry.module.replace(".", "/") + ".py")).read_text()
    assert f'open_actor("{entry.name}"' in source


def test_every_actor_package_is_registered_and_shared_packages_have_no_shell():
    packages = {p.parent.name for p in (ROOT / "actors").glob("*/__init__.py")}
    with_shell = {p for p in packages if (ROOT / "actors" / p / "main.py").exists()}
    assert with_shell == {entry.name for entry in EVERY}
    assert packages - with_shell == {"proto", "stp"}


def test_config_knows_every_underlay_kind_the_link_implements():
    assert set(config.UNDERLAY_KINDS) == set(UNDERLAYS)
