"""Build-time validation: every message names the fault."""

import pytest

from streamgale import Bolt, Spout, Topology, TopologyError
from streamgale.wire.spec import SpecError, TopologySpec


class Src(Spout):
    outputs = {"default": ["word"], "errors": ["reason"]}


class Pass(Bolt):
    outputs = ["word"]

    def process(self, tup):
        self.emit([tup[0]])


def base():
    t = Topology("t")
    t.spout("src", Src)
    return t


def error_of(build):
    with pytest.raises(TopologyError) as e:
        t = build()
        t.validate()
    return str(e.value)


def test_unknown_source_component():
    def build():
        t = base()
        t.bolt("b", Pass).shuffle("nope")
        return t
    assert error_of(build) == "bolt 'b' subscribes to unknown component 'nope' (components: 'src', 'b')"


def test_unknown_stream():
    def build():
        t = base()
        t.bolt("b", Pass).shuffle("src", stream="words")
        return t
    assert error_of(build) == (
        "component 'b' subscribes to stream 'words' of 'src', which declares only 'default', 'errors'"
    )


def test_grouping_on_undeclared_field():
    def build():
        t = base()
        t.bolt("b", Pass).fields("src", "count")
        return t
    assert error_of(build) == (
        "bolt 'b' groups stream 'default' of 'src' by field 'count', which is not declared (fields: ['word'])"
    )


def test_duplicate_names():
    def build():
        t = base()
        t.bolt("src", Pass)
        return t
    assert error_of(build) == "component name 'src' is declared twice in topology 't'"


@pytest.mark.parametrize("p", [0, -1, 1.5, "2", True])
def test_bad_parallelism(p):
    assert error_of(lambda: base().bolt("b", Pass, parallelism=p)).startswith(
        "bolt 'b': parallelism must be an integer >= 1"
    )


def test_tasks_fewer_than_executors():
    assert "tasks must be an integer >= parallelism (4)" in error_of(
        lambda: base().bolt("b", Pass, parallelism=4, tasks=2)
    )


@pytest.mark.parametrize("name", ["", "has space", "1st", "a/b", "x" * 65, "__acker", "dot.ted"])
def test_unsafe_component_names(name):
    assert "is invalid: use 1-64 letters, digits" in error_of(lambda: base().bolt(name, Pass))


def test_bad_topology_name():
    assert "topology name 'my topo' is invalid" in error_of(lambda: Topology("my topo"))


def test_component_class_must_subclass_the_right_base():
    assert error_of(lambda: base().bolt("b", Src)) == "bolt 'b': Src must subclass streamgale.Bolt"


def test_bolt_without_inputs():
    def build():
        t = base()
        t.bolt("b", Pass)
        return t
    assert error_of(build).startswith("bolt 'b' subscribes to no stream")


def test_no_spout():
    assert error_of(lambda: Topology("t")) == "topology 't' has no spout"


def test_bad_outputs_declaration():
    class Bad(Bolt):
        outputs = {"__system": ["x"]}
    assert "stream name '__system' is invalid" in error_of(lambda: base().bolt("b", Bad))


def test_bad_component_config():
    def build():
        t = base()
        t.bolt("b", Pass, config={"topology.tick_interval": -1}).shuffle("src")
        return t
    assert error_of(build) == (
        "config key 'topology.tick_interval' in config of component 'b' must be "
        "a number of seconds > 0 or null, got -1"
    )


def test_tasks_are_numbered_by_component_name_and_split_over_executors():
    t = base()
    t.bolt("b", Pass, parallelism=2, tasks=5).shuffle("src")
    assert t.task_ids() == {"b": (1, 2, 3, 4, 5), "src": (6,)}
    assert t.executors() == {"b": [(1, 2, 3), (4, 5)], "src": [(6,)]}
    one_per_task = base()
    one_per_task.bolt("b", Pass, parallelism=5, tasks=5).shuffle("src")
    assert one_per_task.task_ids() == t.task_ids()  # the executor count moves no task
    assert one_per_task.executors() == {"b": [(1,), (2,), (3,), (4,), (5,)], "src": [(6,)]}


def test_spec_is_a_typed_record_whose_wire_form_is_plain_data_and_round_trips():
    t = base()
    t.bolt("b", Pass, parallelism=2).fields("src", "word")
    spec = t.validate().spec()
    assert TopologySpec.from_dict(spec.to_dict()) == spec
    assert spec.components["b"].inputs[0].grouping == "fields"
    assert spec.to_dict()["components"]["b"] == {
        "kind": "bolt", "class": "test_topology.Pass", "parallelism": 2, "tasks": 2,
        "outputs": {"default": ["word"]},
        "inputs": [{"source": "src", "stream": "default", "type": "fields", "fields": ["word"]}],
        "config": {},
    }


def test_the_cluster_applies_the_same_rules_as_the_builder():
    """nimbus validates a submitted spec with TopologySpec.validate: a spec edited on the wire
    (a bolt subscribing to an undeclared stream) gets the builder's message."""
    t = base()
    t.bolt("b", Pass).shuffle("src")
    wire = t.spec().to_dict()
    wire["components"]["b"]["inputs"][0]["stream"] = "nope"
    with pytest.raises(SpecError, match="component 'b' subscribes to stream 'nope' of 'src', which declares only "
                                        "'default'"):
        TopologySpec.from_dict(wire).validate()
    wire["components"]["b"]["inputs"] = []
    with pytest.raises(SpecError, match=r"bolt 'b' subscribes to no stream; add a grouping such as"):
        TopologySpec.from_dict(wire).validate()
    with pytest.raises(SpecError, match="must have kind 'spout' or 'bolt', got 'nonsense'"):
        TopologySpec.from_dict({"components": {"x": {"kind": "nonsense"}}})
