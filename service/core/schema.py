"""The DuckDB schema as numbered migrations; `schema_version` records which have run.

Append a migration to change the schema; never edit one that has shipped, since
existing databases already ran it. There are no FOREIGN KEY constraints on purpose:
DuckDB implements an UPDATE of a referenced row as delete + insert and rejects it,
and tasks, models and jobs are updated in place. References are kept by the code
that writes them (the service is the only writer).
"""

from __future__ import annotations

from service.core.schema_annotation import ANNOTATION_DEPTH
from service.core.schema_cluster import CLUSTER_JOBS
from service.core.schema_serving import SERVING_LIMITS_AND_EVENTS
from service.core.schema_types import Migration, table_sql

CORE = "".join(
    [
        table_sql(
            "system_prompts",
            """name VARCHAR NOT NULL,
  version INTEGER NOT NULL,
  text VARCHAR NOT NULL,
  UNIQUE (name, version)""",
        ),
        table_sql(
            "prompts",
            """text VARCHAR NOT NULL UNIQUE,
  source VARCHAR NOT NULL CHECK (source IN ('seed', 'import', 'served')),
  source_ref VARCHAR""",
        ),
        table_sql(
            "models",
            """kind VARCHAR NOT NULL CHECK (kind IN ('pretrained', 'sft', 'reward', 'policy', 'external')),
  name VARCHAR NOT NULL,
  path VARCHAR NOT NULL,
  parent_id BIGINT,
  snapshot_id VARCHAR,
  config JSON,
  metrics JSON,
  status VARCHAR NOT NULL DEFAULT 'registered',
  status_reason VARCHAR""",
        ),
        table_sql(
            "samples",
            """prompt_id BIGINT NOT NULL,
  system_prompt_id BIGINT NOT NULL,
  model_id BIGINT NOT NULL,
  params JSON NOT NULL,
  params_hash VARCHAR NOT NULL,
  sample_index INTEGER NOT NULL,
  text VARCHAR NOT NULL,
  prompt_tokens INTEGER,
  completion_tokens INTEGER,
  finish_reason VARCHAR,
  latency_ms DOUBLE""",
        ),
        table_sql(
            "tasks",
            """prompt_id BIGINT NOT NULL,
  sample_ids BIGINT[] NOT NULL,
  required_rankings INTEGER NOT NULL DEFAULT 1 CHECK (required_rankings >= 1),
  priority DOUBLE NOT NULL DEFAULT 0""",
        ),
        table_sql(
            "annotators",
            """name VARCHAR NOT NULL UNIQUE,
  role VARCHAR NOT NULL CHECK (role IN ('annotator', 'admin', 'simulated', 'import')),
  password_hash VARCHAR,
  disabled BOOLEAN NOT NULL DEFAULT false""",
        ),
        table_sql(
            "rankings",
            """task_id BIGINT NOT NULL,
  annotator_id BIGINT NOT NULL,
  ranks INTEGER[],
  skipped BOOLEAN NOT NULL DEFAULT false,
  skip_reason VARCHAR,
  flags JSON,
  rationale VARCHAR,
  time_spent_s DOUBLE,
  submission_id VARCHAR NOT NULL UNIQUE""",
        ),
        # A snapshot's id is its content hash, so this one table has a VARCHAR key.
        """CREATE TABLE snapshots (
  id VARCHAR PRIMARY KEY,
  path VARCHAR NOT NULL,
  filters JSON,
  counts JSON,
  created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
""",
        table_sql(
            "jobs",
            """kind VARCHAR NOT NULL,
  config JSON,
  status VARCHAR NOT NULL DEFAULT 'queued',
  progress DOUBLE NOT NULL DEFAULT 0,
  log_path VARCHAR,
  error VARCHAR,
  result_model_id BIGINT,
  started_at TIMESTAMPTZ,
  finished_at TIMESTAMPTZ""",
        ),
    ]
)

