-- Alerts: rules the dashboard edits, the evaluator's per-rule state, and the events it fires.
-- Written by alerts.py (evaluator) and the dashboard (rules); see alerts.py for the semantics.

CREATE TABLE IF NOT EXISTS alert_rules (
    id                bigserial PRIMARY KEY,
    name              text             NOT NULL,
    metric            text             NOT NULL,  -- zscore, spread, price, return, correlation, ...
    operator          text             NOT NULL,  -- '>', '<', 'crosses_above', 'crosses_below'
    threshold         double precision NOT NULL,
    symbol_a          text             NOT NULL,  -- the symbol, or the pair's first leg (y)
    symbol_b          text,                       -- the pair's second leg (x); NULL for one-symbol metrics
    timeframe         text             NOT NULL,  -- '1s', '1m', ... (database.TIMEFRAME_SECONDS)
    window_bars       integer          NOT NULL,  -- rolling window, in bars of `timeframe`
    hedge_method      text             NOT NULL DEFAULT 'ols',
    hysteresis        double precision NOT NULL,  -- re-arm band, in the metric's units
    cooldown_seconds  double precision NOT NULL,
    webhook_url       text,
    enabled           boolean          NOT NULL DEFAULT true,
    version           integer          NOT NULL DEFAULT 1,  -- bumped by every edit: resets the rule's state
    created_at        timestamptz      NOT NULL DEFAULT now(),
    updated_at        timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT alert_rules_operator_check CHECK (operator IN ('>', '<', 'crosses_above', 'crosses_below')),
    CONSTRAINT alert_rules_symbols_check CHECK (symbol_a ~ '^[A-Z0-9]{2,20}$'
                                                AND (symbol_b IS NULL OR symbol_b ~ '^[A-Z0-9]{2,20}$')),
    CONSTRAINT alert_rules_numbers_check CHECK (window_bars > 0 AND hysteresis >= 0 AND cooldown_seconds >= 0)
);

-- The evaluator's memory of each rule, so a restart neither re-fires nor forgets a crossing.
CREATE TABLE IF NOT EXISTS alert_state (
    rule_id        bigint PRIMARY KEY REFERENCES alert_rules (id) ON DELETE CASCADE,
    rule_version   integer          NOT NULL,  -- state of an older version of the rule is ignored
    armed          boolean          NOT NULL,
    last_value     double precision,
    last_observed  timestamptz,                -- the bar close / tick time last evaluated
    last_fired     timestamptz,                -- observed time of the last event (cooldown clock)
    updated_at     timestamptz      NOT NULL DEFAULT now()
);

-- Fired alerts. They outlive their rule (rule_id becomes NULL; name and numbers are copied here).
CREATE TABLE IF NOT EXISTS alert_events (
    id                  bigserial PRIMARY KEY,
    rule_id             bigint REFERENCES alert_rules (id) ON DELETE SET NULL,
    rule_version        integer          NOT NULL,
    rule_name           text             NOT NULL,
    metric              text             NOT NULL,
    symbols             text             NOT NULL,  -- 'BTCUSDT' or 'BTCUSDT/ETHUSDT'
    operator            text             NOT NULL,
    observed_at         timestamptz      NOT NULL,  -- close of the bar / time of the tick that satisfied the rule
    fired_at            timestamptz      NOT NULL DEFAULT clock_timestamp(),  -- when stored
    value               double precision NOT NULL,
    threshold           double precision NOT NULL,
    message             text             NOT NULL,
    webhook_url         text,
    webhook_status      text             NOT NULL DEFAULT 'none',  -- none, pending, delivered, failed
    webhook_attempts    integer          NOT NULL DEFAULT 0,
    webhook_error       text,
    webhook_done_at     timestamptz,
    CONSTRAINT alert_events_webhook_status_check CHECK (webhook_status IN ('none', 'pending', 'delivered', 'failed')),
    CONSTRAINT alert_events_once UNIQUE (rule_id, rule_version, observed_at)
);
CREATE INDEX IF NOT EXISTS alert_events_fired_at_idx ON alert_events (fired_at DESC);
CREATE INDEX IF NOT EXISTS alert_events_pending_idx ON alert_events (id) WHERE webhook_status = 'pending';

-- Wake the evaluator as soon as an ingester batch commits new bars (one NOTIFY per statement, delivered
-- at commit), so a bar close reaches the rules in milliseconds instead of at the next 1-second poll.
CREATE OR REPLACE FUNCTION alerts_wakeup() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('alerts_wakeup', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;
CREATE OR REPLACE TRIGGER bars_1s_alerts_wakeup AFTER INSERT OR UPDATE ON bars_1s
    FOR EACH STATEMENT EXECUTE FUNCTION alerts_wakeup();
CREATE OR REPLACE TRIGGER alert_rules_alerts_wakeup AFTER INSERT OR UPDATE OR DELETE ON alert_rules
    FOR EACH STATEMENT EXECUTE FUNCTION alerts_wakeup();

-- Tell listeners (the dashboard, if it LISTENs) the id of each new event.
CREATE OR REPLACE FUNCTION alert_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('alert_events', NEW.id::text);
    RETURN NULL;
END;
$$;
CREATE OR REPLACE TRIGGER alert_events_notify AFTER INSERT ON alert_events
    FOR EACH ROW EXECUTE FUNCTION alert_events_notify();
