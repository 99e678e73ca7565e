# The original's multiprocessing example, no __main__ guard: paced identities with 5 and 10
# tasks and a joiner with 5, in a batch flow; the pairs come out in order.
from videoflow.consumers import CommandlineConsumer
from videoflow.core import Flow
from videoflow.core.constants import BATCH
from videoflow.processors import IdentityProcessor, JoinerProcessor
from videoflow.producers import IntProducer

numbers = IntProducer(0, 40, 0.1)
slow = IdentityProcessor(fps=4, nb_tasks=5, name="i1")(numbers)
slower = IdentityProcessor(fps=2, nb_tasks=10, name="i2")(slow)
pairs = JoinerProcessor(nb_tasks=5)(slow, slower)
out = CommandlineConsumer()(pairs)
flow = Flow([numbers], [out], flow_type=BATCH)
flow.run()
flow.join()
