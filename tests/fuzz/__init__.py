"""Fuzzing, as part of the suite (issue 11).

- `strategies`: hypothesis strategies built from the protobuf descriptors (every field of every
  request type, odd values included) and corruptions of valid encodings.
- `harness`: a live in-process server on its own event loop, raw-bytes calls, and the checks
  every fuzzer ends each example with (no ERROR log record, the database consistent).
- `test_unary_fuzz`: every unary RPC of SessionService, found from the service descriptor.
- `test_interact_fuzz`: random Interact conversations, corrupted frames and disconnects.
- `test_regressions`: every crash a fuzzer found, as a plain test with its minimal input.
- `profiles`: the budgets (`short` in the suite, `long` under `make fuzz`).

The lifecycle state machine is tests/domain/test_lifecycle_machine.py (same profiles).
"""
