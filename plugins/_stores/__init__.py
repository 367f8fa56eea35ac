"""What the built-in SQL stores share (the SQLite store and the contrib PostgreSQL store):
credentials sealed at rest (:mod:`.secrets`) and the releases of claims that could not be
written (:mod:`.claims`). Not a plugin, and not public API."""
