//! The schema, as versioned migrations that confab applies itself at start.
//!
//! Each migration runs once, in order, in one transaction that first takes a transaction-level
//! advisory lock: nodes that start at once queue on it, and the later ones find the versions
//! applied and skip them. A database migrated by a newer confab (a version this one does not
//! know) is refused rather than written with an older idea of the schema.

use super::*;

/// The advisory lock key of migrations (any constant; "confab" in ASCII).
const MIGRATION_LOCK: i64 = 0x0000_636f_6e66_6162;

/// The migrations, in order; a released one is never edited, only followed by another.
const MIGRATIONS: &[(i32, &str)] = &[(1, V1), (2, V2), (3, V3)];
/// How many migrations there are.
#[cfg(test)]
pub(super) const VERSIONS: usize = MIGRATIONS.len();

/// Tables as in the embedded store (docs/cluster.md), with the conversation's `last_seq` kept
/// in its row: the append function allocates seqs from it under the row's lock.
const V1: &str = r#"
CREATE TABLE conversations (
    id text PRIMARY KEY,
    max_members integer,
    last_seq bigint NOT NULL DEFAULT 0,
    created_at bigint NOT NULL
);
CREATE TABLE members (
    conversation_id text NOT NULL,
    user_id text NOT NULL,
    read_seq bigint NOT NULL DEFAULT 0,
    delivered_seq bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id);
CREATE TABLE messages (
    conversation_id text NOT NULL,
    seq bigint NOT NULL,
    id text NOT NULL UNIQUE,
    sender_id text NOT NULL,
    kind text NOT NULL,
    content text NOT NULL,
    metadata text NOT NULL,
    created_at bigint NOT NULL,
    local_id text,
    reply_to text,
    deleted_at bigint,
    PRIMARY KEY (conversation_id, seq)
);
CREATE UNIQUE INDEX messages_by_local_id
    ON messages (conversation_id, sender_id, local_id) WHERE local_id IS NOT NULL;
CREATE TABLE photos (
    id text PRIMARY KEY,
    conversation_id text NOT NULL,
    sender_id text NOT NULL,
    url text NOT NULL,
    expires_in integer NOT NULL,
    created_at bigint NOT NULL,
    first_viewed_at bigint
);
CREATE INDEX photos_ticking ON photos (id) WHERE first_viewed_at IS NOT NULL;
CREATE TABLE inbox (
    id bigserial PRIMARY KEY,
    user_id text NOT NULL,
    kind text NOT NULL,
    data text NOT NULL
);
CREATE INDEX inbox_by_user ON inbox (user_id, id);
CREATE TABLE probe (
    id integer PRIMARY KEY,
    at bigint NOT NULL
);
CREATE TABLE attachments (
    id text PRIMARY KEY,
    conversation_id text NOT NULL,
    uploader text NOT NULL,
    kind text NOT NULL,
    filename text,
    bytes bytea NOT NULL,
    created_at bigint NOT NULL
);

