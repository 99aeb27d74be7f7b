"""drbfr benchmarks (`make bench` or `python -m bench`): results go to stdout as JSON + a table."""
