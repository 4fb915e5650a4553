"""The regular expressions PBS validates names with (spec section 2)."""

import re

SAFE_ID = r"(?:[A-Za-z0-9_][A-Za-z0-9._\-]*)"
SAFE_ID_RE = re.compile(rf"^{SAFE_ID}\Z")
BACKUP_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._\-]*\Z")
BACKUP_TIME_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\Z")
BACKUP_FILE_RE = re.compile(r"^(.*\.([fd]idx|blob)|\.protected)\Z")