-- Per-user message buckets (cluster mode: every node's messages in one count), as the
-- token buckets of core/src/limits.rs: kind 1-3 for minute, hour and day, `tokens` at `at`
-- (ms), refilled at limit / interval up to limit.
CREATE TABLE user_buckets (
    user_id text NOT NULL,
    kind smallint NOT NULL,
    tokens double precision NOT NULL,
    at bigint NOT NULL,
    PRIMARY KEY (user_id, kind)
);

-- Takes one message from p_user's three buckets, or none: wait_ms 0 when taken, else how
-- long until the emptiest bucket (bucket 1-3) has a token. The caller holds the user's lock.
CREATE FUNCTION confab_take(p_user text, p_now bigint, p_rates integer[], OUT wait_ms bigint, OUT bucket integer)
LANGUAGE plpgsql AS $$
DECLARE
    intervals bigint[] := ARRAY[60000, 3600000, 86400000];
    levels double precision[] := '{}';
    b integer;
    cap double precision;
    lvl double precision;
    since bigint;
BEGIN
    wait_ms := 0;
    bucket := 0;
    FOR b IN 1..3 LOOP
        cap := p_rates[b];
        SELECT tokens, at INTO lvl, since FROM user_buckets WHERE user_id = p_user AND kind = b;
        IF NOT FOUND THEN
            lvl := cap;
            since := p_now;
        END IF;
        lvl := least(cap, lvl + greatest(p_now - since, 0) * cap / intervals[b]);
        IF lvl < 1 THEN
            wait_ms := greatest(1, ceil((1 - lvl) * intervals[b] / cap))::bigint;
            bucket := b;
            RETURN;
        END IF;
        levels := levels || lvl;
    END LOOP;
    FOR b IN 1..3 LOOP
        INSERT INTO user_buckets (user_id, kind, tokens, at) VALUES (p_user, b, levels[b] - 1, p_now)
            ON CONFLICT (user_id, kind) DO UPDATE SET tokens = excluded.tokens, at = excluded.at;
    END LOOP;
END
$$;

-- One batch of appends, as one statement (so one round trip and one transaction, with no
-- savepoint per request): the delivery marks of earlier batches, then each append in order.
-- Every conversation the batch touches is locked first, in id order, so that two nodes'
-- batches wait for each other instead of deadlocking, and every write to a member row happens
-- under its conversation's lock. Under that lock a repeated local_id is found before a seq is
-- taken, so a duplicate never costs a seq; a conversation that does not exist is reported,
-- not raised, so it fails only its own append. With p_rates (messages per minute, hour and
-- day; empty for none) each new message that p_charge marks (a client's, not the server
-- API's) is charged to its sender's buckets first. Outcome: 0
-- stored (with its seq), 1 a duplicate (with the stored message's columns), 2 no such
-- conversation, 3 over a message limit (the wait in ms as o_seq, the bucket 1-3 as
-- o_created). Only a duplicate fills the message columns.
CREATE FUNCTION confab_append(
    p_conv text[], p_sender text[], p_id text[], p_kind text[], p_content text[], p_meta text[],
    p_created bigint[], p_local text[], p_reply text[],
    d_conv text[], d_user text[], d_seq bigint[],
    p_now bigint, p_rates integer[], p_charge boolean[])
RETURNS TABLE (o_i integer, o_outcome smallint, o_id text, o_conv text, o_seq bigint,
               o_sender text, o_content text, o_kind text, o_meta text, o_created bigint,
               o_local text, o_reply text)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(array_length(p_conv, 1), 0);
    k integer;
    s bigint;
    prior messages%ROWTYPE;
    wait_ms bigint;
    bucket integer;
    sent_c text[] := '{}';
    sent_u text[] := '{}';
    sent_s bigint[] := '{}';
BEGIN
    PERFORM 1 FROM conversations WHERE id = ANY (p_conv || d_conv) ORDER BY id FOR NO KEY UPDATE;
    -- Then the senders' message buckets, in user order: every batch takes its locks in one
    -- global order (conversations, then users), so none waits in a cycle.
    IF array_length(p_rates, 1) = 3 THEN
        PERFORM pg_advisory_xact_lock(hashtext('confab.buckets'), hashtext(u))
           FROM (SELECT DISTINCT unnest(p_sender) AS u ORDER BY 1) s;
    END IF;
    UPDATE members m SET delivered_seq = d.s
      FROM unnest(d_conv, d_user, d_seq) AS d(c, u, s)
     WHERE m.conversation_id = d.c AND m.user_id = d.u AND m.delivered_seq < d.s;
    FOR k IN 1..n LOOP
        o_i := k; o_id := NULL; o_conv := NULL; o_seq := NULL; o_sender := NULL; o_content := NULL;
        o_kind := NULL; o_meta := NULL; o_created := NULL; o_local := NULL; o_reply := NULL;
        IF p_local[k] IS NOT NULL THEN
            SELECT * INTO prior FROM messages
             WHERE conversation_id = p_conv[k] AND sender_id = p_sender[k] AND local_id = p_local[k];
            IF FOUND THEN
                o_outcome := 1; o_id := prior.id; o_conv := prior.conversation_id;
                o_seq := prior.seq; o_sender := prior.sender_id; o_content := prior.content;
                o_kind := prior.kind; o_meta := prior.metadata; o_created := prior.created_at;
                o_local := prior.local_id; o_reply := prior.reply_to;
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        PERFORM 1 FROM conversations WHERE id = p_conv[k];
        IF NOT FOUND THEN
            o_outcome := 2;
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF array_length(p_rates, 1) = 3 AND p_charge[k] THEN
            SELECT * INTO wait_ms, bucket FROM confab_take(p_sender[k], p_now, p_rates);
            IF wait_ms > 0 THEN
                -- Over a limit: outcome 3, the wait in o_seq and the bucket in o_created.
                o_outcome := 3; o_seq := wait_ms; o_created := bucket;
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        UPDATE conversations SET last_seq = last_seq + 1 WHERE id = p_conv[k] RETURNING last_seq INTO s;
        INSERT INTO messages (conversation_id, seq, id, sender_id, kind, content, metadata,
                              created_at, local_id, reply_to)
        VALUES (p_conv[k], s, p_id[k], p_sender[k], p_kind[k], p_content[k], p_meta[k],
                p_created[k], p_local[k], p_reply[k]);
        sent_c := sent_c || p_conv[k];
        sent_u := sent_u || p_sender[k];
        sent_s := sent_s || s;
        o_outcome := 0; o_seq := s;
        RETURN NEXT;
    END LOOP;
    -- Sending implies having read everything before (SPEC section 4, unread counts).
    UPDATE members m SET read_seq = r.s
      FROM (SELECT c, u, max(x) AS s FROM unnest(sent_c, sent_u, sent_s) AS t(c, u, x) GROUP BY c, u) r
     WHERE m.conversation_id = r.c AND m.user_id = r.u AND m.read_seq < r.s;
END
$$;
"#;

/// Brings the database up to the current schema; safe to run from several nodes at once.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS confab_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(pg)?;
    let applied: Vec<i32> =
        tx.query("SELECT version FROM confab_migrations", &[]).await.map_err(pg)?.iter().map(|r| r.get(0)).collect();
    let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if let Some(newer) = applied.iter().find(|v| **v > known) {
        return Err(StoreError::Database(format!(
            "the database's schema is version {newer}, newer than this confab knows ({known}): upgrade confab"
        )));
    }
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await.map_err(pg)?;
        tx.execute("INSERT INTO confab_migrations (version) VALUES ($1)", &[version]).await.map_err(pg)?;
        tracing::info!(version, "store: PostgreSQL schema migrated");
    }
    tx.commit().await.map_err(pg)
}

/// Presence across nodes (`presence.rs`).
const V2: &str = r#"
-- Presence across nodes (cluster mode; postgres/presence.rs): each node's lease, and each
-- node's count of each user's connections; a count on a node whose lease ran out is not
-- counted, and a sweep removes it.
CREATE TABLE nodes (
    id text PRIMARY KEY,
    lease_until timestamptz NOT NULL
);
CREATE TABLE presence (
    user_id text NOT NULL,
    node_id text NOT NULL,
    conns integer NOT NULL,
    PRIMARY KEY (user_id, node_id)
);
CREATE INDEX presence_by_node ON presence (node_id);
CREATE TABLE user_status (
    user_id text PRIMARY KEY,
    status text NOT NULL,
    message text,
    last_seen bigint
);

-- The user's connections on the nodes whose lease is valid.
CREATE FUNCTION confab_live_conns(p_user text) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(p.conns), 0)::integer FROM presence p JOIN nodes n ON n.id = p.node_id
     WHERE p.user_id = p_user AND n.lease_until > now()
