# The original videoflow 0.2.10's first example, as a user wrote it: no __main__ guard.
# Two identity processors in a row and a joiner of both; a realtime flow prints 41 pairs.
from videoflow.consumers import CommandlineConsumer
from videoflow.core import Flow
from videoflow.processors import IdentityProcessor, JoinerProcessor
from videoflow.producers import IntProducer

numbers = IntProducer(0, 40, 0.1)
first = IdentityProcessor()(numbers)
second = IdentityProcessor()(first)
pairs = JoinerProcessor()(first, second)
out = CommandlineConsumer()(pairs)
flow = Flow([numbers], [out])
flow.run()
flow.join()
