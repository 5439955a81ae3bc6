-- dataaudit index schema: the product's contract. Any DuckDB client can open the file.
-- Bump SCHEMA_VERSION in dataaudit/store/db.py when this changes.

CREATE TABLE IF NOT EXISTS meta (
    key   VARCHAR PRIMARY KEY,   -- schema_version, root, layout, ...
    value VARCHAR
);

-- One row per file that is an image or claims to be one (by extension or by content).
CREATE TABLE IF NOT EXISTS images (
    file_id            BIGINT PRIMARY KEY,  -- xxh3_64 of the relative path, as int64
    path               VARCHAR NOT NULL,    -- POSIX path relative to the dataset root
    split              VARCHAR,             -- train / val / test, or NULL
    label              VARCHAR,             -- class name, or NULL when unlabelled
    bytes              BIGINT NOT NULL,
    mtime_ns           BIGINT NOT NULL,
    ext                VARCHAR,             -- lower-case extension with the dot
    content_hash       VARCHAR,             -- xxh3_128 of the file bytes
    format             VARCHAR,             -- sniffed from the bytes (JPEG, PNG, ...)
    format_matches_ext BOOLEAN,             -- NULL when the format is unknown
    width              INTEGER,             -- as stored, before EXIF rotation
    height             INTEGER,
    mode               VARCHAR,             -- Pillow mode: RGB, L, P, CMYK, I;16, ...
    channels           TINYINT,
    bit_depth          TINYINT,
    has_alpha          BOOLEAN,
    n_frames           INTEGER,
    exif_orientation   TINYINT,             -- 1..8, NULL when absent
    exif               VARCHAR,             -- JSON of a few readable EXIF tags
    decode_status      VARCHAR NOT NULL,    -- ok, empty, not_image, truncated, unreadable,
                                            -- corrupt, bomb, unsupported
    is_corrupt         BOOLEAN NOT NULL,    -- unusable for training
    error_class        VARCHAR,
    error_message      VARCHAR,
    decode_scale       TINYINT,             -- JPEG DCT scaling used (1 = full decode)
    trailing_bytes     BOOLEAN,             -- JPEG with data after the end marker
    pixel_hash         VARCHAR,             -- xxh3_128 of the decoded pixels
    phash              BIGINT,              -- 64-bit pHash bits as int64
    dhash              BIGINT,              -- 64-bit dHash bits as int64
    signature          BLOB,                -- 16x16 grey pixels, to verify near-duplicate pairs
    brightness_mean    REAL,                -- grey level 0..255
    brightness_p05     REAL,
    brightness_p95     REAL,
    contrast           REAL,                -- std of grey levels
    laplacian_var      REAL,                -- Laplacian variance on a <=128 px image
    sharpness          REAL,                -- fine/coarse Laplacian energy; low = blurry
    edge_sharpness     REAL,                -- step / local range at the strongest edges; low = blurry
    entropy            REAL,                -- bits, 0..8, of the grey histogram
    colorfulness       REAL,                -- Hasler-Suesstrunk
    is_grayscale       BOOLEAN,             -- R = G = B (within 3 levels) everywhere
    max_channel_diff   REAL,
    dark_fraction      REAL,                -- share of pixels with grey <= 5
    bright_fraction    REAL,                -- share of pixels with grey >= 250
    scan_run_id        INTEGER
);

-- Small upright JPEGs, so the app never reopens full-size files to draw a grid.
CREATE TABLE IF NOT EXISTS thumbnails (
    file_id BIGINT PRIMARY KEY,
    jpeg    BLOB NOT NULL
);

-- Files that are neither images nor named like one: counted, not indexed.
CREATE TABLE IF NOT EXISTS skipped_files (
    file_id  BIGINT PRIMARY KEY,
    path     VARCHAR NOT NULL,
    bytes    BIGINT,
    mtime_ns BIGINT,
    reason   VARCHAR
);

-- Every scan / detect / embed / train run, with its parameters and library versions.
CREATE TABLE IF NOT EXISTS runs (
    run_id     INTEGER PRIMARY KEY,
    kind       VARCHAR NOT NULL,
    status     VARCHAR NOT NULL,   -- running, completed, interrupted, failed
    started_at TIMESTAMP NOT NULL,
    ended_at   TIMESTAMP,
    params     JSON,
    versions   JSON,
    counts     JSON
);

