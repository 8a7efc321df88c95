"""What the tests share: one way to start a server, make sessions, wait, and skip.

- `server`: `start_server` / `serving` (the in-process server, with a channel and an API key of
  its own) and `Running`; the one place in tests/ that builds the server.
- `sessions`: `Client` (a stub and an API key) and the SessionService calls tests make over and
  over (create, get, list messages, terminate, wait for a state).
- `interact`: the Interact test client (`Peer`, `join`, `is_event`, `has`).
- `waiting`: `wait_until`, the one bounded poll.
- `require`: `require(reason)`, a skip that is a failure when CI is set.
- `tools`: external commands (`tool`, `node_command`, `grpcurl_command`).
- `process`: a real `parleyd serve` subprocess (`start_parleyd`, `ParleydProcess`).
- `postgres`: the PostgreSQL server the tests create their databases on.
- `sqlite`: holding SQLite's write lock from outside, and watching the writer thread.
- `store`: the repository tests' fixed clock, ids and directly made sessions.

bench/webrtc.py uses `interact` too (its gRPC baseline speaks Interact like the tests do).
"""
