"""Counting what a code path costs the database: SQL statements and durable commits.

Statements: every statement the connection executes (`connection.execute_wrapper`), savepoint
statements included, so a path cannot hide work in savepoints; SQLite's explicit BEGIN is left
out (PostgreSQL's driver sends its BEGIN implicitly, unseen), so both databases count alike.

Commits: a transaction becomes durable in one of two ways, and both are counted.
- `connection.commit()`: what the outermost `transaction.atomic` calls on a successful exit
  (Django's own path to COMMIT; savepoint releases do not go through it);
- a statement executed in autocommit (outside any atomic block): the database commits it
  on its own. Reads are counted as well: each is a transaction of its own, and on PostgreSQL a
  round trip either way; counting them keeps the figure an upper bound.
The test must use a real transaction (`transactional_db`): inside the test-case transaction
that the `db` fixture wraps, every atomic block is a savepoint and nothing would commit.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import connection


@dataclass
class Counted:
    statements: list[str] = field(default_factory=list)
    commits: int = 0
    # The statements run while the tenant's audit-chain head was locked (from the locking
    # statement, included, to the commit that ends its transaction), one list per lock taken.
    under_chain_lock: list[list[str]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{len(self.statements)} statements, {self.commits} commits"


HEAD_TABLE = "tenants_auditchainhead"


def _locks_head(sql: str) -> bool:
    """The statement that takes the chain-head lock: the first one in a transaction to touch the
    head row (SELECT … FOR UPDATE or UPDATE on PostgreSQL; on SQLite the write lock of the whole
    database is taken at BEGIN IMMEDIATE, so this measures where the head is touched)."""
    return HEAD_TABLE in sql


@contextmanager
def counting() -> Iterator[Counted]:
    """Count statements and commits on the default connection while the block runs."""
    counted = Counted()
    holding: list[str] | None = None

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal holding
        if sql.startswith("BEGIN"):  # SQLite's explicit BEGIN (psycopg's is implicit): not work
            return execute(sql, params, many, context)
        counted.statements.append(sql)
        if holding is not None:
            holding.append(sql)
        elif _locks_head(sql) and connection.in_atomic_block:
            holding = [sql]
            counted.under_chain_lock.append(holding)
        if not connection.in_atomic_block:
            counted.commits += 1
        return execute(sql, params, many, context)

    real_commit = connection.commit

    def commit() -> None:
        nonlocal holding
        counted.commits += 1
        if holding is not None:
            holding = None
        real_commit()

    real_rollback = connection.rollback

    def rollback() -> None:
        nonlocal holding
        holding = None
        real_rollback()

    connection.commit = commit  # type: ignore[method-assign]
    connection.rollback = rollback  # type: ignore[method-assign]
    try:
        with connection.execute_wrapper(wrapper):
            yield counted
    finally:
        del connection.commit  # the instance attributes; the class's methods again
        del connection.rollback
