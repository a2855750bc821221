"""The pass-through bolt written with pystorm, as a Storm user writes one (it acks each tuple
when ``process`` returns, anchoring the emit to it). Argument: json or msgpack."""

import sys

from pystorm import Bolt


class Passthrough(Bolt):
    def process(self, tup):
        self.emit(tup.values)


if __name__ == "__main__":
    Passthrough(serializer=sys.argv[1] if len(sys.argv) > 1 else "json").run()