-- Detector output: one row per (image, issue type). score: severity in [0, 1], higher is
-- worse; rows with is_issue = false are ranked candidates that did not cross a threshold.
CREATE TABLE IF NOT EXISTS issues (
    file_id  BIGINT NOT NULL,
    issue    VARCHAR NOT NULL,
    score    DOUBLE,
    is_issue BOOLEAN NOT NULL,
    group_id BIGINT,            -- duplicate group (its representative's file_id)
    details  VARCHAR,           -- one-line reason
    run_id   INTEGER
);

-- Pairs of duplicates and the layer that linked them (bytes, pixels, phash, embedding).
CREATE TABLE IF NOT EXISTS duplicate_pairs (
    a        BIGINT NOT NULL,
    b        BIGINT NOT NULL,
    layer    VARCHAR NOT NULL,
    distance DOUBLE,            -- 0 for exact layers, Hamming bits, or 1 - cosine
    run_id   INTEGER
);

-- Duplicate groups: connected components over all pairs, with the copy to keep.
CREATE TABLE IF NOT EXISTS duplicate_groups (
    file_id           BIGINT NOT NULL,
    group_id          BIGINT NOT NULL,
    is_representative BOOLEAN NOT NULL,
    run_id            INTEGER
);

-- Dataset-level findings (class balance, label shift, spurious signals, ...).
CREATE TABLE IF NOT EXISTS findings (
    finding  VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,
    message  VARCHAR NOT NULL,
    details  JSON,
    run_id   INTEGER
);

-- L2-normalised image embeddings; the model that made them is in meta 'embedding_model'.
CREATE TABLE IF NOT EXISTS embeddings (
    file_id BIGINT PRIMARY KEY,
    vector  FLOAT[] NOT NULL
);

-- k-nearest-neighbour graph over the embeddings (cosine). scope 'all': among every image;
-- 'label': among images with the same label.
CREATE TABLE IF NOT EXISTS knn (
    file_id     BIGINT NOT NULL,
    neighbor_id BIGINT NOT NULL,
    rank        SMALLINT NOT NULL,   -- 1 = nearest
    similarity  REAL NOT NULL,
    scope       VARCHAR NOT NULL
);

-- A 2-D projection of the embeddings (PCA, or UMAP where installed) for the app's map.
CREATE TABLE IF NOT EXISTS embedding_map (
    file_id BIGINT PRIMARY KEY,
    x       REAL,
    y       REAL
);

-- Training runs (`dataaudit train`): per-example predictions of each baseline, for review.
-- out_of_fold: predicted by a model that never saw the image (k-fold cross-fitting for the
-- training split, the model fitted on the training split for the others).
CREATE TABLE IF NOT EXISTS predictions (
    run_id      INTEGER NOT NULL,
    model       VARCHAR NOT NULL,   -- input_independent, linear, convnet, resnet18
    file_id     BIGINT NOT NULL,
    split       VARCHAR,
    label       VARCHAR,            -- the dataset's label
    predicted   VARCHAR,
    probs       FLOAT[],            -- in the order of the run's classes (runs.params)
    loss        REAL,               -- cross-entropy against the dataset's label
    margin      REAL,               -- p(label) minus the largest other p: < 0 = mispredicted
    out_of_fold BOOLEAN
);

-- One row per (run, model, epoch) on the evaluation split (every example, never a sample).
CREATE TABLE IF NOT EXISTS train_metrics (
    run_id     INTEGER NOT NULL,
    model      VARCHAR NOT NULL,
    epoch      INTEGER NOT NULL,
    train_loss DOUBLE,
    loss       DOUBLE,
    accuracy   DOUBLE,
    per_class  JSON,               -- {class: accuracy}
    confusion  JSON                -- rows = label, columns = prediction, classes in run order
);

-- Predictions on a fixed set of evaluation images after every epoch (the app replays them).
CREATE TABLE IF NOT EXISTS prediction_dynamics (
    run_id    INTEGER NOT NULL,
    model     VARCHAR NOT NULL,
    epoch     INTEGER NOT NULL,
    file_id   BIGINT NOT NULL,
    predicted VARCHAR,
    p_label   REAL                 -- probability of the dataset's label
);

-- Model-based label issues (confident learning on out-of-fold probabilities); the
-- label_error detector merges them with the neighbour vote.
CREATE TABLE IF NOT EXISTS model_label_issues (
    run_id    INTEGER NOT NULL,
    model     VARCHAR NOT NULL,
    file_id   BIGINT NOT NULL,
    label     VARCHAR,
    suggested VARCHAR,             -- the model's most likely label
    quality   REAL,                -- cleanlab label quality in [0, 1]; low = likely wrong
    is_issue  BOOLEAN NOT NULL     -- cleanlab find_label_issues
);

-- The training sanity checks (`dataaudit train --checks-only`, `dataaudit.sanity`).
CREATE TABLE IF NOT EXISTS sanity_checks (
    run_id   INTEGER NOT NULL,
    name     VARCHAR NOT NULL,
    verdict  VARCHAR NOT NULL,     -- pass, fail, warn, skipped
    measured VARCHAR,
    expected VARCHAR,
    detail   VARCHAR
);
