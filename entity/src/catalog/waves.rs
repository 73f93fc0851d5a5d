//! Restock alerts in waves sized to the stock: ten thousand people are not emailed about
//! twelve units. The first wave of a restock alerts `stock × factor` subscribers in signup
//! order; while the product stays in stock, another wave of `stock left × factor` opens every
//! `interval`; when it sells out the waves stop. A product whose quantity is not tracked
//! alerts everyone at once.
//!
//! The restock's row carries the state (`waves`, `alert_limit`, `alerted`, `next_wave_at`),
//! changed only by a fan-out holding the row's lock, so a crashed worker's fan-out is
//! resumed by the reconciler exactly where it stopped.

use chrono::{DateTime, Duration, Utc};

use crate::models::{products, restock_events};

/// How restock alerts are paced (`RESTOCK_WAVE_FACTOR`, `RESTOCK_WAVE_INTERVAL_SECS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waves {
    /// Subscribers alerted per unit in stock, per wave; 0 alerts everyone at once.
    pub factor: i32,
    /// Time between waves.
    pub interval: Duration,
}

impl Default for Waves {
    fn default() -> Self {
        Self {
            factor: 3,
            interval: Duration::minutes(10),
        }
    }
}

/// What a restock's next fan-out may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// Alert up to `up_to` more subscribers in wave `wave`; `opened` is the restock's new
    /// state when this turn opens that wave.
    Alert {
        up_to: Option<i32>,
        wave: i32,
        opened: Option<Opened>,
    },
    /// The current wave is spent; the next may open at this instant.
    WaitUntil(DateTime<Utc>),
    /// The current wave is spent and no other will open.
    Done,
}

/// A wave opened: the restock's state from now on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub waves: i32,
    pub alert_limit: Option<i32>,
    pub next_wave_at: Option<DateTime<Utc>>,
}

/// The next turn of a restock whose product is in stock.
pub fn turn(
    restock: &restock_events::Model,
    product: &products::Model,
    waves: Waves,
    now: DateTime<Utc>,
) -> Turn {
    let left = restock
        .alert_limit
        .map(|limit| limit.saturating_sub(restock.alerted));
    match (restock.waves, left) {
        (0, _) => open(restock, product, waves, now),
        (wave, None) => Turn::Alert {
            up_to: None,
            wave,
            opened: None,
        },
        (wave, Some(left)) if left > 0 => Turn::Alert {
            up_to: Some(left),
            wave,
            opened: None,
        },
        (_, Some(_)) => match restock.next_wave_at {
            Some(at) if at <= now => open(restock, product, waves, now),
            Some(at) => Turn::WaitUntil(at),
            None => Turn::Done,
        },
    }
}

fn open(
    restock: &restock_events::Model,
    product: &products::Model,
    waves: Waves,
    now: DateTime<Utc>,
) -> Turn {
    let wave = restock.waves + 1;
    let size = product
        .stock_quantity
        .filter(|_| waves.factor > 0)
        .map(|stock| stock.saturating_mul(waves.factor));
    let opened = Opened {
        waves: wave,
        alert_limit: size.map(|size| restock.alerted.saturating_add(size)),
        next_wave_at: size.map(|_| now + waves.interval),
    };
    Turn::Alert {
        up_to: size,
        wave,
        opened: Some(opened),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restock(waves: i32, alert_limit: Option<i32>, alerted: i32) -> restock_events::Model {
        restock_events::Model {
            id: 1,
            product_id: 1,
            cms_version: None,
            created_at: Utc::now(),
            waves,
            alert_limit,
            alerted,
            next_wave_at: None,
        }
    }

    fn product(stock_quantity: Option<i32>) -> products::Model {
        products::Model {
            id: 1,
            cms_entry_id: None,
            cms_version: None,
            slug: "heather-honey".into(),
            name: "Heather Honey".into(),
            description: String::new(),
            price_cents: 1_200,
            currency: "USD".into(),
            image_url: None,
            in_stock: true,
            stock_quantity,
            visible: true,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn the_first_wave_is_the_stock_times_the_factor() {
        let now = Utc::now();
        let turn = turn(
            &restock(0, None, 0),
            &product(Some(10)),
            Waves::default(),
            now,
        );
        let opened = Opened {
            waves: 1,
            alert_limit: Some(30),
            next_wave_at: Some(now + Duration::minutes(10)),
        };
        assert_eq!(
            turn,
            Turn::Alert {
                up_to: Some(30),
                wave: 1,
                opened: Some(opened)
            }
        );
    }

    #[test]
    fn an_untracked_quantity_alerts_everyone_at_once() {
        let now = Utc::now();
        let turn = turn(&restock(0, None, 0), &product(None), Waves::default(), now);
        assert!(matches!(turn, Turn::Alert { up_to: None, .. }));
    }

    #[test]
    fn a_spent_wave_waits_for_the_interval_then_opens_the_next_on_the_stock_left() {
        let now = Utc::now();
        let mut spent = restock(1, Some(30), 30);
        spent.next_wave_at = Some(now + Duration::seconds(5));
        assert_eq!(
            turn(&spent, &product(Some(4)), Waves::default(), now),
            Turn::WaitUntil(now + Duration::seconds(5))
        );
        let later = now + Duration::seconds(6);
        let Turn::Alert {
            up_to,
            wave,
            opened,
        } = turn(&spent, &product(Some(4)), Waves::default(), later)
        else {
            panic!("the next wave opens");
        };
        assert_eq!((up_to, wave), (Some(12), 2));
        assert_eq!(opened.and_then(|o| o.alert_limit), Some(42));
    }

    #[test]
    fn a_wave_not_yet_spent_goes_on() {
        let turn = turn(
            &restock(2, Some(60), 45),
            &product(Some(10)),
            Waves::default(),
            Utc::now(),
        );
        assert_eq!(
            turn,
            Turn::Alert {
                up_to: Some(15),
                wave: 2,
                opened: None
            }
        );
    }
}
