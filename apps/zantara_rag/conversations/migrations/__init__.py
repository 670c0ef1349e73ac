"""Alembic migrations of the conversation database, run by `conversations.database.migrate` at start-up."""
