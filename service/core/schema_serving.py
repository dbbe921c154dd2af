"""Migrations 15-17: token budgets, gateway replicas, webhooks (service/core/schema.py lists them all)."""

from __future__ import annotations

from service.core.schema_types import Migration, table_sql

SERVING_LIMITS_AND_EVENTS = [
    Migration(
        15,
        "token budgets per key per day and month, the tokens each key used per period, and the model a "
        "deployment falls back to",
        """ALTER TABLE deployments ADD COLUMN fallback_model_id BIGINT;
ALTER TABLE api_keys ADD COLUMN tokens_per_day BIGINT;
ALTER TABLE api_keys ADD COLUMN tokens_per_month BIGINT;
CREATE TABLE key_usage (
  key_id BIGINT NOT NULL,
  period VARCHAR NOT NULL,
  tokens BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (key_id, period)
);
""",
    ),
    Migration(
        16,
        "the gateway replicas that send their traffic to the service, and the last batch of it stored",
        # A replica numbers its traffic rows 1, 2, 3... and resends what was not acknowledged; a row is
        # stored only if its number is above last_seq, in the transaction that moves last_seq.
        """CREATE TABLE gateway_replicas (
  id VARCHAR PRIMARY KEY,
  address VARCHAR,
  last_seq BIGINT NOT NULL DEFAULT 0,
  seen_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
""",
    ),
    Migration(
        17,
        "webhooks, their deliveries (the outbox and its log), and how far events have been read",
        table_sql(
            "webhooks",
            """url VARCHAR NOT NULL,
  secret VARCHAR NOT NULL,
  events VARCHAR[] NOT NULL,
  active BOOLEAN NOT NULL DEFAULT true""",
        )
        + """CREATE TABLE webhook_deliveries (
  id VARCHAR PRIMARY KEY,
  webhook_id BIGINT NOT NULL,
  event VARCHAR NOT NULL,
  payload VARCHAR NOT NULL,
  status VARCHAR NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
  last_status INTEGER,
  last_error VARCHAR,
  delivered_at TIMESTAMPTZ,
  created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
CREATE TABLE webhook_cursors (
  event VARCHAR PRIMARY KEY,
  value JSON NOT NULL
);
""",
    ),
]
