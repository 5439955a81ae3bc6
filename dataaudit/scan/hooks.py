"""The embedding hook a scan calls, as a Protocol: the scan layer never imports torch.

``dataaudit.embed.stage.EmbedStage`` implements it; a scan without embeddings passes None.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import duckdb
    import numpy as np
    import polars as pl

    from dataaudit.embed.spec import EmbedSpec


class EmbedHook(Protocol):
    """What the scan needs from an embedder: its input spec, batches, and a final step."""

    spec: EmbedSpec

    def on_cpu(self) -> bool:
        """Whether inference runs on the CPU (the scan then leaves it cores)."""
        ...

    def share_cpu_with(self, workers: int) -> None:
        """Size inference threads to the cores ``workers`` decode processes leave free."""
        ...

    def describe(self) -> dict[str, Any]:
        """What to record in the run's parameters."""
        ...

    def prepare(self, con: duckdb.DuckDBPyConnection) -> None:
        """Before planning: drop vectors a different model made."""
        ...

    def embed(self, items: list[tuple[int, np.ndarray]]) -> pl.DataFrame | None:
        """Vectors (``file_id``, ``vector``) for a batch of (file_id, uint8 pixels)."""
        ...

    def finish(self, con: duckdb.DuckDBPyConnection) -> None:
        """After the last batch: rebuild what depends on all vectors (the kNN graph)."""
        ...
