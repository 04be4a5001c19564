"""The ratings database of a study (stdlib sqlite3, WAL journal, synchronous=FULL).

Every rating is written in its own transaction that is committed before the server answers, so a rating the
page showed as saved survives a killed server (SIGKILL) and, with synchronous=FULL, a power cut. One
connection per call: the web server's threads never share one.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS raters (
    id INTEGER PRIMARY KEY,
    slot INTEGER NOT NULL UNIQUE,         -- index into study.json's orders
    name TEXT UNIQUE,                     -- joined by name (loopback servers only)
    code TEXT UNIQUE,                     -- or by invitation code
    token_sha256 TEXT NOT NULL UNIQUE,    -- the session cookie, hashed
    joined TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ratings (
    rater INTEGER NOT NULL REFERENCES raters(id),
    position INTEGER NOT NULL,            -- index into the rater's order
    trial TEXT NOT NULL,
    score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 4),
    ms INTEGER,                           -- time from showing the trial to the rating (client clock)
    created TEXT NOT NULL,
    PRIMARY KEY (rater, position)
);
"""


@dataclass(frozen=True)
class Rater:
    id: int
    slot: int
    label: str


@dataclass(frozen=True)
class Rating:
    rater: int
    slot: int
    label: str
    position: int
    trial: str
    score: int
    ms: int | None


class Full(Exception):
    """Every rater slot of the study is taken."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class RatingStore:
    """The ratings of one study; `study_id` ties the database file to its study.json."""

    def __init__(self, path: Path, study_id: str, n_slots: int) -> None:
        self.path = Path(path)
        self.n_slots = n_slots
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)
            with self._transaction(con):
                con.execute("INSERT OR IGNORE INTO meta VALUES ('study_id', ?)", (study_id,))
            (stored,) = con.execute("SELECT value FROM meta WHERE key = 'study_id'").fetchone()
        if stored != study_id:
            raise ValueError(f"{self.path}: holds the ratings of study {stored}, not of this study.json ({study_id})")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)  # explicit BEGIN / COMMIT
        try:
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA foreign_keys=ON")
            con.execute("PRAGMA busy_timeout=30000")
            yield con
        finally:
            con.close()

    @staticmethod
    @contextmanager
    def _transaction(con: sqlite3.Connection) -> Iterator[None]:
        con.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock between threads
        try:
            yield
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    # raters -------------------------------------------------------------------------------------------------

    def join(self, token: str, *, name: str | None = None, code: str | None = None) -> tuple[Rater, bool]:
        """Find the rater of `name` / `code` or add one in the next free slot; (rater, is_new).

        A returning rater gets the new session `token` (the old cookie stops working). Raises Full when every
        slot is taken.
        """
        if (name is None) == (code is None):
            raise ValueError("join with exactly one of name or code")
        column, value = ("name", name) if name is not None else ("code", code)
        with self._connect() as con, self._transaction(con):
            row = con.execute(f"SELECT id, slot FROM raters WHERE {column} = ?", (value,)).fetchone()
            if row is not None:
                con.execute("UPDATE raters SET token_sha256 = ? WHERE id = ?", (token_hash(token), row[0]))
                return Rater(row[0], row[1], self._label(name, row[1])), False
            (slot,) = con.execute("SELECT COUNT(*) FROM raters").fetchone()
            if slot >= self.n_slots:
                raise Full
            cur = con.execute(
                "INSERT INTO raters (slot, name, code, token_sha256, joined) VALUES (?, ?, ?, ?, ?)",
                (slot, name, code, token_hash(token), _now()),
            )
            assert cur.lastrowid is not None
            return Rater(cur.lastrowid, slot, self._label(name, slot)), True

    @staticmethod
    def _label(name: str | None, slot: int) -> str:
        return name if name is not None else f"rater {slot + 1}"

    def rater_for(self, token: str) -> Rater | None:
        with self._connect() as con:
            row = con.execute("SELECT id, slot, name FROM raters WHERE token_sha256 = ?", (token_hash(token),))
            found = row.fetchone()
        return None if found is None else Rater(found[0], found[1], self._label(found[2], found[1]))

    # ratings ------------------------------------------------------------------------------------------------

    def done(self, rater: int) -> int:
        """How many positions of the rater's order are rated (they are rated in order: the next position)."""
        with self._connect() as con:
            (n,) = con.execute("SELECT COUNT(*) FROM ratings WHERE rater = ?", (rater,)).fetchone()
        return int(n)

    def rate(self, rater: int, position: int, trial: str, score: int, ms: int | None) -> str:
        """Store one rating in its own committed transaction.

        Returns "saved", "duplicate" (the same rating again, e.g. a retried request: nothing changes), or
        "conflict: <reason>" (nothing changes).
        """
        with self._connect() as con, self._transaction(con):
            (n,) = con.execute("SELECT COUNT(*) FROM ratings WHERE rater = ?", (rater,)).fetchone()
            if position < n:
                old = con.execute("SELECT trial, score FROM ratings WHERE rater = ? AND position = ?",
                                  (rater, position)).fetchone()  # fmt: skip
                if old is not None and old[0] == trial and old[1] == score:
                    return "duplicate"
                return f"conflict: position {position} is already rated"
            if position > n:
                return f"conflict: position {position} comes after the next unrated position {n}"
            con.execute("INSERT INTO ratings VALUES (?, ?, ?, ?, ?, ?)", (rater, position, trial, score, ms, _now()))
        return "saved"

    def ratings(self) -> list[Rating]:
        with self._connect() as con:
            rows = con.execute(
                "SELECT r.rater, a.slot, a.name, r.position, r.trial, r.score, r.ms "
                "FROM ratings r JOIN raters a ON a.id = r.rater ORDER BY a.slot, r.position"
            ).fetchall()
        return [Rating(r[0], r[1], self._label(r[2], r[1]), r[3], r[4], r[5], r[6]) for r in rows]


def read_ratings(path: Path, study_id: str | None = None) -> list[Rating]:
    """The ratings of a database file, read-only (for `ldsr study results`); checks its study id when given."""
    if not Path(path).is_file():
        return []
    con = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, timeout=30.0)
    try:
        (stored,) = con.execute("SELECT value FROM meta WHERE key = 'study_id'").fetchone()
        if study_id is not None and stored != study_id:
            raise ValueError(f"{path}: holds the ratings of study {stored}, not of this study.json ({study_id})")
        rows = con.execute(
            "SELECT r.rater, a.slot, a.name, r.position, r.trial, r.score, r.ms "
            "FROM ratings r JOIN raters a ON a.id = r.rater ORDER BY a.slot, r.position"
        ).fetchall()
    except (sqlite3.DatabaseError, TypeError) as e:
        raise ValueError(f"{path}: not a study ratings database ({e})") from e
    finally:
        con.close()
    return [Rating(r[0], r[1], RatingStore._label(r[2], r[1]), r[3], r[4], r[5], r[6]) for r in rows]
