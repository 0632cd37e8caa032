"""SQLite schema, as an ordered list of migrations.

``PRAGMA user_version`` holds how many have been applied. Never edit a
migration that has shipped; append a new one.
"""

MIGRATIONS: list[str] = [
    # 1: foundation
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        full_name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('admin', 'technician', 'auditor')),
        password_hash TEXT NOT NULL,
        totp_secret TEXT,
        totp_required INTEGER NOT NULL,
        totp_last_step INTEGER NOT NULL DEFAULT 0,
        failed_attempts INTEGER NOT NULL DEFAULT 0,
        locked_until REAL,
        disabled INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE TABLE groups (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE grants (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
        PRIMARY KEY (user_id, group_id)
    );
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        group_id INTEGER NOT NULL REFERENCES groups(id),
        cert_fingerprint TEXT NOT NULL,
        cert_serial TEXT NOT NULL,
        enrolled_at REAL NOT NULL,
        revoked_at REAL,
        last_seen REAL,
        inventory TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE enrolment_tokens (
        id INTEGER PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
        expires_at REAL NOT NULL,
        max_uses INTEGER NOT NULL,
        uses INTEGER NOT NULL DEFAULT 0,
        created_by TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE api_tokens (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        ts TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        details TEXT NOT NULL,
        prev TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_actor ON audit(actor);
    CREATE INDEX audit_action ON audit(action);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    """,
]

MIGRATIONS.append(
    # 2: sessions, their recordings, SSH keys for the gateway
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
        username TEXT NOT NULL,
        device_id TEXT NOT NULL,
        device_name TEXT NOT NULL,
        kind TEXT NOT NULL,
        reason TEXT NOT NULL,
        via TEXT NOT NULL,
        state TEXT NOT NULL,
        consent TEXT,
        end_reason TEXT,
        requested_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL,
        bytes_to_device INTEGER NOT NULL DEFAULT 0,
        bytes_from_device INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER,
        recording TEXT,
        recording_sha256 TEXT
    );
    CREATE INDEX sessions_requested ON sessions(requested_at);
    CREATE TABLE ssh_keys (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        public_key TEXT NOT NULL,
        fingerprint TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    ALTER TABLE users ADD COLUMN read_all_recordings INTEGER NOT NULL DEFAULT 0;
    """
)

MIGRATIONS.append(
    # 3: software update rollouts and each device's result
    """
    CREATE TABLE rollouts (
        id TEXT PRIMARY KEY,
        package_sha256 TEXT NOT NULL,
        package_name TEXT NOT NULL,
        package_version TEXT NOT NULL,
        package_kind TEXT NOT NULL,
        signer TEXT NOT NULL,
        size INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        created_by_id INTEGER NOT NULL,
        target_kind TEXT NOT NULL CHECK (target_kind IN ('device', 'group')),
        target TEXT NOT NULL,
        batch_size INTEGER NOT NULL,
        max_failures INTEGER NOT NULL,
        downgrade INTEGER NOT NULL,
        reason TEXT NOT NULL,
        timeout REAL NOT NULL,
        state TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX rollouts_created ON rollouts(created_at);
    CREATE TABLE rollout_devices (
        rollout_id TEXT NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
        device_id TEXT NOT NULL,
        device_name TEXT NOT NULL,
        position INTEGER NOT NULL,
        batch INTEGER NOT NULL,
        state TEXT NOT NULL,
        session TEXT NOT NULL DEFAULT '',
        exit_code INTEGER,
        message TEXT NOT NULL DEFAULT '',
        log_tail TEXT NOT NULL DEFAULT '',
        updated_at REAL,
        PRIMARY KEY (rollout_id, device_id)
    );
    """
)
