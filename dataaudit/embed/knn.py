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
cores; a million: hours), so `knn_graph` switches to an approximate one:

    basis = fit_projection(sample)                 # (D, 256): top directions of the vectors
    reduced = project(vectors, basis)              # (N, 256) float16, in chunks
    idx, sim = approx_knn(reduced, k)              # faiss HNSW, inner product

The projection is onto the top eigenvectors of the *uncentred* second moment of unit vectors,
so inner products (= cosines) are kept up to the dropped energy and the reduced vectors are
searched by inner product without re-normalising (re-normalising cost 2-3 points of recall in
bench/bench_knn.py). Similarities of the approximate graph are those reduced inner products.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

# Memory for one block of query rows (similarities, or gathered candidates). Bigger blocks
# run the matmul faster (bf16: ~600 GFLOP/s at 335 rows, ~1,000 at 1,000+ rows on 2 cores).
_MAX_BLOCK_BYTES = 256 * 1024 * 1024
# Column group size for the two-stage top-k (group maxima first, then within the best groups).
_GROUP = 64
# Slack for fp32 accumulation inside the bf16 matmul (D * 2**-24 for D up to ~1,600).
_ACCUM_SLACK = 1e-4

PRECISIONS = ("auto", "fp32", "bf16")


def _as_unit_tensor(vectors: np.ndarray, device: str) -> torch.Tensor:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {arr.shape}")
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
    return torch.nn.functional.normalize(t, dim=1)


def _resolve_precision(precision: str, device: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16"
    if device == "cpu":
        from dataaudit.embed.model import _cpu_has_native_bf16

        return "bf16" if _cpu_has_native_bf16() else "fp32"
    return "fp32"


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
    use_bf16 = _resolve_precision(precision, device) == "bf16"
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


# --- large sets: reduced vectors and an approximate index ------------------------------

# Up to this many vectors the graph is exact; above it, approximate (see the module doc).
EXACT_MAX = 100_000
REDUCED_DIM = 256
# Rows the projection is fitted on: the D x D second moment of 50,000 rows pins the top
# 256 directions; more rows cost time and change nothing measurable.
PROJECTION_SAMPLE = 50_000
# HNSW graph degree and search breadth (faiss defaults are 32 / 40 / 16): chosen in
# bench/bench_knn.py for recall@10 >= 0.95 against the exact graph.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 64
_CHUNK_ROWS = 65_536  # rows per projection / search batch: bounds temporaries to ~100 MB


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
    mean instead). Deterministic for a given sample (eigh, signs irrelevant to products).
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
    chunks, into float16 (halves the memory; fp16 keeps cosines to ~1e-3). `out` lets a
    caller fill a preallocated (N, dim) array batch by batch."""
    vectors = np.asarray(vectors)
    dim = vectors.shape[1] if basis is None else basis.shape[1]
    if out is None:
        out = np.empty((len(vectors), dim), dtype=np.float16)
    for start in range(0, len(vectors), _CHUNK_ROWS):
        block = _unit_rows(vectors[start : start + _CHUNK_ROWS])
        out[start : start + len(block)] = block if basis is None else block @ basis
    return out


def _faiss(threads: int | None):
    import faiss  # imported here: only large sets need it

    if threads is not None:
        faiss.omp_set_num_threads(max(1, threads))
    return faiss


def approx_knn(
    reduced: np.ndarray, k: int, *, threads: int | None = None, ef_search: int = HNSW_EF_SEARCH
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate inner-product kNN of every row against all others, self excluded.

    `reduced` comes from `project` (float16 or float32, rows of norm <= 1). Uses a faiss
    HNSW graph (`IndexHNSWFlat`, inner product). Returns (indices int64 (N, k'), similarities
    float32 (N, k')), k' = min(k, N - 1), best first, ties by lower index; a slot the search
    could not fill holds -1 / NaN. HNSW inserts in parallel, so with several threads two runs
    can differ in a few neighbours; `threads=1` makes it reproducible.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    faiss = _faiss(threads)
    n, dim = reduced.shape
    kk = min(k, n - 1)
    if kk <= 0:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.float32)
    index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    for start in range(0, n, _CHUNK_ROWS):
        index.add(np.ascontiguousarray(reduced[start : start + _CHUNK_ROWS], dtype=np.float32))
    index.hnsw.efSearch = max(ef_search, kk + 1)
    out_idx = np.full((n, kk), -1, dtype=np.int64)
    out_sim = np.full((n, kk), np.nan, dtype=np.float32)
    for start in range(0, n, _CHUNK_ROWS):
        block = np.ascontiguousarray(reduced[start : start + _CHUNK_ROWS], dtype=np.float32)
        sims, ids = index.search(block, kk + 1)
        rows = np.arange(start, start + len(block))[:, None]
        drop = (ids == rows) | (ids < 0)
        sims = np.where(drop, -np.inf, sims)
        ids = np.where(drop, np.iinfo(np.int64).max, ids)
        order = np.lexsort((ids, -sims), axis=1)[:, :kk]  # best first, ties by index
        ids = np.take_along_axis(ids, order, axis=1)
        sims = np.take_along_axis(sims, order, axis=1)
        empty = ~np.isfinite(sims)
        out_idx[start : start + len(block)] = np.where(empty, -1, ids)
        out_sim[start : start + len(block)] = np.where(empty, np.nan, np.clip(sims, -1, 1))
    return out_idx, out_sim


def sample_rows(n: int, size: int = PROJECTION_SAMPLE, seed: int = 0) -> np.ndarray:
    """Sorted row positions of a fixed-seed sample (all rows when n <= size)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def knn_graph(
    vectors: np.ndarray,
    k: int,
    device: str = "cpu",
    precision: str = "auto",
    exact_max: int = EXACT_MAX,
    threads: int | None = None,
    reduced: bool = False,
    chunk: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """kNN graph with the right method for the size: exact `knn` up to `exact_max` vectors,
    else `approx_knn` over vectors projected to REDUCED_DIM (fp16). Same return contract.
    `reduced=True`: the vectors already come from `project` (see `read_vectors`), so they
    are searched approximately as they are (re-normalising them would cost recall)."""
    if reduced:
        return approx_knn(vectors, k, threads=threads)
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) <= exact_max:
        return knn(vectors, k, device=device, chunk=chunk, precision=precision)
    basis = fit_projection(vectors[sample_rows(len(vectors))])
    return approx_knn(project(vectors, basis), k, threads=threads)


