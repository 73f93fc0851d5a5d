//! What reads are served from: stock and sold-out state per drop, the drop and product
//! listings rendered once per load, each drop's rules, and every live event serialised once
//! for all sockets.

pub mod catalog;
pub mod drop_rules;
pub mod frames;
pub mod listing;
pub mod rendered;
pub mod stock;
