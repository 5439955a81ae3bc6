"""Exact cosine k-nearest neighbours over unit vectors, in bounded memory.

    idx, sim = knn(vectors, k=10)            # both (N, k); self excluded; best first

Queries are processed in row blocks (torch matmul + top-k), so memory stays around
`max_block_bytes` (256 MiB by default) whatever N is. Ties are broken by the lower index, so results
are the same on every run.

Speed on CPUs with native bf16 (AMX/AVX512-BF16): the similarity matrix is computed in bf16
(~6x faster than fp32 here), the best `k + margin` candidates are re-scored in fp32, and a
per-query certificate proves no other vector can beat the k-th: bf16 rounding moves a
similarity by at most |r_q| + |r_x| + |r_q||r_x| (Cauchy-Schwarz on the rounding residuals r).
Queries whose certificate fails are recomputed in fp32 over all vectors, so the result is
exact either way.

Above `EXACT_MAX` vectors the exact search is quadratic (100,000 vectors: about a minute on 2
cores; a million: hours), so `build_graph` (and `knn_graph` for in-memory arrays) switches to:

1. `reduce_stream`: project every vector on the top REDUCED_DIM directions of a sample
   (`fit_projection`), as float16, streaming the vectors block by block;
2. `approx_knn`: inner products in the projected space (exact for small sets and label
   groups; above FLAT_MAX, each faiss k-means cell against its nearest cells) give
   CANDIDATES_PER_K * k candidates per vector (and per label group);
3. `rerank` / `score_pairs`: the candidates are scored with the full vectors, one block
   of RERANK_BYTES at a time, so the similarities are true cosines (one side in fp16,
   error ~1e-3) and memory never holds the full matrix.

The projection keeps inner products (cosines) up to the dropped energy; it is enough to
find the candidates, not to order them (bench/bench_knn.py measures both).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from dataaudit.embed.device import resolve_precision

# Memory for one block of query rows (similarities, or gathered candidates). Bigger blocks
# run the matmul faster (bf16: ~600 GFLOP/s at 335 rows, ~1,000 at 1,000+ rows on 2 cores).
_MAX_BLOCK_BYTES = 256 * 1024 * 1024
# Column group size for the two-stage top-k (group maxima first, then within the best groups).
_GROUP = 64
# Slack for fp32 accumulation inside the bf16 matmul (D * 2**-24 for D up to ~1,600).
_ACCUM_SLACK = 1e-4


def _as_unit_tensor(vectors: np.ndarray, device: str) -> torch.Tensor:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {arr.shape}")
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
    return torch.nn.functional.normalize(t, dim=1)


def _topk_grouped(sims: torch.Tensor, take: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-`take` per row, sorted, via group maxima: a full top-k over 100k columns is slow
    on CPU, a max-reduction is not. Any top-`take` element sits in one of the `take` groups
    with the largest maxima, so the answer is the same as torch.topk's (up to tie order).
    `sims` columns must be a multiple of _GROUP (padding columns hold -inf)."""
    rows, cols = sims.shape
    groups = cols // _GROUP
    if groups <= take:
        return torch.topk(sims, take, dim=1, sorted=True)
    gmax = sims.view(rows, groups, _GROUP).amax(dim=2)
    best = torch.topk(gmax, take, dim=1, sorted=False).indices
    cand_cols = (best.unsqueeze(2) * _GROUP + torch.arange(_GROUP, device=sims.device)).view(
        rows, -1
    )
    vals, pos = torch.topk(sims.gather(1, cand_cols), take, dim=1, sorted=True)
    return vals, cand_cols.gather(1, pos)


