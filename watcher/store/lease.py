"""The leader lease of a shared (PostgreSQL) state: taking it, keeping it, giving it up, and the
fence every write of a leader passes.

One row per namespace holds the holder, its epoch and when the lease expires, on the
database's clock (``clock_timestamp()``), so no replica's clock decides who leads. The epoch
only grows: it is a column of that row, so it survives a PostgreSQL restart, and every
acquisition adds one, so no two holders ever share an epoch (``leader_history`` keeps one row
per epoch, under a primary key).

Twenty replicas that try to take an expired lease at once run the same ``UPDATE ... WHERE
expires_at <= clock_timestamp()``; PostgreSQL lets the first through and re-checks the
condition for the others against the row it wrote, so exactly one wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from watcher.store.database import Database, Token


@dataclass(frozen=True)
class LeaseInfo:
    """The lease row as status shows it."""

    holder: str | None
    epoch: int
    acquired_at: datetime | None
    expires_at: datetime | None
    valid: bool
    """Whether the lease had not expired at the database's clock when read."""


class LeaseQueries(Database):
    """Leader election on the shared state. A SQLite state has no lease: one process holds
    its file lock and is the only writer."""

    def acquire(self, holder: str, lease: float) -> Token | None:
        """Take the lease if it has expired (or was released); the new, higher epoch, or None
        when another replica holds it."""
        with self._transaction() as tx:
            row = tx.execute(
                "UPDATE leader SET holder = ?, epoch = epoch + 1,"
                " acquired_at = clock_timestamp(), renewed_at = clock_timestamp(),"
                " expires_at = clock_timestamp() + make_interval(secs => ?)"
                " WHERE expires_at <= clock_timestamp() RETURNING epoch",
                (holder, lease),
            ).fetchall()
            if not row:
                return None
            epoch = int(row[0][0])
            tx.execute(
                "UPDATE leader_history SET ended_at = clock_timestamp(), ended_how = 'expired'"
                " WHERE ended_at IS NULL AND epoch < ?",
                (epoch,),
            )
            tx.execute(
                "INSERT INTO leader_history (epoch, holder, acquired_at)"
                " VALUES (?, ?, clock_timestamp())",
                (epoch, holder),
            )
        return Token(holder, epoch)

    def renew(self, token: Token, lease: float) -> bool:
        """Extend the lease from now, only while it is still ours and unexpired."""
        with self._transaction() as tx:
            cursor = tx.execute(
                "UPDATE leader SET renewed_at = clock_timestamp(),"
                " expires_at = clock_timestamp() + make_interval(secs => ?)"
                " WHERE holder = ? AND epoch = ? AND expires_at > clock_timestamp()",
                (lease, token.holder, token.epoch),
            )
            return cursor.rowcount == 1

    def release(self, token: Token) -> bool:
        """Give the lease up at once (a clean stop), so a standby takes over without waiting
        for it to expire."""
        with self._transaction() as tx:
            cursor = tx.execute(
                "UPDATE leader SET expires_at = '-infinity'"
                " WHERE holder = ? AND epoch = ? AND expires_at > clock_timestamp()",
                (token.holder, token.epoch),
            )
            tx.execute(
                "UPDATE leader_history SET ended_at = clock_timestamp(), ended_how = 'released'"
                " WHERE epoch = ? AND ended_at IS NULL",
                (token.epoch,),
            )
            return cursor.rowcount == 1

    def lease_info(self) -> LeaseInfo:
        # A fresh or released lease expires at '-infinity', which no Python datetime holds:
        # the database hands back NULL for it instead.
        rows = self._query(
            "SELECT holder, epoch, acquired_at, expires_at > clock_timestamp() AS valid,"
            " CASE WHEN expires_at > clock_timestamp() THEN expires_at END AS expires_at"
            " FROM leader"
        )
        r = rows[0]
        return LeaseInfo(
            holder=r["holder"],
            epoch=int(r["epoch"]),
            acquired_at=r["acquired_at"],
            expires_at=r["expires_at"] if r["valid"] else None,
            valid=bool(r["valid"]),
        )

    def lease_takeovers(self) -> int:
        """How many times a replica took the lease of this namespace (``leader_history`` keeps
        one row per epoch), for status."""
        return int(self._query("SELECT count(*) AS n FROM leader_history")[0]["n"])

    def requeue_in_flight(self) -> int:
        """On taking over: what an older epoch claimed and never settled is offered again,
        under the same delivery ids (the only duplicates a receiver may see)."""
        token = self.fence_token
        if token is None:
            return 0
        with self._fenced() as tx:
            cursor = tx.execute(
                "UPDATE deliveries SET claimed_epoch = NULL"
                " WHERE status = 'pending' AND claimed_epoch < ?",
                (token.epoch,),
            )
            return int(cursor.rowcount)
