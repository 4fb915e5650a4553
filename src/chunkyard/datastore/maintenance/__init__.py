"""Datastore maintenance (spec §8-§10): each operation in its own module, under the locks of
the locking design's "Who takes what" table; busy items are skipped and reported, never
waited for (rule 5)."""
