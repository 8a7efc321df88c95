"""Pure domain model of parleyd: sessions, their lifecycle, ids, limits and errors. No I/O here."""
