"""The embedding stage of a scan: embed each batch as it is written, then build the kNN graph.

Scan workers already decoded every image once and return its pixels at the embedder's
input size (``dataaudit.embed.spec.prepare_pixels``); this stage, in the main process,
turns them into vectors inside the same transaction as the image rows (so an interrupted
scan resumes with rows and vectors in step), and at the end of the scan computes the
k-nearest-neighbour graph (globally and within each label) and a 2-D map. Detectors then
read only the ``knn`` table.

Only this module (with the rest of ``dataaudit.embed``) imports torch, and only when a
scan with embeddings actually starts.
"""

from __future__ import annotations

import json
import os
from typing import Any

import duckdb
import numpy as np
import polars as pl

from dataaudit.embed.spec import EmbedSpec
from dataaudit.store import db

DEFAULT_K = 10


class EmbedStage:
    """The scan's embedding hook (:class:`dataaudit.scan.hooks.EmbedHook`): ``embed`` per
    batch (the scan's writer stores the vectors with their rows), ``finish`` once."""

    def __init__(
        self,
        spec: EmbedSpec | None = None,
        device: str | None = None,
        batch_size: int | None = None,
        k: int = DEFAULT_K,
    ) -> None:
        self.spec = spec or EmbedSpec()
        self.device = device
        self.batch_size = batch_size
        self.k = k
        self._embedder = None

    def load(self) -> None:
        """Load the model now, so a missing weights file fails before any work is done."""
        if self._embedder is None:
            from dataaudit.embed.model import Embedder

            self._embedder = Embedder(self.spec, self.device, batch_size=self.batch_size)

    def on_cpu(self) -> bool:
        self.load()
        return self._embedder.device == "cpu"

    def share_cpu_with(self, workers: int) -> None:
        """On CPU, leave the cores to the decode workers but one: measured on 2 cores, two
        torch threads next to two decoding processes ran 20x slower than one thread."""
        self.load()
        if workers > 0 and self._embedder.device == "cpu":
            import torch

            torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))

    def describe(self) -> dict[str, Any]:
        from dataaudit.embed.knn import graph_params

        self.load()
        return {**self._embedder.describe(), "k": self.k, "knn": graph_params()}

    def model_key(self) -> str:
        """What must match for stored vectors to be reused: backbone, weights, preprocessing."""
        d = self.describe()
        return json.dumps({key: d[key] for key in ("backbone", "weights", "input_size",
                                                     "resize", "mean", "std")}, sort_keys=True)  # fmt: skip

    def prepare(self, con: duckdb.DuckDBPyConnection) -> None:
        """Before planning: drop vectors made by a different model."""
        key = self.model_key()
        if db.get_meta(con, "embedding_model_key") != key:
            for table in ("embeddings", "knn", "embedding_map"):
                con.execute(f"DELETE FROM {table}")
            db.set_meta(con, "embedding_model_key", key)
            db.set_meta(con, "embedding_model", json.dumps(self.describe()))
            db.mark_graph_stale(con)

    def embed(self, items: list[tuple[int, np.ndarray]]) -> pl.DataFrame | None:
        """Vectors for one batch of (file_id, pixels)."""
        if not items:
            return None
        self.load()
        vectors = self._embedder.embed(np.stack([px for _, px in items]))
        return pl.DataFrame(
            {"file_id": [fid for fid, _ in items], "vector": vectors},
            schema={"file_id": pl.Int64, "vector": pl.List(pl.Float32)},
        )

    def finish(self, con: duckdb.DuckDBPyConnection) -> None:
        """Rebuild the kNN graph and the 2-D map if any vector changed since the last build.

        The stale mark is persisted (set with every vector change, cleared in the same
        transaction as the new graph), so a rebuild interrupted here is redone next time.
        """
        have_graph = con.execute("SELECT count(*) FROM knn").fetchall()[0][0] > 0
        have_vectors = con.execute("SELECT count(*) FROM embeddings").fetchall()[0][0] > 1
        if not db.graph_is_stale(con) and (have_graph or not have_vectors):
            return
        data = con.sql(
            "SELECT e.file_id, i.label FROM embeddings e JOIN images i USING (file_id) "
            "ORDER BY e.file_id"
        ).pl()
        # DuckDB's buffer pool would otherwise keep every vector block it served (80 % of
        # RAM by default); the graph step reads each vector a few times and needs little.
        con.execute("SET memory_limit = '512MB'")
        con.execute("BEGIN")
        try:
            con.execute("DELETE FROM knn")
            con.execute("DELETE FROM embedding_map")
            if data.height >= 2:
                self._write_graph(con, data)
            db.clear_graph_stale(con)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.execute("RESET memory_limit")

    def _write_graph(self, con: duckdb.DuckDBPyConnection, data: pl.DataFrame) -> None:
        from dataaudit.embed.analysis import project_2d
        from dataaudit.embed.knn import EXACT_MAX, build_graph, duckdb_blocks, graph_params

        ids = data["file_id"].to_numpy()
        # Vectors are read block by block as float32 arrays (never Python lists); above
        # knn.EXACT_MAX they are streamed, projected and re-ranked in bounded memory.
        read = duckdb_blocks(con, "SELECT e.vector FROM embeddings e JOIN images i USING "
                             "(file_id) WHERE e.file_id BETWEEN ? AND ? ORDER BY e.file_id", ids)  # fmt: skip
        labelled = np.flatnonzero(data["label"].is_not_null().to_numpy())
        groups = np.full(len(ids), -1, dtype=np.int64)
        labels = data["label"].to_numpy()[labelled].astype(str)
        groups[labelled] = np.unique(labels, return_inverse=True)[1]
        device = self._embedder.device if self._embedder else "cpu"
        graph = build_graph(read, len(ids), self.k, groups=groups, device=device)
        # which path built this graph, with its parameters (the runs table has them too)
        method = "exact" if len(ids) <= EXACT_MAX else "approximate"
        db.set_meta(con, "knn_graph", json.dumps({"n": len(ids), "k": self.k, "method": method,
                                                  **graph_params()}))  # fmt: skip
        frames = [_knn_frame(ids, graph["idx"], graph["sim"], "all")]
        if len(labelled) >= 2:
            lidx, lsim = graph["group_idx"][labelled], graph["group_sim"][labelled]
            frames.append(_knn_frame(ids[labelled], lidx, lsim, "label", all_ids=ids))
        db.write_frame(con, "knn", pl.concat(frames))
        xy = project_2d(graph["map_vectors"])
        db.write_frame(
            con, "embedding_map", pl.DataFrame({"file_id": ids, "x": xy[:, 0], "y": xy[:, 1]})
        )


def _knn_frame(
    ids: np.ndarray,
    idx: np.ndarray,
    sim: np.ndarray,
    scope: str,
    all_ids: np.ndarray | None = None,
) -> pl.DataFrame:
    """Long-form kNN rows, skipping empty slots (index -1 / NaN similarity)."""
    lookup = ids if all_ids is None else all_ids
    n, k = idx.shape
    rows = np.repeat(np.arange(n), k)
    flat_idx, flat_sim = idx.ravel(), sim.ravel()
    keep = (flat_idx >= 0) & ~np.isnan(flat_sim)
    return pl.DataFrame(
        {
            "file_id": ids[rows[keep]],
            "neighbor_id": lookup[flat_idx[keep]],
            "rank": (np.tile(np.arange(1, k + 1), n)[keep]).astype(np.int16),
            "similarity": flat_sim[keep].astype(np.float32),
            "scope": scope,
        }
    )
