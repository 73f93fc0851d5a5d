//! A first run with something to see: an empty store (`cargo run` on a fresh `DATA_DIR`)
//! gets a few catalog products, three drops and an admin account, so the storefront and
//! Swagger UI have something to show. `DEMO_DATA=false` turns it off; distributed mode
//! seeds only when `DEMO_DATA=true`.

use chrono::{Duration, Utc};
use entity::{
    EmailAddress,
    accounts::{self, DisplayName, Password, Role},
    catalog::{self, ProductFields, ProductName, Slug},
    drops::{self, DropInput, NewDrop},
    models::{drops as drop_rows, products, users},
};
use sea_orm::{EntityTrait, PaginatorTrait};
use worker::Infra;

use crate::settings::Settings;

/// The generated admin's address.
pub const ADMIN_EMAIL: &str = "admin@honeydrop.local";
/// Where the generated admin's password is kept (0600), beside `jwt_access_secret`.
pub const PASSWORD_FILE: &str = "admin_password";

/// Seeds the demo store when the settings ask for it and the database holds no account,
/// product or drop yet: a store that has seen any use is never touched.
///
/// # Errors
/// A database failure, or the password file cannot be written.
pub async fn seed_if_empty(settings: &Settings, infra: &Infra) -> anyhow::Result<()> {
    if !settings.demo_data || !is_empty(&infra.db).await? {
        return Ok(());
    }
    let now = Utc::now();
    let admin = match &settings.sessions.admin {
        // ADMIN_EMAIL/ADMIN_PASSWORD are set: that account is the store's admin.
        Some(_) => None,
        None => match create_admin(settings, &infra.db).await? {
            Some(admin) => Some(admin),
            // Another instance made it first (DEMO_DATA=true in distributed mode): it seeds.
            None => return Ok(()),
        },
    };
    let effects = worker::Effects::of(infra);
    for fields in products() {
        let change = match catalog::create(&infra.db, fields?, now).await {
            Ok(change) => change,
            // Another instance is seeding the same store (`ADMIN_EMAIL` set, so no admin of
            // ours told them apart): the demo is theirs.
            Err(entity::Error::SlugTaken) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        effects.product_changed(&change).await;
    }
    for input in drops(now) {
        let drop = drops::create(&infra.db, NewDrop::parse(input, now)?, now).await?;
        effects.drop_created(&drop).await;
    }
    match admin {
        Some(password) => tracing::info!(
            "demo store ready; admin sign-in: {ADMIN_EMAIL} / {password} (kept in {}; shown this once)",
            settings.data_dir.join(PASSWORD_FILE).display()
        ),
        None => tracing::info!("demo store ready; sign in with ADMIN_EMAIL to administer it"),
    }
    Ok(())
}

async fn is_empty(db: &entity::db::Db) -> Result<bool, sea_orm::DbErr> {
    Ok(users::Entity::find().count(db).await? == 0
        && products::Entity::find().count(db).await? == 0
        && drop_rows::Entity::find().count(db).await? == 0)
}

/// Creates the demo admin with a generated password, written 0600 beside the generated
/// secret; `None` when the account exists already.
async fn create_admin(settings: &Settings, db: &entity::db::Db) -> anyhow::Result<Option<String>> {
    let email = EmailAddress::parse(ADMIN_EMAIL).map_err(|e| anyhow::anyhow!("{e}"))?;
    let password = uuid::Uuid::new_v4().simple().to_string();
    let hash = accounts::hash_password(&Password::parse(&password).map_err(anyhow::Error::msg)?)?;
    let created = accounts::create_user(
        db,
        &email,
        &DisplayName::neutral(),
        hash,
        Role::Admin,
        Utc::now(),
    )
    .await;
    match created {
        Ok(_) => {}
        Err(entity::Error::EmailTaken) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let path = settings.data_dir.join(PASSWORD_FILE);
    worker::settings::create_private_dir(&settings.data_dir)?;
    worker::settings::write_private(&path, &format!("{ADMIN_EMAIL}\n{password}\n"))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(Some(password))
}

/// Four products: three to buy, one sold out to press "Notify me" on.
fn products() -> Vec<anyhow::Result<ProductFields>> {
    [
        (
            "Acacia Honey",
            "Light and mild, from Hungarian acacia groves. 500 g.",
            1250,
            Some(40),
        ),
        (
            "Buckwheat Honey",
            "Dark, malty and rich in minerals. 500 g.",
            1400,
            Some(25),
        ),
        (
            "Honeycomb Frame",
            "A whole frame of comb, cut from the hive. 400 g.",
            2200,
            None,
        ),
        (
            "Manuka Honey UMF 15+",
            "Sold out: press Notify me to hear when it is back. 250 g.",
            4900,
            Some(0),
        ),
    ]
    .into_iter()
    .map(|(name, description, price_cents, stock)| {
        Ok(ProductFields {
            slug: Slug::from_name(name).map_err(anyhow::Error::msg)?,
            name: ProductName::parse(name).map_err(anyhow::Error::msg)?,
            description: description.to_owned(),
            price_cents,
            currency: None,
            image_url: None,
            in_stock: stock != Some(0),
            stock_quantity: stock,
        })
    })
    .collect()
}

/// A live drop, one opening in an hour, and a draw whose entries close in thirty minutes.
fn drops(now: chrono::DateTime<Utc>) -> [DropInput; 3] {
    [
        DropInput {
            name: "Golden Hive Runner".into(),
            description: Some(
                "The live drop: reserve one, then buy it before the hold ends.".into(),
            ),
            price_cents: 18_000,
            total_stock: 25,
            ..DropInput::default()
        },
        DropInput {
            name: "Midnight Bee Hi-Top".into(),
            description: Some("Upcoming: opens an hour after the store first started.".into()),
            price_cents: 21_000,
            total_stock: 50,
            starts_at: Some(now + Duration::hours(1)),
            ..DropInput::default()
        },
        DropInput {
            name: "Queen's Reserve (draw)".into(),
            description: Some("A draw: enter now; winners are drawn when entries close.".into()),
            price_cents: 32_000,
            total_stock: 5,
            mode: Some(entity::models::drops::DropMode::Draw),
            entries_close_at: Some(now + Duration::minutes(30)),
            ..DropInput::default()
        },
    ]
}
