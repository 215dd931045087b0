"""The shell's own Kafka clients: `sentistream produce` and `replay` put tweets on the input topic,
`sentistream dlq replay` puts chosen dead letters' originals back on it, `sentistream tail` prints
any topic.

Short-lived processes; they load aiokafka and pydantic (replay also the training loaders' pandas),
never Faust or torch.
"""
