//! What reads are served from: stock and sold-out state per drop, the drop and product
//! listings rendered once per load, and each drop's rules.

pub mod catalog;
pub mod drop_rules;
pub mod listing;
pub mod rendered;
pub mod stock;