def _exact_row(row: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of one fp32 similarity row, ordered by (-similarity, index)."""
    kth = np.partition(row, -k)[-k]
    cand = np.flatnonzero(row >= kth)
    order = np.lexsort((cand, -row[cand]))[:k]
    return cand[order], row[cand[order]]


def _sorted_rows(vals: torch.Tensor, idx: torch.Tensor, kk: int) -> tuple[np.ndarray, ...]:
    """First kk columns as numpy, each row ordered by (-similarity, index)."""
    v = vals[:, :kk].float().cpu().numpy()
    i = idx[:, :kk].cpu().numpy().astype(np.int64)
    order = np.lexsort((i, -v), axis=1)
    return np.take_along_axis(i, order, axis=1), np.take_along_axis(v, order, axis=1)


def _fp32_rows(
    exact: torch.Tensor, queries: torch.Tensor, kk: int, padded_t: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact fp32 top-kk for the given query indices against all vectors, self excluded.

    `padded_t` (exact.T with zero columns up to a multiple of _GROUP) enables the fast
    grouped top-k; without it plain torch.topk is used.
    """
    n = exact.shape[0]
    sims = exact[queries] @ (padded_t if padded_t is not None else exact.T)
    sims[:, n:] = -torch.inf
    sims[torch.arange(len(queries), device=sims.device), queries] = -torch.inf
    take = min(kk + 1, n - 1)
    if padded_t is not None:
        vals, idx = _topk_grouped(sims, take)
    else:
        vals, idx = torch.topk(sims, take, dim=1, sorted=True)
    out_idx, out_sim = _sorted_rows(vals, idx, kk)
    if take > kk:  # a tie at the k-th place needs the whole row to break it by index
        for row in torch.nonzero(vals[:, kk - 1] == vals[:, kk]).flatten().tolist():
            out_idx[row], out_sim[row] = _exact_row(sims[row].float().cpu().numpy(), kk)
    return out_idx, out_sim


def knn(
    vectors: np.ndarray,
    k: int,
    device: str = "cpu",
    chunk: int = 4096,
    precision: str = "auto",
    max_block_bytes: int = _MAX_BLOCK_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine kNN of every vector against all others, self excluded.

    Returns (indices int64 (N, k'), similarities float32 (N, k')) with k' = min(k, N - 1),
    rows sorted by similarity descending, ties by lower index. Vectors are re-normalised, so
    any non-zero vectors work; zero vectors get similarity 0 to everything. `precision`:
    "fp32", "bf16" (bf16 search, fp32 answer, see module doc) or "auto" (bf16 on CUDA and on
    CPUs with native bf16). `chunk` caps the query rows per block; `max_block_bytes` caps
    the block's memory.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    exact = _as_unit_tensor(vectors, device)
    n, dim = exact.shape
    kk = min(k, n - 1)
    if kk <= 0:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.float32)
    use_bf16 = resolve_precision(precision, device) == "bf16"  # the embedder's one policy
    take = min(kk + max(16, k) + 1, n - 1) if use_bf16 else kk + 1

    n_pad = -(-n // _GROUP) * _GROUP
    search = exact.to(torch.bfloat16) if use_bf16 else exact
    padded_t = torch.zeros((dim, n_pad), dtype=search.dtype, device=exact.device)
    padded_t[:, :n] = search.T
    rows = min(chunk, max_block_bytes // (n_pad * search.element_size()))
    if use_bf16:  # the fp32 re-scoring gathers (rows, take, dim) floats
        rows = min(rows, max_block_bytes // (take * dim * 4))
        resid = (search.float() - exact).norm(dim=1)  # per-vector bf16 rounding error
        max_resid = float(resid.max())
    rows = max(1, rows)
    out_idx = np.empty((n, kk), dtype=np.int64)
    out_sim = np.empty((n, kk), dtype=np.float32)

    with torch.inference_mode():
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            queries = torch.arange(start, stop, device=exact.device)
            if not use_bf16:
                out_idx[start:stop], out_sim[start:stop] = _fp32_rows(exact, queries, kk, padded_t)
                continue
            sims = search[start:stop] @ padded_t
            sims[:, n:] = -torch.inf
            sims[queries - start, queries] = -torch.inf
            vals, idx = _topk_grouped(sims, take)
            del sims
            # Re-score the candidates in fp32 (self cannot be among them: it is -inf).
            scores = torch.einsum("rd,rcd->rc", exact[start:stop], exact[idx])
            scores[idx == queries.unsqueeze(1)] = -torch.inf
            scores, order = torch.sort(scores, dim=1, descending=True, stable=True)
            idx = idx.gather(1, order)
            unsure = scores[:, kk - 1] == scores[:, kk] if take > kk else queries < 0
            if take < n - 1:
                # Outside the candidates the bf16 similarity is <= the last candidate's, so the
                # fp32 one is <= that + the rounding bound: it must stay below the k-th.
                q_resid = resid[start:stop]
                ceiling = vals[:, -1].float() + q_resid + max_resid * (1 + q_resid)
                unsure |= ~(ceiling + _ACCUM_SLACK < scores[:, kk - 1])
            out_idx[start:stop], out_sim[start:stop] = _sorted_rows(scores, idx, kk)
            redo = queries[unsure]
            step = max(1, max_block_bytes // (n * 4))
            for part in torch.split(redo, step):
                ridx, rsim = _fp32_rows(exact, part, kk)
                local = part.cpu().numpy()
                out_idx[local], out_sim[local] = ridx, rsim
    np.clip(out_sim, -1.0, 1.0, out=out_sim)
    return out_idx, out_sim


# --- large sets: reduced vectors, an approximate index, exact re-ranking ---------------

# Up to this many vectors the graph is exact; above it, approximate (see the module doc).
EXACT_MAX = 100_000
# Candidates come from 128-d projections: at 100k synthetic 1,280-d vectors the projection
# alone keeps recall@10 at 0.94 (256-d: 0.94, 512-d: 0.95); re-ranking 2k candidates with
# the full vectors brings it to 1.0 at 100k; at 1M the exact top 30 in the projection
# holds 0.99995 of the true top 10, the inverted-file search's top 20 0.997 and top 30
# 0.9999 (bench/knn_sweep.py, 2,000 rows). So a wider projection only costs time, and 20
# candidates are enough (the re-rank costs in proportion to them).
REDUCED_DIM = 128
CANDIDATES_PER_K = 2  # candidates searched per neighbour kept, re-ranked exactly
# Rows the projection is fitted on: the D x D second moment of 50,000 rows pins the top
# directions; more rows cost time and change nothing measurable.
PROJECTION_SAMPLE = 50_000
# Candidate search in the projected space: exact up to FLAT_MAX rows (label groups mostly),
# else an inverted file of IVF_LISTS_PER_SQRT_N * sqrt(n) k-means cells, each searched
# against its IVF_NPROBE nearest cells and the IVF_ROW_PROBES nearest cells of each of its
# rows (`approx_knn`). Share of the true top 10 among 30 candidates, 1,280-d synthetic
# vectors, 2,000 rows (bench/knn_sweep.py): faiss HNSW (M 32, efSearch 64 / 128) 0.986 /
# 0.993 at 200k and 0.944 at 1M (300 rows); faiss IndexIVFFlat nprobe 8 0.9993 at 200k and 0.9999 at
# 1M but ~600 CPU s of search per 1M rows; these cells 0.9994 at 200k, 0.9999 at 1M in
# 156 CPU s on one thread (at 200k, probes by centroid alone: 0.998).
FLAT_MAX = 50_000  # exact: ~10 CPU s at 50k; cells kept 0.981 at 30k, 0.9995 at 100k
IVF_LISTS_PER_SQRT_N = 4
IVF_NPROBE = 8  # cells searched per cell, by centroid distance
IVF_ROW_PROBES = 3  # ...and the nearest cells of each of its rows
IVF_TRAIN_PER_LIST = 32  # k-means sample: rows per cell
IVF_KMEANS_ITER = 10
# Memory for the block of full vectors held while re-ranking (fp16); more passes over the
# vectors when they do not fit.
RERANK_BYTES = 1024**3
_CHUNK_ROWS = 65_536  # rows per projection / search batch
_CELL_ROWS = 1024  # query rows per matrix product in the inverted-file search
_PAIR_CHUNK = 1024  # candidate pairs scored at once (5 MB per gather at 1,280-d: in cache)

# read(lo, hi) yields the float32 vectors of rows [lo, hi) in order, in blocks.
Blocks = Callable[[int, int], Iterator[np.ndarray]]


def array_blocks(vectors: np.ndarray, rows: int = _CHUNK_ROWS) -> Blocks:
    """A `Blocks` reader over an in-memory (N, D) array."""

    def read(lo: int, hi: int) -> Iterator[np.ndarray]:
        for start in range(lo, hi, rows):
            yield np.asarray(vectors[start : min(hi, start + rows)], dtype=np.float32)

    return read


def duckdb_blocks(con: Any, sql: str, ids: np.ndarray, rows: int = _CHUNK_ROWS) -> Blocks:
    """A `Blocks` reader over a query: `sql` selects one column of equal-length float lists
    for the rows with `file_id BETWEEN ? AND ?`, ordered by file_id; `ids` holds every
    row's file_id, ascending. One query per block keeps memory at one block."""

    def read(lo: int, hi: int) -> Iterator[np.ndarray]:
        for start in range(lo, hi, rows):
            stop = min(hi, start + rows)
            params = [int(ids[start]), int(ids[stop - 1])]
            block = vectors_from_arrow(con.sql(sql, params=params).to_arrow_table().column(0))
            if len(block) != stop - start:
                raise ValueError(f"rows {start}..{stop}: got {len(block)} vectors")
            yield block

    return read


def vectors_from_arrow(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """(N, D) float32 from an Arrow list column of equal-length vectors, without Python lists
    (a list of lists costs ~11x the array). Raises ValueError on ragged or null vectors."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    n = sum(len(c) for c in chunks)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    first = next(c for c in chunks if len(c))
    fixed = pa.types.is_fixed_size_list(first.type)
    dim = first.type.list_size if fixed else len(first[0].values)
    out = np.empty((n, dim), dtype=np.float32)
    row = 0
    for chunk in chunks:
        if not len(chunk):
            continue
        if chunk.null_count:
            raise ValueError("null vector in the embeddings column")
        values = chunk.flatten().to_numpy(zero_copy_only=False)
        if values.size != len(chunk) * dim:
            raise ValueError(f"vectors of different lengths (expected {dim} values each)")
        out[row : row + len(chunk)] = values.reshape(len(chunk), dim)
        row += len(chunk)
    return out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def fit_projection(sample: np.ndarray, dim: int = REDUCED_DIM) -> np.ndarray | None:
    """(D, dim) float32 orthonormal basis of the top `dim` eigenvectors of the uncentred
    second moment of the unit-normalised sample rows; None when D <= dim (nothing to cut).

    Uncentred, because the kNN ranks by inner product: projecting onto the directions that
    carry most of sum(x x^T) keeps inner products best (centred PCA keeps distances to the
    mean instead). Deterministic for a given sample.
    """
    x = _unit_rows(sample)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty (N, D) sample, got shape {x.shape}")
    d = x.shape[1]
    if d <= dim:
        return None
    second = np.zeros((d, d), dtype=np.float64)
    for start in range(0, len(x), _CHUNK_ROWS):
        block = x[start : start + _CHUNK_ROWS]
        second += (block.T @ block).astype(np.float64)
    _, vecs = np.linalg.eigh(second)  # ascending eigenvalues
    return np.ascontiguousarray(vecs[:, ::-1][:, :dim], dtype=np.float32)


def project(
    vectors: np.ndarray, basis: np.ndarray | None, out: np.ndarray | None = None
) -> np.ndarray:
    """Unit-normalise rows and project them on `basis` (None: keep all dimensions), in
    chunks, into float16. `out` lets a caller fill a preallocated (N, dim) array."""
    vectors = np.asarray(vectors)
    dim = vectors.shape[1] if basis is None else basis.shape[1]
    if out is None:
        out = np.empty((len(vectors), dim), dtype=np.float16)
    for start in range(0, len(vectors), _CHUNK_ROWS):
        block = _unit_rows(vectors[start : start + _CHUNK_ROWS])
        out[start : start + len(block)] = block if basis is None else block @ basis
    return out


def sample_rows(n: int, size: int = PROJECTION_SAMPLE, seed: int = 0) -> np.ndarray:
    """Sorted row positions of a fixed-seed sample (all rows when n <= size)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def reduce_stream(read: Blocks, n: int, dim: int = REDUCED_DIM) -> np.ndarray:
    """(N, dim) float16 projections of all rows, in two passes over `read` (the sample
    rows, then every row), so the full float32 matrix never exists."""
    want = sample_rows(n)
    parts, pos = [], 0
    for block in read(0, n):
        hit = want[(want >= pos) & (want < pos + len(block))] - pos
        parts.append(block[hit])
        pos += len(block)
    basis = fit_projection(np.concatenate(parts), dim)
    del parts
    out, pos = None, 0
    for block in read(0, n):
        if out is None:
            out = np.empty((n, block.shape[1] if basis is None else dim), dtype=np.float16)
        project(block, basis, out=out[pos : pos + len(block)])
        pos += len(block)
    return out


def _faiss(threads: int | None):
    import faiss  # imported here: only large sets need it

    if threads is not None:
        faiss.omp_set_num_threads(max(1, threads))
    return faiss


def approx_knn(
    reduced: np.ndarray, k: int, *, threads: int | None = None, nprobe: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Inner-product kNN of every row against all others in the projected space, self
    excluded: exact up to FLAT_MAX rows, else over an inverted file.

    The inverted file: faiss k-means (seeded) cuts the rows into `ivf_lists(n)` cells; the
    rows of each cell are compared with the rows of the `nprobe` cells whose centroids are
    nearest its own and of the IVF_ROW_PROBES nearest cells of each of its rows, in one
    matrix product per cell (`_ivf_cells`). That is the IVF search with the probes gathered
    per cell: BLAS instead of faiss's per-row list scans (at 1M rows IndexIVFFlat nprobe 8
    kept 0.9999 of the true top 10 but its search cost ~600 CPU s; this, 156 CPU s on one
    thread for the same 0.9999, bench/knn_sweep.py).

    `reduced` comes from `project` (rows of norm <= 1). Returns (indices int64 (N, k'),
    inner products float32 (N, k')), k' = min(k, N - 1), best first, ties by lower index;
    a slot the search could not fill holds -1 / NaN. The same result with any number of
    threads.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    n, dim = reduced.shape
    kk = min(k, n - 1)
    if kk <= 0:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.float32)
    if n <= FLAT_MAX:
        cells, probes = [np.arange(n)], [np.array([0])]
    else:
        cells, probes = _ivf_cells(_faiss(threads), reduced, nprobe or IVF_NPROBE)
    out_idx = np.full((n, kk), -1, dtype=np.int64)
    out_sim = np.full((n, kk), np.nan, dtype=np.float32)
    x = torch.from_numpy(np.ascontiguousarray(reduced))
    threads_before = torch.get_num_threads()  # the scan may have left torch one thread
    torch.set_num_threads(max(1, threads or os.cpu_count() or 1))
    try:
        with torch.inference_mode():
            for c, (members, probe) in enumerate(zip(cells, probes, strict=True)):
                if not len(members):
                    continue
                # probes are sorted and hold c: the cell's own rows sit at `own` in base
                own = sum(len(cells[p]) for p in probe[probe < c])
                base = np.concatenate([cells[p] for p in probe])
                keys = x.index_select(0, torch.from_numpy(base)).float().T.contiguous()
                take = min(kk + 1, len(base))
                for lo in range(0, len(members), _CELL_ROWS):
                    rows = members[lo : lo + _CELL_ROWS]
                    sims = x.index_select(0, torch.from_numpy(rows)).float() @ keys
                    at = torch.arange(len(rows))
                    sims[at, own + lo + at] = -torch.inf  # self
                    vals, pos = torch.topk(sims, take, dim=1)
                    ids = base[pos.numpy()]
                    vals = vals.numpy()
                    got_idx, got_sim = _best(ids, vals, min(kk, take))
                    out_idx[rows, : got_idx.shape[1]] = got_idx
                    out_sim[rows, : got_sim.shape[1]] = got_sim
    finally:
        torch.set_num_threads(threads_before)
    return out_idx, out_sim


def ivf_lists(n: int) -> int:
    """Cells for n rows: IVF_LISTS_PER_SQRT_N * sqrt(n), ~250 rows per cell at 1M."""
    return max(1, int(IVF_LISTS_PER_SQRT_N * np.sqrt(n)))


def _ivf_cells(
    faiss: Any, reduced: np.ndarray, nprobe: int, row_probes: int | None = None
) -> tuple[list, list]:
    """Rows of each k-means cell (ascending), and the cells each cell is searched against:
    its `nprobe` nearest cells by centroid, and the `row_probes` nearest cells of each of
    its rows (a row near a border has neighbours in a cell next to it, which the centroid's
    nearest cells often miss). Distances are L2, as k-means cuts the cells."""
    n, dim = reduced.shape
    nlist = ivf_lists(n)
    train = sample_rows(n, nlist * IVF_TRAIN_PER_LIST, seed=1)
    km = faiss.Kmeans(dim, nlist, niter=IVF_KMEANS_ITER, seed=1234, verbose=False,
                      max_points_per_centroid=IVF_TRAIN_PER_LIST, min_points_per_centroid=1)  # fmt: skip
    km.train(np.ascontiguousarray(reduced[train], dtype=np.float32))
    quantizer = faiss.IndexFlatL2(dim)
    quantizer.add(km.centroids)
    near = np.empty((n, min(row_probes or IVF_ROW_PROBES, nlist)), dtype=np.int64)
    for start in range(0, n, _CHUNK_ROWS):
        block = np.ascontiguousarray(reduced[start : start + _CHUNK_ROWS], dtype=np.float32)
        near[start : start + len(block)] = quantizer.search(block, near.shape[1])[1]
    assign = near[:, 0]
    order = np.argsort(assign, kind="stable")
    cells = np.split(order, np.searchsorted(assign[order], np.arange(1, nlist)))
    by_centroid = quantizer.search(km.centroids, min(nprobe, nlist))[1]
    probes = [
        np.unique(np.concatenate([[c], by_centroid[c], near[members].ravel()]))
        for c, members in enumerate(cells)
    ]
    return cells, probes


def graph_params() -> dict[str, Any]:
    """What shapes the kNN graph, for the runs table (the approximate path above EXACT_MAX)."""
    return {
        "exact_max": EXACT_MAX,
        "reduced_dim": REDUCED_DIM,
        "projection": "uncentred second moment, fp16",
        "projection_sample": PROJECTION_SAMPLE,
        "candidates_per_k": CANDIDATES_PER_K,
        "candidate_search": f"exact inner product up to {FLAT_MAX} rows, else faiss k-means "
        "cells searched against their nearest cells",
        "ivf_cells": f"{IVF_LISTS_PER_SQRT_N} * sqrt(n)",
        "ivf_nprobe": IVF_NPROBE,
        "ivf_row_probes": IVF_ROW_PROBES,
        "ivf_train_per_list": IVF_TRAIN_PER_LIST,
        "ivf_kmeans_iter": IVF_KMEANS_ITER,
        "rerank": "exact cosine on the full vectors (one side fp16)",
        "faiss": _faiss_version(),
    }


def _faiss_version() -> str | None:
    try:
        import faiss
    except ImportError:
        return None
    return faiss.__version__


def _best(ids: np.ndarray, sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """First k per row by (-similarity, index); -inf slots become -1 / NaN."""
    ids = np.where(np.isfinite(sims), ids, np.iinfo(np.int64).max)
    order = np.lexsort((ids, -sims), axis=1)[:, :k]
    ids = np.take_along_axis(ids, order, axis=1)
    sims = np.take_along_axis(sims, order, axis=1)
    empty = ~np.isfinite(sims)
    return np.where(empty, -1, ids), np.where(empty, np.nan, np.clip(sims, -1, 1)).astype(
        np.float32
    )


def rerank(
    read: Blocks,
    n: int,
    cand: np.ndarray,
    k: int,
    memory_bytes: int = RERANK_BYTES,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of every (row, candidate) pair from the full vectors, best k kept.

    `cand` is (N, C) row indices (-1: none). Returns the same contract as `knn`.
    """
    sims = score_pairs(read, n, cand, memory_bytes, threads=threads)
    return _best(np.where(cand >= 0, cand, 0), sims, min(k, cand.shape[1]))


def score_pairs(
    read: Blocks,
    n: int,
    cand: np.ndarray,
    memory_bytes: int = RERANK_BYTES,
    threads: int | None = None,
) -> np.ndarray:
    """(N, C) float32 cosines of row i and row cand[i, j] (-inf where cand is -1); row i
    is held in float16, so values are within ~1e-3 of the float32 cosine.

    Rows are held in blocks of `memory_bytes` as float16; each block costs one pass over
    all vectors, so memory stays at one block whatever N is. Pairs are scored _PAIR_CHUNK
    at a time (the gathered rows stay in cache: 2x faster than 16k pairs at once) on
    `threads` threads (default: all cores; numpy releases the GIL in the products).
    """
    sims = np.full(cand.shape, -np.inf, dtype=np.float32)
    workers = max(1, threads or os.cpu_count() or 1)
    q_lo, q_rows = 0, 0
    with ThreadPoolExecutor(workers) as pool:
        while q_lo < n:
            q, got = None, 0
            for block in read(q_lo, n):
                if q is None:  # one preallocated block: no list + concatenate copy
                    q_rows = q_rows or max(1, memory_bytes // (block.shape[1] * 2))
                    q = np.empty((min(q_rows, n - q_lo), block.shape[1]), dtype=np.float16)
                part = block[: len(q) - got]
                q[got : got + len(part)] = _unit_rows(part)
                got += len(part)
                del block, part  # before the next block is read: one block held at a time
                if got >= len(q):
                    break
            qc = cand[q_lo : q_lo + len(q)]
            c_lo = 0
            for block in read(0, n):
                c_hi = c_lo + len(block)
                qi, cj = np.nonzero((qc >= c_lo) & (qc < c_hi))
                unit = _unit_rows(block) if len(qi) else None
                del block  # (the reader's block may be the caller's: normalised as a copy)
                if unit is not None:
                    rows = qc[qi, cj] - c_lo
                    dots = np.empty(len(qi), dtype=np.float32)

                    def score(p: int, q=q, qi=qi, rows=rows, unit=unit, dots=dots) -> None:
                        a, b = qi[p : p + _PAIR_CHUNK], rows[p : p + _PAIR_CHUNK]
                        dots[p : p + _PAIR_CHUNK] = np.einsum(
                            "pd,pd->p", q[a].astype(np.float32), unit[b]
                        )

                    list(pool.map(score, range(0, len(qi), _PAIR_CHUNK)))
                    sims[q_lo + qi, cj] = dots
                    del unit, dots, score
                c_lo = c_hi
            q_lo += len(q)
    return sims


def build_graph(
    read: Blocks,
    n: int,
    k: int,
    groups: np.ndarray | None = None,
    device: str = "cpu",
    precision: str = "auto",
    exact_max: int = EXACT_MAX,
    threads: int | None = None,
    memory_bytes: int = RERANK_BYTES,
) -> dict[str, np.ndarray]:
    """The kNN graph over all rows, and within groups, from a `Blocks` reader.

    Up to `exact_max` rows: all vectors in memory (float32) and exact `knn`. Above: the rows
    projected to REDUCED_DIM fp16 (`reduce_stream`), CANDIDATES_PER_K * k candidates per
    row from `approx_knn` (globally, and per group), then `rerank` with the full vectors,
    so the similarities are exact cosines and recall is that of the candidate lists.
    `groups`: (N,) int codes, -1 = no group. Returns idx/sim (N, k), and group_idx/
    group_sim (N, k) when groups are given (-1 / NaN where a row has no group or too few
    peers), and `map_vectors`: what a 2-D map should be computed from.
    """
    out: dict[str, np.ndarray] = {}
    if n <= exact_max:
        x, pos = np.zeros((0, 0), dtype=np.float32), 0
        for block in read(0, n):  # filled in place: no second copy of the matrix
            if pos == 0:
                x = np.empty((n, block.shape[1]), dtype=np.float32)
            x[pos : pos + len(block)] = block
            pos += len(block)
        out["idx"], out["sim"] = knn(x, k, device=device, precision=precision)
        if groups is not None:
            member = np.flatnonzero(groups >= 0)
            gi, gs = knn_within_groups(x[member], groups[member].astype(str), k,
                                       device=device, precision=precision)  # fmt: skip
            out["group_idx"], out["group_sim"] = _scatter(n, member, gi, gs, k)
        out["map_vectors"] = x
        return out
    reduced = reduce_stream(read, n)
    wide = CANDIDATES_PER_K * k
    cand = [approx_knn(reduced, wide, threads=threads)[0]]
    if groups is not None:
        member = np.flatnonzero(groups >= 0)
        g_cand = np.full((n, wide), -1, dtype=np.int64)
        order = member[np.argsort(groups[member], kind="stable")]
        bounds = np.flatnonzero(np.diff(groups[order])) + 1
        for rows in np.split(order, bounds):
            if len(rows) < 2:
                continue
            gi, _ = approx_knn(reduced[rows], wide, threads=threads)
            g_cand[rows, : gi.shape[1]] = np.where(gi >= 0, rows[np.clip(gi, 0, None)], -1)
        cand.append(g_cand)
    sims = score_pairs(read, n, np.concatenate(cand, axis=1), memory_bytes, threads=threads)
    width = cand[0].shape[1]
    for name, c, part in (("", cand[0], sims[:, :width]), ("group_", cand[-1], sims[:, width:])):
        if name and groups is None:
            continue
        out[f"{name}idx"], out[f"{name}sim"] = _best(np.where(c >= 0, c, 0), part, k)
    out["map_vectors"] = reduced
    return out


def _scatter(
    n: int, rows: np.ndarray, idx: np.ndarray, sim: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Results for a subset of rows (local indices) as (N, k) global arrays."""
    out_idx = np.full((n, k), -1, dtype=np.int64)
    out_sim = np.full((n, k), np.nan, dtype=np.float32)
    out_idx[rows, : idx.shape[1]] = np.where(idx >= 0, rows[np.clip(idx, 0, None)], -1)
    out_sim[rows, : sim.shape[1]] = sim
    return out_idx, out_sim


def knn_graph(
    vectors: np.ndarray,
    k: int,
    device: str = "cpu",
    precision: str = "auto",
    exact_max: int = EXACT_MAX,
    threads: int | None = None,
    chunk: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """`knn` up to `exact_max` vectors, else the approximate path of `build_graph` (exact
    cosines of re-ranked candidates). Same return contract as `knn`."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) <= exact_max:
        return knn(vectors, k, device=device, chunk=chunk, precision=precision)
    graph = build_graph(array_blocks(vectors), len(vectors), k, exact_max=exact_max,
                        threads=threads)  # fmt: skip
    return graph["idx"], graph["sim"]


def knn_within_groups(
    vectors: np.ndarray,
    groups: np.ndarray,
    k: int,
    device: str = "cpu",
    chunk: int = 4096,
    precision: str = "auto",
    exact_max: int = EXACT_MAX,
) -> tuple[np.ndarray, np.ndarray]:
    """kNN restricted to vectors of the same group (e.g. the same label); each group is
    searched exactly or approximately by its own size (`knn_graph`).

    Returns global indices and similarities, shape (N, k); where a group has k or fewer other
    members the missing slots hold index -1 and similarity NaN. Group keys are compared as
    strings; drop unlabelled rows before calling if they should not form a group.
    """
    vecs = np.asarray(vectors, dtype=np.float32)
    keys = np.asarray(groups)
    if len(keys) != len(vecs):
        raise ValueError("groups must have one entry per vector")
    out_idx = np.full((len(vecs), k), -1, dtype=np.int64)
    out_sim = np.full((len(vecs), k), np.nan, dtype=np.float32)
    _, codes = np.unique(keys.astype(str), return_inverse=True)
    order = np.argsort(codes, kind="stable")  # members of each group, in row order
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    for members in np.split(order, bounds):
        if len(members) < 2:
            continue
        idx, sim = knn_graph(vecs[members], k, device=device, chunk=chunk, precision=precision,
                             exact_max=exact_max)  # fmt: skip
        out_idx[members, : idx.shape[1]] = np.where(idx >= 0, members[np.clip(idx, 0, None)], -1)
        out_sim[members, : sim.shape[1]] = sim
    return out_idx, out_sim
