"""Ingestion: the API writes customers and their history to the database of record.

`rows` holds the request bodies and the keys that make a retried request
harmless, `validate` the data contract applied to a request's rows, and `store`
the one transaction that writes them and marks the customers whose history
changed (what fresh scoring by id and background outreach read).
"""
