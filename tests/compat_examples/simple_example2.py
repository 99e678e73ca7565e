# The original's second example, no __main__ guard: a running sum of 0..40 in a realtime flow.
from videoflow.consumers import CommandlineConsumer
from videoflow.core import Flow
from videoflow.processors.aggregators import SumAggregator
from videoflow.producers import IntProducer

numbers = IntProducer(0, 40, 0.01)
total = SumAggregator()(numbers)
out = CommandlineConsumer()(total)
flow = Flow([numbers], [out])
flow.run()
flow.join()
