"""User profiles from behaviour events: the nightly job's users table.

``aggregate``: one user's events -> one profile (pure; the allow-list).
``events``: the events contract, reader and per-event checks.
``build``: the Ray Data job (hash-partitioned by user) and its output.
"""
