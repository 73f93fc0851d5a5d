//! A session deleted before its lifetime is over (with its account, or on its own,
//! by hand or by a script) leaves a tombstone in `ended_sessions`, written by a trigger in the
//! deleting transaction: every api instance reads the tombstones of the last few seconds
//! beside the revocations, so a deletion is refused everywhere within the same second as a
//! revocation, with no per-session query. A tombstone is needed only until the session would
//! have expired anyway (no token outlives its session), so each new one clears the expired;
//! a session past its lifetime (most of what retention deletes) leaves none.

use sea_orm_migration::{prelude::*, schema::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Postgres: one function for the trigger.
const POSTGRES_TRIGGER: [&str; 2] = [
    "CREATE FUNCTION note_deleted_session() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
         DELETE FROM ended_sessions WHERE expires_at < now();
         INSERT INTO ended_sessions (session_id, ended_at, expires_at)
         VALUES (OLD.id, now(), OLD.expires_at)
         ON CONFLICT (session_id) DO NOTHING;
         RETURN OLD;
     END $$",
    "CREATE TRIGGER sessions_deleted_while_live AFTER DELETE ON sessions FOR EACH ROW
     WHEN (OLD.expires_at > now())
     EXECUTE FUNCTION note_deleted_session()",
];

/// SQLite: instants are stored as RFC 3339 text (`2026-12-07T22:10:00.123+00:00`), so "now"
/// is written the same way for comparisons to order correctly.
const SQLITE_TRIGGER: &str = "CREATE TRIGGER sessions_deleted_while_live
     AFTER DELETE ON sessions FOR EACH ROW
     WHEN OLD.expires_at > strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')
     BEGIN
         DELETE FROM ended_sessions
          WHERE expires_at < strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now');
         INSERT OR IGNORE INTO ended_sessions (session_id, ended_at, expires_at)
         VALUES (OLD.id, strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'), OLD.expires_at);
     END";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EndedSessions::Table)
                    .col(big_integer(EndedSessions::SessionId).primary_key())
                    .col(timestamp_with_time_zone(EndedSessions::EndedAt))
                    .col(timestamp_with_time_zone(EndedSessions::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_ended_sessions_ended_at")
                    .table(EndedSessions::Table)
                    .col(EndedSessions::EndedAt)
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        if manager.get_database_backend() == DbBackend::Postgres {
            for statement in POSTGRES_TRIGGER {
                db.execute_unprepared(statement).await?;
            }
        } else {
            db.execute_unprepared(SQLITE_TRIGGER).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared("DROP TRIGGER sessions_deleted_while_live ON sessions")
                .await?;
            db.execute_unprepared("DROP FUNCTION note_deleted_session()")
                .await?;
        } else {
            db.execute_unprepared("DROP TRIGGER sessions_deleted_while_live")
                .await?;
        }
        manager
            .drop_table(Table::drop().table(EndedSessions::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum EndedSessions {
    Table,
    SessionId,
    EndedAt,
    ExpiresAt,
}
