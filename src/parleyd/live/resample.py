"""PCM16 mono resampling between participants that joined with different sample rates.

One `Resampler` per (sender, receiver) pair keeps the filter state across chunks, so chunk
boundaries do not click. Same-rate audio never reaches here.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # audioop is deprecated for 3.13; parleyd pins Python 3.11, where it is part of the stdlib.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


class Resampler:
    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._state: tuple[int, tuple[tuple[int, int], ...]] | None = None

    def convert(self, pcm: bytes) -> bytes:
        out, self._state = audioop.ratecv(pcm, 2, 1, self.from_rate, self.to_rate, self._state)
        return out
