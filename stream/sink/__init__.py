"""`sentistream sink`: the scored topic into hourly Parquet files, exactly once.

One long-running process per sink replica; loads aiokafka and pyarrow, never Faust or torch.
"""
