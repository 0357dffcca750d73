"""`tierproxy dbproxy`: the PostgreSQL read/write-splitting proxy."""
