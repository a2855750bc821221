"""RabbitMQ -> topology, for the connector's cluster test.

The spout consumes ``rabbitmq.queue`` at ``rabbitmq.url`` (config keys, given at submit) with
manual acks; the "work" bolt (fields grouping on the body, 4 tasks over the workers) records
"task pid body" per tuple under test.output_dir (after test.work_delay s, a throttle); "done" ends the tree. A body is committed
(``basic_ack``) only once its whole tree is acked, so a killed worker's tuples time out, are
nacked with requeue and come back.
"""

import os
import time
from pathlib import Path

from streamgale import Bolt, Topology
from streamgale.connectors.rabbitmq import RabbitMQSource


class Work(Bolt):
    outputs = ["body"]

    def prepare(self, context):
        out = Path(context.config["test.output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        self.log = open(out / f"work-{context.task_id}-{os.getpid()}.txt", "a", buffering=1)
        self.task = context.task_id
        self.pid = os.getpid()
        self.delay = float(context.config.get("test.work_delay", 0))  # a throttle: keeps the run long

    def process(self, tup):
        if self.delay:
            time.sleep(self.delay)
        self.log.write(f"{self.task} {self.pid} {tup['body']}\n")
        self.emit([tup["body"]])


class Done(Bolt):
    def process(self, tup):
        pass


topology = Topology("rabbitmq-pipeline", config={"topology.workers": 3, "topology.message_timeout": 8,
                                                "topology.max_spout_pending": 200})
topology.spout("queue", RabbitMQSource(max_retries=None))
topology.bolt("work", Work, parallelism=4).fields("queue", "body")
topology.bolt("done", Done, parallelism=2).shuffle("work")
