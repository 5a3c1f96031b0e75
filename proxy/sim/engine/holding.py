"""The engine model with KV blocks held outside any request: the held contexts of program-aware
KV retention (``proxy.core.retention``). A held context's blocks are in use for the engine (no
request may take them, ``kv_usage`` counts them) until the holder hands them back."""

from __future__ import annotations

from proxy.sim.engine.engine import EngineModel


class HoldingEngine(EngineModel):
    """``EngineModel`` plus ``hold``/``unhold`` of free blocks (nothing else differs)."""

    held_blocks: int = 0

    @property
    def free_blocks(self) -> int:
        """Blocks neither a request nor a hold uses."""
        return self._free_blocks

    def hold(self, blocks: int) -> bool:
        """Take ``blocks`` free blocks for a held context; False (nothing taken) if fewer are
        free."""
        if blocks < 0 or blocks > self._free_blocks:
            return False
        self._free_blocks -= blocks
        self.held_blocks += blocks
        return True

    def unhold(self, blocks: int) -> None:
        """Give back blocks taken by ``hold``."""
        if blocks < 0 or blocks > self.held_blocks:
            raise ValueError("unhold of more blocks than are held")
        self.held_blocks -= blocks
        self._free_blocks += blocks
