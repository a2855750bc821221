"""Word count whose counts survive a killed worker exactly once (docs/state.md).

Run it:  streamgale local examples/stateful_word_count.py --duration 5
On Redis (counts survive any worker or node):
         streamgale local examples/stateful_word_count.py -c topology.state.backend=redis \
             -c topology.state.redis.url=redis://127.0.0.1:6379/0
The spout replays every numbered sentence that fails; the count bolt is a
StatefulBolt, so a sentence is acked only once its counts are committed. Read
the committed counts of a running cluster topology with
`streamgale state stateful-word-count count`. Each time a checkpoint commits,
the report bolt prints the counts so far.
"""

from streamgale import Bolt, ReliableSpout, StatefulBolt, Topology

SENTENCES = [
    "the cow jumped over the moon",
    "an apple a day keeps the doctor away",
    "four score and seven years ago",
    "snow white and the seven dwarfs",
    "i am at two with nature",
]


class NumberedSentences(ReliableSpout):
    """Sentence n is SENTENCES[n % 5], for n = 0 .. sentences.total - 1 (default: endless)."""

    outputs = ["sentence"]

    def open(self, context):
        self.n = 0
        self.total = context.config.get("sentences.total")

    def next_message(self):
        if self.total is not None and self.n >= int(self.total):
            return None
        n, self.n = self.n, self.n + 1
        return n, [SENTENCES[n % len(SENTENCES)]]


class Split(Bolt):
    outputs = ["word"]

    def process(self, tup):
        for word in tup["sentence"].split():
            self.emit([word])


class Count(StatefulBolt):
    """The committed count of every word lives in ``self.state``, one task per word."""

    outputs = ["word", "count"]

    def process(self, tup):
        word = tup["word"]
        self.state[word] = self.state.get(word, 0) + 1
        self.emit([word, self.state[word]])

    def pre_commit(self, txid):
        total = sum(self.state.values())
        print(f"checkpoint {txid} committing: this task has counted {total} words", flush=True)


topology = Topology("stateful-word-count", config={"topology.state.checkpoint_interval": 1.0})
topology.spout("sentences", NumberedSentences)
topology.bolt("split", Split, parallelism=2).shuffle("sentences")
topology.bolt("count", Count, parallelism=2).fields("split", "word")
