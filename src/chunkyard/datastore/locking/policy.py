"""Wait policy constants (rule 5 of the locking design).

Every acquisition has a deadline; waiting polls a non-blocking `flock` so that the deadline is
exact and no signal juggling is needed (spec §7.2 suggests this for Python).

- `DEFAULT_WAIT` (0 s): sessions do not wait unless the operation says so. Background jobs
  (verify, prune, GC marking) keep 0 and skip busy items; structural and interactive operations
  pass the user's `--wait SECONDS`.
- `MANIFEST_WAIT` (5 s): MF is held only for a manifest rewrite, so a short wait always pays
  off (PBS uses the same 5 s).
- `JOURNAL_WAIT` (10 s): JR is held while a mover appends or GC drains (PBS: 10 s).
- The chunk store lock (CS) never waits: it is a `F_SETLK` record lock as in PBS, and because
  nobody ever waits for it, it can never close a wait cycle.
- Polling starts at `POLL_MIN` and doubles up to `POLL_MAX`, so a short contention costs a few
  milliseconds and a long one costs at most 20 wake-ups per second.
"""

DEFAULT_WAIT = 0.0
MANIFEST_WAIT = 5.0
JOURNAL_WAIT = 10.0
POLL_MIN = 0.005
POLL_MAX = 0.05
# A lock file that keeps being replaced between open and flock is retried this often.
MAX_REPLACED_RETRIES = 1000
