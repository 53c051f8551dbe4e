"""`ilnp-faults`: what a kill -9 of each actor costs the traffic (docs/RELIABILITY.md)."""
