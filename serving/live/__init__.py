"""Live scoring on the database of record: fresh scores by id and outreach as behaviour happens.

`history` reads some customers' history from the database, `fresh` answers
scores by id from the day's prepared matrix and refreshes only the customers
whose history changed, and `rescore` rescores changed customers in the
background and writes the actions that now match to the outbox.
"""
