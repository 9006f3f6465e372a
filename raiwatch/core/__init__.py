"""The core vocabulary every layer speaks: records, codec, config, errors, metrics, the batch contract,
and the JSON schemas of the contracts (``contracts/``). It imports nothing else of raiwatch."""
