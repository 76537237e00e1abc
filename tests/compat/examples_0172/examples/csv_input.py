from aiowax.connectors.files import CSVInput
from aiowax.connectors.stdio import StdOutput
from aiowax.dataflow import Dataflow

flow = Dataflow()
flow.input("inp", CSVInput("examples/sample_data/ec2_metrics.csv", delimiter=","))
flow.output("out", StdOutput())
