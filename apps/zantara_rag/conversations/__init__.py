"""Conversations: the database that keeps each finished turn, feedback on it, and what it tells the operator.

`tables` (the schema) and `migrations` (Alembic, run at start) define it; `database` opens it; `storage`
reads and writes it; `recorder` writes each turn after its stream has ended, off the answer's path; `keeper`
is what the service holds (ids, history, ownership, retention); `gaps` is the knowledge-gaps report.
"""
