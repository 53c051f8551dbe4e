"""The UDP proxy relay: unmodified UDP applications on the overlay (PROTOCOL.md "UDP proxy").

core.py holds the mapping table and the per-datagram rules (pure); main.py is the shell
(the proxy's UDP socket, the bus, the router bindings, the mappings file).
"""