$$;

-- A connection of p_user on p_node, unless the user has p_limit connections on live nodes
-- already. Answers the count before it (0: the user just came online), or -1 - the count
-- when refused. Serialized per user, so of two nodes connecting the same user at once one
-- sees 0 and the other 1.
CREATE FUNCTION confab_connect(p_user text, p_node text, p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    total integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('confab.presence'), hashtext(p_user));
    total := confab_live_conns(p_user);
    IF total >= p_limit THEN
        RETURN -1 - total;
    END IF;
    INSERT INTO presence (user_id, node_id, conns) VALUES (p_user, p_node, 1)
        ON CONFLICT (user_id, node_id) DO UPDATE SET conns = presence.conns + 1;
    IF total = 0 THEN
        INSERT INTO user_status (user_id, status) VALUES (p_user, 'online')
            ON CONFLICT (user_id) DO UPDATE SET status = 'online', message = NULL;
    END IF;
    RETURN total;
END
$$;

-- A connection of p_user on p_node ended (p_node NULL: nothing ended, a sweep asks what is
-- left). Answers the count left on live nodes; at 0 the user went offline at p_at.
CREATE FUNCTION confab_disconnect(p_user text, p_node text, p_at bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    total integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('confab.presence'), hashtext(p_user));
    IF p_node IS NOT NULL THEN
        UPDATE presence SET conns = conns - 1 WHERE user_id = p_user AND node_id = p_node;
        DELETE FROM presence WHERE user_id = p_user AND node_id = p_node AND conns <= 0;
    END IF;
    total := confab_live_conns(p_user);
    IF total = 0 THEN
        UPDATE user_status SET status = 'offline', message = NULL, last_seen = p_at WHERE user_id = p_user;
    END IF;
    RETURN total;
END
$$;
"#;

/// Cluster mode: exactly one node acts on a delivery and on a photo's expiry.
/// - `deliveries`: delivery watermarks claimed by the nodes (`claim_delivered`), in a table of
///   their own: a claim on the member's row would wait behind the append that moves the same
///   row's read mark, and the two would take turns. A member's watermark is the greater of
///   `members.delivered_seq` (a node alone) and this.
/// - `photos.expiry_announced`: set by the one node that announces the expiry (a dead node's
///   timers are taken over by the others' sweep, and a node that starts arms every ticking one).
const V3: &str = r#"
CREATE TABLE deliveries (
    conversation_id text NOT NULL,
    user_id text NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (conversation_id, user_id),
    FOREIGN KEY (conversation_id, user_id) REFERENCES members ON DELETE CASCADE
);
ALTER TABLE photos ADD COLUMN expiry_announced boolean NOT NULL DEFAULT false;
DROP INDEX photos_ticking;
CREATE INDEX photos_ticking ON photos (id) WHERE first_viewed_at IS NOT NULL AND NOT expiry_announced;
"#;