def read_vectors(
    con: Any, sql: str, n: int, exact_max: int = EXACT_MAX, batch_rows: int = _CHUNK_ROWS
) -> tuple[np.ndarray, bool]:
    """The vectors a query returns (its first column: equal-length float lists), in order.

    Returns (vectors, reduced): float32 (N, D) when N <= exact_max; above it, (N,
    REDUCED_DIM) float16 from `project` in two streamed passes (the sample rows, then every
    row), so the full float32 matrix (5 GB for a million 1,280-d vectors) never exists.
    `con` is a DuckDB connection; `n` the row count the query returns.
    """
    reduced = n > exact_max
    basis = None
    if reduced:
        want = sample_rows(n)
        parts, pos = [], 0
        for batch in _batches(con, sql, batch_rows):
            hit = want[(want >= pos) & (want < pos + len(batch))] - pos
            if len(hit):
                parts.append(vectors_from_arrow(batch.column(0).take(pa.array(hit))))
            pos += len(batch)
        basis = fit_projection(np.concatenate(parts))
    out, pos = None, 0
    for batch in _batches(con, sql, batch_rows):
        block = vectors_from_arrow(batch.column(0))
        if out is None:
            dim = basis.shape[1] if basis is not None else block.shape[1]
            out = np.empty((n, dim), dtype=np.float16 if reduced else np.float32)
        if pos + len(block) > n:
            raise ValueError(f"the query returned more than the {n} rows announced")
        if reduced:
            project(block, basis, out=out[pos : pos + len(block)])
        else:
            out[pos : pos + len(block)] = block
        pos += len(block)
    if out is None or pos != n:
        raise ValueError(f"the query returned {pos} rows, expected {n}")
    return out, reduced


def _batches(con: Any, sql: str, rows: int):
    relation = con.sql(sql)
    # DuckDB 2 renamed record_batch to to_arrow_reader
    fetch = getattr(relation, "to_arrow_reader", None) or relation.record_batch
    reader = fetch(rows)
    for batch in reader:
        if len(batch):
            yield batch


def knn_within_groups(
    vectors: np.ndarray,
    groups: np.ndarray,
    k: int,
    device: str = "cpu",
    chunk: int = 4096,
    precision: str = "auto",
    exact_max: int = EXACT_MAX,
    reduced: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """kNN restricted to vectors of the same group (e.g. the same label); each group is
    searched exactly or approximately by its own size (`knn_graph`; `reduced` as there).

    Returns global indices and similarities, shape (N, k); where a group has k or fewer other
    members the missing slots hold index -1 and similarity NaN. Group keys are compared as
    strings; drop unlabelled rows before calling if they should not form a group.
    """
    vecs = np.asarray(vectors) if reduced else np.asarray(vectors, dtype=np.float32)
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
                             exact_max=exact_max, reduced=reduced)  # fmt: skip
        out_idx[members, : idx.shape[1]] = np.where(idx >= 0, members[np.clip(idx, 0, None)], -1)
        out_sim[members, : sim.shape[1]] = sim
    return out_idx, out_sim
