"""How a flow is shared out between copies: cuts at keyed steps, and the flows each copy runs.

A pipeline that reaches a keyed step (stateful_map, reduce, batch, a
window) is cut before it, as Kafka Streams cuts a topology at a
repartition: the steps before the cut send their items to the topic
``{app}-{step}-repartition`` by key (`RepartitionSink`); the keyed step and
the steps after it read the partitions of that topic assigned to this
copy (`RepartitionSource`). The keyed steps of that second part keep their
state per partition in ``{app}-{step}-changelog`` (`aiowax._cluster.store`).

A copy runs two flows built from the user's (`Topology.front_flow` and
`Topology.generation_flow`): the pipelines of `DynamicSource` inputs,
which every copy reads for as long as it runs; and, for each assignment
Kafka makes, the pipelines of `KafkaSource` inputs and the keyed parts,
limited to the partitions assigned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from aiowax._cluster.config import KafkaCluster, check_topic_part
from aiowax._cluster.repartition import AssignedKafkaSource, RepartitionSink, RepartitionSource
from aiowax._cluster.tagging import tagged_step
from aiowax._connectors.kafka.source import KafkaSource
from aiowax._definition.flow import Dataflow
from aiowax._definition.inputs import DynamicSource
from aiowax._definition.outputs import FixedPartitionedSink
from aiowax._definition.steps import InputStep, OutputStep, Step
from aiowax._engine.kinds import kind_of
from aiowax._engine.plan import Pipeline, compile_flow
from aiowax._errors import ClusterError

#: Partitions of the internal topics of a flow with no `KafkaSource`.
DEFAULT_PARTITIONS = 6


def read_by_every_copy(source: object) -> bool:
    """A source each copy reads for itself: a `DynamicSource`, or one of the in-process inputs.

    `PushSource` and `IterableSource` hold what this process feeds them (a
    web service's requests): every copy has its own, whatever Kafka assigns.
    """
    from aiowax._connectors.inproc import IterableSource, PushSource

    return isinstance(source, DynamicSource | PushSource | IterableSource)


@dataclass(frozen=True)
class Cut:
    """Where a pipeline goes through a repartition topic.

    Attributes:
        pipeline: The pipeline's index.
        position: Index, in the pipeline's steps, of the first keyed step.
        step_id: That keyed step's id, which names the repartition topic.
        repartition_topic: ``{app}-{step_id}-repartition``.
        changelogs: The changelog topic of each keyed step after the cut,
            by step id, in flow order.
        tagged: Items before the cut carry their origin (a `KafkaSource`).
        writer_id: The internal output step that writes the topic.
        reader_id: The internal input step that reads it.
    """

    pipeline: int
    position: int
    step_id: str
    repartition_topic: str
    changelogs: dict[str, str]
    tagged: bool
    writer_id: str
    reader_id: str


def _internal_id(step_id: str, role: str, taken: set[str]) -> str:
    name = f"{step_id}::{role}"
    while name in taken:
        name += "'"
    taken.add(name)
    return name


@dataclass(frozen=True)
class Topology:
    """The user's flow as cluster mode runs it: its cuts and its Kafka inputs."""

    cluster: KafkaCluster
    pipelines: list[Pipeline]
    cuts: dict[int, Cut]
    partitions: int
    #: The user's flow's name (`Dataflow(name=...)`).
    name: str | None = None

    def kafka_sources(self) -> dict[int, KafkaSource]:
        """The `KafkaSource` of each pipeline that has one, by pipeline index."""
        return {
            p.index: p.input.source
            for p in self.pipelines
            if isinstance(p.input.source, KafkaSource)
        }

    def source_topics(self) -> list[str]:
        """Every topic the flow's `KafkaSource` inputs read, once each."""
        topics: list[str] = []
        for source in self.kafka_sources().values():
            topics.extend(t for t in source._topics if t not in topics)
        return topics

    def group_topics(self) -> list[str]:
        """What the consumer group subscribes to: source and repartition topics."""
        return self.source_topics() + [cut.repartition_topic for cut in self.cuts.values()]

    def internal_topics(self) -> dict[str, bool]:
        """Each internal topic, and whether it is compacted (a changelog)."""
        topics: dict[str, bool] = {}
        for cut in self.cuts.values():
            topics[cut.repartition_topic] = False
            topics.update(dict.fromkeys(cut.changelogs.values(), True))
        return topics

    def front_flow(self) -> Dataflow | None:
        """The pipelines of `DynamicSource` inputs, up to their cut; None if none."""
        steps: list[Step] = []
        for pipeline in self.pipelines:
            if read_by_every_copy(pipeline.input.source):
                steps.extend(self._before_cut(pipeline, pipeline.input))
        return _flow_of(steps, self.name)

    def generation_flow(self, assigned: Mapping[str, list[int]]) -> Dataflow | None:
        """What this copy runs for an assignment (topic -> partitions); None if nothing."""
        steps: list[Step] = []
        for pipeline in self.pipelines:
            source = pipeline.input.source
            cut = self.cuts.get(pipeline.index)
            if isinstance(source, KafkaSource):
                names = [f"{p}-{t}" for t in source._topics for p in sorted(assigned.get(t, []))]
                if names:
                    wrapped = AssignedKafkaSource(source, names, cut is not None)
                    steps.extend(
                        self._before_cut(pipeline, replace(pipeline.input, source=wrapped))
                    )
            if cut is not None and assigned.get(cut.repartition_topic):
                reader = RepartitionSource(
                    self.cluster, cut.repartition_topic, assigned[cut.repartition_topic]
                )
                steps.append(InputStep(step_id=cut.reader_id, index=0, source=reader))
                steps.extend(pipeline.steps[cut.position :])
        return _flow_of(steps, self.name)

    def _before_cut(self, pipeline: Pipeline, head: InputStep) -> list[Step]:
        cut = self.cuts.get(pipeline.index)
        if cut is None:
            return [head, *pipeline.steps]
        before = list(pipeline.steps[: cut.position])
        if cut.tagged:
            before = [tagged_step(step) for step in before]
        sink = RepartitionSink(
            self.cluster, cut.repartition_topic, self.partitions, cut.step_id, cut.tagged
        )
        return [head, *before, OutputStep(step_id=cut.writer_id, index=0, sink=sink)]


def _flow_of(steps: list[Step], name: str | None) -> Dataflow | None:
    if not steps:
        return None
    flow = Dataflow(name)
    for index, step in enumerate(steps):
        flow._steps.append(replace(step, index=index))
        flow._ids.add(step.step_id)
    return flow


def plan(flow: Dataflow, cluster: KafkaCluster, source_partitions: int | None) -> Topology:
    """Check that cluster mode can run ``flow``, and where it must cut it.

    Args:
        flow: The user's flow.
        cluster: The cluster settings.
        source_partitions: The most partitions of the flow's source topics,
            if it has any (the default partition count of internal topics).

    Raises:
        ClusterError: A source, sink or step that cluster mode cannot share
            out, named, with the reason.
    """
    pipelines = compile_flow(flow)
    taken = {step.step_id for step in flow.steps}
    cuts: dict[int, Cut] = {}
    for pipeline in pipelines:
        _check_input(pipeline.input)
        cut = _cut_of(pipeline, cluster.app_id, taken)
        if cut is not None:
            cuts[pipeline.index] = cut
    partitions = cluster.partitions or source_partitions or DEFAULT_PARTITIONS
    return Topology(cluster, pipelines, cuts, partitions, getattr(flow, "name", None))


def _check_input(step: InputStep) -> None:
    source = step.source
    if isinstance(source, KafkaSource):
        if not source._tail:
            msg = (
                f"cluster mode: {step} reads with tail=False; in cluster mode the copies "
                "share the topics' partitions and keep reading until they are stopped "
                "(use tail=True, and stop the copies with SIGTERM or FlowHandle.stop)"
            )
            raise ClusterError(msg)
    elif not read_by_every_copy(source):
        msg = (
            f"cluster mode: {step} uses {type(source).__name__}, a partitioned source "
            "that cluster mode cannot share out between copies; use a KafkaSource "
            "(its partitions are assigned through the consumer group), or a "
            "DynamicSource, PushSource or IterableSource (every copy reads its own)"
        )
        raise ClusterError(msg)


def _cut_of(pipeline: Pipeline, app_id: str, taken: set[str]) -> Cut | None:
    """The pipeline's cut, if it has a keyed step; refuse what cannot be shared out."""
    position: int | None = None
    after_keyed = False
    for i, step in enumerate(pipeline.steps):
        if isinstance(step, OutputStep) and isinstance(step.sink, FixedPartitionedSink):
            msg = (
                f"cluster mode: {step} writes to {type(step.sink).__name__}, a partitioned "
                "sink whose partitions cluster mode cannot share out between copies; use "
                "a DynamicSink (each copy writes its own part), such as KafkaSink"
            )
            raise ClusterError(msg)
        keyed = kind_of(step).keyed
        if keyed and position is None:
            position = i
        elif keyed and not after_keyed:
            assert position is not None
            msg = (
                f"cluster mode: {step} is keyed but follows steps after the keyed step "
                f"{pipeline.steps[position].step_id!r} that may change the keys; cluster "
                "mode repartitions a pipeline once, before its first keyed step (put the "
                "keyed steps one after the other, or split the flow with a topic between)"
            )
            raise ClusterError(msg)
        after_keyed = keyed
    if position is None:
        return None
    keyed_id = pipeline.steps[position].step_id
    changelogs: dict[str, str] = {}
    for step in pipeline.steps[position:]:
        if not kind_of(step).keyed:
            break
        check_topic_part("step id", step.step_id)
        changelogs[step.step_id] = f"{app_id}-{step.step_id}-changelog"
    return Cut(
        pipeline=pipeline.index,
        position=position,
        step_id=keyed_id,
        repartition_topic=f"{app_id}-{keyed_id}-repartition",
        changelogs=changelogs,
        tagged=isinstance(pipeline.input.source, KafkaSource),
        writer_id=_internal_id(keyed_id, "repartition-out", taken),
        reader_id=_internal_id(keyed_id, "repartition-in", taken),
    )
