"""The stream relay: TCP connections carried reliably over the overlay, as QUIC over STP
(PROTOCOL.md "[ext] Stream relay").

quic.py is the only module that knows the QUIC library (qh3); core.py is the relay's
pure core (forwards, connections per peer and STP port, streams per TCP connection,
back-pressure); main.py the shell (TCP sockets, the ilnp-connect socket, the bus).
"""
