# The original's TaskModuleNode example, no __main__ guard: two identities and a joiner
# wrapped into one task, between the producer and the printer.
from videoflow.consumers import CommandlineConsumer
from videoflow.core import Flow
from videoflow.core.node import TaskModuleNode
from videoflow.processors import IdentityProcessor, JoinerProcessor
from videoflow.producers import IntProducer

numbers = IntProducer(0, 40, 0.05)
first = IdentityProcessor(nb_tasks=1)(numbers)
second = IdentityProcessor(nb_tasks=1)(first)
pairs = JoinerProcessor(nb_tasks=1)(first, second)
module = TaskModuleNode(first, pairs)
out = CommandlineConsumer()(module)
flow = Flow([numbers], [out])
flow.run()
flow.join()
