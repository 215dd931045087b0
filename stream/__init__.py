"""The stream's wire contract, shared by every process that reads or writes a topic.

Topic names and Kafka connection settings (`settings`), the shape of every message on every topic
(`events`), raw bytes to a tweet or a dead letter (`decode`), the control topic that says which
bundle is served (`control`), the private Faust/aiokafka names in one adapter (`kafka_internals`),
structured logs (`logs`), the one retry policy (`retry`) and starting and stopping child processes
(`supervisor`, for `worker --processes` and `demo`). Loads pydantic and aiokafka only; Faust and
torch are never imported here at module level.

One subpackage per deployable, each importing this contract and `model/`, never each other:
`worker` (`sentistream worker`, Faust), `feeders` (`produce`, `replay`, `dlq replay`, `tail`:
aiokafka), `sink` (`sentistream sink`: aiokafka and pyarrow), `monitor` (`sentistream monitor`:
Faust) and `deployment` (`sentistream deploy`: aiokafka and fsspec). See docs/ARCHITECTURE.md.
"""
