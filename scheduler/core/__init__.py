"""The rules, pure: what is due, when, by which channel, and what a failure means.

Nothing in this package imports the database, the network or the real clock: every
function takes the facts and `now` it needs, so the rules are tested without either.
"""
