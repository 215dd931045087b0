"""`sentistream monitor`: merges every worker's windows from `sentiment-stats` and raises shift alerts.

One replica; a Faust app (its table survives restarts) around a pure detector (`detector`). Loads
Faust and aiokafka, never torch.
"""
