"""A bolt that raises on every 10th number: errors must reach `stats` and the error record."""


from streamgale import Bolt, ReliableSpout, Topology


class Numbers(ReliableSpout):
    outputs = ["n"]
    max_retries = 0

    def open(self, context):
        self.todo = list(range(context.task_index, int(context.config["test.total"]), context.task_count))
        self.todo.reverse()

    def next_message(self):
        if not self.todo:
            return None
        n = self.todo.pop()
        return n, [n]


class Boom(Bolt):
    def process(self, tup):
        if tup["n"] % 10 == 0:
            raise ValueError(f"cannot handle {tup['n']}")


topology = Topology("faulty", config={"topology.workers": 2})
topology.spout("numbers", Numbers, parallelism=2)
topology.bolt("boom", Boom, parallelism=2).shuffle("numbers")
