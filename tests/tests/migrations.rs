#![allow(clippy::expect_used, clippy::unwrap_used)]

use migration::{Migrator, MigratorTrait};
use tests::{Backend, both_backends, spawn_app};

/// Every migration has a working `down`: the schema can be rolled back to nothing and rebuilt.
async fn migrations_roll_back_and_forward(backend: Backend) {
    let app = spawn_app(backend).await;
    assert!(
        Migrator::get_pending_migrations(&app.db)
            .await
            .unwrap()
            .is_empty()
    );
    Migrator::down(&app.db, None).await.expect("down");
    assert_eq!(
        Migrator::get_applied_migrations(&app.db)
            .await
            .unwrap()
            .len(),
        0
    );
    Migrator::up(&app.db, None).await.expect("up again");
    assert_eq!(
        Migrator::get_applied_migrations(&app.db)
            .await
            .unwrap()
            .len(),
        Migrator::migrations().len()
    );
}

both_backends!(migrations_roll_back_and_forward);
