"""Fault tests: real processes killed or cut off, and what must still hold afterwards."""
