"""The protocol package: what every layer may import, and what imports no actor.

addr            locators, NIDs, I-LVs (ints inside, strings at the edges)
numbers         next-header numbers and well-known STP ports, defined once
ilnp            the 40-byte ILNPv6 header and the [ext] destination options header
stp             STP segments (next header 42)
discovery       discovery bodies (next header 43)
locator_update  locator updates and acks (next header 44)
topics          bus topic names of the node
frames          bus body layouts of the data topics (named fields, sent as lists)
"""
