"""The node's bus broker as a program (bus/broker.py does the work)."""
