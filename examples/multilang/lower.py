"""A bolt written for Apache Storm with pystorm, unchanged: lower-cases each word."""

import sys

from pystorm import Bolt


class Lower(Bolt):  # pystorm acks each tuple when process returns, anchoring emits to it
    def process(self, tup):
        self.emit([tup.values[0].lower()])


if __name__ == "__main__":
    Lower(serializer=sys.argv[1] if len(sys.argv) > 1 else "json").run()
