# The original's stopping example, no __main__ guard: a realtime flow stopped after two
# seconds; what was printed is an in-order prefix, and the script ends without join().
import time

from videoflow.consumers import CommandlineConsumer
from videoflow.core import Flow
from videoflow.processors import IdentityProcessor, JoinerProcessor
from videoflow.producers import IntProducer

numbers = IntProducer(0, 40, 0.1)
first = IdentityProcessor(nb_tasks=5)(numbers)
second = IdentityProcessor(nb_tasks=5)(first)
pairs = JoinerProcessor(nb_tasks=5)(first, second)
out = CommandlineConsumer()(pairs)
flow = Flow([numbers], [out])
flow.run()
time.sleep(2)
flow.stop()
