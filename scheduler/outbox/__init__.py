"""The outbox: every message is a row in `deliveries` before anything is sent.

The planner puts the rules' messages into it, the dispatcher claims what is due and
hands it to the channels, and every change of a delivery's state goes through the
outbox's named transitions.
"""
