"""A pass-through service on the shared runtime: validates events and forwards them.

It proves the runtime end to end (and serves as a schema gate in front of a topic): valid events
go to the output topic with their key, invalid ones to the dead-letter topic with the reason.
"""