MIGRATIONS: list[Migration] = [
    Migration(1, "core tables", CORE),
    Migration(
        2,
        "sample identity and lookup indexes",
        # The sampler's idempotency key: a rerun fills in missing sample_index values only.
        """CREATE UNIQUE INDEX samples_identity
  ON samples (prompt_id, system_prompt_id, model_id, params_hash, sample_index);
CREATE INDEX samples_prompt ON samples (prompt_id);
CREATE INDEX rankings_task ON rankings (task_id);
""",
    ),
    Migration(
        3,
        "annotation: leases, gold tasks, task batches, simulated annotator profiles",
        table_sql(
            "leases",
            """task_id BIGINT NOT NULL,
  annotator_id BIGINT NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL""",
        )
        + """CREATE INDEX leases_task ON leases (task_id);
ALTER TABLE tasks ADD COLUMN gold_ranks INTEGER[];
ALTER TABLE tasks ADD COLUMN batch VARCHAR;
ALTER TABLE rankings ADD COLUMN gold_agreement DOUBLE;
ALTER TABLE annotators ADD COLUMN profile JSON;
""",
    ),
    Migration(
        4,
        "training jobs: the process running a job and where it writes",
        """ALTER TABLE jobs ADD COLUMN pid INTEGER;
ALTER TABLE jobs ADD COLUMN output_dir VARCHAR;
""",
    ),
    Migration(
        5,
        "jobs of every kind: options beside the config, a result to report, the worker process (pid is the owner)",
        """ALTER TABLE jobs ADD COLUMN options JSON;
ALTER TABLE jobs ADD COLUMN result JSON;
ALTER TABLE jobs ADD COLUMN worker_pid INTEGER;
""",
    ),
    Migration(
        6,
        "a prompt is a conversation: its messages; text stays its deduplicated key (ids unchanged)",
        """ALTER TABLE prompts ADD COLUMN messages JSON;
UPDATE prompts SET messages = json_array(json_object('role', 'user', 'content', text));
""",
    ),
    Migration(
        7,
        "model judges: role 'judge' (the role check is rebuilt, ids kept) and versioned judge templates",
        """CREATE TABLE annotators_v7 (
  id BIGINT PRIMARY KEY DEFAULT nextval('seq_annotators'),
  name VARCHAR NOT NULL UNIQUE,
  role VARCHAR NOT NULL CHECK (role IN ('annotator', 'admin', 'simulated', 'import', 'judge')),
  password_hash VARCHAR,
  disabled BOOLEAN NOT NULL DEFAULT false,
  created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
  profile JSON
);
INSERT INTO annotators_v7 (id, name, role, password_hash, disabled, created_at, profile)
  SELECT id, name, role, password_hash, disabled, created_at, profile FROM annotators;
DROP TABLE annotators;
ALTER TABLE annotators_v7 RENAME TO annotators;
"""
        + table_sql(
            "judge_templates",
            """name VARCHAR NOT NULL,
  version INTEGER NOT NULL,
  text VARCHAR NOT NULL,
  UNIQUE (name, version)""",
        ),
    ),
    Migration(
        8,
        "held-out prompts: source 'eval' (prompts stored for evaluation, never sampled for training; ids kept)",
        """CREATE TABLE prompts_v8 (
  id BIGINT PRIMARY KEY DEFAULT nextval('seq_prompts'),
  text VARCHAR NOT NULL UNIQUE,
  source VARCHAR NOT NULL CHECK (source IN ('seed', 'import', 'served', 'eval')),
  source_ref VARCHAR,
  created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
  messages JSON
);
INSERT INTO prompts_v8 (id, text, source, source_ref, created_at, messages)
  SELECT id, text, source, source_ref, created_at, messages FROM prompts;
DROP TABLE prompts;
ALTER TABLE prompts_v8 RENAME TO prompts;
""",
    ),
    Migration(
        9,
        "revocable logins: an account's tokens and app sessions issued before sessions_since no longer count",
        "ALTER TABLE annotators ADD COLUMN sessions_since DOUBLE;\n",
    ),
    Migration(
        10,
        "leases live in the service's memory (annotator/queue_book.py): a crash returns leased tasks anyway",
        "DROP INDEX leases_task;\nDROP TABLE leases;\nDROP SEQUENCE seq_leases;\n",
    ),
    Migration(
        11,
        "serving: API keys (hashes only), deployments, the traffic log and feedback",
        table_sql(
            "api_keys",
            """name VARCHAR NOT NULL UNIQUE,
  key_hash VARCHAR NOT NULL UNIQUE,
  prefix VARCHAR NOT NULL,
  scope VARCHAR NOT NULL CHECK (scope IN ('client', 'admin')),
  rpm INTEGER,
  tpm INTEGER,
  log_traffic BOOLEAN NOT NULL DEFAULT false,
  requests BIGINT NOT NULL DEFAULT 0,
  prompt_tokens BIGINT NOT NULL DEFAULT 0,
  completion_tokens BIGINT NOT NULL DEFAULT 0,
  last_used_at TIMESTAMPTZ,
  revoked_at TIMESTAMPTZ""",
        )
        + table_sql(
            "deployments",
            """model_id BIGINT NOT NULL,
  canary_model_id BIGINT,
  canary_pct DOUBLE,
  canary_replicas INTEGER,
  replicas INTEGER NOT NULL DEFAULT 1,
  endpoint VARCHAR,
  endpoint_key VARCHAR,
  system_prompts JSON,
  status VARCHAR NOT NULL CHECK (status IN ('active', 'replaced')),
  note VARCHAR""",
        )
        + table_sql(
            "traffic",
            """response_id VARCHAR,
  key_id BIGINT,
  route VARCHAR NOT NULL,
  model_id BIGINT,
  system_prompt_id BIGINT,
  n INTEGER NOT NULL DEFAULT 1,
  stream BOOLEAN NOT NULL DEFAULT false,
  status INTEGER NOT NULL,
  prompt_tokens BIGINT,
  completion_tokens BIGINT,
  latency_ms DOUBLE,
  request JSON,
  response JSON""",
        )
        + table_sql(
            "feedback",
            """response_id VARCHAR NOT NULL,
  key_id BIGINT,
  score DOUBLE,
  thumbs VARCHAR CHECK (thumbs IN ('up', 'down')),
  preferred_index INTEGER,
  comment VARCHAR,
  ranking_id BIGINT""",
        )
        + "CREATE INDEX traffic_response ON traffic (response_id);\n",
    ),
    Migration(
        12,
        "rounds of the loop",
        # One row per round of `rankloop demo` / `rankloop loop`: the step it finished last and what each
        # step made, so a round resumes where it stopped and the report can show every round.
        table_sql(
            "rounds",
            """kind VARCHAR NOT NULL CHECK (kind IN ('demo', 'loop')),
  status VARCHAR NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
  step VARCHAR,
  sampled_model_id BIGINT,
  batch VARCHAR,
  snapshot_id VARCHAR,
  reward_model_id BIGINT,
  policy_model_id BIGINT,
  deployed_model_id BIGINT,
  excluded JSON,
  job_id BIGINT,
  stages JSON,
  note VARCHAR,
  finished_at TIMESTAMPTZ""",
        ),
    ),
    Migration(
        13,
        "model and job statuses are checked like kinds and roles (tables rebuilt, ids and columns kept)",
        # A status no rankloop writes any more (a job left 'registering' by a crash) becomes 'failed',
        # saying so, rather than failing the migration.
        """CREATE TABLE models_v13 (
  id BIGINT PRIMARY KEY DEFAULT nextval('seq_models'),
  kind VARCHAR NOT NULL CHECK (kind IN ('pretrained', 'sft', 'reward', 'policy', 'external')),
  name VARCHAR NOT NULL,
  path VARCHAR NOT NULL,
  parent_id BIGINT,
  snapshot_id VARCHAR,
  config JSON,
  metrics JSON,
  status VARCHAR NOT NULL DEFAULT 'registered'
    CHECK (status IN ('registered', 'candidate', 'active', 'retired', 'failed')),
  status_reason VARCHAR,
  created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
INSERT INTO models_v13 (id, kind, name, path, parent_id, snapshot_id, config, metrics, status, status_reason,
                        created_at)
  SELECT id, kind, name, path, parent_id, snapshot_id, config, metrics,
         CASE WHEN status IN ('registered', 'candidate', 'active', 'retired', 'failed') THEN status
              ELSE 'failed' END,
         CASE WHEN status IN ('registered', 'candidate', 'active', 'retired', 'failed') THEN status_reason
              ELSE concat_ws('; ', status_reason, 'status ' || status || ' is no longer used') END,
         created_at
  FROM models;
DROP TABLE models;
ALTER TABLE models_v13 RENAME TO models;
CREATE TABLE jobs_v13 (
  id BIGINT PRIMARY KEY DEFAULT nextval('seq_jobs'),
  kind VARCHAR NOT NULL,
  config JSON,
  status VARCHAR NOT NULL DEFAULT 'queued'
    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  progress DOUBLE NOT NULL DEFAULT 0,
  log_path VARCHAR,
  error VARCHAR,
  result_model_id BIGINT,
  started_at TIMESTAMPTZ,
  finished_at TIMESTAMPTZ,
  created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
  pid INTEGER,
  output_dir VARCHAR,
  options JSON,
  result JSON,
  worker_pid INTEGER
);
INSERT INTO jobs_v13 (id, kind, config, status, progress, log_path, error, result_model_id, started_at,
                      finished_at, created_at, pid, output_dir, options, result, worker_pid)
  SELECT id, kind, config,
         CASE WHEN status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled') THEN status
              ELSE 'failed' END,
         progress, log_path,
         CASE WHEN status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled') THEN error
              ELSE concat_ws('; ', error, 'left ' || status || ' by an older rankloop') END,
         result_model_id, started_at, finished_at, created_at, pid, output_dir, options, result, worker_pid
  FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v13 RENAME TO jobs;
""",
    ),
    Migration(
        14,
        "the token ids a sample was generated as",
        # A KL estimate scores exactly what the policy sampled; re-tokenizing the text can give other
        # ids (merges across the boundary, a stop token the text does not show). NULL for samples that
        # came from outside (imports) or from before this version.
        "ALTER TABLE samples ADD COLUMN token_ids INTEGER[];",
    ),
    *SERVING_LIMITS_AND_EVENTS,
    *ANNOTATION_DEPTH,
    *CLUSTER_JOBS,
]

SCHEMA_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
  version INTEGER PRIMARY KEY,
  name VARCHAR NOT NULL,
  applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
"""

LATEST = MIGRATIONS[-1].version
