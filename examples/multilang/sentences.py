"""A reliable spout written for Apache Storm with pystorm, unchanged: it emits numbered
sentences (``multilang.sentences`` of them; endless if unset) and replays any that fail."""

import sys

from pystorm import ReliableSpout

SENTENCES = [
    "The cow jumped over the Moon",
    "An apple a day keeps the doctor away",
    "Four score and seven years ago",
    "Snow White and the seven dwarfs",
    "I am at two with Nature",
]


class Sentences(ReliableSpout):
    max_fails = 1000  # replay until processed

    def initialize(self, storm_conf, context):
        limit = storm_conf.get("multilang.sentences")
        self.limit = None if limit is None else int(limit)
        self.next_id = 0

    def next_tuple(self):
        if self.limit is None or self.next_id < self.limit:
            self.emit([SENTENCES[self.next_id % len(SENTENCES)]], tup_id=str(self.next_id))
            self.next_id += 1


if __name__ == "__main__":
    Sentences(serializer=sys.argv[1] if len(sys.argv) > 1 else "json").run()
